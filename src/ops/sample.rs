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
    mode: u32,
    first: u32,
    pad: u32,
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
        mode: 0,
        first: 0,
        pad: 0,
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
    set_noise_from(gpu, d, (ld_mulv, z), noise, temperature, 0);
}

/// The same for a sample_forward launch whose row r draws as row `first` + r (the
/// record's own draws in an evaluation, whatever its batch).
pub fn set_noise_from(
    gpu: &Gpu,
    d: &Dispatch,
    (ld_mulv, z): (usize, &Matrix),
    noise: Noise,
    temperature: f32,
    first: usize,
) {
    let p = SampleParams {
        first: first as u32,
        ..params(z.rows, z.cols, ld_mulv, z.ld, noise, temperature)
    };
    gpu.queue.write_buffer(&d.params, 0, bytemuck::bytes_of(&p));
}

/// Input corruption for denoising autoencoders.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Corruption {
    /// Add N(0, sigma^2) noise, clamp to [0, 1].
    Gaussian(f32),
    /// Each pixel becomes 0 or 1 with this probability.
    SaltPepper(f32),
    /// Each pixel becomes 0 with this probability.
    Mask(f32),
}

impl std::str::FromStr for Corruption {
    type Err = String;

    /// "gaussian:0.3", "saltpepper:0.2" or "mask:0.25".
    fn from_str(s: &str) -> Result<Corruption, String> {
        let (kind, amount) = s.split_once(':').ok_or_else(|| {
            format!("'{s}' is not KIND:AMOUNT (gaussian:0.3, saltpepper:0.2, mask:0.25)")
        })?;
        let a: f32 = amount
            .parse()
            .map_err(|_| format!("'{amount}' is not a number"))?;
        let probability = || {
            if (0.0..=1.0).contains(&a) {
                Ok(a)
            } else {
                Err(format!("{kind} takes a probability in [0, 1], got {a}"))
            }
        };
        match kind {
            "gaussian" if a.is_finite() && a >= 0.0 => Ok(Corruption::Gaussian(a)),
            "gaussian" => Err(format!(
                "gaussian takes a non-negative standard deviation, got {a}"
            )),
            "saltpepper" => probability().map(Corruption::SaltPepper),
            "mask" => probability().map(Corruption::Mask),
            _ => Err(format!(
                "unknown noise '{kind}' (gaussian, saltpepper, mask)"
            )),
        }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Gaussian(a) => write!(f, "gaussian:{a}"),
            Corruption::SaltPepper(a) => write!(f, "saltpepper:{a}"),
            Corruption::Mask(a) => write!(f, "mask:{a}"),
        }
    }
}

fn corruption_params(x: &Matrix, noise: Noise, c: Corruption) -> SampleParams {
    let (mode, amount) = match c {
        Corruption::Gaussian(a) => (1, a),
        Corruption::SaltPepper(a) => (2, a),
        Corruption::Mask(a) => (3, a),
    };
    SampleParams {
        mode,
        ..params(x.rows, x.cols, 0, x.ld, noise, amount)
    }
}

/// noisy = corrupt(clean), drawn from the RNG position `noise`.
pub fn corrupt(
    gpu: &Gpu,
    clean: &Matrix,
    noisy: &Matrix,
    noise: Noise,
    c: Corruption,
) -> Result<Dispatch, GpuError> {
    if !clean.same_shape(noisy) || clean.ld != noisy.ld {
        return Err(shape_err(
            "corrupt",
            "clean and noisy differ in shape".into(),
        ));
    }
    let pipeline = gpu.pipeline(Shader::Sample, "corrupt_main", &[])?;
    let grid = gpu.grid((clean.rows * clean.cols).div_ceil(256) as u64)?;
    Ok(gpu.dispatch(
        "corrupt".into(),
        pipeline,
        gpu.uniform("corrupt params", &corruption_params(clean, noise, c)),
        &[(7, clean.binding()), (8, noisy.binding())],
        grid,
    ))
}

/// Rewrites a corrupt launch's RNG position.
pub fn set_corruption_noise(gpu: &Gpu, d: &Dispatch, clean: &Matrix, noise: Noise, c: Corruption) {
    gpu.queue.write_buffer(
        &d.params,
        0,
        bytemuck::bytes_of(&corruption_params(clean, noise, c)),
    );
}
