// GroupNorm with affine parameters and a fused activation, forward and backward, over
// images held as dense [B * HW, C] matrices (C a multiple of 4, read as vec4 of channels).
// Group g holds channels g * CG .. (g + 1) * CG of one image; N = HW * CG values.
// Reductions run in launches without workgroup barriers (on CPU drivers a barrier switches
// between coroutines): per (image, chunk of ROWS pixels, 4 channels) partials, then one
// invocation per group or channel combines them.
//   forward:  gn_partial_main   partial = per chunk and channel: sum and the sum of squared
//                               deviations from the chunk's own mean (Chan et al.'s
//                               pairwise update combines them exactly, no E[x^2] - E[x]^2)
//             gn_stats_main     stats[b, g] = (mean, 1 / sqrt(var + eps))
//             gn_apply_main     y = act((x - mean) * rstd * gamma + beta)
//   backward (dy w.r.t. y; z the value before the activation, xhat = (x - mean) * rstd,
//   dz = dy * act'(z), all recomputed from x):
//             gn_grad_partial_main  partial = per chunk and channel: sum dz, sum dz * xhat
//             gn_param_grad_main    dgamma[c] = sum dz * xhat, dbeta[c] = sum dz
//             gn_coef_main          coef[b, g] = (mean, rstd, mean of gamma dz, mean of
//                                   gamma dz xhat), written through `stats` into its own
//                                   buffer
//             gn_grad_apply_main    dx = rstd * (gamma dz - coef.0 - xhat * coef.1)
//                                   (+ dx when accumulating; * act'(x) of the activation
//                                   that produced x when IN_ACT_GRAD)

struct NormParams {
    batch: u32,
    hw: u32,
    c4: u32,
    groups: u32,
    chunks: u32,
    eps: f32,
    slope: f32,
    in_slope: f32,
}

// Channels per group, the activation and the gradient epilogue, fixed per pipeline.
override CG: u32 = 4u;
override ACT: u32 = 0u;
override IN_ACT: u32 = 0u;
override IN_ACT_GRAD: bool = false;
override ACCUMULATE: bool = false;

// Pixels per partial sum.
const ROWS: u32 = 64u;

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// the affine parameters, C values each
@group(0) @binding(2) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read> beta4: array<vec4<f32>>;
// [2, batch * chunks, C]: first sums, then deviations (or dz * xhat sums)
@group(0) @binding(3) var<storage, read_write> partial: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> partial1: array<f32>;
// [batch, groups, 2]: (mean, rstd) per group
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> stats_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> dy: array<vec4<f32>>;
// their gradients
@group(0) @binding(9) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(14) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(10) var<storage, read> gamma1: array<f32>;

// (b, chunk, q) of a partial-sum invocation.
fn chunk_at(i: u32) -> vec3<u32> {
    let bc = udiv(i, p.c4);
    let b = udiv(bc, p.chunks);
    return vec3<u32>(b, bc - b * p.chunks, i - bc * p.c4);
}

// The group of each of the four channels 4q..4q+3.
fn groups_of(q: u32) -> vec4<u32> {
    return (vec4<u32>(q * 4u) + vec4<u32>(0u, 1u, 2u, 3u)) / max(CG, 1u);
}

// Value `at` of the group of each of the four channels 4q..4q+3 of image b, from the
// per-group values bound as `stats_in` ([batch, groups, stride]). With groups of a multiple
// of 4 channels (fixed per pipeline, so the other branch compiles away) the four share one
// group: one load, not four, which matters where every buffer load is a loop over lanes.
fn group_value4(b: u32, q: u32, stride: u32, at: u32) -> vec4<f32> {
    if (CG % 4u == 0u) {
        return vec4<f32>(stats_in[stride * (b * p.groups + q * 4u / max(CG, 1u)) + at]);
    }
    let g = stride * (vec4<u32>(b * p.groups) + groups_of(q)) + vec4<u32>(at);
    return vec4<f32>(stats_in[g.x], stats_in[g.y], stats_in[g.z], stats_in[g.w]);
}

// (mean, rstd) of the four channels' groups in image b, from the forward statistics.
fn stats4(b: u32, q: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(group_value4(b, q, 2u, 0u), group_value4(b, q, 2u, 1u));
}

@compute @workgroup_size(256)
fn gn_partial_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    let cells = p.batch * p.chunks * p.c4;
    if (i >= cells) { return; }
    let at = chunk_at(i);
    let r0 = at.y * ROWS;
    let r1 = min(r0 + ROWS, p.hw);
    let base = at.x * p.hw * p.c4 + at.z;
    var s = vec4<f32>(0.0);
    for (var r = r0; r < r1; r++) {
        s += x[base + r * p.c4];
    }
    let m = s / f32(r1 - r0);
    var d = vec4<f32>(0.0);
    for (var r = r0; r < r1; r++) {
        let e = x[base + r * p.c4] - m;
        d += e * e;
    }
    partial[i] = s;
    partial[cells + i] = d;
}

@compute @workgroup_size(256)
fn gn_stats_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.groups) { return; }
    let b = udiv(i, p.groups);
    let g = i - b * p.groups;
    let c = p.c4 * 4u;
    let cells = p.batch * p.chunks * c;
    let n = f32(p.hw * CG);
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        for (var j = 0u; j < CG; j++) {
            s += partial1[(b * p.chunks + k) * c + g * CG + j];
        }
    }
    let mean = s / n;
    var m2 = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        let rows = f32(min((k + 1u) * ROWS, p.hw) - k * ROWS);
        for (var j = 0u; j < CG; j++) {
            let at = (b * p.chunks + k) * c + g * CG + j;
            let e = partial1[at] / rows - mean;
            m2 += partial1[cells + at] + rows * e * e;
        }
    }
    stats[2u * i] = mean;
    stats[2u * i + 1u] = inverseSqrt(m2 / n + p.eps);
}

@compute @workgroup_size(256)
fn gn_apply_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.hw * p.c4) { return; }
    let bp = udiv(i, p.c4);
    let q = i - bp * p.c4;
    let st = stats4(udiv(bp, p.hw), q);
    let z = (x[i] - st[0]) * st[1] * gamma4[q] + beta4[q];
    y[i] = act_forward(z, ACT, p.slope);
}

@compute @workgroup_size(256)
fn gn_grad_partial_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    let cells = p.batch * p.chunks * p.c4;
    if (i >= cells) { return; }
    let at = chunk_at(i);
    let st = stats4(at.x, at.z);
    let gamma = gamma4[at.z];
    let beta = beta4[at.z];
    let base = at.x * p.hw * p.c4 + at.z;
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    for (var r = at.y * ROWS; r < min(at.y * ROWS + ROWS, p.hw); r++) {
        let xhat = (x[base + r * p.c4] - st[0]) * st[1];
        let dz = dy[base + r * p.c4] * act_grad_from_input(xhat * gamma + beta, ACT, p.slope);
        s1 += dz;
        s2 += dz * xhat;
    }
    partial[i] = s1;
    partial[cells + i] = s2;
}

@compute @workgroup_size(256)
fn gn_param_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let ch = flat_index(wg, nwg, lid);
    let c = p.c4 * 4u;
    if (ch >= c) { return; }
    let cells = p.batch * p.chunks * c;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var k = 0u; k < p.batch * p.chunks; k++) {
        s1 += partial1[k * c + ch];
        s2 += partial1[cells + k * c + ch];
    }
    dgamma[ch] = s2;
    dbeta[ch] = s1;
}

@compute @workgroup_size(256)
fn gn_coef_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.groups) { return; }
    let b = udiv(i, p.groups);
    let g = i - b * p.groups;
    let c = p.c4 * 4u;
    let cells = p.batch * p.chunks * c;
    var a = 0.0;
    var m = 0.0;
    for (var j = 0u; j < CG; j++) {
        let ch = g * CG + j;
        var s1 = 0.0;
        var s2 = 0.0;
        for (var k = 0u; k < p.chunks; k++) {
            s1 += partial1[(b * p.chunks + k) * c + ch];
            s2 += partial1[cells + (b * p.chunks + k) * c + ch];
        }
        a += gamma1[ch] * s1;
        m += gamma1[ch] * s2;
    }
    let n = f32(p.hw * CG);
    stats[4u * i] = stats_in[2u * i];
    stats[4u * i + 1u] = stats_in[2u * i + 1u];
    stats[4u * i + 2u] = a / n;
    stats[4u * i + 3u] = m / n;
}

// dx; gn_grad_apply_main reads its group values (mean, rstd and gn_coef_main's two
// coefficients, [batch, groups, 4]) as `stats_in`.
@group(0) @binding(12) var<storage, read_write> dx: array<vec4<f32>>;

@compute @workgroup_size(256)
fn gn_grad_apply_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.hw * p.c4) { return; }
    let bp = udiv(i, p.c4);
    let q = i - bp * p.c4;
    let b = udiv(bp, p.hw);
    let rstd = group_value4(b, q, 4u, 1u);
    let gamma = gamma4[q];
    let xhat = (x[i] - group_value4(b, q, 4u, 0u)) * rstd;
    let dz = dy[i] * act_grad_from_input(xhat * gamma + beta4[q], ACT, p.slope);
    var v = rstd * (gamma * dz - group_value4(b, q, 4u, 2u) - xhat * group_value4(b, q, 4u, 3u));
    if (ACCUMULATE) { v += dx[i]; }
    // x is the output of the activation that produced it.
    if (IN_ACT_GRAD) { v *= act_grad_from_output(x[i], IN_ACT, p.in_slope); }
    dx[i] = v;
}
