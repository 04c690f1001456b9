//! Generation: codes from the prior (or given codes) decoded into images.

use super::gmm::{sample_per_class, Fitted, Gmm};
use super::step::{class_of, Decoder, STREAM_PRIOR};
use super::{ModelConfig, Params};
use crate::gpu::{Gpu, GpuError};
use crate::ops::loss::Likelihood;
use crate::ops::sample::{sample_prior, set_noise, Noise};

/// A decoder output in [0, 1]: the sigmoid of the logit for Bernoulli, the clamped mean for
/// Gaussian.
pub fn unit(c: &ModelConfig, l: f32) -> f32 {
    match c.likelihood {
        Likelihood::Bernoulli => 1.0 / (1.0 + (-l).exp()),
        Likelihood::Gaussian => l.clamp(0.0, 1.0),
    }
}

pub use crate::data::to_u8;

/// Pixels (u8) from decoder outputs, one image per `input_dim` logits.
pub fn to_pixels(c: &ModelConfig, logits: &[f32]) -> Vec<Vec<u8>> {
    logits
        .chunks(c.output_dim())
        .map(|row| to_u8(&units(c, row)))
        .collect()
}

/// Where generated codes come from.
#[derive(Clone, Copy, Debug)]
pub enum Prior<'a> {
    /// N(0, temperature^2 I), drawn on the GPU.
    Standard,
    /// A mixture fitted to the training codes (see `gmm`), its spread scaled by the
    /// temperature.
    Mixture(&'a Gmm),
    /// A conditional model's mixture per class (see `gmm::Fitted`): each code from its
    /// row's class's, its spread scaled by the temperature.
    PerClass(&'a [Option<Gmm>]),
}

impl<'a> Prior<'a> {
    /// Codes from a fitted prior, else from N(0, I).
    pub fn of(fitted: Option<&'a Fitted>) -> Prior<'a> {
        match fitted {
            None => Prior::Standard,
            Some(Fitted::Shared(g)) => Prior::Mixture(g),
            Some(Fitted::PerClass(gs)) => Prior::PerClass(gs),
        }
    }
}

/// Draws `count` images: codes from `prior` (seeded), decoded in batches into values in
/// [0, 1] (see `unit`). A conditional model draws image i of class `classes[i]`
/// (`classes` holds one per image).
pub fn generate(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    draw: (usize, u64, f32),
    from: (Prior<'_>, Option<&[u8]>),
) -> Result<Vec<Vec<f32>>, GpuError> {
    collect(gpu, params, c, draw, from, &|row| units(c, row))
}

/// `generate`, handing each image to `sink` as its batch is decoded, so that only one
/// batch is held at a time.
pub fn generate_each<E: From<GpuError>>(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    draw: (usize, u64, f32),
    from: (Prior<'_>, Option<&[u8]>),
    sink: &mut dyn FnMut(Vec<f32>) -> Result<(), E>,
) -> Result<(), E> {
    decode_each(gpu, params, c, draw, from, &mut |row| sink(units(c, row)))
}

/// The decoder's raw outputs for `count` codes drawn from `prior` (as `generate`): a
/// table model's per-column parameters, which `data::table::Schema::draw_encoded` turns
/// into records.
pub fn generate_outputs(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    draw: (usize, u64, f32),
    from: (Prior<'_>, Option<&[u8]>),
) -> Result<Vec<Vec<f32>>, GpuError> {
    collect(gpu, params, c, draw, from, &<[f32]>::to_vec)
}

/// A row of decoder outputs as values in [0, 1].
fn units(c: &ModelConfig, row: &[f32]) -> Vec<f32> {
    row.iter().map(|&l| unit(c, l)).collect()
}

/// Every row of `decode_each`, each as `keep` makes it.
fn collect(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    draw: (usize, u64, f32),
    from: (Prior<'_>, Option<&[u8]>),
    keep: &dyn Fn(&[f32]) -> Vec<f32>,
) -> Result<Vec<Vec<f32>>, GpuError> {
    let mut out = Vec::with_capacity(draw.0);
    decode_each::<GpuError>(gpu, params, c, draw, from, &mut |row| {
        out.push(keep(row));
        Ok(())
    })?;
    Ok(out)
}

/// Codes drawn from `prior` and decoded in batches, each row of outputs handed to `sink`.
fn decode_each<E: From<GpuError>>(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    (count, seed, temperature): (usize, u64, f32),
    (prior, classes): (Prior<'_>, Option<&[u8]>),
    sink: &mut dyn FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), E> {
    let rows = count.clamp(1, 256);
    let decoder = Decoder::new(gpu, params, rows)?;
    let mixture_codes = match prior {
        Prior::Mixture(g) => Some(g.sample(count, seed, temperature)),
        Prior::PerClass(gs) => {
            // As the decoder reads them.
            let each: Vec<u8> = match classes {
                Some(l) if !l.is_empty() => (0..count).map(|i| class_of(l, i)).collect(),
                _ => return Err(GpuError::Config(
                    "a per-class mixture draws each sample's code for its class: give the classes"
                        .into(),
                )
                .into()),
            };
            Some(sample_per_class(gs, &each, seed, temperature).map_err(GpuError::Config)?)
        }
        Prior::Standard => None,
    };
    let prior = sample_prior(
        gpu,
        decoder.z(),
        Noise {
            seed,
            step: 0,
            stream: STREAM_PRIOR,
        },
        temperature,
    )?;
    for (chunk, start) in (0..count).step_by(rows).enumerate() {
        let noise = Noise {
            seed,
            step: chunk as u32,
            stream: STREAM_PRIOR,
        };
        set_noise(gpu, &prior, 0, decoder.z(), noise, temperature);
        // Stacked layers below the code are drawn top-down from their priors.
        decoder.set_noise(gpu, noise, temperature);
        decoder.set_classes(
            gpu,
            classes.map(|l| &l[start.min(l.len().saturating_sub(1))..]),
        )?;
        let mut all = Vec::new();
        match &mixture_codes {
            Some(codes) => {
                let z = c.latent;
                let valid = (count - start).min(rows);
                let mut chunk = codes[start * z..(start + valid) * z].to_vec();
                chunk.resize(rows * z, 0.0);
                decoder.z().write(gpu, &chunk)?;
            }
            None => all.push(&prior),
        }
        all.extend(decoder.launches());
        gpu.run(&all)?;
        let logits = decoder.logits()?.read(gpu)?;
        for row in logits.chunks(c.output_dim()).take(count - start) {
            sink(row)?;
        }
    }
    Ok(())
}
