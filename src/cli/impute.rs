//! `vae-gpu impute`: fill in missing pixels by iterating encode -> decode while keeping
//! the known pixels, compared with filling them from the mean training image.

use std::path::PathBuf;

use clap::Args;

use super::{check_dims, load_model, open_gpu, DataArgs, DeviceArgs, ModelArg};
use crate::data::Images;
use crate::rng::Rng;
use crate::vae::codec::{decode, encode, own_classes, psnr};
use crate::vae::decode::to_u8;

/// Which pixels are missing.
#[derive(Clone, Copy, Debug)]
pub enum MaskSpec {
    /// A rectangle: left, top, width, height in pixels.
    Rect(usize, usize, usize, usize),
    /// Each pixel independently with this probability.
    Random(f64),
}

impl std::str::FromStr for MaskSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<MaskSpec, String> {
        match s.split_once(':') {
            Some(("rect", v)) => {
                let n: Vec<usize> = v
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse()
                            .map_err(|_| format!("'{t}' is not a pixel count"))
                    })
                    .collect::<Result<_, _>>()?;
                match n[..] {
                    [x, y, w, h] if w > 0 && h > 0 => Ok(MaskSpec::Rect(x, y, w, h)),
                    _ => Err(format!("rect needs X,Y,W,H with W, H > 0, got '{v}'")),
                }
            }
            Some(("random", p)) => match p.parse::<f64>() {
                Ok(p) if (0.0..1.0).contains(&p) && p > 0.0 => Ok(MaskSpec::Random(p)),
                _ => Err(format!("random needs a probability in (0, 1), got '{p}'")),
            },
            _ => Err(format!("'{s}' is not rect:X,Y,W,H or random:P")),
        }
    }
}

#[derive(Args, Debug)]
pub struct ImputeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Images: the missing pixels, rect:X,Y,W,H or random:P [default: the lower half,
    /// rect:0,14,28,14 for 28x28 images]. A table's missing cells are its empty ones.
    #[arg(long)]
    pub mask: Option<MaskSpec>,
    /// Encode -> decode rounds [default: 50 for images; 1 for tables, whose encoder sees
    /// which cells are missing (more rounds re-encode the filled records and can drift)]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub iters: Option<u32>,
    /// Images shown in the PNG (rows: masked, imputed, truth).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,
    /// Test images the PSNR is averaged over.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Seed of random masks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output PNG, or for a table the filled CSV [default: RUN/impute.png, RUN/imputed.csv]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
    /// Tables: hide this fraction of the known cells first and report how well they are
    /// filled (RMSE, accuracy) next to mean and most-common filling.
    #[arg(long, value_name = "F", value_parser = super::fraction)]
    pub holdout: Option<f64>,
}

/// missing[i * d + j]: whether value j of image i is missing (all channels of a pixel alike).
fn missing(spec: &MaskSpec, imgs: &Images, seed: u64) -> anyhow::Result<Vec<bool>> {
    let (h, w, ch) = (imgs.height, imgs.width, imgs.channels);
    if let MaskSpec::Rect(x0, y0, _, _) = *spec {
        if x0 >= w || y0 >= h {
            anyhow::bail!("--mask rect starts at ({x0}, {y0}), outside the {w}x{h} images");
        }
    }
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(imgs.count * imgs.dim());
    for _ in 0..imgs.count {
        for y in 0..h {
            for x in 0..w {
                let m = match *spec {
                    MaskSpec::Rect(x0, y0, rw, rh) => {
                        (x0..x0 + rw).contains(&x) && (y0..y0 + rh).contains(&y)
                    }
                    MaskSpec::Random(p) => rng.uniform(0.0, 1.0) < p,
                };
                out.extend(std::iter::repeat_n(m, ch));
            }
        }
    }
    Ok(out)
}

pub fn run(device: &DeviceArgs, a: &ImputeArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    if c.table.is_some() {
        if a.mask.is_some() {
            anyhow::bail!("--mask hides pixels of images; a table's missing cells are its empty ones (--holdout hides known cells to measure the filling)");
        }
        return super::impute_table::run(&gpu, a, &input, &dir, c, &params);
    }
    if a.holdout.is_some() {
        anyhow::bail!("--holdout measures filling in a table; for images, --mask hides the pixels");
    }
    let splits = input.load()?;
    let test = splits.test.take(a.limit as usize);
    check_dims(c, &test)?;
    let (n, d) = (test.count, test.dim());
    let (h, w) = (test.height, test.width);
    let spec = a.mask.unwrap_or(MaskSpec::Rect(0, h / 2, w, h - h / 2));
    let miss = missing(&spec, &test, a.seed)?;
    let truth = test.to_f32();
    let train = splits.train.to_f32();
    let count = splits.train.count;
    let mean: Vec<f32> = (0..d)
        .map(|j| (0..count).map(|i| train[i * d + j]).sum::<f32>() / count as f32)
        .collect();
    // Start from the mean image in the holes, then let the model refine them.
    let baseline: Vec<f32> = (0..n * d)
        .map(|i| if miss[i] { mean[i % d] } else { truth[i] })
        .collect();
    let mut current = baseline.clone();
    let iters = a.iters.unwrap_or(50);
    for _ in 0..iters {
        let imgs = Images {
            pixels: test.dtype.bytes(&current),
            ..test.clone()
        };
        let mu = encode(&gpu, &params, c, &imgs, 1.0)?.codes.mu;
        let recon = decode(&gpu, &params, c, &mu, own_classes(c, &imgs))?.concat();
        for i in 0..n * d {
            if miss[i] {
                current[i] = recon[i];
            }
        }
    }
    let score = |v: &[f32]| {
        (0..n)
            .map(|i| {
                psnr(
                    &v[i * d..(i + 1) * d],
                    &truth[i * d..(i + 1) * d],
                    Some(&miss[i * d..(i + 1) * d]),
                )
                .min(100.0)
            })
            .sum::<f64>()
            / n as f64
    };
    let shown = (a.count as usize).min(n);
    let masked: Vec<f32> = (0..shown * d)
        .map(|i| if miss[i] { 0.5 } else { truth[i] })
        .collect();
    let mut cells: Vec<Vec<u8>> = Vec::new();
    for v in [&masked[..], &current[..shown * d], &truth[..shown * d]] {
        cells.extend(v.chunks(d).map(to_u8));
    }
    let out = super::output_path(a.out.as_deref(), || dir.join("impute.png"))?;
    let mask = match spec {
        MaskSpec::Rect(x, y, w, h) => format!("rect {x},{y} {w}x{h}"),
        MaskSpec::Random(p) => format!("random {p}"),
    };
    let missing = miss.iter().filter(|&&m| m).count() as f64 / miss.len() as f64;
    let (imputed, mean_fill) = (score(&current), score(&baseline));
    let labels = crate::io::png::Labels {
        title: format!(
            "Missing pixels ({mask}): PSNR {imputed:.2} dB imputed vs {mean_fill:.2} dB mean filling"
        ),
        rows: vec!["masked".into(), "imputed".into(), "truth".into()],
        cols: (0..shown)
            .map(|i| {
                let r = i * d..(i + 1) * d;
                let p = psnr(&current[r.clone()], &truth[r.clone()], Some(&miss[r])).min(100.0);
                format!("{p:.1} dB")
            })
            .collect(),
    };
    crate::io::png::save_grid(
        &out,
        &cells,
        (c.height, c.width, c.channels),
        shown,
        &labels,
    )?;
    super::report(
        &format!(
            "{mask} missing ({:.0}% of pixels), {} rounds on {n} test images: PSNR on the missing pixels {imputed:.2} dB imputed vs {mean_fill:.2} dB mean-image filling; rows masked / imputed / truth in {}",
            100.0 * missing,
            iters,
            out.display()
        ),
        serde_json::json!({
            "images": n,
            "mask": mask,
            "missing_fraction": missing,
            "iters": iters,
            "psnr_imputed_db": imputed,
            "psnr_mean_fill_db": mean_fill,
            "out": out,
        }),
    );
    Ok(())
}
