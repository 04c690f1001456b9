// Activations forward and backward on a [rows, cols] matrix with row stride ld.

struct EwParams {
    rows: u32,
    cols: u32,
    ld: u32,
    // LeakyReLU's slope
    slope: f32,
}

// The activation, fixed per pipeline: a runtime choice would run every case on CPU
// drivers, which execute all branches under masks.
override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: EwParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;

// Storage offset of element i of the row-major [rows, cols] view; rows without padding skip
// the division.
fn offset(i: u32) -> u32 {
    if (p.ld == p.cols) { return i; }
    let r = udiv(i, p.cols);
    return r * p.ld + i - r * p.cols;
}

// dst = act(src)
@compute @workgroup_size(256)
fn act_forward_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.cols) { return; }
    let idx = offset(i);
    dst[idx] = act_forward(vec4<f32>(src[idx]), ACT, p.slope).x;
}

// dst (the gradient wrt the output, in place) *= act'(.) evaluated from src = the output.
@compute @workgroup_size(256)
fn act_backward_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.cols) { return; }
    let idx = offset(i);
    dst[idx] *= act_grad_from_output(vec4<f32>(src[idx]), ACT, p.slope).x;
}

// The same four elements at a time, for matrices whose rows are unpadded and a multiple of
// 4 long (vec4 loads are several times faster on CPU drivers).
@compute @workgroup_size(256)
fn act_backward_vec4_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.cols / 4u) { return; }
    let y = src4[i];
    dst4[i] *= act_grad_from_output(y, ACT, p.slope);
}
