//! `vae-gpu quality` on a table model: generated records against real ones, column by
//! column (a numeric column's mean and deviation, a binary or categorical one's level
//! frequencies), and "train on synthetic, test on real": a classifier of the label trained
//! on generated records and tested on the held-out real ones, against the same classifier
//! trained on the real training records.

use crate::data::table::{Kind, Schema};
use crate::data::{Dtype, Images};
use crate::gpu::Gpu;
use crate::ops::adam::AdamConfig;
use crate::vae::decode::{generate_outputs, Prior};
use crate::vae::probe::{train_and_test, Features};
use crate::vae::{ModelConfig, Params};

/// The fewest real training and test records compared.
const MIN_RECORDS: usize = 20;

/// Full-batch Adam steps of the label classifier (softmax regression on encoded values).
const STEPS: usize = 500;

/// Each record's encoded values (E of its 2E), missing cells as 0.
fn values(records: &Images, e: usize) -> Vec<f32> {
    let all = Dtype::F32.values(&records.pixels);
    all.chunks(2 * e).flat_map(|r| r[..e].to_vec()).collect()
}

/// Per column, the figures of `rows` (E values each; `mask` 2E-wide rows when real): a
/// numeric column's mean and deviation in its units, a binary or categorical one's share
/// of each level.
fn column_figures(schema: &Schema, rows: &[f32], mask: Option<&[f32]>) -> Vec<Vec<f64>> {
    let e = schema.width();
    let n = rows.len() / e;
    let observed = |i: usize, at: usize| mask.is_none_or(|m| m[i * 2 * e + e + at] > 0.5);
    schema
        .blocks()
        .iter()
        .zip(&schema.columns)
        .map(|(&[_, at, _, w], col)| {
            let (at, w) = (at as usize, w as usize);
            let seen: Vec<usize> = (0..n).filter(|&i| observed(i, at)).collect();
            let count = seen.len().max(1) as f64;
            match &col.kind {
                Kind::Numeric { mean, std } => {
                    let x: Vec<f64> = seen
                        .iter()
                        .map(|&i| f64::from(rows[i * e + at]) * std + mean)
                        .collect();
                    let m = x.iter().sum::<f64>() / count;
                    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / count;
                    vec![m, var.sqrt()]
                }
                Kind::Binary { .. } => {
                    let on = seen.iter().filter(|&&i| rows[i * e + at] > 0.5).count() as f64;
                    vec![1.0 - on / count, on / count]
                }
                Kind::Categorical { .. } => (0..w)
                    .map(|k| {
                        seen.iter().filter(|&&i| rows[i * e + at + k] > 0.5).count() as f64 / count
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The comparison, as a line of text and JSON; records drawn as `sample` draws them
/// (`temperature` scales the cells' own noise).
pub fn run(
    gpu: &Gpu,
    (params, c): (&Params, &ModelConfig),
    (train, test): (&Images, &Images),
    (count, seed, temperature, prior): (usize, u64, f32, Prior<'_>),
) -> anyhow::Result<(String, serde_json::Value)> {
    let schema = c.table.as_ref().expect("a table model");
    if train.count.min(test.count) < MIN_RECORDS {
        anyhow::bail!(
            "quality compares at least {MIN_RECORDS} real training and test records (fewer say little), and has {} and {}",
            train.count,
            test.count
        );
    }
    let e = schema.width();
    // A conditional model is asked for classes in the training records' proportions.
    let asked: Option<Vec<u8>> = match (c.classes, &train.labels) {
        (Some(_), Some(l)) => Some((0..count).map(|i| l[i % l.len()]).collect()),
        (Some(_), None) => anyhow::bail!(
            "this model is conditional: quality needs the training records' labels (--label-column)"
        ),
        _ => None,
    };
    let outputs = generate_outputs(
        gpu,
        params,
        c,
        (count, seed, 1.0),
        (prior, asked.as_deref()),
    )?;
    let mut rng = crate::rng::Rng::new(seed);
    let synthetic: Vec<f32> = outputs
        .iter()
        .flat_map(|o| schema.draw_encoded(o, &mut rng, temperature))
        .collect();
    let real_all = Dtype::F32.values(&train.pixels);
    let real = values(train, e);
    let got = column_figures(schema, &synthetic, None);
    let want = column_figures(schema, &real, Some(&real_all));

    let mut line = format!(
        "{count} generated records against {} real training records\n{:<28} {:>12} {:>12}",
        train.count, "column", "real", "generated"
    );
    let mut columns = Vec::new();
    for ((col, w), g) in schema.columns.iter().zip(&want).zip(&got) {
        match &col.kind {
            Kind::Numeric { .. } => {
                line += &format!(
                    "\n{:<28} {:>12} {:>12}",
                    format!("{} mean", col.name),
                    format!("{:.4}", w[0]),
                    format!("{:.4}", g[0])
                );
                line += &format!(
                    "\n{:<28} {:>12} {:>12}",
                    format!("{} sd", col.name),
                    format!("{:.4}", w[1]),
                    format!("{:.4}", g[1])
                );
                columns.push(serde_json::json!({"column": col.name, "real": {"mean": w[0], "sd": w[1]}, "generated": {"mean": g[0], "sd": g[1]}}));
            }
            kind => {
                let levels = kind.levels();
                for (k, level) in levels.iter().enumerate() {
                    line += &format!(
                        "\n{:<28} {:>11.1}% {:>11.1}%",
                        format!("{} = {level}", col.name),
                        100.0 * w[k],
                        100.0 * g[k]
                    );
                }
                columns.push(serde_json::json!({"column": col.name, "levels": levels, "real": w, "generated": g}));
            }
        }
    }
    let mut json = serde_json::json!({"count": count, "columns": columns});
    match (&asked, &train.labels, &test.labels) {
        (Some(asked), Some(train_labels), Some(test_labels)) => {
            let classes = c.classes.expect("a conditional model");
            let test_x = values(test, e);
            let real_test = Features {
                x: &test_x,
                labels: test_labels,
                features: e,
            };
            let accuracy = |x: &[f32], labels: &[u8]| {
                let train = Features {
                    x,
                    labels,
                    features: e,
                };
                train_and_test(
                    gpu,
                    &train,
                    &real_test,
                    classes,
                    STEPS,
                    AdamConfig::default(),
                )
            };
            let on_synthetic = accuracy(&synthetic, asked)?;
            let on_real = accuracy(&real, train_labels)?;
            line += &format!(
                "\nlabel classifier (softmax regression) tested on {} real test records: trained on generated records {:.1}%, on real training records {:.1}%",
                test.count,
                100.0 * on_synthetic,
                100.0 * on_real
            );
            json["train_on_synthetic"] = on_synthetic.into();
            json["train_on_real"] = on_real.into();
        }
        _ => {
            line += "\n(train on synthetic, test on real needs a conditional model, whose records carry the class they were drawn for: train --conditional)";
        }
    }
    Ok((line, json))
}
