// Activations forward and backward on a [rows, cols] matrix with row stride ld, and the
// bias gradient as a column sum.

struct EwParams {
    rows: u32,
    cols: u32,
    ld: u32,
    act: u32,
    slope: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: EwParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;

// Storage offset of element i of the row-major [rows, cols] view; division is slow on CPU
// drivers, so rows without padding skip it.
fn offset(i: u32) -> u32 {
    if (p.ld == p.cols) { return i; }
    return (i / p.cols) * p.ld + i % p.cols;
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
    dst[idx] = act_forward(src[idx], p.act, p.slope);
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
    dst[idx] *= act_grad_from_output(src[idx], p.act, p.slope);
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
    dst4[i] *= vec4<f32>(
        act_grad_from_output(y.x, p.act, p.slope),
        act_grad_from_output(y.y, p.act, p.slope),
        act_grad_from_output(y.z, p.act, p.slope),
        act_grad_from_output(y.w, p.act, p.slope),
    );
}

// dst[n] = sum over rows of src[r, n], one invocation per column: for few rows.
@compute @workgroup_size(256)
fn bias_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = flat_index(wg, nwg, lid);
    if (n >= p.cols) { return; }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        s += src[r * p.ld + n];
    }
    dst[n] = s;
}

var<workgroup> partial: array<f32, 256>;
var<workgroup> partial4: array<vec4<f32>, 256>;

// The same with one workgroup per column, its invocations striding over the rows, then a
// tree reduction: for conv layers' few columns of tens of thousands of rows.
@compute @workgroup_size(256)
fn bias_grad_tall_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = wg.y * nwg.x + wg.x;
    if (n >= p.cols) { return; }
    var s = 0.0;
    for (var r = lid; r < p.rows; r += 256u) {
        s += src[r * p.ld + n];
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        dst[n] = partial[0];
    }
}

// bias_grad_tall_main four columns at a time (unpadded rows, a multiple of 4 long).
@compute @workgroup_size(256)
fn bias_grad_tall_vec4_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n4 = wg.y * nwg.x + wg.x;
    let c4 = p.cols / 4u;
    if (n4 >= c4) { return; }
    var s = vec4<f32>(0.0);
    for (var r = lid; r < p.rows; r += 256u) {
        s += src4[r * c4 + n4];
    }
    partial4[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial4[lid] += partial4[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        dst4[n4] = partial4[0];
    }
}
