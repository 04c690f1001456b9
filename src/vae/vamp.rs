//! The VampPrior (Tomczak & Welling 2018) outside the step: its pseudo-inputs' start from
//! training images, and the prior itself as a mixture, for drawing codes from it.

use super::gmm::Gmm;
use super::step::PseudoPass;
use crate::cpu::sample::{LOGVAR_MAX, LOGVAR_MIN};
use crate::data::store::TrainSet;
use crate::gpu::{Gpu, GpuError};
use crate::graph::Params;
use crate::ops::Activation;
use crate::rng::Rng;

/// How far from 0 and 1 a pixel starts (a sigmoid reaches neither).
const EDGE: f32 = 0.01;

/// Sets the pseudo-inputs to K training images drawn by `seed` (the paper's "VampPrior
/// data" start, which trains better than noise): raw values whose activation gives the
/// image, pixels kept `EDGE` inside (0, 1) under a sigmoid.
pub fn init_pseudo_inputs(
    gpu: &Gpu,
    params: &Params,
    train: &TrainSet<'_>,
    seed: u64,
) -> anyhow::Result<()> {
    let Some((p, slot)) = params.pseudo_inputs() else {
        return Ok(());
    };
    let n = train.count();
    anyhow::ensure!(
        n > 0,
        "the VampPrior starts from training images, and there are none"
    );
    if p.count > n {
        log::warn!(
            "the VampPrior's {} pseudo-inputs start as training images, and there are {n}: some start as copies (they part as they train only where their gradients differ)",
            p.count
        );
    }
    let mut rng = Rng::new(seed ^ 0x7661_6d70);
    // Distinct images where there are enough.
    let order = rng.permutation(n);
    let picks: Vec<u32> = (0..p.count).map(|i| order[i % n]).collect();
    let mut bytes = vec![0u8; p.count * train.image_bytes()];
    train.gather(&picks, 0, &mut bytes)?;
    // One input per [rows, cols] block of the slot, in the batch's order: the values as read.
    let raw: Vec<f32> = train
        .dtype()
        .values(&bytes)
        .into_iter()
        .map(|v| match p.act {
            Activation::Sigmoid => {
                let v = v.clamp(EDGE, 1.0 - EDGE);
                (v / (1.0 - v)).ln()
            }
            _ => v,
        })
        .collect();
    params.view(&params.values, slot).write(gpu, &raw)?;
    Ok(())
}

/// The VampPrior of the model `params` as a mixture: the encoder's posteriors at the
/// pseudo-inputs, equally weighted; None for a model with the standard prior.
pub fn mixture(gpu: &Gpu, params: &Params) -> Result<Option<Gmm>, GpuError> {
    let Some(p) = params.graph.pseudo else {
        return Ok(None);
    };
    let pass = PseudoPass::new(gpu, params)?;
    let launches: Vec<_> = pass.forward().collect();
    gpu.run(&launches)?;
    let mulv = pass.components(&params.graph).read(gpu)?;
    let z = mulv.len() / (2 * p.count);
    let (mut means, mut variances) = (Vec::new(), Vec::new());
    for row in mulv.chunks(2 * z) {
        means.push(row[..z].iter().map(|&v| f64::from(v)).collect());
        variances.push(
            row[z..]
                .iter()
                .map(|&lv| f64::from(lv).clamp(LOGVAR_MIN, LOGVAR_MAX).exp())
                .collect(),
        );
    }
    Ok(Some(Gmm {
        weights: vec![1.0 / p.count as f64; p.count],
        means,
        variances,
        log_likelihood: f64::NAN,
        iterations: 0,
    }))
}

/// Pseudo-inputs a run's picture shows (the first ones).
pub const SHOWN: usize = 64;

/// The first `SHOWN` pseudo-inputs as the encoder sees them, as pixels; None for a model
/// with the standard prior, or one of table records (not images).
pub fn pseudo_images(
    gpu: &Gpu,
    params: &Params,
    table: bool,
) -> Result<Option<Vec<Vec<u8>>>, GpuError> {
    let Some((p, slot)) = params.pseudo_inputs().filter(|_| !table) else {
        return Ok(None);
    };
    let raw = params.view(&params.values, slot).read(gpu)?;
    let d = raw.len() / p.count;
    Ok(Some(
        raw.chunks(d)
            .take(SHOWN)
            .map(|u| {
                let seen: Vec<f32> = u
                    .iter()
                    .map(|&v| crate::cpu::act_forward(f64::from(v), p.act) as f32)
                    .collect();
                crate::data::to_u8(&seen)
            })
            .collect(),
    ))
}
