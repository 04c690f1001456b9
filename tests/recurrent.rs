//! The recurrent ops (a GRU layer over a sequence, token embeddings, a vector repeated over
//! steps): GPU forward against the f64 twins on awkward shapes, and every gradient against
//! central differences of the twins, on every adapter.

mod common;

use common::{assert_close, for_each_gpu, numeric_grad, Rng};
use vae_gpu::cpu;
use vae_gpu::cpu::gru::GruWeights;
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::ops::gru::{gru_backward, gru_forward, projections_of, step_rows, GruGrads, GruLayer};
use vae_gpu::ops::sequence::{embed, embed_grad, repeat, repeat_grad, repeat_row};
use vae_gpu::ops::GradEpilogue;

fn upload(gpu: &Gpu, rows: usize, cols: usize, data: &[f32]) -> Matrix {
    Matrix::from_slice(gpu, rows, cols, data, "test").unwrap()
}

fn zeros(gpu: &Gpu, rows: usize, cols: usize) -> Matrix {
    Matrix::zeros(gpu, rows, cols, "test").unwrap()
}

fn u32_buffer(gpu: &Gpu, values: &[u32]) -> Matrix {
    upload(gpu, 1, values.len(), bytemuck::cast_slice(values))
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A GRU layer's problem: random weights, inputs, initial state and lengths (some 0, some
/// the whole sequence) for `records` records in `rows` rows per step (the rest length 0).
struct Case {
    steps: usize,
    rows: usize,
    input: usize,
    hidden: usize,
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    b_ih: Vec<f64>,
    b_hh: Vec<f64>,
    x: Vec<f64>,
    h0: Vec<f64>,
    lengths: Vec<usize>,
}

impl Case {
    fn new(
        rng: &mut Rng,
        gpu: &Gpu,
        steps: usize,
        records: usize,
        input: usize,
        hidden: usize,
    ) -> Case {
        let rows = step_rows(gpu, records);
        let bound = 1.0 / (hidden as f64).sqrt();
        let mut v = |n: usize, s: f64| rng.vec(n, -s, s).1;
        let (w_ih, w_hh) = (v(3 * hidden * input, bound), v(3 * hidden * hidden, bound));
        let (b_ih, b_hh) = (v(3 * hidden, bound), v(3 * hidden, bound));
        let (x, h0) = (v(steps * rows * input, 1.0), v(rows * hidden, 1.0));
        let lengths = (0..rows)
            .map(|b| match b {
                b if b >= records => 0,
                0 => steps,
                1 => 0,
                _ => rng.below(steps + 1),
            })
            .collect();
        Case {
            steps,
            rows,
            input,
            hidden,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            x,
            h0,
            lengths,
        }
    }

    fn forward(
        &self,
        w_ih: &[f64],
        w_hh: &[f64],
        b_ih: &[f64],
        b_hh: &[f64],
        x: &[f64],
        h0: &[f64],
    ) -> Vec<f64> {
        let w = GruWeights {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        };
        cpu::gru::gru_forward(&w, x, h0, &self.lengths, self.hidden)
    }

    fn states(&self) -> Vec<f64> {
        self.forward(
            &self.w_ih, &self.w_hh, &self.b_ih, &self.b_hh, &self.x, &self.h0,
        )
    }
}

/// The GPU layer's matrices for a case.
struct Gpu3 {
    x: Matrix,
    w_ih: Matrix,
    w_hh: Matrix,
    b_ih: Matrix,
    b_hh: Matrix,
    gi: Vec<Matrix>,
    gh: Vec<Matrix>,
    states: Matrix,
    lengths: Matrix,
}

impl Gpu3 {
    /// The matrices, the projections in chunks of `chunk` steps.
    fn new(gpu: &Gpu, c: &Case, chunk: usize) -> Gpu3 {
        let (h, n) = (c.hidden, c.steps * c.rows);
        let mut states = narrow(&c.h0);
        states.resize((n + c.rows) * h, 0.0);
        let lengths: Vec<u32> = c.lengths.iter().map(|&l| l as u32).collect();
        Gpu3 {
            x: upload(gpu, n, c.input, &narrow(&c.x)),
            w_ih: upload(gpu, 3 * h, c.input, &narrow(&c.w_ih)),
            w_hh: upload(gpu, 3 * h, h, &narrow(&c.w_hh)),
            b_ih: upload(gpu, 1, 3 * h, &narrow(&c.b_ih)),
            b_hh: upload(gpu, 1, 3 * h, &narrow(&c.b_hh)),
            gi: projections_of(gpu, c.steps, c.rows, h, chunk, "gi").unwrap(),
            gh: projections_of(gpu, c.steps, c.rows, h, chunk, "gh").unwrap(),
            states: upload(gpu, n + c.rows, h, &states),
            lengths: u32_buffer(gpu, &lengths),
        }
    }

    fn layer<'a>(&'a self, c: &Case) -> GruLayer<'a> {
        GruLayer {
            steps: c.steps,
            batch: c.rows,
            x: &self.x,
            w_ih: &self.w_ih,
            w_hh: &self.w_hh,
            b_ih: &self.b_ih,
            b_hh: &self.b_hh,
            gi: &self.gi,
            gh: &self.gh,
            states: &self.states,
            lengths: &self.lengths.buffer,
        }
    }
}

/// Awkward GRU shapes (steps, records, input, hidden) for the twins' parity.
const SHAPES: [(usize, usize, usize, usize); 7] = [
    (1, 1, 1, 1),
    (3, 7, 5, 3),
    (5, 33, 7, 9),
    (9, 2, 31, 17),
    (2, 129, 4, 65),
    (40, 5, 3, 33),
    (7, 64, 64, 64),
];

/// Every state against the twin: |gpu - cpu| <= 2e-5 (1 + input + hidden), f32 sums of that
/// many terms per gate, over sequences up to 40 steps (the state is bounded by 1 in size
/// after the first step, so errors do not grow with it); the projections in one chunk, and
/// in chunks of 3 steps (the last one shorter where 3 does not divide the steps).
#[test]
fn gru_forward_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(61);
        for (i, (steps, records, input, hidden)) in SHAPES.into_iter().enumerate() {
            let c = Case::new(&mut rng, gpu, steps, records, input, hidden);
            let chunk = if i % 2 == 0 { steps } else { 3 };
            let g = Gpu3::new(gpu, &c, chunk);
            let ds = gru_forward(gpu, &g.layer(&c)).unwrap();
            gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
            let tol = 2e-5 * (1 + input + hidden) as f64;
            assert_close(
                &format!("gru T{steps} B{records} I{input} H{hidden} states"),
                &g.states.read(gpu).unwrap(),
                &c.states(),
                |_| tol,
            );
        }
    });
}

/// The GPU layer's gradients of L = sum(Gy * h_1..h_T) + sum(Gf * h_T) (either term
/// absent), the projections in chunks of `chunk` steps, read back as the twin's
/// `GruGradients` lays them out. With `through` = (P, Y), dx starts at P and takes the
/// epilogue of an input from a fused sigmoid with output Y: dx = (P + dx) Y (1 - Y).
fn gpu_gradients(
    gpu: &Gpu,
    c: &Case,
    chunk: usize,
    (gy, gf): (Option<&[f32]>, Option<&[f32]>),
    through: Option<(&[f32], &[f32])>,
) -> cpu::gru::GruGradients {
    use vae_gpu::ops::gemm::InputActivation;
    use vae_gpu::ops::Activation;
    let (h, n, rows, steps) = (c.hidden, c.steps * c.rows, c.rows, c.steps);
    let g = Gpu3::new(gpu, c, chunk);
    let layer = g.layer(c);
    let dy = gy.map(|v| upload(gpu, n, h, v));
    let carry = match gf {
        Some(v) => upload(gpu, rows, h, v),
        None => zeros(gpu, rows, h),
    };
    let (dgi, dgh, dx) = (
        projections_of(gpu, steps, rows, h, chunk, "dgi").unwrap(),
        projections_of(gpu, steps, rows, h, chunk, "dgh").unwrap(),
        match through {
            Some((p, _)) => upload(gpu, n, c.input, p),
            None => zeros(gpu, n, c.input),
        },
    );
    let out = through.map(|(_, y)| upload(gpu, n, c.input, y));
    let epilogue = GradEpilogue {
        accumulate: through.is_some(),
        act: out.as_ref().map(|output| InputActivation {
            act: Activation::Sigmoid,
            output,
        }),
    };
    let (dw_ih, dw_hh) = (zeros(gpu, 3 * h, c.input), zeros(gpu, 3 * h, h));
    let (db_ih, db_hh) = (zeros(gpu, 1, 3 * h), zeros(gpu, 1, 3 * h));
    let grads = GruGrads {
        dy: dy.as_ref(),
        carry: &carry,
        final_grad: gf.is_some(),
        dgi: &dgi,
        dgh: &dgh,
        dx: Some((&dx, epilogue)),
        dw_ih: &dw_ih,
        dw_hh: &dw_hh,
        db_ih: &db_ih,
        db_hh: &db_hh,
    };
    let mut ds = gru_forward(gpu, &layer).unwrap();
    ds.extend(gru_backward(gpu, &layer, &grads).unwrap());
    gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
    let wide = |m: &Matrix| m.read(gpu).unwrap().into_iter().map(f64::from).collect();
    cpu::gru::GruGradients {
        dx: wide(&dx),
        dh0: wide(&carry),
        dw_ih: wide(&dw_ih),
        dw_hh: wide(&dw_hh),
        db_ih: wide(&db_ih),
        db_hh: wide(&db_hh),
    }
}

/// The twin's gradients of the same loss.
fn twin_gradients(c: &Case, (gy, gf): (Option<&[f64]>, Option<&[f64]>)) -> cpu::gru::GruGradients {
    let w = GruWeights {
        w_ih: &c.w_ih,
        w_hh: &c.w_hh,
        b_ih: &c.b_ih,
        b_hh: &c.b_hh,
    };
    let states = c.states();
    cpu::gru::gru_backward(&w, (&c.x, &states, &c.lengths), c.hidden, (gy, gf))
}

/// The six gradients by name, for checks that walk them.
fn named(g: &cpu::gru::GruGradients) -> [(&'static str, &[f64]); 6] {
    [
        ("dx", &g.dx),
        ("dh0", &g.dh0),
        ("dw_ih", &g.dw_ih),
        ("dw_hh", &g.dw_hh),
        ("db_ih", &g.db_ih),
        ("db_hh", &g.db_hh),
    ]
}

/// L = sum(Gy * h_1..h_T) + sum(Gf * h_T): every gradient of the layer (inputs, h0, both
/// weights, both biases) from the GPU and from the twin's backward against central
/// differences of the twin's forward, with and without the output gradient and the last
/// state's, the projections in chunks of 4, 2 and 1 steps (the weight gradients summed
/// over chunks); |gpu - fd| <= 1e-4 |fd| + 2e-4, |twin - fd| <= 1e-6 (1 + |fd|).
#[test]
fn gru_gradients() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(67);
        for (case, (steps, records, input, hidden)) in [(4, 3, 3, 5), (6, 2, 4, 3), (1, 5, 2, 4)]
            .into_iter()
            .enumerate()
        {
            let c = Case::new(&mut rng, gpu, steps, records, input, hidden);
            let (h, n, rows) = (hidden, steps * c.rows, c.rows);
            let (with_dy, with_final) = [(true, true), (false, true), (true, false)][case];
            let (gy32, gy) = rng.vec(n * h, -1.0, 1.0);
            let (gf32, gf) = rng.vec(rows * h, -1.0, 1.0);
            let loss = |states: &[f64]| {
                let outputs = &states[rows * h..];
                let last = &states[n * h..];
                f64::from(u8::from(with_dy)) * dot(outputs, &gy)
                    + f64::from(u8::from(with_final)) * dot(last, &gf)
            };
            let chunk = [4, 2, 1][case];
            let on_gpu = gpu_gradients(
                gpu,
                &c,
                chunk,
                (
                    with_dy.then_some(&gy32[..]),
                    with_final.then_some(&gf32[..]),
                ),
                None,
            );
            let twin = twin_gradients(
                &c,
                (with_dy.then_some(&gy[..]), with_final.then_some(&gf[..])),
            );
            let fd = cpu::gru::GruGradients {
                dx: numeric_grad(&c.x, 1e-6, |x| {
                    loss(&c.forward(&c.w_ih, &c.w_hh, &c.b_ih, &c.b_hh, x, &c.h0))
                }),
                dh0: numeric_grad(&c.h0, 1e-6, |h0| {
                    loss(&c.forward(&c.w_ih, &c.w_hh, &c.b_ih, &c.b_hh, &c.x, h0))
                }),
                dw_ih: numeric_grad(&c.w_ih, 1e-6, |w| {
                    loss(&c.forward(w, &c.w_hh, &c.b_ih, &c.b_hh, &c.x, &c.h0))
                }),
                dw_hh: numeric_grad(&c.w_hh, 1e-6, |w| {
                    loss(&c.forward(&c.w_ih, w, &c.b_ih, &c.b_hh, &c.x, &c.h0))
                }),
                db_ih: numeric_grad(&c.b_ih, 1e-6, |b| {
                    loss(&c.forward(&c.w_ih, &c.w_hh, b, &c.b_hh, &c.x, &c.h0))
                }),
                db_hh: numeric_grad(&c.b_hh, 1e-6, |b| {
                    loss(&c.forward(&c.w_ih, &c.w_hh, &c.b_ih, b, &c.x, &c.h0))
                }),
            };
            let label = format!("case {case} T{steps} B{records} I{input} H{hidden} dy {with_dy} final {with_final}");
            for (((what, got), (_, want)), (_, fd)) in
                named(&on_gpu).into_iter().zip(named(&twin)).zip(named(&fd))
            {
                let narrow: Vec<f32> = got.iter().map(|&v| v as f32).collect();
                assert_close(&format!("{label} gpu {what}"), &narrow, fd, |i| {
                    1e-4 * fd[i].abs() + 2e-4
                });
                for (i, (&t, &f)) in want.iter().zip(fd).enumerate() {
                    assert!(
                        (t - f).abs() <= 1e-6 * (1.0 + f.abs()),
                        "{label} twin {what}[{i}]: {t} against finite differences {f}"
                    );
                }
            }
        }
    });
}

/// The GPU backward against the twin's on shapes too large for finite differences and
/// awkward for every tile: up to 40 steps, 129 records, 65 hidden units, records of every
/// length. |gpu - twin| <= 5e-6 max |twin| per gradient: f32 sums over the gates, the
/// steps and (the weights') every row, measured at most 4.2e-7 of the largest.
#[test]
fn gru_backward_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(71);
        for (i, (steps, records, input, hidden)) in SHAPES.into_iter().enumerate() {
            let c = Case::new(&mut rng, gpu, steps, records, input, hidden);
            let (n, rows) = (steps * c.rows, c.rows);
            let (gy32, gy) = rng.vec(n * hidden, -1.0, 1.0);
            let (gf32, gf) = rng.vec(rows * hidden, -1.0, 1.0);
            let chunk = if i % 2 == 0 { steps } else { 3 };
            let on_gpu = gpu_gradients(gpu, &c, chunk, (Some(&gy32), Some(&gf32)), None);
            let twin = twin_gradients(&c, (Some(&gy), Some(&gf)));
            for ((what, got), (_, want)) in named(&on_gpu).into_iter().zip(named(&twin)) {
                let narrow: Vec<f32> = got.iter().map(|&v| v as f32).collect();
                let largest = want.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
                assert_close(
                    &format!("gru T{steps} B{records} I{input} H{hidden} {what}"),
                    &narrow,
                    want,
                    |_| 5e-6 * largest,
                );
            }
        }
    });
}

/// One row of a matrix repeated over every row of another (each row picked in turn, the
/// launch's params rewritten between submits): exact copies, on awkward widths.
#[test]
fn repeat_row_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(73);
        for (src_rows, rows, width) in [(1, 1, 1), (5, 7, 3), (33, 129, 17)] {
            let (s32, src) = rng.vec(src_rows * width, -1.0, 1.0);
            let (gsrc, gout) = (upload(gpu, src_rows, width, &s32), zeros(gpu, rows, width));
            let mut d = repeat_row(gpu, &gsrc, &gout).unwrap();
            for row in [0, src_rows / 2, src_rows - 1] {
                d.set(gpu, row).unwrap();
                gpu.run(&[&d.dispatch]).unwrap();
                let one = &src[row * width..][..width];
                assert_close(
                    &format!("row {row} of {src_rows} x {width} over {rows} rows"),
                    &gout.read(gpu).unwrap(),
                    &cpu::sequence::repeat(one, width, rows),
                    |_| 0.0,
                );
            }
            assert!(d.set(gpu, src_rows).is_err(), "a row past the source");
        }
    });
}

/// Embedding into a column range of a wider matrix (a token past the table gives zeros) and
/// a vector repeated over steps beside it: exact copies; their gradients (the embedding's a
/// scatter-add over 40,000 rows, more than one launch sums) within f32 summation error.
#[test]
fn embed_and_repeat_match_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(71);
        for (rows_per_step, steps, vocab, width, zw) in [
            (1, 1, 1, 1, 1),
            (3, 5, 7, 5, 3),
            (33, 9, 30, 31, 17),
            (16, 2500, 9, 4, 2),
        ] {
            let rows = rows_per_step * steps;
            let col = 2;
            let wide = col + width + zw + 1;
            let tokens: Vec<u32> = (0..rows)
                .map(|r| {
                    if r % 11 == 10 {
                        vocab as u32
                    } else {
                        rng.below(vocab) as u32
                    }
                })
                .collect();
            let (t32, table) = rng.vec(vocab * width, -1.0, 1.0);
            let (z32, z) = rng.vec(rows_per_step * zw, -1.0, 1.0);
            let (d32, dout) = rng.vec(rows * wide, -1.0, 1.0);
            let gtok = u32_buffer(gpu, &tokens);
            let (gtable, gz, gout, gdout) = (
                upload(gpu, vocab, width, &t32),
                upload(gpu, rows_per_step, zw, &z32),
                zeros(gpu, rows, wide),
                upload(gpu, rows, wide, &d32),
            );
            let (gdtable, gdz) = (
                zeros(gpu, vocab, width),
                upload(gpu, rows_per_step, zw, &vec![1.0; rows_per_step * zw]),
            );
            let mut ds = vec![
                embed(gpu, &gtok.buffer, 0, &gtable, &gout, col).unwrap(),
                repeat(gpu, &gz, &gout, col + width).unwrap(),
            ];
            ds.extend(embed_grad(gpu, &gtok.buffer, &gdout, col, &gdtable, false).unwrap());
            ds.extend(repeat_grad(gpu, &gdout, col + width, &gdz, true).unwrap());
            gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
            let label =
                format!("{rows_per_step}x{steps} rows, vocab {vocab}, width {width}, z {zw}");
            // The forward: the two ops' columns, zeros elsewhere.
            let (e, r) = (
                cpu::sequence::embed(&tokens, &table, width),
                cpu::sequence::repeat(&z, zw, rows),
            );
            let want: Vec<f64> = (0..rows)
                .flat_map(|i| {
                    let mut row = vec![0.0; wide];
                    row[col..col + width].copy_from_slice(&e[i * width..][..width]);
                    row[col + width..col + width + zw].copy_from_slice(&r[i * zw..][..zw]);
                    row
                })
                .collect();
            assert_close(
                &format!("{label} forward"),
                &gout.read(gpu).unwrap(),
                &want,
                |_| 0.0,
            );
            // The gradients: of L = sum(dout * out) with respect to the table and z.
            let fd_table = numeric_grad(&table, 1e-3, |t| {
                let e = cpu::sequence::embed(&tokens, t, width);
                (0..rows)
                    .map(|i| dot(&e[i * width..][..width], &dout[i * wide + col..][..width]))
                    .sum()
            });
            let tol = 2e-6 * rows as f64;
            assert_close(
                &format!("{label} d table"),
                &gdtable.read(gpu).unwrap(),
                &fd_table,
                |_| tol,
            );
            let fd_z = numeric_grad(&z, 1e-3, |z| {
                let r = cpu::sequence::repeat(z, zw, rows);
                (0..rows)
                    .map(|i| dot(&r[i * zw..][..zw], &dout[i * wide + col + width..][..zw]))
                    .sum()
            });
            // Accumulated onto the ones it held.
            let want_z: Vec<f64> = fd_z.iter().map(|v| v + 1.0).collect();
            assert_close(
                &format!("{label} d z"),
                &gdz.read(gpu).unwrap(),
                &want_z,
                |_| tol,
            );
        }
    });
}

/// Per-token cross-entropy over time-major rows: each record's losses land side by side
/// (record b's step t at b * steps + t), padding labels give nothing.
#[test]
fn token_xent_lays_losses_out_per_record() {
    use vae_gpu::ops::softmax::softmax_xent;
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(73);
        let (steps, records, classes) = (5, 3, 7);
        let rows = steps * records;
        let (l32, l) = rng.vec(rows * classes, -5.0, 5.0);
        let labels: Vec<u32> = (0..rows)
            .map(|r| {
                if r % 4 == 3 {
                    classes as u32
                } else {
                    rng.below(classes) as u32
                }
            })
            .collect();
        let (gl, gy) = (upload(gpu, rows, classes, &l32), u32_buffer(gpu, &labels));
        let (gg, gloss) = (zeros(gpu, rows, classes), zeros(gpu, 1, rows));
        let mut d = softmax_xent(gpu, &gl, &gy.buffer, &gg, &gloss, rows, 0.5).unwrap();
        d.per_record(gpu, steps).unwrap();
        gpu.run(&[&d.dispatch]).unwrap();
        let (loss, grad) = cpu::loss::softmax_xent(&l, &labels, classes, 0.5);
        let want: Vec<f64> = (0..rows)
            .map(|i| loss[(i % steps) * records + i / steps])
            .collect();
        assert_close("per-record losses", &gloss.read(gpu).unwrap(), &want, |i| {
            1e-5 * want[i].abs() + 1e-5
        });
        assert_close("gradient", &gg.read(gpu).unwrap(), &grad, |i| {
            1e-5 * grad[i].abs() + 1e-6
        });
    });
}

/// The input gradient's epilogue over chunked projections (a GRU reading a Linear with a
/// fused sigmoid, in chunks of 2 of 5 steps): each chunk adds its rows to what dx holds and
/// multiplies by the sigmoid's derivative at the same rows of its output,
/// dx = (P + dx_plain) * Y (1 - Y).
#[test]
fn gru_input_gradient_takes_its_epilogue_in_chunks() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(71);
        let c = Case::new(&mut rng, gpu, 5, 3, 4, 3);
        let n = c.steps * c.rows;
        let (gy32, _) = rng.vec(n * c.hidden, -1.0, 1.0);
        let plain = gpu_gradients(gpu, &c, 2, (Some(&gy32[..]), None), None);
        let (p32, p) = rng.vec(n * c.input, -1.0, 1.0);
        let (y32, y) = rng.vec(n * c.input, 0.1, 0.9);
        let through = gpu_gradients(gpu, &c, 2, (Some(&gy32[..]), None), Some((&p32, &y32)));
        let want: Vec<f64> = (0..n * c.input)
            .map(|i| (p[i] + plain.dx[i]) * y[i] * (1.0 - y[i]))
            .collect();
        let got: Vec<f32> = through.dx.iter().map(|&v| v as f32).collect();
        assert_close("dx through the epilogue", &got, &want, |i| {
            1e-5 * (1.0 + want[i].abs())
        });
    });
}
