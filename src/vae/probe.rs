//! A softmax-regression classifier trained on the GPU with the GEMM, softmax cross-entropy
//! and Adam kernels: the "M1" probe of how useful latent codes are as features.

use crate::gpu::{round_up4, Gpu, GpuError, Matrix};
use crate::ops::adam::{adam, AdamConfig};
use crate::ops::elementwise::bias_grad;
use crate::ops::gemm::{gemm, gemm_backward, GemmSpec};
use crate::ops::softmax::softmax_xent;

/// Labelled feature rows ([count, features], row-major).
pub struct Features<'a> {
    pub x: &'a [f32],
    pub labels: &'a [u8],
    pub features: usize,
}

/// Trains on `train` (see `Classifier::fit`) and returns the accuracy on `test`.
pub fn train_and_test(
    gpu: &Gpu,
    train: &Features<'_>,
    test: &Features<'_>,
    classes: usize,
    steps: usize,
    config: AdamConfig,
) -> Result<f64, GpuError> {
    let predicted = Classifier::fit(gpu, train, classes, steps, config)?.predict(gpu, test.x)?;
    let correct = predicted
        .iter()
        .zip(test.labels)
        .filter(|(&p, &l)| p == usize::from(l))
        .count();
    Ok(correct as f64 / test.labels.len().max(1) as f64)
}

/// A trained softmax regression: logits = x W^T + b.
pub struct Classifier {
    w: Matrix,
    b: Matrix,
    features: usize,
    classes: usize,
}

/// Rows per prediction launch (bounds the size of its buffers).
const PREDICT_ROWS: usize = 8192;

impl Classifier {
    /// Trains W and b on `train` with full-batch Adam for `steps` steps (one submit each,
    /// nothing read back).
    pub fn fit(
        gpu: &Gpu,
        train: &Features<'_>,
        classes: usize,
        steps: usize,
        config: AdamConfig,
    ) -> Result<Classifier, GpuError> {
        let f = train.features;
        let n = train.labels.len();
        // W [classes, f] then b [classes], each 256-byte aligned, in one flat buffer per role.
        let w_len = (classes * round_up4(f)).div_ceil(64) * 64;
        let len = w_len + classes.div_ceil(64) * 64;
        let flat = |label: &str| Matrix::zeros(gpu, 1, len, label);
        let (values, grads, m, v) = (
            flat("probe params")?,
            flat("probe grads")?,
            flat("probe m")?,
            flat("probe v")?,
        );
        let view = |buf: &Matrix, offset: usize, rows: usize, cols: usize| Matrix {
            buffer: buf.buffer.clone(),
            offset: (offset * 4) as u64,
            rows,
            cols,
            ld: round_up4(cols),
        };
        let (w, b) = (
            view(&values, 0, classes, f),
            view(&values, w_len, 1, classes),
        );
        let (dw, db) = (view(&grads, 0, classes, f), view(&grads, w_len, 1, classes));
        let x = Matrix::from_slice(gpu, n, f, train.x, "probe x")?;
        let labels: Vec<u32> = train.labels.iter().map(|&l| u32::from(l)).collect();
        let y = Matrix::from_slice(gpu, 1, n, bytemuck::cast_slice(&labels), "probe labels")?;
        let logits = Matrix::zeros(gpu, n, classes, "probe logits")?;
        let dlogits = Matrix::zeros(gpu, n, classes, "probe dlogits")?;
        let loss = Matrix::zeros(gpu, 1, n, "probe loss")?;
        let linear = GemmSpec {
            trans_b: true,
            ..Default::default()
        };
        let mut step = vec![
            gemm(gpu, &x, &w, &logits, Some(&b), linear)?,
            softmax_xent(gpu, &logits, &y.buffer, &dlogits, &loss, n, 1.0 / n as f32)?.dispatch,
        ];
        step.extend(gemm_backward(
            gpu,
            &x,
            &w,
            &dlogits,
            None,
            Some(&dw),
            linear,
            crate::ops::GradEpilogue::default(),
        )?);
        step.extend(bias_grad(gpu, &dlogits, &db)?);
        let opt = adam(
            gpu,
            [&values.buffer, &grads.buffer, &m.buffer, &v.buffer],
            len,
            config,
        )?;
        for t in 1..=steps as u64 {
            opt.set_step(gpu, t);
            let mut all: Vec<_> = step.iter().collect();
            all.push(&opt.dispatch);
            gpu.run(&all)?;
        }
        Ok(Classifier {
            w,
            b,
            features: f,
            classes,
        })
    }

    /// The most likely class of each row of `x` ([n, features]).
    pub fn predict(&self, gpu: &Gpu, x: &[f32]) -> Result<Vec<usize>, GpuError> {
        let (f, classes) = (self.features, self.classes);
        let linear = GemmSpec {
            trans_b: true,
            ..Default::default()
        };
        let mut out = Vec::with_capacity(x.len() / f.max(1));
        for chunk in x.chunks(PREDICT_ROWS * f) {
            let n = chunk.len() / f;
            let tx = Matrix::from_slice(gpu, n, f, chunk, "classifier x")?;
            let logits = Matrix::zeros(gpu, n, classes, "classifier logits")?;
            gpu.run(&[&gemm(gpu, &tx, &self.w, &logits, Some(&self.b), linear)?])?;
            out.extend(logits.read(gpu)?.chunks(classes).map(argmax));
        }
        Ok(out)
    }
}

/// The index of the largest value of `row` (the predicted class of its scores).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(k, _)| k)
}

/// The share of `predicted` equal to `labels`, overall and per class (NaN for a class with
/// no images).
pub fn accuracy(predicted: &[usize], labels: &[u8], classes: usize) -> (f64, Vec<f64>) {
    let mut right = vec![0usize; classes];
    let mut seen = vec![0usize; classes];
    for (&p, &l) in predicted.iter().zip(labels) {
        let l = usize::from(l);
        if l < classes {
            seen[l] += 1;
            right[l] += usize::from(p == l);
        }
    }
    let all = right.iter().sum::<usize>() as f64 / seen.iter().sum::<usize>().max(1) as f64;
    let per = right
        .iter()
        .zip(&seen)
        .map(|(&r, &s)| {
            if s == 0 {
                f64::NAN
            } else {
                r as f64 / s as f64
            }
        })
        .collect();
    (all, per)
}
