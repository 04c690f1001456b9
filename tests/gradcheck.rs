//! Finite-difference gradient checks: every backward the GPU runs is compared with central
//! differences of the f64 CPU forward (step 1e-6), entry by entry on small shapes.
//! Tolerance: |gpu - fd| <= 1e-4 * |fd| + 1e-4 (the GPU gradient is f32).

mod common;

use common::{for_each_gpu, Rng};
use vae_gpu::cpu;
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::ops::elementwise::{act_backward, act_forward, bias_grad};
use vae_gpu::ops::gemm::{gemm, gemm_backward, GemmSpec, InputActivation};
use vae_gpu::ops::loss::{loss, Likelihood, LossBuffers, LossSettings};
use vae_gpu::ops::sample::{sample_backward, sample_forward, Noise};
use vae_gpu::ops::Activation;
use vae_gpu::ops::GradEpilogue;

const H: f64 = 1e-6;

fn upload(gpu: &Gpu, rows: usize, cols: usize, data: &[f32]) -> Matrix {
    Matrix::from_slice(gpu, rows, cols, data, "test").unwrap()
}

/// Central differences of f with respect to every entry of x.
fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    common::numeric_grad(x, H, f)
}

fn check(what: &str, gpu_grad: &[f32], fd: &[f64]) {
    assert_eq!(gpu_grad.len(), fd.len(), "{what}");
    for (i, (&g, &n)) in gpu_grad.iter().zip(fd).enumerate() {
        let err = (f64::from(g) - n).abs();
        assert!(
            err <= 1e-4 * n.abs() + 1e-4,
            "{what}: entry {i}: gpu {g} vs finite difference {n}"
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L = sum(G * act(op(A) op(B) + bias)) for all four transpose combinations and every
/// activation: checks the GEMM backward products, the activation backward and the bias sum.
#[test]
fn gemm_bias_activation_gradients() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(29);
        let acts = [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::Sigmoid,
            Activation::Tanh,
        ];
        for case in 0..8 {
            let (m, n, k) = (3 + case % 3, 5 + case % 4, 7 + case);
            let spec = GemmSpec {
                trans_a: case % 2 == 1,
                trans_b: (case / 2) % 2 == 1,
                accumulate: false,
                act: acts[case % 5],
                act_grad: false,
            };
            let (ar, ac) = if spec.trans_a { (k, m) } else { (m, k) };
            let (br, bc) = if spec.trans_b { (n, k) } else { (k, n) };
            // Even cases: A = act_a(P), an earlier layer's output, and dA is taken through
            // act_a in the same launch (checked against d L / d P).
            let a_act = (case % 2 == 0).then_some(acts[3 + case % 4 / 2]);
            let (_, p) = rng.vec(ar * ac, -1.0, 1.0);
            let input = |p: &[f64]| -> Vec<f64> {
                p.iter()
                    .map(|&v| a_act.map_or(v, |f| cpu::act_forward(v, f)))
                    .collect()
            };
            let a = input(&p);
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let (b32, b) = rng.vec(br * bc, -1.0, 1.0);
            let (bias32, bias) = rng.vec(n, -0.5, 0.5);
            let (g32, g) = rng.vec(m * n, -1.0, 1.0);
            let forward = |a: &[f64], b: &[f64], bias: &[f64]| {
                let mut c = vec![0.0; m * n];
                cpu::gemm::gemm(a, b, &mut c, Some(bias), m, n, k, &spec);
                dot(&c, &g)
            };
            let (ga, gb, gbias) = (
                upload(gpu, ar, ac, &a32),
                upload(gpu, br, bc, &b32),
                upload(gpu, 1, n, &bias32),
            );
            let gy = Matrix::zeros(gpu, m, n, "y").unwrap();
            let gdy = upload(gpu, m, n, &g32);
            let (gda, gdb, gdbias) = (
                Matrix::zeros(gpu, ar, ac, "da").unwrap(),
                Matrix::zeros(gpu, br, bc, "db").unwrap(),
                Matrix::zeros(gpu, 1, n, "dbias").unwrap(),
            );
            let mut ds = vec![
                gemm(gpu, &ga, &gb, &gy, Some(&gbias), spec).unwrap(),
                act_backward(gpu, &gy, &gdy, spec.act).unwrap(),
            ];
            ds.extend(bias_grad(gpu, &gdy, &gdbias).unwrap());
            let fused = a_act.map(|act| InputActivation { act, output: &ga });
            ds.extend(
                gemm_backward(
                    gpu,
                    &ga,
                    &gb,
                    &gdy,
                    Some(&gda),
                    Some(&gdb),
                    spec,
                    GradEpilogue {
                        accumulate: false,
                        act: fused,
                    },
                )
                .unwrap(),
            );
            gpu.run(&ds.iter().collect::<Vec<_>>()).unwrap();
            let label = format!("case {case} [{m}x{n}x{k}] {spec:?} A = {a_act:?}(P)");
            check(
                &format!("{label} dA"),
                &gda.read(gpu).unwrap(),
                &numeric_grad(&p, |p| forward(&input(p), &b, &bias)),
            );
            check(
                &format!("{label} dB"),
                &gdb.read(gpu).unwrap(),
                &numeric_grad(&b, |b| forward(&a, b, &bias)),
            );
            check(
                &format!("{label} dbias"),
                &gdbias.read(gpu).unwrap(),
                &numeric_grad(&bias, |bias| forward(&a, &b, bias)),
            );
        }
    });
}

/// L = sum(G * act(x)) through the standalone activation kernels.
#[test]
fn activation_gradients() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(31);
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.01),
            Activation::Sigmoid,
            Activation::Tanh,
        ] {
            let (rows, cols) = (3, 11);
            let (x32, x) = rng.vec(rows * cols, -3.0, 3.0);
            let (g32, g) = rng.vec(rows * cols, -1.0, 1.0);
            let (gx, gy, gg) = (
                upload(gpu, rows, cols, &x32),
                Matrix::zeros(gpu, rows, cols, "y").unwrap(),
                upload(gpu, rows, cols, &g32),
            );
            let f = act_forward(gpu, &gx, &gy, act).unwrap();
            let b = act_backward(gpu, &gy, &gg, act).unwrap();
            gpu.run(&[&f, &b]).unwrap();
            let fd = numeric_grad(&x, |x| {
                x.iter()
                    .zip(&g)
                    .map(|(&v, &w)| w * cpu::act_forward(v, act))
                    .sum()
            });
            check(&format!("{act:?}"), &gg.read(gpu).unwrap(), &fd);
        }
    });
}

/// L = sum(G * z), z = mu + exp(0.5 logvar) eps with the noise fixed by the RNG position.
#[test]
fn sampling_gradients() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(37);
        for (rows, z) in [(1, 1), (3, 7), (5, 20)] {
            let noise = Noise {
                seed: 99,
                step: 4,
                stream: 0,
            };
            let (m32, mulv) = rng.vec(rows * 2 * z, -2.0, 2.0);
            let (g32, g) = rng.vec(rows * z, -1.0, 1.0);
            let gm = upload(gpu, rows, 2 * z, &m32);
            let (gz, geps) = (
                Matrix::zeros(gpu, rows, z, "z").unwrap(),
                Matrix::zeros(gpu, rows, z, "eps").unwrap(),
            );
            let gdz = upload(gpu, rows, z, &g32);
            let gdm = Matrix::zeros(gpu, rows, 2 * z, "dmulv").unwrap();
            let f = sample_forward(gpu, &gm, &gz, &geps, noise, 1.0).unwrap();
            let b = sample_backward(gpu, &gm, &gdz, &geps, &gdm).unwrap();
            gpu.run(&[&f, &b]).unwrap();
            let fd = numeric_grad(&mulv, |mv| {
                dot(&cpu::sample::sample_forward(mv, rows, z, noise).0, &g)
            });
            check(
                &format!("sample [{rows}x{z}]"),
                &gdm.read(gpu).unwrap(),
                &fd,
            );
        }
    });
}

/// L = grad_scale * sum over valid rows of (recon + beta KL): gradients wrt logits, mu, logvar.
#[test]
fn loss_gradients() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(41);
        for case in 0..4 {
            let (rows, d, z) = (3, 9 + case, 2 + case);
            let s = LossSettings {
                likelihood: if case % 2 == 0 {
                    Likelihood::Bernoulli
                } else {
                    Likelihood::Gaussian
                },
                beta: [1.0, 0.3][case / 2],
                grad_scale: [1.0, 0.25][case / 2],
                gauss_var: 0.5,
                valid: rows - case / 2,
                free_bits: [0.0, 0.4][case % 2],
            };
            let (l32, l) = rng.vec(rows * d, -5.0, 5.0);
            let (x32, x) = rng.vec(rows * d, 0.0, 1.0);
            let (m32, m) = rng.vec(rows * 2 * z, -2.0, 2.0);
            // The free-bits kink must lie clear of every term, or differences straddle it.
            for r in 0..rows {
                for j in 0..z {
                    let (mu, lv) = (m[r * 2 * z + j], m[r * 2 * z + z + j]);
                    let kl = -0.5 * (1.0 + lv - mu * mu - lv.exp());
                    let gap = (kl - f64::from(s.free_bits)).abs();
                    assert!(
                        s.free_bits == 0.0 || gap > 1e-2,
                        "case {case}: KL {kl} at the floor"
                    );
                }
            }
            let (gl, gx, gm) = (
                upload(gpu, rows, d, &l32),
                upload(gpu, rows, d, &x32),
                upload(gpu, rows, 2 * z, &m32),
            );
            let (gdl, gdm) = (
                Matrix::zeros(gpu, rows, d, "dl").unwrap(),
                Matrix::zeros(gpu, rows, 2 * z, "dm").unwrap(),
            );
            let (gps, gacc) = (
                Matrix::zeros(gpu, rows, 3, "ps").unwrap(),
                Matrix::zeros(gpu, 1, 4, "acc").unwrap(),
            );
            let bufs = LossBuffers {
                logits: &gl,
                x: &gx,
                mulv: &gm,
                dlogits: &gdl,
                dmulv: &gdm,
                per_sample: &gps,
                accum: &gacc,
            };
            let ld = loss(gpu, &bufs, &s).unwrap();
            gpu.run(&ld.per_sample()).unwrap();
            let total = |l: &[f64], m: &[f64]| {
                let out = cpu::loss::loss(l, &x, m, rows, d, z, &s);
                f64::from(s.grad_scale) * (0..rows).map(|r| out.per_sample[r * 3 + 2]).sum::<f64>()
            };
            check(
                &format!("case {case} dlogits"),
                &gdl.read(gpu).unwrap(),
                &numeric_grad(&l, |l| total(l, &m)),
            );
            check(
                &format!("case {case} dmulv"),
                &gdm.read(gpu).unwrap(),
                &numeric_grad(&m, |m| total(&l, m)),
            );
        }
    });
}

/// L = scale * sum over valid rows of a stacked layer's Monte-Carlo KL, with z sampled from
/// the posterior's mu | logvar and fixed noise: the kernel's gradients, with the code's
/// added through the sampling path as the graph's backward adds it, against finite
/// differences by the posterior's and the prior's mu | logvar.
#[test]
fn level_kl_gradients() {
    use vae_gpu::ops::level::{level, LevelBuffers};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(61);
        for (rows, valid, z) in [(1, 1, 1), (4, 3, 2), (3, 3, 5)] {
            let (m32, m) = rng.vec(rows * 2 * z, -1.5, 1.5);
            let (e32, e) = rng.vec(rows * z, -2.0, 2.0);
            let (p32, p) = rng.vec(rows * 2 * z, -1.5, 1.5);
            let scale = 0.6;
            let kl_sum = |m: &[f64], p: &[f64]| {
                let out = cpu::level::level_kl(m, &e, p, (rows, valid, z), (1.0, &[]));
                scale * out.kl.iter().sum::<f64>()
            };
            let z32: Vec<f32> = cpu::level::level_kl(&m, &e, &p, (rows, valid, z), (1.0, &[]))
                .z
                .iter()
                .map(|&v| v as f32)
                .collect();
            let (gm, ge, gz, gp) = (
                upload(gpu, rows, 2 * z, &m32),
                upload(gpu, rows, z, &e32),
                upload(gpu, rows, z, &z32),
                upload(gpu, rows, 2 * z, &p32),
            );
            let zeros = |cols| Matrix::zeros(gpu, rows, cols, "gradient").unwrap();
            let (gdz, gdm, gdp) = (zeros(z), zeros(2 * z), zeros(2 * z));
            let ps = zeros(3);
            let mut d = level(
                gpu,
                &LevelBuffers {
                    mulv: &gm,
                    z: &gz,
                    eps: &ge,
                    prior: &gp,
                    per_sample: &ps,
                    dz: &gdz,
                    dmulv: &gdm,
                    dprior: &gdp,
                    row_scale: None,
                },
            )
            .unwrap();
            d.update(gpu, valid, 1.0, scale as f32);
            let back = sample_backward(gpu, &gm, &gdz, &ge, &gdm).unwrap();
            gpu.run(&[&d.rows, &d.grads, &back]).unwrap();
            let what = format!("rows {rows} valid {valid} z {z}");
            check(
                &format!("{what} dmulv"),
                &gdm.read(gpu).unwrap(),
                &numeric_grad(&m, |m| kl_sum(m, &p)),
            );
            check(
                &format!("{what} dprior"),
                &gdp.read(gpu).unwrap(),
                &numeric_grad(&p, |p| kl_sum(&m, p)),
            );
        }
    });
}

/// L = scale * sum over valid records of the VampPrior's Monte-Carlo KL, with z sampled from
/// the records' mu | logvar and fixed noise (the path through z included): the gradients
/// of the records' and the components' mu | logvar.
#[test]
fn vamp_kl_gradients() {
    use vae_gpu::ops::vamp::{vamp, VampBuffers};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(53);
        for (rows, valid, z, k) in [(1, 1, 1, 1), (4, 3, 2, 3), (3, 3, 3, 5)] {
            let (m32, m) = rng.vec(rows * 2 * z, -1.5, 1.5);
            let (e32, e) = rng.vec(rows * z, -2.0, 2.0);
            let (p32, p) = rng.vec(k * 2 * z, -1.5, 1.5);
            let scale = 0.6;
            let kl_sum = |m: &[f64], p: &[f64]| {
                let out = cpu::vamp::vamp_kl(m, &e, p, (rows, valid, z), (1.0, &[], false));
                scale * out.kl.iter().sum::<f64>()
            };
            let z32: Vec<f32> = cpu::vamp::vamp_kl(&m, &e, &p, (rows, valid, z), (1.0, &[], false))
                .z
                .iter()
                .map(|&v| v as f32)
                .collect();
            let (gdm, gdp) = (
                Matrix::zeros(gpu, rows, 2 * z, "dmulv").unwrap(),
                Matrix::zeros(gpu, k, 2 * z, "dpmulv").unwrap(),
            );
            let ps = Matrix::zeros(gpu, rows, 3, "per-sample").unwrap();
            let (gm, ge, gz, gp) = (
                upload(gpu, rows, 2 * z, &m32),
                upload(gpu, rows, z, &e32),
                upload(gpu, rows, z, &z32),
                upload(gpu, k, 2 * z, &p32),
            );
            let mut d = vamp(
                gpu,
                &VampBuffers {
                    mulv: &gm,
                    z: &gz,
                    eps: &ge,
                    pmulv: &gp,
                    per_sample: &ps,
                    dmulv: &gdm,
                    dpmulv: &gdp,
                    row_scale: None,
                },
            )
            .unwrap();
            d.update(gpu, valid, 1.0, scale as f32);
            gpu.run(&d.launches()).unwrap();
            let what = format!("rows {rows} valid {valid} z {z} k {k}");
            check(
                &format!("{what} dmulv"),
                &gdm.read(gpu).unwrap(),
                &numeric_grad(&m, |m| kl_sum(m, &p)),
            );
            check(
                &format!("{what} dpmulv"),
                &gdp.read(gpu).unwrap(),
                &numeric_grad(&p, |p| kl_sum(&m, p)),
            );
        }
    });
}

/// The importance-weighted objective of a training step: L = sum over valid records of
/// -(logsumexp_i log w_i - log K), log w_i = -(recon_i + kl_i) over each record's K rows
/// (or, averaged, the mean of the K losses),
/// kl_i the Monte-Carlo KL against N(0, I) with z sampled from mu | logvar and fixed noise.
/// The loss (reconstruction only), the KL launch with one standard component and the
/// weights must give the gradients of the logits and of mu | logvar.
#[test]
fn iwae_objective_gradients() {
    use vae_gpu::ops::iwae::iwae_weights;
    use vae_gpu::ops::vamp::{vamp, VampBuffers};
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(61);
        for ((records, valid, k, d, z), average) in [
            ((1, 1, 2, 3, 1), false),
            ((3, 2, 3, 5, 2), false),
            ((2, 2, 4, 9, 3), false),
            ((3, 2, 3, 5, 2), true),
        ] {
            let rows = records * k;
            let (l32, l) = rng.vec(rows * d, -3.0, 3.0);
            let (x32, x) = rng.vec(rows * d, 0.0, 1.0);
            let (m32, m) = rng.vec(rows * 2 * z, -1.5, 1.5);
            let (e32, e) = rng.vec(rows * z, -2.0, 2.0);
            let standard = vec![0.0; 2 * z];
            let recon_only = LossSettings {
                beta: 0.0,
                valid: valid * k,
                ..Default::default()
            };
            let objective = |l: &[f64], m: &[f64]| {
                let recon = cpu::loss::loss(l, &x, m, rows, d, z, &recon_only).per_sample;
                let kl =
                    cpu::vamp::vamp_kl(m, &e, &standard, (rows, valid * k, z), (1.0, &[], false))
                        .kl;
                let totals: Vec<f64> = (0..rows).map(|r| recon[r * 3] + kl[r]).collect();
                cpu::loss::iwae_weights(&totals, (k, average), valid)
                    .1
                    .iter()
                    .sum::<f64>()
            };
            let z32: Vec<f32> =
                cpu::vamp::vamp_kl(&m, &e, &standard, (rows, rows, z), (1.0, &[], false))
                    .z
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
            let (gl, gx, gm, ge, gz) = (
                upload(gpu, rows, d, &l32),
                upload(gpu, rows, d, &x32),
                upload(gpu, rows, 2 * z, &m32),
                upload(gpu, rows, z, &e32),
                upload(gpu, rows, z, &z32),
            );
            let (gdl, gdm, gps, gacc) = (
                Matrix::zeros(gpu, rows, d, "dl").unwrap(),
                Matrix::zeros(gpu, rows, 2 * z, "dm").unwrap(),
                Matrix::zeros(gpu, rows, 3, "ps").unwrap(),
                Matrix::zeros(gpu, 1, 4, "acc").unwrap(),
            );
            let (gs, gds) = (
                Matrix::zeros(gpu, 1, 2 * z, "N(0, I)").unwrap(),
                Matrix::zeros(gpu, 1, 2 * z, "unused").unwrap(),
            );
            let losses = loss(
                gpu,
                &LossBuffers {
                    logits: &gl,
                    x: &gx,
                    mulv: &gm,
                    dlogits: &gdl,
                    dmulv: &gdm,
                    per_sample: &gps,
                    accum: &gacc,
                },
                &recon_only,
            )
            .unwrap();
            let mut kl = vamp(
                gpu,
                &VampBuffers {
                    mulv: &gm,
                    z: &gz,
                    eps: &ge,
                    pmulv: &gs,
                    per_sample: &gps,
                    dmulv: &gdm,
                    dpmulv: &gds,
                    row_scale: None,
                },
            )
            .unwrap();
            kl.update(gpu, valid * k, 1.0, 1.0);
            let mut w = iwae_weights(gpu, (k, average), &gps, (&gdl, &gdm), None).unwrap();
            w.update(gpu, valid, 1.0);
            let mut all: Vec<_> = losses.per_sample().to_vec();
            all.extend(&kl.records);
            all.extend(w.launches());
            gpu.run(&all).unwrap();
            let what = format!("records {records} valid {valid} k {k} average {average}");
            check(
                &format!("{what} dlogits"),
                &gdl.read(gpu).unwrap(),
                &numeric_grad(&l, |l| objective(l, &m)),
            );
            check(
                &format!("{what} dmulv"),
                &gdm.read(gpu).unwrap(),
                &numeric_grad(&m, |m| objective(&l, m)),
            );
            // Each record's bound in its first row's total.
            let ps = gps.read(gpu).unwrap();
            let got: f64 = (0..records).map(|g| f64::from(ps[g * k * 3 + 2])).sum();
            let want = objective(&l, &m);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs(),
                "{what}: bound {got} vs {want}"
            );
        }
    });
}

/// L = scale * sum of per-row cross-entropies of softmax(logits) against labels.
#[test]
fn softmax_xent_gradients() {
    use vae_gpu::ops::softmax::softmax_xent;
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(59);
        let (rows, classes, scale) = (4, 5, 0.25);
        let (l32, l) = rng.vec(rows * classes, -3.0, 3.0);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(classes) as u32).collect();
        let gl = upload(gpu, rows, classes, &l32);
        let gy = upload(gpu, 1, rows, bytemuck::cast_slice(&labels));
        let (gg, gloss) = (
            Matrix::zeros(gpu, rows, classes, "g").unwrap(),
            Matrix::zeros(gpu, 1, rows, "loss").unwrap(),
        );
        gpu.run(&[
            &softmax_xent(gpu, &gl, &gy.buffer, &gg, &gloss, rows, scale as f32)
                .unwrap()
                .dispatch,
        ])
        .unwrap();
        let fd = numeric_grad(&l, |l| {
            scale
                * cpu::loss::softmax_xent(l, &labels, classes, 1.0)
                    .0
                    .iter()
                    .sum::<f64>()
        });
        check("softmax_xent", &gg.read(gpu).unwrap(), &fd);
    });
}
