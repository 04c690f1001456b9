//! Importance-weighted training (`train --iwae-k K`): one step of an MLP with K samples per
//! record, with the standard prior and with a VampPrior, each also with the doubly
//! reparameterized encoder gradient, matches a PyTorch fixture
//! (tests/fixtures/make_tiny_iwae.py) in noise, outputs, the summed bound and every
//! gradient; from the command line `--iwae-k 1` is the ELBO
//! run exactly, K > 1 trains on the bound (or with `--elbo-k` on the K-sample ELBO) and
//! resumes with it, and what does not go with it is a one-line error.

mod common;

use common::cli::{data, fails_with, ok, tmp};
use common::for_each_gpu;
use common::pytorch::step_matches_with;
use vae_gpu::vae::config::LowerLatent;
use vae_gpu::vae::step::Samples;
use vae_gpu::vae::ModelConfig;

#[test]
fn an_iwae_step_matches_pytorch() {
    for_each_gpu(|gpu| {
        let mlp = ModelConfig {
            hidden: vec![5],
            latent: 2,
            ..ModelConfig::mlp(8, 8, 1)
        };
        step_matches_with(gpu, &mlp, "tiny_iwae", Samples::importance(3));
        // Under a VampPrior the components' gradients weigh the samples too.
        let vamp = ModelConfig {
            vamp: Some(4),
            ..mlp.clone()
        };
        step_matches_with(gpu, &vamp, "tiny_iwae_vamp", Samples::importance(3));
        // The doubly reparameterized encoder gradient (Tucker et al. 2019).
        let dreg = Samples {
            dreg: true,
            ..Samples::importance(3)
        };
        step_matches_with(gpu, &mlp, "tiny_iwae_dreg", dreg);
        // Under a VampPrior: the code's path weighed twice, the components once.
        step_matches_with(gpu, &vamp, "tiny_iwae_vamp_dreg", dreg);
    });
}

/// Two stacked stochastic layers (Burda et al.'s model, tests/fixtures/make_tiny_stacked.py):
/// one step's bound and every gradient, with one sample per record (the ELBO, both KLs
/// Monte-Carlo) and with K = 3 importance-weighted ones.
#[test]
fn a_stacked_step_matches_pytorch() {
    for_each_gpu(|gpu| {
        let stacked = ModelConfig {
            hidden: vec![5],
            latent: 2,
            below: vec![LowerLatent {
                latent: 3,
                hidden: vec![3],
            }],
            activation: Some("tanh".into()),
            ..ModelConfig::mlp(8, 8, 1)
        };
        step_matches_with(gpu, &stacked, "tiny_stacked", Samples::importance(1));
        step_matches_with(gpu, &stacked, "tiny_stacked_iwae", Samples::importance(3));
    });
}

/// `n` random 8x8 grey images from `seed`, labelled 0, 1, 2 in turn.
fn random_images(n: usize, seed: u64) -> vae_gpu::Images {
    let mut rng = vae_gpu::rng::Rng::new(seed);
    vae_gpu::Images {
        pixels: (0..n * 64).map(|_| rng.below(256) as u8).collect(),
        count: n,
        height: 8,
        width: 8,
        channels: 1,
        labels: Some((0..n).map(|i| (i % 3) as u8).collect()),
        dtype: vae_gpu::data::Dtype::U8,
    }
}

/// `eval --iwae-k` runs the encoder once per image and repeats its lowest mu | logvar over
/// the image's samples (`StepProgram::from_posterior`): with one sample, each image's
/// estimate is minus the loss of a whole step (encoder included) on that image with the
/// same noise, for a one-layer, a stacked and a conditional model, 300 images (over a
/// batch of images, so the encoder runs twice).
#[test]
fn the_bound_from_shared_posteriors_matches_whole_steps() {
    use vae_gpu::ops::loss::LossSettings;
    use vae_gpu::vae::codec::iwae_log_px;
    use vae_gpu::vae::step::{StepProgram, StepSpec, STREAM_EVAL};
    use vae_gpu::vae::train::GpuSplit;
    for_each_gpu(|gpu| {
        let images = random_images(300, 67);
        let one = ModelConfig {
            hidden: vec![7],
            latent: 3,
            ..ModelConfig::mlp(8, 8, 1)
        };
        let stacked = ModelConfig {
            below: vec![LowerLatent {
                latent: 5,
                hidden: vec![6],
            }],
            ..one.clone()
        };
        let conditional = ModelConfig {
            classes: Some(3),
            ..one.clone()
        };
        for c in [one, stacked, conditional] {
            let params = c.params(gpu, 5).unwrap();
            let fast = iwae_log_px(gpu, &params, &c, &images, 1, &mut |_| {}).unwrap();
            let split = GpuSplit::upload(gpu, &images).unwrap();
            let settings = LossSettings {
                valid: 1,
                ..LossSettings::default()
            };
            let spec = StepSpec {
                rows: 1,
                settings,
                adam: None,
                seed: 0,
                corruption: None,
                samples: Samples::ONE,
            };
            let mut whole = StepProgram::new(gpu, &params, &c, &split.batches(), &spec).unwrap();
            whole.set_stream(STREAM_EVAL + 10);
            for i in [0, 1, 255, 256, 299] {
                whole.prepare(gpu, i, i as u64, &settings);
                whole.submit(gpu, None).unwrap();
                let f64s = |m: &vae_gpu::gpu::Matrix| -> Vec<f64> {
                    m.read(gpu).unwrap().iter().map(|&v| f64::from(v)).collect()
                };
                let losses = f64s(&whole.per_sample);
                // The KL column is the Monte-Carlo one (stacked layers), or the closed form,
                // whose Monte-Carlo twin comes from the sampled code.
                let want = match whole.monte_carlo_kl() {
                    true => -losses[2],
                    false => vae_gpu::cpu::loss::iwae_log_px(
                        &losses[..1],
                        &f64s(whole.mulv()),
                        &f64s(whole.z()),
                        &f64s(whole.eps()),
                        c.latent,
                    ),
                };
                assert!(
                    (fast[i] - want).abs() <= 1e-4 * want.abs(),
                    "{}: image {i}: log p(x) {} from the shared posterior, {want} from a whole step",
                    c.describe(),
                    fast[i],
                );
            }
        }
    });
}

/// The layers' means' moments gathered on the GPU (`codec::layer_moments`, over 300 images:
/// two batches) are those of the f64 twin over the means read back (`layer_means`), for
/// each layer of a stacked model: means within 1e-5, variances within 1e-4 relative; and
/// `active_units` counts from them.
#[test]
fn layer_moments_match_the_means_read_back() {
    use vae_gpu::vae::codec::{active_units, layer_means, layer_moments};
    for_each_gpu(|gpu| {
        let images = random_images(300, 71);
        let c = ModelConfig {
            hidden: vec![7],
            latent: 3,
            below: vec![LowerLatent {
                latent: 5,
                hidden: vec![6],
            }],
            ..ModelConfig::mlp(8, 8, 1)
        };
        let params = c.params(gpu, 5).unwrap();
        let got = layer_moments(gpu, &params, &c, &images).unwrap();
        let layers = layer_means(gpu, &params, &c, &images).unwrap();
        assert_eq!(got.len(), 2);
        for (i, (l, got)) in layers.iter().zip(&got).enumerate() {
            let mu: Vec<f64> = l.mu.iter().map(|&v| f64::from(v)).collect();
            let want = vae_gpu::cpu::tensor::column_moments(&mu, l.latent);
            assert_eq!(got.len(), want.len());
            for (j, ((gm, gv), (wm, wv))) in got.iter().zip(&want).enumerate() {
                assert!(
                    (gm - wm).abs() <= 1e-5,
                    "layer {i} dimension {j}: mean {gm} vs {wm}"
                );
                assert!(
                    (gv - wv).abs() <= 1e-4 * wv + 1e-9,
                    "layer {i} dimension {j}: variance {gv} vs {wv}"
                );
            }
            let median = {
                let mut v: Vec<f64> = want.iter().map(|m| m.1).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let counted = active_units(gpu, &params, &c, &images, median).unwrap()[i];
            let twin = want.iter().filter(|m| m.1 > median).count();
            assert_eq!(counted, (twin, l.latent), "layer {i} above {median}");
        }
    });
}

/// `--latent 6,3` stacks a layer of 6 under a code of 3: it trains (with --iwae-k too),
/// resumes only as it is, evaluates with active units per layer, samples top-down, embeds
/// the code (the top layer), is deterministic from its seed, and what it does not go with
/// is a one-line error.
#[test]
fn stacked_layers_from_the_command_line() {
    let d = data();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp().join(name).display().to_string();
        let mut args = vec![
            "train", "--data", &d, "--limit", "256", "--hidden", "16", "--epochs", "1", "--out",
            &out, "--quiet",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        out
    };
    let stacked = run("stacked", &["--latent", "6,3"]);
    let cfg = std::fs::read_to_string(format!("{stacked}/checkpoint-0001/config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["model"]["latent"], 3, "{cfg}");
    assert_eq!(
        cfg["model"]["below"],
        serde_json::json!([{"latent": 6, "hidden": [6]}]),
        "{cfg}"
    );
    let model = |r: &str| std::fs::read(common::cli::last_model(r)).unwrap();
    assert_eq!(
        model(&stacked),
        model(&run("stacked-again", &["--latent", "6,3"])),
        "a seed fixes a stacked run"
    );
    let iwae = run("stacked-iwae", &["--latent", "6,3", "--iwae-k", "3"]);
    assert_ne!(model(&stacked), model(&iwae));
    let out = ok(&[
        "eval", "--model", &iwae, "--data", &d, "--limit", "32", "--iwae-k", "8",
    ]);
    assert!(out.contains("IWAE bound, K = 8"), "{out}");
    assert!(
        out.contains("layer 1 ") && out.contains("of 6") && out.contains("layer 2 (the code) "),
        "{out}"
    );
    // The test loss (Monte-Carlo KLs) follows each image's own draws, whatever the batch.
    let loss = |batch: &str| {
        let out = ok(&[
            "eval",
            "--model",
            &stacked,
            "--data",
            &d,
            "--limit",
            "40",
            "--batch-size",
            batch,
        ]);
        out.lines()
            .find(|l| l.starts_with("test loss"))
            .unwrap()
            .to_string()
    };
    assert_eq!(loss("256"), loss("7"), "the batch size moves the test loss");
    // The state_dict alone (PyTorch's, no vae-gpu metadata) describes the stacked model.
    let model_file = common::cli::last_model(&stacked);
    let tensors: Vec<_> = vae_gpu::io::safetensors::load(&model_file)
        .unwrap()
        .into_values()
        .collect();
    let bare = tmp().join("stacked-bare.safetensors");
    vae_gpu::io::safetensors::save(&bare, &tensors).unwrap();
    let bare = bare.display().to_string();
    let out = ok(&["eval", "--model", &bare, "--data", &d, "--limit", "8"]);
    assert!(out.contains("layer 1 ") && out.contains("of 6"), "{out}");
    let png = tmp().join("stacked-samples.png").display().to_string();
    ok(&["sample", "--model", &stacked, "--count", "5", "--out", &png]);
    assert!(std::fs::metadata(&png).unwrap().len() > 0);
    let csv = tmp().join("stacked-codes.csv").display().to_string();
    ok(&[
        "embed", "--model", &stacked, "--data", &d, "--limit", "3", "--out", &csv,
    ]);
    let header = std::fs::read_to_string(&csv).unwrap();
    let header = header.lines().next().unwrap().to_string();
    assert!(
        header.contains("mu_2") && !header.contains("mu_3"),
        "{header}"
    );
    fails_with(
        &[
            "train", "--resume", &stacked, "--latent", "6", "--epochs", "2",
        ],
        1,
        &["--latent 6 differs", "latent 6,3"],
    );
    let refused = tmp().join("stacked-refused").display().to_string();
    for (extra, needles) in [
        (
            vec!["--arch", "conv"],
            vec!["--latent 8,4", "built for the MLP"],
        ),
        (
            vec!["--free-bits", "0.5"],
            vec!["--latent 8,4", "--free-bits"],
        ),
        (
            vec!["--prior", "vamp:4"],
            vec!["--latent 8,4", "--prior vamp"],
        ),
    ] {
        let mut args = vec![
            "train", "--data", &d, "--limit", "64", "--latent", "8,4", "--out", &refused,
        ];
        args.extend(extra);
        fails_with(&args, 1, &needles);
    }
    fails_with(
        &["train", "--data", &d, "--latent", "8,0", "--out", &refused],
        2,
        &["'0' is not a latent size"],
    );
    // An architecture file stacks layers with its own below list.
    let arch = tmp().join("stacked-arch.json");
    let text = ok(&[
        "train",
        "--print-arch",
        "--data",
        &d,
        "--hidden",
        "8",
        "--latent",
        "6,3",
    ]);
    std::fs::write(&arch, text).unwrap();
    let arch = arch.display().to_string();
    fails_with(
        &[
            "train", "--data", &d, "--arch", &arch, "--latent", "9,6,3", "--out", &refused,
        ],
        1,
        &["--latent 9,6,3", "below list"],
    );
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
    // With beta other than 1 the records' losses still split as total = recon + beta x KL:
    // the checkpoint loads.
    let beta = run("iwae-beta", &["--iwae-k", "3", "--beta", "2"]);
    ok(&["eval", "--model", &beta, "--data", &d, "--limit", "16"]);
    fails_with(
        &[
            "train",
            "--resume",
            &beta,
            "--epochs",
            "2",
            "--output-bias-from-data",
        ],
        1,
        &["--output-bias-from-data", "started otherwise"],
    );
    // The doubly reparameterized encoder gradient trains another model than the plain
    // bound, records itself, and needs the bound it weighs.
    let dreg = run("iwae-4-dreg", &["--iwae-k", "4", "--dreg"]);
    assert_ne!(model(&dreg), model(&four));
    let cfg = std::fs::read_to_string(format!("{dreg}/checkpoint-0001/config.json")).unwrap();
    assert!(cfg.contains("\"dreg\": true"), "{cfg}");
    let vamp_dreg = run(
        "iwae-4-vamp-dreg",
        &["--iwae-k", "4", "--dreg", "--prior", "vamp:4"],
    );
    let vamp = run("iwae-4-vamp", &["--iwae-k", "4", "--prior", "vamp:4"]);
    assert_ne!(model(&vamp_dreg), model(&vamp));
    fails_with(
        &["train", "--resume", &four, "--dreg", "--epochs", "3"],
        1,
        &["--dreg differs from the run being resumed"],
    );
    let refused = tmp().join("dreg-refused").display().to_string();
    for (extra, needle) in [
        (vec!["--dreg"], "--iwae-k 2 or more"),
        (
            vec!["--dreg", "--iwae-k", "3", "--latent", "4,2"],
            "one stochastic layer",
        ),
        (vec!["--dreg", "--iwae-k", "3", "--beta", "2"], "beta 1"),
        (
            vec!["--dreg", "--iwae-k", "3", "--kl-warmup", "2"],
            "beta 1",
        ),
    ] {
        let mut args = vec!["train", "--data", &d, "--limit", "64", "--out", &refused];
        args.extend(extra);
        fails_with(&args, 1, &["--dreg", needle]);
    }
    // The K-sample ELBO (equal weights) trains another model again.
    let averaged = run("elbo-4", &["--elbo-k", "4"]);
    assert_ne!(model(&averaged), model(&four));
    let cfg = std::fs::read_to_string(format!("{averaged}/checkpoint-0001/config.json")).unwrap();
    assert!(cfg.contains("\"elbo_k\": 4"), "{cfg}");
    fails_with(
        &["train", "--elbo-k", "2", "--iwae-k", "2"],
        2,
        &["--elbo-k", "--iwae-k"],
    );
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
        &["--free-bits", "--iwae-k"],
    );
    assert!(!refused.exists());
    fails_with(&["train", "--iwae-k", "0"], 2, &["--iwae-k"]);
}

/// Burda et al.'s recipe as options: the learning-rate schedules' rates, dynamic
/// binarization (binary batches, redrawn each training step, the same for the same step,
/// one draw per record across its samples and per image in evaluation), the output bias
/// at the data's mean, the MLP's tanh, and their one-line errors.
#[test]
fn the_recipe_options() {
    use vae_gpu::data::Dtype;
    use vae_gpu::gpu::Matrix;
    use vae_gpu::ops::gather::GpuImages;
    use vae_gpu::ops::loss::LossSettings;
    use vae_gpu::ops::Activation;
    use vae_gpu::vae::config::LrSchedule;
    use vae_gpu::vae::step::{Batches, Samples, StepProgram, StepSpec};

    // Burda: 10^(-i/7) for 3^i epochs: epoch 0, 1-3, 4-12, ..., 1093 onwards.
    let burda = |e| LrSchedule::Burda.at(1e-3, e, 0.0, 10);
    for (epoch, stage) in [
        (0, 0),
        (1, 1),
        (3, 1),
        (4, 2),
        (12, 2),
        (13, 3),
        (1092, 6),
        (1093, 7),
        (5000, 7),
    ] {
        let want = 1e-3 * 10f64.powf(-(stage as f64) / 7.0);
        assert!(
            (f64::from(burda(epoch)) - want).abs() < 1e-9,
            "epoch {epoch}"
        );
    }
    let step = LrSchedule::Step {
        every: 2,
        gamma: 0.5,
    };
    assert_eq!(step.at(1e-3, 3, 0.5, 10), 5e-4);
    assert_eq!(LrSchedule::Cosine.at(1e-3, 0, 0.0, 4), 1e-3);
    assert!((LrSchedule::Cosine.at(1e-3, 2, 0.0, 4) - 5e-4).abs() < 1e-9);
    assert!(LrSchedule::Cosine.at(1e-3, 3, 0.999, 4) < 1e-8);

    let all =
        vae_gpu::data::load(Some(std::path::Path::new(&data())), &Default::default()).unwrap();
    let train = all.train.take(64);
    for_each_gpu(|gpu| {
        // A binarized model's batches are draws: 0 or 1, anew each step, fixed by it.
        let c = ModelConfig {
            hidden: vec![8],
            latent: 2,
            binarize: true,
            activation: Some("tanh".into()),
            ..ModelConfig::mlp(28, 28, 1)
        };
        let params = c.params(gpu, 1).unwrap();
        assert!(params
            .graph
            .nodes
            .iter()
            .any(|n| n.op.act() == Activation::Tanh));
        let images = GpuImages::upload(gpu, &train.pixels, c.input_dim(), Dtype::U8).unwrap();
        let order: Vec<u32> = (0..16).collect();
        let indices = Matrix::from_slice(gpu, 1, 16, bytemuck::cast_slice(&order), "idx").unwrap();
        let settings = LossSettings {
            valid: 16,
            ..Default::default()
        };
        // The batches a program draws at `steps` (a training one: Adam with rate 0).
        let draws = |training: bool, samples: usize, steps: &[u64]| {
            let mut program = StepProgram::new(
                gpu,
                &params,
                &c,
                &Batches {
                    images: &images,
                    indices: &indices.buffer,
                    count: 16,
                    labels: None,
                },
                &StepSpec {
                    rows: 16,
                    settings,
                    adam: training.then(|| vae_gpu::ops::adam::AdamConfig {
                        lr: 0.0,
                        ..Default::default()
                    }),
                    seed: 3,
                    corruption: None,
                    samples: Samples::importance(samples),
                },
            )
            .unwrap();
            steps
                .iter()
                .map(|&step| {
                    program.prepare(gpu, 0, step, &settings);
                    program.submit(gpu, None).unwrap();
                    program.x().read(gpu).unwrap()
                })
                .collect::<Vec<_>>()
        };
        let t = draws(true, 1, &[0, 1, 0]);
        assert!(t[0].iter().all(|&v| v == 0.0 || v == 1.0), "binary draws");
        assert_ne!(t[0], t[1], "training draws anew each step");
        assert_eq!(t[0], t[2], "the same step draws the same");
        let ones = t[0].iter().filter(|&&v| v == 1.0).count() as f64 / t[0].len() as f64;
        let mean: f64 = train.pixels[..16 * 784]
            .iter()
            .map(|&p| f64::from(p) / 255.0)
            .sum::<f64>()
            / (16.0 * 784.0);
        assert!(
            (ones - mean).abs() < 0.02,
            "{ones} ones for a mean pixel of {mean}"
        );
        // An importance-weighted step's samples of a record see one draw of it.
        let k = &draws(true, 2, &[0])[0];
        for r in 0..16 {
            assert_eq!(
                k[2 * r * 784..(2 * r + 1) * 784],
                k[(2 * r + 1) * 784..(2 * r + 2) * 784]
            );
        }
        // Evaluation keeps one draw per image, whatever the step.
        let e = draws(false, 1, &[0, 7]);
        assert_eq!(e[0], e[1], "one draw per image in evaluation");
        assert!(e[0].iter().all(|&v| v == 0.0 || v == 1.0));

        // The output bias at the logit of each pixel's mean.
        vae_gpu::vae::init::output_bias_from_data(
            gpu,
            &params,
            &c,
            &vae_gpu::data::store::TrainSet::Memory(std::borrow::Cow::Borrowed(&train)),
        )
        .unwrap();
        let out = params.graph.producer(params.graph.logits).unwrap();
        let (_, bias) = params.of(&params.values, out).unwrap();
        let got = bias.read(gpu).unwrap();
        for j in [0, 300, 406, 783] {
            let m: f64 = (0..train.count)
                .map(|i| f64::from(train.image(i)[j]) / 255.0)
                .sum::<f64>()
                / train.count as f64;
            let m = m.clamp(1e-3, 1.0 - 1e-3);
            let want = (m / (1.0 - m)).ln();
            assert!(
                (f64::from(got[j]) - want).abs() < 1e-4,
                "pixel {j}: {} vs {want}",
                got[j]
            );
        }
    });

    // Options that do not fit the model are one-line errors.
    let d = data();
    for (extra, needles) in [
        (
            vec!["--arch", "conv", "--activation", "tanh"],
            vec!["--activation", "MLP"],
        ),
        (
            vec!["--likelihood", "gaussian", "--binarize", "dynamic"],
            vec!["--binarize", "Bernoulli"],
        ),
        (
            vec!["--lr-schedule", "step:0:0.5"],
            vec!["step:0:0.5", "1 to 1000000"],
        ),
        (vec!["--adam-betas", "0.9"], vec!["beta1,beta2"]),
    ] {
        let out = tmp().join("recipe-refused").display().to_string();
        let mut args = vec!["train", "--data", &d, "--limit", "64", "--out", &out];
        args.extend(extra.iter().copied());
        // Flags refused by the parser exit 2; combinations refused by vae-gpu, 1.
        let code = if ["--activation", "--binarize"].contains(&needles[0]) {
            1
        } else {
            2
        };
        fails_with(&args, code, &needles);
    }
}

/// From Rust: the recipe through `Trainer`, and bad settings refused before training.
#[test]
fn the_recipe_from_rust() {
    let all =
        vae_gpu::data::load(Some(std::path::Path::new(&data())), &Default::default()).unwrap();
    let (train, test) = (all.train.take(128), all.test.take(32));
    let vae = vae_gpu::Trainer::new()
        .mlp(&[16])
        .latent(3)
        .activation("tanh")
        .binarize()
        .output_bias_from_data()
        .adam((0.9, 0.999), 1e-4)
        .lr_schedule(vae_gpu::LrSchedule::Burda)
        .iwae_k(3)
        .batch_size(16)
        .epochs(1)
        .fit(&train, &test)
        .unwrap();
    assert!(vae.config().binarize);
    let elbo = vae.elbo(&test).unwrap();
    assert!(elbo.iter().all(|v| v.is_finite()));
    let refused = vae_gpu::Trainer::new()
        .iwae_k(3)
        .elbo_k(3)
        .epochs(1)
        .fit(&train, &test);
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("elbo_k")),
        "{:?}",
        refused.err()
    );
}
