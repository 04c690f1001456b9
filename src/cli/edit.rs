//! `vae-gpu edit`: steer an attribute in latent space. The attribute vector is the mean
//! latent code of one class minus that of another (over the training split); images are
//! moved along it and decoded.

use std::path::PathBuf;

use clap::Args;

use super::{check_dims, load_model, open_gpu, pick_images, DataArgs, DeviceArgs, ModelArg};
use crate::data::{class_name, Images};
use crate::vae::codec::{decode_pixels, encode, own_classes};

#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// The class the edit starts from: a label or a class name (e.g. 0 or "T-shirt/top").
    #[arg(long)]
    pub from: String,
    /// The class the edit moves towards.
    #[arg(long)]
    pub to: String,
    /// How far to move, in units of the attribute vector (0: the image's own code, 1: the
    /// full difference between the class means).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.5,1,1.5",
        allow_negative_numbers = true
    )]
    pub strength: Vec<f32>,
    /// Edit this image (a test-split index or an image file) instead of test images of
    /// --from.
    #[arg(long)]
    pub index: Option<String>,
    /// How many test images of --from to edit (without --index).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub count: u32,
    /// Output PNG [default: RUN/edit.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

/// A class given by label or by name.
fn parse_class(s: &str, names: &[String]) -> anyhow::Result<u8> {
    if let Ok(l) = s.trim().parse::<u8>() {
        return Ok(l);
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s.trim()))
        .map(|i| i as u8)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "'{s}' is neither a class label nor a class name{}",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            )
        })
}

/// The images of `split` with label `class`.
fn of_class(split: &Images, class: u8) -> Option<Images> {
    split.with_classes(&[class]).filter(|i| i.count > 0)
}

pub fn run(device: &DeviceArgs, a: &EditArgs) -> anyhow::Result<()> {
    if a.strength.len() > 32 {
        anyhow::bail!(
            "--strength: {} values; at most 32 columns",
            a.strength.len()
        );
    }
    if let Some(s) = a.strength.iter().find(|s| !(-1000.0..=1000.0).contains(*s)) {
        anyhow::bail!("--strength {s} is out of range (-1000..=1000)");
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let splits = input.load()?;
    check_dims(c, &splits.train)?;
    let names = input.run_class_names(&cfg, splits.train.labels.as_deref())?;
    let (from, to) = (parse_class(&a.from, &names)?, parse_class(&a.to, &names)?);
    if from == to {
        anyhow::bail!(
            "--from and --to name the same class ({from}): the attribute vector would be zero"
        );
    }
    let mean_code = |class: u8| -> anyhow::Result<Vec<f32>> {
        let imgs = of_class(&splits.train, class).ok_or_else(|| {
            anyhow::anyhow!(
                "the training split has no images of {} (or the data has no labels)",
                class_name(&names, class)
            )
        })?;
        let mu = encode(&gpu, &params, c, &imgs, 1.0)?.codes.mu;
        let mut mean = vec![0.0f32; c.latent];
        for row in mu.chunks(c.latent) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += v / imgs.count as f32);
        }
        Ok(mean)
    };
    let (a_mean, b_mean) = (mean_code(from)?, mean_code(to)?);
    let vector: Vec<f32> = b_mean.iter().zip(&a_mean).map(|(b, a)| b - a).collect();
    let images = match &a.index {
        Some(i) => pick_images(&input, c, &[i])?,
        None => of_class(&splits.test, from)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the test split has no images of {}",
                    class_name(&names, from)
                )
            })?
            .take(a.count as usize),
    };
    let mu = encode(&gpu, &params, c, &images, 1.0)?.codes.mu;
    let mut codes = Vec::new();
    for row in mu.chunks(c.latent) {
        for &s in &a.strength {
            codes.extend(row.iter().zip(&vector).map(|(z, v)| z + s * v));
        }
    }
    // Each image keeps its own class (a conditional model's).
    let own: Option<Vec<u8>> = own_classes(c, &images).map(|l| {
        l.iter()
            .flat_map(|&k| std::iter::repeat_n(k, a.strength.len()))
            .collect()
    });
    let decoded = decode_pixels(&gpu, &params, c, &codes, own.as_deref())?;
    let per_row = a.strength.len() + 1;
    let mut cells = Vec::with_capacity(images.count * per_row);
    for i in 0..images.count {
        cells.push(images.image_u8(i).into_owned());
        cells.extend(
            decoded[i * a.strength.len()..(i + 1) * a.strength.len()]
                .iter()
                .cloned(),
        );
    }
    let (fname, tname) = (class_name(&names, from), class_name(&names, to));
    let mut cols = vec!["input".to_string()];
    cols.extend(a.strength.iter().map(|s| format!("{s:+}")));
    let labels = crate::io::png::Labels {
        title: format!("{fname} -> {tname}: codes moved by strength x (mean code of {tname} - mean code of {fname})"),
        rows: Vec::new(),
        cols,
    };
    let out = super::output_path(a.out.as_deref(), || dir.join("edit.png"))?;
    crate::io::png::save_grid(
        &out,
        &cells,
        (c.height, c.width, c.channels),
        per_row,
        &labels,
    )?;
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    super::report(
        &format!(
            "wrote {}: {} image(s) moved from {fname} towards {tname} at strengths {:?} (attribute vector length {norm:.3})",
            out.display(),
            images.count,
            a.strength
        ),
        serde_json::json!({
            "from": fname,
            "to": tname,
            "images": images.count,
            "strengths": a.strength,
            "vector_norm": norm,
            "out": out,
        }),
    );
    Ok(())
}
