// Adam over one flat parameter buffer, PyTorch's update:
//   p *= 1 - lr * weight_decay                     (decoupled decay, AdamW; 0 for Adam)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
// with step_size = lr / (1 - b1^t) and inv_sqrt_bc2 = 1 / sqrt(1 - b2^t) computed on the host.

struct AdamParams {
    len4: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
}

@group(0) @binding(0) var<uniform> p: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v: array<vec4<f32>>;

// Updates element group i from its current values.
fn update(i: u32, old: vec4<f32>, g: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>) {
    let mi = p.beta1 * m0 + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v0 + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let decayed = old * (1.0 - p.lr * p.weight_decay);
    param[i] = decayed - p.step_size * mi / (sqrt(vi) * p.inv_sqrt_bc2 + p.eps);
}

@compute @workgroup_size(256)
fn adam_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.len4) { return; }
    update(i, param[i], grad[i], m[i], v[i]);
}

// The same reading textures copied from the four buffers just before the launch (the
// writes still go to the buffers): on lavapipe a texture read is straight-line code, a
// storage-buffer read a per-lane loop that is several times slower without AVX-512.
@group(0) @binding(5) var param_t: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var grad_t: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var m_t: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var v_t: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(256)
fn adam_tex_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.len4) { return; }
    let t = texel(i);
    update(i, textureLoad(param_t, t), textureLoad(grad_t, t), textureLoad(m_t, t), textureLoad(v_t, t));
}
