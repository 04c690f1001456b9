// The importance-weighted objective of a training step (Burda et al. 2016): each record's K
// samples sit in K consecutive rows, and row i's loss, total_i = recon_i + beta * kl_i (its
// Monte-Carlo KL, log q(z_i | x) - log p(z_i)), is -log w_i. Per record:
//   bound = -(logsumexp_i log w_i - log K),   w~_i = softmax_i(log w_i)
// and the gradient of the bound is sum_i w~_i d total_i: every gradient of row i is
// scaled by w~_i. With `average` set the weights are 1/K and the "bound" is the mean of
// the K losses: the K-sample ELBO (Burda et al.'s "VAE, k samples"). Two launches:
//   iwae_weights_main: one invocation per record writes w~ and replaces its rows' losses by
//     one row (the bound less beta times the w~-weighted KL, that KL, the bound: its total
//     is reconstruction + beta x KL, as every loss row's) and zeros;
//   iwae_scale_main: one invocation per vec4 of the logits' gradient scales it, and the
//     first of each row also its mu | logvar gradient.
// The doubly reparameterized estimator (Tucker et al. 2019, `dreg`) weighs the encoder's
// gradient, which flows along the codes' paths only, by w~_i^2: mu | logvar's gradient is
// scaled by w~_i^2, and a second iwae_scale_main launch scales the code's gradient by w~_i
// once more where the backward has completed it (the decoder's path arrives weighted by
// w~_i, as the decoder's own gradient must).

struct WeightParams {
    rows: u32,
    k: u32,
    valid: u32,
    ld4_logits: u32,
    ld_mulv: u32,
    mulv_cols: u32,
    average: u32,
    beta: f32,
    dreg: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: WeightParams;
// [rows, 3] with a row stride of 4: reconstruction, KL, total.
@group(0) @binding(1) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dmulv: array<f32>;

@compute @workgroup_size(64)
fn iwae_weights_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (g * p.k >= p.rows) { return; }
    let base = g * p.k;
    var m = -3.0e38;
    for (var i = 0u; i < p.k; i++) {
        m = max(m, -per_sample[(base + i) * 4u + 2u]);
    }
    var s = 0.0;
    for (var i = 0u; i < p.k; i++) {
        s += exp(-per_sample[(base + i) * 4u + 2u] - m);
    }
    let live = g < p.valid;
    var kl = 0.0;
    var mean = 0.0;
    for (var i = 0u; i < p.k; i++) {
        let importance = exp(-per_sample[(base + i) * 4u + 2u] - m) / s;
        let w = select(0.0, select(importance, 1.0 / f32(p.k), p.average != 0u), live);
        weights[base + i] = w;
        kl += w * per_sample[(base + i) * 4u + 1u];
        mean += w * per_sample[(base + i) * 4u + 2u];
    }
    let iwae = -(m + log(s) - log(f32(p.k)));
    let bound = select(0.0, select(iwae, mean, p.average != 0u), live);
    per_sample[base * 4u] = bound - p.beta * kl;
    per_sample[base * 4u + 1u] = kl;
    per_sample[base * 4u + 2u] = bound;
    for (var i = 1u; i < p.k; i++) {
        per_sample[(base + i) * 4u] = 0.0;
        per_sample[(base + i) * 4u + 1u] = 0.0;
        per_sample[(base + i) * 4u + 2u] = 0.0;
    }
}

@compute @workgroup_size(256)
fn iwae_scale_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.ld4_logits) { return; }
    let row = udiv(i, p.ld4_logits);
    let w = weights[row];
    dlogits[i] *= w;
    if (i == row * p.ld4_logits) {
        let wm = select(w, w * w, p.dreg != 0u);
        for (var j = 0u; j < p.mulv_cols; j++) {
            dmulv[row * p.ld_mulv + j] *= wm;
        }
    }
}
