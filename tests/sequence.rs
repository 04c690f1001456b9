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

/// The fixture's sizes (make_tiny_gru.py).
fn tiny_spec() -> GruSpec {
    GruSpec {
        vocab: 10,
        embed: 4,
        enc_hidden: 6,
        latent: 3,
        dec_hidden: 5,
        dec_layers: 2,
    }
}

#[test]
fn step_matches_pytorch() {
    for_each_gpu(|gpu| {
        let spec = tiny_spec();
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

/// Generation on the GPU against the f64 twins, step by step: with the fixture's weights and
/// random codes, the likeliest token each step (temperature 0) and draws at temperature 1
/// (the same Philox uniforms) give the same sequences, padding after each end.
#[test]
fn generation_matches_cpu() {
    use vae_gpu::cpu;
    use vae_gpu::cpu::gru::GruWeights;
    use vae_gpu::ops::sample::Noise;
    use vae_gpu::vae::gru::decode::GruDecoder;
    for_each_gpu(|gpu| {
        let spec = tiny_spec();
        let params = GruParams::new(gpu, spec, 0).unwrap();
        let t = safetensors::load(&fixture("tiny_gru/model.safetensors")).unwrap();
        params.set_tensors(gpu, &params.values, t.clone()).unwrap();
        let w = |name: &str| -> Vec<f64> { t[name].data.iter().map(|&v| f64::from(v)).collect() };
        let vocab = Vocab {
            kind: Tokens::Chars,
            tokens: "()1CNOc".chars().map(String::from).collect(),
        };
        let mut rng = common::Rng::new(79);
        let (records, max_tokens) = (5, 8);
        for temperature in [0.0, 1.0] {
            let noise = Noise {
                seed: 5,
                step: 2,
                stream: 2,
            };
            let mut d = GruDecoder::new(
                gpu,
                &params,
                &vocab,
                records,
                max_tokens,
                temperature,
                noise,
            )
            .unwrap();
            d.set_noise(gpu, noise);
            let (z32, z) = rng.vec(d.rows * 3, -2.0, 2.0);
            d.z.write(gpu, &z32).unwrap();
            let got = d.run(gpu).unwrap();
            for (b, seq) in got.iter().enumerate() {
                let zb = &z[b * 3..][..3];
                let lin = |wn: &str, bn: &str, x: &[f64]| -> Vec<f64> {
                    let (wv, bv) = (w(wn), w(bn));
                    bv.iter()
                        .enumerate()
                        .map(|(o, bo)| {
                            bo + x
                                .iter()
                                .enumerate()
                                .map(|(i, xi)| wv[o * x.len() + i] * xi)
                                .sum::<f64>()
                        })
                        .collect()
                };
                let h0 = lin("decoder_lat.weight", "decoder_lat.bias", zb);
                let mut h = [h0.clone(), h0];
                let mut token = vocab.bos();
                let mut want = Vec::new();
                for step in 0..=max_tokens {
                    let emb = cpu::sequence::embed(&[token], &w("x_emb.weight"), 4);
                    let mut x: Vec<f64> = emb.into_iter().chain(zb.iter().copied()).collect();
                    for (l, hl) in h.iter_mut().enumerate() {
                        let name = |p: &str| format!("decoder_rnn.{p}_l{l}");
                        let (wi, wh, bi, bh) = (
                            w(&name("weight_ih")),
                            w(&name("weight_hh")),
                            w(&name("bias_ih")),
                            w(&name("bias_hh")),
                        );
                        let g = GruWeights {
                            w_ih: &wi,
                            w_hh: &wh,
                            b_ih: &bi,
                            b_hh: &bh,
                        };
                        let states = cpu::gru::gru_forward(&g, &x, hl, &[1], 5);
                        *hl = states[5..].to_vec();
                        x = hl.clone();
                    }
                    let logits = lin("decoder_fc.weight", "decoder_fc.bias", &x);
                    token = cpu::sequence::next_token(
                        &logits,
                        token,
                        vae_gpu::ops::sequence::Ends {
                            eos: vocab.eos(),
                            pad: vocab.pad(),
                        },
                        b as u32,
                        step as u32,
                        noise,
                        f64::from(temperature),
                    );
                    want.push(token);
                }
                assert_eq!(seq, &want, "record {b} at temperature {temperature}");
            }
        }
    });
}
