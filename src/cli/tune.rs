//! `vae-gpu tune`: time every GEMM kernel on every GEMM shape of a model's training and
//! evaluation steps, cache the fastest, and print the table (see `gpu::tune`).

use clap::Args;

use super::{open_gpu, DeviceArgs, ModelArg};
use crate::gpu::Matrix;
use crate::ops::adam::AdamConfig;
use crate::ops::gather::GpuImages;
use crate::ops::loss::{Likelihood, LossSettings};
use crate::vae::model::{Batches, StepProgram, StepSpec};
use crate::vae::{ModelConfig, Params};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Tune for this run's model [default: the architecture flags below]
    #[command(flatten)]
    pub model: ModelArg,
    /// Architecture to tune when no --model is given: the default MLP or conv VAE on
    /// 28x28 grayscale images.
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "conv"])]
    pub arch: String,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub batch_size: u32,
    /// Measure again shapes already in the cache.
    #[arg(long)]
    pub force: bool,
}

pub fn run(device: &DeviceArgs, a: &TuneArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (c, params) = match &a.model.model {
        Some(_) => {
            let (_, cfg, params) = super::load_model(&gpu, &a.model)?;
            (cfg.model, params)
        }
        None => {
            let c = ModelConfig {
                arch: a.arch.clone(),
                height: 28,
                width: 28,
                channels: 1,
                hidden: if a.arch == "mlp" { vec![400] } else { vec![] },
                conv_channels: if a.arch == "conv" {
                    vec![32, 64]
                } else {
                    vec![]
                },
                latent: 20,
                likelihood: Likelihood::Bernoulli,
                gauss_var: 1.0,
            };
            let params = Params::new(&gpu, &c, 1)?;
            (c, params)
        }
    };
    if a.force {
        gpu.tuner().remeasure();
    }
    let rows = a.batch_size as usize;
    let images = GpuImages::upload(&gpu, &vec![0; c.input_dim()], c.input_dim())?;
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
            },
            &StepSpec {
                rows,
                settings: LossSettings {
                    likelihood: c.likelihood,
                    beta: 1.0,
                    grad_scale: 1.0,
                    gauss_var: c.gauss_var,
                    valid: rows,
                },
                adam,
                seed: 1,
                corruption: None,
            },
        )?;
    }
    let tuner = gpu.tuner();
    let candidates = gpu.gemm_paths();
    let mut header = format!("{:<28}", "GEMM shape (M x N x K, op)");
    for p in &candidates {
        header += &format!("{:>16}", format!("{p:?} us"));
    }
    println!("{header}  pick");
    for shape in tuner.seen() {
        let mut line = format!("{:<28}", shape.to_string());
        let m = tuner.get(shape);
        for p in &candidates {
            let us = m.and_then(|m| m.micros.get(p));
            line += &us.map_or(format!("{:>16}", "-"), |us| format!("{us:>16.0}"));
        }
        let pick = m.map_or(format!("{:?} (default)", gpu.default_gemm), |m| {
            format!("{:?}", m.pick)
        });
        println!("{line}  {pick}");
    }
    println!(
        "{} shapes of the {} model at batch {rows} in {:.1} s; cache: {}",
        tuner.seen().len(),
        c.arch,
        started.elapsed().as_secs_f64(),
        tuner
            .cache_path()
            .map_or("none (no cache directory)".into(), |p| p
                .display()
                .to_string())
    );
    Ok(())
}
