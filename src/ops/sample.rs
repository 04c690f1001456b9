//! Reparameterized sampling launchers (see shaders/sample.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// The RNG position of a launch: the seed, the step and a stream that separates uses
/// (training noise, evaluation, generation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Noise {
    pub seed: u64,
    pub step: u32,
    pub stream: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SampleParams {
    rows: u32,
    z: u32,
    ld_mulv: u32,
    ld_z: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    stream: u32,
    temperature: f32,
    pad: [u32; 3],
}

fn params(
    rows: usize,
    z: usize,
    ld_mulv: usize,
    ld_z: usize,
    noise: Noise,
    temperature: f32,
) -> SampleParams {
    SampleParams {
        rows: rows as u32,
        z: z as u32,
        ld_mulv: ld_mulv as u32,
        ld_z: ld_z as u32,
        seed_lo: noise.seed as u32,
        seed_hi: (noise.seed >> 32) as u32,
        step: noise.step,
        stream: noise.stream,
        temperature,
        pad: [0; 3],
    }
}

fn check(mulv: &Matrix, z: &Matrix, eps: &Matrix) -> Result<(), GpuError> {
    if mulv.cols != 2 * z.cols || mulv.rows != z.rows || !z.same_shape(eps) {
        return Err(shape_err(
            "sample",
            format!(
                "mu|logvar [{}, {}], z [{}, {}], eps [{}, {}]",
                mulv.rows, mulv.cols, z.rows, z.cols, eps.rows, eps.cols
            ),
        ));
    }
    Ok(())
}

/// z = mu + temperature * exp(0.5 logvar) * eps, keeping eps for the backward (which
/// assumes temperature 1; 0 decodes the posterior mean). `mulv` is [B, 2Z].
pub fn sample_forward(
    gpu: &Gpu,
    mulv: &Matrix,
    z: &Matrix,
    eps: &Matrix,
    noise: Noise,
    temperature: f32,
) -> Result<Dispatch, GpuError> {
    check(mulv, z, eps)?;
    let p = params(z.rows, z.cols, mulv.ld, z.ld, noise, temperature);
    let pipeline = gpu.pipeline(Shader::Sample, "sample_forward_main", &[])?;
    let grid = gpu.grid((z.rows * z.cols).div_ceil(256) as u64)?;
    Ok(gpu.dispatch(
        "sample".into(),
        pipeline,
        gpu.uniform("sample params", &p),
        &[(1, mulv.binding()), (2, z.binding()), (3, eps.binding())],
        grid,
    ))
}

/// z = temperature * eps: codes drawn from the prior.
pub fn sample_prior(
    gpu: &Gpu,
    z: &Matrix,
    noise: Noise,
    temperature: f32,
) -> Result<Dispatch, GpuError> {
    let p = params(z.rows, z.cols, 0, z.ld, noise, temperature);
    let pipeline = gpu.pipeline(Shader::Sample, "sample_prior_main", &[])?;
    let grid = gpu.grid((z.rows * z.cols).div_ceil(256) as u64)?;
    Ok(gpu.dispatch(
        "sample_prior".into(),
        pipeline,
        gpu.uniform("prior params", &p),
        &[(2, z.binding())],
        grid,
    ))
}

/// Adds the sampling path's gradient to dmulv: dmu += dz, dlogvar += dz eps 0.5 std.
pub fn sample_backward(
    gpu: &Gpu,
    mulv: &Matrix,
    dz: &Matrix,
    eps: &Matrix,
    dmulv: &Matrix,
) -> Result<Dispatch, GpuError> {
    check(mulv, dz, eps)?;
    if !mulv.same_shape(dmulv) {
        return Err(shape_err(
            "sample_backward",
            "dmulv differs from mulv".into(),
        ));
    }
    let p = params(dz.rows, dz.cols, mulv.ld, dz.ld, Noise::default(), 1.0);
    let pipeline = gpu.pipeline(Shader::Sample, "sample_backward_main", &[])?;
    let grid = gpu.grid((dz.rows * dz.cols).div_ceil(256) as u64)?;
    Ok(gpu.dispatch(
        "sample_backward".into(),
        pipeline,
        gpu.uniform("sample backward params", &p),
        &[
            (1, mulv.binding()),
            (4, dz.binding()),
            (5, eps.binding()),
            (6, dmulv.binding()),
        ],
        grid,
    ))
}

/// Rewrites a sample_forward or sample_prior launch's RNG position and temperature
/// (e.g. each training step). For the prior, `ld_mulv` is unused.
pub fn set_noise(
    gpu: &Gpu,
    d: &Dispatch,
    ld_mulv: usize,
    z: &Matrix,
    noise: Noise,
    temperature: f32,
) {
    let p = params(z.rows, z.cols, ld_mulv, z.ld, noise, temperature);
    gpu.queue.write_buffer(&d.params, 0, bytemuck::bytes_of(&p));
}
