//! Conditional VAEs: the MLP and conv models with each image's class beside the encoder's
//! input and z match PyTorch fixtures (tests/fixtures/make_tiny_cvae.py) in outputs, loss
//! and every gradient; from the command line, `train --conditional` trains one, `sample
//! --class` draws the classes asked for (a named row each), `classify` files records under
//! the class with the highest ELBO, and asking an unconditional model for a class, or a
//! conditional one for a class it lacks, is a one-line error.

mod common;

use common::cli::{data, fails_with, json, number, ok, tmp};
use common::for_each_gpu;
use common::pytorch::step_matches;
use vae_gpu::vae::ModelConfig;

#[test]
fn conditional_models_match_pytorch() {
    for_each_gpu(|gpu| {
        let mlp = ModelConfig {
            hidden: vec![5],
            latent: 2,
            classes: Some(3),
            ..ModelConfig::mlp(8, 8, 1)
        };
        step_matches(gpu, &mlp, "tiny_cvae_mlp");
        let conv = ModelConfig {
            conv_channels: vec![4, 8],
            latent: 3,
            classes: Some(3),
            ..ModelConfig::conv(8, 8, 2)
        };
        step_matches(gpu, &conv, "tiny_cvae_conv");
    });
}

#[test]
fn a_conditional_run_draws_and_classifies_by_class() {
    let d = data();
    let run = tmp().join("cvae").display().to_string();
    ok(&[
        "train",
        "--data",
        &d,
        "--conditional",
        "--limit",
        "512",
        "--epochs",
        "1",
        "--hidden",
        "64",
        "--out",
        &run,
        "--quiet",
    ]);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{run}/checkpoint-0001/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["model"]["classes"], 10, "Fashion-MNIST's ten classes");
    // The first weights take the one-hot beside the pixels and beside z.
    let tensors = vae_gpu::io::safetensors::load(&common::cli::last_model(&run)).unwrap();
    assert_eq!(tensors["fc1.weight"].shape, vec![64, 784 + 10]);
    assert_eq!(tensors["fc3.weight"].shape, vec![64, 20 + 10]);

    // Several classes: a named row of --count each.
    let grid = tmp().join("two.png").display().to_string();
    ok(&[
        "sample", "--model", &run, "--class", "Dress,8", "--count", "3", "--out", &grid,
    ]);
    common::cli::assert_grid(&grid, 3, 2, 56);
    // `--prior gmm` fits a mixture to each class's codes and draws each row from its own.
    let mixed = tmp().join("two-gmm.png").display().to_string();
    let gmm = |k: &str| {
        common::cli::run(&[
            "sample", "--model", &run, "--prior", k, "--class", "Dress,8", "--count", "3", "--out",
            &mixed,
        ])
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let fitted = gmm("gmm:2");
    assert!(fitted.status.success(), "{}", stderr(&fitted));
    assert!(
        stderr(&fitted).contains("one mixture per class (10 of 10 classes"),
        "{}",
        stderr(&fitted)
    );
    common::cli::assert_grid(&mixed, 3, 2, 56);
    let file = format!("{run}/gmm-2.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let each = saved["mixture"]
        .as_array()
        .expect("a list of mixtures, one per class");
    assert_eq!(each.len(), 10);
    assert!(each
        .iter()
        .all(|g| g["weights"].as_array().unwrap().len() == 2));
    let first = std::fs::read(&mixed).unwrap();
    // A file of one mixture for all classes (an older fit), or a list without a mixture
    // for a class that has images, is fitted again, per class, to the same picture.
    let mut shared = saved.clone();
    shared["mixture"] = each[0].clone();
    let mut holes = saved.clone();
    holes["mixture"][3] = serde_json::Value::Null;
    for (edited, warning) in [
        (shared, "one mixture for all classes"),
        (holes, "not those of the training images"),
    ] {
        std::fs::write(&file, edited.to_string()).unwrap();
        let again = gmm("gmm:2");
        assert!(
            stderr(&again).contains(warning) && again.status.success(),
            "{}",
            stderr(&again)
        );
        assert_eq!(first, std::fs::read(&mixed).unwrap());
    }
    // More components than a class has images: the class and the way out named.
    fails_with(
        &["sample", "--model", &run, "--prior", "gmm:200"],
        1,
        &[
            "200 Gaussians to each class's codes",
            "training images",
            "ask for fewer",
        ],
    );
    // A name, a label, or all; a class the model lacks is named with the model's classes.
    fails_with(
        &["sample", "--model", &run, "--class", "Hat"],
        1,
        &["--class Hat", "no such class", "3 Dress"],
    );
    fails_with(
        &["sample", "--model", &run, "--class", "10"],
        1,
        &["no such class"],
    );
    fails_with(
        &["traverse", "--model", &run, "--data", &d],
        1,
        &["conditional", "--class"],
    );
    ok(&[
        "reconstruct",
        "--model",
        &run,
        "--data",
        &d,
        "--class",
        "Bag",
        "--count",
        "4",
    ]);

    // Every record filed under some class; its accuracy reported against the labels.
    let out = tmp().join("classes.csv").display().to_string();
    let result = json(&[
        "classify",
        "--model",
        &run,
        "--data",
        &d,
        "--limit",
        "200",
        "--samples",
        "2",
        "--out",
        &out,
    ]);
    let accuracy = number(&result[0], &["accuracy"]);
    assert!((0.0..=1.0).contains(&accuracy));
    let csv = std::fs::read_to_string(&out).unwrap();
    assert!(csv.starts_with("index,label,predicted,elbo_0,"), "{csv}");
    assert_eq!(csv.lines().count(), 201);

    // eval reads each test image's own class.
    let eval = json(&["eval", "--model", &run, "--data", &d, "--limit", "64"]);
    assert!(number(&eval[0], &["test", "total"]).is_finite());
}

/// A run trained on some classes (`--classes`) draws those for `--class all` (the default),
/// and a per-class mixture exists for them only; `coverage` weighs those.
#[test]
fn a_run_on_some_classes_draws_those() {
    let d = data();
    let run = tmp().join("cvae-some").display().to_string();
    ok(&[
        "train",
        "--data",
        &d,
        "--conditional",
        "--classes",
        "3,8",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--out",
        &run,
        "--quiet",
    ]);
    for prior in ["normal", "gmm:2"] {
        let grid = tmp()
            .join(format!("some-{prior}.png"))
            .display()
            .to_string();
        ok(&[
            "sample", "--model", &run, "--prior", prior, "--count", "4", "--out", &grid,
        ]);
        common::cli::assert_grid(&grid, 4, 2, 56);
    }
    fails_with(
        &[
            "sample", "--model", &run, "--prior", "gmm:2", "--class", "5",
        ],
        1,
        &["class 5 has no mixture", "none of its images"],
    );
    // The report shows the per-class mixture's samples, of the classes it has.
    let page = tmp().join("some-report.html").display().to_string();
    ok(&["report", "--model", &run, "--out", &page]);
    // Coverage weighs the run's classes, asked for in turn.
    let cover = json(&[
        "coverage", "--model", &run, "--count", "200", "--steps", "20",
    ]);
    assert_eq!(cover[0]["classes_in_data"], 2, "{}", cover[0]);
}

#[test]
fn classes_need_a_conditional_model_and_labelled_data() {
    let d = data();
    let run = tmp().join("plain").display().to_string();
    ok(&[
        "train", "--data", &d, "--limit", "256", "--epochs", "1", "--hidden", "16", "--out", &run,
        "--quiet",
    ]);
    fails_with(
        &["sample", "--model", &run, "--class", "Dress"],
        1,
        &["--class needs a conditional model"],
    );
    fails_with(
        &["classify", "--model", &run, "--data", &d],
        1,
        &["conditional model"],
    );
    // An array without labels cannot train a conditional model; nothing is left behind.
    let npy = tmp().join("plain.npy");
    let mut bytes = vae_gpu::data::npy::header_bytes("|u1", &[40, 4]);
    bytes.extend((0..40 * 4).map(|i| (i * 37 % 256) as u8));
    std::fs::write(&npy, bytes).unwrap();
    let out = tmp().join("no-labels");
    fails_with(
        &[
            "train",
            "--data",
            &npy.display().to_string(),
            "--conditional",
            "--out",
            &out.display().to_string(),
        ],
        1,
        &["--conditional", "no labels"],
    );
    assert!(!out.exists());
}

/// From Rust: `Trainer::conditional` trains on labelled images, `sample_as` draws a class,
/// `decode_as` decodes codes in one, and unlabelled images are refused.
#[test]
fn a_conditional_model_from_rust() {
    let all =
        vae_gpu::data::load(Some(std::path::Path::new(&data())), &Default::default()).unwrap();
    let (train, test) = (all.train.take(256), all.test.take(64));
    let vae = vae_gpu::Trainer::new()
        .mlp(&[32])
        .latent(4)
        .conditional(10)
        .epochs(1)
        .fit(&train, &test)
        .unwrap();
    let bags = vae.sample_as(3, 1, 8).unwrap();
    assert_eq!(bags.len(), 3 * vae.image_len());
    assert_ne!(
        bags,
        vae.sample_as(3, 1, 1).unwrap(),
        "the class changes the images"
    );
    let codes = vec![0.0; 2 * 4];
    assert_eq!(
        vae.decode_as(&codes, &[3]).unwrap().len(),
        2 * vae.image_len()
    );
    assert!(
        vae.sample(3, 1).is_err(),
        "a conditional model needs a class"
    );
    // A mixture per class: a class's samples decode codes drawn from its own mixture.
    let mixtures = vae.fit_class_gmms(&train, 2, 1).unwrap();
    assert_eq!(mixtures.len(), 10);
    assert!(mixtures
        .iter()
        .all(|g| g.as_ref().unwrap().components() == 2));
    let drawn = vae.sample_as_from(&mixtures, 3, 5, 8).unwrap();
    let decoded = |class: u8| {
        let codes = vae_gpu::vae::gmm::sample_per_class(&mixtures, &[class; 3], 5, 1.0).unwrap();
        vae.decode_as(&codes, &[8]).unwrap()
    };
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    assert!(
        gap(&drawn, &decoded(8)) < 1e-5,
        "bags from the bags' mixture"
    );
    assert!(
        gap(&drawn, &decoded(1)) > 1e-3,
        "not from the trousers' mixture"
    );
    assert!(
        vae.sample_as_from(&mixtures, 3, 5, 10).is_err(),
        "no class 10"
    );
    let unlabelled = vae_gpu::Images {
        labels: None,
        ..train.clone()
    };
    assert!(vae.fit_class_gmms(&unlabelled, 2, 1).is_err());
    let refused = vae_gpu::Trainer::new()
        .conditional(10)
        .epochs(1)
        .fit(&unlabelled, &test);
    match refused {
        Err(e) => assert!(e.to_string().contains("needs labels"), "{e}"),
        Ok(_) => panic!("unlabelled images trained a conditional model"),
    }
}
