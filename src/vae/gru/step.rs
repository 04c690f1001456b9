//! A training or evaluation step of the sequence VAE over a batch of sequences: its graph
//! compiled once per batch size and width (`Program::sequence`), the loss between the two
//! passes, then clipping and Adam: one launch list, one submit per step, nothing read back.
//! The batch's token ids, targets and lengths are written into small buffers before each
//! step.
//!
//! The objective is MOSES's: the mean cross-entropy over the batch's target tokens plus beta
//! times the mean KL over its records. What is reported per record is in nats per sequence:
//! the summed cross-entropy of its tokens, its KL, and recon + beta KL.

use super::GruParams;
use crate::data::sequence::{Sequences, Vocab};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};
use crate::graph::{Graph, Mode, Program, Time};
use crate::ops::adam::{adam, AdamConfig, AdamDispatch};
use crate::ops::clip::{clip_grad_norm, ClipDispatch};
use crate::ops::gru::step_rows;
use crate::ops::loss::{kl_and_sums, KlBuffers, KlDispatch, LossSettings};
use crate::ops::sample::Noise;
use crate::ops::softmax::{softmax_xent, XentDispatch};

/// A label the cross-entropy ignores (padding).
const IGNORE: u32 = u32::MAX;

/// What a step does besides the forward pass and the loss.
#[derive(Clone, Copy, Debug)]
pub struct Training {
    pub adam: AdamConfig,
    /// Gradient-norm clipping (MOSES: 50).
    pub clip: f32,
}

/// A compiled step for batches of up to `records` sequences of `width` ids.
pub struct GruStep {
    pub records: usize,
    /// Rows per time step (records rounded up, see `ops::gru::step_rows`).
    pub rows: usize,
    pub width: usize,
    /// Per record: summed cross-entropy, KL, total [rows, 3] (row stride 4); running sums
    /// [recon, kl, total, records].
    pub per_sample: Matrix,
    pub accum: Matrix,
    /// mu | logvar [rows, 2Z] of the last batch, the sampled code and its noise [rows, Z].
    pub mulv: Matrix,
    pub z: Matrix,
    pub eps: Matrix,
    program: Program,
    /// The model's graph (its tensors name the program's matrices).
    graph: Graph,
    targets: Matrix,
    xent: XentDispatch,
    kl: KlDispatch,
    clip: Option<ClipDispatch>,
    pub adam: Option<AdamDispatch>,
    settings: LossSettings,
    seed: u64,
    stream: u32,
    /// Word dropout's probability (see `set_word_dropout`).
    word_dropout: f32,
}

impl GruStep {
    /// The step for batches of `records` sequences `width` ids wide; training with Adam and
    /// clipping when `training` is given, else evaluation. Noise from (seed, step, stream).
    pub fn new(
        gpu: &Gpu,
        p: &GruParams,
        records: usize,
        width: usize,
        training: Option<Training>,
        seed: u64,
        stream: u32,
    ) -> Result<GruStep, GpuError> {
        if width < 2 || records == 0 {
            return Err(GpuError::Shape(format!(
                "a step over {records} sequences of {width} ids"
            )));
        }
        let rows = step_rows(gpu, records);
        let steps = width - 1;
        let mode = match training {
            Some(_) => Mode::Train,
            None => Mode::Infer,
        };
        let program = Program::sequence(gpu, &p.params, (rows, [width, steps]), mode)?;
        let g = &p.params.graph;
        let (logits, mulv) = (program.value(g.logits), program.value(g.mulv));
        let targets = Matrix::zeros(gpu, 1, steps * rows, "targets")?;

        // The loss: per-token cross-entropy summed per record, then the KL.
        let token_loss = Matrix::zeros(gpu, 1, steps * rows, "token losses")?;
        let mut xent = softmax_xent(
            gpu,
            logits,
            &targets.buffer,
            program.grad(g.logits),
            &token_loss,
            steps * rows,
            1.0,
        )?;
        xent.per_record(gpu, steps)?;
        let per_record = Matrix {
            rows,
            cols: steps,
            ld: steps,
            ..token_loss
        };
        let per_sample = Matrix::zeros(gpu, rows, 3, "per-record losses")?;
        let accum = Matrix::zeros(gpu, 1, 4, "loss sums")?;
        let settings = LossSettings::default();
        let kl = kl_and_sums(
            gpu,
            &KlBuffers {
                mulv,
                dmulv: program.grad(g.mulv),
                per_sample: &per_sample,
                accum: &accum,
            },
            &per_record,
            &settings,
        )?;
        let (mut clip, mut adam_dispatch) = (None, None);
        if let Some(t) = training {
            let w = &p.params;
            clip = Some(clip_grad_norm(gpu, &w.grads, w.len, t.clip)?);
            adam_dispatch = Some(adam(gpu, [&w.values, &w.grads, &w.m, &w.v], w.len, t.adam)?);
        }
        Ok(GruStep {
            records,
            rows,
            width,
            per_sample,
            accum,
            mulv: mulv.clone(),
            z: program.value(g.z).clone(),
            eps: program.eps_of(g.z).clone(),
            targets,
            xent,
            kl,
            clip,
            adam: adam_dispatch,
            settings,
            seed,
            stream,
            word_dropout: 0.0,
            program,
            graph: g.clone(),
        })
    }

    /// Replaces each decoder input token after the first by a zero vector with probability
    /// `p` (Bowman et al. 2016's word dropout), drawn per step from the seed.
    pub fn set_word_dropout(&mut self, p: f32) {
        self.word_dropout = p;
    }

    /// Writes the batch `batch` (indices into `data`, at most `records`), its noise position
    /// `step` and the KL weight `beta`: returns the batch's target token count.
    pub fn set_batch(
        &mut self,
        gpu: &Gpu,
        vocab: &Vocab,
        data: &Sequences,
        batch: &[usize],
        step: u64,
        beta: f32,
    ) -> Result<usize, GpuError> {
        if batch.len() > self.records || data.width > self.width {
            return Err(GpuError::Shape(format!(
                "a batch of {} sequences of {} ids into a step for {} of {}",
                batch.len(),
                data.width,
                self.records,
                self.width
            )));
        }
        let (rows, w, steps) = (self.rows, self.width, self.width - 1);
        let pad = vocab.pad();
        let mut enc = vec![pad; w * rows];
        let mut dec = vec![pad; steps * rows];
        let mut tgt = vec![IGNORE; steps * rows];
        let mut enc_len = vec![0u32; rows];
        let mut dec_len = vec![0u32; rows];
        let mut tokens = 0;
        // A dropped word reads past the embedding table: a zero vector, no gradient.
        let dropped = vocab.len() as u32;
        let mut rng =
            crate::rng::Rng::new(self.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd20b);
        for (b, &i) in batch.iter().enumerate() {
            let seq = &data.ids[i * data.width..][..data.width];
            let len = data.lengths[i] as usize;
            for t in 0..len {
                enc[t * rows + b] = seq[t];
                if t + 1 < len {
                    let drop = t > 0
                        && self.word_dropout > 0.0
                        && rng.uniform(0.0, 1.0) < f64::from(self.word_dropout);
                    dec[t * rows + b] = if drop { dropped } else { seq[t] };
                    tgt[t * rows + b] = seq[t + 1];
                }
            }
            enc_len[b] = len as u32;
            dec_len[b] = len as u32 - 1;
            tokens += len - 1;
        }
        let g = &self.graph;
        let (enc_tokens, dec_tokens) = (
            self.program.value(g.x),
            self.program.value(g.tokens.expect("a sequence graph")),
        );
        for (m, v) in [
            (enc_tokens, &enc),
            (dec_tokens, &dec),
            (&self.targets, &tgt),
            (self.program.lengths(Time::Encoder), &enc_len),
            (self.program.lengths(Time::Decoder), &dec_len),
        ] {
            gpu.queue
                .write_buffer(&m.buffer, m.offset, bytemuck::cast_slice(v));
        }
        self.xent.set_scale(gpu, 1.0 / tokens.max(1) as f32);
        self.settings.valid = batch.len();
        self.settings.beta = beta;
        self.settings.grad_scale = 1.0 / batch.len().max(1) as f32;
        self.kl.update(gpu, &self.settings);
        let noise = Noise {
            seed: self.seed,
            step: step as u32,
            stream: self.stream,
        };
        self.program.set_noise(gpu, g, (noise, 0), 1.0);
        if let Some(adam) = &self.adam {
            adam.set_step(gpu, step + 1);
        }
        Ok(tokens)
    }

    /// Every launch of the step, in order.
    pub fn launches(&self) -> Vec<&Dispatch> {
        let mut out: Vec<&Dispatch> = self.program.forward.iter().collect();
        out.push(&self.xent.dispatch);
        out.extend(self.kl.launches());
        out.extend(&self.program.backward);
        if let Some(c) = &self.clip {
            out.extend(&c.launches);
        }
        if let Some(a) = &self.adam {
            out.push(&a.dispatch);
        }
        out
    }

    /// The gradient norm before clipping, as the last training step left it (reads back).
    pub fn grad_norm(&self, gpu: &Gpu) -> Result<Option<f32>, GpuError> {
        match &self.clip {
            Some(c) => Ok(Some(c.factor.read(gpu)?[1])),
            None => Ok(None),
        }
    }
}
