//! `vae-gpu eval`: test loss (reconstruction and KL, nats per sample) and optionally the
//! importance-weighted bound with K samples per image.

use clap::Args;

use super::{load_model, open_gpu, say, DataArgs, DeviceArgs, ModelArg};
use crate::vae::step::{StepProgram, StepSpec};
use crate::vae::train::{evaluate, GpuSplit, ACTIVE_VARIANCE};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Also compute the IWAE bound with K importance samples per image (0 = off; K x images
    /// decoder passes, so 1000 on 1000 images is a million).
    #[arg(long, alias = "iwae", value_name = "K", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub iwae_k: u32,
    /// Evaluate only the first N test images.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Images per GPU pass (memory against launch count; the figures do not change).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub batch_size: u32,
}

pub fn run(device: &DeviceArgs, a: &EvalArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::eval(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    let data = a
        .data
        .for_run(&cfg)?
        .load_for_training(crate::vae::train::DEFAULT_GPU_DATA_BYTES)?;
    super::check_dims(c, &data.test)?;
    let test = match a.limit {
        Some(n) => data.test.take(n as usize),
        None => data.test,
    };
    let n = test.count;
    let beta = cfg.train.as_ref().map_or(1.0, |t| t.beta);
    let split = GpuSplit::upload(&gpu, &test)?;
    let rows = (a.batch_size as usize).min(n);
    let spec = StepSpec::evaluation(c, rows, beta);
    let settings = spec.settings;
    let mut program = StepProgram::new(&gpu, &params, c, &split.batches(), &spec)?;
    let l = evaluate(&gpu, &mut program, n, &settings)?;
    let overflow = |what: String| {
        anyhow::anyhow!(
            "{}: the {what}, not a number: the model's outputs overflow on this data (weights that diverged); evaluate an earlier checkpoint with --model RUN/checkpoint-NNNN",
            a.model.model.as_deref().unwrap_or(&dir).display()
        )
    };
    if !l.is_finite() {
        return Err(overflow(format!(
            "test loss is reconstruction {} + KL {}",
            l.recon, l.kl
        )));
    }
    let items = c.items();
    let item = items.trim_end_matches('s');
    say!(
        "model {}: {n} test {items} from {}",
        dir.display(),
        data.source
    );
    let mut line = format!(
        "test loss {:.3} nats/{item} (reconstruction {:.3} + KL {:.3}, beta {beta})",
        l.total, l.recon, l.kl
    );
    let mut iwae = None;
    if a.iwae_k > 0 {
        let k = a.iwae_k as usize;
        let log_px = super::iwae_log_px(&gpu, &params, c, &test, k)?;
        let bound = -log_px.iter().sum::<f64>() / log_px.len() as f64;
        if !bound.is_finite() {
            return Err(overflow(format!("IWAE bound is {bound}")));
        }
        line += &format!("\nIWAE bound, K = {k}: -log p(x) <= {bound:.3} nats/{item}");
        iwae = Some(bound);
    }
    // Active units per stochastic layer (bottom first, the code last).
    let active = crate::vae::codec::active_units(&gpu, &params, c, &test, ACTIVE_VARIANCE)?;
    let counts: Vec<String> = active
        .iter()
        .enumerate()
        .map(|(i, (a, z))| match active.len() - i {
            1 if i == 0 => format!("{a} of {z}"),
            1 => format!("layer {} (the code) {a} of {z}", i + 1),
            _ => format!("layer {} {a} of {z}", i + 1),
        })
        .collect();
    line += &format!(
        "\nactive units (variance of the mean above {ACTIVE_VARIANCE}): {}",
        counts.join(", ")
    );
    super::report(
        &line,
        serde_json::json!({
            "images": n,
            "beta": beta,
            "test": l,
            "iwae_k": a.iwae_k,
            "iwae_bound": iwae,
            "active_units": active.iter().map(|a| a.0).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}
