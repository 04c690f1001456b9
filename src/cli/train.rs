//! `vae-gpu train`: train a VAE, checkpointing each epoch into a run directory.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::{open_gpu, DataArgs, DeviceArgs, RUNS_DIR};
use crate::ops::adam::AdamConfig;
use crate::ops::loss::Likelihood;
use crate::vae::checkpoint;
use crate::vae::train::{train, Run};
use crate::vae::{ModelConfig, Params, RunState, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Run directory for checkpoints, metrics and the loss curve [default: runs/run-N]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a run (its Adam state, step counter and noise position) up to --epochs.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Architecture: mlp (fully connected) or conv (strided convolutions, transposed
    /// convolutions in the decoder; image sides must divide by 2 per conv layer).
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "conv"])]
    pub arch: String,
    /// Channel widths of the conv encoder's layers (multiples of 4; the decoder mirrors them).
    #[arg(long, value_delimiter = ',', default_value = "32,64", value_parser = clap::value_parser!(u32).range(4..=4096))]
    pub conv_channels: Vec<u32>,
    /// Hidden layer widths of the MLP encoder (the decoder mirrors them), e.g. 512,256.
    #[arg(long, value_delimiter = ',', default_value = "400", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub hidden: Vec<u32>,
    /// Size of the latent code.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub latent: u32,
    /// Decoder likelihood: bernoulli (binary cross-entropy on logits) or gaussian.
    #[arg(long, value_enum, default_value = "bernoulli")]
    pub likelihood: Likelihood,
    /// Variance of the Gaussian likelihood (0.5 makes its data term the summed squared error).
    #[arg(long, default_value_t = 0.5)]
    pub gauss_var: f32,
    /// Weight of the KL term (beta-VAE).
    #[arg(long, default_value_t = 1.0)]
    pub beta: f32,
    /// Ramp beta linearly from 0 over this many epochs (against posterior collapse).
    #[arg(long, default_value_t = 0)]
    pub kl_warmup: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub batch_size: u32,
    /// Total epochs (with --resume: the total to reach) [default: 10]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: Option<u32>,
    /// Fixes weight init, shuffling and sampling noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use only the first N training images.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Train (and test) on these classes only, e.g. 0-8 to hold class 9 out for anomaly
    /// detection (`vae-gpu score --normal-classes 0-8`).
    #[arg(long, value_parser = super::parse_classes)]
    pub classes: Option<super::Classes>,
    /// Train a denoising VAE: corrupt the inputs with gaussian:SIGMA, saltpepper:P or mask:P
    /// and reconstruct the clean images (then see `vae-gpu denoise`).
    #[arg(long, value_name = "KIND:AMOUNT")]
    pub noise: Option<crate::ops::sample::Corruption>,
    /// Train N steps of one epoch, print samples/s, and stop (a throughput benchmark).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub bench_steps: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn positive(name: &str, v: f32) -> anyhow::Result<()> {
    if !(v.is_finite() && v > 0.0) {
        bail!("--{name} must be a positive number, got {v}");
    }
    Ok(())
}

/// runs/run-N with N one past the highest existing.
fn next_run_dir() -> PathBuf {
    let n = std::fs::read_dir(RUNS_DIR)
        .map(|d| {
            d.filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("run-")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
        })
        .unwrap_or(0);
    PathBuf::from(RUNS_DIR).join(format!("run-{}", n + 1))
}

pub fn run(device: &DeviceArgs, a: &TrainArgs) -> anyhow::Result<()> {
    positive("lr", a.lr)?;
    positive("gauss-var", a.gauss_var)?;
    if !(a.beta.is_finite() && a.beta >= 0.0 && a.weight_decay.is_finite() && a.weight_decay >= 0.0)
    {
        bail!("--beta and --weight-decay must be non-negative numbers");
    }
    let mut splits = a.data.load()?;
    if let Some(super::Classes(classes)) = &a.classes {
        let pick = |imgs: &crate::data::Images| imgs.with_classes(classes).filter(|i| i.count > 0);
        let (Some(train), Some(test)) = (pick(&splits.train), pick(&splits.test)) else {
            bail!("--classes {classes:?}: the data has no labels or no images of those classes");
        };
        eprintln!(
            "classes {classes:?}: {} train, {} test images",
            train.count, test.count
        );
        (splits.train, splits.test) = (train, test);
    }
    let mut train_images = splits.train;
    if let Some(n) = a.limit {
        train_images = train_images.take(n as usize);
        eprintln!("using the first {} training images", train_images.count);
    }
    let gpu = open_gpu(device)?;
    let (dir, model, mut train_cfg, params, state) = match &a.resume {
        Some(dir) => {
            let (cfg, params) = checkpoint::load(&gpu, dir, true)
                .with_context(|| format!("resuming {}", dir.display()))?;
            let mut t = cfg
                .train
                .with_context(|| format!("{}: no training settings to resume", dir.display()))?;
            if let Some(e) = a.epochs {
                t.epochs = e as usize;
            }
            if (cfg.model.height, cfg.model.width, cfg.model.channels)
                != (
                    train_images.height,
                    train_images.width,
                    train_images.channels,
                )
            {
                bail!(
                    "{}: the model was trained on {}x{}x{} images, the data has {}x{}x{}",
                    dir.display(),
                    cfg.model.height,
                    cfg.model.width,
                    cfg.model.channels,
                    train_images.height,
                    train_images.width,
                    train_images.channels
                );
            }
            eprintln!(
                "resuming {} at epoch {}, step {}",
                dir.display(),
                cfg.state.epoch,
                cfg.state.step
            );
            (dir.clone(), cfg.model, t, params, cfg.state)
        }
        None => {
            let model = ModelConfig {
                arch: a.arch.clone(),
                height: train_images.height,
                width: train_images.width,
                channels: train_images.channels,
                hidden: if a.arch == "mlp" {
                    a.hidden.iter().map(|&h| h as usize).collect()
                } else {
                    Vec::new()
                },
                conv_channels: if a.arch == "conv" {
                    a.conv_channels.iter().map(|&w| w as usize).collect()
                } else {
                    Vec::new()
                },
                latent: a.latent as usize,
                likelihood: a.likelihood,
                gauss_var: a.gauss_var,
            };
            let t = TrainConfig {
                beta: a.beta,
                kl_warmup: a.kl_warmup,
                batch_size: a.batch_size as usize,
                epochs: a.epochs.unwrap_or(10) as usize,
                seed: a.seed,
                adam: AdamConfig {
                    lr: a.lr,
                    weight_decay: a.weight_decay,
                    ..AdamConfig::default()
                },
                data: splits.source.clone(),
                corruption: a.noise,
            };
            let dir = a.out.clone().unwrap_or_else(next_run_dir);
            if dir.join(checkpoint::MODEL_FILE).exists() {
                bail!("{} already holds a model; use --resume {} to continue it or choose another --out", dir.display(), dir.display());
            }
            let params = Params::new(&gpu, &model, a.seed)?;
            (dir, model, t, params, RunState::default())
        }
    };
    if a.bench_steps.is_some() {
        train_cfg.epochs = state.epoch + 1;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("run directory: {}", dir.display());
    if state.epoch >= train_cfg.epochs {
        eprintln!(
            "{} already trained {} of {} epochs; nothing to do (raise --epochs)",
            dir.display(),
            state.epoch,
            train_cfg.epochs
        );
        return Ok(());
    }
    let metrics = train(
        Run {
            gpu: &gpu,
            model,
            train: train_cfg,
            params,
            state,
            dir: &dir,
            max_steps: a.bench_steps,
            progress: !a.quiet,
        },
        &train_images,
        &splits.test,
    )?;
    if let (Some(steps), Some(m)) = (a.bench_steps, metrics.last()) {
        println!(
            "bench: {steps} steps at batch {} on {}: {:.0} samples/s",
            a.batch_size,
            gpu.describe(),
            m.samples_per_sec
        );
    }
    Ok(())
}
