//! The sequence VAE (--arch gru) against a PyTorch fixture of MOSES's model
//! (tests/fixtures/make_tiny_gru.py): one training step's noise, mu | logvar, per-sequence
//! cross-entropy and KL, objective and every parameter's gradient, within 1e-4 of each
//! reference tensor's largest magnitude (plus four times the noise's error, as in
//! common::pytorch); the state_dict saves back unchanged.

mod common;

use common::for_each_gpu;
use common::pytorch::{close, fixture};
use std::path::Path;
use vae_gpu::data::sequence::{Sequences, Tokens, Vocab};
use vae_gpu::io::safetensors;
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::vae::checkpoint::{set_tensors, tensors, tensors_of};
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
        set_tensors(gpu, &params.params, original.clone(), Path::new("fixture")).unwrap();
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
        let grads = tensors_of(gpu, &params.params, &params.params.grads).unwrap();
        assert_eq!(grads.len(), original.len(), "one gradient per parameter");
        for g in &grads {
            let want = &expected[&format!("grad.{}", g.name)];
            assert_eq!(g.shape, want.shape, "{} shape", g.name);
            close(&format!("grad.{}", g.name), &g.data, &want.data, rel);
        }
        for t in tensors(gpu, &params.params).unwrap() {
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
        set_tensors(gpu, &params.params, t.clone(), Path::new("fixture")).unwrap();
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

/// The sequence model's graph compiled for the GPU against its f64 twin
/// (`graph::cpu::forward_sequence`) on awkward sizes (widths 3, 5, 6, 7, three decoder
/// layers sharing one initial state, both embeddings sharing one table, records of 2 to 6
/// tokens and padded rows): one step's per-record cross-entropy and KL, and every
/// parameter's gradient against central differences (step 1e-5) of the twin's objective,
/// |gpu - fd| <= 2e-4 * max |fd| of the tensor + 1e-6.
#[test]
fn graph_matches_its_twin_and_finite_differences() {
    use std::collections::BTreeMap;
    use vae_gpu::graph::cpu::{forward_sequence, SeqBatch};
    for_each_gpu(|gpu| {
        let spec = GruSpec {
            vocab: 7,
            embed: 3,
            enc_hidden: 5,
            latent: 2,
            dec_hidden: 6,
            dec_layers: 3,
        };
        let vocab = Vocab {
            kind: Tokens::Chars,
            tokens: "abcd".chars().map(String::from).collect(),
        };
        let params = GruParams::new(gpu, spec, 3).unwrap();
        let (records, width) = (5, 6);
        let lengths = [6u32, 2, 4, 5, 3];
        let mut rng = common::Rng::new(17);
        let ids: Vec<u32> = (0..records * width)
            .map(|_| rng.uniform(0.0, 6.99) as u32)
            .collect();
        let data = Sequences {
            ids: ids.clone(),
            lengths: lengths.to_vec(),
            width,
            count: records,
            text: vec![String::new(); records],
        };
        let training = Training {
            adam: AdamConfig {
                lr: 0.0,
                ..AdamConfig::default()
            },
            clip: 1e9,
        };
        let beta = 0.5;
        let mut step = GruStep::new(gpu, &params, records, width, Some(training), 5, 0).unwrap();
        let batch: Vec<usize> = (0..records).collect();
        let tokens = step.set_batch(gpu, &vocab, &data, &batch, 2, beta).unwrap();
        gpu.run(&step.launches()).unwrap();
        let rows = step.rows;
        let eps: Vec<f64> = step.eps.read(gpu).unwrap()[..rows * spec.latent]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let per = step.per_sample.read(gpu).unwrap();

        // The batch as set_batch lays it out: time-major, padding past each end.
        let (pad, steps) = (vocab.pad(), width - 1);
        let mut enc = vec![pad; width * rows];
        let mut dec = vec![pad; steps * rows];
        let mut targets = vec![u32::MAX; steps * rows];
        let mut len = [vec![0usize; rows], vec![0usize; rows]];
        for b in 0..records {
            let n = lengths[b] as usize;
            for t in 0..n {
                enc[t * rows + b] = ids[b * width + t];
                if t + 1 < n {
                    dec[t * rows + b] = ids[b * width + t];
                    targets[t * rows + b] = ids[b * width + t + 1];
                }
            }
            (len[0][b], len[1][b]) = (n, n - 1);
        }
        let g = &params.params.graph;
        let noise = BTreeMap::from([(g.z, eps)]);
        // Per record (cross-entropy, KL) and the objective, in f64.
        let evaluate = |t: &BTreeMap<String, Vec<f64>>| {
            let batch = SeqBatch {
                x: &enc,
                tokens: &dec,
                lengths: [&len[0], &len[1]],
                steps: [width, steps],
            };
            let v = forward_sequence(g, t, &batch, &noise, rows);
            let (xent, _) = vae_gpu::cpu::loss::softmax_xent(&v[g.logits], &targets, 7, 1.0);
            let (z, mulv) = (spec.latent, &v[g.mulv]);
            let per: Vec<(f64, f64)> = (0..records)
                .map(|b| {
                    let recon: f64 = (0..steps).map(|s| xent[s * rows + b]).sum();
                    let kl: f64 = (0..z)
                        .map(|j| {
                            let (mu, lv) = (mulv[b * 2 * z + j], mulv[b * 2 * z + z + j]);
                            -0.5 * (1.0 + lv - mu * mu - lv.exp())
                        })
                        .sum();
                    (recon, kl)
                })
                .collect();
            let objective = per.iter().map(|p| p.0).sum::<f64>() / tokens as f64
                + f64::from(beta) * per.iter().map(|p| p.1).sum::<f64>() / records as f64;
            (per, objective)
        };
        let values = tensors(gpu, &params.params).unwrap();
        let named: BTreeMap<String, Vec<f64>> = values
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.data.iter().map(|&v| f64::from(v)).collect(),
                )
            })
            .collect();
        let (want, _) = evaluate(&named);
        for (b, (recon, kl)) in want.iter().enumerate() {
            let (gr, gk) = (f64::from(per[b * 3]), f64::from(per[b * 3 + 1]));
            assert!(
                (gr - recon).abs() <= 1e-4 * (1.0 + recon.abs()),
                "record {b}: cross-entropy {gr} vs {recon}"
            );
            assert!(
                (gk - kl).abs() <= 1e-4 * (1.0 + kl.abs()),
                "record {b}: KL {gk} vs {kl}"
            );
        }
        let grads = tensors_of(gpu, &params.params, &params.params.grads).unwrap();
        assert_eq!(grads.len(), named.len(), "one gradient per parameter");
        for grad in &grads {
            let fd = common::numeric_grad(&named[&grad.name], 1e-5, |x| {
                let mut t = named.clone();
                t.insert(grad.name.clone(), x.to_vec());
                evaluate(&t).1
            });
            let scale = fd.iter().fold(0f64, |m, v| m.max(v.abs()));
            common::assert_close(&format!("grad.{}", grad.name), &grad.data, &fd, |_| {
                2e-4 * scale + 1e-6
            });
        }
    });
}

/// Runs saved before the model was a graph hold Adam's moments in the launch list's order;
/// resuming one moves them where the graph keeps them. The offsets of the fixture's sizes,
/// counted by hand (each slot at the next 64-float boundary, rows padded to 4 floats), and
/// a marker per tensor written there comes back under its name.
#[test]
fn moments_of_runs_before_the_graph_move_to_the_graph_layout() {
    for_each_gpu(|gpu| {
        let params = GruParams::new(gpu, tiny_spec(), 0).unwrap();
        let by_hand = [
            ("x_emb.weight", 0),
            ("encoder_rnn.weight_ih_l0", 64),
            ("encoder_rnn.weight_hh_l0", 192),
            ("encoder_rnn.bias_ih_l0", 384),
            ("encoder_rnn.bias_hh_l0", 448),
            ("q.weight", 512),
            ("q.bias", 576),
            ("decoder_lat.weight", 640),
            ("decoder_lat.bias", 704),
            ("decoder_fc.weight", 768),
            ("decoder_fc.bias", 896),
            ("decoder_rnn.weight_ih_l0", 960),
            ("decoder_rnn.weight_hh_l0", 1088),
            ("decoder_rnn.bias_ih_l0", 1216),
            ("decoder_rnn.bias_hh_l0", 1280),
            ("decoder_rnn.weight_ih_l1", 1344),
            ("decoder_rnn.weight_hh_l1", 1472),
            ("decoder_rnn.bias_ih_l1", 1600),
            ("decoder_rnn.bias_hh_l1", 1664),
        ];
        let got = params.launch_list_offsets();
        let want: Vec<(String, usize)> = by_hand.iter().map(|&(n, o)| (n.to_string(), o)).collect();
        assert_eq!(got, want);
        // The heads are stored as q_mu and q_logvar: their rows, one after the other.
        let shapes: std::collections::BTreeMap<String, (usize, usize)> = [
            ("x_emb.weight", (10, 4)),
            ("encoder_rnn.weight_ih_l0", (18, 4)),
            ("encoder_rnn.weight_hh_l0", (18, 6)),
            ("encoder_rnn.bias_ih_l0", (1, 18)),
            ("encoder_rnn.bias_hh_l0", (1, 18)),
            ("q.weight", (6, 6)),
            ("q.bias", (1, 6)),
            ("decoder_lat.weight", (5, 3)),
            ("decoder_lat.bias", (1, 5)),
            ("decoder_fc.weight", (10, 5)),
            ("decoder_fc.bias", (1, 10)),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .chain((0..2).flat_map(|l| {
            let input = if l == 0 { 7 } else { 5 };
            [
                (format!("decoder_rnn.weight_ih_l{l}"), (15, input)),
                (format!("decoder_rnn.weight_hh_l{l}"), (15, 5)),
                (format!("decoder_rnn.bias_ih_l{l}"), (1, 15)),
                (format!("decoder_rnn.bias_hh_l{l}"), (1, 15)),
            ]
        }))
        .collect();
        let mut old = vec![0f32; params.params.len];
        for (k, (name, at)) in by_hand.iter().enumerate() {
            let (rows, cols) = shapes[*name];
            let ld = cols.next_multiple_of(4);
            for r in 0..rows {
                for c in 0..cols {
                    old[at + r * ld + c] = (k + 1) as f32;
                }
            }
        }
        params
            .params
            .flat(&params.params.m)
            .write(gpu, &old)
            .unwrap();
        params
            .params
            .flat(&params.params.v)
            .write(gpu, &old)
            .unwrap();
        params.moments_from_launch_list(gpu).unwrap();
        for buffer in [&params.params.m, &params.params.v] {
            for t in tensors_of(gpu, &params.params, buffer).unwrap() {
                let layer = match t.name.as_str() {
                    "q_mu.weight" | "q_logvar.weight" => "q.weight",
                    "q_mu.bias" | "q_logvar.bias" => "q.bias",
                    other => other,
                };
                let k = by_hand.iter().position(|(n, _)| *n == layer).unwrap();
                assert!(
                    t.data.iter().all(|&v| v == (k + 1) as f32),
                    "{}: {:?}",
                    t.name,
                    t.data
                );
            }
        }
    });
}
