//! GPU vs CPU parity for every kernel, on random and awkward shapes, on every adapter found.
//! Tolerances are stated per test.

mod common;

use common::{assert_close, for_each_gpu, Rng};
use vae_gpu::cpu;
use vae_gpu::data::Dtype;
use vae_gpu::gpu::texture::Reads;
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::ops::adam::{adam_with, AdamConfig};
use vae_gpu::ops::elementwise::{act_backward, act_forward, bias_grad_with};
use vae_gpu::ops::gather::{gather, one_hot, GpuImages};
use vae_gpu::ops::gemm::{gemm_split_k_with, gemm_with, GemmSpec};
use vae_gpu::ops::loss::{loss_with, Likelihood, LossBuffers, LossSettings};
use vae_gpu::ops::sample::{sample_backward, sample_forward, sample_prior, Noise};
use vae_gpu::ops::Activation;

const AWKWARD: [usize; 9] = [1, 2, 3, 7, 31, 33, 64, 65, 129];
const ACTS: [Activation; 5] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
];

fn upload(gpu: &Gpu, rows: usize, cols: usize, data: &[f32]) -> Matrix {
    Matrix::from_slice(gpu, rows, cols, data, "test").unwrap()
}

/// 24 shapes: every awkward size appears in every dimension, plus a VAE-sized product.
fn gemm_shapes(rng: &mut Rng) -> Vec<(usize, usize, usize)> {
    let mut shapes: Vec<_> = (0..AWKWARD.len())
        .map(|i| (AWKWARD[i], AWKWARD[(i + 3) % 9], AWKWARD[(i + 6) % 9]))
        .collect();
    shapes.push((128, 400, 784));
    while shapes.len() < 24 {
        shapes.push((1 + rng.below(150), 1 + rng.below(150), 1 + rng.below(300)));
    }
    shapes
}

/// GEMM: |gpu - cpu| <= 1e-5 * sum_k |a b| + 1e-5 (f32 accumulation over K terms), for every
/// kernel, all four transpose combinations, with and without bias, accumulate, activation
/// and the fused activation backward (act_grad, Y in the bias slot).
#[test]
fn gemm_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(7);
        for path in gpu.gemm_paths() {
            for (case, (m, n, k)) in gemm_shapes(&mut rng).into_iter().enumerate() {
                let spec = GemmSpec {
                    trans_a: case % 2 == 1,
                    trans_b: (case / 2) % 2 == 1,
                    accumulate: case % 3 == 0,
                    act: ACTS[case % 5],
                    act_grad: case % 6 == 5,
                };
                let with_bias = case % 4 != 3 || spec.act_grad;
                let (ar, ac) = if spec.trans_a { (k, m) } else { (m, k) };
                let (br, bc) = if spec.trans_b { (n, k) } else { (k, n) };
                let (a32, a) = rng.vec(ar * ac, -1.0, 1.0);
                let (b32, b) = rng.vec(br * bc, -1.0, 1.0);
                let (c32, c0) = rng.vec(m * n, -1.0, 1.0);
                // A bias row, or for act_grad the activation output Y shaped like C.
                let side_rows = if spec.act_grad { m } else { 1 };
                let (bias32, bias) = rng.vec(side_rows * n, -1.0, 1.0);
                let (ga, gb, gc) = (
                    upload(gpu, ar, ac, &a32),
                    upload(gpu, br, bc, &b32),
                    upload(gpu, m, n, &c32),
                );
                let gbias = upload(gpu, side_rows, n, &bias32);
                let d =
                    gemm_with(gpu, path, &ga, &gb, &gc, with_bias.then_some(&gbias), spec).unwrap();
                gpu.run(&[&d]).unwrap();
                let got = gc.read(gpu).unwrap();
                let mut want = c0.clone();
                cpu::gemm::gemm(
                    &a,
                    &b,
                    &mut want,
                    with_bias.then_some(&bias[..]),
                    m,
                    n,
                    k,
                    &spec,
                );
                // Scale of each output's sum, for the tolerance.
                let mut scale = vec![0.0; m * n];
                let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                let plain = GemmSpec {
                    act: Activation::Identity,
                    accumulate: false,
                    act_grad: false,
                    ..spec
                };
                cpu::gemm::gemm(&abs(&a), &abs(&b), &mut scale, None, m, n, k, &plain);
                assert_close(
                    &format!("{path:?} case {case} [{m}x{n}x{k}] {spec:?} bias {with_bias}"),
                    &got,
                    &want,
                    |i| 1e-5 * scale[i] + 1e-5,
                );
            }
        }
    });
}

/// Split-K (long K, one or two output tiles: weight gradients): the partial products and
/// their sum match the CPU within the GEMM tolerance, and the split happens (three launches)
/// on the kernels that have it, for every transpose combination and a K that is not a
/// multiple of 4 or of the slice.
#[test]
fn split_k_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(13);
        for path in gpu.gemm_paths() {
            for (case, (m, n, k)) in [(32, 16, 5003), (20, 7, 4100), (33, 20, 9000), (5, 64, 2048)]
                .into_iter()
                .enumerate()
            {
                let spec = GemmSpec {
                    trans_a: case % 2 == 0,
                    trans_b: case / 2 == 1,
                    ..Default::default()
                };
                let (ar, ac) = if spec.trans_a { (k, m) } else { (m, k) };
                let (br, bc) = if spec.trans_b { (n, k) } else { (k, n) };
                let (a32, a) = rng.vec(ar * ac, -1.0, 1.0);
                let (b32, b) = rng.vec(br * bc, -1.0, 1.0);
                let (ga, gb) = (upload(gpu, ar, ac, &a32), upload(gpu, br, bc, &b32));
                // C starts as garbage: the sum overwrites it.
                let gc = upload(gpu, m, n, &vec![7.0; m * n]);
                let launches = gemm_split_k_with(gpu, path, &ga, &gb, &gc, spec).unwrap();
                let splits = matches!(
                    path,
                    vae_gpu::gpu::GemmPath::SubgroupTex | vae_gpu::gpu::GemmPath::SubgroupTexNarrow
                );
                assert_eq!(
                    launches.len(),
                    if splits { 3 } else { 1 },
                    "{path:?} case {case}"
                );
                gpu.run(&launches.iter().collect::<Vec<_>>()).unwrap();
                let mut want = vec![0.0; m * n];
                cpu::gemm::gemm(&a, &b, &mut want, None, m, n, k, &spec);
                let mut scale = vec![0.0; m * n];
                let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                cpu::gemm::gemm(&abs(&a), &abs(&b), &mut scale, None, m, n, k, &spec);
                assert_close(
                    &format!("{path:?} split-K case {case} [{m}x{n}x{k}] {spec:?}"),
                    &gc.read(gpu).unwrap(),
                    &want,
                    |i| 1e-5 * scale[i] + 1e-5,
                );
            }
        }
    });
}

/// Activations and bias gradient: 1e-6 relative + 1e-6 (one transcendental per element).
#[test]
fn elementwise_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(11);
        for case in 0..20 {
            let (rows, cols) = (AWKWARD[case % 9], AWKWARD[(case * 5 + 2) % 9] + case);
            let act = ACTS[case % 5];
            let (x32, x) = rng.vec(rows * cols, -4.0, 4.0);
            let (g32, g) = rng.vec(rows * cols, -1.0, 1.0);
            let gx = upload(gpu, rows, cols, &x32);
            let gy = Matrix::zeros(gpu, rows, cols, "y").unwrap();
            let gg = upload(gpu, rows, cols, &g32);
            let gdb = Matrix::zeros(gpu, 1, cols, "db").unwrap();
            let f = act_forward(gpu, &gx, &gy, act).unwrap();
            let b = act_backward(gpu, &gy, &gg, act).unwrap();
            let reads = [Reads::Buffers, Reads::Textures][case % 2];
            let r = bias_grad_with(gpu, reads, &gg, &gdb).unwrap();
            gpu.run(&[&f, &b, &r[0], &r[1]]).unwrap();
            let y: Vec<f64> = x.iter().map(|&v| cpu::act_forward(v, act)).collect();
            let label = format!("case {case} [{rows}x{cols}] {act:?} bias reads {reads:?}");
            assert_close(
                &format!("{label} forward"),
                &gy.read(gpu).unwrap(),
                &y,
                |i| 1e-6 * y[i].abs() + 1e-6,
            );
            let gpu_y: Vec<f64> = gy
                .read(gpu)
                .unwrap()
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let dx: Vec<f64> = (0..g.len())
                .map(|i| g[i] * cpu::act_grad_from_output(gpu_y[i], act))
                .collect();
            assert_close(
                &format!("{label} backward"),
                &gg.read(gpu).unwrap(),
                &dx,
                |i| 1e-6 * dx[i].abs() + 1e-6,
            );
            let db = cpu::bias_grad(&dx, rows, cols);
            assert_close(
                &format!("{label} bias grad"),
                &gdb.read(gpu).unwrap(),
                &db,
                |_| 1e-5 * rows as f64,
            );
        }
        // Unpadded rows a multiple of 4 long: the vec4 backward.
        let (rows, cols) = (9, 12);
        let (y32, y) = rng.vec(rows * cols, -1.0, 1.0);
        let (g32, g) = rng.vec(rows * cols, -1.0, 1.0);
        let (gy, gg) = (upload(gpu, rows, cols, &y32), upload(gpu, rows, cols, &g32));
        gpu.run(&[&act_backward(gpu, &gy, &gg, Activation::Relu).unwrap()])
            .unwrap();
        let want: Vec<f64> = (0..g.len())
            .map(|i| g[i] * cpu::act_grad_from_output(y[i], Activation::Relu))
            .collect();
        assert_close("vec4 act backward", &gg.read(gpu).unwrap(), &want, |_| 1e-7);
        // Few columns of many rows (conv layers): many row chunks per column, both reads.
        let (rows, cols) = (5000, 7);
        let (g32, g) = rng.vec(rows * cols, -1.0, 1.0);
        let gg = upload(gpu, rows, cols, &g32);
        let want = cpu::bias_grad(&g, rows, cols);
        // Unpadded rows of 1 and 3 columns (the last transposed conv's channels), read as
        // runs of whole rows.
        let mut narrow = |c: usize| {
            let (v32, v) = rng.vec(4000 * c, -1.0, 1.0);
            let m = upload(gpu, 1, 4000 * c, &v32);
            (
                Matrix {
                    rows: 4000,
                    cols: c,
                    ld: c,
                    ..m
                },
                cpu::bias_grad(&v, 4000, c),
            )
        };
        let cases = [(gg, want), narrow(1), narrow(3)];
        for (dy, want) in &cases {
            let db = Matrix::zeros(gpu, 1, dy.cols, "db").unwrap();
            for reads in [Reads::Buffers, Reads::Textures] {
                let r = bias_grad_with(gpu, reads, dy, &db).unwrap();
                gpu.run(&r.iter().collect::<Vec<_>>()).unwrap();
                assert_close(
                    &format!("tall bias grad [{}, {}], {reads:?}", dy.rows, dy.cols),
                    &db.read(gpu).unwrap(),
                    want,
                    |_| 1e-6 * dy.rows as f64,
                );
            }
        }
    });
}

/// Sampling: the integer stream is the same, so z and eps differ only by the precision of
/// the GPU's log, cos and exp. Vulkan allows cos an absolute error of 2^-11 (SwiftShader uses
/// it), so the tolerance is 3e-3 * (1 + |value|): far below what a wrong stream would give.
#[test]
fn sample_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(13);
        for case in 0..20 {
            let (rows, z) = (AWKWARD[case % 9], AWKWARD[(case * 7 + 1) % 9].min(65));
            let noise = Noise {
                seed: rng.next_u64(),
                step: case as u32 * 1000,
                stream: case as u32 % 3,
            };
            let (mulv32, mulv) = rng.vec(rows * 2 * z, -3.0, 3.0);
            let (dz32, dz) = rng.vec(rows * z, -1.0, 1.0);
            let gm = upload(gpu, rows, 2 * z, &mulv32);
            let (gz, geps) = (
                Matrix::zeros(gpu, rows, z, "z").unwrap(),
                Matrix::zeros(gpu, rows, z, "eps").unwrap(),
            );
            let gdz = upload(gpu, rows, z, &dz32);
            let gdm = Matrix::zeros(gpu, rows, 2 * z, "dmulv").unwrap();
            let gprior = Matrix::zeros(gpu, rows, z, "prior").unwrap();
            let f = sample_forward(gpu, &gm, &gz, &geps, noise, 1.0).unwrap();
            let b = sample_backward(gpu, &gm, &gdz, &geps, &gdm).unwrap();
            let p = sample_prior(gpu, &gprior, noise, 0.5).unwrap();
            gpu.run(&[&f, &b, &p]).unwrap();
            let (zs, eps) = cpu::sample::sample_forward(&mulv, rows, z, noise);
            let label = format!("case {case} [{rows}x{z}]");
            let rel = |w: &[f64]| {
                let w = w.to_vec();
                move |i: usize| 3e-3 * (1.0 + w[i].abs())
            };
            assert_close(
                &format!("{label} eps"),
                &geps.read(gpu).unwrap(),
                &eps,
                rel(&eps),
            );
            assert_close(&format!("{label} z"), &gz.read(gpu).unwrap(), &zs, rel(&zs));
            let prior: Vec<f64> = eps.iter().map(|e| 0.5 * e).collect();
            assert_close(
                &format!("{label} prior"),
                &gprior.read(gpu).unwrap(),
                &prior,
                rel(&prior),
            );
            let mut dm = vec![0.0; rows * 2 * z];
            cpu::sample::sample_backward(&mulv, &dz, &eps, &mut dm, rows, z);
            assert_close(
                &format!("{label} backward"),
                &gdm.read(gpu).unwrap(),
                &dm,
                rel(&dm),
            );
        }
    });
}

/// Fused loss: per-sample values to 1e-5 relative (sums over up to 800 pixels), gradients
/// to 1e-5 relative + 1e-6, batch sums accumulated over two launches to 1e-5 relative.
#[test]
fn loss_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(17);
        for case in 0..20 {
            let rows = AWKWARD[case % 9];
            let d = [1, 7, 33, 129, 784][case % 5];
            let z = [1, 2, 7, 20][case % 4];
            let s = LossSettings {
                likelihood: if case % 2 == 0 {
                    Likelihood::Bernoulli
                } else {
                    Likelihood::Gaussian
                },
                beta: [1.0, 0.5, 4.0][case % 3],
                grad_scale: [1.0, 1.0 / 128.0][case % 2],
                gauss_var: [1.0, 0.1][case % 2],
                valid: rows - rows / 3,
                free_bits: [0.0, 0.0, 0.0, 0.3, 2.0][case % 5],
            };
            // Logits wide enough to reach the saturated regions of the Bernoulli loss.
            let (l32, l) = rng.vec(rows * d, -30.0, 30.0);
            let (x32, x) = rng.vec(rows * d, 0.0, 1.0);
            let (m32, m) = rng.vec(rows * 2 * z, -3.0, 3.0);
            let (gl, gx, gm) = (
                upload(gpu, rows, d, &l32),
                upload(gpu, rows, d, &x32),
                upload(gpu, rows, 2 * z, &m32),
            );
            let gdl = Matrix::zeros(gpu, rows, d, "dlogits").unwrap();
            let gdm = Matrix::zeros(gpu, rows, 2 * z, "dmulv").unwrap();
            let gps = Matrix::zeros(gpu, rows, 3, "per sample").unwrap();
            let gacc = Matrix::zeros(gpu, 1, 4, "accum").unwrap();
            let bufs = LossBuffers {
                logits: &gl,
                x: &gx,
                mulv: &gm,
                dlogits: &gdl,
                dmulv: &gdm,
                per_sample: &gps,
                accum: &gacc,
            };
            // Both reads for both likelihoods (case % 2).
            let reads = [Reads::Buffers, Reads::Textures][(case / 2) % 2];
            let ld = loss_with(gpu, reads, &bufs, &s).unwrap();
            let twice: Vec<_> = [ld.launches(), ld.launches()].concat();
            gpu.run(&twice).unwrap();
            let want = cpu::loss::loss(&l, &x, &m, rows, d, z, &s);
            let label = format!("case {case} [{rows}x{d}, z {z}] {s:?} {reads:?}");
            let rel = |w: &[f64]| {
                let w = w.to_vec();
                move |i: usize| 1e-5 * w[i].abs() + 1e-5
            };
            assert_close(
                &format!("{label} per sample"),
                &gps.read(gpu).unwrap(),
                &want.per_sample,
                rel(&want.per_sample),
            );
            assert_close(
                &format!("{label} dlogits"),
                &gdl.read(gpu).unwrap(),
                &want.dlogits,
                |i| 1e-5 * want.dlogits[i].abs() + 1e-6,
            );
            assert_close(
                &format!("{label} dmulv"),
                &gdm.read(gpu).unwrap(),
                &want.dmulv,
                rel(&want.dmulv),
            );
            let sums: Vec<f64> = (0..3)
                .map(|c| 2.0 * (0..rows).map(|r| want.per_sample[r * 3 + c]).sum::<f64>())
                .collect();
            let acc = gacc.read(gpu).unwrap();
            assert_close(&format!("{label} batch sums"), &acc[..3], &sums, rel(&sums));
            assert_eq!(acc[3], 2.0 * s.valid as f32, "{label}: sample count");
        }
    });
}

/// Adam: 100 steps on a small problem (a quadratic with noisy gradients computed on the
/// host) equal the f64 twin to 1e-5 relative, reading from buffers and from textures (sizes
/// below and above one texture row of 4096 floats).
#[test]
fn adam_matches_cpu_over_100_steps() {
    for_each_gpu(|gpu| {
        let cases = [4usize, 36, 1028, 4100, 12292]
            .into_iter()
            .flat_map(|len| [(len, Reads::Buffers), (len, Reads::Textures)]);
        for (case, (len, reads)) in cases.enumerate() {
            let mut rng = Rng::new(19 + case as u64);
            let config = AdamConfig {
                weight_decay: [0.0, 0.01][case % 2],
                ..AdamConfig::default()
            };
            let (p32, mut p) = rng.vec(len, -1.0, 1.0);
            let (gp, gg, gm, gv) = (
                upload(gpu, 1, len, &p32),
                Matrix::zeros(gpu, 1, len, "g").unwrap(),
                Matrix::zeros(gpu, 1, len, "m").unwrap(),
                Matrix::zeros(gpu, 1, len, "v").unwrap(),
            );
            let (mut m, mut v) = (vec![0.0; len], vec![0.0; len]);
            let buffers = [&gp.buffer, &gg.buffer, &gm.buffer, &gv.buffer];
            let step = adam_with(gpu, reads, buffers, len, config).unwrap();
            for t in 1..=100u64 {
                // gradient of 0.5 |p|^2 evaluated at the CPU's p, plus noise
                let g: Vec<f64> = p
                    .iter()
                    .map(|&x| f64::from((x + rng.uniform(-0.1, 0.1)) as f32))
                    .collect();
                gg.write(gpu, &g.iter().map(|&x| x as f32).collect::<Vec<_>>())
                    .unwrap();
                step.set_step(gpu, t);
                gpu.run(&[&step.dispatch]).unwrap();
                cpu::adam::adam_step(&mut p, &g, &mut m, &mut v, &config, t);
            }
            assert_close(
                &format!("adam len {len} {reads:?} {config:?}"),
                &gp.read(gpu).unwrap(),
                &p,
                |i| 1e-5 * p[i].abs() + 1e-6,
            );
        }
    });
}

/// Gather: exact (k / 255 in f32 against f64: 1e-7; f32 data bit for bit), from one buffer
/// and from a dataset split into several chunks.
#[test]
fn one_hot_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(29);
        for case in 0..20 {
            let classes = [1, 2, 3, 10, 47][case % 5];
            let count = 1 + rng.below(60);
            let labels: Vec<u32> = (0..count).map(|_| rng.below(classes) as u32).collect();
            let indices: Vec<u32> = (0..1 + rng.below(40))
                .map(|_| rng.below(count) as u32)
                .collect();
            let rows = 1 + rng.below(indices.len() + 5);
            let offset = rng.below(indices.len());
            let lbuf = upload(gpu, 1, count, bytemuck::cast_slice(&labels));
            let ibuf = upload(gpu, 1, indices.len(), bytemuck::cast_slice(&indices));
            // Stale values where the kernel must write zeros.
            let y = upload(gpu, rows, classes, &vec![7.0; rows * classes]);
            let mut g = one_hot(gpu, &lbuf.buffer, &ibuf.buffer, indices.len(), &y).unwrap();
            g.set_offset(gpu, offset);
            let repeat = [1, 2, 3, 5][case % 4];
            g.set_repeat(gpu, repeat);
            gpu.run(&[&g.dispatch]).unwrap();
            let want = cpu::one_hot(
                &labels,
                classes,
                &repeated(&indices, offset, repeat, rows),
                0,
                rows,
            );
            assert_close(
                &format!("case {case} classes {classes} rows {rows}"),
                &y.read(gpu).unwrap(),
                &want,
                |_| 0.0,
            );
        }
    });
}

/// The indices a gather with `repeat` reads for `rows` rows from `offset`: each `repeat`
/// times, the last one past the end.
fn repeated(indices: &[u32], offset: usize, repeat: usize, rows: usize) -> Vec<u32> {
    (0..rows)
        .map(|r| indices[(offset + r / repeat).min(indices.len() - 1)])
        .collect()
}

#[test]
fn gather_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(23);
        for case in 0..40 {
            let d = [1, 3, 7, 33, 784][case % 5];
            let dtype = if case < 20 { Dtype::U8 } else { Dtype::F32 };
            let count = 1 + rng.below(50);
            let pixels: Vec<u8> = match dtype {
                Dtype::U8 => (0..count * d).map(|_| rng.below(256) as u8).collect(),
                // Values no 8-bit pixel holds, of any sign and scale.
                Dtype::F32 => dtype.bytes(
                    &(0..count * d)
                        .map(|_| {
                            (rng.uniform(-1.0, 1.0) * 1e3_f64.powf(rng.uniform(-1.0, 1.0))) as f32
                        })
                        .collect::<Vec<_>>(),
                ),
            };
            let indices: Vec<u32> = (0..1 + rng.below(40))
                .map(|_| rng.below(count) as u32)
                .collect();
            let rows = 1 + rng.below(indices.len() + 5);
            let offset = rng.below(indices.len());
            let images = if case % 2 == 0 {
                GpuImages::upload(gpu, &pixels, d, dtype).unwrap()
            } else {
                // Chunks of 1 to 13 images, as many as the kernel binds.
                let per_chunk = count.div_ceil(4).max(1 + case % 13);
                GpuImages::upload_chunked(gpu, &pixels, d, dtype, per_chunk * d * dtype.size())
                    .unwrap()
            };
            assert!(case % 2 == 0 || images.chunks.len() > 1 || count <= images.per_chunk);
            let ibuf = upload(gpu, 1, indices.len(), bytemuck::cast_slice(&indices));
            let x = Matrix::zeros(gpu, rows, d, "x").unwrap();
            let mut g = gather(gpu, &images, &ibuf.buffer, indices.len(), &x).unwrap();
            g.set_offset(gpu, offset);
            let repeat = [1, 3, 2, 7][case % 4];
            g.set_repeat(gpu, repeat);
            gpu.run(&[&g.dispatch]).unwrap();
            let want = cpu::gather(
                &pixels,
                d,
                dtype,
                &repeated(&indices, offset, repeat, rows),
                0,
                rows,
            );
            let tol = match dtype {
                Dtype::U8 => 1e-7,
                Dtype::F32 => 0.0,
            };
            assert_close(
                &format!("case {case} {dtype:?} d {d} rows {rows}"),
                &x.read(gpu).unwrap(),
                &want,
                |_| tol,
            );
        }
    });
}

/// IWAE: the GPU's running log-sum-exp of log-weights, merged across two batches for one
/// image and one partial batch for another, equals the f64 twin to 1e-5 relative, with the
/// standard prior's weights and with a given Monte-Carlo KL (a VampPrior's).
#[test]
fn iwae_matches_cpu() {
    use vae_gpu::ops::iwae::{iwae, EMPTY};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(43);
        for ((rows, z), mc_kl) in [(1, 1), (7, 3), (300, 20)]
            .into_iter()
            .zip([false, true, false])
            .chain([((33, 2), true)])
        {
            let chunks: Vec<_> = (0..2)
                .map(|_| {
                    let (r32, r) = rng.vec(rows * 3, 100.0, 300.0);
                    let (m32, m) = rng.vec(rows * 2 * z, -2.0, 2.0);
                    let (z32, zs) = rng.vec(rows * z, -3.0, 3.0);
                    let (e32, e) = rng.vec(rows * z, -3.0, 3.0);
                    ((r32, m32, z32, e32), (r, m, zs, e))
                })
                .collect();
            let (gps, gm, gz, ge) = (
                Matrix::zeros(gpu, rows, 3, "ps").unwrap(),
                Matrix::zeros(gpu, rows, 2 * z, "mulv").unwrap(),
                Matrix::zeros(gpu, rows, z, "z").unwrap(),
                Matrix::zeros(gpu, rows, z, "eps").unwrap(),
            );
            let state = upload(gpu, 1, 4, &EMPTY.repeat(2));
            let mut d = iwae(gpu, mc_kl, &gps, &gm, &gz, &ge, &state).unwrap();
            // (chunk, image, valid rows)
            let plan = [
                (0, 0, rows),
                (1, 0, rows.div_ceil(2)),
                (1, 1, rows.div_ceil(3)),
            ];
            for &(chunk, image, valid) in &plan {
                let (r, m, zz, e) = &chunks[chunk].0;
                gps.write(gpu, r).unwrap();
                gm.write(gpu, m).unwrap();
                gz.write(gpu, zz).unwrap();
                ge.write(gpu, e).unwrap();
                d.set(gpu, image, valid);
                gpu.run(&[&d.dispatch]).unwrap();
            }
            let s = state.read(gpu).unwrap();
            for image in 0..2 {
                // log sum exp over every row the plan sent to this image
                let (mut recon, mut kl, mut mulv, mut zs, mut eps) =
                    (vec![], vec![], vec![], vec![], vec![]);
                for &(chunk, _, valid) in plan.iter().filter(|p| p.1 == image) {
                    let (r, m, zz, e) = &chunks[chunk].1;
                    recon.extend((0..valid).map(|i| r[i * 3]));
                    kl.extend((0..valid).map(|i| r[i * 3 + 1]));
                    mulv.extend_from_slice(&m[..valid * 2 * z]);
                    zs.extend_from_slice(&zz[..valid * z]);
                    eps.extend_from_slice(&e[..valid * z]);
                }
                let log_px = match mc_kl {
                    true => cpu::loss::iwae_log_px_mc(&recon, &kl),
                    false => cpu::loss::iwae_log_px(&recon, &mulv, &zs, &eps, z),
                };
                let want = log_px + (recon.len() as f64).ln();
                let got = f64::from(s[2 * image]) + f64::from(s[2 * image + 1]).ln();
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs(),
                    "rows {rows} z {z} mc_kl {mc_kl} image {image}: {got} vs {want}"
                );
            }
        }
    });
}

/// A record's row over its samples' rows and the sum back (shaders/sequence.wgsl): exact
/// copies, and sums within f32 rounding, on awkward shapes up to 5000 samples a record.
#[test]
fn records_match_cpu() {
    use vae_gpu::ops::sequence::{repeat_records, sum_records};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(79);
        for (records, cols, k) in [(1, 1, 1), (3, 7, 5), (20, 100, 50), (2, 3, 5000)] {
            let (r32, r) = rng.vec(records * cols, -2.0, 2.0);
            let (w32, w) = rng.vec(records * k * cols, -2.0, 2.0);
            let (gr, gw) = (
                upload(gpu, records, cols, &r32),
                upload(gpu, records * k, cols, &w32),
            );
            let (rep, sum) = (
                Matrix::zeros(gpu, records * k, cols, "repeated").unwrap(),
                Matrix::zeros(gpu, records, cols, "summed").unwrap(),
            );
            let mut launches = vec![repeat_records(gpu, &gr, &rep, k).unwrap()];
            launches.extend(sum_records(gpu, &gw, &sum, k).unwrap());
            gpu.run(&launches.iter().collect::<Vec<_>>()).unwrap();
            let what = format!("{records} records of {cols} over {k} rows");
            assert_close(
                &format!("{what}: repeat"),
                &rep.read(gpu).unwrap(),
                &cpu::tensor::repeat_records(&r, cols, k),
                |_| 0.0,
            );
            let want = cpu::tensor::sum_records(&w, cols, k);
            assert_close(
                &format!("{what}: sum"),
                &sum.read(gpu).unwrap(),
                &want,
                |_| 1e-6 * k as f64 * 2.0,
            );
        }
        assert!(repeat_records(
            gpu,
            &upload(gpu, 2, 3, &[0.0; 6]),
            &upload(gpu, 5, 3, &[0.0; 15]),
            2
        )
        .is_err());
    });
}

/// Columns' running mean and variance (shaders/moments.wgsl) over batches of awkward sizes,
/// of a column range inside a wider matrix, against the f64 twin over all the rows at once:
/// within 1e-5 of the largest value for the mean and 1e-5 relative for the variance, 5e-3
/// for columns of mean 3 and spread 1e-3 (variance 8e-8, where sum(x^2) - n mean^2 would
/// cancel to nothing; batches of one to three rows err by 1e-3 there, a merge without
/// Chan's term by 6%).
#[test]
fn moments_match_cpu() {
    use vae_gpu::ops::moments::moments;
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(83);
        for (case, &cols) in AWKWARD.iter().enumerate() {
            let (width, first) = (cols + 2 * (case % 2), case % 2);
            let batch = AWKWARD[(case + 4) % 9];
            let batches: Vec<usize> = (0..3)
                .map(|i| 1 + (batch * (i + 2)) % (batch + 1))
                .collect();
            let narrow = case % 3 == 0;
            let (lo, hi) = if narrow { (3.0, 3.001) } else { (-2.0, 2.0) };
            let most = *batches.iter().max().unwrap();
            let x = Matrix::zeros(gpu, most, width, "x").unwrap();
            let mut m = moments(gpu, &x, (first, cols)).unwrap();
            let mut all = Vec::new();
            for &rows in &batches {
                // The rows past `rows` are read by no launch.
                let (x32, x64) = rng.vec(most * width, lo, hi);
                x.write(gpu, &x32).unwrap();
                m.set_rows(gpu, rows).unwrap();
                gpu.run(&[&m.dispatch]).unwrap();
                for r in 0..rows {
                    all.extend_from_slice(&x64[r * width + first..r * width + first + cols]);
                }
            }
            let got = m.read(gpu).unwrap();
            let want = cpu::tensor::column_moments(&all, cols);
            for (j, ((gm, gv), (wm, wv))) in got.iter().zip(&want).enumerate() {
                let what =
                    format!("{cols} columns from {first} over batches {batches:?}, column {j}");
                assert!(
                    (gm - wm).abs() <= 1e-5 * hi.abs().max(lo.abs()),
                    "{what}: mean {gm} vs {wm}"
                );
                // The narrow columns' batch means carry f32 rounding of values near 3.
                let tol = if narrow { 5e-3 } else { 1e-5 };
                assert!((gv - wv).abs() <= tol * wv, "{what}: variance {gv} vs {wv}");
            }
        }
        let x = Matrix::zeros(gpu, 4, 3, "x").unwrap();
        assert!(moments(gpu, &x, (2, 2)).is_err());
        assert!(moments(gpu, &x, (0, 3)).unwrap().set_rows(gpu, 5).is_err());
    });
}

/// A stacked layer's KL (shaders/level.wgsl): each row's Monte-Carlo KL added to the KL
/// and total it finds, and the gradients of the code and of the posterior's and prior's mu
/// | logvar (rows weighted), against the f64 twin on awkward shapes (one row, padding rows
/// past `valid`, log-variances beyond the clamp), to 1e-4 relative + 1e-4.
#[test]
fn level_kl_matches_cpu() {
    use vae_gpu::ops::level::{level, LevelBuffers};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(59);
        for (rows, valid, z) in [(1, 1, 1), (7, 5, 3), (33, 33, 2), (129, 100, 100)] {
            let (m32, m) = rng.vec(rows * 2 * z, -2.0, 2.0);
            let (e32, e) = rng.vec(rows * z, -2.5, 2.5);
            let (mut p32, mut p) = rng.vec(rows * 2 * z, -2.0, 2.0);
            // One prior log-variance past the clamp: no gradient there.
            (p32[z], p[z]) = (-31.0, -31.0);
            let (r32, r) = rng.vec(rows * 3, 50.0, 150.0);
            let (w32, w) = rng.vec(rows, 0.0, 1.0);
            let (beta, scale) = (0.7, 0.5);
            let want = cpu::level::level_kl(&m, &e, &p, (rows, valid, z), (beta * scale, &w));
            let z32: Vec<f32> = want.z.iter().map(|&v| v as f32).collect();
            let gz = upload(gpu, rows, z, &z32);
            let (gm, ge, gp, gps, gw) = (
                upload(gpu, rows, 2 * z, &m32),
                upload(gpu, rows, z, &e32),
                upload(gpu, rows, 2 * z, &p32),
                upload(gpu, rows, 3, &r32),
                upload(gpu, 1, rows, &w32),
            );
            let zeros = |cols| Matrix::zeros(gpu, rows, cols, "gradient").unwrap();
            let (gdz, gdm, gdp) = (zeros(z), zeros(2 * z), zeros(2 * z));
            let mut d = level(
                gpu,
                &LevelBuffers {
                    mulv: &gm,
                    z: &gz,
                    eps: &ge,
                    prior: &gp,
                    per_sample: &gps,
                    dz: &gdz,
                    dmulv: &gdm,
                    dprior: &gdp,
                    row_scale: Some(&gw),
                },
            )
            .unwrap();
            d.update(gpu, valid, beta as f32, scale as f32);
            gpu.run(&[&d.rows, &d.grads]).unwrap();
            let what = format!("rows {rows} valid {valid} z {z}");
            let tol = |w: f64| 1e-4 * w.abs() + 1e-4;
            let ps = gps.read(gpu).unwrap();
            for b in 0..rows {
                let kl = r[b * 3 + 1] + want.kl[b];
                let total = r[b * 3 + 2] + beta * want.kl[b];
                for (got, want, name) in
                    [(ps[b * 3 + 1], kl, "kl"), (ps[b * 3 + 2], total, "total")]
                {
                    assert!(
                        (f64::from(got) - want).abs() <= tol(want),
                        "{what}: {name}[{b}] {got} vs {want}"
                    );
                }
            }
            for (name, got, want) in [
                ("dz", &gdz, &want.dz),
                ("dmulv", &gdm, &want.dmulv),
                ("dprior", &gdp, &want.dprior),
            ] {
                assert_close(
                    &format!("{what} {name}"),
                    &got.read(gpu).unwrap(),
                    want,
                    |i| tol(want[i]),
                );
            }
        }
    });
}

/// The VampPrior's KL (shaders/vamp.wgsl): each record's Monte-Carlo KL and total, and the
/// gradients of the records' and the components' mu | logvar (records weighted), against
/// the f64 twin on awkward shapes (one record, one component, padding rows past `valid`),
/// to 1e-4 relative + 1e-4 (exp and log on the driver, sums over K components and B
/// records in f32), up to 4096 components of 20 dimensions.
#[test]
fn vamp_kl_matches_cpu() {
    use vae_gpu::ops::vamp::{vamp, VampBuffers};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(47);
        for (case, (rows, valid, z, k)) in [
            (1, 1, 1, 1),
            (7, 5, 3, 17),
            (33, 33, 2, 5),
            (129, 100, 20, 50),
            (128, 128, 20, 2048),
        ]
        .into_iter()
        .enumerate()
        {
            // Every other shape with the records' gradients along the path only (DReG's).
            let pathwise = case % 2 == 1;
            let (m32, m) = rng.vec(rows * 2 * z, -2.0, 2.0);
            let (e32, e) = rng.vec(rows * z, -2.5, 2.5);
            let (p32, pm) = rng.vec(k * 2 * z, -2.0, 2.0);
            let (r32, r) = rng.vec(rows * 3, 50.0, 150.0);
            let (beta, scale) = (0.7, 0.5);
            // Records weighted in the components' gradients (an importance-weighted step).
            let (w32, w) = rng.vec(rows, 0.0, 1.0);
            let want =
                cpu::vamp::vamp_kl(&m, &e, &pm, (rows, valid, z), (beta * scale, &w, pathwise));
            let gw = upload(gpu, 1, rows, &w32);
            let z32: Vec<f32> = want.z.iter().map(|&v| v as f32).collect();
            let (gm, ge, gz, gp, gps) = (
                upload(gpu, rows, 2 * z, &m32),
                upload(gpu, rows, z, &e32),
                upload(gpu, rows, z, &z32),
                upload(gpu, k, 2 * z, &p32),
                upload(gpu, rows, 3, &r32),
            );
            let (gdm, gdp) = (
                Matrix::zeros(gpu, rows, 2 * z, "dmulv").unwrap(),
                Matrix::zeros(gpu, k, 2 * z, "dpmulv").unwrap(),
            );
            let mut d = vamp(
                gpu,
                &VampBuffers {
                    mulv: &gm,
                    z: &gz,
                    eps: &ge,
                    pmulv: &gp,
                    per_sample: &gps,
                    dmulv: &gdm,
                    dpmulv: &gdp,
                    row_scale: Some(&gw),
                },
            )
            .unwrap();
            if pathwise {
                d.set_pathwise(gpu);
            }
            d.update(gpu, valid, beta as f32, scale as f32);
            gpu.run(&d.launches()).unwrap();
            let what = format!("rows {rows} valid {valid} z {z} k {k} pathwise {pathwise}");
            let tol = |w: f64| 1e-4 * w.abs() + 1e-4;
            let ps = gps.read(gpu).unwrap();
            for b in 0..rows {
                let recon = r[b * 3];
                let kl = want.kl[b];
                let total = recon + beta * kl;
                assert!(
                    (f64::from(ps[b * 3 + 1]) - kl).abs() <= tol(kl),
                    "{what}: kl[{b}] {} vs {kl}",
                    ps[b * 3 + 1]
                );
                assert!(
                    (f64::from(ps[b * 3 + 2]) - total).abs() <= tol(total),
                    "{what}: total[{b}] {} vs {total}",
                    ps[b * 3 + 2]
                );
            }
            assert_close(
                &format!("{what} dmulv"),
                &gdm.read(gpu).unwrap(),
                &want.dmulv,
                |i| tol(want.dmulv[i]),
            );
            assert_close(
                &format!("{what} dpmulv"),
                &gdp.read(gpu).unwrap(),
                &want.dpmulv,
                |i| tol(want.dpmulv[i]),
            );
        }
    });
}

/// Row softmax and log-sum-exp (a mixture's E-step), to 1e-5 relative + 1e-6.
#[test]
fn softmax_rows_matches_cpu() {
    use vae_gpu::ops::softmax::softmax_rows;
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(48);
        for case in 0..20 {
            let (rows, classes) = (AWKWARD[case % 9], [1, 2, 3, 10, 17][case % 5]);
            // Log-densities far below zero, as a mixture's are.
            let (l32, l) = rng.vec(rows * classes, -300.0, 5.0);
            let gl = upload(gpu, rows, classes, &l32);
            let (gp, glse) = (
                Matrix::zeros(gpu, rows, classes, "p").unwrap(),
                Matrix::zeros(gpu, 1, rows, "lse").unwrap(),
            );
            gpu.run(&[&softmax_rows(gpu, &gl, &gp, &glse).unwrap()])
                .unwrap();
            let (probs, lse) = cpu::loss::softmax_rows(&l, classes);
            let label = format!("case {case} [{rows}x{classes}]");
            assert_close(
                &format!("{label} lse"),
                &glse.read(gpu).unwrap(),
                &lse,
                |i| 1e-5 * lse[i].abs() + 1e-5,
            );
            assert_close(
                &format!("{label} probs"),
                &gp.read(gpu).unwrap(),
                &probs,
                |i| 1e-5 * probs[i].abs() + 1e-6,
            );
        }
    });
}

/// Softmax cross-entropy: per-row loss and gradient to 1e-5 relative + 1e-6.
#[test]
fn softmax_xent_matches_cpu() {
    use vae_gpu::ops::softmax::softmax_xent;
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(47);
        for case in 0..20 {
            let (rows, classes) = (AWKWARD[case % 9], [2, 3, 10, 17][case % 4]);
            let valid = rows - rows / 4;
            let (l32, l) = rng.vec(rows * classes, -20.0, 20.0);
            // Every fifth row is padding: a label that is not a class.
            let labels: Vec<u32> = (0..rows)
                .map(|r| match r % 5 {
                    4 => [classes as u32, u32::MAX][r % 2],
                    _ => rng.below(classes) as u32,
                })
                .collect();
            // Odd cases read their labels from a window further into the buffer.
            let offset = (case % 2) * (case + 3);
            let mut stored: Vec<u32> = (0..offset).map(|_| rng.below(classes) as u32).collect();
            stored.extend(&labels);
            let gl = upload(gpu, rows, classes, &l32);
            let gy = upload(gpu, 1, stored.len(), bytemuck::cast_slice(&stored));
            let (gg, gloss) = (
                Matrix::zeros(gpu, rows, classes, "g").unwrap(),
                Matrix::zeros(gpu, 1, rows, "loss").unwrap(),
            );
            let scale = 1.0 / valid as f32;
            let mut d = softmax_xent(gpu, &gl, &gy.buffer, &gg, &gloss, valid, scale).unwrap();
            d.set_offset(gpu, offset);
            gpu.run(&[&d.dispatch]).unwrap();
            let (mut loss, mut grad) =
                cpu::loss::softmax_xent(&l, &labels, classes, f64::from(scale));
            loss[valid..].iter_mut().for_each(|v| *v = 0.0);
            grad[valid * classes..].iter_mut().for_each(|v| *v = 0.0);
            let label = format!("case {case} [{rows}x{classes}]");
            assert_close(
                &format!("{label} loss"),
                &gloss.read(gpu).unwrap(),
                &loss,
                |i| 1e-5 * loss[i].abs() + 1e-5,
            );
            assert_close(
                &format!("{label} grad"),
                &gg.read(gpu).unwrap(),
                &grad,
                |i| 1e-5 * grad[i].abs() + 1e-6,
            );
        }
    });
}

/// Input corruption: the same Philox stream, so the corrupted values agree (Gaussian to the
/// device's log/cos precision, 3e-3; the others exactly).
#[test]
fn corruption_matches_cpu() {
    use vae_gpu::ops::sample::{corrupt, Corruption};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(53);
        for case in 0..20 {
            let (rows, cols) = (AWKWARD[case % 9], AWKWARD[(case + 4) % 9]);
            let kind = [
                Corruption::Gaussian(0.3),
                Corruption::SaltPepper(0.2),
                Corruption::Mask(0.5),
            ][case % 3];
            let noise = Noise {
                seed: rng.next_u64(),
                step: case as u32,
                stream: 3,
            };
            let (x32, x) = rng.vec(rows * cols, 0.0, 1.0);
            let (gx, gy) = (
                upload(gpu, rows, cols, &x32),
                Matrix::zeros(gpu, rows, cols, "y").unwrap(),
            );
            gpu.run(&[&corrupt(gpu, &gx, &gy, noise, kind).unwrap()])
                .unwrap();
            let want: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| cpu::sample::corrupt(v, i as u32, noise, kind))
                .collect();
            let tol = if matches!(kind, Corruption::Gaussian(_)) {
                3e-3
            } else {
                0.0
            };
            assert_close(
                &format!("case {case} [{rows}x{cols}] {kind}"),
                &gy.read(gpu).unwrap(),
                &want,
                |_| tol,
            );
        }
    });
}

/// Dynamic binarization in the gather: every value's draw equals the twin's exactly (the
/// uniform is a 24-bit fraction, exact in f32), for u8 images (scalar and packed kernels)
/// and f32 arrays, repeated rows drawing alike; over a large batch the share of ones
/// follows the values.
#[test]
fn binarized_gather_matches_cpu() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(57);
        for case in 0..12 {
            let d = [3, 8, 33, 784][case % 4];
            let dtype = if case < 6 { Dtype::U8 } else { Dtype::F32 };
            let count = 1 + rng.below(30);
            let values: Vec<f32> = (0..count * d)
                .map(|_| rng.below(256) as f32 / 255.0)
                .collect();
            let pixels = match dtype {
                Dtype::U8 => Dtype::U8.bytes(&values),
                Dtype::F32 => Dtype::F32.bytes(&values),
            };
            let indices: Vec<u32> = (0..1 + rng.below(20))
                .map(|_| rng.below(count) as u32)
                .collect();
            let (repeat, offset) = ([1, 3][case % 2], rng.below(indices.len()));
            let rows = 1 + rng.below(indices.len() * repeat + 3);
            let noise = Noise {
                seed: rng.next_u64(),
                step: case as u32,
                stream: 4,
            };
            let images = GpuImages::upload(gpu, &pixels, d, dtype).unwrap();
            let ibuf = upload(gpu, 1, indices.len(), bytemuck::cast_slice(&indices));
            let x = Matrix::zeros(gpu, rows, d, "x").unwrap();
            let mut g = gather(gpu, &images, &ibuf.buffer, indices.len(), &x).unwrap();
            g.set_offset(gpu, offset);
            g.set_repeat(gpu, repeat);
            g.set_binarize(gpu, noise);
            gpu.run(&[&g.dispatch]).unwrap();
            let order = repeated(&indices, offset, repeat, rows);
            let plain = cpu::gather(&pixels, d, dtype, &order, 0, rows);
            let want: Vec<f64> = plain
                .iter()
                .enumerate()
                .map(|(i, &v)| cpu::sample::binarize(v, (i % d) as u32, order[i / d], noise))
                .collect();
            assert_close(
                &format!("case {case} {dtype:?} d {d} rows {rows} repeat {repeat}"),
                &x.read(gpu).unwrap(),
                &want,
                |_| 0.0,
            );
        }
        let (n, d) = (256, 1024);
        let values: Vec<f32> = (0..n * d).map(|i| (i % 4) as f32 / 4.0 + 0.1).collect();
        let images = GpuImages::upload(gpu, &Dtype::F32.bytes(&values), d, Dtype::F32).unwrap();
        let order: Vec<u32> = (0..n as u32).collect();
        let ibuf = upload(gpu, 1, n, bytemuck::cast_slice(&order));
        let x = Matrix::zeros(gpu, n, d, "x").unwrap();
        let mut g = gather(gpu, &images, &ibuf.buffer, n, &x).unwrap();
        let noise = Noise {
            seed: 5,
            step: 0,
            stream: 4,
        };
        g.set_binarize(gpu, noise);
        gpu.run(&[&g.dispatch]).unwrap();
        let y = x.read(gpu).unwrap();
        for level in 0..4 {
            let ones = y
                .iter()
                .skip(level)
                .step_by(4)
                .filter(|&&v| v == 1.0)
                .count();
            let share = ones as f64 / (n * d / 4) as f64;
            let p = level as f64 / 4.0 + 0.1;
            assert!((share - p).abs() < 0.01, "value {p}: {share} ones");
        }
    });
}

/// `udiv` (shaders/index.wgsl), the float-based division the index kernels use instead of
/// integer division: exact against u32 division on edge and random pairs across its range
/// (a < 2^29, b < 2^23).
#[test]
fn udiv_matches_integer_division() {
    use wgpu::util::DeviceExt;
    let src = format!(
        "{}\n{}",
        include_str!("../shaders/index.wgsl"),
        r#"
@group(0) @binding(0) var<storage, read> ab: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read_write> q: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&q)) { q[id.x] = udiv(ab[id.x].x, ab[id.x].y); }
}"#
    );
    let mut rng = Rng::new(71);
    let mut pairs: Vec<[u32; 2]> = Vec::new();
    let divisors = [
        1u32,
        2,
        3,
        4,
        7,
        28,
        196,
        784,
        4095,
        65537,
        131_071,
        (1 << 23) - 1,
    ];
    for &b in &divisors {
        let top = (1u32 << 29) - 1;
        let near = |k: u32| [k.saturating_mul(b).saturating_sub(1), k.saturating_mul(b)];
        for a in [0, 1, b - 1, b, b + 1, top, top - top % b, top - top % b - 1]
            .into_iter()
            .chain(near(3))
            .chain(near(top / b))
            .chain((0..200).map(|_| rng.below(1 << 29) as u32))
        {
            pairs.push([a.min(top), b]);
        }
    }
    for_each_gpu(|gpu| {
        let module = gpu
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("udiv test"),
                source: wgpu::ShaderSource::Wgsl(src.as_str().into()),
            });
        let pipeline = gpu
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let input = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&pairs),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let out = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4 * pairs.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: input.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: out.as_entire_binding(),
                },
            ],
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(pairs.len().div_ceil(64) as u32, 1, 1);
        }
        gpu.queue.submit([encoder.finish()]);
        let got = vae_gpu::gpu::read_buffer(gpu, &out, 0, out.size()).unwrap();
        let got: &[u32] = bytemuck::cast_slice(&got);
        for (&[a, b], &q) in pairs.iter().zip(got) {
            assert_eq!(q, a / b, "udiv({a}, {b})");
        }
    });
}

/// Gradient-norm clipping: the norm within f32 summation error, the gradients scaled like
/// the twin's, for buffers below and above the limit, of sizes that do not fill the partial
/// sums and sizes that loop over them.
#[test]
fn clip_matches_cpu() {
    use vae_gpu::ops::clip::clip_grad_norm;
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(53);
        for (len, max_norm) in [
            (4, 0.5),
            (4, 50.0),
            (1028, 3.0),
            (100_000, 50.0),
            (100_000, 1e4),
        ] {
            let (g32, g) = rng.vec(len, -1.0, 1.0);
            let grads = upload(gpu, 1, len, &g32);
            let clip = clip_grad_norm(gpu, &grads.buffer, len, max_norm as f32).unwrap();
            gpu.run(&clip.launches.iter().collect::<Vec<_>>()).unwrap();
            let mut want = g.clone();
            let norm = cpu::adam::clip_grad_norm(&mut want, max_norm);
            let got = clip.factor.read(gpu).unwrap();
            let label = format!("{len} values, max norm {max_norm}");
            assert_close(&format!("{label} norm"), &got[1..], &[norm], |_| {
                1e-5 * norm
            });
            assert_close(
                &format!("{label} gradients"),
                &grads.read(gpu).unwrap(),
                &want,
                |i| 1e-5 * want[i].abs() + 1e-7,
            );
        }
    });
}
