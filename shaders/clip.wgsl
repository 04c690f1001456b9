// Gradient-norm clipping, PyTorch's clip_grad_norm_: every gradient times
// min(1, max_norm / (||g|| + 1e-6)), ||g|| the 2-norm of the whole flat gradient buffer.
// Three launches, so that no loop runs past llvmpipe's 65535 iterations and the sum's order
// is fixed:
//   clip_partial_main: invocation i sums the squares of vec4s i, i + parts, i + 2 parts, ...
//   clip_factor_main: one workgroup adds the partial sums, writes the factor and the norm;
//   clip_apply_main: every vec4 times the factor.

struct ClipParams {
    len4: u32,
    parts: u32,
    max_norm: f32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: ClipParams;
@group(0) @binding(1) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
// [factor, norm]
@group(0) @binding(3) var<storage, read_write> factor: array<f32>;

@compute @workgroup_size(256)
fn clip_partial_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.parts) { return; }
    var s = 0.0;
    for (var k = i; k < p.len4; k += p.parts) {
        let g = grad[k];
        s += dot(g, g);
    }
    partial[i] = s;
}

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn clip_factor_main(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var k = lid; k < p.parts; k += 256u) {
        s += partial[k];
    }
    red[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let norm = sqrt(red[0]);
        factor[0] = min(1.0, p.max_norm / (norm + 1e-6));
        factor[1] = norm;
    }
}

@compute @workgroup_size(256)
fn clip_apply_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.len4) { return; }
    grad[i] *= factor[0];
}
