//! A training or evaluation step of the sequence VAE over a batch of sequences, compiled
//! once per batch size and width into one launch list (one submit per step, nothing read
//! back). The batch's token ids, targets and lengths are written into small buffers before
//! each step.
//!
//! The objective is MOSES's: the mean cross-entropy over the batch's target tokens plus beta
//! times the mean KL over its records. What is reported per record is in nats per sequence:
//! the summed cross-entropy of its tokens, its KL, and recon + beta KL.

use super::{
    decoder, GruLayerSlots, GruParams, EMBED, ENCODER, FC_B, FC_W, HEADS_B, HEADS_W, LAT_B, LAT_W,
};
use crate::data::sequence::{Sequences, Vocab};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};
use crate::ops::adam::{adam, AdamConfig, AdamDispatch};
use crate::ops::clip::{clip_grad_norm, ClipDispatch};
use crate::ops::elementwise::bias_grad;
use crate::ops::gemm::{gemm, gemm_backward, GemmSpec};
use crate::ops::gru::{gru_backward, gru_forward, projections, step_rows, GruGrads, GruLayer};
use crate::ops::loss::{kl_and_sums, KlBuffers, KlDispatch, LossSettings};
use crate::ops::sample::{sample_backward, sample_forward, set_noise, Noise};
use crate::ops::sequence::{embed, embed_grad, repeat, repeat_grad};
use crate::ops::softmax::{softmax_xent, XentDispatch};
use crate::ops::tensor;
use crate::ops::GradEpilogue;

/// A label the cross-entropy ignores (padding).
const IGNORE: u32 = u32::MAX;

/// What a step does besides the forward pass and the loss.
#[derive(Clone, Copy, Debug)]
pub struct Training {
    pub adam: AdamConfig,
    /// Gradient-norm clipping (MOSES: 50).
    pub clip: f32,
}

/// One GRU layer's matrices.
struct Layer {
    slots: GruLayerSlots,
    x: Matrix,
    gi: Vec<Matrix>,
    gh: Vec<Matrix>,
    states: Matrix,
    lengths: Matrix,
    steps: usize,
}

impl Layer {
    fn new(
        gpu: &Gpu,
        slots: GruLayerSlots,
        x: Matrix,
        hidden: usize,
        rows: usize,
        lengths: &Matrix,
    ) -> Result<Layer, GpuError> {
        let steps = x.rows / rows;
        Ok(Layer {
            slots,
            gi: projections(gpu, steps, rows, hidden, "gru gi")?,
            gh: projections(gpu, steps, rows, hidden, "gru gh")?,
            states: Matrix::zeros(gpu, (steps + 1) * rows, hidden, "gru states")?,
            lengths: lengths.clone(),
            x,
            steps,
        })
    }

    fn gru<'a>(&'a self, p: &'a Weights) -> GruLayer<'a> {
        GruLayer {
            steps: self.steps,
            batch: self.states.rows / (self.steps + 1),
            x: &self.x,
            w_ih: &p.0[self.slots.w_ih],
            w_hh: &p.0[self.slots.w_hh],
            b_ih: &p.0[self.slots.b_ih],
            b_hh: &p.0[self.slots.b_hh],
            gi: &self.gi,
            gh: &self.gh,
            states: &self.states,
            lengths: &self.lengths.buffer,
        }
    }

    /// Its outputs h_1 .. h_T.
    fn outputs(&self) -> Result<Matrix, GpuError> {
        let rows = self.states.rows / (self.steps + 1);
        self.states.rows_view(rows, self.steps * rows)
    }
}

/// Every slot of a buffer as a matrix.
struct Weights(Vec<Matrix>);

impl Weights {
    fn of(p: &GruParams, buffer: &wgpu::Buffer) -> Weights {
        Weights((0..p.slots.len()).map(|i| p.view(buffer, i)).collect())
    }
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
    enc_tokens: Matrix,
    dec_tokens: Matrix,
    targets: Matrix,
    enc_lengths: Matrix,
    dec_lengths: Matrix,
    forward: Vec<Dispatch>,
    sample: usize,
    xent: XentDispatch,
    kl: KlDispatch,
    backward: Vec<Dispatch>,
    clip: Option<ClipDispatch>,
    pub adam: Option<AdamDispatch>,
    settings: LossSettings,
    seed: u64,
    stream: u32,
    /// Word dropout's probability (see `set_word_dropout`).
    word_dropout: f32,
}

/// A u32 buffer of `n` values, zeroed.
fn ids(gpu: &Gpu, n: usize, label: &str) -> Result<Matrix, GpuError> {
    Matrix::zeros(gpu, 1, n.max(1), label)
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
        let s = p.spec;
        if width < 2 || records == 0 {
            return Err(GpuError::Shape(format!(
                "a step over {records} sequences of {width} ids"
            )));
        }
        let rows = step_rows(gpu, records);
        let steps = width - 1;
        let (values, grads) = (Weights::of(p, &p.values), Weights::of(p, &p.grads));
        let enc_tokens = ids(gpu, width * rows, "encoder tokens")?;
        let dec_tokens = ids(gpu, steps * rows, "decoder tokens")?;
        let targets = ids(gpu, steps * rows, "targets")?;
        let enc_lengths = ids(gpu, rows, "encoder lengths")?;
        let dec_lengths = ids(gpu, rows, "decoder lengths")?;
        let z_cols = s.latent;

        // Encoder: embeddings, the GRU, mu | logvar from its last state, z.
        let x_enc = Matrix::zeros(gpu, width * rows, s.embed, "encoder inputs")?;
        let enc = Layer::new(gpu, ENCODER, x_enc, s.enc_hidden, rows, &enc_lengths)?;
        let last = enc.states.rows_view(width * rows, rows)?;
        let mulv = Matrix::zeros(gpu, rows, 2 * z_cols, "mu|logvar")?;
        let z = Matrix::zeros(gpu, rows, z_cols, "z")?;
        let eps = Matrix::zeros(gpu, rows, z_cols, "eps")?;
        let trans_b = GemmSpec {
            trans_b: true,
            ..GemmSpec::default()
        };
        let mut forward = vec![embed(
            gpu,
            &enc_tokens.buffer,
            0,
            &values.0[EMBED],
            &enc.x,
            0,
        )?];
        forward.extend(gru_forward(gpu, &enc.gru(&values))?);
        forward.push(gemm(
            gpu,
            &last,
            &values.0[HEADS_W],
            &mulv,
            Some(&values.0[HEADS_B]),
            trans_b,
        )?);
        let sample = forward.len();
        forward.push(sample_forward(gpu, &mulv, &z, &eps, Noise::default(), 1.0)?);

        // Decoder: [embedding ; z] per step, every layer starting from decoder_lat(z).
        let x_dec = Matrix::zeros(gpu, steps * rows, s.dec_input(), "decoder inputs")?;
        forward.push(embed(
            gpu,
            &dec_tokens.buffer,
            0,
            &values.0[EMBED],
            &x_dec,
            0,
        )?);
        forward.push(repeat(gpu, &z, &x_dec, s.embed)?);
        let mut layers: Vec<Layer> = Vec::new();
        for l in 0..s.dec_layers {
            let x = match layers.last() {
                Some(below) => below.outputs()?,
                None => x_dec.clone(),
            };
            let layer = Layer::new(gpu, decoder(l), x, s.dec_hidden, rows, &dec_lengths)?;
            let h0 = layer.states.rows_view(0, rows)?;
            forward.push(gemm(
                gpu,
                &z,
                &values.0[LAT_W],
                &h0,
                Some(&values.0[LAT_B]),
                trans_b,
            )?);
            forward.extend(gru_forward(gpu, &layer.gru(&values))?);
            layers.push(layer);
        }
        let top = layers
            .last()
            .expect("at least one decoder layer")
            .outputs()?;
        let logits = Matrix::zeros(gpu, steps * rows, s.vocab, "logits")?;
        forward.push(gemm(
            gpu,
            &top,
            &values.0[FC_W],
            &logits,
            Some(&values.0[FC_B]),
            trans_b,
        )?);

        // The loss: per-token cross-entropy summed per record, then the KL.
        let dlogits = Matrix::zeros(gpu, steps * rows, s.vocab, "d logits")?;
        let token_loss = Matrix::zeros(gpu, 1, steps * rows, "token losses")?;
        let mut xent = softmax_xent(
            gpu,
            &logits,
            &targets.buffer,
            &dlogits,
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
        let dmulv = Matrix::zeros(gpu, rows, 2 * z_cols, "d mu|logvar")?;
        let per_sample = Matrix::zeros(gpu, rows, 3, "per-record losses")?;
        let accum = Matrix::zeros(gpu, 1, 4, "loss sums")?;
        let settings = LossSettings::default();
        let kl = kl_and_sums(
            gpu,
            &KlBuffers {
                mulv: &mulv,
                dmulv: &dmulv,
                per_sample: &per_sample,
                accum: &accum,
            },
            &per_record,
            &settings,
        )?;

        let mut backward = Vec::new();
        let (mut clip, mut adam_dispatch) = (None, None);
        if let Some(t) = training {
            let dy = Matrix::zeros(gpu, steps * rows, s.dec_hidden, "d decoder outputs")?;
            backward.extend(gemm_backward(
                gpu,
                &top,
                &values.0[FC_W],
                &dlogits,
                Some(&dy),
                Some(&grads.0[FC_W]),
                trans_b,
                GradEpilogue::default(),
            )?);
            backward.extend(bias_grad(gpu, &dlogits, &grads.0[FC_B])?);
            let dgi = projections(gpu, steps, rows, s.dec_hidden, "d gi")?;
            let dgh = projections(gpu, steps, rows, s.dec_hidden, "d gh")?;
            let dx_dec = Matrix::zeros(gpu, steps * rows, s.dec_input(), "d decoder inputs")?;
            let carries: Vec<Matrix> = (0..s.dec_layers)
                .map(|_| Matrix::zeros(gpu, rows, s.dec_hidden, "d h0"))
                .collect::<Result<_, _>>()?;
            for (l, layer) in layers.iter().enumerate().rev() {
                let sl = layer.slots;
                // A layer's input gradient overwrites its output gradient after the last
                // read of it: the one buffer serves every layer.
                let dx = if l > 0 { &dy } else { &dx_dec };
                backward.extend(gru_backward(
                    gpu,
                    &layer.gru(&values),
                    &GruGrads {
                        dy: Some(&dy),
                        carry: &carries[l],
                        final_grad: false,
                        dgi: &dgi,
                        dgh: &dgh,
                        dx: Some((dx, GradEpilogue::default())),
                        dw_ih: &grads.0[sl.w_ih],
                        dw_hh: &grads.0[sl.w_hh],
                        db_ih: &grads.0[sl.b_ih],
                        db_hh: &grads.0[sl.b_hh],
                    },
                )?);
            }
            // Every layer's h0 is decoder_lat(z): their gradients add up.
            let accumulate = GradEpilogue {
                accumulate: true,
                act: None,
            };
            for c in &carries[1..] {
                backward.push(tensor::grad(gpu, c, &carries[0], None, accumulate)?);
            }
            let dz = Matrix::zeros(gpu, rows, z_cols, "d z")?;
            backward.extend(gemm_backward(
                gpu,
                &z,
                &values.0[LAT_W],
                &carries[0],
                Some(&dz),
                Some(&grads.0[LAT_W]),
                trans_b,
                GradEpilogue::default(),
            )?);
            backward.extend(bias_grad(gpu, &carries[0], &grads.0[LAT_B])?);
            backward.extend(repeat_grad(gpu, &dx_dec, s.embed, &dz, true)?);
            backward.extend(embed_grad(
                gpu,
                &dec_tokens.buffer,
                &dx_dec,
                0,
                &grads.0[EMBED],
                false,
            )?);
            // The KL launch wrote dmulv; the sampling path adds to it.
            backward.push(sample_backward(gpu, &mulv, &dz, &eps, &dmulv)?);
            let dlast = Matrix::zeros(gpu, rows, s.enc_hidden, "d last state")?;
            backward.extend(gemm_backward(
                gpu,
                &last,
                &values.0[HEADS_W],
                &dmulv,
                Some(&dlast),
                Some(&grads.0[HEADS_W]),
                trans_b,
                GradEpilogue::default(),
            )?);
            backward.extend(bias_grad(gpu, &dmulv, &grads.0[HEADS_B])?);
            let dgi_e = projections(gpu, width, rows, s.enc_hidden, "d gi encoder")?;
            let dgh_e = projections(gpu, width, rows, s.enc_hidden, "d gh encoder")?;
            let dx_enc = Matrix::zeros(gpu, width * rows, s.embed, "d encoder inputs")?;
            let sl = ENCODER;
            backward.extend(gru_backward(
                gpu,
                &enc.gru(&values),
                &GruGrads {
                    dy: None,
                    carry: &dlast,
                    final_grad: true,
                    dgi: &dgi_e,
                    dgh: &dgh_e,
                    dx: Some((&dx_enc, GradEpilogue::default())),
                    dw_ih: &grads.0[sl.w_ih],
                    dw_hh: &grads.0[sl.w_hh],
                    db_ih: &grads.0[sl.b_ih],
                    db_hh: &grads.0[sl.b_hh],
                },
            )?);
            backward.extend(embed_grad(
                gpu,
                &enc_tokens.buffer,
                &dx_enc,
                0,
                &grads.0[EMBED],
                true,
            )?);
            clip = Some(clip_grad_norm(gpu, &p.grads, p.len, t.clip)?);
            adam_dispatch = Some(adam(gpu, [&p.values, &p.grads, &p.m, &p.v], p.len, t.adam)?);
        }
        Ok(GruStep {
            records,
            rows,
            width,
            per_sample,
            accum,
            mulv,
            eps,
            enc_tokens,
            dec_tokens,
            targets,
            enc_lengths,
            dec_lengths,
            z,
            forward,
            sample,
            xent,
            kl,
            backward,
            clip,
            adam: adam_dispatch,
            settings,
            seed,
            stream,
            word_dropout: 0.0,
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
        for (m, v) in [
            (&self.enc_tokens, &enc),
            (&self.dec_tokens, &dec),
            (&self.targets, &tgt),
            (&self.enc_lengths, &enc_len),
            (&self.dec_lengths, &dec_len),
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
        set_noise(
            gpu,
            &self.forward[self.sample],
            self.mulv.ld,
            &self.z,
            noise,
            1.0,
        );
        if let Some(adam) = &self.adam {
            adam.set_step(gpu, step + 1);
        }
        Ok(tokens)
    }

    /// Every launch of the step, in order.
    pub fn launches(&self) -> Vec<&Dispatch> {
        let mut out: Vec<&Dispatch> = self.forward.iter().collect();
        out.push(&self.xent.dispatch);
        out.extend(self.kl.launches());
        out.extend(&self.backward);
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
