//! `vae-gpu eval`: test loss (reconstruction and KL, nats per sample) and optionally the
//! importance-weighted bound with K samples per image.

use clap::Args;

use super::{load_model, open_gpu, DataArgs, DeviceArgs, ModelArg};
use crate::gpu::Matrix;
use crate::ops::iwae::{iwae, EMPTY};
use crate::ops::loss::LossSettings;
use crate::vae::model::StepProgram;
use crate::vae::train::{evaluate, GpuSplit};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Also compute the IWAE bound with K importance samples per image (0 = off).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub iwae: u32,
    /// Evaluate only the first N test images.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub batch_size: u32,
}

pub fn run(device: &DeviceArgs, a: &EvalArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    let splits = a.data.load()?;
    super::check_dims(c, &splits.test)?;
    let test = match a.limit {
        Some(n) => splits.test.take(n as usize),
        None => splits.test,
    };
    let n = test.count;
    let beta = cfg.train.as_ref().map_or(1.0, |t| t.beta);
    let split = GpuSplit::upload(&gpu, &test)?;
    let rows = (a.batch_size as usize).min(n);
    let settings = LossSettings {
        likelihood: c.likelihood,
        beta,
        grad_scale: 1.0,
        gauss_var: c.gauss_var,
        valid: rows,
    };
    let mut program = StepProgram::new(
        &gpu,
        &params,
        c,
        rows,
        &split.images,
        &split.indices.buffer,
        n,
        &settings,
        None,
        0,
    )?;
    let l = evaluate(&gpu, &mut program, n, beta, c, |i| i)?;
    println!(
        "model {}: {n} test images from {}",
        dir.display(),
        splits.source
    );
    println!(
        "test loss {:.3} nats/image (reconstruction {:.3} + KL {:.3}, beta {beta})",
        l.total, l.recon, l.kl
    );
    if a.iwae > 0 {
        let k = a.iwae as usize;
        let bound = iwae_bound(&gpu, &params, c, &test, k)?;
        println!("IWAE bound, K = {k}: -log p(x) <= {bound:.3} nats/image");
    }
    Ok(())
}

/// Mean over images of -(log-mean-exp of K importance weights), all on the GPU: every
/// image's K samples run in batches of up to 512 copies of it.
fn iwae_bound(
    gpu: &crate::gpu::Gpu,
    params: &crate::vae::Params,
    c: &crate::vae::ModelConfig,
    test: &crate::data::Images,
    k: usize,
) -> anyhow::Result<f64> {
    let rows = k.min(512);
    let n = test.count;
    // Each image index repeated `rows` times, so a batch at offset i * rows is image i.
    let repeated: Vec<u32> = (0..n as u32)
        .flat_map(|i| std::iter::repeat_n(i, rows))
        .collect();
    let images = crate::ops::gather::GpuImages::upload(gpu, &test.pixels, test.dim())?;
    let indices = Matrix::from_slice(
        gpu,
        1,
        repeated.len(),
        bytemuck::cast_slice(&repeated),
        "iwae indices",
    )?;
    let settings = LossSettings {
        likelihood: c.likelihood,
        beta: 1.0,
        grad_scale: 1.0,
        gauss_var: c.gauss_var,
        valid: rows,
    };
    let mut program = StepProgram::new(
        gpu,
        params,
        c,
        rows,
        &images,
        &indices.buffer,
        repeated.len(),
        &settings,
        None,
        0,
    )?;
    program.set_stream(crate::vae::model::STREAM_EVAL + 10);
    let heads = program.ws.heads;
    let state = Matrix::from_slice(gpu, 1, 2 * n, &EMPTY.repeat(n), "iwae state")?;
    let mut merge = iwae(
        gpu,
        &program.ws.per_sample,
        &program.ws.outs[heads],
        &program.ws.z,
        &program.ws.eps,
        &state,
    )?;
    let bar = indicatif::ProgressBar::new(n as u64);
    let mut step = 0u64;
    for i in 0..n {
        for start in (0..k).step_by(rows) {
            let valid = (k - start).min(rows);
            program.prepare(gpu, i * rows, step, &LossSettings { valid, ..settings });
            merge.set(gpu, i, valid);
            let mut encoder = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("iwae"),
                });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                program.record(&mut pass);
                merge.dispatch.record(&mut pass);
            }
            gpu.queue.submit([encoder.finish()]);
            step += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let s = state.read(gpu)?;
    let log_k = (k as f64).ln();
    let mean = (0..n)
        .map(|i| f64::from(s[2 * i]) + f64::from(s[2 * i + 1]).ln() - log_k)
        .sum::<f64>()
        / n as f64;
    Ok(-mean)
}
