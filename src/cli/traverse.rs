//! `vae-gpu traverse`: one row per latent dimension, varying it around a code.

use std::path::PathBuf;

use clap::Args;

use super::{load_model, open_gpu, pick_images, DataArgs, DeviceArgs, ModelArg};
use crate::vae::codec::{decode_pixels, encode, own_classes};

#[derive(Args, Debug)]
pub struct TraverseArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Vary around this image's code (a test-split index or an image file) [default: the origin]
    #[arg(long)]
    pub index: Option<String>,
    /// Dimensions to traverse: all, or a list such as 0,3
    #[arg(long, default_value = "all")]
    pub dims: String,
    /// Each dimension goes from -range to +range around the code.
    #[arg(long, default_value_t = 3.0, value_parser = super::positive)]
    pub range: f32,
    /// Images per dimension (the columns of each row).
    #[arg(long, alias = "steps", default_value_t = 9, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub count: u32,
    #[command(flatten)]
    pub class: super::ClassArg,
    /// Output PNG [default: RUN/traverse.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

/// "all" or a comma list of dimensions below `latent`.
pub fn parse_dims(s: &str, latent: usize) -> anyhow::Result<Vec<usize>> {
    if s == "all" {
        return Ok((0..latent).collect());
    }
    s.split(',')
        .map(|d| match d.trim().parse::<usize>() {
            Ok(d) if d < latent => Ok(d),
            _ => anyhow::bail!(
                "--dims: '{d}' is not a dimension of the {latent}-dimensional latent space"
            ),
        })
        .collect()
}

pub fn run(device: &DeviceArgs, a: &TraverseArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let dims = parse_dims(&a.dims, c.latent)?;
    // A conditional model decodes in --class, or in the image's class.
    let mut class = a.class.labels(&cfg)?;
    let base = match &a.index {
        Some(i) => {
            let image = super::labelled(pick_images(&input, c, &[i])?, &cfg, class.as_deref())?;
            class = class.or_else(|| own_classes(c, &image).map(<[u8]>::to_vec));
            encode(&gpu, &params, c, &image, 1.0)?.codes.mu
        }
        None => vec![0.0; c.latent],
    };
    if c.classes.is_some() && class.as_ref().is_none_or(|l| l.len() != 1) {
        return Err(super::class_needed(&cfg));
    }
    let n = a.count as usize;
    let mut codes = Vec::with_capacity(dims.len() * n * c.latent);
    for &d in &dims {
        for i in 0..n {
            let mut z = base.clone();
            z[d] += -a.range + 2.0 * a.range * i as f32 / (n - 1) as f32;
            codes.extend(z);
        }
    }
    let images = decode_pixels(&gpu, &params, c, &codes, class.as_deref())?;
    let out = super::output_path(a.out.as_deref(), || dir.join("traverse.png"))?;
    let around = a.index.as_deref().map_or("the origin".to_string(), |i| {
        format!("the code of image {i}")
    });
    let labels = crate::io::png::Labels {
        title: format!("Each latent dimension varied around {around}"),
        rows: dims.iter().map(|d| format!("z{d}")).collect(),
        cols: (0..n)
            .map(|i| {
                format!(
                    "{:+.1}",
                    -a.range + 2.0 * a.range * i as f32 / (n - 1) as f32
                )
            })
            .collect(),
    };
    crate::io::png::save_grid(&out, &images, (c.height, c.width, c.channels), n, &labels)?;
    super::report(
        &format!(
            "wrote {}: {} dimension(s) x {n} values in [-{r}, {r}] around {around}",
            out.display(),
            dims.len(),
            r = a.range
        ),
        serde_json::json!({"dims": dims, "count": n, "range": a.range, "around": around, "out": out}),
    );
    Ok(())
}
