//! Training the sequence VAE: epochs of shuffled batches, one submit per step, the losses
//! read back once per epoch, the test split evaluated after each, a checkpoint published per
//! epoch (model.safetensors under MOSES's names, optimizer.safetensors, sequence.json), the
//! best (lowest test -ELBO) and the last kept.

use std::path::Path;

use anyhow::{bail, Context};

use super::step::{GruStep, Training};
use super::{GruParams, GruSpec};
use crate::data::sequence::{SequenceData, Sequences, Tokens, Vocab};
use crate::gpu::Gpu;
use crate::io::safetensors;
use crate::ops::adam::AdamConfig;
use crate::rng::Rng;
use crate::vae::checkpoint::{
    self, load_moments, moments_bytes, MODEL_FILE, MOMENTS, OPTIMIZER_FILE,
};
use crate::vae::rundir::RunDir;
use crate::vae::step::{STREAM_EVAL, STREAM_TRAIN};
use crate::vae::train::Interrupted;

/// The file that marks a checkpoint as a sequence model's, and holds its run.
pub const SEQUENCE_FILE: &str = "sequence.json";
/// Metadata key of the model's spec and vocabulary in model.safetensors.
pub const SEQUENCE_META: &str = "vae-gpu.sequence";

/// How a sequence model trains.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeqTrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    /// The KL weight reached after the warm-up.
    pub beta: f32,
    /// Epochs over which the KL weight ramps linearly from 0 (MOSES: all of them).
    pub kl_warmup: usize,
    /// Probability that a decoder input token (after the first) is replaced by a zero
    /// vector (Bowman et al. 2016's word dropout).
    pub word_dropout: f32,
    /// Gradient-norm clipping.
    pub clip: f32,
    pub seed: u64,
}

impl SeqTrainConfig {
    /// MOSES's settings: 512 per batch, Adam 3e-4, KL weight 0 to 0.05 over the run, clip 50.
    pub fn moses(epochs: usize) -> SeqTrainConfig {
        SeqTrainConfig {
            epochs,
            batch_size: 512,
            lr: 3e-4,
            beta: 0.05,
            kl_warmup: epochs,
            word_dropout: 0.0,
            clip: 50.0,
            seed: 1,
        }
    }

    /// The KL weight during epoch `epoch` (0-based): MOSES's linear ramp from 0.
    pub fn beta_at(&self, epoch: usize) -> f32 {
        match self.kl_warmup {
            0 => self.beta,
            w => self.beta * (epoch.min(w) as f32 / w as f32),
        }
    }
}

/// One epoch's figures, nats per sequence.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeqEpoch {
    pub epoch: usize,
    pub beta: f32,
    pub train_recon: f64,
    pub train_kl: f64,
    pub test_recon: f64,
    pub test_kl: f64,
    pub seconds: f64,
}

impl SeqEpoch {
    /// The test split's negative ELBO (recon + KL), nats per sequence.
    pub fn test_nelbo(&self) -> f64 {
        self.test_recon + self.test_kl
    }
}

/// A sequence model's run: what it is, how it trains and where it stands.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SequenceRun {
    pub spec: GruSpec,
    pub vocab: Vocab,
    /// The most tokens a sequence may have (and a generated one gets).
    pub max_length: usize,
    pub train: SeqTrainConfig,
    /// The data and how it was read, for the record.
    pub data: String,
    pub column: Option<String>,
    pub test_fraction: f64,
    /// Epochs done and optimizer steps taken.
    pub epoch: usize,
    pub step: u64,
    pub history: Vec<SeqEpoch>,
}

/// Adam's moments in the graph's order are saved under these names. Runs saved before the
/// model was a graph hold them in the launch list's order under `checkpoint::MOMENTS` (see
/// `GruParams::launch_list_offsets`); a vae-gpu of that time refuses these names rather
/// than read them in its order.
pub const GRAPH_MOMENTS: [&str; 2] = ["graph.exp_avg", "graph.exp_avg_sq"];

impl SequenceRun {
    /// How the run reads its data (`strict`: a sequence over the limit is an error).
    pub fn options(&self, strict: bool) -> crate::data::sequence::SequenceOptions {
        crate::data::sequence::SequenceOptions {
            column: self.column.clone(),
            tokens: self.vocab.kind,
            max_length: self.max_length,
            strict,
            test_fraction: self.test_fraction,
        }
    }
}

/// What training reports as it goes.
pub enum SeqEvent<'a> {
    /// Steps done of the epoch's total.
    Step(usize, usize),
    Epoch(&'a SeqEpoch),
}

/// The mean (recon, kl) per sequence of `data` under the model (one posterior sample each,
/// from the evaluation stream).
pub fn evaluate(
    gpu: &Gpu,
    params: &GruParams,
    vocab: &Vocab,
    data: &Sequences,
    batch: usize,
    seed: u64,
) -> anyhow::Result<(f64, f64)> {
    let records = batch.min(data.count).max(1);
    let mut step = GruStep::new(gpu, params, records, data.width, None, seed, STREAM_EVAL)?;
    gpu.queue.write_buffer(&step.accum.buffer, 0, &[0u8; 16]);
    let rows: Vec<usize> = (0..data.count).collect();
    for (i, chunk) in rows.chunks(records).enumerate() {
        step.set_batch(gpu, vocab, data, chunk, i as u64, 1.0)?;
        gpu.run(&step.launches())?;
    }
    let sums = step.accum.read(gpu)?;
    let n = f64::from(sums[3]).max(1.0);
    Ok((f64::from(sums[0]) / n, f64::from(sums[1]) / n))
}

/// Trains `params` from `run.epoch` to `run.train.epochs` on `data`, publishing a checkpoint
/// into `dir` after every epoch; `stop`, once raised, ends training between two steps
/// (`Interrupted`; the epoch under way is lost, the last checkpoint is whole).
pub fn train(
    gpu: &Gpu,
    params: &GruParams,
    run: &mut SequenceRun,
    data: &SequenceData,
    dir: &RunDir,
    mut events: impl FnMut(SeqEvent),
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let t = run.train.clone();
    let mut step = training_step(gpu, params, &t, &data.train)?;
    let records = step.records;
    let n = data.train.count;
    let steps = n.div_ceil(records);
    for epoch in run.epoch..t.epochs {
        let start = std::time::Instant::now();
        let beta = t.beta_at(epoch);
        let order =
            Rng::new(t.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).permutation(n);
        gpu.queue.write_buffer(&step.accum.buffer, 0, &[0u8; 16]);
        for (i, chunk) in order.chunks(records).enumerate() {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Interrupted(format!(
                    "stopped in epoch {} (step {}); {}",
                    epoch + 1,
                    run.step,
                    match run.epoch {
                        0 => "no checkpoint was written".to_string(),
                        e => format!(
                            "checkpoint-{e:04} is kept; continue with --resume {}",
                            dir.path().display()
                        ),
                    }
                ))
                .into());
            }
            let batch: Vec<usize> = chunk.iter().map(|&r| r as usize).collect();
            step.set_batch(gpu, &run.vocab, &data.train, &batch, run.step, beta)?;
            gpu.run(&step.launches())?;
            run.step += 1;
            events(SeqEvent::Step(i + 1, steps));
        }
        let sums = step.accum.read(gpu)?;
        let count = f64::from(sums[3]).max(1.0);
        let (train_recon, train_kl) = (f64::from(sums[0]) / count, f64::from(sums[1]) / count);
        if !(train_recon.is_finite() && train_kl.is_finite()) {
            bail!(
                "the training loss became NaN/Inf in epoch {}; the last checkpoint is kept",
                epoch + 1
            );
        }
        let (test_recon, test_kl) = evaluate(gpu, params, &run.vocab, &data.test, records, t.seed)?;
        let record = SeqEpoch {
            epoch: epoch + 1,
            beta,
            train_recon,
            train_kl,
            test_recon,
            test_kl,
            seconds: start.elapsed().as_secs_f64(),
        };
        run.epoch = epoch + 1;
        run.history.push(record);
        let last = dir.publish(run.epoch, |d| write_checkpoint(gpu, d, params, run))?;
        // The best (lowest test -ELBO) and the last checkpoint are kept.
        let best = run
            .history
            .iter()
            .min_by(|a, b| a.test_nelbo().total_cmp(&b.test_nelbo()))
            .map(|e| {
                dir.path()
                    .join(crate::vae::rundir::checkpoint_name(e.epoch))
            });
        let keep: Vec<&Path> = [Some(last.as_path()), best.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        dir.prune(&keep)?;
        events(SeqEvent::Epoch(&record));
    }
    Ok(())
}

/// The training step of a run with settings `t` over batches of `train`.
pub fn training_step(
    gpu: &Gpu,
    params: &GruParams,
    t: &SeqTrainConfig,
    train: &Sequences,
) -> anyhow::Result<GruStep> {
    let training = Training {
        adam: AdamConfig {
            lr: t.lr,
            ..AdamConfig::default()
        },
        clip: t.clip,
    };
    let records = t.batch_size.min(train.count);
    let mut step = GruStep::new(
        gpu,
        params,
        records,
        train.width,
        Some(training),
        t.seed,
        STREAM_TRAIN,
    )?;
    step.set_word_dropout(t.word_dropout);
    Ok(step)
}

/// Writes a checkpoint of the model and its run into `dir`.
pub fn write_checkpoint(
    gpu: &Gpu,
    dir: &Path,
    params: &GruParams,
    run: &SequenceRun,
) -> anyhow::Result<()> {
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        crate::io::write_synced(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    let model = checkpoint::tensors(gpu, &params.params)?;
    if let Some(t) = model.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
        bail!("tensor {} became NaN/Inf; it was not saved", t.name);
    }
    let meta = serde_json::to_string(&(&run.spec, &run.vocab, run.max_length))?;
    file(
        MODEL_FILE,
        &safetensors::to_bytes(&model, &[(SEQUENCE_META, meta)]),
    )?;
    file(
        OPTIMIZER_FILE,
        &moments_bytes(
            gpu,
            [&params.params.m, &params.params.v],
            params.params.len,
            GRAPH_MOMENTS,
        )?,
    )?;
    file(SEQUENCE_FILE, &serde_json::to_vec_pretty(run)?)
}

/// Whether `dir` is a sequence model's checkpoint.
pub fn is_sequence_checkpoint(dir: &Path) -> bool {
    dir.join(SEQUENCE_FILE).is_file()
}

/// A sequence checkpoint's run and model (with its Adam moments when `optimizer`).
pub fn load_checkpoint(
    gpu: &Gpu,
    dir: &Path,
    optimizer: bool,
) -> anyhow::Result<(SequenceRun, GruParams)> {
    let path = dir.join(SEQUENCE_FILE);
    let text =
        crate::io::read_input_text(&path).with_context(|| format!("reading {}", path.display()))?;
    let run: SequenceRun = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a sequence run ({e})", path.display()))?;
    run.spec
        .check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if run.vocab.len() != run.spec.vocab
        || run.vocab.kind == Tokens::Chars
            && run.vocab.tokens.iter().any(|t| t.chars().count() != 1)
    {
        bail!(
            "{}: its vocabulary does not match its model",
            path.display()
        );
    }
    let params = GruParams::new(gpu, run.spec, run.train.seed)?;
    let model = dir.join(MODEL_FILE);
    let tensors = safetensors::load(&model)?;
    checkpoint::set_tensors(gpu, &params.params, tensors, &model)?;
    if optimizer {
        let file = dir.join(OPTIMIZER_FILE);
        let earlier = safetensors::load(&file)?.contains_key(MOMENTS[0]);
        let names = if earlier { MOMENTS } else { GRAPH_MOMENTS };
        let moments = [&params.params.m, &params.params.v];
        load_moments(gpu, &file, moments, params.params.len, names)?;
        if earlier {
            params.moments_from_launch_list(gpu)?;
        }
    }
    Ok((run, params))
}
