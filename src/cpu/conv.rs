//! Convolution twins by direct summation (no im2col), NHWC images, PyTorch weight layouts.

use crate::ops::conv::Shape;
use crate::ops::Activation;

/// Conv2d: x [B, H, W, C], w [Cout, C, K, K] -> [B, OH, OW, Cout].
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f64],
    s: Shape,
    batch: usize,
    w: &[f64],
    bias: &[f64],
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    act: Activation,
) -> (Vec<f64>, usize, usize) {
    let oh = (s.h + 2 * pad - k) / stride + 1;
    let ow = (s.w + 2 * pad - k) / stride + 1;
    let mut y = vec![0.0; batch * oh * ow * cout];
    for b in 0..batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let mut v = bias[co];
                    for ci in 0..s.c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w
                                {
                                    let xi =
                                        ((b * s.h + iy as usize) * s.w + ix as usize) * s.c + ci;
                                    v += x[xi] * w[((co * s.c + ci) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                    y[((b * oh + oy) * ow + ox) * cout + co] = super::act_forward(v, act);
                }
            }
        }
    }
    (y, oh, ow)
}

/// ConvTranspose2d: x [B, IH, IW, Cin], w [Cin, Cout, K, K] -> [B, OH, OW, Cout] with
/// OH = (IH - 1) * stride - 2 pad + K.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    x: &[f64],
    s: Shape,
    batch: usize,
    w: &[f64],
    bias: &[f64],
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    act: Activation,
) -> (Vec<f64>, usize, usize) {
    let oh = (s.h - 1) * stride + k - 2 * pad;
    let ow = (s.w - 1) * stride + k - 2 * pad;
    let mut y = vec![0.0; batch * oh * ow * cout];
    for b in 0..batch {
        for iy in 0..s.h {
            for ix in 0..s.w {
                for ci in 0..s.c {
                    let xv = x[((b * s.h + iy) * s.w + ix) * s.c + ci];
                    for co in 0..cout {
                        for ky in 0..k {
                            for kx in 0..k {
                                let oy = (iy * stride + ky) as isize - pad as isize;
                                let ox = (ix * stride + kx) as isize - pad as isize;
                                if oy >= 0 && ox >= 0 && (oy as usize) < oh && (ox as usize) < ow {
                                    y[((b * oh + oy as usize) * ow + ox as usize) * cout + co] +=
                                        xv * w[((ci * cout + co) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (i, v) in y.iter_mut().enumerate() {
        *v = super::act_forward(*v + bias[i % cout], act);
    }
    (y, oh, ow)
}
