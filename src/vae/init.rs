//! A start of the decoder that follows the data (Burda et al. 2016): its output bias at the
//! training data's mean, so that the first steps model the pixels' average and the
//! gradients go to the structure around it.

use super::ModelConfig;
use crate::data::store::TrainSet;
use crate::gpu::Gpu;
use crate::graph::{Op, Params};
use crate::ops::loss::Likelihood;

/// Images read at a time for the mean.
const CHUNK: usize = 4096;

/// How far from 0 and 1 a mean pixel is kept before its logit.
const EDGE: f64 = 1e-3;

/// Sets the bias of the layer that writes the logits to the mean of each training value
/// (its logit for a Bernoulli model); a convolution's, to each channel's mean.
pub fn output_bias_from_data(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    train: &TrainSet<'_>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        c.table.is_none(),
        "the output bias starts from the data's mean for images and arrays; a table's outputs are its columns' parameters"
    );
    let g = &params.graph;
    let node = g
        .producer(g.root(g.logits))
        .ok_or_else(|| anyhow::anyhow!("the model has no output layer"))?;
    let [_, bias] = &params.slots[node][..] else {
        anyhow::bail!("the output layer has no bias");
    };
    let (n, d) = (train.count(), train.dim());
    anyhow::ensure!(n > 0, "no training images to take the mean of");
    let mut sums = vec![0f64; d];
    let order: Vec<u32> = (0..n as u32).collect();
    let mut bytes = vec![0u8; CHUNK.min(n) * train.image_bytes()];
    for first in (0..n).step_by(CHUNK) {
        let count = CHUNK.min(n - first);
        let part = &mut bytes[..count * train.image_bytes()];
        train.gather(&order, first, part)?;
        for image in train.dtype().values(part).chunks(d) {
            for (s, &v) in sums.iter_mut().zip(image) {
                *s += f64::from(v);
            }
        }
    }
    let channels = g.shapes[g.x].c;
    let means: Vec<f64> = match g.nodes[node].op {
        // One bias per value, in the data's (h, w, c) order.
        Op::Linear { .. } => sums.iter().map(|s| s / n as f64).collect(),
        // One per channel: the mean over its pixels.
        _ => (0..channels)
            .map(|ch| {
                let total: f64 = sums.iter().skip(ch).step_by(channels).sum();
                total / (n * d / channels) as f64
            })
            .collect(),
    };
    let values: Vec<f32> = means
        .iter()
        .map(|&m| match c.likelihood {
            Likelihood::Bernoulli => {
                let m = m.clamp(EDGE, 1.0 - EDGE);
                (m / (1.0 - m)).ln() as f32
            }
            Likelihood::Gaussian => m as f32,
        })
        .collect();
    anyhow::ensure!(
        values.len() == bias.rows * bias.cols,
        "the output layer has {} biases for {} mean values",
        bias.rows * bias.cols,
        values.len()
    );
    params.view(&params.values, bias).write(gpu, &values)?;
    Ok(())
}
