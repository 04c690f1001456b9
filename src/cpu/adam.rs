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

/// Twin of `ops::clip::clip_grad_norm`: scales `g` to a 2-norm of at most `max_norm`
/// (PyTorch's, with its 1e-6); returns the norm before.
pub fn clip_grad_norm(g: &mut [f64], max_norm: f64) -> f64 {
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let factor = (max_norm / (norm + 1e-6)).min(1.0);
    g.iter_mut().for_each(|v| *v *= factor);
    norm
}
