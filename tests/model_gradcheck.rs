//! Whole-model gradient check: the composed VAE backward (loss, decoder, sampling path,
//! heads, encoder) of the MLP and the conv architecture on tiny networks against central finite differences of an f64 CPU
//! forward built from the kernel twins, with the same Philox noise. A padded batch row
//! checks that padding contributes nothing. Tolerance: 1e-3 * |fd| + 1e-3.

mod common;

use common::for_each_gpu;
use vae_gpu::cpu;
use vae_gpu::gpu::Matrix;
use vae_gpu::io::safetensors::Tensor;
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::ops::conv::Shape;
use vae_gpu::ops::gather::GpuImages;
use vae_gpu::ops::gemm::GemmSpec;
use vae_gpu::ops::loss::{Likelihood, LossSettings};
use vae_gpu::ops::sample::Noise;
use vae_gpu::ops::Activation;
use vae_gpu::vae::checkpoint::{tensors, tensors_of};
use vae_gpu::vae::model::{Batches, StepProgram, StepSpec, STREAM_TRAIN};
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

fn find<'a>(t: &'a [Tensor], name: &str) -> &'a Tensor {
    t.iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.data.iter().map(|&v| f64::from(v)).collect()
}

/// Images of `s` in a [B, ...] buffer from (h, w, c) order to PyTorch's (c, h, w) or back.
fn permute(v: &[f64], s: Shape, to_chw: bool) -> Vec<f64> {
    let n = s.numel();
    let mut out = vec![0.0; v.len()];
    for b in 0..v.len() / n {
        for c in 0..s.c {
            for p in 0..s.h * s.w {
                let (hwc, chw) = (b * n + p * s.c + c, b * n + c * s.h * s.w + p);
                if to_chw {
                    out[chw] = v[hwc]
                } else {
                    out[hwc] = v[chw]
                }
            }
        }
    }
    out
}

/// mu | logvar of the encoder and the logits of the decoder for PyTorch-layout tensors `t`.
fn cpu_model(
    t: &[Tensor],
    x: &[f64],
    rows: usize,
    c: &ModelConfig,
    noise: Noise,
) -> (Vec<f64>, Vec<f64>) {
    let z = c.latent;
    let conv = |x: &[f64], s: Shape, name: &str, act, transposed: bool| {
        let (w, b) = (
            find(t, &format!("{name}.weight")),
            find(t, &format!("{name}.bias")),
        );
        let cout = if transposed { w.shape[1] } else { w.shape[0] };
        let f = if transposed {
            cpu::conv::conv_transpose2d
        } else {
            cpu::conv::conv2d
        };
        let (y, oh, ow) = f(x, s, rows, &f64s(w), &f64s(b), cout, 4, 2, 1, act);
        (
            y,
            Shape {
                h: oh,
                w: ow,
                c: cout,
            },
        )
    };
    let (mulv, flat_shape) = if c.arch == "conv" {
        let (mut h, mut s) = (
            x.to_vec(),
            Shape {
                h: c.height,
                w: c.width,
                c: c.channels,
            },
        );
        for i in 0..c.conv_channels.len() {
            (h, s) = conv(&h, s, &format!("conv{}", i + 1), Activation::Relu, false);
        }
        let e = linear(
            &permute(&h, s, true),
            rows,
            find(t, "fc_enc.weight"),
            find(t, "fc_enc.bias"),
            Activation::Identity,
        );
        (e, Some(s))
    } else {
        let h = linear(
            x,
            rows,
            find(t, "fc1.weight"),
            find(t, "fc1.bias"),
            Activation::Relu,
        );
        let mu = linear(
            &h,
            rows,
            find(t, "fc21.weight"),
            find(t, "fc21.bias"),
            Activation::Identity,
        );
        let lv = linear(
            &h,
            rows,
            find(t, "fc22.weight"),
            find(t, "fc22.bias"),
            Activation::Identity,
        );
        let mulv = (0..rows)
            .flat_map(|r| {
                mu[r * z..(r + 1) * z]
                    .iter()
                    .chain(&lv[r * z..(r + 1) * z])
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        (mulv, None)
    };
    let (zs, _) = cpu::sample::sample_forward(&mulv, rows, z, noise);
    let logits = match flat_shape {
        Some(s0) => {
            let d = linear(
                &zs,
                rows,
                find(t, "fc_dec.weight"),
                find(t, "fc_dec.bias"),
                Activation::Relu,
            );
            let (mut h, mut s) = (permute(&d, s0, false), s0);
            for i in (0..c.conv_channels.len()).rev() {
                let act = if i == 0 {
                    Activation::Identity
                } else {
                    Activation::Relu
                };
                (h, s) = conv(&h, s, &format!("deconv{}", i + 1), act, true);
            }
            h
        }
        None => {
            let h3 = linear(
                &zs,
                rows,
                find(t, "fc3.weight"),
                find(t, "fc3.bias"),
                Activation::Relu,
            );
            linear(
                &h3,
                rows,
                find(t, "fc4.weight"),
                find(t, "fc4.bias"),
                Activation::Identity,
            )
        }
    };
    (mulv, logits)
}

/// Sum over valid rows of the per-sample loss for PyTorch-layout tensors `t`.
fn cpu_total(
    t: &[Tensor],
    x: &[f64],
    rows: usize,
    c: &ModelConfig,
    s: &LossSettings,
    noise: Noise,
) -> f64 {
    let (mulv, logits) = cpu_model(t, x, rows, c, noise);
    // A table's reconstruction comes from its own twin; the KL is the image loss's with no
    // pixels.
    let (d, table) = match &c.table {
        Some(t) => {
            let dims = (rows, t.outputs(), t.width());
            let recon = cpu::loss::table_recon(&logits, x, dims, &t.blocks(), s.valid, 1.0).0;
            (0, recon.iter().sum::<f64>())
        }
        None => (c.input_dim(), 0.0),
    };
    let out = cpu::loss::loss(&logits, x, &mulv, rows, d, c.latent, s);
    table + (0..rows).map(|r| out.per_sample[r * 3 + 2]).sum::<f64>()
}

/// A small table: numeric, binary and 3-level categorical columns (E = 5, 6 outputs).
fn table_model(base: &ModelConfig) -> ModelConfig {
    use vae_gpu::data::table::{Column, Kind, Schema};
    let column = |name: &str, kind| Column {
        name: name.into(),
        kind,
    };
    let schema = Schema {
        columns: vec![
            column(
                "n",
                Kind::Numeric {
                    mean: 0.0,
                    std: 1.0,
                },
            ),
            column(
                "b",
                Kind::Binary {
                    levels: ["x".into(), "y".into()],
                },
            ),
            column(
                "c",
                Kind::Categorical {
                    levels: vec!["p".into(), "q".into(), "r".into()],
                },
            ),
        ],
        ..Default::default()
    };
    ModelConfig {
        height: 1,
        width: 2 * schema.width(),
        table: Some(schema),
        ..base.clone()
    }
}

/// Four records of the small table as f32 bytes: [values | mask], some cells missing.
fn table_records() -> Vec<u8> {
    let rows: [[f32; 10]; 4] = [
        [0.7, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [-1.2, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0],
        [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        [2.1, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
    ];
    vae_gpu::data::Dtype::F32.bytes(&rows.concat())
}

#[test]
fn composed_vae_backward_matches_finite_differences() {
    for_each_gpu(|gpu| {
        let mlp = ModelConfig {
            arch: "mlp".into(),
            height: 2,
            width: 3,
            channels: 1,
            hidden: vec![5],
            conv_channels: vec![],
            latent: 2,
            likelihood: Likelihood::Bernoulli,
            gauss_var: 0.5,
            table: None,
        };
        let table = table_model(&mlp);
        let conv = ModelConfig {
            arch: "conv".into(),
            height: 8,
            width: 8,
            channels: 2,
            hidden: vec![],
            conv_channels: vec![4, 8],
            ..mlp.clone()
        };
        for (c, likelihood) in [
            (&mlp, Likelihood::Bernoulli),
            (&mlp, Likelihood::Gaussian),
            (&conv, Likelihood::Bernoulli),
            (&table, Likelihood::Bernoulli),
        ] {
            let c = ModelConfig {
                likelihood,
                ..c.clone()
            };
            let (rows, valid, seed, d) = (4, 3, 77, c.input_dim());
            let (pixels, dtype) = match c.table {
                Some(_) => (table_records(), vae_gpu::data::Dtype::F32),
                None => (
                    (0..4 * d).map(|i| (i * 37 % 256) as u8).collect(),
                    vae_gpu::data::Dtype::U8,
                ),
            };
            let images = GpuImages::upload(gpu, &pixels, d, dtype).unwrap();
            let order: Vec<u32> = vec![2, 0, 3, 1];
            let indices =
                Matrix::from_slice(gpu, 1, 4, bytemuck::cast_slice(&order), "idx").unwrap();
            let s = LossSettings {
                likelihood,
                beta: 0.7,
                grad_scale: 1.0,
                gauss_var: 0.5,
                valid,
                free_bits: 0.0,
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
                &Batches {
                    images: &images,
                    indices: &indices.buffer,
                    count: 4,
                },
                &StepSpec {
                    rows,
                    settings: s,
                    adam: Some(adam),
                    seed,
                    corruption: None,
                },
            )
            .unwrap();
            program.prepare(gpu, 0, 5, &s);
            program.submit(gpu, None).unwrap();
            let grads = tensors_of(gpu, &params, &params.grads).unwrap();
            let values = tensors(gpu, &params).unwrap();
            let x = cpu::gather(&pixels, d, dtype, &order, 0, rows);
            let noise = Noise {
                seed,
                step: 5,
                stream: STREAM_TRAIN,
            };
            for (ti, g) in grads.iter().enumerate() {
                for i in 0..g.data.len() {
                    // Small enough that no ReLU in the network crosses its kink.
                    let h = 2e-4;
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
                        "{} {likelihood:?} {}[{i}]: gpu {got} vs finite difference {fd}",
                        c.arch,
                        g.name
                    );
                }
            }
        }
    });
}
