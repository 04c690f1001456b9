//! `vae-gpu score`: a per-image anomaly score (how badly the model explains the image), and
//! with labels and `--normal-classes`, the AUROC of telling the other classes apart.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{load_model, open_gpu, parse_classes, DataArgs, DeviceArgs, ModelArg, SplitArgs};
use crate::vae::codec::encode;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// elbo: -ELBO (reconstruction + KL); recon: reconstruction only; iwae: -log p(x)
    /// estimated with --iwae-k samples. All in nats; higher is more anomalous.
    #[arg(long, default_value = "elbo", value_parser = ["elbo", "recon", "iwae"])]
    pub metric: String,
    /// Importance samples per image for --metric iwae (more: a tighter bound, slower).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iwae_k: u32,
    /// Labels of the normal classes (e.g. 0-8); the others count as anomalies for the AUROC.
    #[arg(long, value_parser = parse_classes)]
    pub normal_classes: Option<super::Classes>,
    #[command(flatten)]
    pub images: SplitArgs,
    /// Output CSV [default: RUN/scores.csv]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

/// Area under the ROC curve of `scores` separating positives (true) from negatives: the
/// probability that a random positive outscores a random negative, ties counting half.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Ranks (1-based), averaged over ties.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            ranks[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let np = positive.iter().filter(|&&p| p).count() as f64;
    let nn = positive.len() as f64 - np;
    if np == 0.0 || nn == 0.0 {
        return None;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

pub fn run(device: &DeviceArgs, a: &ScoreArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::score(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    let imgs = a.images.images(&input, c)?;
    let scores: Vec<f64> = match a.metric.as_str() {
        "iwae" => super::iwae_log_px(&gpu, &params, c, &imgs, a.iwae_k as usize)?
            .iter()
            .map(|l| -l)
            .collect(),
        metric => {
            let losses = encode(&gpu, &params, c, &imgs, 1.0)?.losses;
            let col = if metric == "recon" { 0 } else { 2 };
            // A NaN KL would leave the total looking finite (max() drops NaN on GPUs).
            losses
                .chunks(3)
                .map(|l| match l.iter().any(|v| v.is_nan()) {
                    true => f64::NAN,
                    false => f64::from(l[col]),
                })
                .collect()
        }
    };
    // An infinite score ranks a record as the most anomalous; NaN, or infinity everywhere,
    // ranks nothing.
    if scores.iter().any(|s| s.is_nan()) || scores.iter().all(|s| s.is_infinite()) {
        anyhow::bail!(
            "{}: the model's {} scores are not numbers: its outputs overflow on this data (weights that diverged); score with an earlier checkpoint (--model RUN/checkpoint-NNNN)",
            a.model.model.as_deref().unwrap_or(&dir).display(),
            a.metric
        );
    }
    // Checked before anything is written, so a failing call leaves earlier results alone.
    let anomalous: Option<Vec<bool>> = match &a.normal_classes {
        Some(super::Classes(normal)) => {
            let labels = imgs
                .labels
                .as_ref()
                .context("--normal-classes needs labelled data (IDX label files, class subfolders, --labels for a .npy array or a table's --label-column)")?;
            if let Some(why) = super::absent_classes(normal, labels) {
                log::warn!("--normal-classes: the scored images have no {why}");
            }
            Some(labels.iter().map(|l| !normal.contains(l)).collect())
        }
        None => None,
    };
    let out = super::output_path(a.out.as_deref(), || dir.join("scores.csv"))?;
    let records = super::RecordCsv::new(&imgs, &a.images, &input, &cfg)?;
    let mut csv = records.header(&a.metric);
    for (i, sc) in scores.iter().enumerate() {
        csv += &records.line(i, &sc.to_string());
    }
    crate::io::write_atomic(&out, csv.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let mut line = format!(
        "scored {} {} by {} (mean {mean:.2} nats) -> {}",
        scores.len(),
        c.items(),
        a.metric,
        out.display()
    );
    let auroc = anomalous
        .as_ref()
        .map(|anomalous| auroc(&scores, anomalous));
    if let Some(anomalous) = &anomalous {
        match auroc.flatten() {
            Some(v) => {
                line += &format!(
                    "; AUROC {v:.4} ({} anomalies among {})",
                    anomalous.iter().filter(|&&x| x).count(),
                    scores.len()
                )
            }
            None => {
                line += &format!(
                    "; AUROC undefined (the data holds only normal or only anomalous {})",
                    c.items()
                )
            }
        }
    }
    super::report(
        &line,
        serde_json::json!({
            "images": scores.len(),
            "metric": a.metric,
            "mean": mean,
            "out": out,
            "anomalies": anomalous.as_ref().map(|x| x.iter().filter(|&&x| x).count()),
            "auroc": auroc.flatten(),
        }),
    );
    Ok(())
}
