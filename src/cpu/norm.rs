//! GroupNorm twin: images [B, HW, C] (channel fastest), groups of C / G channels, PyTorch's
//! biased variance and epsilon, then an activation.

use crate::ops::Activation;

/// y = act((x - mean) / sqrt(var + eps) * gamma + beta) per (image, group).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f64],
    batch: usize,
    hw: usize,
    c: usize,
    groups: usize,
    gamma: &[f64],
    beta: &[f64],
    act: Activation,
) -> Vec<f64> {
    let cg = c / groups;
    let eps = f64::from(crate::ops::norm::EPS);
    let mut y = vec![0.0; x.len()];
    for b in 0..batch {
        for g in 0..groups {
            let at = |p: usize, j: usize| (b * hw + p) * c + g * cg + j;
            let n = (hw * cg) as f64;
            let values = || (0..hw).flat_map(move |p| (0..cg).map(move |j| at(p, j)));
            let mean = values().map(|i| x[i]).sum::<f64>() / n;
            let var = values().map(|i| (x[i] - mean).powi(2)).sum::<f64>() / n;
            let rstd = 1.0 / (var + eps).sqrt();
            for i in values() {
                let ch = i % c;
                y[i] = super::act_forward((x[i] - mean) * rstd * gamma[ch] + beta[ch], act);
            }
        }
    }
    y
}
