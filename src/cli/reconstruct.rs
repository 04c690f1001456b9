//! `vae-gpu reconstruct`: test images over their reconstructions (decoded posterior means).

use std::path::PathBuf;

use clap::Args;

use super::{load_model, open_gpu, DataArgs, DeviceArgs, ModelArg};
use crate::vae::decode::to_pixels;
use crate::vae::step::{StepProgram, StepSpec};
use crate::vae::train::GpuSplit;

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// How many test images.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub count: u32,
    /// A conditional model's class to decode the codes in (the same style, another class)
    /// [default: each image's own]
    #[arg(long, value_name = "CLASS")]
    pub class: Option<String>,
    /// Output PNG [default: RUN/reconstruction.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

pub fn run(device: &DeviceArgs, a: &ReconstructArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::reconstruct(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let test = input.load_test()?;
    super::check_dims(c, &test)?;
    let test = test.take(a.count as usize);
    let n = test.count;
    let split = GpuSplit::upload(&gpu, &test)?;
    let spec = StepSpec::evaluation(c, n, 1.0);
    let settings = spec.settings;
    let mut program = StepProgram::new(&gpu, &params, c, &split.batches(), &spec)?;
    program.temperature = 0.0;
    program.prepare(&gpu, 0, 0, &settings);
    program.submit(&gpu, None)?;
    let as_class = super::ClassArg {
        class: a.class.iter().cloned().collect(),
    }
    .labels(&cfg)?;
    let recon = match &as_class {
        // The posterior means decoded in another class.
        Some(class) => {
            let mu: Vec<f32> = program
                .mulv()
                .read(&gpu)?
                .chunks(2 * c.latent)
                .take(n)
                .flat_map(|r| r[..c.latent].to_vec())
                .collect();
            crate::vae::codec::decode_pixels(&gpu, &params, c, &mu, Some(class))?
        }
        None => to_pixels(c, &program.logits()?.read(&gpu)?),
    };
    let unit = |p: &[u8]| {
        p.iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect::<Vec<f32>>()
    };
    let psnr: f64 = (0..n)
        .map(|i| {
            crate::vae::codec::psnr(&unit(&test.image_u8(i)), &unit(&recon[i]), None).min(100.0)
        })
        .sum::<f64>()
        / n as f64;
    let recon_row = match (&as_class, &a.class) {
        (Some(_), Some(name)) => format!("as {name}"),
        _ => "reconstructions".to_string(),
    };
    // Pairs of rows: originals, then their reconstructions.
    let cols = n.min(16);
    let mut cells = Vec::new();
    let mut rows = Vec::new();
    for start in (0..n).step_by(cols) {
        rows.extend(["test images".to_string(), recon_row.clone()]);
        let end = (start + cols).min(n);
        cells.extend((start..end).map(|i| test.image_u8(i).into_owned()));
        cells.extend(std::iter::repeat_n(
            vec![0; c.input_dim()],
            cols - (end - start),
        ));
        cells.extend(recon[start..end].iter().cloned());
        cells.extend(std::iter::repeat_n(
            vec![0; c.input_dim()],
            cols - (end - start),
        ));
    }
    let out = super::output_path(a.out.as_deref(), || dir.join("reconstruction.png"))?;
    let labels = crate::io::png::Labels {
        title: match &as_class {
            Some(_) => format!("Test images over their mean codes decoded {recon_row}"),
            // A stacked model reconstructs as it trains: from its lowest layer's code.
            None => format!(
                "Test images over their reconstructions (from the {}mean code): PSNR {psnr:.2} dB",
                if c.stacked() { "lowest layer's " } else { "" }
            ),
        },
        rows,
        cols: Vec::new(),
    };
    crate::io::png::save_grid(&out, &cells, (c.height, c.width, c.channels), cols, &labels)?;
    super::report(
        &format!(
            "wrote {n} originals over their {} to {}{}",
            if as_class.is_some() {
                "codes decoded in another class"
            } else {
                "reconstructions"
            },
            out.display(),
            if as_class.is_some() {
                String::new()
            } else {
                format!(" (PSNR {psnr:.2} dB)")
            }
        ),
        serde_json::json!({"images": n, "psnr_db": psnr, "out": out}),
    );
    Ok(())
}
