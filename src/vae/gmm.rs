//! A Gaussian mixture prior, fitted after training to the latent means of the training
//! split (pythae's GaussianMixtureSampler): samples drawn from it fall where the encoder
//! puts real images, not in the holes of N(0, I) between them. Diagonal covariances, fitted
//! by EM on the GPU: the E-step is one GEMM of the codes' [x^2 | x] with the components'
//! natural parameters (plus each component's constant as the GEMM's bias) and a row
//! softmax; the M-step's sufficient statistics are one GEMM (responsibilities^T [x^2 | x])
//! and the responsibilities' column sums. Only K x (2D + 1) numbers come back per
//! iteration. `cpu::gmm` is the twin of one iteration.

use serde::{Deserialize, Serialize};

use super::{ModelConfig, Params};
use crate::data::Images;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};
use crate::ops::elementwise::bias_grad;
use crate::ops::gemm::{gemm, GemmSpec};
use crate::ops::softmax::softmax_rows;
use crate::rng::Rng;

/// The smallest variance a component keeps: a component on one repeated code would
/// otherwise collapse to a point, and the E-step's f32 GEMM sums terms of x^2 / v, whose
/// rounding grows as v shrinks (latent codes are of the prior's unit scale).
pub const MIN_VARIANCE: f64 = 1e-3;
/// The largest mean a usable mixture holds (as a codes file's values, see `io::codes`).
pub const MAX_MEAN: f64 = 1e4;

/// EM stops when the mean log-likelihood per code gains less than this, or after
/// `MAX_ITERATIONS`.
const TOLERANCE: f64 = 1e-5;
pub const MAX_ITERATIONS: usize = 300;

/// A mixture of K diagonal Gaussians over D latent dimensions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gmm {
    pub weights: Vec<f64>,
    /// [K][D]
    pub means: Vec<Vec<f64>>,
    /// [K][D]
    pub variances: Vec<Vec<f64>>,
    /// Mean log-density of the codes it was fitted to (nats per code).
    pub log_likelihood: f64,
    /// EM iterations run.
    pub iterations: usize,
}

impl Gmm {
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// Whether this is a usable mixture of `k` components over `d` dimensions: lists of
    /// matching lengths, weights that are probabilities summing to 1, finite means and
    /// variances of at least `MIN_VARIANCE` (a file read back may have been edited).
    pub fn check(&self, d: usize, k: usize) -> Result<(), String> {
        let (w, m, v) = (&self.weights, &self.means, &self.variances);
        if w.len() != k || m.len() != k || v.len() != k {
            return Err(format!(
                "{} weights, {} means and {} variances where {k} components were asked for",
                w.len(),
                m.len(),
                v.len()
            ));
        }
        if let Some(c) = (0..k).find(|&c| m[c].len() != d || v[c].len() != d) {
            return Err(format!(
                "component {c} is not over the model's {d} latent dimensions"
            ));
        }
        if w.iter().any(|&p| !(0.0..=1.0).contains(&p))
            || (w.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return Err("its weights are not probabilities summing to 1".into());
        }
        // Codes of a VAE whose prior is N(0, I) lie far inside these bounds; beyond them
        // the decoder's f32 arithmetic overflows.
        if m.iter().flatten().any(|x| x.is_nan() || x.abs() > MAX_MEAN)
            || v.iter()
                .flatten()
                .any(|x| !(MIN_VARIANCE..=MAX_MEAN * MAX_MEAN).contains(x))
        {
            return Err(format!(
                "a mean beyond +-{MAX_MEAN:e} or a variance outside {MIN_VARIANCE} to {:e}",
                MAX_MEAN * MAX_MEAN
            ));
        }
        Ok(())
    }

    /// Seeded start: K distinct codes as means, the data's variance, equal weights.
    pub fn init(codes: &[f32], d: usize, k: usize, seed: u64) -> Gmm {
        let n = codes.len() / d;
        let mut rng = Rng::new(seed);
        let order = rng.permutation(n);
        let code = |i: usize| -> Vec<f64> {
            codes[i * d..(i + 1) * d]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        };
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| f64::from(codes[i * d + j])).sum::<f64>() / n as f64)
            .collect();
        let var: Vec<f64> = (0..d)
            .map(|j| {
                let s: f64 = (0..n)
                    .map(|i| (f64::from(codes[i * d + j]) - mean[j]).powi(2))
                    .sum();
                (s / n as f64).max(MIN_VARIANCE)
            })
            .collect();
        Gmm {
            weights: vec![1.0 / k as f64; k],
            means: (0..k).map(|c| code(order[c % n] as usize)).collect(),
            variances: vec![var; k],
            log_likelihood: f64::NEG_INFINITY,
            iterations: 0,
        }
    }

    /// The E-step's GEMM operands: W [K, 2D] = [-1/(2 v) | mu / v] and each component's
    /// constant log pi - (1/2) sum(log(2 pi v) + mu^2 / v), so that [x^2 | x] W^T + c is
    /// log pi_k + log N(x | k).
    pub fn natural(&self) -> (Vec<f32>, Vec<f32>) {
        let d = self.dim();
        let mut w = Vec::with_capacity(self.components() * 2 * d);
        let mut c = Vec::with_capacity(self.components());
        for k in 0..self.components() {
            let (mu, v) = (&self.means[k], &self.variances[k]);
            w.extend(v.iter().map(|&v| (-0.5 / v) as f32));
            w.extend(mu.iter().zip(v).map(|(&m, &v)| (m / v) as f32));
            let konst: f64 = mu
                .iter()
                .zip(v)
                .map(|(&m, &v)| (2.0 * std::f64::consts::PI * v).ln() + m * m / v)
                .sum();
            c.push((self.weights[k].ln() - 0.5 * konst) as f32);
        }
        (w, c)
    }

    /// The M-step from the sufficient statistics of `n` codes: each component's summed
    /// responsibility `nk` and its responsibility-weighted sums `s` [K, 2D] of x^2 and x. A
    /// component left with no codes restarts on the code `restart` gives.
    pub fn from_stats(
        nk: &[f64],
        s: &[f64],
        n: usize,
        log_likelihood: f64,
        restart: &mut dyn FnMut() -> Vec<f64>,
    ) -> Gmm {
        let k = nk.len();
        let d = s.len() / (2 * k);
        let mut g = Gmm {
            weights: Vec::with_capacity(k),
            means: Vec::with_capacity(k),
            variances: Vec::with_capacity(k),
            log_likelihood,
            iterations: 0,
        };
        for c in 0..k {
            let row = &s[c * 2 * d..(c + 1) * 2 * d];
            if nk[c] < 1e-8 * n as f64 {
                g.weights.push(1e-8);
                g.means.push(restart());
                g.variances.push(vec![1.0; d]);
                continue;
            }
            let mu: Vec<f64> = row[d..].iter().map(|&v| v / nk[c]).collect();
            let var: Vec<f64> = row[..d]
                .iter()
                .zip(&mu)
                .map(|(&sq, &m)| (sq / nk[c] - m * m).max(MIN_VARIANCE))
                .collect();
            g.weights.push(nk[c] / n as f64);
            g.means.push(mu);
            g.variances.push(var);
        }
        let total: f64 = g.weights.iter().sum();
        g.weights.iter_mut().for_each(|w| *w /= total);
        g
    }

    /// `n` codes drawn from the mixture with its spread scaled by `temperature`, seeded.
    pub fn sample(&self, n: usize, seed: u64, temperature: f32) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let d = self.dim();
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let k = rng.pick(self.weights.iter().copied());
            for j in 0..d {
                let e = rng.normal();
                let z = self.means[k][j] + f64::from(temperature) * self.variances[k][j].sqrt() * e;
                out.push(z as f32);
            }
        }
        out
    }
}

/// A fitted prior: one mixture for every code, or a conditional model's, one per class
/// (None for a class without training images), each fitted to the codes of its class's
/// images. The code carries some of the class too, so a code from another class's region
/// decoded under a label drifts toward that other class: per class, the codes fall where
/// the label's own images put them. In a file, one mixture is an object and per-class ones
/// a list (`null` for a class without images).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Fitted {
    Shared(Gmm),
    PerClass(Vec<Option<Gmm>>),
}

impl Fitted {
    /// Whether this is a usable prior of K components for codes of `d` dimensions of a
    /// model with `classes` (a conditional model's, which has one mixture per class).
    pub fn check(&self, d: usize, k: usize, classes: Option<usize>) -> Result<(), String> {
        match (self, classes) {
            (Fitted::Shared(g), None) => g.check(d, k),
            (Fitted::PerClass(gs), Some(n)) if gs.len() == n => {
                if gs.iter().all(Option::is_none) {
                    return Err("no class has a mixture".into());
                }
                gs.iter().flatten().try_for_each(|g| g.check(d, k))
            }
            (Fitted::Shared(_), Some(n)) => Err(format!(
                "one mixture for all classes, where this conditional model has one per class ({n})"
            )),
            (Fitted::PerClass(gs), _) => Err(format!(
                "{} mixtures, one per class, where the model has {}",
                gs.len(),
                classes.map_or("no classes".into(), |n| format!("{n} classes"))
            )),
        }
    }
}

/// `classes.len()` codes, the i-th drawn from the mixture of class `classes[i]` with its
/// spread scaled by `temperature`, seeded (each class from a stream of its own, so a
/// class's codes do not change with the others asked for). An error names a class
/// without a mixture.
pub fn sample_per_class(
    mixtures: &[Option<Gmm>],
    classes: &[u8],
    seed: u64,
    temperature: f32,
) -> Result<Vec<f32>, String> {
    let d = mixtures.iter().flatten().map(Gmm::dim).next().unwrap_or(0);
    let mut out = vec![0.0; classes.len() * d];
    for (l, g) in mixtures.iter().enumerate() {
        let rows: Vec<usize> = (0..classes.len())
            .filter(|&i| usize::from(classes[i]) == l)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let g = g.as_ref().ok_or_else(|| {
            format!(
                "class {l} has no mixture: the training images it was fitted to (a run's, after its --classes and --limit) have none of its images"
            )
        })?;
        let stream = seed ^ (l as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let codes = g.sample(rows.len(), stream, temperature);
        for (&i, code) in rows.iter().zip(codes.chunks(d)) {
            out[i * d..(i + 1) * d].copy_from_slice(code);
        }
    }
    match classes.iter().find(|&&l| usize::from(l) >= mixtures.len()) {
        Some(l) => Err(format!(
            "class {l} has no mixture: the mixtures cover {} classes",
            mixtures.len()
        )),
        None => Ok(out),
    }
}

/// A conditional model's prior (see `Fitted`): K components fitted (seeded) to the latent
/// means of each class's images among `images` (None for a class without any); `progress`
/// hears the class, and each iteration's mean log-likelihood.
pub fn fit_per_class(
    gpu: &Gpu,
    (params, c): (&Params, &ModelConfig),
    images: &Images,
    (k, seed): (usize, u64),
    progress: &mut dyn FnMut(u8, usize, f64),
) -> Result<Vec<Option<Gmm>>, GpuError> {
    let counts = images.class_counts(c.classes.unwrap_or(0)).ok_or_else(|| {
        GpuError::Config("per-class mixtures fit each class's codes: the images need labels".into())
    })?;
    let mut each = Vec::with_capacity(counts.len());
    for (l, n) in (0..=u8::MAX).zip(counts) {
        let Some(of) = (n > 0).then(|| images.with_classes(&[l])).flatten() else {
            each.push(None);
            continue;
        };
        let codes = super::codec::encode(gpu, params, c, &of, 1.0)?.codes.mu;
        let g = fit(gpu, &codes, c.latent, k, seed, &mut |it, ll| {
            progress(l, it, ll)
        })
        .map_err(|e| GpuError::Config(format!("class {l}: {e}")))?;
        each.push(Some(g));
    }
    Ok(each)
}

/// A mixture as a run keeps it (RUN/gmm-K.json): fitted to the codes of the weights whose
/// fingerprint it holds (`checkpoint::fingerprint`), with its seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MixtureFile {
    pub fingerprint: String,
    pub seed: u64,
    /// Codes fitted, and where they came from (as given, and the fingerprint of the
    /// training split's values and shape, which decides reuse).
    pub codes: usize,
    pub data: String,
    #[serde(default)]
    pub data_fingerprint: String,
    pub mixture: Fitted,
}

/// The file name of a K-component mixture in its run.
pub fn file_name(k: usize) -> String {
    format!("gmm-{k}.json")
}

/// One EM iteration on the GPU over fixed codes.
pub struct EmStep {
    n: usize,
    d: usize,
    k: usize,
    w: Matrix,
    c: Matrix,
    stats: Matrix,
    nk: Matrix,
    lse: Matrix,
    launches: Vec<Dispatch>,
}

impl EmStep {
    /// For `codes` [n, d] and `k` components.
    pub fn new(gpu: &Gpu, codes: &[f32], d: usize, k: usize) -> Result<EmStep, GpuError> {
        let n = codes.len() / d;
        // [x^2 | x], one row per code.
        let xt: Vec<f32> = codes
            .chunks(d)
            .flat_map(|x| {
                x.iter()
                    .map(|v| v * v)
                    .chain(x.iter().copied())
                    .collect::<Vec<_>>()
            })
            .collect();
        let xt = Matrix::from_slice(gpu, n, 2 * d, &xt, "mixture codes")?;
        let w = Matrix::zeros(gpu, k, 2 * d, "mixture natural parameters")?;
        let c = Matrix::zeros(gpu, 1, k, "mixture constants")?;
        let logits = Matrix::zeros(gpu, n, k, "mixture log-densities")?;
        let probs = Matrix::zeros(gpu, n, k, "responsibilities")?;
        let lse = Matrix::zeros(gpu, 1, n, "log-likelihoods")?;
        let stats = Matrix::zeros(gpu, k, 2 * d, "mixture statistics")?;
        let nk = Matrix::zeros(gpu, 1, k, "mixture counts")?;
        let mut launches = vec![
            gemm(
                gpu,
                &xt,
                &w,
                &logits,
                Some(&c),
                GemmSpec {
                    trans_b: true,
                    ..Default::default()
                },
            )?,
            softmax_rows(gpu, &logits, &probs, &lse)?,
            gemm(
                gpu,
                &probs,
                &xt,
                &stats,
                None,
                GemmSpec {
                    trans_a: true,
                    ..Default::default()
                },
            )?,
        ];
        launches.extend(bias_grad(gpu, &probs, &nk)?);
        Ok(EmStep {
            n,
            d,
            k,
            w,
            c,
            stats,
            nk,
            lse,
            launches,
        })
    }

    /// The E- and M-steps from `g`: (the updated mixture, the mean log-likelihood of the
    /// codes under `g`).
    pub fn run(&self, gpu: &Gpu, g: &Gmm, rng: &mut Rng, codes: &[f32]) -> Result<Gmm, GpuError> {
        let (w, c) = g.natural();
        self.w.write(gpu, &w)?;
        self.c.write(gpu, &c)?;
        gpu.run(&self.launches.iter().collect::<Vec<_>>())?;
        let stats: Vec<f64> = self
            .stats
            .read(gpu)?
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let nk: Vec<f64> = self.nk.read(gpu)?.iter().map(|&v| f64::from(v)).collect();
        let ll = self
            .lse
            .read(gpu)?
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / self.n as f64;
        let (n, d) = (self.n, self.d);
        debug_assert_eq!(nk.len(), self.k);
        Ok(Gmm::from_stats(&nk, &stats, n, ll, &mut || {
            let i = rng.below(n);
            codes[i * d..(i + 1) * d]
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        }))
    }
}

/// Fits K components to `codes` [n, d] by EM from a seeded start; `progress` hears each
/// iteration's mean log-likelihood.
pub fn fit(
    gpu: &Gpu,
    codes: &[f32],
    d: usize,
    k: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Gmm, GpuError> {
    let n = codes.len() / d.max(1);
    if d == 0 || k == 0 || n < k {
        return Err(GpuError::Config(format!(
            "a mixture of {k} components needs at least {k} codes, and has {n}"
        )));
    }
    let step = EmStep::new(gpu, codes, d, k)?;
    let mut rng = Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut g = Gmm::init(codes, d, k, seed);
    let mut last = f64::NEG_INFINITY;
    for it in 1..=MAX_ITERATIONS {
        let next = step.run(gpu, &g, &mut rng, codes)?;
        // `next.log_likelihood` is that of `g`, the mixture the E-step used.
        let ll = next.log_likelihood;
        if !ll.is_finite() {
            return Err(GpuError::Config(format!(
                "the mixture's log-likelihood is {ll} at iteration {it}: the codes hold non-finite values"
            )));
        }
        progress(it, ll);
        let done = ll - last < TOLERANCE;
        if done {
            g.log_likelihood = ll;
            g.iterations = it;
            return Ok(g);
        }
        last = ll;
        g = Gmm {
            iterations: it,
            ..next
        };
    }
    g.log_likelihood = last;
    Ok(g)
}
