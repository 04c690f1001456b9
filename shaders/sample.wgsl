// Reparameterized sampling z = mu + T exp(0.5 logvar) eps (T = 1 in training, 0 for the
// posterior mean) with eps ~ N(0, 1) drawn from a
// counter-based RNG: Philox4x32-10 keyed by the seed, counter (element, step, stream, 0).
// The CPU twin (src/cpu/sample.rs) reproduces the integer stream bit for bit.
// mu and logvar sit side by side in one [rows, 2Z] matrix (the two encoder heads).

struct SampleParams {
    rows: u32,
    z: u32,
    ld_mulv: u32,
    ld_z: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    stream: u32,
    temperature: f32,
    // corrupt_main: 1 Gaussian noise, 2 salt and pepper, 3 masking (amount in temperature)
    mode: u32,
    // sample_forward_main: row r draws as row first + r (so that an evaluation's draws
    // follow the record, whatever the batch it falls in)
    first: u32,
    _pad2: u32,
}

// logvar is clamped before exp so that no input overflows; the gradient is zero outside.
const LOGVAR_MIN: f32 = -30.0;
const LOGVAR_MAX: f32 = 20.0;

@group(0) @binding(0) var<uniform> p: SampleParams;
@group(0) @binding(1) var<storage, read> mulv: array<f32>;
@group(0) @binding(2) var<storage, read_write> z_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> eps_out: array<f32>;
@group(0) @binding(4) var<storage, read> dz: array<f32>;
@group(0) @binding(5) var<storage, read> eps_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> dmulv: array<f32>;
@group(0) @binding(7) var<storage, read> clean: array<f32>;
@group(0) @binding(8) var<storage, read_write> noisy: array<f32>;

// One standard normal per element by Box-Muller on the first two words (24-bit uniforms).
fn normal_at(element: u32) -> f32 {
    let r = philox4x32_10(vec4<u32>(element, p.step, p.stream, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
    let u1 = (f32(r.x >> 8u) + 1.0) * (1.0 / 16777216.0);
    let u2 = f32(r.y >> 8u) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

@compute @workgroup_size(256)
fn sample_forward_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.z) { return; }
    let r = udiv(i, p.z);
    let j = i - r * p.z;
    let mu = mulv[r * p.ld_mulv + j];
    let lv = clamp(mulv[r * p.ld_mulv + p.z + j], LOGVAR_MIN, LOGVAR_MAX);
    let eps = normal_at(i + p.first * p.z);
    z_out[r * p.ld_z + j] = mu + p.temperature * exp(0.5 * lv) * eps;
    eps_out[r * p.ld_z + j] = eps;
}

// z = temperature * eps: draws from the prior for generation.
@compute @workgroup_size(256)
fn sample_prior_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.z) { return; }
    let r = udiv(i, p.z);
    z_out[r * p.ld_z + i - r * p.z] = p.temperature * normal_at(i);
}

// dmu += dz, dlogvar += dz * eps * 0.5 * exp(0.5 logvar) (added to the KL gradients already there).
@compute @workgroup_size(256)
fn sample_backward_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.z) { return; }
    let r = udiv(i, p.z);
    let j = i - r * p.z;
    let g = dz[r * p.ld_z + j];
    let lv = mulv[r * p.ld_mulv + p.z + j];
    let inside = lv >= LOGVAR_MIN && lv <= LOGVAR_MAX;
    let dlv = g * eps_in[r * p.ld_z + j] * 0.5 * exp(0.5 * clamp(lv, LOGVAR_MIN, LOGVAR_MAX));
    dmulv[r * p.ld_mulv + j] += g;
    dmulv[r * p.ld_mulv + p.z + j] += select(0.0, dlv, inside);
}

// noisy = a corrupted copy of clean ([rows, z] with row stride ld_z), for denoising:
// Gaussian: clamp(x + amount * N(0, 1), 0, 1); salt and pepper: with probability amount
// the pixel becomes 0 or 1; masking: with probability amount it becomes 0.
@compute @workgroup_size(256)
fn corrupt_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.z) { return; }
    let r = udiv(i, p.z);
    let idx = r * p.ld_z + i - r * p.z;
    let x = clean[idx];
    let amount = p.temperature;
    var y = x;
    if (p.mode == 1u) {
        y = clamp(x + amount * normal_at(i), 0.0, 1.0);
    } else {
        let r = philox4x32_10(vec4<u32>(i, p.step, p.stream, 1u), vec2<u32>(p.seed_lo, p.seed_hi));
        let hit = f32(r.x >> 8u) * (1.0 / 16777216.0) < amount;
        if (hit) {
            y = select(0.0, f32(r.y & 1u), p.mode == 2u);
        }
    }
    noisy[idx] = y;
}
