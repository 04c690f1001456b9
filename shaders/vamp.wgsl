// The VampPrior's KL term (Tomczak & Welling 2018) as its one-sample Monte-Carlo estimate.
// The prior is the mixture of the encoder's posteriors at K pseudo-inputs,
// p(z) = (1/K) sum_k N(z; mu_k, exp(lv_k)), and for a record b with z_b = mu_b + sigma_b eps_b:
//   kl_b = log q(z_b | x_b) - log p(z_b)
//   log q(z_b | x_b) = sum_j (-0.5 lv_bj - 0.5 eps_bj^2)
//   log N_k(z_b)     = sum_j (-0.5 lv_kj - 0.5 (z_bj - mu_kj)^2 exp(-lv_kj))
//   log p(z_b)       = logsumexp_k log N_k(z_b) - log K       (the 2 pi terms cancel)
// With w_bk the softmax over k of log N_k(z_b) and g_bj = sum_k w_bk (z_bj - mu_kj) exp(-lv_kj)
// (the gradient of -log p at z_b), the gradients of s * kl_b (s = beta * grad_scale) are
//   record:    d mu_bj = s g_bj,  d lv_bj = s (-0.5 + 0.5 g_bj sigma_bj eps_bj)  (through z_b)
//   component: d mu_kj = -s sum_b r_b w_bk (z_bj - mu_kj) exp(-lv_kj),
//              d lv_kj = s sum_b r_b w_bk (0.5 - 0.5 (z_bj - mu_kj)^2 exp(-lv_kj))
// with r_b = row_scale (an importance-weighted step's normalized weights; else ones).
// With `pathwise` set (the doubly reparameterized estimator, Tucker et al. 2019) log q's
// parameters are held and its pull on the code, -eps / sigma, goes along the path instead:
//   record:    d mu_bj = s (g_bj - eps_bj / sigma_bj),  d lv_bj = s 0.5 (g_bj - eps_bj / sigma_bj) sigma_bj eps_bj
// while the components' gradients stay the bound's (they are the prior's parameters).
// logvar is clamped as in sampling, with no gradient outside.
//
// llvmpipe stops a loop nest after 65535 iterations in all (its loop limiter), so every
// invocation loops over one of K, Z or the rows only, never over their products: four
// launches.
//   vamp_densities_main: one invocation per (record, component) writes log N_k(z_b) into
//     resp [rows, K];
//   vamp_rows_main: one invocation per record turns its row into w_b, and writes kl_b and
//     the total into per_sample (whose reconstruction the loss wrote);
//   vamp_record_grad_main: one invocation per (record, latent dimension) writes its
//     gradients;
//   vamp_components_main: one invocation per (component, latent dimension) sums over the
//     valid records (at most MAX_ROWS, see src/ops/vamp.rs).

struct VampParams {
    rows: u32,
    valid: u32,
    z: u32,
    k: u32,
    ld_mulv: u32,
    ld_z: u32,
    ld_pmulv: u32,
    ld_resp: u32,
    beta: f32,
    grad_scale: f32,
    pathwise: u32,
    _pad: u32,
}

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

@group(0) @binding(0) var<uniform> p: VampParams;
// The records' mu | logvar [rows, 2Z], code and noise [rows, Z].
@group(0) @binding(1) var<storage, read> mulv: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> eps: array<f32>;
// The components' mu | logvar [K, 2Z] (the encoder at the pseudo-inputs).
@group(0) @binding(4) var<storage, read> pmulv: array<f32>;
@group(0) @binding(5) var<storage, read_write> resp: array<f32>;
// [rows, 3] with a row stride of 4: reconstruction (read), KL and total (written).
@group(0) @binding(6) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(7) var<storage, read_write> dmulv: array<f32>;
@group(0) @binding(8) var<storage, read_write> dpmulv: array<f32>;
@group(0) @binding(9) var<storage, read> row_scale: array<f32>;

fn index64(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 64u + lid;
}

@compute @workgroup_size(64)
fn vamp_densities_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index64(wg, nwg, lid);
    if (i >= p.rows * p.k) { return; }
    let b = udiv(i, p.k);
    let k = i - b * p.k;
    var l = 0.0;
    for (var j = 0u; j < p.z; j++) {
        let lv = clamp(pmulv[k * p.ld_pmulv + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
        let d = z[b * p.ld_z + j] - pmulv[k * p.ld_pmulv + j];
        l += -0.5 * lv - 0.5 * d * d * exp(-lv);
    }
    resp[b * p.ld_resp + k] = l;
}

@compute @workgroup_size(64)
fn vamp_rows_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = index64(wg, nwg, lid);
    if (b >= p.rows) { return; }
    let live = b < p.valid;
    let r0 = b * p.ld_resp;
    var m = -3.0e38;
    for (var k = 0u; k < p.k; k++) {
        m = max(m, resp[r0 + k]);
    }
    var sum = 0.0;
    for (var k = 0u; k < p.k; k++) {
        sum += exp(resp[r0 + k] - m);
    }
    for (var k = 0u; k < p.k; k++) {
        resp[r0 + k] = select(0.0, exp(resp[r0 + k] - m) / sum, live);
    }
    let log_p = m + log(sum) - log(f32(p.k));
    var log_q = 0.0;
    for (var j = 0u; j < p.z; j++) {
        let lv = clamp(mulv[b * p.ld_mulv + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
        let e = eps[b * p.ld_z + j];
        log_q += -0.5 * lv - 0.5 * e * e;
    }
    let kl = select(0.0, log_q - log_p, live);
    per_sample[b * 4u + 1u] = kl;
    per_sample[b * 4u + 2u] = per_sample[b * 4u] + p.beta * kl;
}

@compute @workgroup_size(64)
fn vamp_record_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index64(wg, nwg, lid);
    if (i >= p.rows * p.z) { return; }
    let b = udiv(i, p.z);
    let j = i - b * p.z;
    let zj = z[b * p.ld_z + j];
    var g = 0.0;
    for (var k = 0u; k < p.k; k++) {
        let lvk = clamp(pmulv[k * p.ld_pmulv + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
        g += resp[b * p.ld_resp + k] * (zj - pmulv[k * p.ld_pmulv + j]) * exp(-lvk);
    }
    let s = select(0.0, p.beta * p.grad_scale, b < p.valid);
    let lv_raw = mulv[b * p.ld_mulv + p.z + j];
    let lv = clamp(lv_raw, LOGVAR_MIN, LOGVAR_MAX);
    let inside = lv_raw >= LOGVAR_MIN && lv_raw <= LOGVAR_MAX;
    let e = eps[b * p.ld_z + j];
    let sigma = exp(0.5 * lv);
    let pathwise = p.pathwise != 0u;
    let path = select(g, g - e / sigma, pathwise);
    let own = select(-0.5, 0.0, pathwise);
    dmulv[b * p.ld_mulv + j] = s * path;
    dmulv[b * p.ld_mulv + p.z + j] = select(0.0, s * (own + 0.5 * path * sigma * e), inside);
}

@compute @workgroup_size(64)
fn vamp_components_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index64(wg, nwg, lid);
    if (i >= p.k * p.z) { return; }
    let k = udiv(i, p.z);
    let j = i - k * p.z;
    let mu = pmulv[k * p.ld_pmulv + j];
    let lv_raw = pmulv[k * p.ld_pmulv + p.z + j];
    let inv = exp(-clamp(lv_raw, LOGVAR_MIN, LOGVAR_MAX));
    var dmu = 0.0;
    var dlv = 0.0;
    for (var b = 0u; b < p.valid; b++) {
        let w = resp[b * p.ld_resp + k] * row_scale[b];
        let d = z[b * p.ld_z + j] - mu;
        dmu -= w * d * inv;
        dlv += w * (0.5 - 0.5 * d * d * inv);
    }
    let s = p.beta * p.grad_scale;
    let inside = lv_raw >= LOGVAR_MIN && lv_raw <= LOGVAR_MAX;
    dpmulv[k * p.ld_pmulv + j] = s * dmu;
    dpmulv[k * p.ld_pmulv + p.z + j] = select(0.0, s * dlv, inside);
}
