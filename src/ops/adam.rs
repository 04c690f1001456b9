//! Adam over one flat parameter buffer (see shaders/adam.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::texture::{Reads, TextureOperand};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Adam's hyper-parameters, PyTorch's defaults.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (AdamW); 0 gives plain Adam.
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
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

fn params(len: usize, c: &AdamConfig, step: u64) -> AdamParams {
    // Bias corrections in f64, as PyTorch computes them on the host.
    let t = step as f64;
    let bc1 = 1.0 - f64::from(c.beta1).powf(t);
    let bc2 = 1.0 - f64::from(c.beta2).powf(t);
    AdamParams {
        len4: (len / 4) as u32,
        lr: c.lr,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        weight_decay: c.weight_decay,
        step_size: (f64::from(c.lr) / bc1) as f32,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
    }
}

/// One Adam launch over `len` floats (a multiple of 4) of param, grad, m and v.
pub struct AdamDispatch {
    pub dispatch: Dispatch,
    len: usize,
    config: AdamConfig,
}

impl AdamDispatch {
    /// Sets the learning rate of the next `set_step` (a schedule's).
    pub fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    /// Sets the step number t (1-based) used for the bias corrections.
    pub fn set_step(&self, gpu: &Gpu, step: u64) {
        let p = params(self.len, &self.config, step);
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&p));
    }
}

/// One Adam launch over `len` floats, reading from buffers or textures, whichever this
/// device runs faster (measured once per device and size).
pub fn adam(
    gpu: &Gpu,
    buffers: [&wgpu::Buffer; 4],
    len: usize,
    config: AdamConfig,
) -> Result<AdamDispatch, GpuError> {
    let candidates = Reads::candidates(gpu, len);
    let reads = gpu.choose(&format!("adam {len}"), candidates, |gpu| {
        let scratch: Vec<Matrix> = (0..4)
            .map(|i| Matrix::zeros(gpu, 1, len, &format!("adam scratch {i}")))
            .collect::<Result<_, _>>()?;
        let [p, g, m, v] = [0, 1, 2, 3].map(|i| &scratch[i].buffer);
        crate::gpu::tune::time_each(gpu, candidates, |r| {
            Ok(vec![adam_with(gpu, r, [p, g, m, v], len, config)?.dispatch])
        })
    })?;
    adam_with(gpu, reads, buffers, len, config)
}

/// One Adam launch over `len` floats (a multiple of 4) of [param, grad, m, v].
pub fn adam_with(
    gpu: &Gpu,
    reads: Reads,
    buffers: [&wgpu::Buffer; 4],
    len: usize,
    config: AdamConfig,
) -> Result<AdamDispatch, GpuError> {
    let bytes = (len * 4) as u64;
    if !len.is_multiple_of(4) || buffers.iter().any(|b| b.size() < bytes) {
        return Err(shape_err(
            "adam",
            format!("{len} values (need a multiple of 4 within every buffer)"),
        ));
    }
    let textures = match reads {
        Reads::Buffers => Vec::new(),
        Reads::Textures => buffers
            .iter()
            .map(|b| TextureOperand::for_buffer(gpu, b, len, "adam input"))
            .collect::<Result<_, _>>()?,
    };
    let p = params(len, &config, 1);
    let entry = match reads {
        Reads::Buffers => "adam_main",
        Reads::Textures => "adam_tex_main",
    };
    let mut bindings: Vec<_> = [1, 2, 3, 4]
        .into_iter()
        .zip(buffers)
        .filter(|&(binding, _)| reads == Reads::Buffers || binding != 2)
        .map(|(binding, b)| (binding, b.as_entire_binding()))
        .collect();
    bindings.extend((5..).zip(textures.iter().map(TextureOperand::binding)));
    let mut dispatch = gpu.dispatch(
        "adam".into(),
        gpu.pipeline(Shader::Adam, entry, &[])?,
        gpu.uniform("adam params", &p),
        &bindings,
        gpu.grid((len / 4).div_ceil(256) as u64)?,
    );
    drop(bindings);
    dispatch.textures = textures;
    Ok(AdamDispatch {
        dispatch,
        len,
        config,
    })
}
