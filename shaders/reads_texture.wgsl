// A kernel's one or two read-only vec4 inputs, read from texture copies of their buffers
// (texel.wgsl), recorded just before the launch: on lavapipe a texture read is straight-line
// code, while a storage-buffer read is a per-lane loop, several times slower.
@group(0) @binding(18) var in_a_t: texture_storage_2d<rgba32float, read>;
@group(0) @binding(19) var in_b_t: texture_storage_2d<rgba32float, read>;

fn read_a(i: u32) -> vec4<f32> {
    return textureLoad(in_a_t, texel(i));
}

fn read_b(i: u32) -> vec4<f32> {
    return textureLoad(in_b_t, texel(i));
}
