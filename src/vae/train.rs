//! The training loop: one submit per step, losses summed on the GPU and read back without
//! blocking at an epoch's first step, every `REPORT_EVERY` steps and at its end; evaluation
//! on the test split; a divergence guard; a checkpoint per epoch, published whole (see
//! `rundir`), keeping the best and the last.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

use super::checkpoint::{self, Pick, RunConfig};
use super::rundir::{self, RunDir};
use super::step::{Batches, StepProgram, StepSpec};
use super::{Losses, ModelConfig, Params, RunState, TrainConfig};
use crate::data::{Dtype, Images, TrainSet};
use crate::gpu::{Gpu, Matrix, PendingRead};
use crate::ops::gather::GpuImages;
use crate::ops::loss::{Likelihood, LossSettings};
use crate::rng::Rng;

/// A latent dimension is active when the variance of its mean over the data exceeds this
/// (Burda et al., 2016).
pub const ACTIVE_VARIANCE: f64 = 0.01;

/// Steps between the non-blocking loss reads that feed the progress bar and the divergence
/// guard.
const REPORT_EVERY: u64 = 50;

/// One epoch's figures, as appended to metrics.jsonl.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// Epochs completed, from 1.
    pub epoch: usize,
    /// Optimizer steps taken in the run so far.
    pub step: u64,
    /// The KL weight at the epoch's last step.
    pub beta: f32,
    /// Mean losses over the epoch's training steps (nats per image).
    pub train: Losses,
    /// Mean losses on the test split after the epoch.
    pub test: Losses,
    /// Training images per second over the epoch.
    pub samples_per_sec: f64,
    /// (step, training loss so far in the epoch), read every few dozen steps.
    #[serde(default)]
    pub step_losses: Vec<(u64, f64)>,
    /// KL of each latent dimension on the test split (nats per image): a dimension near 0
    /// carries no information (posterior collapse).
    #[serde(default)]
    pub kl_per_dim: Vec<f64>,
    /// Latent dimensions in use: the variance over test images of their mean above 0.01
    /// (Burda et al., 2016).
    #[serde(default)]
    pub active_units: Option<usize>,
}

/// Images on the GPU plus an index buffer over them, and their labels when known (a
/// conditional model's classes).
pub struct GpuSplit {
    pub images: GpuImages,
    pub indices: Matrix,
    pub count: usize,
    /// One u32 label per image.
    pub labels: Option<Matrix>,
}

impl GpuSplit {
    pub fn upload(gpu: &Gpu, images: &Images) -> anyhow::Result<GpuSplit> {
        GpuSplit::from_pixels(
            gpu,
            &images.pixels,
            images.dim(),
            images.dtype,
            images.labels.as_deref(),
        )
    }

    /// `pixels` (whole images of `d` values of `dtype`) and their `labels` on the GPU, in
    /// order.
    pub fn from_pixels(
        gpu: &Gpu,
        pixels: &[u8],
        d: usize,
        dtype: Dtype,
        labels: Option<&[u8]>,
    ) -> anyhow::Result<GpuSplit> {
        let count = pixels.len() / (d * dtype.size()).max(1);
        if count == 0 {
            bail!("the dataset has no images");
        }
        let order: Vec<u32> = (0..count as u32).collect();
        let labels = labels
            .map(|l| {
                let l: Vec<u32> = l.iter().map(|&c| u32::from(c)).collect();
                Matrix::from_slice(gpu, 1, count, bytemuck::cast_slice(&l), "labels")
            })
            .transpose()?;
        Ok(GpuSplit {
            images: GpuImages::upload(gpu, pixels, d, dtype)?,
            indices: Matrix::from_slice(gpu, 1, count, bytemuck::cast_slice(&order), "indices")?,
            count,
            labels,
        })
    }

    /// The step program's view of this split: its images through its index buffer.
    pub fn batches(&self) -> Batches<'_> {
        Batches {
            images: &self.images,
            indices: &self.indices.buffer,
            count: self.count,
            labels: self.labels.as_ref().map(|m| &m.buffer),
        }
    }

    pub fn set_order(&self, gpu: &Gpu, order: &[u32]) {
        gpu.queue
            .write_buffer(&self.indices.buffer, 0, bytemuck::cast_slice(order));
    }
}

/// The Bernoulli likelihood takes targets in [0, 1]: real-valued data outside that would
/// make its loss fall without bound. (Rows streamed from disk are not scanned.)
pub fn bernoulli_targets(images: &Images, split: &str) -> anyhow::Result<()> {
    if images.dtype == Dtype::U8 {
        return Ok(());
    }
    let values = images.to_f32();
    if let Some(i) = values.iter().position(|v| !(0.0..=1.0).contains(v)) {
        bail!(
            "row {} of the {split} split holds {}: the Bernoulli likelihood needs values in [0, 1]; use --likelihood gaussian for real-valued data",
            i / images.dim(),
            values[i]
        );
    }
    Ok(())
}

/// Most training data held on the GPU by default; more is streamed (see `Feed`).
pub const DEFAULT_GPU_DATA_BYTES: u64 = 2 << 30;

/// Gathered batches waiting for the GPU: enough to cover a slow read, few enough to keep
/// memory small.
const FEED_DEPTH: usize = 4;

/// A batch read by the streaming thread: its pixels and (for a labelled split) labels.
type Gathered = (Vec<u8>, Vec<u32>);

/// Where the training steps' batches come from.
enum Feed {
    /// The whole split on the GPU; each epoch's order is its index buffer.
    Resident(GpuSplit),
    /// One batch on the GPU, refilled before each step with the next batch that a
    /// background thread has gathered from memory or disk in the epoch's order. The copy
    /// is queued before the step's submit, so the step never waits on a read.
    Streamed {
        batch: GpuSplit,
        orders: std::sync::mpsc::Sender<Vec<u32>>,
        batches: std::sync::mpsc::Receiver<Result<Gathered, crate::data::DataError>>,
        spare: std::sync::mpsc::Sender<Vec<u8>>,
    },
}

impl Feed {
    /// Resident when the split fits in `budget` bytes and the adapter's buffers, else
    /// streamed by a thread of `scope`.
    fn new<'s>(
        gpu: &Gpu,
        set: &'s TrainSet<'_>,
        rows: usize,
        budget: u64,
        scope: &'s std::thread::Scope<'s, '_>,
    ) -> anyhow::Result<Feed> {
        if let (TrainSet::Memory(images), true) = (set, set.bytes() <= budget) {
            match GpuSplit::upload(gpu, images) {
                Err(e)
                    if matches!(
                        e.downcast_ref::<crate::gpu::GpuError>(),
                        Some(crate::gpu::GpuError::Limit(_))
                    ) =>
                {
                    log::info!("streaming the training images: {e}");
                }
                split => return Ok(Feed::Resident(split?)),
            }
        }
        let d = set.image_bytes();
        let labels = set.labels();
        let no_labels = vec![0u8; rows];
        let batch = GpuSplit::from_pixels(
            gpu,
            &vec![0u8; rows * d],
            set.dim(),
            set.dtype(),
            labels.map(|_| &no_labels[..]),
        )?;
        let (orders, order_rx) = std::sync::mpsc::channel::<Vec<u32>>();
        let (batch_tx, batches) = std::sync::mpsc::sync_channel(FEED_DEPTH);
        let (spare, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            for order in order_rx {
                for first in (0..order.len()).step_by(rows) {
                    let mut buf = spare_rx.try_recv().unwrap_or_else(|_| vec![0u8; rows * d]);
                    let classes = labels.map_or_else(Vec::new, |l| {
                        order[first..(first + rows).min(order.len())]
                            .iter()
                            .map(|&i| u32::from(l[i as usize]))
                            .collect()
                    });
                    let gathered = set.gather(&order, first, &mut buf).map(|()| (buf, classes));
                    let failed = gathered.is_err();
                    // A closed channel means training stopped.
                    if batch_tx.send(gathered).is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Feed::Streamed {
            batch,
            orders,
            batches,
            spare,
        })
    }

    /// The index buffer and image buffers the step program gathers from.
    fn batches(&self) -> Batches<'_> {
        match self {
            Feed::Resident(s) | Feed::Streamed { batch: s, .. } => s.batches(),
        }
    }

    fn start_epoch(&self, gpu: &Gpu, order: Vec<u32>) -> anyhow::Result<()> {
        match self {
            Feed::Resident(split) => split.set_order(gpu, &order),
            Feed::Streamed { orders, .. } => orders
                .send(order)
                .map_err(|_| anyhow::anyhow!("the batch reader stopped"))?,
        }
        Ok(())
    }

    /// Readies the batch starting at `offset` of the epoch's order; returns the offset the
    /// gather reads it from.
    fn next(&self, gpu: &Gpu, offset: usize) -> anyhow::Result<usize> {
        match self {
            Feed::Resident(_) => Ok(offset),
            Feed::Streamed {
                batch,
                batches,
                spare,
                ..
            } => {
                let (pixels, classes) = batches
                    .recv()
                    .map_err(|_| anyhow::anyhow!("the batch reader stopped"))??;
                batch.images.write(gpu, &pixels);
                if let Some(l) = &batch.labels {
                    gpu.queue
                        .write_buffer(&l.buffer, 0, bytemuck::cast_slice(&classes));
                }
                let _ = spare.send(pixels);
                Ok(0)
            }
        }
    }
}

fn settings(c: &ModelConfig, t: &TrainConfig, beta: f32, valid: usize) -> LossSettings {
    LossSettings {
        likelihood: c.likelihood,
        beta,
        grad_scale: 1.0,
        gauss_var: c.gauss_var,
        valid,
        free_bits: t.free_bits,
    }
}

/// Runs `program` over a whole split in order, returning the mean losses.
pub fn evaluate(
    gpu: &Gpu,
    program: &mut StepProgram,
    count: usize,
    settings: &LossSettings,
) -> anyhow::Result<Losses> {
    program.reset_sums(gpu);
    let rows = program.rows();
    // Every record draws as its place in the data, at one step: the figures do not
    // depend on the batch size.
    program.noise_by_record = true;
    for offset in (0..count).step_by(rows) {
        program.prepare(
            gpu,
            offset,
            0,
            &LossSettings {
                valid: count - offset,
                ..*settings
            },
        );
        program.submit(gpu, None)?;
    }
    Ok(Losses::from_sums(&program.accum.read(gpu)?))
}

/// Training stopped because `Run::stop` was raised (Ctrl-C in the CLI, which exits with
/// code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: {0}")]
pub struct Interrupted(pub String);

/// Training stopped because a loss blew up (see `Guard`); the CLI exits with code 3.
#[derive(Debug, thiserror::Error)]
#[error("training diverged: {0}")]
pub struct Diverged(pub String);

/// Stops a run whose loss has blown up. A loss has diverged when it is NaN/Inf, or when it
/// exceeds `best + (ratio - 1) * max(|best|, init - best)`: `best` is the lowest loss seen
/// so far (training and test losses each have their own), `init` the run's first training
/// loss. For positive losses that is `ratio` times the best or back above the start,
/// whichever is higher; the second term keeps it meaningful for losses near zero.
#[derive(Debug)]
pub struct Guard {
    /// 0 checks NaN/Inf only.
    pub ratio: f64,
    pub init: Option<f64>,
    best_train: Option<f64>,
    best_test: Option<f64>,
}

impl Guard {
    /// A guard that knows the run's history (when resuming).
    pub fn new(ratio: f64, init: Option<f64>, history: &[EpochMetrics]) -> Guard {
        let best = |f: fn(&EpochMetrics) -> f64| history.iter().map(f).reduce(f64::min);
        Guard {
            ratio,
            init,
            best_train: best(|m| m.train.total),
            best_test: best(|m| m.test.total),
        }
    }

    /// Records a loss; on divergence returns why (the bound it crossed, if finite).
    pub fn check(&mut self, test: bool, loss: f64) -> Result<(), String> {
        let which = if test { "test" } else { "training" };
        if !loss.is_finite() {
            return Err(format!("the {which} loss became NaN/Inf"));
        }
        let init = *self.init.get_or_insert(loss);
        let best = if test {
            &mut self.best_test
        } else {
            &mut self.best_train
        };
        if let (Some(b), true) = (*best, self.ratio > 0.0) {
            let bound = b + (self.ratio - 1.0) * b.abs().max(init - b);
            if loss > bound {
                return Err(format!(
                    "the {which} loss reached {loss:.5e} nats, over the bound {bound:.2} (best so far {b:.2}, --max-loss-ratio {})",
                    self.ratio
                ));
            }
        }
        *best = Some(best.map_or(loss, |b| b.min(loss)));
        Ok(())
    }
}

/// What the training loop reports as it goes; the caller decides what to show.
pub enum TrainEvent<'a> {
    /// An epoch begins (numbered from 1) over this many images.
    EpochStart {
        epoch: usize,
        epochs: usize,
        images: usize,
    },
    /// Images trained so far in the epoch, with the latest training loss when one was read
    /// (without blocking, every `REPORT_EVERY` steps).
    Progress { images: usize, loss: Option<f64> },
    /// An epoch has ended (and its checkpoint, if the run has a directory, is saved).
    EpochEnd(&'a EpochMetrics),
    /// The training step is compiled: its launches, and the bytes of its matrices.
    Compiled {
        launches: usize,
        workspace_bytes: u64,
    },
}

/// Everything a training run needs.
pub struct Run<'a> {
    pub gpu: &'a Gpu,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub params: Params,
    pub state: RunState,
    /// The run directory, locked; None trains in memory without checkpoints.
    pub dir: Option<&'a RunDir>,
    /// Epochs already recorded (see `resumed_history`); empty for a new run.
    pub history: Vec<EpochMetrics>,
    /// Stop after this many optimizer steps (benchmarks); None trains the full epochs.
    pub max_steps: Option<u64>,
    /// Most bytes of training images held on the GPU; a larger split is streamed a batch
    /// at a time (the same batches, so the same run).
    pub gpu_data_bytes: u64,
    pub observer: &'a mut dyn FnMut(TrainEvent<'_>),
    /// Raised to stop between two steps (the epoch under way is lost, its checkpoint
    /// never written); None runs to the end.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

/// Whether a benchmark over `images` at batch `rows` takes an untimed warm-up step first:
/// when there is more than one batch to time after it.
pub fn bench_warms_up(images: usize, rows: usize) -> bool {
    images > rows
}

/// Trains from `run.state` to `run.train.epochs`, publishing a checkpoint each epoch.
pub fn train(
    run: &mut Run<'_>,
    train_set: &TrainSet<'_>,
    test_images: &Images,
) -> anyhow::Result<Vec<EpochMetrics>> {
    std::thread::scope(|scope| train_with(scope, run, train_set, test_images))
}

fn train_with<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    run: &mut Run<'_>,
    train_set: &'s TrainSet<'_>,
    test_images: &Images,
) -> anyhow::Result<Vec<EpochMetrics>> {
    let gpu = run.gpu;
    let c = &run.model;
    let t = &run.train;
    let rows = t.batch_size;
    // A table's columns have their own likelihoods.
    if c.likelihood == Likelihood::Bernoulli && c.table.is_none() {
        if let TrainSet::Memory(images) = train_set {
            bernoulli_targets(images, "training")?;
        }
        bernoulli_targets(test_images, "test")?;
    }
    if run.state.step == 0 {
        super::vamp::init_pseudo_inputs(gpu, &run.params, train_set, t.seed)
            .context("starting the VampPrior's pseudo-inputs from training images")?;
        if t.output_bias_from_data {
            super::init::output_bias_from_data(gpu, &run.params, c, train_set)
                .context("starting the output bias at the data's mean")?;
        }
    }
    let feed = Feed::new(gpu, train_set, rows, run.gpu_data_bytes, scope)
        .context("uploading the training images")?;
    let test_split = GpuSplit::upload(gpu, test_images).context("uploading the test images")?;
    let program = |batches: &Batches<'_>, adam| {
        StepProgram::new(
            gpu,
            &run.params,
            c,
            batches,
            &StepSpec {
                rows,
                settings: settings(c, t, t.beta, rows),
                adam,
                seed: t.seed,
                corruption: t.corruption,
                samples: t.samples(),
            },
        )
    };
    let mut trainer = program(&feed.batches(), Some(t.adam))?;
    (run.observer)(TrainEvent::Compiled {
        launches: trainer.launches().len(),
        workspace_bytes: trainer.workspace_bytes(),
    });
    // A benchmark (max_steps) measures training speed alone: no pass over the test split.
    let bench = run.max_steps.is_some();
    let mut tester = if bench {
        None
    } else {
        Some(program(&test_split.batches(), None)?)
    };
    let mut guard = Guard::new(t.max_loss_ratio, run.state.init_loss, &run.history);
    let diverged = |why: String, epoch: usize, step: u64| {
        Diverged(format!(
            "{why} in epoch {} (step {step}); {}. Lower --lr, or raise --max-loss-ratio",
            epoch + 1,
            kept(run.dir)
        ))
    };
    let n = train_set.count();
    let mut new_metrics = Vec::new();
    while run.state.epoch < t.epochs {
        let epoch = run.state.epoch;
        // The shuffle depends only on (seed, epoch), so a resumed run sees the same order.
        let order = Rng::new(t.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .permutation(n);
        feed.start_epoch(gpu, order)?;
        trainer.reset_sums(gpu);
        (run.observer)(TrainEvent::EpochStart {
            epoch: epoch + 1,
            epochs: t.epochs,
            images: n,
        });
        let mut started = Instant::now();
        // The step a pending loss read was recorded at.
        let mut pending: Option<(PendingRead, u64)> = None;
        let mut done = 0u64;
        let mut loss = None;
        let mut beta = t.beta;
        let mut step_losses = Vec::new();
        for (i, offset) in (0..n).step_by(rows).enumerate() {
            if run.max_steps.is_some_and(|m| done >= m) {
                break;
            }
            if run
                .stop
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            {
                let resume = run
                    .dir
                    .filter(|d| !rundir::checkpoints(d.path()).is_empty())
                    .map_or(String::new(), |d| {
                        format!("; continue with --resume {}", d.path().display())
                    });
                return Err(Interrupted(format!(
                    "stopped in epoch {} (step {}); {}{resume}",
                    epoch + 1,
                    run.state.step,
                    kept(run.dir)
                ))
                .into());
            }
            beta = t.beta_at(epoch, offset as f64 / n as f64);
            trainer.set_lr(
                t.lr_schedule
                    .at(t.adam.lr, epoch, offset as f64 / n as f64, t.epochs),
            );
            let at = feed.next(gpu, offset)?;
            trainer.prepare(gpu, at, run.state.step, &settings(c, t, beta, n - offset));
            // The first read of a new run is the loss at the initial weights.
            let report =
                (i == 0 || (i as u64 + 1).is_multiple_of(REPORT_EVERY)) && pending.is_none();
            let mut read = None;
            trainer.submit(gpu, report.then_some(&mut read))?;
            run.state.step += 1;
            done += 1;
            // A benchmark times the steps after the first, which compiles the kernels (or
            // loads them from the driver's cache): steady speed, as PyTorch benchmarks
            // time the steps after a warm-up.
            if bench && i == 0 && bench_warms_up(n, rows) {
                gpu.wait()?;
                started = Instant::now();
                done = 0;
            }
            if let Some(r) = read {
                pending = Some((r, run.state.step));
            }
            if let Some((p, at)) = &pending {
                if let Some(bytes) = p.try_take(gpu)? {
                    let l = Losses::from_sums(bytemuck::cast_slice(&bytes));
                    step_losses.push((*at, l.total));
                    pending = None;
                    guard
                        .check(false, l.total)
                        .map_err(|why| diverged(why, epoch, run.state.step))?;
                    loss = Some(l.total);
                }
            }
            (run.observer)(TrainEvent::Progress {
                images: (offset + rows).min(n),
                loss: loss.take(),
            });
        }
        let train_loss = Losses::from_sums(&trainer.accum.read(gpu)?);
        let elapsed = started.elapsed().as_secs_f64();
        let samples_per_sec = (done as usize * rows).min(n) as f64 / elapsed;
        guard
            .check(false, train_loss.total)
            .map_err(|why| diverged(why, epoch, run.state.step))?;
        let (test_loss, kl_per_dim, active_units) = if let Some(tester) = tester.as_mut() {
            let test_settings = settings(c, t, beta, test_split.count);
            let test_loss = evaluate(gpu, tester, test_split.count, &test_settings)?;
            guard
                .check(true, test_loss.total)
                .map_err(|why| diverged(why, epoch, run.state.step))?;
            let (kl_per_dim, active_units) = posterior_use(gpu, &run.params, c, test_images)?;
            (test_loss, kl_per_dim, Some(active_units))
        } else {
            (Losses::default(), Vec::new(), None)
        };
        run.state.epoch += 1;
        run.state.init_loss = guard.init;
        let m = EpochMetrics {
            epoch: epoch + 1,
            step: run.state.step,
            beta,
            train: train_loss,
            test: test_loss,
            samples_per_sec,
            step_losses,
            kl_per_dim,
            active_units,
        };
        if let Some(active_units) = active_units.filter(|&a| a * 4 < c.latent) {
            // Free bits floor a closed-form KL per dimension, which a Monte-Carlo one lacks.
            let monte_carlo = c.vamp.is_some() || t.samples().k > 1 || c.stacked();
            let remedies = match monte_carlo {
                true => "--kl-warmup or --kl-cycles",
                false => "--kl-warmup, --kl-cycles or --free-bits",
            };
            let code = match !c.stacked() {
                true => "latent dimensions",
                false => "dimensions of the code (the top layer; `eval` counts every layer's)",
            };
            log::warn!(
                "epoch {}: only {active_units} of {} {code} are active (posterior collapse?); try {remedies}",
                epoch + 1,
                c.latent
            );
        }
        // A benchmark leaves the run as it was.
        if bench {
            (run.observer)(TrainEvent::EpochEnd(&m));
            new_metrics.push(m);
            break;
        }
        if let Some(dir) = run.dir {
            save_epoch(run, dir, &m)?;
        }
        run.history.push(m.clone());
        if let Some(dir) = run.dir {
            write_records(dir.path(), &run.history)?;
            // Pictures are for looking at (images only): failing to write them (a full disk)
            // does not stop the run, whose next checkpoint reports the problem if it persists.
            let pictures = match c.table {
                Some(_) => Ok(()),
                None => write_pictures(
                    gpu,
                    &run.params,
                    c,
                    (test_images, &run.train.class_names),
                    dir.path(),
                    epoch + 1,
                ),
            };
            if let Err(e) = pictures {
                log::warn!(
                    "epoch {}: samples.png / reconstructions.png not written: {e:#}",
                    epoch + 1
                );
            }
        }
        (run.observer)(TrainEvent::EpochEnd(&m));
        new_metrics.push(m);
    }
    Ok(new_metrics)
}

/// A grid of samples (seed 1) drawn from `prior`, said in the title to come from `from`:
/// 64, or 8 of each class of a conditional model, a named row per class (per-class
/// mixtures: of each class they hold one for).
pub fn save_samples(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    names: &[String],
    (prior, from): (super::decode::Prior, &str),
    path: &Path,
) -> anyhow::Result<()> {
    use crate::io::png::{save_grid, Labels};
    let (samples, labels) = match c.classes {
        Some(k) => {
            let drawn: Vec<u8> = match prior {
                super::decode::Prior::PerClass(gs) => (0..=u8::MAX)
                    .zip(gs)
                    .filter_map(|(l, g)| g.as_ref().map(|_| l))
                    .collect(),
                _ => (0..=u8::MAX).take(k).collect(),
            };
            let classes: Vec<u8> = drawn.iter().flat_map(|&l| [l; 8]).collect();
            let samples = super::decode::generate(
                gpu,
                params,
                c,
                (classes.len(), 1, 1.0),
                (prior, Some(&classes)),
            )?;
            let labels = Labels {
                title: format!("8 samples of each class from {from} (seed 1)"),
                rows: drawn
                    .iter()
                    .map(|&l| crate::data::class_name(names, l))
                    .collect(),
                cols: Vec::new(),
            };
            (samples, labels)
        }
        None => (
            super::decode::generate(gpu, params, c, (64, 1, 1.0), (prior, None))?,
            Labels::title(format!("64 samples from {from} (seed 1)")),
        ),
    };
    let cells: Vec<Vec<u8>> = samples.iter().map(|v| super::decode::to_u8(v)).collect();
    save_grid(path, &cells, (c.height, c.width, c.channels), 8, &labels)
}

/// Rewrites samples.png (64 images from the model's prior, seed 1; a conditional model's: 8 of
/// each class, a named row each), a VampPrior's pseudo-inputs.png and reconstructions.png
/// (the first 8 test images over their reconstructions) in `dir`, so each epoch's progress
/// can be seen.
pub fn write_pictures(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    (test, names): (&Images, &[String]),
    dir: &Path,
    epoch: usize,
) -> anyhow::Result<()> {
    use crate::io::png::{save_grid, Labels};
    let shape = (c.height, c.width, c.channels);
    let to_u8 = |rows: Vec<Vec<f32>>| {
        rows.iter()
            .map(|v| super::decode::to_u8(v))
            .collect::<Vec<_>>()
    };
    // A VampPrior model draws from the prior it learned.
    let vamp = super::vamp::mixture(gpu, params)?;
    let (prior, which) = match &vamp {
        Some(g) => (super::decode::Prior::Mixture(g), "the learned VampPrior"),
        None if c.stacked() => (
            super::decode::Prior::Standard,
            "the prior (the layers below drawn top-down)",
        ),
        None => (super::decode::Prior::Standard, "the prior"),
    };
    save_samples(
        gpu,
        params,
        c,
        names,
        (prior, &format!("{which} after epoch {epoch}")),
        &dir.join("samples.png"),
    )?;
    if let Some(cells) = super::vamp::pseudo_images(gpu, params, c.table.is_some())? {
        let k = params.graph.pseudo.map_or(0, |p| p.count);
        let which = match k > cells.len() {
            true => format!("The first {} of the {k}", cells.len()),
            false => format!("The {k}"),
        };
        let labels = Labels {
            title: format!(
                "{which} learned pseudo-inputs after epoch {epoch}: the prior is the encoder's posteriors at them"
            ),
            rows: Vec::new(),
            cols: Vec::new(),
        };
        save_grid(&dir.join("pseudo-inputs.png"), &cells, shape, 8, &labels)?;
    }
    let shown = test.take(8);
    let codes = super::codec::encode(gpu, params, c, &shown, 1.0)?.codes;
    let mut cells: Vec<Vec<u8>> = (0..shown.count)
        .map(|i| shown.image_u8(i).into_owned())
        .collect();
    cells.extend(to_u8(super::codec::decode(
        gpu,
        params,
        c,
        &codes.mu,
        super::codec::own_classes(c, &shown),
    )?));
    let labels = Labels {
        title: format!("Test images over their reconstructions after epoch {epoch}"),
        rows: vec!["test images".into(), "reconstructions".into()],
        cols: Vec::new(),
    };
    save_grid(
        &dir.join("reconstructions.png"),
        &cells,
        shape,
        shown.count,
        &labels,
    )
}

/// Test images the posterior diagnostics of each epoch look at.
const DIAGNOSTIC_IMAGES: usize = 1000;

/// The KL of each latent dimension and the number of active units over (up to
/// `DIAGNOSTIC_IMAGES`) test images.
fn posterior_use(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    test: &Images,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let codes = super::codec::encode(gpu, params, c, &test.take(DIAGNOSTIC_IMAGES), 1.0)?.codes;
    Ok((codes.kl_per_dim(), codes.active_units(ACTIVE_VARIANCE)))
}

/// What a stopped run leaves: its last checkpoint, if any.
fn kept(dir: Option<&RunDir>) -> String {
    let Some(dir) = dir else {
        return "the run keeps no checkpoints".into();
    };
    match rundir::checkpoints(dir.path()).last() {
        Some((_, last)) => format!("the last checkpoint {} is intact", last.display()),
        None => "no checkpoint was written".into(),
    }
}

/// Publishes the epoch's checkpoint, then prunes all but it and the best.
fn save_epoch(run: &Run<'_>, dir: &RunDir, m: &EpochMetrics) -> anyhow::Result<()> {
    let config = RunConfig {
        model: run.model.clone(),
        train: Some(run.train.clone()),
        state: run.state,
        metrics: Some(m.clone()),
    };
    dir.publish(run.state.epoch, |tmp| {
        checkpoint::write(run.gpu, tmp, &run.params, &config)
    })
    .map_err(|e| match e.downcast::<Diverged>() {
        Ok(d) => Diverged(format!("{} in epoch {}; {}", d.0, m.epoch, kept(Some(dir)))).into(),
        // Described after the failure: a rename may have gone through before a sync failed.
        Err(e) => e.context(format!(
            "saving epoch {} failed ({})",
            m.epoch,
            kept(Some(dir))
        )),
    })?;
    keep_best_and_last(dir)
}

/// Rewrites metrics.jsonl and loss.png from the recorded epochs (after each checkpoint, so
/// they never name an epoch no checkpoint holds).
pub fn write_records(dir: &Path, history: &[EpochMetrics]) -> anyhow::Result<()> {
    let mut jsonl = String::new();
    for m in history {
        jsonl += &serde_json::to_string(m)?;
        jsonl.push('\n');
    }
    let path = dir.join("metrics.jsonl");
    crate::io::write_atomic(&path, jsonl.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    // The chart is for looking at: as with samples.png, failing to draw it (a full disk)
    // does not stop the run.
    let chart = dir.join("loss.png");
    if let Err(e) = crate::io::chart::save_loss_chart(&chart, &chart_points(history)) {
        log::warn!("{} not written: {e:#}", chart.display());
    }
    Ok(())
}

/// The epochs recorded for a run resumed from `checkpoint`: metrics.jsonl up to its epoch,
/// plus its own figures when a kill came between publishing it and rewriting metrics.jsonl.
pub fn resumed_history(dir: &Path, checkpoint: &RunConfig) -> Vec<EpochMetrics> {
    let mut history: Vec<EpochMetrics> = crate::io::read_input_text(&dir.join("metrics.jsonl"))
        .map(|s| {
            s.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default();
    history.retain(|m: &EpochMetrics| m.epoch <= checkpoint.state.epoch);
    if let Some(m) = &checkpoint.metrics {
        if !history.iter().any(|h| h.epoch == m.epoch) {
            history.push(m.clone());
        }
    }
    history
}

/// Prunes every checkpoint of the run but its best and its last.
pub fn keep_best_and_last(dir: &RunDir) -> anyhow::Result<()> {
    let last = checkpoint::resolve(dir.path(), Pick::Last)?;
    let best = checkpoint::resolve(dir.path(), Pick::Best)?;
    dir.prune(&[&last, &best])
}

/// The record as the loss chart draws it.
pub fn chart_points(history: &[EpochMetrics]) -> Vec<crate::io::chart::EpochLosses> {
    let parts = |l: &Losses| [l.total, l.recon, l.kl];
    history
        .iter()
        .map(|m| crate::io::chart::EpochLosses {
            epoch: m.epoch,
            train: parts(&m.train),
            test: parts(&m.test),
            steps: m.step_losses.clone(),
        })
        .collect()
}
