//! Stacked latent layer twin (see shaders/level.wgsl): each row's Monte-Carlo KL of a lower
//! layer's code against its prior from the layer above, with the gradients of `scale`
//! times their (row-weighted) sum.

use super::sample::{LOGVAR_MAX, LOGVAR_MIN};

pub struct LevelOutput {
    /// The code z = mu + sigma eps [rows, z].
    pub z: Vec<f64>,
    /// Per row, KL (zero for rows at or past `valid`).
    pub kl: Vec<f64>,
    /// Gradients by the code (log p's pull), the posterior's mu | logvar at fixed noise and
    /// the prior's mu | logvar: [rows, z], [rows, 2z], [rows, 2z].
    pub dz: Vec<f64>,
    pub dmulv: Vec<f64>,
    pub dprior: Vec<f64>,
}

/// `mulv` and `prior` [rows, 2z], `eps` [rows, z]; z is sampled from mulv and eps here, so
/// that finite differences by mulv see the path through the code. Row b's gradients are
/// weighted by `row_scale[b]` (ones when empty).
pub fn level_kl(
    mulv: &[f64],
    eps: &[f64],
    prior: &[f64],
    (rows, valid, z): (usize, usize, usize),
    (scale, row_scale): (f64, &[f64]),
) -> LevelOutput {
    let clamp = |lv: f64| lv.clamp(LOGVAR_MIN, LOGVAR_MAX);
    let inside = |lv: f64| (LOGVAR_MIN..=LOGVAR_MAX).contains(&lv);
    let mut out = LevelOutput {
        z: vec![0.0; rows * z],
        kl: vec![0.0; rows],
        dz: vec![0.0; rows * z],
        dmulv: vec![0.0; rows * 2 * z],
        dprior: vec![0.0; rows * 2 * z],
    };
    for b in 0..rows {
        let s = scale * row_scale.get(b).copied().unwrap_or(1.0);
        for j in 0..z {
            let (lv, plv) = (mulv[b * 2 * z + z + j], prior[b * 2 * z + z + j]);
            let e = eps[b * z + j];
            let zj = mulv[b * 2 * z + j] + (0.5 * clamp(lv)).exp() * e;
            out.z[b * z + j] = zj;
            if b >= valid {
                continue;
            }
            let d = zj - prior[b * 2 * z + j];
            let inv = (-clamp(plv)).exp();
            out.kl[b] += -0.5 * clamp(lv) - 0.5 * e * e + 0.5 * clamp(plv) + 0.5 * d * d * inv;
            out.dz[b * z + j] = s * d * inv;
            if inside(lv) {
                out.dmulv[b * 2 * z + z + j] = -0.5 * s;
            }
            out.dprior[b * 2 * z + j] = -s * d * inv;
            if inside(plv) {
                out.dprior[b * 2 * z + z + j] = s * (0.5 - 0.5 * d * d * inv);
            }
        }
    }
    out
}
