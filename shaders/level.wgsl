// A stacked latent layer's term of the loss (Burda et al. 2016, two stochastic layers): the
// code z of a lower layer is sampled from its posterior q(z | below) = N(mu, exp(lv)) as
// z = mu + sigma eps, and the layer above gives its prior p(z | above) = N(pmu, exp(plv)).
// Each record's term is the Monte-Carlo KL (the 2 pi terms cancel)
//   kl_b = log q(z_b) - log p(z_b) = sum_j (-0.5 lv_bj - 0.5 eps_bj^2)
//                                   - sum_j (-0.5 plv_bj - 0.5 (z_bj - pmu_bj)^2 exp(-plv_bj))
// added to the record's KL and total (times beta) in per_sample. Gradients of s * kl_b
// (s = beta * grad_scale * row_scale_b, row_scale an importance-weighted step's normalized
// weights, else ones), written first (the graph's backward adds to them):
//   dz_bj   = s (z_bj - pmu_bj) exp(-plv_bj)                 (log p's pull on the code)
//   dmu_bj  = 0,  dlv_bj = -0.5 s                             (log q at fixed eps: the
//             path through z cancels log q's own dependence on mu and half of lv's)
//   dpmu_bj = -s (z_bj - pmu_bj) exp(-plv_bj),  dplv_bj = s (0.5 - 0.5 (z_bj - pmu_bj)^2 exp(-plv_bj))
// Log-variances are clamped as in sampling, with no gradient outside.
//   level_rows_main: one invocation per record, its KL and total;
//   level_grad_main: one invocation per (record, dimension), its gradients.

struct LevelParams {
    rows: u32,
    valid: u32,
    z: u32,
    ld_mulv: u32,
    ld_z: u32,
    ld_prior: u32,
    beta: f32,
    grad_scale: f32,
}

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

@group(0) @binding(0) var<uniform> p: LevelParams;
// The posterior's mu | logvar [rows, 2Z], the code and its noise [rows, Z], the prior's
// mu | logvar [rows, 2Z].
@group(0) @binding(1) var<storage, read> mulv: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> eps: array<f32>;
@group(0) @binding(4) var<storage, read> prior: array<f32>;
// [rows, 3] with a row stride of 4: reconstruction, KL, total (KL and total added to).
@group(0) @binding(5) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(6) var<storage, read_write> dz: array<f32>;
@group(0) @binding(7) var<storage, read_write> dmulv: array<f32>;
@group(0) @binding(8) var<storage, read_write> dprior: array<f32>;
@group(0) @binding(9) var<storage, read> row_scale: array<f32>;

@compute @workgroup_size(256)
fn level_rows_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = flat_index(wg, nwg, lid);
    if (b >= p.rows) { return; }
    var kl = 0.0;
    for (var j = 0u; j < p.z; j++) {
        let lv = clamp(mulv[b * p.ld_mulv + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
        let e = eps[b * p.ld_z + j];
        let plv = clamp(prior[b * p.ld_prior + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
        let d = z[b * p.ld_z + j] - prior[b * p.ld_prior + j];
        kl += -0.5 * lv - 0.5 * e * e + 0.5 * plv + 0.5 * d * d * exp(-plv);
    }
    kl = select(0.0, kl, b < p.valid);
    per_sample[b * 4u + 1u] += kl;
    per_sample[b * 4u + 2u] += p.beta * kl;
}

@compute @workgroup_size(256)
fn level_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.z) { return; }
    let b = udiv(i, p.z);
    let j = i - b * p.z;
    let s = select(0.0, p.beta * p.grad_scale * row_scale[b], b < p.valid);
    let lv_raw = mulv[b * p.ld_mulv + p.z + j];
    let plv_raw = prior[b * p.ld_prior + p.z + j];
    let inv = exp(-clamp(plv_raw, LOGVAR_MIN, LOGVAR_MAX));
    let d = z[b * p.ld_z + j] - prior[b * p.ld_prior + j];
    dz[b * p.ld_z + j] = s * d * inv;
    dmulv[b * p.ld_mulv + j] = 0.0;
    dmulv[b * p.ld_mulv + p.z + j] =
        select(0.0, -0.5 * s, lv_raw >= LOGVAR_MIN && lv_raw <= LOGVAR_MAX);
    dprior[b * p.ld_prior + j] = -s * d * inv;
    dprior[b * p.ld_prior + p.z + j] =
        select(0.0, s * (0.5 - 0.5 * d * d * inv), plv_raw >= LOGVAR_MIN && plv_raw <= LOGVAR_MAX);
}
