//! Whole-model gradient check: the composed VAE backward (loss, decoder, sampling path,
//! heads, encoder) on a tiny network against central finite differences of an f64 CPU
//! forward built from the kernel twins, with the same Philox noise. A padded batch row
//! checks that padding contributes nothing. Tolerance: 1e-3 * |fd| + 1e-3.

mod common;

use common::for_each_gpu;
use vae_gpu::cpu;
use vae_gpu::gpu::Matrix;
use vae_gpu::io::safetensors::Tensor;
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::ops::gather::GpuImages;
use vae_gpu::ops::gemm::GemmSpec;
use vae_gpu::ops::loss::{Likelihood, LossSettings};
use vae_gpu::ops::sample::Noise;
use vae_gpu::ops::Activation;
use vae_gpu::vae::checkpoint::{tensors, tensors_of};
use vae_gpu::vae::model::{StepProgram, STREAM_TRAIN};
use vae_gpu::vae::{ModelConfig, Params};

fn linear(x: &[f64], rows: usize, w: &Tensor, b: &Tensor, act: Activation) -> Vec<f64> {
    let (out, inp) = (w.shape[0], w.shape[1]);
    let wd: Vec<f64> = w.data.iter().map(|&v| f64::from(v)).collect();
    let bd: Vec<f64> = b.data.iter().map(|&v| f64::from(v)).collect();
    let mut y = vec![0.0; rows * out];
    cpu::gemm::gemm(
        x,
        &wd,
        &mut y,
        Some(&bd),
        rows,
        out,
        inp,
        &GemmSpec {
            trans_b: true,
            act,
            ..Default::default()
        },
    );
    y
}

/// Sum over valid rows of the per-sample loss, for parameters `t` (checkpoint order:
/// fc1, fc21, fc22, fc3, fc4; weight then bias).
fn cpu_total(
    t: &[Tensor],
    x: &[f64],
    rows: usize,
    c: &ModelConfig,
    s: &LossSettings,
    noise: Noise,
) -> f64 {
    let z = c.latent;
    let h = linear(x, rows, &t[0], &t[1], Activation::Relu);
    let mu = linear(&h, rows, &t[2], &t[3], Activation::Identity);
    let lv = linear(&h, rows, &t[4], &t[5], Activation::Identity);
    let mulv: Vec<f64> = (0..rows)
        .flat_map(|r| {
            mu[r * z..(r + 1) * z]
                .iter()
                .chain(&lv[r * z..(r + 1) * z])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let (zs, _) = cpu::sample::sample_forward(&mulv, rows, z, noise);
    let h3 = linear(&zs, rows, &t[6], &t[7], Activation::Relu);
    let logits = linear(&h3, rows, &t[8], &t[9], Activation::Identity);
    let out = cpu::loss::loss(&logits, x, &mulv, rows, c.input_dim(), z, s);
    (0..rows).map(|r| out.per_sample[r * 3 + 2]).sum()
}

#[test]
fn composed_vae_backward_matches_finite_differences() {
    for_each_gpu(|gpu| {
        for likelihood in [Likelihood::Bernoulli, Likelihood::Gaussian] {
            let c = ModelConfig {
                arch: "mlp".into(),
                height: 2,
                width: 3,
                channels: 1,
                hidden: vec![5],
                latent: 2,
                likelihood,
                gauss_var: 0.5,
            };
            let (rows, valid, seed) = (4, 3, 77);
            let pixels: Vec<u8> = (0..4 * 6).map(|i| (i * 37 % 256) as u8).collect();
            let images = GpuImages::upload(gpu, &pixels, 6).unwrap();
            let order: Vec<u32> = vec![2, 0, 3, 1];
            let indices =
                Matrix::from_slice(gpu, 1, 4, bytemuck::cast_slice(&order), "idx").unwrap();
            let s = LossSettings {
                likelihood,
                beta: 0.7,
                grad_scale: 1.0,
                gauss_var: 0.5,
                valid,
            };
            let params = Params::new(gpu, &c, 3).unwrap();
            // lr 0: Adam leaves the parameters alone, the gradients stay readable.
            let adam = AdamConfig {
                lr: 0.0,
                ..AdamConfig::default()
            };
            let mut program = StepProgram::new(
                gpu,
                &params,
                &c,
                rows,
                &images,
                &indices.buffer,
                4,
                &s,
                Some(adam),
                seed,
            )
            .unwrap();
            program.prepare(gpu, 0, 5, &s);
            program.submit(gpu, None).unwrap();
            let grads = tensors_of(gpu, &params, &params.grads).unwrap();
            let values = tensors(gpu, &params).unwrap();
            let x = cpu::gather(&pixels, 6, &order, 0, rows);
            let noise = Noise {
                seed,
                step: 5,
                stream: STREAM_TRAIN,
            };
            for (ti, g) in grads.iter().enumerate() {
                for i in 0..g.data.len() {
                    let h = 1e-3;
                    let mut t = values.clone();
                    let orig = t[ti].data[i];
                    let eval = |t: &[Tensor]| cpu_total(t, &x, rows, &c, &s, noise);
                    // Perturb in f64 through a widened copy of the one entry.
                    t[ti].data[i] = orig + h as f32;
                    let up = eval(&t);
                    t[ti].data[i] = orig - h as f32;
                    let down = eval(&t);
                    let step = f64::from(orig + h as f32) - f64::from(orig - h as f32);
                    let fd = (up - down) / step;
                    let got = f64::from(g.data[i]);
                    assert!(
                        (got - fd).abs() <= 1e-3 * fd.abs() + 1e-3,
                        "{likelihood:?} {}[{i}]: gpu {got} vs finite difference {fd}",
                        g.name
                    );
                }
            }
        }
    });
}
