//! `vae-gpu denoise`: corrupt test images, reconstruct them through the model (posterior
//! means), and compare both with the clean images.

use std::path::PathBuf;

use clap::Args;

use super::{check_dims, load_model, open_gpu, DataArgs, DeviceArgs, ModelArg};
use crate::ops::loss::LossSettings;
use crate::ops::sample::Corruption;
use crate::vae::codec::psnr;
use crate::vae::decode::{to_u8, unit};
use crate::vae::step::{StepProgram, StepSpec};
use crate::vae::train::GpuSplit;

#[derive(Args, Debug)]
pub struct DenoiseArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// The corruption: gaussian:SIGMA, saltpepper:P or mask:P
    #[arg(long, value_name = "KIND:AMOUNT")]
    pub noise: Corruption,
    /// Images shown in the PNG (rows: noisy, denoised, clean).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,
    /// Test images the PSNR is averaged over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Seed of the corruption.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output PNG [default: RUN/denoise.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

pub fn run(device: &DeviceArgs, a: &DenoiseArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let test = input.load_test()?.take(a.limit as usize);
    check_dims(c, &test)?;
    let n = test.count;
    let split = GpuSplit::upload(&gpu, &test)?;
    let rows = n.min(256);
    let spec = StepSpec {
        seed: a.seed,
        corruption: Some(a.noise),
        ..StepSpec::evaluation(c, rows, 1.0)
    };
    let settings = spec.settings;
    let mut program = StepProgram::new(&gpu, &params, c, &split.batches(), &spec)?;
    program.temperature = 0.0;
    let d = c.input_dim();
    let (mut before, mut after) = (0.0, 0.0);
    let mut shown: [Vec<Vec<u8>>; 3] = Default::default();
    let mut shown_psnr = Vec::new();
    for (i, offset) in (0..n).step_by(rows).enumerate() {
        let valid = (n - offset).min(rows);
        program.prepare(&gpu, offset, i as u64, &LossSettings { valid, ..settings });
        program.submit(&gpu, None)?;
        let clean = program.x().read(&gpu)?;
        let noisy = program.encoder_input().read(&gpu)?;
        let denoised: Vec<f32> = program
            .logits()?
            .read(&gpu)?
            .iter()
            .map(|&l| unit(c, l))
            .collect();
        for r in 0..valid {
            let s = r * d..(r + 1) * d;
            before += psnr(&noisy[s.clone()], &clean[s.clone()], None).min(100.0);
            let gain = psnr(&denoised[s.clone()], &clean[s.clone()], None).min(100.0);
            after += gain;
            if offset + r < a.count as usize {
                shown_psnr.push(format!("{gain:.1} dB"));
                for (row, v) in shown.iter_mut().zip([&noisy, &denoised, &clean]) {
                    row.push(to_u8(&v[s.clone()]));
                }
            }
        }
    }
    let cols = shown[0].len();
    let out = super::output_path(a.out.as_deref(), || dir.join("denoise.png"))?;
    let (noisy, denoised) = (before / n as f64, after / n as f64);
    let labels = crate::io::png::Labels {
        title: format!(
            "{}: PSNR noisy {noisy:.2} dB -> denoised {denoised:.2} dB (mean of {n} test images)",
            a.noise
        ),
        rows: vec!["noisy".into(), "denoised".into(), "clean".into()],
        cols: shown_psnr,
    };
    let shape = (c.height, c.width, c.channels);
    crate::io::png::save_grid(&out, &shown.concat(), shape, cols, &labels)?;
    super::report(
        &format!(
            "{} on {n} test images: PSNR noisy {noisy:.2} dB -> denoised {denoised:.2} dB; rows noisy / denoised / clean in {}",
            a.noise,
            out.display()
        ),
        serde_json::json!({
            "images": n,
            "noise": a.noise.to_string(),
            "psnr_noisy_db": noisy,
            "psnr_denoised_db": denoised,
            "out": out,
        }),
    );
    Ok(())
}
