//! Adam twin, PyTorch's update (see shaders/adam.wgsl).

use crate::ops::adam::AdamConfig;

/// One step t (1-based) over param, grad, m, v.
pub fn adam_step(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], c: &AdamConfig, t: u64) {
    let (b1, b2) = (f64::from(c.beta1), f64::from(c.beta2));
    let lr = f64::from(c.lr);
    let bc1 = 1.0 - b1.powf(t as f64);
    let bc2 = 1.0 - b2.powf(t as f64);
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] *= 1.0 - lr * f64::from(c.weight_decay);
        p[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + f64::from(c.eps));
    }
}
