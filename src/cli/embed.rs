//! `vae-gpu embed` (latent codes as CSV) and `vae-gpu scatter` (their means in 2-D,
//! coloured by label).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{load_model, open_gpu, DataArgs, DeviceArgs, ModelArg, SplitArgs};
use crate::vae::codec::encode;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: SplitArgs,
    /// Output file [default: RUN/latents.csv for embed, RUN/scatter.png for scatter]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
    /// scatter: plot the first two principal components instead of dimensions 0 and 1.
    #[arg(long)]
    pub pca: bool,
}

pub fn run_embed(device: &DeviceArgs, a: &EmbedArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::embed(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    let imgs = a.images.images(&input, c)?;
    let codes = encode(&gpu, &params, c, &imgs, 1.0)?.codes;
    let out = super::output_path(a.out.as_deref(), || dir.join("latents.csv"))?;
    let z = c.latent;
    let records = super::RecordCsv::new(&imgs, &a.images, &input, &cfg)?;
    let columns: Vec<String> = (0..z)
        .map(|j| format!("mu_{j}"))
        .chain((0..z).map(|j| format!("logvar_{j}")))
        .collect();
    let mut csv = records.header(&columns.join(","));
    for i in 0..imgs.count {
        let nums: Vec<String> = codes
            .mu_of(i)
            .iter()
            .chain(&codes.logvar[i * z..(i + 1) * z])
            .map(|v| v.to_string())
            .collect();
        csv += &records.line(i, &nums.join(","));
    }
    crate::io::write_atomic(&out, csv.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    super::report(
        &format!(
            "wrote {} codes ({} dimensions, mu and logvar) of {} to {}",
            imgs.count,
            z,
            match a.images.split.as_str() {
                "all" => "both splits".to_string(),
                split => format!("the {split} split"),
            },
            out.display()
        ),
        serde_json::json!({"images": imgs.count, "latent": z, "split": a.images.split, "out": out}),
    );
    Ok(())
}

/// The top two principal directions of the rows of `x` ([n, d]).
pub struct Pca {
    pub mean: Vec<f64>,
    pub dirs: [Vec<f64>; 2],
    /// The fraction of the total variance along each direction.
    pub explained: [f64; 2],
}

/// `Pca` by power iteration on the covariance.
pub fn pca2(x: &[f32], d: usize) -> Pca {
    let n = (x.len() / d).max(1);
    let mean: Vec<f64> = (0..d)
        .map(|j| {
            x.iter()
                .skip(j)
                .step_by(d)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let mut cov = vec![0.0; d * d];
    for row in x.chunks(d) {
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] +=
                    (f64::from(row[a]) - mean[a]) * (f64::from(row[b]) - mean[b]) / n as f64;
            }
        }
    }
    let mut dirs: [Vec<f64>; 2] = [vec![0.0; d], vec![0.0; d]];
    for k in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|j| 1.0 + j as f64 * 0.01).collect();
        for _ in 0..200 {
            let mut w: Vec<f64> = (0..d)
                .map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum())
                .collect();
            if k == 1 {
                // Deflate: stay orthogonal to the first direction.
                let dot: f64 = w.iter().zip(&dirs[0]).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(&dirs[0]).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
            v = w.iter().map(|a| a / norm).collect();
        }
        dirs[k] = v;
    }
    // Variance along a unit direction: v^T C v; the total is C's trace.
    let along = |v: &[f64]| -> f64 {
        (0..d)
            .map(|a| v[a] * (0..d).map(|b| cov[a * d + b] * v[b]).sum::<f64>())
            .sum()
    };
    let total = (0..d).map(|a| cov[a * d + a]).sum::<f64>().max(1e-300);
    let explained = [along(&dirs[0]) / total, along(&dirs[1]) / total];
    Pca {
        mean,
        dirs,
        explained,
    }
}

pub fn run_scatter(device: &DeviceArgs, a: &EmbedArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    let imgs = a.images.images(&input, c)?;
    let codes = encode(&gpu, &params, c, &imgs, 1.0)?.codes;
    let z = c.latent;
    let pca = (a.pca && z > 2).then(|| pca2(&codes.mu, z));
    let points: Vec<(f32, f32)> = if let Some(p) = &pca {
        let proj = |row: &[f32], dir: &[f64]| {
            row.iter()
                .zip(dir)
                .zip(&p.mean)
                .map(|((&x, d), m)| (f64::from(x) - m) * d)
                .sum::<f64>() as f32
        };
        codes
            .mu
            .chunks(z)
            .map(|r| (proj(r, &p.dirs[0]), proj(r, &p.dirs[1])))
            .collect()
    } else {
        codes
            .mu
            .chunks(z)
            .map(|r| (r[0], *r.get(1).unwrap_or(&0.0)))
            .collect()
    };
    let labelled = imgs.labels.is_some();
    let out = super::output_path(a.out.as_deref(), || dir.join("scatter.png"))?;
    let names = input.run_class_names(&cfg, imgs.labels.as_deref())?;
    let (axes, axis_names) = if let Some(p) = &pca {
        (
            "first two principal components",
            (
                format!(
                    "principal component 1 of the latent means ({:.0}% of the variance)",
                    100.0 * p.explained[0]
                ),
                format!(
                    "principal component 2 ({:.0}% of the variance)",
                    100.0 * p.explained[1]
                ),
            ),
        )
    } else if z == 1 {
        (
            "dimension 0 (against 0: the latent has one dimension)",
            ("latent dimension 0 (mean)".into(), "0".into()),
        )
    } else {
        (
            "dimensions 0 and 1",
            (
                "latent dimension 0 (mean)".into(),
                "latent dimension 1 (mean)".into(),
            ),
        )
    };
    crate::io::chart::save_scatter(
        &out,
        &format!(
            "Latent means of {} {} {}",
            imgs.count,
            a.images.split,
            c.items()
        ),
        (&axis_names.0, &axis_names.1),
        &points,
        imgs.labels.as_deref(),
        &|l| crate::data::class_name(&names, l),
    )?;
    super::report(
        &format!(
            "wrote {}: {} latent means, {axes}{}",
            out.display(),
            points.len(),
            if labelled {
                ", coloured by label"
            } else {
                " (the data has no labels to colour them by)"
            }
        ),
        serde_json::json!({
            "points": points.len(),
            "axes": axes,
            "explained_variance": pca.as_ref().map(|p| p.explained),
            "labelled": labelled,
            "out": out,
        }),
    );
    Ok(())
}
