//! A step over a batch: the gather (and corruption) of the batch, the compiled model graph
//! (forward, and for training its backward), the fused loss between them, and Adam; built
//! once per batch size and recorded into one command buffer per step.

use crate::gpu::{Dispatch, Gpu, GpuError, Matrix, PendingRead};
use crate::graph::{Mode, Params, Program};
use crate::ops::adam::{adam, AdamConfig, AdamDispatch};
use crate::ops::gather::{gather, one_hot, GatherDispatch, GpuImages};
use crate::ops::iwae::{iwae_weights, IwaeWeights};
use crate::ops::level::{level, LevelBuffers, LevelDispatch};
use crate::ops::loss::{loss, table_loss, LossBuffers, LossDispatch, LossSettings, TableBlocks};
use crate::ops::sample::{corrupt, set_corruption_noise, Corruption, Noise};
use crate::ops::sequence::{repeat_records, sum_records};
use crate::ops::vamp::{vamp, VampBuffers, VampDispatch};
use crate::ops::GradEpilogue;

use super::config::ModelConfig;

/// RNG streams, so training, evaluation and generation never share noise.
pub const STREAM_TRAIN: u32 = 0;
pub const STREAM_EVAL: u32 = 1;
pub const STREAM_PRIOR: u32 = 2;
pub const STREAM_CORRUPT: u32 = 3;
/// Dynamic binarization's draws: training's, and evaluation's one draw per image (+ 1).
pub const STREAM_BINARIZE: u32 = 4;

/// Where a step's batches come from: `count` image indices into `images`.
pub struct Batches<'a> {
    pub images: &'a GpuImages,
    pub indices: &'a wgpu::Buffer,
    pub count: usize,
    /// The images' u32 labels, which a conditional model reads.
    pub labels: Option<&'a wgpu::Buffer>,
}

/// What a step program computes.
#[derive(Clone, Copy, Debug)]
pub struct StepSpec {
    pub rows: usize,
    pub settings: LossSettings,
    /// Some: a training step with Adam; None: evaluation (no backward).
    pub adam: Option<AdamConfig>,
    pub seed: u64,
    /// Corrupt the encoder's input (denoising); the loss still targets the clean batch.
    pub corruption: Option<Corruption>,
    /// Posterior samples per record (each record takes that many rows) and how they are
    /// weighed.
    pub samples: Samples,
}

impl StepSpec {
    /// An evaluation step over `rows` records of the model `c`: no training, one posterior
    /// sample, no corruption, seed 0, the KL weighted by `beta`.
    pub fn evaluation(c: &ModelConfig, rows: usize, beta: f32) -> StepSpec {
        StepSpec {
            rows,
            settings: LossSettings {
                likelihood: c.likelihood,
                beta,
                grad_scale: 1.0,
                gauss_var: c.gauss_var,
                valid: rows,
                free_bits: 0.0,
            },
            adam: None,
            seed: 0,
            corruption: None,
            samples: Samples::ONE,
        }
    }
}

/// Posterior samples per record: above 1, the step's objective is the importance-weighted
/// bound over them (Burda et al. 2016), or with `average` their mean ELBO (the paper's
/// "VAE, k samples").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Samples {
    pub k: usize,
    pub average: bool,
    /// The doubly reparameterized gradient for the encoder (Tucker et al. 2019; with the
    /// importance weights and one stochastic layer).
    pub dreg: bool,
}

impl Samples {
    /// One sample: the ELBO.
    pub const ONE: Samples = Samples {
        k: 1,
        average: false,
        dreg: false,
    };

    /// K importance-weighted samples.
    pub fn importance(k: usize) -> Samples {
        Samples {
            k,
            average: false,
            dreg: false,
        }
    }
}

/// The class of row `row` when `classes` (not empty) holds fewer than one per row: the
/// last repeats, so one class decodes every row.
pub fn class_of(classes: &[u8], row: usize) -> u8 {
    classes[row.min(classes.len() - 1)]
}

/// One step over a batch gathered from the GPU dataset: forward, loss, and when training,
/// backward and Adam.
pub struct StepProgram {
    /// The compiled model graph.
    pub program: Program,
    /// The batch (also the reconstruction target) and a conditional model's classes.
    batch: Gathered,
    /// Whether the gather draws a binary batch (dynamic binarization).
    binarize: bool,
    /// The loss per sample [rows, 3] (reconstruction, KL, total) and the running sums
    /// [recon, kl, total, count].
    pub per_sample: Matrix,
    pub accum: Matrix,
    corrupt: Option<(Dispatch, Corruption)>,
    pub loss: LossDispatch,
    /// A VampPrior model's encoder over its pseudo-inputs.
    vamp: Option<VampStep>,
    /// The Monte-Carlo KL (a VampPrior's, or N(0, I)'s under the importance-weighted
    /// objective), which replaces the loss's closed form.
    mc_kl: Option<VampDispatch>,
    /// The stochastic layers below the code: each one's KL against its prior.
    levels: Vec<LevelDispatch>,
    /// The importance-weighted objective over `samples` rows per record.
    importance: Option<IwaeWeights>,
    /// A training step over several samples per record: the encoder, run once per record.
    shared: Option<SharedEncoder>,
    samples: usize,
    pub adam: Option<AdamDispatch>,
    graph: crate::graph::Graph,
    seed: u64,
    stream: u32,
    /// Scale of the posterior noise: 1 samples z, 0 decodes the mean.
    pub temperature: f32,
    /// Each record draws its posterior noise as its place in the data (the batch's offset
    /// plus its row), not as its row in the batch: an evaluation's figures do not depend
    /// on the batch size (see `train::evaluate`).
    pub noise_by_record: bool,
}

impl StepProgram {
    pub fn new(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        data: &Batches<'_>,
        spec: &StepSpec,
    ) -> Result<StepProgram, GpuError> {
        Self::build(gpu, params, c, data, spec, false)
    }

    /// An evaluation step that starts from the lowest stochastic layer's mu | logvar,
    /// which the caller writes into `posterior()` (e.g. one image's, repeated over its
    /// importance samples), instead of running the encoder below it on the batch; the
    /// batch is still gathered as the reconstruction's target.
    pub fn from_posterior(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        data: &Batches<'_>,
        spec: &StepSpec,
    ) -> Result<StepProgram, GpuError> {
        if spec.adam.is_some() {
            return Err(GpuError::Config(
                "a step from given posteriors evaluates; it does not train".into(),
            ));
        }
        Self::build(gpu, params, c, data, spec, true)
    }

    fn build(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        data: &Batches<'_>,
        spec: &StepSpec,
        posterior_given: bool,
    ) -> Result<StepProgram, GpuError> {
        let samples = spec.samples.k.max(1);
        let rows = spec.rows * samples;
        let stream = if spec.adam.is_some() {
            STREAM_TRAIN
        } else {
            STREAM_EVAL
        };
        // The batch itself is the first matrix that outgrows a binding as it grows.
        let limit = gpu.binding_limit();
        let bytes = (rows * crate::gpu::round_up4(c.input_dim()) * 4) as u64;
        if bytes > limit {
            let batch = match samples {
                1 => format!("a batch of {rows}"),
                k => format!("a batch of {} records x {k} samples", spec.rows),
            };
            return Err(GpuError::Limit(format!(
                "{batch} takes {} MiB, over the {} MiB the adapter binds at once; use --batch-size {} or smaller",
                bytes >> 20,
                limit >> 20,
                (spec.rows as u64 * limit / bytes).max(1)
            )));
        }
        let batch = Gathered::new(gpu, &params.graph, data, (spec.rows, samples))?;
        let x = &batch.x;
        // A record's samples share its encoder pass (its lowest mu | logvar repeated over
        // them); a corrupted input differs per row, so denoising keeps one pass per row.
        let shared = samples > 1 && spec.adam.is_some() && spec.corruption.is_none();
        let corrupt = match spec.corruption {
            Some(kind) => {
                let noisy = Matrix::zeros(gpu, x.rows, x.cols, "corrupted x")?;
                let d = corrupt(
                    gpu,
                    x,
                    &noisy,
                    Noise {
                        seed: spec.seed,
                        step: 0,
                        stream: STREAM_CORRUPT,
                    },
                    kind,
                )?;
                Some((d, kind, noisy))
            }
            None => None,
        };
        let mode = match (spec.adam, posterior_given || shared) {
            (Some(_), false) => Mode::Train,
            (Some(_), true) => Mode::PosteriorTrain,
            (None, false) => Mode::Infer,
            (None, true) => Mode::Posterior,
        };
        let encoder_input = corrupt.as_ref().map_or(x, |(_, _, noisy)| noisy);
        let low = params.graph.posterior();
        let posterior = (posterior_given || shared)
            .then(|| Matrix::zeros(gpu, rows, params.graph.shapes[low].c, "given posterior"))
            .transpose()?;
        let mut inputs = vec![(params.graph.x, encoder_input)];
        inputs.extend(posterior.as_ref().map(|m| (low, m)));
        inputs.extend(batch.classes_input(&params.graph));
        let program = Program::new(gpu, params, rows, mode, &inputs).map_err(|e| match e {
            // Its advice counts rows; each record takes `samples` of them.
            GpuError::Limit(msg) if samples > 1 => GpuError::Limit(format!(
                "{msg} (counted in rows: with --iwae-k or --elbo-k {samples} each record takes {samples} rows, so divide it by {samples})"
            )),
            e => e,
        })?;
        let g = &params.graph;
        let shared = match shared {
            true => Some(SharedEncoder::new(
                gpu,
                params,
                data,
                (spec.rows, samples),
                &program,
            )?),
            false => None,
        };
        let per_sample = Matrix::zeros(gpu, rows, 3, "per-sample loss")?;
        let accum = Matrix::zeros(gpu, 1, 4, "loss sums")?;
        let dlogits = logits_rows_grad(&program, g, rows)?;
        let buffers = LossBuffers {
            logits: &logits_rows(&program, g, rows)?,
            x,
            mulv: program.value(g.mulv),
            dlogits: &dlogits,
            dmulv: program.grad(g.mulv),
            per_sample: &per_sample,
            accum: &accum,
        };
        let mut loss = match &c.table {
            Some(t) => table_loss(
                gpu,
                &buffers,
                &TableBlocks::new(gpu, &t.blocks(), t.width())?,
                &spec.settings,
            )?,
            None => loss(gpu, &buffers, &spec.settings)?,
        };
        let pseudo = match g.pseudo {
            Some(_) => Some(VampStep::new(gpu, params)?),
            None => None,
        };
        let dreg = spec.samples.dreg && spec.adam.is_some();
        if dreg && (samples < 2 || spec.samples.average || !g.levels.is_empty()) {
            return Err(GpuError::Config(
                "the doubly reparameterized gradient needs importance weights over 2 or more samples and one stochastic layer".into(),
            ));
        }
        let importance = (samples > 1)
            .then(|| {
                iwae_weights(
                    gpu,
                    (samples, spec.samples.average),
                    &per_sample,
                    (&dlogits, program.grad(g.mulv)),
                    dreg.then(|| program.grad(g.z)),
                )
            })
            .transpose()?;
        // The KL as its Monte-Carlo estimate: the VampPrior's, or under the importance-
        // weighted objective or with stacked layers (whose KLs below are Monte-Carlo ones)
        // N(0, I)'s (one component at 0 with unit variance).
        let mc_kl = |pmulv: &Matrix, dpmulv: &Matrix| {
            vamp(
                gpu,
                &VampBuffers {
                    mulv: program.value(g.mulv),
                    z: program.value(g.z),
                    eps: program.eps_of(g.z),
                    pmulv,
                    per_sample: &per_sample,
                    dmulv: program.grad(g.mulv),
                    dpmulv,
                    row_scale: importance.as_ref().map(|w| &w.normalized),
                },
            )
        };
        let mut mc_kl = match &pseudo {
            Some(v) => Some(mc_kl(v.pass.components(g), v.pass.program.grad(g.mulv))?),
            None if samples > 1 || !g.levels.is_empty() => {
                let z = g.shapes[g.z].c;
                Some(mc_kl(
                    &Matrix::zeros(gpu, 1, 2 * z, "N(0, I)")?,
                    &Matrix::zeros(gpu, 1, 2 * z, "N(0, I) gradient")?,
                )?)
            }
            None => None,
        };
        if let Some(kl) = mc_kl.as_mut().filter(|_| dreg) {
            kl.set_pathwise(gpu);
        }
        let levels = g
            .levels
            .iter()
            .map(|l| {
                level(
                    gpu,
                    &LevelBuffers {
                        mulv: program.value(l.mulv),
                        z: program.value(l.z),
                        eps: program.eps_of(l.z),
                        prior: program.value(l.prior),
                        per_sample: &per_sample,
                        dz: program.grad(l.z),
                        dmulv: program.grad(l.mulv),
                        dprior: program.grad(l.prior),
                        row_scale: importance.as_ref().map(|w| &w.normalized),
                    },
                )
            })
            .collect::<Result<_, _>>()?;
        loss.per_record(gpu, samples);
        let adam = spec
            .adam
            .map(|a| {
                adam(
                    gpu,
                    [&params.values, &params.grads, &params.m, &params.v],
                    params.len,
                    a,
                )
            })
            .transpose()?;
        Ok(StepProgram {
            program,
            batch,
            binarize: c.binarize,
            per_sample,
            accum,
            corrupt: corrupt.map(|(d, kind, _)| (d, kind)),
            loss,
            vamp: pseudo,
            mc_kl,
            levels,
            importance,
            shared,
            samples,
            adam,
            graph: g.clone(),
            seed: spec.seed,
            stream,
            temperature: 1.0,
            noise_by_record: false,
        })
    }

    /// Records per batch (each takes `samples` rows).
    pub fn rows(&self) -> usize {
        self.batch.x.rows / self.samples
    }

    /// The batch, each record `samples` times in a row: the reconstruction's target.
    pub fn x(&self) -> &Matrix {
        &self.batch.x
    }

    /// The lowest stochastic layer's mu | logvar [rows, 2 latent]: what the encoder wrote,
    /// or in a step `from_posterior` what the caller writes.
    pub fn posterior(&self) -> &Matrix {
        self.program.value(self.graph.posterior())
    }

    /// What the encoder reads: the batch, or its corrupted copy (denoising; not in a step
    /// `from_posterior`).
    pub fn encoder_input(&self) -> &Matrix {
        match &self.shared {
            Some(s) => s.program.value(self.graph.x),
            None => self.program.value(self.graph.x),
        }
    }

    /// mu | logvar [rows, 2 latent].
    pub fn mulv(&self) -> &Matrix {
        self.program.value(self.graph.mulv)
    }

    /// The sampled code [rows, latent] and its noise.
    pub fn z(&self) -> &Matrix {
        self.program.value(self.graph.z)
    }

    pub fn eps(&self) -> &Matrix {
        self.program.eps_of(self.graph.z)
    }

    /// The decoder's outputs as [rows, values].
    pub fn logits(&self) -> Result<Matrix, GpuError> {
        logits_rows(&self.program, &self.graph, self.rows())
    }

    /// Sets the learning rate of the following steps (a schedule's).
    pub fn set_lr(&mut self, lr: f32) {
        if let Some(adam) = &mut self.adam {
            adam.set_lr(lr);
        }
    }

    /// Sets the per-step state: batch window, noise position, loss settings, Adam's t.
    pub fn prepare(&mut self, gpu: &Gpu, offset: usize, step: u64, settings: &LossSettings) {
        self.batch.set_offset(gpu, offset);
        if let Some(s) = &mut self.shared {
            s.batch.set_offset(gpu, offset);
        }
        if self.binarize {
            // Training draws anew each step, from the run's seed. Evaluation keeps one
            // draw per image, the same in every evaluation (seed 0): an image's importance
            // samples, the test loss and `eval` all see the same binary test set.
            let noise = match self.adam.is_some() {
                true => Noise {
                    seed: self.seed,
                    step: step as u32,
                    stream: STREAM_BINARIZE,
                },
                false => Noise {
                    seed: 0,
                    step: 0,
                    stream: STREAM_BINARIZE + 1,
                },
            };
            self.batch.gather.set_binarize(gpu, noise);
            // The encoder's copy of the batch is the same draw (keyed by image and step).
            if let Some(s) = &mut self.shared {
                s.batch.gather.set_binarize(gpu, noise);
            }
        }
        let noise = Noise {
            seed: self.seed,
            step: step as u32,
            stream: self.stream,
        };
        let first = if self.noise_by_record { offset } else { 0 };
        self.program
            .set_noise(gpu, &self.graph, (noise, first), self.temperature);
        // `valid` counts records; the loss launches count rows.
        let valid = settings.valid.min(self.rows()) * self.samples;
        match &mut self.mc_kl {
            // The KL is the Monte-Carlo one: the loss writes the reconstruction alone.
            Some(kl) => {
                let recon = LossSettings {
                    beta: 0.0,
                    free_bits: 0.0,
                    valid,
                    ..*settings
                };
                self.loss.update(gpu, &recon);
                kl.update(gpu, valid, settings.beta, settings.grad_scale);
                for l in &mut self.levels {
                    l.update(gpu, valid, settings.beta, settings.grad_scale);
                }
            }
            None => self.loss.update(gpu, &LossSettings { valid, ..*settings }),
        }
        if let Some(w) = &mut self.importance {
            w.update(gpu, settings.valid, settings.beta);
        }
        if let Some((d, kind)) = &self.corrupt {
            let noise = Noise {
                seed: self.seed,
                step: step as u32,
                stream: STREAM_CORRUPT,
            };
            set_corruption_noise(gpu, d, &self.batch.x, noise, *kind);
        }
        if let Some(adam) = &self.adam {
            adam.set_step(gpu, step + 1);
        }
    }

    /// Every launch of the step, in order.
    pub fn launches(&self) -> Vec<&Dispatch> {
        let mut all: Vec<&Dispatch> = self.batch.launches().collect();
        all.extend(self.corrupt.as_ref().map(|(d, _)| d));
        let shared = self.shared.as_ref();
        all.extend(shared.into_iter().flat_map(SharedEncoder::forward));
        all.extend(&self.program.forward);
        let train = self.adam.is_some();
        let vamp = self.vamp.as_ref();
        all.extend(vamp.map(|v| v.pass.forward()).into_iter().flatten());
        all.extend(self.loss.per_sample());
        let kl = self.mc_kl.as_ref();
        all.extend(kl.into_iter().flat_map(|kl| &kl.records));
        all.extend(self.levels.iter().map(|l| &l.rows));
        all.extend(self.importance.iter().flat_map(|w| w.launches()));
        all.extend(self.levels.iter().map(|l| &l.grads));
        // The components' gradients weigh the records as the importance weights say.
        all.extend(
            kl.filter(|_| train && vamp.is_some())
                .map(|kl| &kl.components),
        );
        all.push(&self.loss.reduce);
        // The doubly reparameterized estimator weighs the code's completed gradient again
        // before its sampling's backward passes it to the encoder.
        let code_scale = self.importance.as_ref().and_then(|w| w.code_scale.as_ref());
        let at = code_scale
            .and_then(|_| self.program.sample_backward_at(self.graph.z))
            .unwrap_or(self.program.backward.len());
        all.extend(&self.program.backward[..at]);
        all.extend(code_scale);
        all.extend(&self.program.backward[at..]);
        all.extend(shared.into_iter().flat_map(SharedEncoder::backward));
        all.extend(
            vamp.filter(|_| train)
                .map(|v| v.backward())
                .into_iter()
                .flatten(),
        );
        all.extend(self.adam.as_ref().map(|a| &a.dispatch));
        all
    }

    /// Whether each row's KL is a Monte-Carlo estimate from its sampled codes (a
    /// VampPrior's, the importance-weighted objective's, stacked layers'), not the closed
    /// form.
    pub fn monte_carlo_kl(&self) -> bool {
        self.mc_kl.is_some()
    }

    /// A VampPrior model's components' mu | logvar [K, 2Z], as of the last step.
    pub fn components(&self) -> Option<&Matrix> {
        self.vamp.as_ref().map(|v| v.pass.components(&self.graph))
    }

    /// Records the whole step (see `gpu::encode`).
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        crate::gpu::encode(encoder, &self.launches());
    }

    /// Uses another RNG stream (e.g. for the IWAE samples).
    pub fn set_stream(&mut self, stream: u32) {
        self.stream = stream;
    }

    /// Records the step, plus a copy of the loss sums into `read` when given, and submits
    /// it as one command buffer.
    pub fn submit(
        &self,
        gpu: &Gpu,
        read: Option<&mut Option<PendingRead>>,
    ) -> Result<(), GpuError> {
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        self.record(&mut encoder);
        let pending = read.map(|slot| {
            let a = &self.accum;
            (
                slot,
                PendingRead::record(gpu, &mut encoder, &a.buffer, a.offset, 16),
            )
        });
        gpu.queue.submit([encoder.finish()]);
        if let Some((slot, p)) = pending {
            p.start();
            *slot = Some(p);
        }
        gpu.check()
    }

    /// Zeroes the running loss sums.
    pub fn reset_sums(&self, gpu: &Gpu) {
        gpu.queue.write_buffer(&self.accum.buffer, 0, &[0u8; 16]);
    }

    /// Bytes of the step's matrices: the graph's workspace, the batch and the loss's.
    pub fn workspace_bytes(&self) -> u64 {
        self.program.workspace_bytes
            + self
                .shared
                .as_ref()
                .map_or(0, |s| s.program.workspace_bytes + s.batch.x.byte_len())
            + self.vamp.as_ref().map_or(0, VampStep::workspace_bytes)
            + self.batch.x.byte_len()
            + self.per_sample.byte_len()
            + self.accum.byte_len()
    }
}

/// The encoder over a VampPrior model's pseudo-inputs (see `graph::Pseudo`): the raw
/// inputs through their activation, then the encoder, to the components' mu | logvar.
pub struct PseudoPass {
    /// The pseudo-inputs as the encoder sees them.
    inputs: Matrix,
    act: Dispatch,
    pub program: Program,
}

impl PseudoPass {
    /// The pass of the model `params`, whose gradients its backward writes.
    pub fn new(gpu: &Gpu, params: &Params) -> Result<PseudoPass, GpuError> {
        let g = &params.graph;
        let (pseudo, slot) = params.pseudo_inputs().ok_or_else(|| {
            GpuError::Config("a VampPrior model without its pseudo-inputs".into())
        })?;
        let raw = params.view(&params.values, slot);
        let inputs = Matrix::zeros(gpu, raw.rows, raw.cols, "pseudo-inputs")?;
        let act = crate::ops::tensor::act(gpu, &raw, &inputs, pseudo.act)?;
        let program = Program::new(gpu, params, pseudo.count, Mode::Pseudo, &[(g.x, &inputs)])?;
        Ok(PseudoPass {
            inputs,
            act,
            program,
        })
    }

    /// The components' mu | logvar [K, 2Z] after `forward`.
    pub fn components(&self, g: &crate::graph::Graph) -> &Matrix {
        self.program.value(g.mulv)
    }

    pub fn forward(&self) -> impl Iterator<Item = &Dispatch> {
        std::iter::once(&self.act).chain(&self.program.forward)
    }
}

/// The VampPrior's part of a training or evaluation step: the pseudo-inputs' pass, its
/// weight gradients written apart, then added to the batch's.
struct VampStep {
    pass: PseudoPass,
    /// The pseudo-inputs' gradient into the raw ones' slot, and the encoder's weight
    /// gradients added to the batch's.
    act_grad: Dispatch,
    add_grads: Dispatch,
    shadow: Matrix,
}

impl VampStep {
    fn new(gpu: &Gpu, params: &Params) -> Result<VampStep, GpuError> {
        let g = &params.graph;
        let shadow = Matrix::zeros(gpu, 1, params.len, "pseudo-input weight gradients")?;
        let pass = PseudoPass::new(gpu, &params.with_grads(shadow.buffer.clone()))?;
        let (pseudo, slot) = params.pseudo_inputs().ok_or_else(|| {
            GpuError::Config("a VampPrior model without its pseudo-inputs".into())
        })?;
        let act_grad = crate::ops::tensor::grad(
            gpu,
            pass.program.grad(g.x),
            &params.view(&params.grads, slot),
            Some((pseudo.act, &params.view(&params.values, slot))),
            GradEpilogue::default(),
        )?;
        let add_grads = crate::ops::tensor::grad(
            gpu,
            &shadow,
            &params.flat(&params.grads),
            None,
            GradEpilogue {
                accumulate: true,
                act: None,
            },
        )?;
        Ok(VampStep {
            pass,
            act_grad,
            add_grads,
            shadow,
        })
    }

    fn backward(&self) -> impl Iterator<Item = &Dispatch> {
        self.pass
            .program
            .backward
            .iter()
            .chain([&self.act_grad, &self.add_grads])
    }

    fn workspace_bytes(&self) -> u64 {
        self.pass.program.workspace_bytes + self.pass.inputs.byte_len() + self.shadow.byte_len()
    }
}

/// A batch gathered from the GPU dataset: `records` records, each `repeat` times in a row,
/// and a conditional model's classes of them, one-hot, alike.
struct Gathered {
    x: Matrix,
    gather: GatherDispatch,
    classes: Option<(Matrix, GatherDispatch)>,
}

impl Gathered {
    fn new(
        gpu: &Gpu,
        g: &crate::graph::Graph,
        data: &Batches<'_>,
        (records, repeat): (usize, usize),
    ) -> Result<Gathered, GpuError> {
        let rows = records * repeat;
        let x = Matrix::zeros(gpu, rows, g.shapes[g.x].numel(), "x")?;
        let mut gather = gather(gpu, data.images, data.indices, data.count, &x)?;
        gather.set_repeat(gpu, repeat);
        let classes = match g.y {
            Some(y) => {
                let labels = data.labels.ok_or_else(|| {
                    GpuError::Config(
                        "this model is conditional: it needs each record's class, and the data has no labels".into(),
                    )
                })?;
                let onehot = Matrix::zeros(gpu, rows, g.shapes[y].c, "classes")?;
                let mut d = one_hot(gpu, labels, data.indices, data.count, &onehot)?;
                d.set_repeat(gpu, repeat);
                Some((onehot, d))
            }
            None => None,
        };
        Ok(Gathered { x, gather, classes })
    }

    /// The classes as the graph's input y (a conditional model's).
    fn classes_input(&self, g: &crate::graph::Graph) -> Option<(crate::graph::TensorId, &Matrix)> {
        g.y.zip(self.classes.as_ref().map(|(onehot, _)| onehot))
    }

    /// Starts the batch at record `offset` of the data's order.
    fn set_offset(&mut self, gpu: &Gpu, offset: usize) {
        self.gather.set_offset(gpu, offset);
        if let Some((_, d)) = &mut self.classes {
            d.set_offset(gpu, offset);
        }
    }

    fn launches(&self) -> impl Iterator<Item = &Dispatch> {
        std::iter::once(&self.gather.dispatch)
            .chain(self.classes.as_ref().map(|(_, d)| &d.dispatch))
    }
}

/// The encoder of a training step over K samples per record, run once per record: the batch
/// gathered once more without repeats, the encoder (`Mode::Encoder`) to the lowest
/// stochastic layer's mu | logvar, repeated over each record's K rows of the step's program
/// (`Mode::PosteriorTrain`), and on the way back those rows' gradients summed per record
/// into the encoder's backward. The same gradients as one encoder pass per row.
struct SharedEncoder {
    batch: Gathered,
    program: Program,
    repeat: Dispatch,
    sum: Vec<Dispatch>,
}

impl SharedEncoder {
    fn new(
        gpu: &Gpu,
        params: &Params,
        data: &Batches<'_>,
        (records, k): (usize, usize),
        step: &Program,
    ) -> Result<SharedEncoder, GpuError> {
        let g = &params.graph;
        let batch = Gathered::new(gpu, g, data, (records, 1))?;
        let mut inputs = vec![(g.x, &batch.x)];
        inputs.extend(batch.classes_input(g));
        let program = Program::new(gpu, params, records, Mode::Encoder, &inputs)?;
        let low = g.posterior();
        let repeat = repeat_records(gpu, program.value(low), step.value(low), k)?;
        let sum = sum_records(gpu, step.grad(low), program.grad(low), k)?;
        Ok(SharedEncoder {
            batch,
            program,
            repeat,
            sum,
        })
    }

    fn forward(&self) -> impl Iterator<Item = &Dispatch> {
        self.batch
            .launches()
            .chain(&self.program.forward)
            .chain([&self.repeat])
    }

    fn backward(&self) -> impl Iterator<Item = &Dispatch> {
        self.sum.iter().chain(&self.program.backward)
    }
}

/// The logits as [rows, values], the loss's view (an image output is [rows * h * w, c]).
fn logits_rows(p: &Program, g: &crate::graph::Graph, rows: usize) -> Result<Matrix, GpuError> {
    as_rows(p.value(g.logits), rows)
}

fn logits_rows_grad(p: &Program, g: &crate::graph::Graph, rows: usize) -> Result<Matrix, GpuError> {
    as_rows(p.grad(g.logits), rows)
}

fn as_rows(m: &Matrix, rows: usize) -> Result<Matrix, GpuError> {
    if m.rows == rows {
        Ok(m.clone())
    } else {
        m.reshaped(rows, m.rows * m.cols / rows)
    }
}

/// The decoder alone for batches of `rows` codes: write codes into `z()` (or sample them
/// there), run `launches()`, read `logits()`.
pub struct Decoder {
    program: Program,
    graph: crate::graph::Graph,
}

impl Decoder {
    /// Lower stochastic layers decode their priors' means until `set_noise` says otherwise.
    pub fn new(gpu: &Gpu, params: &Params, rows: usize) -> Result<Decoder, GpuError> {
        let d = Decoder {
            program: Program::new(gpu, params, rows, Mode::Decode, &[])?,
            graph: params.graph.clone(),
        };
        d.set_noise(gpu, Noise::default(), 0.0);
        Ok(d)
    }

    /// Where a model with stacked layers draws its lower codes from their priors (top-down
    /// generation), at `temperature` (0: the priors' means).
    pub fn set_noise(&self, gpu: &Gpu, noise: Noise, temperature: f32) {
        self.program
            .set_noise(gpu, &self.graph, (noise, 0), temperature);
    }

    pub fn z(&self) -> &Matrix {
        self.program.value(self.graph.z)
    }

    /// Writes the classes of the batch's codes (a conditional model's; one per row, the
    /// last repeated past the end), or checks that an unconditional model is given none.
    pub fn set_classes(&self, gpu: &Gpu, classes: Option<&[u8]>) -> Result<(), GpuError> {
        let (y, classes) = match (self.graph.y, classes) {
            (None, None) => return Ok(()),
            (Some(y), Some(c)) if !c.is_empty() => (y, c),
            (Some(_), _) => {
                return Err(GpuError::Config(
                    "this model is conditional: say which class to decode (--class)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(GpuError::Config(
                    "--class needs a conditional model (train --conditional)".into(),
                ))
            }
        };
        let k = self.graph.shapes[y].c;
        if let Some(&bad) = classes.iter().find(|&&c| usize::from(c) >= k) {
            return Err(GpuError::Config(format!(
                "class {bad} is outside the model's {k} classes (0 to {})",
                k - 1
            )));
        }
        let rows = self.program.batch;
        let mut onehot = vec![0f32; rows * k];
        for r in 0..rows {
            onehot[r * k + usize::from(class_of(classes, r))] = 1.0;
        }
        self.program.value(y).write(gpu, &onehot)
    }

    pub fn logits(&self) -> Result<Matrix, GpuError> {
        logits_rows(&self.program, &self.graph, self.program.batch)
    }

    pub fn launches(&self) -> Vec<&Dispatch> {
        self.program.forward.iter().collect()
    }
}
