//! The commands that use a trained VAE, end to end on the bundled data with tiny models:
//! files exist with the right dimensions and the numbers behave.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::cli::{assert_grid, data, fails, json, number, ok, tmp};

/// A small model with a 2-D latent space, trained once per test binary.
fn model() -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = tmp().join("model").display().to_string();
        let d = data();
        ok(&[
            "train", "--data", &d, "--limit", "3000", "--hidden", "128", "--latent", "2",
            "--epochs", "3", "--seed", "2", "--out", &out, "--quiet",
        ]);
        out
    })
    .clone()
}

fn png_size(path: &str) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (img.width(), img.height())
}

#[test]
fn interpolate_traverse_manifold() {
    let (m, d) = (model(), data());
    let out = format!("{m}/i.png");
    ok(&[
        "interpolate",
        "--model",
        &m,
        "--data",
        &d,
        "--from",
        "0",
        "--to",
        "5",
        "--steps",
        "6",
        "--slerp",
        "--out",
        &out,
    ]);
    assert_grid(&out, 8, 1, 56);
    let out = format!("{m}/t.png");
    ok(&[
        "traverse", "--model", &m, "--data", &d, "--index", "3", "--dims", "all", "--steps", "5",
        "--out", &out,
    ]);
    assert_grid(&out, 5, 2, 56);
    let out = format!("{m}/m.png");
    ok(&["manifold", "--model", &m, "--n", "7", "--out", &out]);
    assert_grid(&out, 7, 7, 56);
    fails(&["traverse", "--model", &m, "--dims", "0,5"], "--dims");
    fails(
        &[
            "interpolate",
            "--model",
            &m,
            "--data",
            &d,
            "--from",
            "0",
            "--to",
            "999999",
        ],
        "out of range",
    );
}

#[test]
fn embed_and_scatter() {
    let (m, d) = (model(), data());
    let csv = format!("{m}/lat.csv");
    ok(&[
        "embed", "--model", &m, "--data", &d, "--limit", "50", "--out", &csv,
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "index,label,mu_0,mu_1,logvar_0,logvar_1,class");
    assert_eq!(lines.len(), 51);
    assert_eq!(lines[1].split(',').count(), 7);
    // Fashion-MNIST's names, and the run's own once saved with it.
    assert!(lines[1].ends_with(",Ankle boot"), "{}", lines[1]);
    let config =
        std::fs::read_to_string(Path::new(&m).join("checkpoint-0003/config.json")).unwrap();
    assert!(
        config.contains("\"Ankle boot\""),
        "class names saved with the run"
    );
    // --class-names overrides, and a name with a comma is quoted.
    let names = format!("{m}/names.txt");
    let mine: Vec<String> = (0..10).map(|i| format!("kind {i}, mine")).collect();
    std::fs::write(&names, mine.join("\n")).unwrap();
    ok(&[
        "embed",
        "--model",
        &m,
        "--data",
        &d,
        "--limit",
        "5",
        "--class-names",
        &names,
        "--out",
        &csv,
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.lines().nth(1).unwrap().ends_with(",\"kind 9, mine\""),
        "{text}"
    );
    let out = format!("{m}/s.png");
    ok(&[
        "scatter", "--model", &m, "--data", &d, "--limit", "500", "--out", &out,
    ]);
    // The plot, and a legend column for the ten classes.
    assert_eq!(png_size(&out), (760 + 170, 720));
}

#[test]
fn anomaly_scores_and_auroc() {
    let d = data();
    let out = tmp().join("classes").display().to_string();
    ok(&[
        "train",
        "--data",
        &d,
        "--classes",
        "0-8",
        "--hidden",
        "64",
        "--latent",
        "4",
        "--epochs",
        "2",
        "--out",
        &out,
        "--quiet",
    ]);
    let csv = format!("{out}/scores.csv");
    for metric in ["elbo", "recon", "iwae"] {
        let result = &json(&[
            "score",
            "--model",
            &out,
            "--data",
            &d,
            "--metric",
            metric,
            "--iwae-k",
            "4",
            "--normal-classes",
            "0-8",
            "--limit",
            "400",
            "--out",
            &csv,
        ])[0];
        let auroc = number(result, &["auroc"]);
        assert!((0.0..=1.0).contains(&auroc), "{result}");
        assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 401);
    }
}

#[test]
fn denoising() {
    let d = data();
    let out = tmp().join("denoise").display().to_string();
    ok(&[
        "train",
        "--data",
        &d,
        "--latent",
        "8",
        "--epochs",
        "3",
        "--noise",
        "gaussian:0.3",
        "--out",
        &out,
        "--quiet",
    ]);
    let png = format!("{out}/d.png");
    let result = &json(&[
        "denoise",
        "--model",
        &out,
        "--data",
        &d,
        "--noise",
        "gaussian:0.3",
        "--count",
        "5",
        "--limit",
        "200",
        "--out",
        &png,
    ])[0];
    let (noisy, denoised) = (
        number(result, &["psnr_noisy_db"]),
        number(result, &["psnr_denoised_db"]),
    );
    assert!(
        denoised > noisy + 1.0,
        "denoised {denoised} dB should beat noisy {noisy} dB"
    );
    assert_grid(&png, 5, 3, 56);
    fails(
        &["train", "--data", &d, "--noise", "blur:3"],
        "unknown noise",
    );
}

#[test]
fn imputation_beats_mean_filling() {
    let (m, d) = (model(), data());
    let png = format!("{m}/imp.png");
    let result = &json(&[
        "impute",
        "--model",
        &m,
        "--data",
        &d,
        "--mask",
        "random:0.5",
        "--iters",
        "10",
        "--limit",
        "100",
        "--count",
        "4",
        "--out",
        &png,
    ])[0];
    let (imputed, mean) = (
        number(result, &["psnr_imputed_db"]),
        number(result, &["psnr_mean_fill_db"]),
    );
    assert!(
        imputed > mean,
        "imputation {imputed} dB should beat mean filling {mean} dB: {result}"
    );
    assert_grid(&png, 4, 3, 56);
    fails(
        &["impute", "--model", &m, "--mask", "rect:40,0,5,5"],
        "outside",
    );
}

#[test]
fn compression_round_trip() {
    let (m, d) = (model(), data());
    let codes32 = format!("{m}/c32.vae");
    ok(&[
        "encode", "--model", &m, "--data", &d, "--limit", "20", "--bits", "32", "--out", &codes32,
    ]);
    let result = &json(&[
        "encode",
        "--model",
        &m,
        "--data",
        &d,
        "--limit",
        "20",
        "--bits",
        "8",
        "--out",
        &format!("{m}/c8.vae"),
    ])[0];
    // 8-bit codes of 2 latent values (and a header) against 784 pixel bytes.
    assert!(number(result, &["bytes_per_image"]) >= 2.0, "{result}");
    assert!(number(result, &["compression"]) > 20.0, "{result}");
    // At 32 bits the codes are the means exactly, so decoding them equals decoding the means.
    let dir = format!("{m}/decoded");
    ok(&["decode", &codes32, "--model", &m, "--out", &dir]);
    let csv = format!("{m}/means.csv");
    ok(&[
        "embed", "--model", &m, "--data", &d, "--limit", "20", "--out", &csv,
    ]);
    let means: Vec<f32> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .flat_map(|l| {
            l.split(',')
                .skip(2)
                .take(2)
                .map(|v| v.parse::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let file = vae_gpu::io::codes::CodesFile::load(Path::new(&codes32)).unwrap();
    assert_eq!(file.values(), means);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 20);
    let bytes = std::fs::read(&codes32).unwrap();
    let cut = format!("{m}/cut.vae");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    fails(&["decode", &cut, "--model", &m], "truncated");
    fails(
        &["decode", "Cargo.toml", "--model", &m],
        "not a vae-gpu codes file",
    );
}

#[test]
fn probe_accuracy() {
    let (m, d) = (model(), data());
    let result = &json(&[
        "probe",
        "--model",
        &m,
        "--data",
        &d,
        "--labels-per-class",
        "5,50",
        "--steps",
        "100",
        "--limit",
        "500",
    ])[0];
    let rows = result["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{result}");
    for row in rows {
        // Ten classes: chance is 10%.
        for key in ["latent_accuracy", "pixel_accuracy"] {
            let acc = number(row, &[key]);
            assert!(acc > 0.2 && acc <= 1.0, "{key} {acc}: {row}");
        }
    }
}
