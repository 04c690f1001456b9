//! `vae-gpu tune`: time every GEMM kernel on every GEMM shape of a model's training and
//! evaluation steps, cache the fastest, and print the table (see `gpu::tune`).

use clap::Args;

use super::{open_gpu, DeviceArgs, ModelArg};
use crate::gpu::Matrix;
use crate::ops::adam::AdamConfig;
use crate::ops::gather::GpuImages;
use crate::ops::loss::LossSettings;
use crate::vae::step::{Batches, Samples, StepProgram, StepSpec};
use crate::vae::ModelConfig;

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Tune for this run's model [default: the architecture flags below]
    #[command(flatten)]
    pub model: ModelArg,
    /// Architecture to tune when no --model is given: the default MLP, conv or resnet VAE
    /// on 28x28 grayscale images (an architecture file's: train it, then --model RUN).
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "conv", "resnet"])]
    pub arch: String,
    /// The batch size to measure the model's shapes at (as `train --batch-size`)
    /// [default: the run's, or as train: 128, 64 for the resnet]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub batch_size: Option<u32>,
    /// Measure again shapes already in the cache.
    #[arg(long)]
    pub force: bool,
}

pub fn run(device: &DeviceArgs, a: &TuneArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (c, params, run_batch) = match &a.model.model {
        Some(_) => {
            let (_, cfg, params) = super::load_model(&gpu, &a.model)?;
            let batch = cfg.train.as_ref().map(|t| t.batch_size);
            (cfg.model, params, batch)
        }
        None => {
            let c = match a.arch.as_str() {
                "conv" => ModelConfig::conv(28, 28, 1),
                "resnet" => ModelConfig::resnet(28, 28, 1),
                _ => ModelConfig::mlp(28, 28, 1),
            };
            let params = c.params(&gpu, 1)?;
            (c, params, None)
        }
    };
    if a.force {
        gpu.tuner().remeasure();
    }
    let rows = match (a.batch_size, &run_batch) {
        (Some(b), _) => b as usize,
        (None, Some(b)) => *b,
        (None, None) if c.arch == "resnet" => 64,
        (None, None) => 128,
    };
    let images = GpuImages::upload(
        &gpu,
        &vec![0; c.input_dim()],
        c.input_dim(),
        crate::data::Dtype::U8,
    )?;
    let indices = Matrix::zeros(&gpu, 1, 1, "indices")?;
    let started = std::time::Instant::now();
    // Building the training and the evaluation step decides the kernel of every product.
    for adam in [Some(AdamConfig::default()), None] {
        StepProgram::new(
            &gpu,
            &params,
            &c,
            &Batches {
                images: &images,
                indices: &indices.buffer,
                count: 1,
                labels: None,
            },
            &StepSpec {
                rows,
                settings: LossSettings {
                    likelihood: c.likelihood,
                    beta: 1.0,
                    grad_scale: 1.0,
                    gauss_var: c.gauss_var,
                    valid: rows,
                    free_bits: 0.0,
                },
                adam,
                seed: 1,
                samples: Samples::ONE,
                corruption: None,
            },
        )?;
    }
    let tuner = gpu.tuner();
    let mut table = String::new();
    let mut choices = Vec::new();
    for key in tuner.seen() {
        let line = match tuner.get(key) {
            Some(m) => {
                let mut times: Vec<(&String, &f64)> = m.micros.iter().collect();
                times.sort_by(|a, b| a.1.total_cmp(b.1));
                let times: Vec<String> = times
                    .iter()
                    .map(|(k, us)| format!("{k} {us:.0} us"))
                    .collect();
                format!("{key:<28} -> {:<12} ({})", m.pick, times.join(", "))
            }
            None => format!("{key:<28} -> default (one candidate, or VAE_GPU_TUNE=off)"),
        };
        table += &line;
        table.push('\n');
        choices.push(serde_json::json!({
            "op": key,
            "pick": tuner.get(key).map(|m| &m.pick),
            "micros": tuner.get(key).map(|m| &m.micros),
        }));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cache = tuner.cache_path();
    super::report(
        &format!(
            "{table}{} kernel choices for the {} model at batch {rows} in {seconds:.1} s; cache: {}",
            choices.len(),
            c.arch,
            cache.as_ref().map_or("none (no cache directory, or it cannot be written)".into(), |p| p
                .display()
                .to_string())
        ),
        serde_json::json!({
            "device": gpu.describe(),
            "arch": c.arch,
            "batch_size": rows,
            "seconds": seconds,
            "cache": cache,
            "choices": choices,
        }),
    );
    Ok(())
}
