// Importance-weighted bound (IWAE). For a batch of K' samples z_k ~ q(z | x) of one image:
//   log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)
//           = -recon_k + sum_j (-0.5 z^2 + 0.5 eps^2 + 0.5 logvar)   (the 2 pi terms cancel)
// or, under a VampPrior (mc_kl = 1), -recon_k - kl_k with the sample's Monte-Carlo KL,
// log q(z_k | x) - log p(z_k), that vamp.wgsl wrote beside the reconstruction.
// and a running log-sum-exp per image, state[image] = (max, sum of exp(log w - max)), merged
// across batches so K can exceed one batch. log p(x) >= max + log(sum) - log K.

struct IwaeParams {
    rows: u32,
    valid: u32,
    z: u32,
    ld_mulv: u32,
    ld_z: u32,
    image: u32,
    mc_kl: u32,
    _pad1: u32,
}

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;
const NEG_BIG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: IwaeParams;
// [rows, 3] per-sample losses (row stride 4) from loss_main: column 0 is the reconstruction.
@group(0) @binding(1) var<storage, read> per_sample: array<f32>;
@group(0) @binding(2) var<storage, read> mulv: array<f32>;
@group(0) @binding(3) var<storage, read> z: array<f32>;
@group(0) @binding(4) var<storage, read> eps: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<vec2<f32>>;

var<workgroup> part: array<vec2<f32>, 256>;

// log(exp(a.x) a.y + exp(b.x) b.y) kept as (max, scaled sum).
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

fn log_weight(r: u32) -> f32 {
    var lw = -per_sample[r * 4u];
    if (p.mc_kl != 0u) {
        return lw - per_sample[r * 4u + 1u];
    }
    for (var j = 0u; j < p.z; j++) {
        let zv = z[r * p.ld_z + j];
        let e = eps[r * p.ld_z + j];
        let lv = clamp(mulv[r * p.ld_mulv + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
        lw += -0.5 * zv * zv + 0.5 * e * e + 0.5 * lv;
    }
    return lw;
}

@compute @workgroup_size(256)
fn iwae_main(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(NEG_BIG, 0.0);
    for (var r = lid; r < p.valid; r += 256u) {
        acc = merge(acc, vec2<f32>(log_weight(r), 1.0));
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            part[lid] = merge(part[lid], part[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        state[p.image] = merge(state[p.image], part[0]);
    }
}
