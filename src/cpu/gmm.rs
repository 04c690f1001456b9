//! Twin of `vae::gmm::EmStep`'s GPU work: one E-step's sufficient statistics in f64.

/// For codes `x` [n, d] under the mixture of diagonal Gaussians (`weights`, `means` [K][D],
/// `variances` [K][D]): each component's summed responsibility, the
/// responsibility-weighted sums [K, 2D] of x^2 and x, and the mean log-likelihood.
pub fn statistics(
    x: &[f64],
    d: usize,
    (weights, means, variances): (&[f64], &[Vec<f64>], &[Vec<f64>]),
) -> (Vec<f64>, Vec<f64>, f64) {
    let k = weights.len();
    let n = x.len() / d;
    let (mut nk, mut s, mut ll) = (vec![0.0; k], vec![0.0; k * 2 * d], 0.0);
    for row in x.chunks(d) {
        let log: Vec<f64> = (0..k)
            .map(|c| {
                weights[c].ln()
                    + row
                        .iter()
                        .zip(&means[c])
                        .zip(&variances[c])
                        .map(|((&v, &m), &var)| {
                            -0.5 * ((2.0 * std::f64::consts::PI * var).ln() + (v - m).powi(2) / var)
                        })
                        .sum::<f64>()
            })
            .collect();
        let m = log.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + log.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        ll += lse;
        for c in 0..k {
            let r = (log[c] - lse).exp();
            nk[c] += r;
            for (j, &v) in row.iter().enumerate() {
                s[c * 2 * d + j] += r * v * v;
                s[c * 2 * d + d + j] += r * v;
            }
        }
    }
    (nk, s, ll / n as f64)
}
