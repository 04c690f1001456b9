// Fused reconstruction + KL loss, in nats:
//   recon = sum over pixels of -log p(x | logits)
//     Bernoulli: binary cross-entropy from logits, max(l, 0) - l x + log(1 + exp(-|l|))
//     Gaussian:  (x - l)^2 / (2 var) + 0.5 log(2 pi var), mean l, fixed variance var
//   kl = sum_j kl_j, kl_j = -0.5 * (1 + logvar_j - mu_j^2 - exp(logvar_j))
//   total = recon + beta * sum_j max(kl_j, free_bits)   (free bits: no gradient below the floor)
// with d(grad_scale * total)/d(logits, mu, logvar). Rows at or past `valid` (batch padding)
// get zero loss and zero gradient. Three launches, none with a workgroup barrier (on CPU
// drivers a barrier switches between coroutines, one per 8 invocations):
//   loss_pixels_main: one invocation per CHUNK texels (4 pixels each) of a row writes their
//     gradient and the chunk's reconstruction sum into `partial` [rows, chunks];
//   loss_rows_main: one invocation per row adds its chunks, computes the KL term and its
//     gradient and writes per_sample;
//   loss_reduce_main: adds the batch sums into a running accumulator, so losses are read
//     back rarely and never per step.
// Logits and targets are read through read_a/read_b (reads_buffer.wgsl or
// reads_texture.wgsl), four values at a time; rows are padded to a multiple of 4
// with zeros and the lanes past D are masked.

const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;
// Texels per invocation of loss_pixels_main: a constant loop, which the compiler unrolls.
const CHUNK: u32 = 8u;

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(3) var<storage, read> mulv: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dmulv: array<f32>;
// [rows, 3] with a row stride of 4
@group(0) @binding(6) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(7) var<storage, read_write> accum: array<f32>;
// [rows, chunks]
@group(0) @binding(8) var<storage, read_write> partial: array<f32>;

// log(1 + e) for e in [0, 1], accurate when e is tiny.
fn log1p_small(e: vec4<f32>) -> vec4<f32> {
    return select(log(1.0 + e), e * (1.0 - 0.5 * e), e < vec4<f32>(1e-4));
}

@compute @workgroup_size(256)
fn loss_pixels_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.chunks) { return; }
    let row = udiv(i, p.chunks);
    let chunk = i - row * p.chunks;
    let live = row < p.valid;
    let ld4 = p.ld_logits >> 2u;
    var recon4 = vec4<f32>(0.0);
    for (var t = 0u; t < CHUNK; t++) {
        let j4 = chunk * CHUNK + t;
        let l = read_a(row * ld4 + min(j4, ld4 - 1u));
        let x = read_b(row * (p.ld_x >> 2u) + min(j4, ld4 - 1u));
        let inside = vec4<u32>(j4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.d);
        var g: vec4<f32>;
        var r: vec4<f32>;
        if (p.likelihood == 0u) {
            // One exp serves both: e = exp(-|l|), sigmoid(l) = 1 / (1 + e) for l >= 0 and
            // e / (1 + e) below.
            let e = exp(-abs(l));
            let s = 1.0 / (1.0 + e);
            r = max(l, vec4<f32>(0.0)) - l * x + log1p_small(e);
            g = select(e * s, s, l >= vec4<f32>(0.0)) - x;
        } else {
            let diff = l - x;
            r = 0.5 * diff * diff / p.gauss_var + 0.5 * log(6.283185307179586 * p.gauss_var);
            g = diff / p.gauss_var;
        }
        recon4 += select(vec4<f32>(0.0), r, inside);
        if (j4 < ld4) {
            dlogits[row * ld4 + j4] = select(vec4<f32>(0.0), g * p.grad_scale, inside & vec4<bool>(live));
        }
    }
    partial[i] = recon4.x + recon4.y + recon4.z + recon4.w;
}

@compute @workgroup_size(256)
fn loss_rows_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = flat_index(wg, nwg, lid);
    if (row >= p.rows) { return; }
    let live = row < p.valid;
    var recon = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        recon += partial[row * p.chunks + c];
    }
    var kl = 0.0;
    var kl_floored = 0.0;
    let s = select(0.0, p.beta * p.grad_scale, live);
    for (var j = 0u; j < p.z; j++) {
        let mu = mulv[row * p.ld_mulv + j];
        let lv_raw = mulv[row * p.ld_mulv + p.z + j];
        let lv = clamp(lv_raw, LOGVAR_MIN, LOGVAR_MAX);
        let var_ = exp(lv);
        let kl_j = -0.5 * (1.0 + lv - mu * mu - var_);
        kl += kl_j;
        kl_floored += max(kl_j, p.free_bits);
        let inside = lv_raw >= LOGVAR_MIN && lv_raw <= LOGVAR_MAX;
        // Below the floor the term is the constant free_bits.
        let sj = select(s, 0.0, kl_j < p.free_bits);
        dmulv[row * p.ld_mulv + j] = sj * mu;
        dmulv[row * p.ld_mulv + p.z + j] = select(0.0, sj * 0.5 * (var_ - 1.0), inside);
    }
    let r = select(0.0, recon, live);
    let k = select(0.0, kl, live);
    per_sample[row * 4u] = r;
    per_sample[row * 4u + 1u] = k;
    per_sample[row * 4u + 2u] = r + p.beta * select(0.0, kl_floored, live);
}

var<workgroup> red: array<vec3<f32>, 256>;

// accum[0..3] += batch sums of (recon, kl, total); accum[3] += number of valid records
// (rows, or rows / samples of an importance-weighted step, whose rows per record the
// weights launch folded into one).
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
        accum[3] += f32(p.valid / max(p.samples, 1u));
    }
}
