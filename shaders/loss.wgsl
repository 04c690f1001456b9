// Fused reconstruction + KL loss. One workgroup per sample computes, in nats:
//   recon = sum over pixels of -log p(x | logits)
//     Bernoulli: binary cross-entropy from logits, max(l, 0) - l x + log(1 + exp(-|l|))
//     Gaussian:  (x - l)^2 / (2 var) + 0.5 log(2 pi var), mean l, fixed variance var
//   kl = -0.5 * sum_j (1 + logvar - mu^2 - exp(logvar))
//   total = recon + beta * kl
// and writes d(grad_scale * total)/d(logits, mu, logvar). Rows at or past `valid` (batch
// padding) get zero loss and zero gradient. loss_reduce_main then adds the batch sums into
// a running accumulator, so losses are read back rarely and never per step.

struct LossParams {
    rows: u32,
    valid: u32,
    d: u32,
    z: u32,
    ld_logits: u32,
    ld_x: u32,
    ld_mulv: u32,
    likelihood: u32,
    beta: f32,
    grad_scale: f32,
    gauss_var: f32,
    _pad0: u32,
}

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: LossParams;
// Logits, targets and their gradient are read four values at a time (rows are padded to a
// multiple of 4 with zeros; the lanes past D are masked): four times fewer loads, which is
// what costs on CPU drivers.
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> mulv: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dmulv: array<f32>;
// [rows, 3] with a row stride of 4
@group(0) @binding(6) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(7) var<storage, read_write> accum: array<f32>;

var<workgroup> part_recon: array<f32, 64>;
var<workgroup> part_kl: array<f32, 64>;

// log(1 + e) for e in [0, 1], accurate when e is tiny.
fn log1p_small(e: vec4<f32>) -> vec4<f32> {
    return select(log(1.0 + e), e * (1.0 - 0.5 * e), e < vec4<f32>(1e-4));
}

@compute @workgroup_size(64)
fn loss_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * nwg.x + wg.x;
    if (row >= p.rows) { return; }
    let live = row < p.valid;
    var recon4 = vec4<f32>(0.0);
    for (var j4 = lid; j4 * 4u < p.d; j4 += WG) {
        let l = logits[row * (p.ld_logits >> 2u) + j4];
        let t = x[row * (p.ld_x >> 2u) + j4];
        let inside = vec4<u32>(j4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.d);
        var g: vec4<f32>;
        var r: vec4<f32>;
        if (p.likelihood == 0u) {
            r = max(l, vec4<f32>(0.0)) - l * t + log1p_small(exp(-abs(l)));
            g = 1.0 / (1.0 + exp(-l)) - t;
        } else {
            let diff = l - t;
            r = 0.5 * diff * diff / p.gauss_var + 0.5 * log(6.283185307179586 * p.gauss_var);
            g = diff / p.gauss_var;
        }
        recon4 += select(vec4<f32>(0.0), r, inside);
        dlogits[row * (p.ld_logits >> 2u) + j4] = select(vec4<f32>(0.0), g * p.grad_scale, inside & vec4<bool>(live));
    }
    let recon = recon4.x + recon4.y + recon4.z + recon4.w;
    var kl = 0.0;
    for (var j = lid; j < p.z; j += WG) {
        let mu = mulv[row * p.ld_mulv + j];
        let lv_raw = mulv[row * p.ld_mulv + p.z + j];
        let lv = clamp(lv_raw, LOGVAR_MIN, LOGVAR_MAX);
        let var_ = exp(lv);
        kl += -0.5 * (1.0 + lv - mu * mu - var_);
        let s = select(0.0, p.beta * p.grad_scale, live);
        let inside = lv_raw >= LOGVAR_MIN && lv_raw <= LOGVAR_MAX;
        dmulv[row * p.ld_mulv + j] = s * mu;
        dmulv[row * p.ld_mulv + p.z + j] = select(0.0, s * 0.5 * (var_ - 1.0), inside);
    }
    part_recon[lid] = recon;
    part_kl[lid] = kl;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            part_recon[lid] += part_recon[lid + stride];
            part_kl[lid] += part_kl[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let r = select(0.0, part_recon[0], live);
        let k = select(0.0, part_kl[0], live);
        per_sample[row * 4u] = r;
        per_sample[row * 4u + 1u] = k;
        per_sample[row * 4u + 2u] = r + p.beta * k;
    }
}

var<workgroup> red: array<vec3<f32>, 256>;

// accum[0..3] += batch sums of (recon, kl, total); accum[3] += number of valid samples.
@compute @workgroup_size(256)
fn loss_reduce_main(@builtin(local_invocation_index) lid: u32) {
    var s = vec3<f32>(0.0);
    for (var r = lid; r < p.rows; r += 256u) {
        s += vec3<f32>(per_sample[r * 4u], per_sample[r * 4u + 1u], per_sample[r * 4u + 2u]);
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
        accum[0] += red[0].x;
        accum[1] += red[0].y;
        accum[2] += red[0].z;
        accum[3] += f32(p.valid);
    }
}
