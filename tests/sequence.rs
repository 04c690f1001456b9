//! The sequence VAE (--arch gru) against a PyTorch fixture of MOSES's model
//! (tests/fixtures/make_tiny_gru.py): one training step's noise, mu | logvar, per-sequence
//! cross-entropy and KL, objective and every parameter's gradient, within 1e-4 of each
//! reference tensor's largest magnitude (plus four times the noise's error, as in
//! common::pytorch); the state_dict saves back unchanged.

mod common;

use common::for_each_gpu;
use common::pytorch::{close, fixture};
use vae_gpu::data::sequence::{Sequences, Tokens, Vocab};
use vae_gpu::io::safetensors;
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::vae::gru::step::{GruStep, Training};
use vae_gpu::vae::gru::{GruParams, GruSpec};

#[test]
fn step_matches_pytorch() {
    for_each_gpu(|gpu| {
        let spec = GruSpec {
            vocab: 10,
            embed: 4,
            enc_hidden: 6,
            latent: 3,
            dec_hidden: 5,
            dec_layers: 2,
        };
        let params = GruParams::new(gpu, spec, 0).unwrap();
        let original = safetensors::load(&fixture("tiny_gru/model.safetensors")).unwrap();
        params
            .set_tensors(gpu, &params.values, original.clone())
            .unwrap();
        let expected = safetensors::load(&fixture("tiny_gru_expected.safetensors")).unwrap();
        let width = expected["ids"].shape[1];
        let vocab = Vocab {
            kind: Tokens::Chars,
            tokens: "()1CNOc".chars().map(String::from).collect(),
        };
        let data = Sequences {
            ids: expected["ids"].data.iter().map(|&v| v as u32).collect(),
            lengths: expected["lengths"].data.iter().map(|&v| v as u32).collect(),
            width,
            count: 3,
            text: vec![String::new(); 3],
        };
        // lr 0 and no clipping: the weights stay, the gradients stay readable.
        let training = Training {
            adam: AdamConfig {
                lr: 0.0,
                ..AdamConfig::default()
            },
            clip: 1e9,
        };
        let mut step = GruStep::new(gpu, &params, 3, width, Some(training), 11, 0).unwrap();
        let tokens = step
            .set_batch(gpu, &vocab, &data, &[0, 1, 2], 4, 0.5)
            .unwrap();
        gpu.run(&step.launches()).unwrap();
        let eps = step.eps.read(gpu).unwrap();
        let want_eps = &expected["eps"].data;
        let mut eps_error = 0f32;
        for (i, (g, w)) in eps.iter().zip(want_eps).enumerate() {
            assert!(
                (g - w).abs() <= 3e-3 * (1.0 + w.abs()),
                "eps[{i}]: {g} vs {w}: another noise stream"
            );
            eps_error = eps_error.max((g - w).abs() / (1.0 + w.abs()));
        }
        let rel = 1e-4 + 4.0 * eps_error;
        let mulv = step.mulv.read(gpu).unwrap();
        close("mulv", &mulv[..18], &expected["mulv"].data, 1e-4);
        let per = step.per_sample.read(gpu).unwrap();
        let (recon, kl): (Vec<f32>, Vec<f32>) =
            (0..3).map(|r| (per[r * 3], per[r * 3 + 1])).unzip();
        close("recon", &recon, &expected["recon"].data, rel);
        close("kl", &kl, &expected["kl"].data, 1e-4);
        let objective =
            recon.iter().sum::<f32>() / tokens as f32 + 0.5 * kl.iter().sum::<f32>() / 3.0;
        close("loss", &[objective], &expected["loss"].data, rel);
        let grads = params.tensors_of(gpu, &params.grads).unwrap();
        assert_eq!(grads.len(), original.len(), "one gradient per parameter");
        for g in &grads {
            let want = &expected[&format!("grad.{}", g.name)];
            assert_eq!(g.shape, want.shape, "{} shape", g.name);
            close(&format!("grad.{}", g.name), &g.data, &want.data, rel);
        }
        for t in params.tensors_of(gpu, &params.values).unwrap() {
            assert_eq!(original[&t.name], t, "tensor {}", t.name);
        }
    });
}
