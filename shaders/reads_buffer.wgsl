// A kernel's one or two read-only inputs, read from their storage buffers, four floats at a
// time (read_a / read_b) or one (read_a1 / read_b1, scalar kernels). Kernels read them
// through these, so the same body also runs on texture copies of the inputs
// (reads_texture.wgsl), which the tuner picks where that measures faster.
@group(0) @binding(16) var<storage, read> in_a: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> in_b: array<vec4<f32>>;

fn read_a(i: u32) -> vec4<f32> {
    return in_a[i];
}

fn read_b(i: u32) -> vec4<f32> {
    return in_b[i];
}

@group(0) @binding(20) var<storage, read> in_a1: array<f32>;
@group(0) @binding(21) var<storage, read> in_b1: array<f32>;

fn read_a1(i: u32) -> f32 {
    return in_a1[i];
}

fn read_b1(i: u32) -> f32 {
    return in_b1[i];
}
