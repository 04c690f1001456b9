//! Plain-Rust twins of every GPU kernel, in f64: the oracle for the parity tests and the
//! finite-difference gradient checks. Matrices here are dense row-major (no padding).

pub mod adam;
pub mod conv;
pub mod gemm;
pub mod gmm;
pub mod gru;
pub mod level;
pub mod loss;
pub mod norm;
pub mod sample;
pub mod sequence;
pub mod tensor;
pub mod vamp;

use crate::ops::Activation;

pub fn act_forward(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                x * f64::from(s)
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// act'(x) from the activation's input.
pub fn act_grad_from_input(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
        act => act_grad_from_output(act_forward(x, act), act),
    }
}

/// act'(x) expressed through y = act(x), as the GPU backward computes it.
pub fn act_grad_from_output(y: f64, act: Activation) -> f64 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => f64::from(u8::from(y > 0.0)),
        Activation::LeakyRelu(s) => {
            if y > 0.0 {
                1.0
            } else {
                f64::from(s)
            }
        }
        Activation::Sigmoid => y * (1.0 - y),
        Activation::Tanh => 1.0 - y * y,
        Activation::Silu => unreachable!("SiLU's derivative needs its input"),
    }
}

/// Column sums of a [rows, cols] matrix: the bias gradient.
pub fn bias_grad(dy: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols)
        .map(|n| (0..rows).map(|r| dy[r * cols + n]).sum())
        .collect()
}

/// Twin of `ops::gather::one_hot`: [rows, classes].
pub fn one_hot(
    labels: &[u32],
    classes: usize,
    indices: &[u32],
    offset: usize,
    rows: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; rows * classes];
    for r in 0..rows {
        let label = labels[indices[(offset + r).min(indices.len() - 1)] as usize] as usize;
        if label < classes {
            y[r * classes + label] = 1.0;
        }
    }
    y
}

/// x = pixels / 255 for the images `indices[offset..offset + rows]` (the last index repeats
/// past the end), as the gather kernel builds a batch.
pub fn gather(
    pixels: &[u8],
    d: usize,
    dtype: crate::data::Dtype,
    indices: &[u32],
    offset: usize,
    rows: usize,
) -> Vec<f64> {
    let b = d * dtype.size();
    let mut x = Vec::with_capacity(rows * d);
    for r in 0..rows {
        let image = indices[(offset + r).min(indices.len() - 1)] as usize;
        x.extend(
            dtype
                .values(&pixels[image * b..(image + 1) * b])
                .into_iter()
                .map(f64::from),
        );
    }
    x
}
