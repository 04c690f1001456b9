//! GEMM twin: C = act(op(A) op(B) + bias (+ C)), or op(A) op(B) * act'(Y) (`act_grad`).

use crate::ops::gemm::GemmSpec;

/// `a` is [M, K] (or [K, M] with trans_a), `b` is [K, N] (or [N, K] with trans_b);
/// `c` is [M, N] and is read when accumulating. `side` is the bias [N], or with
/// `spec.act_grad` the activation output Y [M, N].
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &[f64],
    b: &[f64],
    c: &mut [f64],
    side: Option<&[f64]>,
    m: usize,
    n: usize,
    k: usize,
    spec: &GemmSpec,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                let av = if spec.trans_a {
                    a[p * m + i]
                } else {
                    a[i * k + p]
                };
                let bv = if spec.trans_b {
                    b[j * k + p]
                } else {
                    b[p * n + j]
                };
                s += av * bv;
            }
            match side {
                Some(bias) if !spec.act_grad => s += bias[j],
                _ => {}
            }
            if spec.accumulate {
                s += c[i * n + j];
            }
            c[i * n + j] = match side {
                Some(y) if spec.act_grad => s * super::act_grad_from_output(y[i * n + j], spec.act),
                _ => super::act_forward(s, spec.act),
            };
        }
    }
}
