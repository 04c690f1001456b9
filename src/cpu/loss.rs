//! Loss twin: per-sample reconstruction, KL and total with their gradients.

use super::sample::{LOGVAR_MAX, LOGVAR_MIN};
use crate::ops::loss::{Likelihood, LossSettings};

pub struct LossOutput {
    /// [rows, 3]: reconstruction, KL, total.
    pub per_sample: Vec<f64>,
    pub dlogits: Vec<f64>,
    pub dmulv: Vec<f64>,
}

/// logits and x are [rows, d]; mulv is [rows, 2z].
pub fn loss(
    logits: &[f64],
    x: &[f64],
    mulv: &[f64],
    rows: usize,
    d: usize,
    z: usize,
    s: &LossSettings,
) -> LossOutput {
    let beta = f64::from(s.beta);
    let gs = f64::from(s.grad_scale);
    let var = f64::from(s.gauss_var);
    let mut out = LossOutput {
        per_sample: vec![0.0; rows * 3],
        dlogits: vec![0.0; rows * d],
        dmulv: vec![0.0; rows * 2 * z],
    };
    for r in 0..rows.min(s.valid) {
        let mut recon = 0.0;
        for j in 0..d {
            let (l, t) = (logits[r * d + j], x[r * d + j]);
            let g = match s.likelihood {
                Likelihood::Bernoulli => {
                    recon += l.max(0.0) - l * t + (-l.abs()).exp().ln_1p();
                    1.0 / (1.0 + (-l).exp()) - t
                }
                Likelihood::Gaussian => {
                    recon +=
                        0.5 * (l - t) * (l - t) / var + 0.5 * (std::f64::consts::TAU * var).ln();
                    (l - t) / var
                }
            };
            out.dlogits[r * d + j] = g * gs;
        }
        let (mut kl, mut kl_floored) = (0.0, 0.0);
        let floor = f64::from(s.free_bits);
        for j in 0..z {
            let mu = mulv[r * 2 * z + j];
            let lv_raw = mulv[r * 2 * z + z + j];
            let lv = lv_raw.clamp(LOGVAR_MIN, LOGVAR_MAX);
            let kl_j = -0.5 * (1.0 + lv - mu * mu - lv.exp());
            kl += kl_j;
            kl_floored += kl_j.max(floor);
            // Below the free-bits floor the term is a constant.
            let w = if kl_j < floor { 0.0 } else { beta * gs };
            out.dmulv[r * 2 * z + j] = w * mu;
            if (LOGVAR_MIN..=LOGVAR_MAX).contains(&lv_raw) {
                out.dmulv[r * 2 * z + z + j] = w * 0.5 * (lv.exp() - 1.0);
            }
        }
        out.per_sample[r * 3] = recon;
        out.per_sample[r * 3 + 1] = kl;
        out.per_sample[r * 3 + 2] = recon + beta * kl_floored;
    }
    out
}

/// log of the importance-weighted estimate of p(x) from K samples: logsumexp(log w) - log K,
/// log w_k = -recon_k + sum_j (-0.5 z^2 + 0.5 eps^2 + 0.5 logvar). `recon` is [K],
/// `mulv` [K, 2z], `zs` and `eps` [K, z].
pub fn iwae_log_px(recon: &[f64], mulv: &[f64], zs: &[f64], eps: &[f64], z: usize) -> f64 {
    let lw: Vec<f64> = (0..recon.len())
        .map(|r| {
            -recon[r]
                + (0..z)
                    .map(|j| {
                        let lv = mulv[r * 2 * z + z + j].clamp(LOGVAR_MIN, LOGVAR_MAX);
                        -0.5 * zs[r * z + j].powi(2) + 0.5 * eps[r * z + j].powi(2) + 0.5 * lv
                    })
                    .sum::<f64>()
        })
        .collect();
    log_mean_exp(&lw)
}

/// The same under a prior whose per-sample KL, log q(z_k | x) - log p(z_k), is given (a
/// VampPrior's Monte-Carlo KL): log w_k = -recon_k - kl_k.
pub fn iwae_log_px_mc(recon: &[f64], kl: &[f64]) -> f64 {
    let lw: Vec<f64> = recon.iter().zip(kl).map(|(r, k)| -r - k).collect();
    log_mean_exp(&lw)
}

/// The importance-weighted objective twin (see shaders/iwae_weights.wgsl): per record of
/// `k` consecutive rows of losses `totals` (= -log w), the normalized weights of its rows
/// and its bound -(logsumexp(log w) - log k); with `average`, weights 1/k and the mean
/// loss. Records at or past `valid` get zeros.
pub fn iwae_weights(
    totals: &[f64],
    (k, average): (usize, bool),
    valid: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut weights = vec![0.0; totals.len()];
    let mut bounds = vec![0.0; totals.len() / k];
    for (g, group) in totals.chunks(k).enumerate().take(valid) {
        let lw: Vec<f64> = group.iter().map(|t| -t).collect();
        let m = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = lw.iter().map(|l| (l - m).exp()).sum();
        for (i, l) in lw.iter().enumerate() {
            weights[g * k + i] = if average {
                1.0 / k as f64
            } else {
                (l - m).exp() / s
            };
        }
        bounds[g] = if average {
            group.iter().sum::<f64>() / k as f64
        } else {
            -log_mean_exp(&lw)
        };
    }
    (weights, bounds)
}

fn log_mean_exp(lw: &[f64]) -> f64 {
    let m = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + lw.iter().map(|w| (w - m).exp()).sum::<f64>().ln() - (lw.len() as f64).ln()
}

/// Softmax cross-entropy twin: (per-row loss, gradient * scale) for logits [rows, classes]; a
/// label that is not a class (padding) gives zero loss and gradient.
pub fn softmax_xent(
    logits: &[f64],
    labels: &[u32],
    classes: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut loss = Vec::new();
    let mut grad = Vec::new();
    for (row, &label) in logits.chunks(classes).zip(labels) {
        if label as usize >= classes {
            // Not a class: padding, ignored.
            loss.push(0.0);
            grad.extend(std::iter::repeat_n(0.0, classes));
            continue;
        }
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|l| (l - m).exp()).sum();
        loss.push(m + s.ln() - row[label as usize]);
        grad.extend(
            row.iter().enumerate().map(|(k, l)| {
                ((l - m).exp() / s - f64::from(u8::from(k == label as usize))) * scale
            }),
        );
    }
    (loss, grad)
}

/// Twin of `ops::softmax::softmax_rows`: (each row's softmax, its log-sum-exp).
pub fn softmax_rows(logits: &[f64], classes: usize) -> (Vec<f64>, Vec<f64>) {
    let mut probs = Vec::with_capacity(logits.len());
    let mut lse = Vec::new();
    for row in logits.chunks(classes) {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|l| (l - m).exp()).sum();
        probs.extend(row.iter().map(|l| (l - m).exp() / s));
        lse.push(m + s.ln());
    }
    (probs, lse)
}

/// Table reconstruction twin (shaders/table_loss.wgsl): per row, the masked sum over
/// column blocks of the Gaussian (learned variance), Bernoulli and softmax terms, and the
/// gradient times `scale`. `outputs` is [rows, o], `x` is [rows, 2e] ([values | mask]);
/// rows at or past `valid` get zero.
pub fn table_recon(
    outputs: &[f64],
    x: &[f64],
    (rows, o, e): (usize, usize, usize),
    blocks: &[[u32; 4]],
    valid: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    use crate::data::table::{BINARY, NUMERIC};
    const LV: (f64, f64) = (-20.0, 20.0);
    let mut recon = vec![0.0; rows];
    let mut grad = vec![0.0; rows * o];
    for r in 0..rows.min(valid) {
        let out = &outputs[r * o..(r + 1) * o];
        let (vals, mask) = x[r * 2 * e..(r + 1) * 2 * e].split_at(e);
        let g = &mut grad[r * o..(r + 1) * o];
        for &[kind, at, first, w] in blocks {
            let (at, first, w) = (at as usize, first as usize, w as usize);
            let seen = mask[at];
            if kind == NUMERIC {
                let (t, m, raw) = (vals[at], out[first], out[first + 1]);
                let s = raw.clamp(LV.0, LV.1);
                let d = t - m;
                recon[r] += seen * 0.5 * ((std::f64::consts::TAU).ln() + s + d * d * (-s).exp());
                g[first] = scale * seen * (-d * (-s).exp());
                if (LV.0..=LV.1).contains(&raw) {
                    g[first + 1] = scale * seen * 0.5 * (1.0 - d * d * (-s).exp());
                }
            } else if kind == BINARY {
                let (t, l) = (vals[at], out[first]);
                recon[r] += seen * (l.max(0.0) - l * t + (-l.abs()).exp().ln_1p());
                g[first] = scale * seen * (1.0 / (1.0 + (-l).exp()) - t);
            } else {
                let l = &out[first..first + w];
                let t = &vals[at..at + w];
                let top = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = l.iter().map(|v| (v - top).exp()).sum();
                let picked: f64 = l.iter().zip(t).map(|(l, t)| l * t).sum();
                recon[r] += seen * (top + sum.ln() - picked);
                for k in 0..w {
                    g[first + k] = scale * seen * ((l[k] - top).exp() / sum - t[k]);
                }
            }
        }
    }
    (recon, grad)
}
