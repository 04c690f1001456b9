//! GEMM twin: C = act(op(A) op(B) + bias (+ C)).

use crate::ops::gemm::GemmSpec;

/// `a` is [M, K] (or [K, M] with trans_a), `b` is [K, N] (or [N, K] with trans_b);
/// `c` is [M, N] and is read when accumulating.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &[f64],
    b: &[f64],
    c: &mut [f64],
    bias: Option<&[f64]>,
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
            if let Some(bias) = bias {
                s += bias[j];
            }
            if spec.accumulate {
                s += c[i * n + j];
            }
            c[i * n + j] = super::act_forward(s, spec.act);
        }
    }
}
