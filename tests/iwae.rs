//! Importance-weighted training (`train --iwae-k K`): one step of an MLP with K samples per
//! record, with the standard prior and with a VampPrior, matches a PyTorch fixture
//! (tests/fixtures/make_tiny_iwae.py) in noise, outputs, the summed bound and every
//! gradient; from the command line `--iwae-k 1` is the ELBO
//! run exactly, K > 1 trains on the bound and resumes with it, and what does not go with
//! it is a one-line error.

mod common;

use common::cli::{data, fails_with, ok, tmp};
use common::for_each_gpu;
use common::pytorch::step_matches_with;
use vae_gpu::vae::ModelConfig;

#[test]
fn an_iwae_step_matches_pytorch() {
    for_each_gpu(|gpu| {
        let mlp = ModelConfig {
            hidden: vec![5],
            latent: 2,
            ..ModelConfig::mlp(8, 8, 1)
        };
        step_matches_with(gpu, &mlp, "tiny_iwae", 3);
        // Under a VampPrior the components' gradients weigh the samples too.
        let vamp = ModelConfig {
            vamp: Some(4),
            ..mlp
        };
        step_matches_with(gpu, &vamp, "tiny_iwae_vamp", 3);
    });
}

#[test]
fn iwae_training_from_the_command_line() {
    let d = data();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp().join(name).display().to_string();
        let mut args = vec![
            "train", "--data", &d, "--limit", "256", "--hidden", "16", "--latent", "4", "--epochs",
            "1", "--out", &out, "--quiet",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        out
    };
    // K = 1 is the ELBO, exactly: the same weights as a run without the flag.
    let elbo = run("elbo", &[]);
    let one = run("iwae-1", &["--iwae-k", "1"]);
    let model = |r: &str| std::fs::read(common::cli::last_model(r)).unwrap();
    assert_eq!(model(&elbo), model(&one), "--iwae-k 1 trains the ELBO");
    // K = 4 trains another model, records its K, and resumes with it.
    let four = run("iwae-4", &["--iwae-k", "4"]);
    assert_ne!(model(&elbo), model(&four));
    let cfg = std::fs::read_to_string(format!("{four}/checkpoint-0001/config.json")).unwrap();
    assert!(cfg.contains("\"iwae_k\": 4"), "{cfg}");
    fails_with(
        &["train", "--resume", &four, "--iwae-k", "2", "--epochs", "2"],
        1,
        &["--iwae-k", "differs from the run being resumed"],
    );
    ok(&["train", "--resume", &four, "--epochs", "2", "--quiet"]);
    // Free bits floor a per-dimension KL the bound does not have.
    let refused = tmp().join("iwae-refused");
    fails_with(
        &[
            "train",
            "--data",
            &d,
            "--iwae-k",
            "4",
            "--free-bits",
            "0.5",
            "--out",
            &refused.display().to_string(),
        ],
        1,
        &["free_bits", "iwae_k"],
    );
    assert!(!refused.exists());
    fails_with(&["train", "--iwae-k", "0"], 2, &["--iwae-k"]);
}
