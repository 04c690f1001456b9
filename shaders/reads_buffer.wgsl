// A kernel's one or two read-only vec4 inputs, read from their storage buffers. Kernels read
// them through read_a / read_b, so the same body also runs on texture copies of the inputs
// (reads_texture.wgsl), which the tuner picks where that measures faster.
@group(0) @binding(16) var<storage, read> in_a: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> in_b: array<vec4<f32>>;

fn read_a(i: u32) -> vec4<f32> {
    return in_a[i];
}

fn read_b(i: u32) -> vec4<f32> {
    return in_b[i];
}
