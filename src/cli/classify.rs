//! `vae-gpu classify`: a conditional VAE as a generative classifier. Each record gets the
//! class under which the model explains it best: the highest ELBO, averaged over a few
//! samples of z, with its accuracy where the records' labels are known.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{load_model, open_gpu, DataArgs, DeviceArgs, ModelArg, SplitArgs};
use crate::vae::codec::encode;

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: SplitArgs,
    /// Samples of z per record and class whose ELBOs are averaged (more: steadier, slower).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub samples: u32,
    /// Output CSV: each record's predicted class and its ELBO under every class
    /// [default: RUN/classes.csv]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

pub fn run(device: &DeviceArgs, a: &ClassifyArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    let k = c.classes.context(
        "classify needs a conditional model (train --conditional): it files each record under the class whose ELBO is highest",
    )?;
    let input = a.data.for_run(&cfg)?;
    let imgs = a.images.images(&input, c)?;
    let (n, s) = (imgs.count, a.samples as usize);
    // Each record s times in a row: one pass per class gives s ELBOs of every record.
    let keep: Vec<usize> = (0..n).flat_map(|i| std::iter::repeat_n(i, s)).collect();
    let mut copies = imgs.select(&keep);
    let bar = super::progress_bar(k as u64, "classify", "classes");
    let mut elbo = vec![vec![0.0f64; k]; n];
    for class in 0..k {
        copies.labels = Some(vec![class as u8; n * s]);
        let losses = encode(&gpu, &params, c, &copies, 1.0)?.losses;
        for (i, row) in elbo.iter_mut().enumerate() {
            let total: f64 = (0..s).map(|j| f64::from(losses[(i * s + j) * 3 + 2])).sum();
            row[class] = -total / s as f64;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if elbo.iter().flatten().any(|v| v.is_nan()) {
        anyhow::bail!(
            "{}: the model's ELBOs are not numbers on this data (weights that diverged); classify with an earlier checkpoint (--model RUN/checkpoint-NNNN)",
            a.model.model.as_deref().unwrap_or(&dir).display()
        );
    }
    let predicted: Vec<usize> = elbo
        .iter()
        .map(|row| {
            (0..k)
                .max_by(|&x, &y| row[x].total_cmp(&row[y]))
                .expect("at least two classes")
        })
        .collect();

    let out = super::output_path(a.out.as_deref(), || dir.join("classes.csv"))?;
    let records = super::RecordCsv::new(&imgs, &a.images, &input, &cfg)?;
    let columns: Vec<String> = (0..k).map(|j| format!("elbo_{j}")).collect();
    let mut csv = records.header(&format!("predicted,{}", columns.join(",")));
    for (i, row) in elbo.iter().enumerate() {
        let values: Vec<String> = row.iter().map(|v| format!("{v:.4}")).collect();
        csv += &records.line(i, &format!("{},{}", predicted[i], values.join(",")));
    }
    crate::io::write_atomic(&out, csv.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;

    let names = input.run_class_names(&cfg, imgs.labels.as_deref())?;
    let mut line = format!(
        "classified {n} {} by the highest ELBO ({s} samples each) -> {}",
        c.items(),
        out.display()
    );
    let mut json = serde_json::json!({"records": n, "out": out, "samples": s});
    if let Some(truth) = &imgs.labels {
        let right = |of: &dyn Fn(usize) -> bool| {
            let idx: Vec<usize> = (0..n).filter(|&i| of(i)).collect();
            let hit = idx
                .iter()
                .filter(|&&i| predicted[i] == usize::from(truth[i]))
                .count();
            (hit, idx.len())
        };
        let (hit, all) = right(&|_| true);
        let accuracy = hit as f64 / all.max(1) as f64;
        line += &format!("\naccuracy {:.2}% ({hit} of {all})", 100.0 * accuracy);
        let mut per_class = Vec::new();
        for j in 0..k {
            let (hit, all) = right(&|i| usize::from(truth[i]) == j);
            if all > 0 {
                let name = crate::data::class_name(&names, j as u8);
                let acc = hit as f64 / all as f64;
                line += &format!("\n  {name:<16} {:>6.2}% of {all}", 100.0 * acc);
                per_class.push(
                    serde_json::json!({"class": j, "name": name, "accuracy": acc, "records": all}),
                );
            }
        }
        json["accuracy"] = accuracy.into();
        json["per_class"] = per_class.into();
    }
    super::report(&line, json);
    Ok(())
}
