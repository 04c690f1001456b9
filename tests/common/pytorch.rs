//! A model's training step against a PyTorch fixture (tests/fixtures/make_tiny_*.py): its
//! weights, a batch (with its classes for a conditional model) and the sampling noise give
//! vae-gpu's noise, mu | logvar, logits, loss and every parameter's gradient, each within
//! 1e-4 of the reference tensor's largest magnitude; the state_dict saves back unchanged.
//! The noise's integer stream is exact, but its log and cos are the driver's: Vulkan allows
//! cos an absolute error of 2^-11 (SwiftShader uses it), so the noise is held to the bound
//! of `sample_matches_cpu` and what follows it to 1e-4 plus four times the noise's error
//! (sixteen for an importance-weighted step).

use std::path::PathBuf;

use vae_gpu::data::Dtype;
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::io::safetensors;
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::ops::gather::GpuImages;
use vae_gpu::ops::loss::{Likelihood, LossSettings};
use vae_gpu::vae::checkpoint::{set_tensors, tensors, tensors_of};
use vae_gpu::vae::step::{Batches, Samples, StepProgram, StepSpec};
use vae_gpu::vae::ModelConfig;

/// A fixture file: under `$VAE_GPU_SOURCE_DIR` when set (test binaries carried to another
/// machine by `scripts/gpu-check`), else this checkout.
pub fn fixture(p: &str) -> PathBuf {
    std::env::var_os("VAE_GPU_SOURCE_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures")
        .join(p)
}

/// `got` within `rel` of `want`'s largest magnitude, element by element.
pub fn close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale + 1e-7,
            "{what}[{i}]: vae-gpu {g} vs PyTorch {w} (largest {scale}, tolerance {rel})"
        );
    }
}

/// Model `c` loaded from `fixtures/NAME/model.safetensors`, one training step (seed 11,
/// step 4, Bernoulli, beta 1) on the batch of `fixtures/NAME_expected.safetensors`,
/// checked against its reference tensors.
pub fn step_matches(gpu: &Gpu, c: &ModelConfig, name: &str) {
    step_matches_with(gpu, c, name, Samples::ONE);
}

/// The same with `samples` posterior samples per record (the importance-weighted
/// objective); the noise, mu | logvar and logits are the rows', the loss the summed bound.
pub fn step_matches_with(gpu: &Gpu, c: &ModelConfig, name: &str, samples: Samples) {
    let params = c.params(gpu, 0).unwrap();
    let model = fixture(&format!("{name}/model.safetensors"));
    let original = safetensors::load(&model).unwrap();
    set_tensors(gpu, &params, original.clone(), &model).unwrap();
    let expected = safetensors::load(&fixture(&format!("{name}_expected.safetensors"))).unwrap();
    let x = &expected["x"].data;
    let rows = expected["x"].shape[0];
    let d = c.input_dim();
    let images = GpuImages::upload(gpu, &Dtype::F32.bytes(x), d, Dtype::F32).unwrap();
    let order: Vec<u32> = (0..rows as u32).collect();
    let indices = Matrix::from_slice(gpu, 1, rows, bytemuck::cast_slice(&order), "idx").unwrap();
    let labels = expected.get("labels").map(|l| {
        let l: Vec<u32> = l.data.iter().map(|&v| v as u32).collect();
        Matrix::from_slice(gpu, 1, rows, bytemuck::cast_slice(&l), "labels").unwrap()
    });
    let s = LossSettings {
        likelihood: Likelihood::Bernoulli,
        beta: 1.0,
        grad_scale: 1.0,
        gauss_var: 0.5,
        valid: rows,
        free_bits: 0.0,
    };
    // lr 0: Adam leaves the weights alone; the gradients stay readable.
    let adam = AdamConfig {
        lr: 0.0,
        ..AdamConfig::default()
    };
    let mut program = StepProgram::new(
        gpu,
        &params,
        c,
        &Batches {
            images: &images,
            indices: &indices.buffer,
            count: rows,
            labels: labels.as_ref().map(|m| &m.buffer),
        },
        &StepSpec {
            rows,
            settings: s,
            adam: Some(adam),
            seed: 11,
            corruption: None,
            samples,
        },
    )
    .unwrap();
    program.reset_sums(gpu);
    program.prepare(gpu, 0, 4, &s);
    program.submit(gpu, None).unwrap();
    let eps = program.eps().read(gpu).unwrap();
    let want_eps = &expected["eps"].data;
    let mut eps_error = 0f32;
    for (i, (g, w)) in eps.iter().zip(want_eps).enumerate() {
        assert!(
            (g - w).abs() <= 3e-3 * (1.0 + w.abs()),
            "eps[{i}]: vae-gpu {g} vs PyTorch {w}: another noise stream"
        );
        eps_error = eps_error.max((g - w).abs() / (1.0 + w.abs()));
    }
    // An importance-weighted step's gradients pass through the softmax of the samples'
    // log-weights, which moves with the noise more steeply: on SwiftShader (noise error
    // 1.1e-4) mu | logvar's head is off by 6.5 times the noise error, against at most 3.5
    // for one sample.
    let amplified = if samples.k > 1 { 16.0 } else { 4.0 };
    let rel = 1e-4 + amplified * eps_error;
    close(
        "mulv",
        &program.mulv().read(gpu).unwrap(),
        &expected["mulv"].data,
        1e-4,
    );
    let logits = program.logits().unwrap().read(gpu).unwrap();
    close("logits", &logits, &expected["logits"].data, rel);
    let sums = program.accum.read(gpu).unwrap();
    close("loss", &sums[2..3], &expected["loss"].data, rel);
    let grads = tensors_of(gpu, &params, &params.grads).unwrap();
    assert_eq!(grads.len(), original.len(), "one gradient per parameter");
    for g in &grads {
        let want = &expected[&format!("grad.{}", g.name)];
        assert_eq!(g.shape, want.shape, "{} shape", g.name);
        close(&format!("grad.{}", g.name), &g.data, &want.data, rel);
    }
    // The state_dict saves back as it came.
    for t in tensors(gpu, &params).unwrap() {
        assert_eq!(original[&t.name], t, "tensor {}", t.name);
    }
}
