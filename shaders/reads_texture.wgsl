// A kernel's one or two read-only inputs (four floats, or one: read_a1 / read_b1), read
// from texture copies of their buffers (texel.wgsl), recorded just before the launch: on
// lavapipe a texture read is straight-line code, while a storage-buffer read is a per-lane
// loop, several times slower.
@group(0) @binding(18) var in_a_t: texture_storage_2d<rgba32float, read>;
@group(0) @binding(19) var in_b_t: texture_storage_2d<rgba32float, read>;

fn read_a(i: u32) -> vec4<f32> {
    return textureLoad(in_a_t, texel(i));
}

fn read_b(i: u32) -> vec4<f32> {
    return textureLoad(in_b_t, texel(i));
}

fn read_a1(i: u32) -> f32 {
    return textureLoad(in_a_t, texel(i >> 2u))[i & 3u];
}

fn read_b1(i: u32) -> f32 {
    return textureLoad(in_b_t, texel(i >> 2u))[i & 3u];
}
