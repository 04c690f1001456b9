//! The training loop: one submit per step, losses summed on the GPU and read back without
//! blocking every `REPORT_EVERY` steps and at epoch end, evaluation on the test split, an
//! atomic checkpoint per epoch.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

use super::checkpoint::{self, RunConfig};
use super::model::{Batches, StepProgram, StepSpec};
use super::{Losses, ModelConfig, Params, RunState, TrainConfig};
use crate::data::Images;
use crate::gpu::{Gpu, Matrix, PendingRead};
use crate::ops::gather::GpuImages;
use crate::ops::loss::LossSettings;
use crate::rng::Rng;

/// Steps between the non-blocking loss reads that feed the progress bar and NaN checks.
const REPORT_EVERY: u64 = 50;

/// One epoch's figures, as appended to metrics.jsonl.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub beta: f32,
    pub train: Losses,
    pub test: Losses,
    pub samples_per_sec: f64,
}

/// Images on the GPU plus an index buffer over them.
pub struct GpuSplit {
    pub images: GpuImages,
    pub indices: Matrix,
    pub count: usize,
}

impl GpuSplit {
    pub fn upload(gpu: &Gpu, images: &Images) -> anyhow::Result<GpuSplit> {
        if images.count == 0 {
            bail!("the dataset has no images");
        }
        let order: Vec<u32> = (0..images.count as u32).collect();
        Ok(GpuSplit {
            images: GpuImages::upload(gpu, &images.pixels, images.dim())?,
            indices: Matrix::from_slice(
                gpu,
                1,
                images.count,
                bytemuck::cast_slice(&order),
                "indices",
            )?,
            count: images.count,
        })
    }

    pub fn set_order(&self, gpu: &Gpu, order: &[u32]) {
        gpu.queue
            .write_buffer(&self.indices.buffer, 0, bytemuck::cast_slice(order));
    }
}

fn settings(c: &ModelConfig, beta: f32, valid: usize) -> LossSettings {
    LossSettings {
        likelihood: c.likelihood,
        beta,
        grad_scale: 1.0,
        gauss_var: c.gauss_var,
        valid,
    }
}

/// Runs `program` over a whole split in order, returning the mean losses. `step_of(i)`
/// gives the noise position of batch i.
pub fn evaluate(
    gpu: &Gpu,
    program: &mut StepProgram,
    count: usize,
    beta: f32,
    c: &ModelConfig,
    step_of: impl Fn(u64) -> u64,
) -> anyhow::Result<Losses> {
    program.reset_sums(gpu);
    let rows = program.ws.rows;
    for (i, offset) in (0..count).step_by(rows).enumerate() {
        program.prepare(
            gpu,
            offset,
            step_of(i as u64),
            &settings(c, beta, count - offset),
        );
        program.submit(gpu, None)?;
    }
    Ok(Losses::from_sums(&program.ws.accum.read(gpu)?))
}

/// Everything a training run needs.
pub struct Run<'a> {
    pub gpu: &'a Gpu,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub params: Params,
    pub state: RunState,
    pub dir: &'a Path,
    /// Stop after this many optimizer steps (benchmarks); None trains the full epochs.
    pub max_steps: Option<u64>,
    pub progress: bool,
}

/// Trains from `run.state` to `run.train.epochs`, checkpointing each epoch.
pub fn train(
    mut run: Run<'_>,
    train_images: &Images,
    test_images: &Images,
) -> anyhow::Result<Vec<EpochMetrics>> {
    let gpu = run.gpu;
    let c = &run.model;
    let t = &run.train;
    let train_split =
        GpuSplit::upload(gpu, train_images).context("uploading the training images")?;
    let test_split = GpuSplit::upload(gpu, test_images).context("uploading the test images")?;
    let rows = t.batch_size;
    let mut trainer = StepProgram::new(
        gpu,
        &run.params,
        c,
        &Batches {
            images: &train_split.images,
            indices: &train_split.indices.buffer,
            count: train_split.count,
        },
        &StepSpec {
            rows,
            settings: settings(c, t.beta, rows),
            adam: Some(t.adam),
            seed: t.seed,
            corruption: t.corruption,
        },
    )?;
    let mut tester = StepProgram::new(
        gpu,
        &run.params,
        c,
        &Batches {
            images: &test_split.images,
            indices: &test_split.indices.buffer,
            count: test_split.count,
        },
        &StepSpec {
            rows,
            settings: settings(c, t.beta, rows),
            adam: None,
            seed: t.seed,
            corruption: t.corruption,
        },
    )?;
    let metrics_path = run.dir.join("metrics.jsonl");
    let mut history = read_history(&metrics_path);
    history.retain(|m| m.epoch <= run.state.epoch);
    let n = train_split.count;
    let mut new_metrics = Vec::new();
    while run.state.epoch < t.epochs {
        let epoch = run.state.epoch;
        let beta = t.beta_at(epoch);
        // The shuffle depends only on (seed, epoch), so a resumed run sees the same order.
        let order = Rng::new(t.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .permutation(n);
        train_split.set_order(gpu, &order);
        trainer.reset_sums(gpu);
        let bar = progress_bar(run.progress, n as u64, epoch + 1, t.epochs);
        let started = Instant::now();
        let mut pending: Option<PendingRead> = None;
        let mut done = 0u64;
        for (i, offset) in (0..n).step_by(rows).enumerate() {
            if run.max_steps.is_some_and(|m| done >= m) {
                break;
            }
            trainer.prepare(gpu, offset, run.state.step, &settings(c, beta, n - offset));
            let report = (i as u64 + 1).is_multiple_of(REPORT_EVERY) && pending.is_none();
            trainer.submit(gpu, report.then_some(&mut pending))?;
            run.state.step += 1;
            done += 1;
            if let Some(p) = &pending {
                if let Some(bytes) = p.try_take(gpu)? {
                    pending = None;
                    let l = Losses::from_sums(bytemuck::cast_slice(&bytes));
                    if !l.is_finite() {
                        bail!("training diverged: loss became NaN/Inf in epoch {} before step {} (the last checkpoint in {} is intact)", epoch + 1, run.state.step, run.dir.display());
                    }
                    bar.set_message(format!("loss {:.2}", l.total));
                }
            }
            bar.inc(rows.min(n - offset) as u64);
        }
        let train_loss = Losses::from_sums(&trainer.ws.accum.read(gpu)?);
        let elapsed = started.elapsed().as_secs_f64();
        let samples_per_sec = (done as usize * rows).min(n) as f64 / elapsed;
        bar.finish_and_clear();
        if !train_loss.is_finite() {
            bail!("training diverged: loss became NaN/Inf in epoch {} (steps up to {}); the last checkpoint in {} is intact", epoch + 1, run.state.step, run.dir.display());
        }
        let test_loss = evaluate(gpu, &mut tester, test_split.count, beta, c, |i| i)?;
        run.state.epoch += 1;
        let m = EpochMetrics {
            epoch: epoch + 1,
            step: run.state.step,
            beta,
            train: train_loss,
            test: test_loss,
            samples_per_sec,
        };
        println!(
            "epoch {:>3}/{}  train {:.2} (recon {:.2} + KL {:.2})  test {:.2} (recon {:.2} + KL {:.2})  {:.0} samples/s",
            m.epoch, t.epochs, m.train.total, m.train.recon, m.train.kl, m.test.total, m.test.recon, m.test.kl, samples_per_sec
        );
        append_metrics(&metrics_path, &m)?;
        history.push(m.clone());
        new_metrics.push(m);
        checkpoint::save(
            gpu,
            run.dir,
            &run.params,
            &RunConfig {
                model: c.clone(),
                train: Some(t.clone()),
                state: run.state,
            },
        )?;
        if run.max_steps.is_some() {
            break;
        }
    }
    let train_curve: Vec<f64> = history.iter().map(|m| m.train.total).collect();
    let test_curve: Vec<f64> = history.iter().map(|m| m.test.total).collect();
    crate::io::png::save_curves(&run.dir.join("loss.png"), &[&train_curve, &test_curve])?;
    Ok(new_metrics)
}

/// A bar over the epoch's images, so its rate reads in samples/s.
fn progress_bar(show: bool, images: u64, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(images);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "epoch {epoch}/{epochs} {{bar:30}} {{human_pos}}/{{human_len}} images, {{per_sec}}, eta {{eta}} {{msg}}"
        ))
            .expect("valid template"),
    );
    bar
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(m)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Metrics already recorded in a run directory (for the loss curve of a resumed run).
pub fn read_history(path: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}
