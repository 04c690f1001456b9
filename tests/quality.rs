//! The sample-quality score: the Fréchet distance against closed forms on known Gaussians,
//! the eigen-decomposition behind it, precision and recall on the GPU against a brute-force
//! f64 twin on awkward sizes (every adapter) and on sets whose answer is known; from the
//! command line, `quality` trains its classifier once, reuses it, scores samples against
//! the real floor, and refuses data without labels.

mod common;

use common::cli::{data, fails_with, number, ok, run, tmp};
use common::{for_each_gpu, Rng};
use vae_gpu::vae::quality::{eigen_symmetric, frechet, precision_recall, Moments};

fn moments(mean: &[f64], cov: &[f64]) -> Moments {
    Moments {
        mean: mean.to_vec(),
        cov: cov.to_vec(),
    }
}

#[test]
fn frechet_matches_closed_forms() {
    // Diagonal covariances commute: |m1 - m2|² + sum (s1 - s2)² over standard deviations.
    let a = moments(
        &[0.0, 1.0, -2.0],
        &[4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25],
    );
    let b = moments(
        &[1.0, 1.0, 0.0],
        &[1.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.25],
    );
    let want = 1.0 + 4.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
    assert!((frechet(&a, &b) - want).abs() < 1e-9, "{}", frechet(&a, &b));
    assert!(frechet(&a, &a).abs() < 1e-9);
    // Covariances that do not commute: tr((S1 S2)^½) is the sum of the square roots of
    // S1 S2's eigenvalues, which a 2x2 gives in closed form.
    let (s1, s2): ([f64; 4], [f64; 4]) = ([2.0, 0.8, 0.8, 1.0], [1.0, -0.3, -0.3, 3.0]);
    let p = [
        s1[0] * s2[0] + s1[1] * s2[2],
        s1[0] * s2[1] + s1[1] * s2[3],
        s1[2] * s2[0] + s1[3] * s2[2],
        s1[2] * s2[1] + s1[3] * s2[3],
    ];
    let (tr, det) = (p[0] + p[3], p[0] * p[3] - p[1] * p[2]);
    let disc = (tr * tr - 4.0 * det).sqrt();
    let cross = ((tr + disc) / 2.0).sqrt() + ((tr - disc) / 2.0).sqrt();
    let want = 0.25 + 3.0 + 4.0 - 2.0 * cross;
    let got = frechet(&moments(&[0.5, 0.0], &s1), &moments(&[0.0, 0.0], &s2));
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    // Symmetric in its arguments.
    let back = frechet(&moments(&[0.0, 0.0], &s2), &moments(&[0.5, 0.0], &s1));
    assert!((got - back).abs() < 1e-9);
}

#[test]
fn eigen_decomposition_rebuilds_the_matrix() {
    let mut rng = Rng::new(5);
    for d in [1, 2, 7, 30] {
        let (_, r) = rng.vec(d * d, -1.0, 1.0);
        let m: Vec<f64> = (0..d * d)
            .map(|i| (r[i] + r[(i % d) * d + i / d]) / 2.0)
            .collect();
        let (values, vectors) = eigen_symmetric(&m, d);
        for i in 0..d {
            for j in 0..d {
                let rebuilt: f64 = (0..d)
                    .map(|k| vectors[i * d + k] * values[k] * vectors[j * d + k])
                    .sum();
                assert!((rebuilt - m[i * d + j]).abs() < 1e-10, "d {d} [{i}, {j}]");
            }
        }
    }
}

/// Kynkäänniemi et al.'s precision and recall, by brute force in f64.
fn twin(real: &[f64], fake: &[f64], d: usize, k: usize) -> (f64, f64) {
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let radii = |x: &[f64]| -> Vec<f64> {
        let rows: Vec<&[f64]> = x.chunks(d).collect();
        rows.iter()
            .enumerate()
            .map(|(i, a)| {
                let mut all: Vec<f64> = rows
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, b)| dist(a, b))
                    .collect();
                all.sort_by(f64::total_cmp);
                all[k - 1]
            })
            .collect()
    };
    let share = |points: &[f64], centres: &[f64], r: &[f64]| {
        let inside = points
            .chunks(d)
            .filter(|p| centres.chunks(d).zip(r).any(|(c, &r)| dist(p, c) <= r))
            .count();
        inside as f64 / (points.len() / d) as f64
    };
    (
        share(fake, real, &radii(real)),
        share(real, fake, &radii(fake)),
    )
}

#[test]
fn precision_and_recall_match_their_twin() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(17);
        for (n_real, n_fake, d, k) in [
            (7, 9, 1, 1),
            (37, 29, 5, 3),
            (101, 64, 13, 3),
            (300, 257, 128, 5),
        ] {
            let (real32, real) = rng.vec(n_real * d, -1.0, 1.0);
            // Fakes shifted and squeezed: some inside the real manifold, some not.
            let (fake32, fake) = rng.vec(n_fake * d, -0.5, 1.5);
            let got = precision_recall(gpu, &real32, &fake32, d, k).unwrap();
            let want = twin(&real, &fake, d, k);
            // A point on a ball's edge may fall either way in f32: one point of slack.
            assert!(
                (got.0 - want.0).abs() <= 1.0 / n_fake as f64 + 1e-12
                    && (got.1 - want.1).abs() <= 1.0 / n_real as f64 + 1e-12,
                "{n_real} real, {n_fake} fake, d {d}, k {k}: {got:?} vs {want:?}"
            );
        }
    });
}

/// `n` points of `d` dimensions around `centre` (uniform in +-1 on each axis).
fn cloud(rng: &mut Rng, n: usize, d: usize, centre: f64) -> Vec<f32> {
    rng.vec(n * d, centre - 1.0, centre + 1.0).0
}

#[test]
fn precision_and_recall_tell_fidelity_from_coverage() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(23);
        let d = 6;
        // The real data: two clusters far apart.
        let mut real = cloud(&mut rng, 300, d, 0.0);
        real.extend(cloud(&mut rng, 300, d, 10.0));
        // Fakes like the data: both high.
        let mut alike = cloud(&mut rng, 300, d, 0.0);
        alike.extend(cloud(&mut rng, 300, d, 10.0));
        let (p, r) = precision_recall(gpu, &real, &alike, d, 3).unwrap();
        assert!(p > 0.8 && r > 0.8, "alike: {p} {r}");
        // Mode collapse: every fake real-looking (precision high), half the data missed.
        let collapsed = cloud(&mut rng, 600, d, 10.0);
        let (p, r) = precision_recall(gpu, &real, &collapsed, d, 3).unwrap();
        assert!(p > 0.8 && (0.35..0.55).contains(&r), "collapsed: {p} {r}");
        // Nothing alike: both zero.
        let far = cloud(&mut rng, 600, d, 40.0);
        assert_eq!(
            precision_recall(gpu, &real, &far, d, 3).unwrap(),
            (0.0, 0.0)
        );
    });
}

#[test]
fn quality_scores_samples_against_the_real_floor() {
    let d = data();
    let model = tmp().join("q-run").display().to_string();
    ok(&[
        "train", "--data", &d, "--limit", "1024", "--epochs", "1", "--hidden", "64", "--out",
        &model, "--quiet",
    ]);
    let args = [
        "quality",
        "--model",
        &model,
        "--count",
        "400",
        "--classifier-epochs",
        "1",
    ];
    let first = run(&args);
    assert!(first.status.success());
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("classifier: a small conv net trained"),
        "the classifier is trained the first time"
    );
    let mut with_json = vec!["--json"];
    with_json.extend(args);
    let again = run(&with_json);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("(test accuracy"),
        "then reused from the cache"
    );
    let result: &serde_json::Value =
        &serde_json::from_str(String::from_utf8_lossy(&again.stdout).trim()).unwrap();
    assert_eq!(number(result, &["count"]), 400.0);
    let accuracy = number(result, &["classifier", "accuracy"]);
    assert!(accuracy > 0.6, "classifier accuracy {accuracy}");
    let (fake_fd, real_fd) = (
        number(result, &["samples", "frechet"]),
        number(result, &["real", "frechet"]),
    );
    assert!(real_fd < fake_fd, "floor {real_fd} vs samples {fake_fd}");
    assert!(number(result, &["real", "precision"]) > 0.5);
    for v in ["precision", "recall"] {
        assert!((0.0..=1.0).contains(&number(result, &["samples", v])));
    }

    // Another temperature's figures are kept apart from the full spread's.
    let mut cooler = with_json.clone();
    cooler.extend(["--temperature", "0.5"]);
    let cool: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&run(&cooler).stdout).trim()).unwrap();
    assert_eq!(number(&cool, &["temperature"]), 0.5);
    assert_eq!(cool["prior_file"], "normal-t0.5");
    let kept = |stem: &str| format!("{model}/quality-{stem}.json");
    let full: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept("normal")).unwrap()).unwrap();
    assert_eq!(number(&full, &["temperature"]), 1.0);
    assert!(std::path::Path::new(&kept("normal-t0.5")).exists());

    // A cached classifier changed on disk is trained again, not trusted.
    let cached = result["classifier"]["path"].as_str().unwrap().to_string();
    let mut weights = std::fs::read(&cached).unwrap();
    let at = weights.len() - 100;
    weights[at] ^= 0x55;
    std::fs::write(&cached, weights).unwrap();
    let third = run(&args);
    assert!(
        String::from_utf8_lossy(&third.stderr)
            .contains("classifier: a small conv net trained 1 epoch "),
        "trained again after the cache changed"
    );

    // A Bernoulli model's data must lie in [0, 1], in every command, not only in train.
    let mut bytes = vae_gpu::data::npy::header_bytes("<f4", &[300, 28, 28]);
    bytes.extend((0..300 * 784).flat_map(|i| ((i % 256) as f32).to_le_bytes()));
    let wide = tmp().join("f255.npy");
    std::fs::write(&wide, bytes).unwrap();
    fails_with(
        &["eval", "--model", &model, "--data", wide.to_str().unwrap()],
        1,
        &["needs values in [0, 1]"],
    );

    // Data without labels: nothing for the classifier to learn.
    let pixels = vec![7u8; 300 * 784];
    let mut bytes = vae_gpu::data::npy::header_bytes("|u1", &[300, 28, 28]);
    bytes.extend_from_slice(&pixels);
    let npy = tmp().join("unlabelled.npy");
    std::fs::write(&npy, bytes).unwrap();
    fails_with(
        &[
            "quality",
            "--model",
            &model,
            "--data",
            npy.to_str().unwrap(),
        ],
        1,
        &["unlabelled.npy", "quality needs labelled data"],
    );
}

/// The quality classifier's backward, derived by the graph compiler from a classifier
/// graph (the loss on the class logits alone), against central finite differences of the
/// graph in f64 (`graph::cpu`), on 40 entries of every tensor.
#[test]
fn the_classifier_backward_matches_finite_differences() {
    use std::collections::BTreeMap;
    use vae_gpu::gpu::Matrix;
    use vae_gpu::graph::{Mode, Params, Program};
    use vae_gpu::ops::adam::{adam, AdamConfig};
    use vae_gpu::ops::conv::Shape;
    use vae_gpu::ops::softmax::softmax_xent;
    use vae_gpu::vae::checkpoint::{tensors, tensors_of};
    for_each_gpu(|gpu| {
        let (rows, classes) = (5, 3);
        let shape = Shape { h: 8, w: 8, c: 1 };
        let g = vae_gpu::vae::featurenet::graph(shape, classes).unwrap();
        let params = Params::new(gpu, &g, 3).unwrap();
        let mut rng = Rng::new(29);
        let (x32, x) = rng.vec(rows * 64, 0.0, 1.0);
        let labels: Vec<u32> = (0..rows).map(|r| (r % classes) as u32).collect();
        let gx = Matrix::from_slice(gpu, rows, 64, &x32, "x").unwrap();
        let gy = Matrix::from_slice(gpu, 1, rows, bytemuck::cast_slice(&labels), "y").unwrap();
        let program = Program::new(gpu, &params, rows, Mode::Train, &[(g.x, &gx)]).unwrap();
        let loss = Matrix::zeros(gpu, 1, rows, "loss").unwrap();
        let scale = 1.0 / rows as f32;
        let xent = softmax_xent(
            gpu,
            program.value(g.logits),
            &gy.buffer,
            program.grad(g.logits),
            &loss,
            rows,
            scale,
        )
        .unwrap();
        // lr 0: Adam leaves the weights alone (and runs, as in training).
        let opt = adam(
            gpu,
            [&params.values, &params.grads, &params.m, &params.v],
            params.len,
            AdamConfig {
                lr: 0.0,
                ..AdamConfig::default()
            },
        )
        .unwrap();
        opt.set_step(gpu, 1);
        let mut all: Vec<_> = program.forward.iter().collect();
        all.push(&xent.dispatch);
        all.extend(&program.backward);
        all.push(&opt.dispatch);
        gpu.run(&all).unwrap();
        let grads = tensors_of(gpu, &params, &params.grads).unwrap();
        let weights = tensors(gpu, &params).unwrap();
        let total = |named: &BTreeMap<String, Vec<f64>>| {
            let values =
                vae_gpu::graph::cpu::forward(&g, named, (&x, None), &Default::default(), rows);
            let per_row =
                vae_gpu::cpu::loss::softmax_xent(&values[g.logits], &labels, classes, 1.0).0;
            per_row.iter().sum::<f64>() / rows as f64
        };
        let mut named: BTreeMap<String, Vec<f64>> = weights
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.data.iter().map(|&v| f64::from(v)).collect(),
                )
            })
            .collect();
        for grad in &grads {
            for _ in 0..40 {
                let i = rng.below(grad.data.len());
                let h = 1e-4;
                let v = named[&grad.name][i];
                named.get_mut(&grad.name).unwrap()[i] = v + h;
                let up = total(&named);
                named.get_mut(&grad.name).unwrap()[i] = v - h;
                let down = total(&named);
                named.get_mut(&grad.name).unwrap()[i] = v;
                let fd = (up - down) / (2.0 * h);
                let got = f64::from(grad.data[i]);
                assert!(
                    (got - fd).abs() <= 1e-3 * fd.abs() + 1e-4,
                    "{}[{i}]: {got} vs finite differences {fd}",
                    grad.name
                );
            }
        }
    });
}
