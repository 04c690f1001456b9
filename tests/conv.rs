//! Convolution kernels: GPU (im2col / col2im + GEMM) against the direct-summation CPU twin
//! on 24 random configurations each (odd sizes, stride 1-2, padding 0-2, channels 1-64,
//! kernel 1-5; tolerance 1e-5 * sum|x w| + 1e-5), and finite-difference checks of every
//! convolution gradient (tolerance 1e-4 * |fd| + 1e-4), on every adapter found.

mod common;

use common::{assert_close, for_each_gpu, Rng};
use vae_gpu::cpu;
use vae_gpu::gpu::texture::Reads;
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::ops::conv::{col2im_with, im2col_with, Col2imEpilogue};
use vae_gpu::ops::conv::{
    conv2d, conv2d_backward, conv2d_implicit, conv_transpose2d, conv_transpose2d_backward, gpu_col,
    ConvGeom, ConvIo, Shape,
};
use vae_gpu::ops::elementwise::act_backward;
use vae_gpu::ops::gemm::InputActivation;
use vae_gpu::ops::Activation;
use vae_gpu::ops::GradEpilogue;

struct Case {
    batch: usize,
    input: Shape,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    act: Activation,
}

fn cases(rng: &mut Rng, transposed: bool) -> Vec<Case> {
    let acts = [
        Activation::Identity,
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
    ];
    let mut v = Vec::new();
    while v.len() < 24 {
        let i = v.len();
        let k = 1 + rng.below(5);
        let stride = 1 + rng.below(2);
        let pad = rng.below(3).min(k - 1);
        let (h, w) = (1 + rng.below(12), 1 + rng.below(12));
        let fits = if transposed {
            ConvGeom::transposed_output(h, w, k, stride, pad).is_some()
        } else {
            h + 2 * pad >= k && w + 2 * pad >= k
        };
        if !fits {
            continue;
        }
        let chans = [1, 3, 7, 16, 33, 64];
        v.push(Case {
            batch: 1 + rng.below(3),
            input: Shape {
                h,
                w,
                c: chans[i % 6],
            },
            cout: chans[(i * 5 + 1) % 6],
            k,
            stride,
            pad,
            act: acts[i % 4],
        });
    }
    v
}

fn upload(gpu: &Gpu, rows: usize, cols: usize, data: &[f32]) -> Matrix {
    Matrix::from_slice(gpu, rows, cols, data, "test").unwrap()
}

/// Runs the GPU convolution of `case` (and optionally its backward with upstream gradient
/// `g`), returning (y, dx, dw, db) read back.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn run_gpu(
    gpu: &Gpu,
    case: &Case,
    transposed: bool,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    g: Option<&[f32]>,
    image_rows: bool,
    x_act: Option<Activation>,
) -> (Vec<f32>, Option<(Vec<f32>, Vec<f32>, Vec<f32>)>) {
    let s = case.input;
    let (wr, wc) = if transposed {
        (s.c, case.cout * case.k * case.k)
    } else {
        (case.cout, s.c * case.k * case.k)
    };
    // PyTorch's weight order to the GPU's (taps channel-fastest) and back.
    let taps = case.k * case.k;
    let per_tap = wc / taps;
    let to_gpu = |v: &[f32]| {
        let mut out = vec![0.0; v.len()];
        for (i, &x) in v.iter().enumerate() {
            out[(i / wc) * wc + gpu_col(i % wc, per_tap, taps)] = x;
        }
        out
    };
    let to_torch = |v: Vec<f32>| {
        (0..v.len())
            .map(|i| v[(i / wc) * wc + gpu_col(i % wc, per_tap, taps)])
            .collect::<Vec<f32>>()
    };
    let (gw, gb) = (
        upload(gpu, wr, wc, &to_gpu(w)),
        upload(gpu, 1, case.cout, b),
    );
    let (geom, out_shape) = if transposed {
        let (oh, ow) =
            ConvGeom::transposed_output(s.h, s.w, case.k, case.stride, case.pad).unwrap();
        let out = Shape {
            h: oh,
            w: ow,
            c: case.cout,
        };
        let g = ConvGeom::new(case.batch, out, case.k, case.stride, case.pad).unwrap();
        assert_eq!((g.oh, g.ow), (s.h, s.w));
        (g, out)
    } else {
        let g = ConvGeom::new(case.batch, s, case.k, case.stride, case.pad).unwrap();
        (
            g,
            Shape {
                h: g.oh,
                w: g.ow,
                c: case.cout,
            },
        )
    };
    let cols = Matrix::zeros(gpu, geom.col_rows(), geom.col_cols(), "cols").unwrap();
    let io = ConvIo {
        geom,
        weight: &gw,
        bias: &gb,
        cols: &cols,
    };
    let b_rows = case.batch * out_shape.h * out_shape.w;
    let y = Matrix::zeros(gpu, b_rows, out_shape.c, "y").unwrap();
    // The conv input goes in either image layout; the transposed conv's is a GEMM operand.
    let gx = if image_rows || transposed {
        upload(gpu, case.batch * s.h * s.w, s.c, x)
    } else {
        upload(gpu, case.batch, s.numel(), x)
    };
    let mut ds = if transposed {
        conv_transpose2d(gpu, &io, &gx, &y, case.act)
    } else {
        conv2d(gpu, &io, &gx, &y, case.act)
    }
    .unwrap();
    let Some(g) = g else {
        gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
        return (y.read(gpu).unwrap(), None);
    };
    let dy = upload(gpu, b_rows, out_shape.c, g);
    let (dw, db) = (
        Matrix::zeros(gpu, wr, wc, "dw").unwrap(),
        Matrix::zeros(gpu, 1, case.cout, "db").unwrap(),
    );
    let dx = Matrix::zeros(gpu, gx.rows, gx.cols, "dx").unwrap();
    let dcols = Matrix::zeros(gpu, geom.col_rows(), geom.col_cols(), "dcols").unwrap();
    ds.push(act_backward(gpu, &y, &dy, case.act).unwrap());
    // With x_act, x is that activation's output and dx is taken through it, fused.
    let fused = GradEpilogue {
        accumulate: false,
        act: x_act.map(|act| InputActivation { act, output: &gx }),
    };
    ds.extend(
        if transposed {
            conv_transpose2d_backward(gpu, &io, &gx, &dy, &dcols, (&dw, &db), Some(&dx), fused)
        } else {
            conv2d_backward(gpu, &io, &dy, (&dw, &db), Some((&dcols, &dx)), fused)
        }
        .unwrap(),
    );
    gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
    (
        y.read(gpu).unwrap(),
        Some((
            dx.read(gpu).unwrap(),
            to_torch(dw.read(gpu).unwrap()),
            db.read(gpu).unwrap(),
        )),
    )
}

/// conv2d through the implicit GEMM, when the device and layout allow it.
fn run_implicit(
    gpu: &Gpu,
    case: &Case,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    image_rows: bool,
) -> Option<Vec<f32>> {
    let s = case.input;
    let (wr, wc) = (case.cout, s.c * case.k * case.k);
    let taps = case.k * case.k;
    let mut gw = vec![0.0; w.len()];
    for (i, &v) in w.iter().enumerate() {
        gw[(i / wc) * wc + gpu_col(i % wc, s.c, taps)] = v;
    }
    let geom = ConvGeom::new(case.batch, s, case.k, case.stride, case.pad).unwrap();
    let (weight, bias) = (upload(gpu, wr, wc, &gw), upload(gpu, 1, case.cout, b));
    let cols = Matrix::zeros(gpu, 1, 4, "unused").unwrap();
    let io = ConvIo {
        geom,
        weight: &weight,
        bias: &bias,
        cols: &cols,
    };
    let gx = if image_rows {
        upload(gpu, case.batch * s.h * s.w, s.c, x)
    } else {
        upload(gpu, case.batch, s.numel(), x)
    };
    let y = Matrix::zeros(gpu, geom.col_rows(), case.cout, "y").unwrap();
    let d = conv2d_implicit(gpu, &io.geom, (io.weight, io.bias), &gx, &y, case.act).unwrap()?;
    gpu.run(&[&d]).unwrap();
    Some(y.read(gpu).unwrap())
}

fn cpu_forward(
    case: &Case,
    transposed: bool,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    act: Activation,
) -> Vec<f64> {
    let f = if transposed {
        cpu::conv::conv_transpose2d
    } else {
        cpu::conv::conv2d
    };
    f(
        x,
        case.input,
        case.batch,
        w,
        b,
        case.cout,
        case.k,
        case.stride,
        case.pad,
        act,
    )
    .0
}

fn parity(transposed: bool, seed: u64) {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(seed);
        for (i, case) in cases(&mut rng, transposed).iter().enumerate() {
            let s = case.input;
            let wlen = s.c * case.cout * case.k * case.k;
            let (x32, x) = rng.vec(case.batch * s.numel(), -1.0, 1.0);
            let (w32, w) = rng.vec(wlen, -1.0, 1.0);
            let (b32, b) = rng.vec(case.cout, -1.0, 1.0);
            let (got, _) = run_gpu(
                gpu,
                case,
                transposed,
                &x32,
                &w32,
                &b32,
                None,
                i % 2 == 1,
                None,
            );
            let want = cpu_forward(case, transposed, &x, &w, &b, case.act);
            let abs = |v: &[f64]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
            let scale = cpu_forward(
                case,
                transposed,
                &abs(&x),
                &abs(&w),
                &abs(&b),
                Activation::Identity,
            );
            let label = format!(
                "{} case {i}: batch {} {:?} -> {} k {} s {} p {} {:?}",
                if transposed {
                    "conv_transpose2d"
                } else {
                    "conv2d"
                },
                case.batch,
                s,
                case.cout,
                case.k,
                case.stride,
                case.pad,
                case.act
            );
            assert_close(&label, &got, &want, |j| 1e-5 * scale[j] + 1e-5);
            if !transposed {
                if let Some(implicit) = run_implicit(gpu, case, &x32, &w32, &b32, i % 2 == 1) {
                    assert_close(&format!("{label} implicit GEMM"), &implicit, &want, |j| {
                        1e-5 * scale[j] + 1e-5
                    });
                }
            }
        }
    });
}

#[test]
fn conv2d_matches_cpu() {
    parity(false, 51);
}

#[test]
fn conv_transpose2d_matches_cpu() {
    parity(true, 53);
}

fn numeric_grad(v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    common::numeric_grad(v, 1e-6, f)
}

fn check(what: &str, got: &[f32], fd: &[f64]) {
    for (i, (&g, &n)) in got.iter().zip(fd).enumerate() {
        assert!(
            (f64::from(g) - n).abs() <= 1e-4 * n.abs() + 1e-4,
            "{what}[{i}]: gpu {g} vs finite difference {n}"
        );
    }
}

fn gradcheck(transposed: bool) {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(57);
        let cases = [
            Case {
                batch: 2,
                input: Shape { h: 5, w: 4, c: 3 },
                cout: 2,
                k: 3,
                stride: 2,
                pad: 1,
                act: Activation::Tanh,
            },
            Case {
                batch: 1,
                input: Shape { h: 4, w: 4, c: 2 },
                cout: 3,
                k: 4,
                stride: 2,
                pad: 1,
                act: Activation::Identity,
            },
            Case {
                batch: 2,
                input: Shape { h: 3, w: 5, c: 1 },
                cout: 2,
                k: 2,
                stride: 1,
                pad: 0,
                act: Activation::Sigmoid,
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            let s = case.input;
            // Case 0's input is tanh(p), and its dx is taken through tanh in the fused
            // col2im / GEMM epilogue: checked against d loss / d p.
            let x_act = (i == 0).then_some(Activation::Tanh);
            let (_, p) = rng.vec(case.batch * s.numel(), -1.0, 1.0);
            let input = |p: &[f64]| -> Vec<f64> {
                p.iter()
                    .map(|&v| x_act.map_or(v, |a| cpu::act_forward(v, a)))
                    .collect()
            };
            let x = input(&p);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let (w32, w) = rng.vec(s.c * case.cout * case.k * case.k, -1.0, 1.0);
            let (b32, b) = rng.vec(case.cout, -1.0, 1.0);
            let ylen = cpu_forward(case, transposed, &x, &w, &b, case.act).len();
            let (g32, g) = rng.vec(ylen, -1.0, 1.0);
            let (_, grads) = run_gpu(
                gpu,
                case,
                transposed,
                &x32,
                &w32,
                &b32,
                Some(&g32),
                i % 2 == 0,
                x_act,
            );
            let (dx, dw, db) = grads.unwrap();
            let loss = |x: &[f64], w: &[f64], b: &[f64]| {
                cpu_forward(case, transposed, x, w, b, case.act)
                    .iter()
                    .zip(&g)
                    .map(|(y, g)| y * g)
                    .sum::<f64>()
            };
            let label = format!(
                "{} case {i}",
                if transposed {
                    "conv_transpose2d"
                } else {
                    "conv2d"
                }
            );
            check(
                &format!("{label} dx"),
                &dx,
                &numeric_grad(&p, |p| loss(&input(p), &w, &b)),
            );
            check(
                &format!("{label} dw"),
                &dw,
                &numeric_grad(&w, |w| loss(&x, w, &b)),
            );
            check(
                &format!("{label} db"),
                &db,
                &numeric_grad(&b, |b| loss(&x, &w, b)),
            );
        }
    });
}

#[test]
fn conv2d_gradients() {
    gradcheck(false);
}

#[test]
fn conv_transpose2d_gradients() {
    gradcheck(true);
}

/// im2col and col2im reading their source from a texture equal the buffer reads exactly
/// (the buffer kernels are checked against the CPU above), vec4 and scalar kernels alike.
#[test]
fn texture_reads_equal_buffer_reads() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(59);
        // Cases run by the vec4 kernels (channels a multiple of 4) and by the scalar ones.
        let mut checked = [0, 0];
        for case in cases(&mut rng, false) {
            let s = case.input;
            let g = ConvGeom::new(case.batch, s, case.k, case.stride, case.pad).unwrap();
            let (x32, _) = rng.vec(case.batch * s.numel(), -1.0, 1.0);
            let (c32, _) = rng.vec(g.col_rows() * g.col_cols(), -1.0, 1.0);
            let (b32, _) = rng.vec(s.c, -1.0, 1.0);
            let image = upload(gpu, case.batch, s.numel(), &x32);
            let cols = upload(gpu, g.col_rows(), g.col_cols(), &c32);
            let bias = upload(gpu, 1, s.c, &b32);
            // col2im plain, with a bias and an activation, and times an activation's
            // derivative at `image` (its output).
            let epilogues = [
                Col2imEpilogue::Bias(None, Activation::Identity),
                Col2imEpilogue::Bias(Some(&bias), Activation::LeakyRelu(0.1)),
                Col2imEpilogue::Grad(GradEpilogue {
                    accumulate: false,
                    act: Some(InputActivation {
                        act: Activation::Relu,
                        output: &image,
                    }),
                }),
            ];
            for (e, epilogue) in epilogues.into_iter().enumerate() {
                let run = |reads| {
                    let out_cols = Matrix::zeros(gpu, g.col_rows(), g.col_cols(), "c").unwrap();
                    let out_image = Matrix::zeros(gpu, case.batch, s.numel(), "i").unwrap();
                    let a = im2col_with(gpu, &g, &image, &out_cols, reads).unwrap();
                    let b = col2im_with(gpu, &g, &cols, &out_image, epilogue, reads).unwrap();
                    gpu.run(&[&a, &b]).unwrap();
                    (out_cols.read(gpu).unwrap(), out_image.read(gpu).unwrap())
                };
                assert_eq!(
                    run(Reads::Buffers),
                    run(Reads::Textures),
                    "{s:?} k {} epilogue {e}",
                    case.k
                );
            }
            checked[usize::from(s.c % 4 != 0)] += 1;
        }
        assert!(checked.iter().all(|&n| n >= 3), "too few cases {checked:?}");
    });
}
