//! `vae-gpu impute` with a model of table records: fills every missing cell of a CSV by
//! encode -> decode (a numeric cell takes the decoder's mean, a binary or categorical one
//! the likeliest level), keeping the known cells. One round by default: the encoder sees
//! the mask; further rounds re-encode the filled records as known, as for images. `--holdout F` first hides
//! that fraction of the known cells and measures the filling on them: RMSE of numeric cells
//! (in the columns' standard deviations) and accuracy of the others, next to filling with
//! the training mean and the most common level.

use std::path::Path;

use anyhow::Context;

use super::impute::ImputeArgs;
use super::DataArgs;
use crate::data::table::{self, Schema};
use crate::data::{Dtype, Images};
use crate::gpu::Gpu;
use crate::rng::Rng;
use crate::vae::codec::{decode_outputs, encode, own_classes};
use crate::vae::{ModelConfig, Params};

/// A cell: (record, column of the schema).
type Cell = (usize, usize);

pub fn run(
    gpu: &Gpu,
    a: &ImputeArgs,
    input: &DataArgs,
    dir: &Path,
    c: &ModelConfig,
    params: &Params,
) -> anyhow::Result<()> {
    let schema = c.table.as_ref().context("not a table model")?;
    let path = input
        .data
        .clone()
        .context("--data FILE.csv: the records whose missing cells to fill")?;
    let out = super::output_path(a.out.as_deref(), || dir.join("imputed.csv"))?;
    let cells = table::read_cells(&path)?;
    // Filling needs no labels: rows without one are filled too.
    let unlabelled = Schema {
        label: None,
        ..schema.clone()
    };
    let records = table::encode(&path, &cells, &unlabelled)?;
    let (n, e) = (records.count, schema.width());
    let blocks = schema.blocks();
    let truth = records.to_f32();
    let mut current = truth.clone();
    let seen = |v: &[f32], (r, ci): Cell| v[r * 2 * e + e + blocks[ci][1] as usize] == 1.0;
    let all: Vec<Cell> = (0..n)
        .flat_map(|r| (0..blocks.len()).map(move |ci| (r, ci)))
        .collect();
    // Cells are hidden in the test records only (the split of --test-fraction, as in
    // training): the model never saw them.
    let (_, test) = crate::data::npy::split_rows(n, input.test_fraction.unwrap_or(0.1));
    let mut rng = Rng::new(a.seed);
    let hidden: Vec<Cell> = match a.holdout {
        Some(f) => all
            .iter()
            .copied()
            .filter(|&(r, ci)| test.binary_search(&r).is_ok() && seen(&truth, (r, ci)))
            .filter(|_| rng.uniform(0.0, 1.0) < f)
            .collect(),
        None => Vec::new(),
    };
    for &cell in &hidden {
        set_block(&mut current, e, &blocks, cell, None, 0.0);
    }
    let missing: Vec<Cell> = all
        .iter()
        .copied()
        .filter(|&cell| !seen(&current, cell))
        .collect();
    let baseline = fill_baseline(schema, &current, e, &missing);
    let iters = a.iters.unwrap_or(1);
    for round in 0..iters {
        let input = Images {
            pixels: Dtype::F32.bytes(&current),
            ..records.clone()
        };
        let mu = encode(gpu, params, c, &input, 1.0)?.codes.mu;
        let expected: Vec<Vec<f32>> = decode_outputs(gpu, params, c, &mu, own_classes(c, &input))?
            .iter()
            .map(|o| schema.expected(o))
            .collect();
        // Filled cells count as known from the second round on, as filled pixels do.
        for &(r, ci) in &missing {
            let [_, at, _, w] = blocks[ci];
            let block = &expected[r][at as usize..(at + w) as usize];
            set_block(
                &mut current,
                e,
                &blocks,
                (r, ci),
                Some(block),
                f32::from(round == 0),
            );
        }
    }
    // Hidden cells were known: the output keeps them as they were.
    let filled: Vec<Cell> = missing
        .iter()
        .copied()
        .filter(|c| !hidden.contains(c))
        .collect();
    write_filled(&out, &cells, schema, &current, e, &filled)?;
    let what = format!(
        "{} missing cells of {n} records filled after {} rounds -> {}",
        missing.len() - hidden.len(),
        iters,
        out.display()
    );
    if hidden.is_empty() {
        super::report(
            &what,
            serde_json::json!({"records": n, "filled": missing.len(), "iters": iters, "out": out}),
        );
        return Ok(());
    }
    let (rmse, acc) = measure(schema, &truth, &current, e, &hidden);
    let (rmse0, acc0) = measure(schema, &truth, &baseline, e, &hidden);
    let mut found = Vec::new();
    if let (Some(v), Some(v0)) = (rmse, rmse0) {
        found.push(format!(
            "numeric RMSE {v:.4} sd vs {v0:.4} sd by mean filling"
        ));
    }
    if let (Some(v), Some(v0)) = (acc, acc0) {
        found.push(format!("accuracy {v:.4} vs {v0:.4} by most-common filling"));
    }
    super::report(
        &format!(
            "{what}; on {} known cells hidden in the {} test records: {}",
            hidden.len(),
            test.len(),
            found.join(", ")
        ),
        serde_json::json!({
            "records": n,
            "filled": missing.len(),
            "hidden": hidden.len(),
            "iters": iters,
            "rmse_sd": rmse,
            "rmse_sd_mean_fill": rmse0,
            "accuracy": acc,
            "accuracy_mode_fill": acc0,
            "out": out,
        }),
    );
    Ok(())
}

/// Sets cell's values (zeros when None) and its mask in the records `v` ([values | mask]).
fn set_block(
    v: &mut [f32],
    e: usize,
    blocks: &[[u32; 4]],
    (r, ci): Cell,
    values: Option<&[f32]>,
    mask: f32,
) {
    let [_, at, _, w] = blocks[ci];
    let (at, w) = (at as usize, w as usize);
    let row = &mut v[r * 2 * e..(r + 1) * 2 * e];
    match values {
        Some(b) => row[at..at + w].copy_from_slice(b),
        None => row[at..at + w].fill(0.0),
    }
    row[e + at..e + at + w].fill(mask);
}

/// The records with each missing cell filled the simple way: a numeric column's training
/// mean (0 once standardized), another column's most common known level.
fn fill_baseline(schema: &Schema, v: &[f32], e: usize, missing: &[Cell]) -> Vec<f32> {
    let blocks = schema.blocks();
    let n = v.len() / (2 * e);
    let common: Vec<Vec<f32>> = blocks
        .iter()
        .map(|&[kind, at, _, w]| {
            let (at, w) = (at as usize, w as usize);
            let mut counts = vec![0usize; w.max(2)];
            for r in (0..n).filter(|r| v[r * 2 * e + e + at] == 1.0) {
                let block = &v[r * 2 * e + at..r * 2 * e + at + w];
                let level = match kind {
                    table::BINARY => usize::from(block[0] >= 0.5),
                    _ => (0..w)
                        .max_by(|&a, &b| block[a].total_cmp(&block[b]))
                        .unwrap_or(0),
                };
                counts[level] += 1;
            }
            let top = (0..counts.len()).max_by_key(|&k| counts[k]).unwrap_or(0);
            match kind {
                table::NUMERIC => vec![0.0],
                table::BINARY => vec![top as f32],
                _ => (0..w).map(|k| f32::from(k == top)).collect(),
            }
        })
        .collect();
    let mut out = v.to_vec();
    for &(r, ci) in missing {
        set_block(&mut out, e, &blocks, (r, ci), Some(&common[ci]), 1.0);
    }
    out
}

/// (RMSE of numeric cells in standard deviations, accuracy of the others) of `filled`
/// against `truth` on `cells`; None where there are no such cells.
fn measure(
    schema: &Schema,
    truth: &[f32],
    filled: &[f32],
    e: usize,
    cells: &[Cell],
) -> (Option<f64>, Option<f64>) {
    let blocks = schema.blocks();
    let (mut se, mut numeric, mut right, mut other) = (0.0, 0usize, 0usize, 0usize);
    for &(r, ci) in cells {
        let [kind, at, _, w] = blocks[ci];
        let span = r * 2 * e + at as usize..r * 2 * e + (at + w) as usize;
        if kind == table::NUMERIC {
            se += f64::from(filled[span.start] - truth[span.start]).powi(2);
            numeric += 1;
        } else {
            other += 1;
            right += usize::from(
                schema.cell(ci, &filled[span.clone()]) == schema.cell(ci, &truth[span]),
            );
        }
    }
    (
        (numeric > 0).then(|| (se / numeric as f64).sqrt()),
        (other > 0).then(|| right as f64 / other as f64),
    )
}

/// The CSV with every missing cell filled from `v`, written whole (atomically).
fn write_filled(
    out: &Path,
    cells: &table::Cells,
    schema: &Schema,
    v: &[f32],
    e: usize,
    missing: &[Cell],
) -> anyhow::Result<()> {
    let blocks = schema.blocks();
    let column: Vec<usize> = schema
        .columns
        .iter()
        .map(|c| {
            cells
                .header
                .iter()
                .position(|h| h == &c.name)
                .expect("encoded by name")
        })
        .collect();
    let mut rows = cells.rows.clone();
    for &(r, ci) in missing {
        let [_, at, _, w] = blocks[ci];
        let block = &v[r * 2 * e + at as usize..r * 2 * e + (at + w) as usize];
        rows[r][column[ci]] = schema.cell(ci, block);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&cells.header)?;
    for row in &rows {
        w.write_record(row)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::io::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))
}
