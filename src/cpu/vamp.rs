//! VampPrior KL twin (see shaders/vamp.wgsl): the Monte-Carlo KL of each record against the
//! mixture of K diagonal Gaussians, with the gradients of `scale` times their sum.

use super::sample::{LOGVAR_MAX, LOGVAR_MIN};

pub struct VampOutput {
    /// The code z = mu + sigma eps [rows, z].
    pub z: Vec<f64>,
    /// Per record, KL (zero for rows at or past `valid`).
    pub kl: Vec<f64>,
    /// Gradients of `scale` * sum of the valid KLs by the records' and the components' mu |
    /// logvar, [rows, 2z] and [k, 2z].
    pub dmulv: Vec<f64>,
    pub dpmulv: Vec<f64>,
}

/// `mulv` [rows, 2z], `eps` [rows, z], `pmulv` [k, 2z]; z is sampled from mulv and eps here,
/// so that finite differences of the KL by mulv see the path through the code. The
/// components' gradients weigh record b by `row_scale[b]` (all ones when empty). With
/// `pathwise` the records' gradients keep only the path through the code (log q's own
/// parameters held: the doubly reparameterized estimator's, see shaders/vamp.wgsl).
pub fn vamp_kl(
    mulv: &[f64],
    eps: &[f64],
    pmulv: &[f64],
    (rows, valid, z): (usize, usize, usize),
    (scale, row_scale, pathwise): (f64, &[f64], bool),
) -> VampOutput {
    let k = pmulv.len() / (2 * z);
    let clamp = |lv: f64| lv.clamp(LOGVAR_MIN, LOGVAR_MAX);
    let inside = |lv: f64| (LOGVAR_MIN..=LOGVAR_MAX).contains(&lv);
    let mut out = VampOutput {
        z: vec![0.0; rows * z],
        kl: vec![0.0; rows],
        dmulv: vec![0.0; rows * 2 * z],
        dpmulv: vec![0.0; k * 2 * z],
    };
    for b in 0..rows {
        for j in 0..z {
            let sigma = (0.5 * clamp(mulv[b * 2 * z + z + j])).exp();
            out.z[b * z + j] = mulv[b * 2 * z + j] + sigma * eps[b * z + j];
        }
    }
    for b in 0..valid.min(rows) {
        let zb = &out.z[b * z..(b + 1) * z];
        let log_n: Vec<f64> = (0..k)
            .map(|c| {
                (0..z)
                    .map(|j| {
                        let lv = clamp(pmulv[c * 2 * z + z + j]);
                        let d = zb[j] - pmulv[c * 2 * z + j];
                        -0.5 * lv - 0.5 * d * d * (-lv).exp()
                    })
                    .sum()
            })
            .collect();
        let m = log_n.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = log_n.iter().map(|l| (l - m).exp()).sum();
        let w: Vec<f64> = log_n.iter().map(|l| (l - m).exp() / sum).collect();
        let log_p = m + sum.ln() - (k as f64).ln();
        let mut log_q = 0.0;
        let rs = row_scale.get(b).copied().unwrap_or(1.0);
        for j in 0..z {
            let lv_raw = mulv[b * 2 * z + z + j];
            let e = eps[b * z + j];
            log_q += -0.5 * clamp(lv_raw) - 0.5 * e * e;
            let mut g = 0.0;
            for c in 0..k {
                let lvk = pmulv[c * 2 * z + z + j];
                let d = zb[j] - pmulv[c * 2 * z + j];
                let inv = (-clamp(lvk)).exp();
                g += w[c] * d * inv;
                out.dpmulv[c * 2 * z + j] -= rs * scale * w[c] * d * inv;
                if inside(lvk) {
                    out.dpmulv[c * 2 * z + z + j] += rs * scale * w[c] * (0.5 - 0.5 * d * d * inv);
                }
            }
            let sigma = (0.5 * clamp(lv_raw)).exp();
            // log q's pull on the code (-eps / sigma) goes along the path instead of
            // log q's own parameters (0 and -0.5, the total of both).
            let (path, own) = match pathwise {
                true => (g - e / sigma, 0.0),
                false => (g, -0.5),
            };
            out.dmulv[b * 2 * z + j] = scale * path;
            if inside(lv_raw) {
                out.dmulv[b * 2 * z + z + j] = scale * (own + 0.5 * path * sigma * e);
            }
        }
        out.kl[b] = log_q - log_p;
    }
    out
}
