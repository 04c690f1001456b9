//! Whole-model gradient check: the backward the graph compiler derives (loss, decoder,
//! sampling path, heads, encoder) of the MLP, conv, ResNet and a table model, and of a
//! file-defined model with every op, on tiny networks, against central finite differences
//! of the graph evaluated in f64 on the CPU from the kernels' twins (`graph::cpu`), with
//! the same Philox noise. A padded batch row checks that padding contributes nothing.
//! Tolerance: 1e-3 * |fd| + 1e-3.

mod common;

use std::collections::BTreeMap;

use common::for_each_gpu;
use vae_gpu::gpu::Matrix;
use vae_gpu::io::safetensors::Tensor;
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::ops::gather::GpuImages;
use vae_gpu::ops::loss::{Likelihood, LossSettings};
use vae_gpu::ops::sample::Noise;
use vae_gpu::vae::checkpoint::{tensors, tensors_of};
use vae_gpu::vae::step::{Batches, Samples, StepProgram, StepSpec, STREAM_TRAIN};
use vae_gpu::vae::ModelConfig;
use vae_gpu::{cpu, graph};

/// mu | logvar and the logits of the model's graph evaluated on the CPU (`graph::cpu`)
/// for PyTorch-layout tensors `t`, with the GPU's Philox noise.
fn cpu_model(
    t: &[Tensor],
    x: (&[f64], Option<&[f64]>),
    rows: usize,
    c: &ModelConfig,
    noise: Noise,
) -> (Vec<f64>, Vec<f64>) {
    let g = c.graph().unwrap();
    let named: BTreeMap<String, Vec<f64>> = t
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.data.iter().map(|&v| f64::from(v)).collect(),
            )
        })
        .collect();
    let eps: Vec<f64> = (0..rows * c.latent)
        .map(|i| cpu::sample::normal_at(noise, i as u32))
        .collect();
    let values = graph::cpu::forward(&g, &named, x, &BTreeMap::from([(g.z, eps)]), rows);
    graph::cpu::outputs(&g, &values)
}

/// Sum over valid rows of the per-sample loss for PyTorch-layout tensors `t`.
fn cpu_total(
    t: &[Tensor],
    (x, y): (&[f64], Option<&[f64]>),
    rows: usize,
    c: &ModelConfig,
    s: &LossSettings,
    noise: Noise,
) -> f64 {
    let (mulv, logits) = cpu_model(t, (x, y), rows, c, noise);
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

/// A file-defined model with every op: strided, stride-1 (run flipped) and transposed
/// convolutions, a concatenation whose input also feeds the concatenated branch (two
/// gradients summed, then a ReLU's derivative), a residual block with GroupNorm + SiLU, a
/// standalone SiLU after a flatten, upsampling, LeakyReLU, sigmoid and tanh.
const FILE_MODEL: &str = r#"{
  "encoder": [
    {"op": "conv", "out": 8, "kernel": 3, "padding": 1, "act": "relu", "name": "c1"},
    {"op": "concat", "name": "cat", "body": [
      {"op": "conv", "out": 4, "kernel": 3, "padding": 1, "act": "leaky_relu:0.2", "name": "a"}
    ]},
    {"op": "residual", "name": "res", "body": [
      {"op": "groupnorm", "groups": 4, "act": "silu", "name": "n"},
      {"op": "conv", "out": 12, "kernel": 3, "padding": 1, "name": "c"}
    ]},
    {"op": "conv", "out": 8, "kernel": 4, "stride": 2, "padding": 1, "act": "tanh", "name": "down"},
    {"op": "flatten"},
    {"op": "act", "act": "silu"}
  ],
  "heads": "head",
  "decoder": [
    {"op": "linear", "out": [4, 4, 8], "act": "relu", "name": "d1"},
    {"op": "upsample"},
    {"op": "concat", "name": "up", "body": [
      {"op": "conv", "out": 4, "kernel": 3, "padding": 1, "act": "sigmoid", "name": "s"}
    ]},
    {"op": "deconv", "out": 8, "kernel": 3, "padding": 1, "act": "relu", "name": "t"},
    {"op": "conv", "out": "data", "kernel": 3, "padding": 1, "name": "out"}
  ]
}"#;

#[test]
fn composed_vae_backward_matches_finite_differences() {
    for_each_gpu(|gpu| {
        let mlp = ModelConfig {
            hidden: vec![5],
            latent: 2,
            gauss_var: 0.5,
            ..ModelConfig::mlp(2, 3, 1)
        };
        let table = table_model(&mlp);
        let conv = ModelConfig {
            conv_channels: vec![4, 8],
            latent: 2,
            gauss_var: 0.5,
            ..ModelConfig::conv(8, 8, 2)
        };
        let resnet = ModelConfig {
            conv_channels: vec![4, 8],
            groups: 2,
            latent: 2,
            ..ModelConfig::resnet(8, 8, 2)
        };
        let file = ModelConfig {
            arch: "file".into(),
            spec: Some(serde_json::from_str(FILE_MODEL).unwrap()),
            latent: 3,
            ..ModelConfig::mlp(8, 8, 2)
        };
        // Conditional: 3 classes beside the flat input and z, or beside every pixel.
        let conditional = |c: &ModelConfig| ModelConfig {
            classes: Some(3),
            ..c.clone()
        };
        let (mlp_y, conv_y, resnet_y) =
            (conditional(&mlp), conditional(&conv), conditional(&resnet));
        let mut unchunked = std::collections::HashMap::new();
        // The last three again with every convolution run in chunks of images (bindings
        // capped below their columns; see `Gpu::limit_bindings`).
        for (c, likelihood, chunked) in [
            (&mlp, Likelihood::Bernoulli, false),
            (&mlp, Likelihood::Gaussian, false),
            (&conv, Likelihood::Bernoulli, false),
            (&table, Likelihood::Bernoulli, false),
            (&resnet, Likelihood::Bernoulli, false),
            (&file, Likelihood::Gaussian, false),
            (&mlp_y, Likelihood::Bernoulli, false),
            (&conv_y, Likelihood::Gaussian, false),
            (&resnet_y, Likelihood::Bernoulli, false),
            (&conv, Likelihood::Bernoulli, true),
            (&resnet, Likelihood::Bernoulli, true),
            (&file, Likelihood::Gaussian, true),
        ] {
            let c = ModelConfig {
                likelihood,
                ..c.clone()
            };
            gpu.limit_bindings(chunked.then(|| chunking_cap(&c, 4)));
            let (rows, valid, seed, d) = (4, 3, 77, c.input_dim());
            let (pixels, dtype) = match c.table {
                Some(_) => (table_records(), vae_gpu::data::Dtype::F32),
                None => (
                    (0..4 * d).map(|i| (i * 37 % 256) as u8).collect(),
                    vae_gpu::data::Dtype::U8,
                ),
            };
            let images = GpuImages::upload(gpu, &pixels, d, dtype).unwrap();
            let labels: Vec<u32> = vec![1, 2, 0, 2];
            let label_buf =
                Matrix::from_slice(gpu, 1, 4, bytemuck::cast_slice(&labels), "labels").unwrap();
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
            let params = c.params(gpu, 3).unwrap();
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
                    labels: Some(&label_buf.buffer),
                },
                &StepSpec {
                    rows,
                    settings: s,
                    adam: Some(adam),
                    seed,
                    corruption: None,
                    samples: Samples::ONE,
                },
            )
            .unwrap();
            // Chunks are more launches: the chunked run is one.
            let launches = program.launches().len();
            match chunked {
                false => {
                    unchunked.entry(c.arch.clone()).or_insert(launches);
                }
                true => assert!(launches > unchunked[&c.arch], "{} runs in chunks", c.arch),
            }
            program.prepare(gpu, 0, 5, &s);
            program.submit(gpu, None).unwrap();
            let grads = tensors_of(gpu, &params, &params.grads).unwrap();
            let values = tensors(gpu, &params).unwrap();
            let x = cpu::gather(&pixels, d, dtype, &order, 0, rows);
            let y = c.classes.map(|k| cpu::one_hot(&labels, k, &order, 0, rows));
            let noise = Noise {
                seed,
                step: 5,
                stream: STREAM_TRAIN,
            };
            for (ti, g) in grads.iter().enumerate() {
                for i in 0..g.data.len() {
                    // Small enough that no ReLU in the network crosses its kink.
                    let h = 3e-5;
                    let mut t = values.clone();
                    let orig = t[ti].data[i];
                    let eval = |t: &[Tensor]| cpu_total(t, (&x, y.as_deref()), rows, &c, &s, noise);
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
                        "{}{} {likelihood:?}{} {}[{i}]: gpu {got} vs finite difference {fd}",
                        c.arch,
                        if c.classes.is_some() {
                            " conditional"
                        } else {
                            ""
                        },
                        if chunked { " chunked" } else { "" },
                        g.name
                    );
                }
            }
        }
        gpu.limit_bindings(None);
    });
}

/// A cap on one binding that every value of the model's step at batch `rows` fits but no
/// convolution's columns for the whole batch do: each convolution then runs in chunks.
fn chunking_cap(c: &ModelConfig, rows: usize) -> u64 {
    let g = c.graph().unwrap();
    let bytes = |rows: usize, cols: usize| (rows * cols.div_ceil(4) * 4 * 4) as u64;
    let values = g
        .shapes
        .iter()
        .map(|&s| {
            let l = graph::Layout::of(s);
            bytes(rows * l.rows, l.cols)
        })
        .max()
        .unwrap();
    let cols_per_image = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, graph::Op::Conv { .. } | graph::Op::ConvT { .. }))
        .map(|n| {
            let (r, k) = graph::ops::cols_dims(&g, n, 1).unwrap();
            bytes(r, k)
        })
        .max()
        .unwrap();
    values.max(cols_per_image)
}
