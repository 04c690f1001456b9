//! Whole-dataset passes through a trained model on the GPU: codes (mu, logvar) of images,
//! images of codes, and per-image losses. The commands that use a trained VAE build on these.

use super::decode::{to_u8, unit};
use super::step::{Batches, Decoder, StepProgram, StepSpec};
use super::train::GpuSplit;
use super::{ModelConfig, Params};
use crate::data::Images;
use crate::gpu::{Gpu, GpuError, Matrix};
use crate::ops::iwae::{iwae, EMPTY};
use crate::ops::loss::LossSettings;
use crate::ops::moments::{moments, Moments};
use crate::ops::sequence::repeat_row;

/// The classes a conditional model decodes `images`' own codes with: their labels (None
/// for an unconditional model, which takes none).
pub fn own_classes<'a>(c: &ModelConfig, images: &'a Images) -> Option<&'a [u8]> {
    c.classes.and(images.labels.as_deref())
}

/// Rows per GPU batch for inference.
const BATCH: usize = 256;

/// Posterior parameters of every image: mu and logvar, [count, latent] each.
#[derive(Clone, Debug)]
pub struct Codes {
    /// Means, `latent` per image.
    pub mu: Vec<f32>,
    /// Log-variances, `latent` per image.
    pub logvar: Vec<f32>,
    /// Values per image.
    pub latent: usize,
}

impl Codes {
    /// Images encoded.
    pub fn count(&self) -> usize {
        self.mu.len() / self.latent.max(1)
    }

    /// The mean of image `i`.
    pub fn mu_of(&self, i: usize) -> &[f32] {
        &self.mu[i * self.latent..(i + 1) * self.latent]
    }

    /// KL(q(z_j | x) || N(0, 1)) of each dimension j, averaged over the images (nats).
    pub fn kl_per_dim(&self) -> Vec<f64> {
        let z = self.latent;
        let n = self.count().max(1) as f64;
        let mut kl = vec![0.0; z];
        for (i, (&mu, &lv)) in self.mu.iter().zip(&self.logvar).enumerate() {
            let (mu, lv) = (f64::from(mu), f64::from(lv).clamp(-30.0, 20.0));
            kl[i % z] += -0.5 * (1.0 + lv - mu * mu - lv.exp()) / n;
        }
        kl
    }

    /// Dimensions whose mean varies over the images by more than `threshold` (variance):
    /// the active units of Burda et al. (2016). (`active_units` counts every stochastic
    /// layer's on the GPU without reading the means back.)
    pub fn active_units(&self, threshold: f64) -> usize {
        let mu: Vec<f64> = self.mu.iter().map(|&v| f64::from(v)).collect();
        active_count(
            &crate::cpu::tensor::column_moments(&mu, self.latent),
            threshold,
        )
    }
}

/// Per-image losses in nats: reconstruction, KL and total (beta-weighted), plus the codes.
pub struct Passes {
    pub codes: Codes,
    /// [count, 3]: reconstruction, KL, total.
    pub losses: Vec<f32>,
}

/// Runs the encoder (and, for the losses, the sampled decoder) over every image in order.
pub fn encode(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &Images,
    beta: f32,
) -> Result<Passes, GpuError> {
    let split = GpuSplit::upload(gpu, images).map_err(|e| GpuError::Config(format!("{e:#}")))?;
    let n = images.count;
    let rows = n.clamp(1, BATCH);
    let spec = StepSpec::evaluation(c, rows, beta);
    let settings = |valid| LossSettings {
        valid,
        ..spec.settings
    };
    let mut program = StepProgram::new(gpu, params, c, &split.batches(), &spec)?;
    let z = c.latent;
    // With stacked layers the code is the top layer's mean given the means below, not
    // given this pass's draws of them: another pass (`layer_means`) reads it.
    let stacked = !params.graph.levels.is_empty();
    let (mut mu, mut logvar, mut losses) = (
        Vec::with_capacity(n * z),
        Vec::with_capacity(n * z),
        Vec::with_capacity(n * 3),
    );
    for (i, offset) in (0..n).step_by(rows).enumerate() {
        let valid = (n - offset).min(rows);
        program.prepare(gpu, offset, i as u64, &settings(valid));
        program.submit(gpu, None)?;
        if !stacked {
            let mulv = program.mulv().read(gpu)?;
            for r in 0..valid {
                mu.extend_from_slice(&mulv[r * 2 * z..r * 2 * z + z]);
                logvar.extend_from_slice(&mulv[r * 2 * z + z..(r + 1) * 2 * z]);
            }
        }
        losses.extend_from_slice(&program.per_sample.read(gpu)?[..valid * 3]);
    }
    let codes = match stacked {
        false => Codes {
            mu,
            logvar,
            latent: z,
        },
        true => layer_means(gpu, params, c, images)?
            .pop()
            .expect("the code's layer"),
    };
    Ok(Passes { codes, losses })
}

/// The posterior means of every stochastic layer of every image, bottom first (the code
/// last; one layer for most models), each layer's given the means of the layers below (no
/// noise).
pub fn layer_means(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &Images,
) -> Result<Vec<Codes>, GpuError> {
    let n = images.count;
    let g = &params.graph;
    let start = |_: &StepProgram, layers: &[usize]| {
        Ok(layers
            .iter()
            .map(|&t| Codes {
                mu: Vec::with_capacity(n * g.shapes[t].c / 2),
                logvar: Vec::new(),
                latent: g.shapes[t].c / 2,
            })
            .collect::<Vec<_>>())
    };
    layer_pass(
        gpu,
        params,
        c,
        images,
        start,
        |codes, program, layers, valid| {
            for (&t, layer) in layers.iter().zip(codes) {
                let mulv = program.program.value(t).read(gpu)?;
                let z = layer.latent;
                for r in 0..valid {
                    layer.mu.extend_from_slice(&mulv[r * 2 * z..r * 2 * z + z]);
                    layer
                        .logvar
                        .extend_from_slice(&mulv[r * 2 * z + z..(r + 1) * 2 * z]);
                }
            }
            Ok(())
        },
    )
}

/// The active units of every stochastic layer, bottom first, as (active, size): the
/// dimensions whose posterior mean varies over `images` by more than `threshold`
/// (variance; Burda et al. 2016), each layer's given the means below it.
pub fn active_units(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &Images,
    threshold: f64,
) -> Result<Vec<(usize, usize)>, GpuError> {
    Ok(layer_moments(gpu, params, c, images)?
        .iter()
        .map(|l| (active_count(l, threshold), l.len()))
        .collect())
}

/// Dimensions whose (mean, variance) has a variance above `threshold`.
fn active_count(moments: &[(f64, f64)], threshold: f64) -> usize {
    moments.iter().filter(|&&(_, v)| v > threshold).count()
}

/// Each stochastic layer's posterior means' mean and variance per dimension over
/// `images`, bottom first, each layer's given the means below it: gathered on the GPU
/// batch by batch (`ops::moments`), only the moments read back.
pub fn layer_moments(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &Images,
) -> Result<Vec<Vec<(f64, f64)>>, GpuError> {
    let g = &params.graph;
    let start = |program: &StepProgram, layers: &[usize]| {
        layers
            .iter()
            .map(|&t| moments(gpu, program.program.value(t), (0, g.shapes[t].c / 2)))
            .collect::<Result<Vec<_>, _>>()
    };
    let each = |all: &mut Vec<Moments>, _: &StepProgram, _: &[usize], valid: usize| {
        for m in all.iter_mut() {
            m.set_rows(gpu, valid)?;
        }
        gpu.run(&all.iter().map(|m| &m.dispatch).collect::<Vec<_>>())
    };
    layer_pass(gpu, params, c, images, start, each)?
        .iter()
        .map(|m| m.read(gpu))
        .collect()
}

/// Runs the model over `images` in batches, each stochastic layer's posterior mean given
/// the means below it (no noise): `start` makes the state from the step and its layers'
/// mu | logvar tensors (bottom first), `each` takes every batch's valid rows into it.
fn layer_pass<T>(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &Images,
    start: impl FnOnce(&StepProgram, &[usize]) -> Result<T, GpuError>,
    mut each: impl FnMut(&mut T, &StepProgram, &[usize], usize) -> Result<(), GpuError>,
) -> Result<T, GpuError> {
    let split = GpuSplit::upload(gpu, images).map_err(|e| GpuError::Config(format!("{e:#}")))?;
    let n = images.count;
    let rows = n.clamp(1, BATCH);
    let spec = StepSpec::evaluation(c, rows, 1.0);
    let settings = spec.settings;
    let mut program = StepProgram::new(gpu, params, c, &split.batches(), &spec)?;
    program.temperature = 0.0;
    let g = &params.graph;
    let layers: Vec<usize> = g.levels.iter().map(|l| l.mulv).chain([g.mulv]).collect();
    let mut state = start(&program, &layers)?;
    for (i, offset) in (0..n).step_by(rows).enumerate() {
        let valid = (n - offset).min(rows);
        program.prepare(gpu, offset, i as u64, &LossSettings { valid, ..settings });
        program.submit(gpu, None)?;
        each(&mut state, &program, &layers, valid)?;
    }
    Ok(state)
}

/// Decoder outputs in [0, 1] (sigmoid of logits, or the clamped Gaussian mean) for codes
/// [n, latent], in batches; a conditional model's `classes` hold one class per code (the
/// last repeats: one class decodes them all).
pub fn decode(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    codes: &[f32],
    classes: Option<&[u8]>,
) -> Result<Vec<Vec<f32>>, GpuError> {
    Ok(decode_outputs(gpu, params, c, codes, classes)?
        .into_iter()
        .map(|row| row.into_iter().map(|l| unit(c, l)).collect())
        .collect())
}

/// The decoder's raw outputs (logits, means, a table's per-column parameters) for codes
/// [n, latent], in batches; a conditional model's `classes` hold one class per code (the
/// last repeats: one class decodes them all).
pub fn decode_outputs(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    codes: &[f32],
    classes: Option<&[u8]>,
) -> Result<Vec<Vec<f32>>, GpuError> {
    let n = codes.len() / c.latent;
    let rows = n.clamp(1, BATCH);
    let decoder = Decoder::new(gpu, params, rows)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(rows) {
        let valid = (n - start).min(rows);
        let mut chunk = codes[start * c.latent..(start + valid) * c.latent].to_vec();
        chunk.resize(rows * c.latent, 0.0);
        decoder.z().write(gpu, &chunk)?;
        decoder.set_classes(
            gpu,
            classes.map(|l| &l[start.min(l.len().saturating_sub(1))..]),
        )?;
        gpu.run(&decoder.launches())?;
        let logits = decoder.logits()?.read(gpu)?;
        out.extend(
            logits
                .chunks(c.output_dim())
                .take(valid)
                .map(<[f32]>::to_vec),
        );
    }
    Ok(out)
}

/// Decoder outputs as pixels.
pub fn decode_pixels(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    codes: &[f32],
    classes: Option<&[u8]>,
) -> Result<Vec<Vec<u8>>, GpuError> {
    Ok(decode(gpu, params, c, codes, classes)?
        .iter()
        .map(|v| to_u8(v))
        .collect())
}

/// PSNR in dB between images in [0, 1], over the positions where `mask` is true (all if None).
pub fn psnr(a: &[f32], b: &[f32], mask: Option<&[bool]>) -> f64 {
    let (mut se, mut n) = (0.0f64, 0usize);
    for i in 0..a.len() {
        if mask.is_none_or(|m| m[i]) {
            se += f64::from(a[i] - b[i]).powi(2);
            n += 1;
        }
    }
    let mse = se / n.max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (1.0 / mse).log10()
    }
}

/// Per image, the importance-weighted estimate of log p(x) with K samples (log-mean-exp of
/// the K importance weights), all on the GPU: the encoder runs once per image (in batches
/// of images) up to the lowest stochastic layer's mu | logvar, which is repeated over the
/// image's K samples; those run from there in batches of up to 512, and a log-sum-exp per
/// image accumulates across batches. `progress` hears the importance samples drawn so far
/// (of `test.count * k`).
pub fn iwae_log_px(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    test: &Images,
    k: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<f64>, GpuError> {
    let rows = k.min(512);
    let n = test.count;
    // Each image index repeated `rows` times, so a batch at offset i * rows is image i.
    let repeated: Vec<u32> = (0..n as u32)
        .flat_map(|i| std::iter::repeat_n(i, rows))
        .collect();
    let split = GpuSplit::upload(gpu, test).map_err(|e| GpuError::Config(format!("{e:#}")))?;
    let indices = Matrix::from_slice(
        gpu,
        1,
        repeated.len(),
        bytemuck::cast_slice(&repeated),
        "iwae indices",
    )?;
    let spec = |rows| StepSpec::evaluation(c, rows, 1.0);
    let settings = spec(rows).settings;
    let images = n.clamp(1, BATCH);
    let mut encoder = StepProgram::new(gpu, params, c, &split.batches(), &spec(images))?;
    let mut program = StepProgram::from_posterior(
        gpu,
        params,
        c,
        &Batches {
            indices: &indices.buffer,
            count: repeated.len(),
            ..split.batches()
        },
        &spec(rows),
    )?;
    program.set_stream(super::step::STREAM_EVAL + 10);
    let mut posterior = repeat_row(gpu, encoder.posterior(), program.posterior())?;
    let state = Matrix::from_slice(gpu, 1, 2 * n, &EMPTY.repeat(n), "iwae state")?;
    let mut merge = iwae(
        gpu,
        program.monte_carlo_kl(),
        &program.per_sample,
        program.mulv(),
        program.z(),
        program.eps(),
        &state,
    )?;
    let mut step = 0u64;
    for i in 0..n {
        let first = i - i % images;
        if i == first {
            let valid = (n - first).min(images);
            encoder.prepare(gpu, first, 0, &LossSettings { valid, ..settings });
            encoder.submit(gpu, None)?;
        }
        posterior.set(gpu, i - first)?;
        for start in (0..k).step_by(rows) {
            let valid = (k - start).min(rows);
            program.prepare(gpu, i * rows, step, &LossSettings { valid, ..settings });
            merge.set(gpu, i, valid);
            let mut commands = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("iwae"),
                });
            let mut launches = vec![&posterior.dispatch];
            launches.extend(program.launches());
            launches.push(&merge.dispatch);
            crate::gpu::encode(&mut commands, &launches);
            gpu.queue.submit([commands.finish()]);
            step += 1;
            progress((i * k + start + valid) as u64);
        }
    }
    let s = state.read(gpu)?;
    let log_k = (k as f64).ln();
    Ok((0..n)
        .map(|i| f64::from(s[2 * i]) + f64::from(s[2 * i + 1]).ln() - log_k)
        .collect())
}
