//! `vae-gpu interpolate`: a strip of images decoded along a path between two codes.

use std::path::PathBuf;

use clap::Args;

use super::{load_model, open_gpu, pick_images, DataArgs, DeviceArgs, ModelArg};
use crate::vae::codec::{decode_pixels, encode, own_classes};

#[derive(Args, Debug)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Start: an index into the test split or an image file.
    #[arg(long)]
    pub from: String,
    /// End: an index into the test split or an image file.
    #[arg(long)]
    pub to: String,
    /// Decoded images between the two ends (inclusive).
    #[arg(long, alias = "steps", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=200))]
    pub count: u32,
    /// Spherical instead of linear interpolation (stays at the prior's typical radius).
    #[arg(long)]
    pub slerp: bool,
    #[command(flatten)]
    pub class: super::ClassArg,
    /// Output PNG [default: RUN/interpolate.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

/// The point a fraction t of the way from a to b, linearly or along the great circle.
pub fn interpolate(a: &[f32], b: &[f32], t: f32, slerp: bool) -> Vec<f32> {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos = (dot / (norm(a) * norm(b)).max(1e-12)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    if !slerp || omega.abs() < 1e-4 {
        return a.iter().zip(b).map(|(x, y)| x + t * (y - x)).collect();
    }
    let (wa, wb) = (
        ((1.0 - t) * omega).sin() / omega.sin(),
        (t * omega).sin() / omega.sin(),
    );
    a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect()
}

pub fn run(device: &DeviceArgs, a: &InterpolateArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::interpolate(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    // A conditional model decodes the path in --class, or in the start's class.
    let asked = a.class.labels(&cfg)?;
    let ends = super::labelled(
        pick_images(&input, c, &[&a.from, &a.to])?,
        &cfg,
        asked.as_deref(),
    )?;
    let class = asked.or_else(|| own_classes(c, &ends).map(|l| l[..1].to_vec()));
    let codes = encode(&gpu, &params, c, &ends, 1.0)?.codes;
    let n = a.count as usize;
    let path: Vec<f32> = (0..n)
        .flat_map(|i| {
            interpolate(
                codes.mu_of(0),
                codes.mu_of(1),
                i as f32 / (n - 1) as f32,
                a.slerp,
            )
        })
        .collect();
    let mut strip = vec![ends.image_u8(0).into_owned()];
    strip.extend(decode_pixels(&gpu, &params, c, &path, class.as_deref())?);
    strip.push(ends.image_u8(1).into_owned());
    let out = super::output_path(a.out.as_deref(), || dir.join("interpolate.png"))?;
    let mut cols = vec![format!("from {}", a.from)];
    cols.extend((0..n).map(|i| format!("t={:.2}", i as f32 / (n - 1) as f32)));
    cols.push(format!("to {}", a.to));
    let labels = crate::io::png::Labels {
        title: format!(
            "{} interpolation of the latent means: image {} (left), decoded path, image {} (right)",
            if a.slerp { "Spherical" } else { "Linear" },
            a.from,
            a.to
        ),
        rows: Vec::new(),
        cols,
    };
    let shape = (c.height, c.width, c.channels);
    crate::io::png::save_grid(&out, &strip, shape, strip.len(), &labels)?;
    let distance = codes
        .mu_of(0)
        .iter()
        .zip(codes.mu_of(1))
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt();
    let path = if a.slerp { "spherical" } else { "linear" };
    super::report(
        &format!(
            "wrote {}: {} -> {} in {n} {path} steps (ends shown as originals), latent distance {distance:.3}",
            out.display(),
            a.from,
            a.to,
        ),
        serde_json::json!({
            "from": a.from,
            "to": a.to,
            "count": n,
            "path": path,
            "latent_distance": distance,
            "out": out,
        }),
    );
    Ok(())
}
