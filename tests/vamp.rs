//! The VampPrior (`train --prior vamp:K`): the MLP and conv models with their pseudo-inputs
//! match PyTorch fixtures (tests/fixtures/make_tiny_vamp.py) in outputs, the Monte-Carlo
//! loss and every gradient, the pseudo-inputs' included; from the command line a run keeps
//! its pseudo-inputs in the state_dict, samples from the prior it learned, bounds the
//! likelihood against it (`eval --iwae-k`), resumes with it, and refuses what does not go
//! with it in one line.

mod common;

use common::cli::{data, fails_with, json, number, ok, tmp};
use common::for_each_gpu;
use common::pytorch::step_matches;
use vae_gpu::vae::ModelConfig;

#[test]
fn vamp_models_match_pytorch() {
    for_each_gpu(|gpu| {
        let mlp = ModelConfig {
            hidden: vec![5],
            latent: 2,
            vamp: Some(4),
            ..ModelConfig::mlp(8, 8, 1)
        };
        step_matches(gpu, &mlp, "tiny_vamp_mlp");
        let conv = ModelConfig {
            conv_channels: vec![4, 8],
            latent: 3,
            vamp: Some(3),
            ..ModelConfig::conv(8, 8, 2)
        };
        step_matches(gpu, &conv, "tiny_vamp_conv");
        // A bare state_dict with pseudo-inputs (no config.json) loads as a VampPrior model.
        let bare = common::pytorch::fixture("tiny_vamp_mlp/model.safetensors");
        let (_, cfg, _) =
            vae_gpu::vae::checkpoint::load(gpu, &bare, vae_gpu::vae::checkpoint::Pick::Best, false)
                .unwrap();
        assert_eq!(
            (cfg.model.vamp, cfg.model.latent, &cfg.model.hidden[..]),
            (Some(4), 2, &[5][..])
        );
    });
}

#[test]
fn a_vamp_run_learns_samples_and_bounds_with_its_prior() {
    let d = data();
    let run = tmp().join("vamp").display().to_string();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train", "--data", &d, "--limit", "512", "--hidden", "32", "--latent", "4", "--out",
            &run, "--quiet",
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    train(&["--prior", "vamp:6", "--epochs", "1"]);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{run}/checkpoint-0001/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["model"]["vamp"], 6);
    let tensors = vae_gpu::io::safetensors::load(&common::cli::last_model(&run)).unwrap();
    let pseudo = &tensors["pseudo_inputs"];
    assert_eq!(
        pseudo.shape,
        vec![6, 1, 28, 28],
        "[K, C, H, W], as PyTorch holds images"
    );
    // They started as training images seen through a sigmoid: dark background, finite.
    assert!(pseudo.data.iter().all(|v| v.is_finite()));
    let dark = pseudo.data.iter().filter(|&&v| v < -2.0).count();
    assert!(
        dark > pseudo.data.len() / 4,
        "{dark} of {} raw values dark",
        pseudo.data.len()
    );

    // A picture shows them as the encoder sees them.
    common::cli::assert_grid(&format!("{run}/pseudo-inputs.png"), 6, 1, 56);

    // The run resumes with its prior, and refuses another.
    fails_with(
        &[
            "train", "--resume", &run, "--prior", "normal", "--epochs", "2",
        ],
        1,
        &["--prior", "differs from the run being resumed"],
    );
    ok(&["train", "--resume", &run, "--epochs", "2", "--quiet"]);

    // sample draws from the learned prior unless asked for another.
    let grid = tmp().join("vamp-samples.png").display().to_string();
    ok(&["sample", "--model", &run, "--count", "16", "--out", &grid]);
    common::cli::assert_grid(&grid, 4, 4, 56);
    let normal = tmp().join("normal-samples.png").display().to_string();
    ok(&[
        "sample", "--model", &run, "--count", "16", "--prior", "normal", "--out", &normal,
    ]);
    assert_ne!(
        std::fs::read(&grid).unwrap(),
        std::fs::read(&normal).unwrap()
    );

    // The IWAE bound against the mixture prior is finite and no looser than the ELBO.
    let eval = json(&[
        "eval", "--model", &run, "--data", &d, "--limit", "32", "--iwae-k", "16",
    ]);
    let elbo = number(&eval[0], &["test", "total"]);
    let iwae = number(&eval[0], &["iwae_bound"]);
    assert!(
        iwae.is_finite() && iwae <= elbo + 0.5,
        "IWAE {iwae} vs ELBO {elbo}"
    );
}

#[test]
fn the_vamp_prior_refuses_what_does_not_go_with_it() {
    let d = data();
    let out = tmp().join("vamp-refused");
    let o = out.display().to_string();
    for (extra, needles) in [
        (
            vec!["--prior", "vamp", "--conditional"],
            vec!["--prior vamp", "unconditional"],
        ),
        (
            vec!["--prior", "vamp:4", "--free-bits", "1"],
            vec!["--free-bits", "VampPrior"],
        ),
        (vec!["--prior", "vamp:0"], vec!["vamp:0", "1 to 4096"]),
        (vec!["--prior", "gmm"], vec!["use normal, vamp or vamp:K"]),
    ] {
        let mut args = vec!["train", "--data", &d, "--limit", "64", "--out", &o];
        args.extend(extra);
        fails_with(
            &args,
            if needles[0] == "vamp:0" || needles[0].starts_with("use") {
                2
            } else {
                1
            },
            &needles,
        );
        assert!(!out.exists(), "nothing is left behind");
    }
    // A model with the standard prior has no VampPrior to sample from.
    let plain = tmp().join("vamp-plain").display().to_string();
    ok(&[
        "train", "--data", &d, "--limit", "128", "--epochs", "1", "--hidden", "8", "--out", &plain,
        "--quiet",
    ]);
    fails_with(
        &["sample", "--model", &plain, "--prior", "vamp"],
        1,
        &[
            "--prior vamp",
            "no VampPrior",
            "train it with --prior vamp:K",
        ],
    );
}

/// From Rust: `Trainer::vamp_prior` trains one; `Vae::vamp_prior` is its mixture, which
/// `sample` draws from.
#[test]
fn a_vamp_model_from_rust() {
    let all =
        vae_gpu::data::load(Some(std::path::Path::new(&data())), &Default::default()).unwrap();
    let (train, test) = (all.train.take(256), all.test.take(64));
    let vae = vae_gpu::Trainer::new()
        .mlp(&[32])
        .latent(3)
        .vamp_prior(5)
        .epochs(1)
        .fit(&train, &test)
        .unwrap();
    let prior = vae.vamp_prior().unwrap().expect("a VampPrior model");
    assert_eq!(prior.components(), 5);
    assert_eq!(prior.dim(), 3);
    assert_eq!(
        vae.sample(4, 1).unwrap(),
        vae.sample_from(&prior, 4, 1).unwrap(),
        "sample draws from the learned prior"
    );
}
