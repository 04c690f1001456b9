//! `vae-gpu sample`: new images decoded from codes drawn from the prior.

use std::path::PathBuf;

use clap::Args;

use super::{load_model, open_gpu, DeviceArgs, ModelArg};
use crate::vae::decode::{generate, generate_each, to_u8};

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// How many images to draw.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Seed of the prior noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scale of the prior's standard deviation (below 1 gives safer, blurrier samples).
    #[arg(long, default_value_t = 1.0, value_parser = super::non_negative)]
    pub temperature: f32,
    /// Output PNG grid [default: RUN/samples.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
    /// Columns of the grid [default: square-ish]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cols: Option<u32>,
    /// Write one PNG per sample into this directory instead of a grid.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "cols"], value_parser = super::out_path)]
    pub separate: Option<PathBuf>,
}

pub fn run(device: &DeviceArgs, a: &SampleArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let count = a.count as usize;
    let shape = (c.height, c.width, c.channels);
    if let Some(sep) = &a.separate {
        // Written as each batch is decoded: a large --count never sits in memory at once.
        super::paths::check_output(sep)?;
        let out = crate::io::png::Numbered::new(sep, "sample", shape)?;
        let mut i = 0;
        generate_each::<anyhow::Error>(
            &gpu,
            &params,
            c,
            (count, a.seed, a.temperature),
            &mut |v| {
                out.save(i, &to_u8(&v))?;
                i += 1;
                Ok(())
            },
        )?;
        super::report(
            &format!("wrote {count} images to {}", sep.display()),
            serde_json::json!({"images": count, "out": sep}),
        );
    } else {
        let out = super::output_path(a.out.as_deref(), || dir.join("samples.png"))?;
        let cols = a
            .cols
            .map(|c| c as usize)
            .unwrap_or_else(|| (count as f64).sqrt().ceil() as usize);
        // Refused before any decoding when the grid would be too large.
        crate::io::png::check_grid(count, (c.height, c.width), cols).map_err(|e| {
            anyhow::anyhow!("{e} (or write one file per image with --separate DIR)")
        })?;
        let images: Vec<Vec<u8>> = generate(&gpu, &params, c, count, a.seed, a.temperature)?
            .iter()
            .map(|v| to_u8(v))
            .collect();
        let title = format!(
            "{} samples from the prior N(0, {}² I), seed {}",
            images.len(),
            a.temperature,
            a.seed
        );
        crate::io::png::save_grid(
            &out,
            &images,
            shape,
            cols,
            &crate::io::png::Labels::title(title),
        )?;
        super::report(
            &format!("wrote {} samples to {}", images.len(), out.display()),
            serde_json::json!({"images": images.len(), "out": out}),
        );
    }
    Ok(())
}
