//! The model graph's own kernels: GroupNorm (with a fused activation) and the structural
//! ops (residual add, standalone activation, gradient copies, channel copies for concat,
//! nearest x2 upsampling). Forward: GPU against the CPU twin on random and awkward shapes
//! (one pixel, groups of 1, 2 and 12 channels, several partial-sum chunks, padded rows),
//! |err| <= 1e-5 * (1 + |want|). Backward: against central differences of the f64 twin
//! (step 1e-6) of L = sum(G * op(x)), |gpu - fd| <= 1e-4 * |fd| + 1e-4, with the gradient
//! epilogue (adding to what the target holds, then an activation's derivative) checked
//! against the same sums by hand.

mod common;

use common::{assert_close, for_each_gpu, Rng};
use vae_gpu::cpu;
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::ops::conv::Shape;
use vae_gpu::ops::gemm::InputActivation;
use vae_gpu::ops::norm::{group_norm, group_norm_backward, NormGeom};
use vae_gpu::ops::tensor::{self, ImageView};
use vae_gpu::ops::{Activation, GradEpilogue};

const H: f64 = 1e-6;

fn upload(gpu: &Gpu, rows: usize, cols: usize, data: &[f32]) -> Matrix {
    Matrix::from_slice(gpu, rows, cols, data, "test").unwrap()
}

fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    common::numeric_grad(x, H, f)
}

fn check_grad(what: &str, gpu_grad: &[f32], fd: &[f64]) {
    assert_close(what, gpu_grad, fd, |i| 1e-4 * fd[i].abs() + 1e-4);
}

fn forward_tol(want: &[f64]) -> impl Fn(usize) -> f64 + '_ {
    |i| 1e-5 * (1.0 + want[i].abs())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

const ACTS: [Activation; 6] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.2),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Silu,
];

#[test]
fn group_norm_matches_its_twin_and_finite_differences() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(41);
        // (batch, hw, channels, groups): one pixel, groups of 1, 2, 4, 12 channels, hw over
        // several partial-sum chunks of 64.
        let cases = [
            (1, 1, 4, 4),
            (2, 7, 8, 4),
            (3, 130, 8, 1),
            (2, 9, 12, 6),
            (1, 65, 24, 2),
            (4, 16, 32, 8),
        ];
        for (case, &(b, hw, c, groups)) in cases.iter().enumerate() {
            let act = ACTS[case % ACTS.len()];
            let g = NormGeom {
                batch: b,
                hw,
                c,
                groups,
            };
            let n = b * hw * c;
            // Values away from zero with a large common offset: the variance must not be
            // computed as E[x^2] - E[x]^2.
            let (x32, x) = rng.vec(n, 40.0, 44.0);
            let (g32, gamma) = rng.vec(c, 0.5, 1.5);
            let (b32, beta) = rng.vec(c, -0.5, 0.5);
            let (dy32, dy) = rng.vec(n, -1.0, 1.0);
            let gx = upload(gpu, b * hw, c, &x32);
            let (ggamma, gbeta) = (upload(gpu, 1, c, &g32), upload(gpu, 1, c, &b32));
            let y = Matrix::zeros(gpu, b * hw, c, "y").unwrap();
            let stats = Matrix::zeros(gpu, b, 2 * groups, "stats").unwrap();
            let launches = group_norm(gpu, &g, &gx, (&ggamma, &gbeta), &y, &stats, act).unwrap();
            gpu.run(&launches.iter().collect::<Vec<_>>()).unwrap();
            let want = cpu::norm::group_norm(&x, b, hw, c, groups, &gamma, &beta, act);
            let what = format!("group_norm {b}x{hw}x{c} g{groups} {act:?}");
            assert_close(&what, &y.read(gpu).unwrap(), &want, forward_tol(&want));
            // Backward, with a target that holds a previous contribution: the epilogue adds.
            let gdy = upload(gpu, b * hw, c, &dy32);
            let (dgamma, dbeta) = (
                Matrix::zeros(gpu, 1, c, "dgamma").unwrap(),
                Matrix::zeros(gpu, 1, c, "dbeta").unwrap(),
            );
            let (prev32, prev) = rng.vec(n, -1.0, 1.0);
            let dx = upload(gpu, b * hw, c, &prev32);
            let back = group_norm_backward(
                gpu,
                &g,
                &gx,
                &gdy,
                (&ggamma, &gbeta),
                &stats,
                (&dgamma, &dbeta),
                &dx,
                act,
                GradEpilogue {
                    accumulate: true,
                    act: None,
                },
            )
            .unwrap();
            gpu.run(&back.iter().collect::<Vec<_>>()).unwrap();
            let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| {
                dot(
                    &dy,
                    &cpu::norm::group_norm(x, b, hw, c, groups, gamma, beta, act),
                )
            };
            let fd_x: Vec<f64> = numeric_grad(&x, |x| loss(x, &gamma, &beta))
                .iter()
                .zip(&prev)
                .map(|(g, p)| g + p)
                .collect();
            check_grad(
                &format!("{what} dx + previous"),
                &dx.read(gpu).unwrap(),
                &fd_x,
            );
            let fd_gamma = numeric_grad(&gamma, |gm| loss(&x, gm, &beta));
            check_grad(
                &format!("{what} dgamma"),
                &dgamma.read(gpu).unwrap(),
                &fd_gamma,
            );
            let fd_beta = numeric_grad(&beta, |bt| loss(&x, &gamma, bt));
            check_grad(
                &format!("{what} dbeta"),
                &dbeta.read(gpu).unwrap(),
                &fd_beta,
            );
        }
    });
}

#[test]
fn group_norm_takes_its_input_activation_derivative() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(43);
        let g = NormGeom {
            batch: 2,
            hw: 5,
            c: 8,
            groups: 2,
        };
        let n = 80;
        // x is a ReLU's output: the gradient with respect to the ReLU's input is dx * [x > 0].
        let x32: Vec<f32> = rng.vec(n, -1.0, 1.0).0.iter().map(|v| v.max(0.0)).collect();
        let x: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        let (dy32, dy) = rng.vec(n, -1.0, 1.0);
        let ones = upload(gpu, 1, 8, &[1.0; 8]);
        let zeros = upload(gpu, 1, 8, &[0.0; 8]);
        let gx = upload(gpu, 10, 8, &x32);
        let stats = Matrix::zeros(gpu, 2, 4, "stats").unwrap();
        let y = Matrix::zeros(gpu, 10, 8, "y").unwrap();
        let mut all = group_norm(
            gpu,
            &g,
            &gx,
            (&ones, &zeros),
            &y,
            &stats,
            Activation::Identity,
        )
        .unwrap();
        let (dgamma, dbeta) = (
            Matrix::zeros(gpu, 1, 8, "dg").unwrap(),
            Matrix::zeros(gpu, 1, 8, "db").unwrap(),
        );
        let dx = Matrix::zeros(gpu, 10, 8, "dx").unwrap();
        let gdy = upload(gpu, 10, 8, &dy32);
        all.extend(
            group_norm_backward(
                gpu,
                &g,
                &gx,
                &gdy,
                (&ones, &zeros),
                &stats,
                (&dgamma, &dbeta),
                &dx,
                Activation::Identity,
                GradEpilogue {
                    accumulate: false,
                    act: Some(InputActivation {
                        act: Activation::Relu,
                        output: &gx,
                    }),
                },
            )
            .unwrap(),
        );
        gpu.run(&all.iter().collect::<Vec<_>>()).unwrap();
        let fd = numeric_grad(&x, |x| {
            dot(
                &dy,
                &cpu::norm::group_norm(x, 2, 5, 8, 2, &[1.0; 8], &[0.0; 8], Activation::Identity),
            )
        });
        let through: Vec<f64> = fd
            .iter()
            .zip(&x)
            .map(|(g, &v)| if v > 0.0 { *g } else { 0.0 })
            .collect();
        check_grad(
            "group_norm dx through ReLU",
            &dx.read(gpu).unwrap(),
            &through,
        );
    });
}

#[test]
fn activations_adds_and_gradient_copies() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(47);
        // Padded rows (7 columns stored as 8) and unpadded ones; one row.
        for (rows, cols) in [(3, 7), (5, 8), (1, 1), (17, 33)] {
            let n = rows * cols;
            let (x32, x) = rng.vec(n, -2.0, 2.0);
            let gx = upload(gpu, rows, cols, &x32);
            for act in ACTS {
                let y = Matrix::zeros(gpu, rows, cols, "y").unwrap();
                gpu.run(&[&tensor::act(gpu, &gx, &y, act).unwrap()])
                    .unwrap();
                let want: Vec<f64> = x.iter().map(|&v| cpu::act_forward(v, act)).collect();
                let what = format!("act {act:?} [{rows}, {cols}]");
                assert_close(&what, &y.read(gpu).unwrap(), &want, forward_tol(&want));
                // The padding stays zero (sigmoid(0) is not): a GEMM would read it.
                let raw = vae_gpu::gpu::read_buffer(gpu, &y.buffer, 0, y.byte_len()).unwrap();
                let raw: &[f32] = bytemuck::cast_slice(&raw);
                for r in 0..rows {
                    for p in cols..y.ld {
                        assert_eq!(raw[r * y.ld + p], 0.0, "{what}: padding");
                    }
                }
                // dx = previous + dy * act'(x), then times sigmoid'(via its output z).
                let (dy32, dy) = rng.vec(n, -1.0, 1.0);
                let (prev32, prev) = rng.vec(n, -1.0, 1.0);
                let (z32, z) = rng.vec(n, 0.1, 0.9);
                let (gdy, dx, gz) = (
                    upload(gpu, rows, cols, &dy32),
                    upload(gpu, rows, cols, &prev32),
                    upload(gpu, rows, cols, &z32),
                );
                let e = GradEpilogue {
                    accumulate: true,
                    act: Some(InputActivation {
                        act: Activation::Sigmoid,
                        output: &gz,
                    }),
                };
                let d = tensor::grad(gpu, &gdy, &dx, Some((act, &gx)), e).unwrap();
                gpu.run(&[&d]).unwrap();
                let fd = numeric_grad(&x, |x| {
                    dot(
                        &dy,
                        &x.iter()
                            .map(|&v| cpu::act_forward(v, act))
                            .collect::<Vec<_>>(),
                    )
                });
                let want: Vec<f64> = (0..n)
                    .map(|i| (fd[i] + prev[i]) * z[i] * (1.0 - z[i]))
                    .collect();
                check_grad(&format!("{what} gradient"), &dx.read(gpu).unwrap(), &want);
            }
            let (b32, b) = rng.vec(n, -2.0, 2.0);
            let y = Matrix::zeros(gpu, rows, cols, "sum").unwrap();
            let gb = upload(gpu, rows, cols, &b32);
            gpu.run(&[&tensor::add(gpu, &gx, &gb, &y).unwrap()])
                .unwrap();
            let want: Vec<f64> = x.iter().zip(&b).map(|(p, q)| p + q).collect();
            assert_close("add", &y.read(gpu).unwrap(), &want, forward_tol(&want));
        }
    });
}

#[test]
fn channel_copies_concatenate_in_both_layouts() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(53);
        // (batch, h, w, ca, cb, flat b): channel counts that are and are not multiples of
        // 4, so the inputs and output are held as [B*h*w, C] or [B, h*w*C]; flat features
        // too; and a flat b (a conditional model's classes) beside every pixel of an image.
        for (batch, h, w, ca, cb, flat_b) in [
            (2, 3, 3, 1, 4, false),
            (3, 2, 5, 8, 4, false),
            (2, 1, 1, 10, 7, false),
            (1, 4, 4, 3, 3, false),
            (2, 3, 3, 1, 10, true),
            (2, 4, 4, 8, 3, true),
            (3, 2, 2, 3, 10, true),
        ] {
            let (sa, sb) = (
                Shape { h, w, c: ca },
                match flat_b {
                    true => Shape { h: 1, w: 1, c: cb },
                    false => Shape { h, w, c: cb },
                },
            );
            let so = Shape { h, w, c: ca + cb };
            let layout = |s: Shape| vae_gpu::graph::Layout::of(s);
            let mat = |s: Shape, data: Option<&[f32]>| {
                let l = layout(s);
                match data {
                    Some(d) => upload(gpu, batch * l.rows, l.cols, d),
                    None => Matrix::zeros(gpu, batch * l.rows, l.cols, "m").unwrap(),
                }
            };
            let (a32, a) = rng.vec(batch * sa.numel(), -1.0, 1.0);
            let (b32, b) = rng.vec(batch * sb.numel(), -1.0, 1.0);
            let (ga, gb, y) = (mat(sa, Some(&a32)), mat(sb, Some(&b32)), mat(so, None));
            let view = |m, shape| ImageView { m, batch, shape };
            let fwd = [
                tensor::copy_channels(
                    gpu,
                    view(&ga, sa),
                    0,
                    view(&y, so),
                    0,
                    GradEpilogue::default(),
                )
                .unwrap(),
                tensor::copy_channels(
                    gpu,
                    view(&gb, sb),
                    0,
                    view(&y, so),
                    ca,
                    GradEpilogue::default(),
                )
                .unwrap(),
            ];
            gpu.run(&fwd.iter().collect::<Vec<_>>()).unwrap();
            let want = cpu::tensor::concat(&a, ca, &b, cb);
            let what = format!("concat {batch}x{h}x{w}x({ca}+{cb})");
            assert_close(&what, &y.read(gpu).unwrap(), &want, forward_tol(&want));
            if flat_b {
                // The condition is an input of the graph: it takes no gradient.
                continue;
            }
            // The gradient of the second input: its channel range of dy, added to what it holds.
            let (dy32, dy) = rng.vec(batch * so.numel(), -1.0, 1.0);
            let (prev32, prev) = rng.vec(batch * sb.numel(), -1.0, 1.0);
            let (gdy, db) = (mat(so, Some(&dy32)), mat(sb, Some(&prev32)));
            let e = GradEpilogue {
                accumulate: true,
                act: None,
            };
            let d = tensor::copy_channels(gpu, view(&gdy, so), ca, view(&db, sb), 0, e).unwrap();
            gpu.run(&[&d]).unwrap();
            let fd = numeric_grad(&b, |b| dot(&dy, &cpu::tensor::concat(&a, ca, b, cb)));
            let want: Vec<f64> = fd.iter().zip(&prev).map(|(g, p)| g + p).collect();
            check_grad(&format!("{what} gradient"), &db.read(gpu).unwrap(), &want);
        }
    });
}

#[test]
fn upsampling_and_its_gradient() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(59);
        for (batch, h, w, c) in [(1, 1, 1, 4), (2, 3, 5, 8), (3, 7, 7, 12)] {
            let s = Shape { h, w, c };
            let (x32, x) = rng.vec(batch * s.numel(), -1.0, 1.0);
            let gx = upload(gpu, batch * h * w, c, &x32);
            let y = Matrix::zeros(gpu, batch * 4 * h * w, c, "y").unwrap();
            gpu.run(&[&tensor::upsample(gpu, &gx, &y, batch, s).unwrap()])
                .unwrap();
            let want = cpu::tensor::upsample(&x, batch, h, w, c);
            let what = format!("upsample {batch}x{h}x{w}x{c}");
            assert_close(&what, &y.read(gpu).unwrap(), &want, forward_tol(&want));
            let (dy32, dy) = rng.vec(batch * 4 * s.numel(), -1.0, 1.0);
            let gdy = upload(gpu, batch * 4 * h * w, c, &dy32);
            // x is a tanh's output here: the derivative 1 - x^2 multiplies the sum.
            let dx = Matrix::zeros(gpu, batch * h * w, c, "dx").unwrap();
            let e = GradEpilogue {
                accumulate: false,
                act: Some(InputActivation {
                    act: Activation::Tanh,
                    output: &gx,
                }),
            };
            gpu.run(&[&tensor::upsample_grad(gpu, &gdy, &dx, batch, s, e).unwrap()])
                .unwrap();
            let fd = numeric_grad(&x, |x| dot(&dy, &cpu::tensor::upsample(x, batch, h, w, c)));
            let want: Vec<f64> = fd.iter().zip(&x).map(|(g, v)| g * (1.0 - v * v)).collect();
            check_grad(&format!("{what} gradient"), &dx.read(gpu).unwrap(), &want);
        }
    });
}
