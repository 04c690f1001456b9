//! The Gaussian mixture prior: one EM iteration on the GPU against its f64 twin
//! (`cpu::gmm`) on random codes and awkward sizes, every adapter; a fit recovers a known
//! mixture; the seed fixes the fit and the samples. From the command line, `sample --prior
//! gmm:K` fits one to a run's training codes, saves it in the run and reuses it.

mod common;

use common::cli::{assert_grid, data, fails_with, ok, run, tmp};
use common::{for_each_gpu, Rng};
use vae_gpu::cpu;
use vae_gpu::vae::gmm::{fit, sample_per_class, EmStep, Fitted, Gmm};

/// Codes from three well-separated diagonal Gaussians in `d` dimensions (weights 0.5, 0.3,
/// 0.2), with the truth.
fn three_clusters(n: usize, d: usize, seed: u64) -> (Vec<f32>, Gmm) {
    let truth = Gmm {
        weights: vec![0.5, 0.3, 0.2],
        means: (0..3)
            .map(|c| {
                (0..d)
                    .map(|j| 6.0 * c as f64 - 6.0 + 0.5 * j as f64)
                    .collect()
            })
            .collect(),
        variances: (0..3)
            .map(|c| {
                (0..d)
                    .map(|j| 0.2 + 0.3 * c as f64 + 0.05 * j as f64)
                    .collect()
            })
            .collect(),
        log_likelihood: 0.0,
        iterations: 0,
    };
    (truth.sample(n, seed, 1.0), truth)
}

#[test]
fn an_em_iteration_matches_its_twin() {
    for_each_gpu(|gpu| {
        let mut rng = Rng::new(61);
        for (n, d, k) in [
            (1, 1, 1),
            (7, 3, 2),
            (100, 5, 3),
            (333, 20, 10),
            (64, 2, 17),
        ] {
            let (codes, _) = rng.vec(n * d, -3.0, 3.0);
            let k = k.min(n);
            let g = Gmm::init(&codes, d, k, 5);
            let step = EmStep::new(gpu, &codes, d, k).unwrap();
            let got = step.run(gpu, &g, &mut Rng::new(1), &codes).unwrap();
            let x: Vec<f64> = codes.iter().map(|&v| f64::from(v)).collect();
            let (nk, s, ll) = cpu::gmm::statistics(&x, d, (&g.weights, &g.means, &g.variances));
            let want = Gmm::from_stats(&nk, &s, n, ll, &mut || unreachable!("no empty component"));
            let what = format!("n {n} d {d} k {k}");
            assert!(
                (got.log_likelihood - want.log_likelihood).abs()
                    <= 1e-4 * want.log_likelihood.abs() + 1e-4,
                "{what}: log-likelihood {} vs {}",
                got.log_likelihood,
                want.log_likelihood
            );
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b.abs() + 1e-4;
            for c in 0..k {
                assert!(close(got.weights[c], want.weights[c]), "{what}: weight {c}");
                for j in 0..d {
                    assert!(
                        close(got.means[c][j], want.means[c][j]),
                        "{what}: mean {c} {j}: {} vs {}",
                        got.means[c][j],
                        want.means[c][j]
                    );
                    assert!(
                        close(got.variances[c][j], want.variances[c][j]),
                        "{what}: variance {c} {j}: {} vs {}",
                        got.variances[c][j],
                        want.variances[c][j]
                    );
                }
            }
        }
    });
}

#[test]
fn a_fit_recovers_a_known_mixture() {
    for_each_gpu(|gpu| {
        let d = 4;
        let (codes, truth) = three_clusters(6000, d, 3);
        let g = fit(gpu, &codes, d, 3, 7, &mut |_, _| {}).unwrap();
        assert!(g.iterations > 1);
        // Components in the truth's order (their means are far apart along every axis).
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by(|&a, &b| g.means[a][0].total_cmp(&g.means[b][0]));
        for (c, &k) in order.iter().enumerate() {
            assert!(
                (g.weights[k] - truth.weights[c]).abs() < 0.03,
                "weight {c}: {:?}",
                g.weights
            );
            for j in 0..d {
                assert!(
                    (g.means[k][j] - truth.means[c][j]).abs() < 0.1,
                    "mean {c} {j}"
                );
                let ratio = g.variances[k][j] / truth.variances[c][j];
                assert!(
                    (0.85..1.15).contains(&ratio),
                    "variance {c} {j}: ratio {ratio}"
                );
            }
        }
        // The seed fixes the fit and the draws.
        assert_eq!(g, fit(gpu, &codes, d, 3, 7, &mut |_, _| {}).unwrap());
        assert_eq!(g.sample(10, 4, 1.0), g.sample(10, 4, 1.0));
        assert_ne!(g.sample(10, 4, 1.0), g.sample(10, 5, 1.0));
    });
}

/// A conditional model's prior: each row's code from its own class's mixture, a class's
/// codes the same whatever else is asked, and a class without a mixture named.
#[test]
fn per_class_mixtures_draw_each_row_from_its_class() {
    let one = |at: f64| Gmm {
        weights: vec![1.0],
        means: vec![vec![at; 2]],
        variances: vec![vec![0.01; 2]],
        log_likelihood: 0.0,
        iterations: 0,
    };
    let mixtures = vec![Some(one(-10.0)), Some(one(10.0)), None];
    let classes = [1u8, 0, 1, 1, 0];
    let codes = sample_per_class(&mixtures, &classes, 7, 1.0).unwrap();
    assert_eq!(codes.len(), classes.len() * 2);
    for (code, &l) in codes.chunks(2).zip(&classes) {
        let at = if l == 0 { -10.0 } else { 10.0 };
        assert!(
            code.iter().all(|&v| (v - at).abs() < 1.0),
            "class {l}: {code:?}"
        );
    }
    assert_eq!(
        codes,
        sample_per_class(&mixtures, &classes, 7, 1.0).unwrap()
    );
    assert_ne!(
        codes,
        sample_per_class(&mixtures, &classes, 8, 1.0).unwrap()
    );
    // Class 1's codes alone are its rows' codes among the others.
    let alone = sample_per_class(&mixtures, &[1, 1, 1], 7, 1.0).unwrap();
    let among: Vec<f32> = [0, 2, 3]
        .iter()
        .flat_map(|&i| codes[2 * i..2 * i + 2].to_vec())
        .collect();
    assert_eq!(alone, among);
    let err = sample_per_class(&mixtures, &[0, 2], 7, 1.0).unwrap_err();
    assert!(err.contains("class 2 has no mixture"), "{err}");
    let err = sample_per_class(&mixtures, &[0, 5], 7, 1.0).unwrap_err();
    assert!(err.contains("class 5"), "{err}");

    // In a run's file one mixture is an object, per-class ones a list; each is checked
    // against the model it is used for.
    let per_class = Fitted::PerClass(mixtures.clone());
    let text = serde_json::to_string(&per_class).unwrap();
    assert_eq!(serde_json::from_str::<Fitted>(&text).unwrap(), per_class);
    let shared = Fitted::Shared(one(0.0));
    let text = serde_json::to_string(&shared).unwrap();
    assert!(text.starts_with('{'), "{text}");
    assert_eq!(serde_json::from_str::<Fitted>(&text).unwrap(), shared);
    assert!(per_class.check(2, 1, Some(3)).is_ok());
    assert!(per_class.check(2, 1, Some(10)).is_err());
    assert!(per_class.check(2, 1, None).is_err());
    assert!(per_class.check(3, 1, Some(3)).is_err());
    assert!(shared.check(2, 1, None).is_ok());
    assert!(shared.check(2, 1, Some(3)).is_err());
}

#[test]
fn sample_fits_saves_and_reuses_a_mixture() {
    let d = data();
    let model = tmp().join("gmm-run").display().to_string();
    ok(&[
        "train", "--data", &d, "--limit", "512", "--epochs", "1", "--hidden", "64", "--out",
        &model, "--quiet",
    ]);
    let grid = |name: &str| tmp().join(name).display().to_string();
    let sample = |prior: &str, out: &str| {
        let args = [
            "sample", "--model", &model, "--prior", prior, "--count", "6", "--out", out,
        ];
        let o = run(&args);
        assert!(o.status.success(), "sample --prior {prior} failed");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let first = sample("gmm:3", &grid("gmm1.png"));
    assert!(first.contains("fitted 3 Gaussians"), "{first}");
    assert_grid(&grid("gmm1.png"), 3, 2, 56);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{model}/gmm-3.json")).unwrap())
            .unwrap();
    let weights = saved["mixture"]["weights"].as_array().unwrap();
    assert_eq!(weights.len(), 3);
    let total: f64 = weights.iter().map(|w| w.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "weights sum to {total}");
    assert_eq!(saved["mixture"]["means"][0].as_array().unwrap().len(), 20);

    // The same weights, seed and data: the saved mixture, and the same picture.
    let again = sample("gmm:3", &grid("gmm2.png"));
    assert!(again.contains("mixture in"), "{again}");
    let bytes = |p: &str| std::fs::read(grid(p)).unwrap();
    assert_eq!(bytes("gmm1.png"), bytes("gmm2.png"));
    // N(0, I) draws other codes.
    sample("normal", &grid("normal.png"));
    assert_ne!(bytes("gmm1.png"), bytes("normal.png"));

    // An edited file is checked, not trusted: a wrong shape or an impossible variance is
    // fitted again (with a warning), never a panic or NaN codes.
    let file = format!("{model}/gmm-3.json");
    let good = std::fs::read_to_string(&file).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&good).unwrap();
    edited["mixture"]["means"][1] = serde_json::json!([0.0, 1.0]);
    std::fs::write(&file, edited.to_string()).unwrap();
    let refit = sample("gmm:3", &grid("gmm3.png"));
    assert!(
        refit.contains("not over the model's 20 latent dimensions")
            && refit.contains("fitted 3 Gaussians"),
        "{refit}"
    );
    assert_eq!(bytes("gmm1.png"), bytes("gmm3.png"));
    let mut edited: serde_json::Value = serde_json::from_str(&good).unwrap();
    edited["mixture"]["variances"][0][0] = serde_json::json!(-1.0);
    std::fs::write(&file, edited.to_string()).unwrap();
    assert!(sample("gmm:3", &grid("gmm4.png")).contains("fitting again"));
    // Finite in f64, overflowing in the decoder's f32: refused too.
    let mut edited: serde_json::Value = serde_json::from_str(&good).unwrap();
    edited["mixture"]["means"][2][0] = serde_json::json!(1e300);
    std::fs::write(&file, edited.to_string()).unwrap();
    assert!(sample("gmm:3", &grid("gmm5.png")).contains("a mean beyond"));
    fails_with(
        &["sample", "--model", &model, "--temperature", "3e38"],
        2,
        &["temperature from 0 to 10"],
    );
    // The run's fits are not an output's to take.
    fails_with(
        &["report", "--model", &model, "--out", &file],
        1,
        &["gmm-3.json", "would write over"],
    );

    fails_with(
        &["sample", "--model", &model, "--prior", "gmm:0"],
        2,
        &["gmm:0", "1 to 256"],
    );
    fails_with(
        &["sample", "--model", &model, "--prior", "flow"],
        2,
        &["normal, gmm, gmm:K or vamp"],
    );
    fails_with(
        &[
            "sample",
            "--model",
            &model,
            "--prior",
            "gmm:4",
            "--data",
            "/nonexistent/codes",
        ],
        1,
        &["/nonexistent/codes", "--prior gmm"],
    );
}

/// A mixture is fitted to the training split itself: other contents at the same path are
/// fitted again, and a run whose data is gone asks for it rather than fitting other data.
#[test]
fn a_mixture_follows_the_data() {
    let copy = tmp().join("fm-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(data()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let c = copy.display().to_string();
    let model = tmp().join("gmm-data-run").display().to_string();
    ok(&[
        "train", "--data", &c, "--limit", "256", "--epochs", "1", "--hidden", "32", "--out",
        &model, "--quiet",
    ]);
    let sample = |extra: &[&str]| {
        let mut args = vec![
            "sample", "--model", &model, "--prior", "gmm:2", "--count", "4",
        ];
        args.extend(extra);
        run(&args)
    };
    let out = tmp().join("gmm-data.png").display().to_string();
    assert!(sample(&["--out", &out]).status.success());
    // Other images under the same path (the test split copied over the training split):
    // fitted again, to the first 256 of them (the run's --limit).
    for (from, to) in [
        ("t10k-images", "train-images"),
        ("t10k-labels", "train-labels"),
    ] {
        let name = |stem: &str| {
            std::fs::read_dir(&copy)
                .unwrap()
                .map(|f| f.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(stem))
                .unwrap()
        };
        std::fs::copy(name(from), name(to)).unwrap();
    }
    let again = sample(&["--out", &out]);
    let text = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        text.contains("fitted 2 Gaussians to the latent means of 256 training"),
        "{text}"
    );
    std::fs::remove_dir_all(&copy).unwrap();
    fails_with(
        &[
            "sample", "--model", &model, "--prior", "gmm:2", "--out", &out,
        ],
        1,
        &["fm-copy", "is gone", "--data"],
    );
}
