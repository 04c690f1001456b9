//! How close generated images are to real ones, in a classifier's features (see
//! `featurenet`): the Fréchet distance between the two sets' Gaussians (Heusel et al. 2017,
//! FID's formula) and precision and recall of their k-nearest-neighbour manifolds
//! (Kynkäänniemi et al. 2019).

use crate::gpu::{Gpu, GpuError, Matrix};
use crate::ops::gemm::{gemm, GemmSpec};

/// The mean and covariance of a set of feature rows (f64; the covariance divides by n - 1,
/// as NumPy's `cov` does).
#[derive(Clone, Debug)]
pub struct Moments {
    pub mean: Vec<f64>,
    /// [d, d], row-major.
    pub cov: Vec<f64>,
}

impl Moments {
    pub fn of(x: &[f32], d: usize) -> Moments {
        let n = x.len() / d;
        let mut mean = vec![0.0; d];
        for row in x.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for row in x.chunks(d) {
            for ((c, &v), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = f64::from(v) - m;
            }
            for i in 0..d {
                let ci = centred[i];
                for j in i..d {
                    cov[i * d + j] += ci * centred[j];
                }
            }
        }
        let denom = n.saturating_sub(1).max(1) as f64;
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / denom;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        Moments { mean, cov }
    }
}

/// |m1 - m2|² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½), with tr((S1 S2)^½) the sum of the square
/// roots of the eigenvalues of S1^½ S2 S1^½ (symmetric, so no complex parts to discard).
pub fn frechet(a: &Moments, b: &Moments) -> f64 {
    let d = a.mean.len();
    let mean: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let root_a = sqrt_psd(&a.cov, d);
    let inner = matmul(&matmul(&root_a, &b.cov, d), &root_a, d);
    let (values, _) = eigen_symmetric(&inner, d);
    let cross: f64 = values.iter().map(|&v| v.max(0.0).sqrt()).sum();
    (mean + trace(&a.cov) + trace(&b.cov) - 2.0 * cross).max(0.0)
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// The square root of a symmetric positive semi-definite matrix (negative eigenvalues,
/// rounding, taken as 0).
fn sqrt_psd(m: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = eigen_symmetric(m, d);
    let mut out = vec![0.0; d * d];
    for (k, &v) in values.iter().enumerate() {
        let s = v.max(0.0).sqrt();
        for i in 0..d {
            let vik = vectors[i * d + k] * s;
            for j in 0..d {
                out[i * d + j] += vik * vectors[j * d + k];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the second, [d, d]) of a symmetric matrix by
/// cyclic Jacobi rotations. Written here because the features are at most a few hundred
/// wide, where Jacobi is exact to rounding and fast, and no linear-algebra crate is needed
/// for one decomposition.
pub fn eigen_symmetric(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0.0; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// Neighbours of Kynkäänniemi et al.'s manifolds.
pub const NEIGHBOURS: usize = 3;

/// Precision (the share of `fake` rows inside the real manifold: the union of balls around
/// each real row reaching its k-th nearest real neighbour) and recall (the share of `real`
/// rows inside the fake manifold), rows of `d` features. Squared distances come from GEMMs
/// on the GPU in blocks of rows; the neighbour searches over each block's row run here.
pub fn precision_recall(
    gpu: &Gpu,
    real: &[f32],
    fake: &[f32],
    d: usize,
    k: usize,
) -> Result<(f64, f64), GpuError> {
    let real_radii = kth_neighbour(gpu, real, d, k)?;
    let fake_radii = kth_neighbour(gpu, fake, d, k)?;
    let precision = covered(gpu, fake, real, &real_radii, d)?;
    let recall = covered(gpu, real, fake, &fake_radii, d)?;
    Ok((precision, recall))
}

/// Squared distances from each row of `a` to every row of `b`, a block of `a`'s rows at a
/// time: `each(first row, block)` with the block [rows, b's count].
fn distances(
    gpu: &Gpu,
    (a, b): (&[f32], &[f32]),
    d: usize,
    each: &mut dyn FnMut(usize, &[f32]),
) -> Result<(), GpuError> {
    let (na, nb) = (a.len() / d, b.len() / d);
    let norms =
        |x: &[f32]| -> Vec<f32> { x.chunks(d).map(|r| r.iter().map(|v| v * v).sum()).collect() };
    let (an, bn) = (norms(a), norms(b));
    let gb = Matrix::from_slice(gpu, nb, d, b, "distance b")?;
    let block = ((gpu.binding_limit() / 4) as usize / crate::gpu::round_up4(nb))
        .clamp(1, 4096)
        .min(na);
    let out = Matrix::zeros(gpu, block, nb, "distance block")?;
    let spec = GemmSpec {
        trans_b: true,
        ..Default::default()
    };
    for first in (0..na).step_by(block.max(1)) {
        let rows = block.min(na - first);
        let ga = Matrix::from_slice(
            gpu,
            rows,
            d,
            &a[first * d..(first + rows) * d],
            "distance a",
        )?;
        let o = Matrix {
            rows,
            ..out.clone()
        };
        gpu.run(&[&gemm(gpu, &ga, &gb, &o, None, spec)?])?;
        let mut dots = o.read(gpu)?;
        for (r, row) in dots.chunks_mut(nb).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (an[first + r] + bn[j] - 2.0 * *v).max(0.0);
            }
        }
        each(first, &dots);
    }
    Ok(())
}

/// Each row's squared distance to its k-th nearest other row.
fn kth_neighbour(gpu: &Gpu, x: &[f32], d: usize, k: usize) -> Result<Vec<f32>, GpuError> {
    let n = x.len() / d;
    let mut radii = vec![0f32; n];
    distances(gpu, (x, x), d, &mut |first, block| {
        for (r, row) in block.chunks(n).enumerate() {
            let mut row = row.to_vec();
            // The row itself is at distance 0 (up to rounding): set it past every other.
            row[first + r] = f32::INFINITY;
            let kk = k.min(n.saturating_sub(1)).max(1) - 1;
            radii[first + r] = *row.select_nth_unstable_by(kk, f32::total_cmp).1;
        }
    })?;
    Ok(radii)
}

/// The share of `points` rows within the ball of some `centres` row (its squared radius
/// in `radii`).
fn covered(
    gpu: &Gpu,
    points: &[f32],
    centres: &[f32],
    radii: &[f32],
    d: usize,
) -> Result<f64, GpuError> {
    let n = points.len() / d;
    let mut inside = 0usize;
    distances(gpu, (points, centres), d, &mut |_, block| {
        inside += block
            .chunks(radii.len())
            .filter(|row| row.iter().zip(radii).any(|(dist, r)| dist <= r))
            .count();
    })?;
    Ok(inside as f64 / n.max(1) as f64)
}
