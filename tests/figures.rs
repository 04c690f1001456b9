//! What the pictures and the collapse remedies promise: charts for any number of classes
//! and for a single epoch, the cyclical beta schedule, free bits in the loss kernel, active
//! units falling under a large beta, and the report rendering in a real browser.

mod common;

use std::path::Path;

use common::cli::{data, json, number, ok, tmp};
use common::for_each_gpu;
use vae_gpu::gpu::Matrix;
use vae_gpu::io::chart;
use vae_gpu::ops::loss::{loss, LossBuffers, LossSettings};
use vae_gpu::vae::train::EpochMetrics;
use vae_gpu::{Images, Losses, TrainConfig, Trainer};

/// Distinct colours in a region of a PNG.
fn colours(path: &Path, x0: u32, x1: u32) -> usize {
    let img = image::open(path).unwrap().to_rgb8();
    let mut seen: Vec<[u8; 3]> = img
        .enumerate_pixels()
        .filter(|(x, _, _)| (x0..x1).contains(x))
        .map(|(_, _, p)| p.0)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

#[test]
fn scatter_legend_holds_47_classes() {
    let dir = tmp().join("figures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scatter47.png");
    let labels: Vec<u8> = (0..940).map(|i| (i % 47) as u8).collect();
    let points: Vec<(f32, f32)> = (0..940)
        .map(|i| ((i % 47) as f32, (i / 47) as f32 * 0.1))
        .collect();
    chart::save_scatter(
        &path,
        "47 classes",
        ("x", "y"),
        &points,
        Some(&labels),
        &|l| format!("class {l}"),
    )
    .unwrap();
    let img = image::open(&path).unwrap();
    // Two legend columns of 24 entries at most.
    assert_eq!((img.width(), img.height()), (760 + 2 * 170, 720));
    // Every class has its own colour in the legend (plus text and background shades).
    assert!(colours(&path, 760, 760 + 340) >= 47, "legend colours");
}

fn epoch(e: usize, total: f64) -> EpochMetrics {
    let l = Losses {
        recon: total - 10.0,
        kl: 10.0,
        total,
    };
    EpochMetrics {
        epoch: e,
        step: 10 * e as u64,
        beta: 1.0,
        train: l,
        test: l,
        samples_per_sec: 100.0,
        step_losses: vec![(10 * e as u64 - 5, total + 5.0)],
        kl_per_dim: vec![5.0, 5.0],
        active_units: Some(2),
    }
}

/// One epoch is a dot per series, not an empty chart.
#[test]
fn loss_chart_of_one_epoch_shows_points() {
    let dir = tmp().join("figures");
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("loss1.png");
    chart::save_loss_chart(&one, &vae_gpu::vae::train::chart_points(&[epoch(1, 300.0)])).unwrap();
    let img = image::open(&one).unwrap().to_rgb8();
    // The series colours (tab10 blue and orange) are drawn.
    let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
    assert!(has([31, 119, 180]) && has([255, 127, 14]), "markers drawn");
}

#[test]
fn cyclical_annealing_follows_its_schedule() {
    let t = TrainConfig {
        beta: 2.0,
        epochs: 4,
        kl_cycles: 2,
        ..TrainConfig::default()
    };
    // Two cycles of two epochs: beta rises over the first epoch of each, then holds.
    for (epoch, frac, want) in [
        (0, 0.0, 0.0),
        (0, 0.5, 1.0),
        (0, 0.99, 1.98),
        (1, 0.0, 2.0),
        (1, 0.7, 2.0),
        (2, 0.0, 0.0),
        (2, 0.25, 0.5),
        (3, 0.5, 2.0),
    ] {
        let got = t.beta_at(epoch, frac);
        assert!(
            (got - want).abs() < 1e-4,
            "epoch {epoch} + {frac}: beta {got}, want {want}"
        );
    }
    assert!(
        TrainConfig {
            kl_warmup: 2,
            ..t.clone()
        }
        .validate(&vae_gpu::ModelConfig::mlp(28, 28, 1))
        .is_err(),
        "one schedule at a time"
    );
}

/// With the posterior at the prior (KL 0 in every dimension), each dimension still costs
/// free_bits in the total, and no gradient pushes mu or logvar.
#[test]
fn free_bits_floor_each_dimension_in_the_loss() {
    for_each_gpu(|gpu| {
        let (rows, d, z) = (3, 5, 4);
        let s = LossSettings {
            beta: 2.0,
            valid: rows,
            free_bits: 0.5,
            ..LossSettings::default()
        };
        let m = |cols: usize, v: f32| {
            Matrix::from_slice(gpu, rows, cols, &vec![v; rows * cols], "m").unwrap()
        };
        let (logits, x, mulv) = (m(d, 0.3), m(d, 0.5), m(2 * z, 0.0));
        let (dlogits, dmulv, per_sample) = (m(d, 9.0), m(2 * z, 9.0), m(3, 0.0));
        let accum = Matrix::zeros(gpu, 1, 4, "accum").unwrap();
        let b = LossBuffers {
            logits: &logits,
            x: &x,
            mulv: &mulv,
            dlogits: &dlogits,
            dmulv: &dmulv,
            per_sample: &per_sample,
            accum: &accum,
        };
        let l = loss(gpu, &b, &s).unwrap();
        gpu.run(&l.per_sample()).unwrap();
        let ps = per_sample.read(gpu).unwrap();
        for r in 0..rows {
            let (recon, kl, total) = (ps[r * 3], ps[r * 3 + 1], ps[r * 3 + 2]);
            assert!(kl.abs() < 1e-6, "the true KL is reported: {kl}");
            let want = recon + 2.0 * 4.0 * 0.5;
            assert!(
                (total - want).abs() < 1e-4,
                "row {r}: total {total}, want {want}"
            );
        }
        assert!(
            dmulv.read(gpu).unwrap().iter().all(|&g| g == 0.0),
            "no gradient below the floor"
        );
    });
}

/// Burda et al.'s active units fall when beta is large: the KL term shuts dimensions off.
#[test]
fn active_units_fall_under_a_large_beta() {
    let s = vae_gpu::load_data(Some(&vae_gpu::data::bundled_dir()), &Default::default()).unwrap();
    let (train, test): (Images, Images) = (s.train.take(2048), s.test.take(500));
    let active = |beta: f32| {
        Trainer::new()
            .mlp(&[64])
            .latent(8)
            .epochs(3)
            .beta(beta)
            .learning_rate(3e-3)
            .fit(&train, &test)
            .unwrap()
            .metrics()
            .and_then(|m| m.active_units)
            .unwrap()
    };
    let (normal, heavy) = (active(1.0), active(40.0));
    assert!(
        heavy < normal,
        "beta 40: {heavy} active units, beta 1: {normal}"
    );
    assert!(heavy <= 2, "beta 40 leaves {heavy} active units");
}

/// edit, coverage and report on a small trained model; the report renders in headless
/// Chromium without console errors.
#[test]
fn edit_coverage_and_report() {
    let d = data();
    let run = tmp().join("figures-run").display().to_string();
    ok(&[
        "train", "--data", &d, "--limit", "3000", "--hidden", "128", "--latent", "6", "--epochs",
        "2", "--out", &run, "--quiet",
    ]);
    for f in ["samples.png", "reconstructions.png", "loss.png"] {
        assert!(
            Path::new(&run).join(f).exists(),
            "{f} written during training"
        );
    }
    let metrics = std::fs::read_to_string(Path::new(&run).join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["kl_per_dim"].as_array().map(Vec::len),
        Some(6),
        "{last}"
    );
    assert!(
        last["active_units"].as_u64().is_some_and(|a| a <= 6),
        "{last}"
    );

    let edit = &json(&[
        "edit",
        "--model",
        &run,
        "--data",
        &d,
        "--from",
        "Trouser",
        "--to",
        "3",
        "--strength",
        "0,1",
        "--count",
        "2",
    ])[0];
    assert_eq!(
        (edit["from"].as_str(), edit["to"].as_str()),
        (Some("Trouser"), Some("Dress"))
    );
    assert!(number(edit, &["vector_norm"]) > 0.1, "{edit}");
    common::cli::assert_grid(edit["out"].as_str().unwrap(), 3, 2, 56);

    let cov = &json(&[
        "coverage", "--model", &run, "--data", &d, "--count", "2000", "--steps", "100",
    ])[0];
    assert_eq!(cov["classes"].as_array().map(Vec::len), Some(10), "{cov}");
    let tv = number(cov, &["total_variation"]);
    assert!((0.0..=1.0).contains(&tv), "{cov}");
    assert!(
        number(cov, &["covered"]) >= 5.0,
        "even a small model covers most classes: {cov}"
    );
    assert!(number(cov, &["classifier_accuracy"]) > 0.5, "{cov}");

    let scatter = &json(&[
        "scatter", "--model", &run, "--data", &d, "--limit", "500", "--pca",
    ])[0];
    let explained: Vec<f64> = scatter["explained_variance"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    assert!(
        explained.len() == 2
            && explained[0] >= explained[1]
            && explained[1] > 0.0
            && explained[0] + explained[1] <= 1.0 + 1e-9,
        "{scatter}"
    );

    let html = format!("{run}/report.html");
    ok(&[
        "report", &run, "--data", &d, "--limit", "500", "--out", &html,
    ]);
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text.matches("<img").count(), 6, "six figures");
    assert!(
        !text.contains("src=\"http") && !text.contains("<script"),
        "self-contained"
    );
    browser_renders(&html);
}

/// Loads `html` in headless Chromium (CI installs it; elsewhere a missing browser skips the
/// check with a note, unless CI=true), takes a screenshot and checks that something was
/// drawn and that the console logged no error.
fn browser_renders(html: &str) {
    let Some(browser) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but no Chromium to render the report"
        );
        eprintln!("note: no Chromium found; the report was not rendered");
        return;
    };
    let shot = format!("{html}.png");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2400",
            &format!("--screenshot={shot}"),
            &format!(
                "file://{}",
                Path::new(html).canonicalize().unwrap().display()
            ),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let img = image::open(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {log}"))
        .to_rgb8();
    assert_eq!(img.dimensions(), (1200, 2400));
    let distinct = {
        let mut v: Vec<[u8; 3]> = img.pixels().step_by(7).map(|p| p.0).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    assert!(
        distinct > 50,
        "the screenshot is nearly blank ({distinct} colours)"
    );
}
