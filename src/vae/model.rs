//! The VAE (MLP or conv) as a fixed list of GPU launches: forward, fused loss, explicit layer-by-layer
//! backward and Adam, built once per batch size and recorded into one pass per step.

use crate::gpu::{Dispatch, Gpu, GpuError, Matrix, PendingRead};
use crate::ops::adam::{adam, AdamConfig, AdamDispatch};
use crate::ops::conv::{
    conv2d, conv2d_backward, conv2d_implicit, conv_transpose2d, conv_transpose2d_backward,
    ConvGeom, ConvIo, Shape,
};
use crate::ops::elementwise::{act_backward, bias_grad};
use crate::ops::gather::{gather, GatherDispatch, GpuImages};
use crate::ops::gemm::{gemm, gemm_backward, GemmSpec, InputActivation};
use crate::ops::loss::{loss, table_loss, LossBuffers, LossDispatch, LossSettings, TableBlocks};
use crate::ops::sample::{
    corrupt, sample_forward, set_corruption_noise, set_noise, Corruption, Noise,
};
use crate::ops::Activation;

use super::arch::{LayerDef, LayerKind};
use super::config::ModelConfig;
use super::params::Params;

/// RNG streams, so training, evaluation and generation never share noise.
pub const STREAM_TRAIN: u32 = 0;
pub const STREAM_EVAL: u32 = 1;
pub const STREAM_PRIOR: u32 = 2;
pub const STREAM_CORRUPT: u32 = 3;

/// Activations (and their gradients) of every layer for a batch of `rows`.
pub struct Workspace {
    pub rows: usize,
    /// The batch (also the reconstruction target).
    pub x: Matrix,
    /// The encoder's input when it differs from x (a corrupted copy, for denoising).
    pub x_in: Option<Matrix>,
    /// Outputs of every layer in order: [B * H * W, C] for conv layers, [B, n] for Linear
    /// layers and for the last layer (the logits, which the loss reads as [B, D]).
    pub outs: Vec<Matrix>,
    pub douts: Vec<Matrix>,
    /// Column scratch of conv layers (None for Linear), shared by forward and backward.
    pub cols: Vec<Option<Matrix>>,
    pub dcols: Vec<Option<Matrix>>,
    pub z: Matrix,
    pub eps: Matrix,
    pub dz: Matrix,
    pub per_sample: Matrix,
    pub accum: Matrix,
    /// Index of the mu|logvar layer output.
    pub heads: usize,
}

impl Workspace {
    pub fn new(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        rows: usize,
    ) -> Result<Workspace, GpuError> {
        let n = params.layers.len();
        let (mut outs, mut douts, mut cols, mut dcols) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, l) in params.layers.iter().enumerate() {
            let d = &l.def;
            let (r, cl) = if d.kind == LayerKind::Linear || i + 1 == n {
                (rows, d.output.numel())
            } else {
                (rows * d.output.h * d.output.w, d.output.c)
            };
            outs.push(Matrix::zeros(
                gpu,
                r,
                cl,
                &format!("{} out", l.weight.name),
            )?);
            douts.push(Matrix::zeros(
                gpu,
                r,
                cl,
                &format!("{} grad", l.weight.name),
            )?);
            let geom = geometry(d, rows)?;
            let scratch = |label: &str| {
                geom.map(|g| Matrix::zeros(gpu, g.col_rows(), g.col_cols(), label))
                    .transpose()
            };
            cols.push(scratch("cols")?);
            dcols.push(scratch("dcols")?);
        }
        Ok(Workspace {
            rows,
            x: Matrix::zeros(gpu, rows, c.input_dim(), "x")?,
            x_in: None,
            outs,
            douts,
            cols,
            dcols,
            z: Matrix::zeros(gpu, rows, c.latent, "z")?,
            eps: Matrix::zeros(gpu, rows, c.latent, "eps")?,
            dz: Matrix::zeros(gpu, rows, c.latent, "dz")?,
            per_sample: Matrix::zeros(gpu, rows, 3, "per-sample loss")?,
            accum: Matrix::zeros(gpu, 1, 4, "loss sums")?,
            heads: params.heads,
        })
    }

    pub fn logits(&self) -> &Matrix {
        self.outs.last().expect("a model has layers")
    }

    /// Input of layer i: x, the previous output, or z after the heads.
    fn input(&self, i: usize) -> &Matrix {
        match i {
            0 => self.x_in.as_ref().unwrap_or(&self.x),
            i if i == self.heads + 1 => &self.z,
            i => &self.outs[i - 1],
        }
    }

    /// Gradient of layer i's input (None for the first layer, which needs none).
    fn d_input(&self, i: usize) -> Option<&Matrix> {
        match i {
            0 => None,
            i if i == self.heads + 1 => Some(&self.dz),
            i => Some(&self.douts[i - 1]),
        }
    }
}

/// The conv geometry of a layer at batch `rows` (None for Linear).
fn geometry(d: &LayerDef, rows: usize) -> Result<Option<ConvGeom>, GpuError> {
    match d.kind {
        LayerKind::Linear => Ok(None),
        LayerKind::Conv { k, stride, pad } => {
            ConvGeom::new(rows, d.input, k, stride, pad).map(Some)
        }
        LayerKind::ConvT { k, stride, pad } => {
            ConvGeom::new(rows, d.output, k, stride, pad).map(Some)
        }
    }
}

/// `m` as [rows, features]: the flat view a Linear layer or a GEMM operand needs.
fn as_rows(m: &Matrix, rows: usize) -> Result<Matrix, GpuError> {
    if m.rows == rows {
        Ok(m.clone())
    } else {
        m.reshaped(rows, m.rows * m.cols / rows)
    }
}

/// `m` as [B * H * W, C] for an image of `s` (the transposed conv's GEMM operand).
fn as_pixels(m: &Matrix, rows: usize, s: Shape) -> Result<Matrix, GpuError> {
    as_rows(m, rows * s.h * s.w)
}

/// Forward launches of layers `range`. `inference`: no backward follows, so convolutions
/// may skip materializing their columns (see `conv2d_implicit`).
pub fn forward_layers(
    gpu: &Gpu,
    params: &Params,
    ws: &Workspace,
    range: std::ops::Range<usize>,
    inference: bool,
) -> Result<Vec<Dispatch>, GpuError> {
    let mut out = Vec::new();
    for i in range {
        let l = &params.layers[i];
        let d = &l.def;
        let (w, b) = (
            params.view(&params.values, &l.weight),
            params.view(&params.values, &l.bias),
        );
        let input = ws.input(i);
        match d.kind {
            LayerKind::Linear => {
                let spec = GemmSpec {
                    trans_b: true,
                    act: d.act,
                    ..Default::default()
                };
                out.push(gemm(
                    gpu,
                    &as_rows(input, ws.rows)?,
                    &w,
                    &as_rows(&ws.outs[i], ws.rows)?,
                    Some(&b),
                    spec,
                )?);
            }
            LayerKind::Conv { .. } | LayerKind::ConvT { .. } => {
                let io = conv_io(d, ws, i, &w, &b)?;
                let implicit = match d.kind {
                    LayerKind::Conv { .. } if inference => {
                        conv2d_implicit(gpu, &io, input, &ws.outs[i], d.act)?
                    }
                    _ => None,
                };
                out.extend(if let Some(one) = implicit {
                    vec![one]
                } else if matches!(d.kind, LayerKind::Conv { .. }) {
                    conv2d(gpu, &io, input, &ws.outs[i], d.act)?
                } else {
                    conv_transpose2d(
                        gpu,
                        &io,
                        &as_pixels(input, ws.rows, d.input)?,
                        &ws.outs[i],
                        d.act,
                    )?
                });
            }
        }
    }
    Ok(out)
}

fn conv_io<'a>(
    d: &LayerDef,
    ws: &'a Workspace,
    i: usize,
    w: &'a Matrix,
    b: &'a Matrix,
) -> Result<ConvIo<'a>, GpuError> {
    Ok(ConvIo {
        geom: geometry(d, ws.rows)?.expect("a conv layer"),
        weight: w,
        bias: b,
        cols: ws.cols[i]
            .as_ref()
            .expect("conv layers have column scratch"),
    })
}

/// Backward launches of every layer, last to first; the heads' output gradient arrives in
/// douts[heads] (loss KL part plus the sampling path), the decoder's first layer writes dz.
fn backward_layers(gpu: &Gpu, params: &Params, ws: &Workspace) -> Result<Vec<Dispatch>, GpuError> {
    let mut out = Vec::new();
    let n = params.layers.len();
    for i in (0..n).rev() {
        let l = &params.layers[i];
        let d = &l.def;
        // Layer i + 1 makes douts[i] and multiplies it by this activation's derivative in
        // the same launch, except across the sampling step and after the last layer.
        let fused_by_next = i + 1 < n && i != ws.heads;
        if d.act != Activation::Identity && !fused_by_next {
            out.push(act_backward(gpu, &ws.outs[i], &ws.douts[i], d.act)?);
        }
        // The activation that produced this layer's input, fused into its input gradient.
        let input_act = match i {
            0 => None,
            i if i == ws.heads + 1 => None,
            i => Some(params.layers[i - 1].def.act).filter(|a| *a != Activation::Identity),
        };
        let w = params.view(&params.values, &l.weight);
        let grads = (
            params.view(&params.grads, &l.weight),
            params.view(&params.grads, &l.bias),
        );
        match d.kind {
            LayerKind::Linear => {
                let dy = as_rows(&ws.douts[i], ws.rows)?;
                let d_in = ws.d_input(i).map(|m| as_rows(m, ws.rows)).transpose()?;
                let y = as_rows(ws.input(i), ws.rows)?;
                let spec = GemmSpec {
                    trans_b: true,
                    ..Default::default()
                };
                out.extend(gemm_backward(
                    gpu,
                    &as_rows(ws.input(i), ws.rows)?,
                    &w,
                    &dy,
                    d_in.as_ref(),
                    Some(&grads.0),
                    spec,
                    crate::ops::GradEpilogue {
                        accumulate: false,
                        act: input_act.map(|act| InputActivation { act, output: &y }),
                    },
                )?);
                out.extend(bias_grad(gpu, &dy, &grads.1)?);
            }
            LayerKind::Conv { .. } => {
                let b = params.view(&params.values, &l.bias);
                let io = conv_io(d, ws, i, &w, &b)?;
                let dcols = ws.dcols[i].as_ref().expect("conv scratch");
                out.extend(conv2d_backward(
                    gpu,
                    &io,
                    &ws.douts[i],
                    (&grads.0, &grads.1),
                    ws.d_input(i).map(|m| (dcols, m)),
                    crate::ops::GradEpilogue {
                        accumulate: false,
                        act: input_act.map(|act| InputActivation {
                            act,
                            output: ws.input(i),
                        }),
                    },
                )?);
            }
            LayerKind::ConvT { .. } => {
                let b = params.view(&params.values, &l.bias);
                let io = conv_io(d, ws, i, &w, &b)?;
                let x = as_pixels(ws.input(i), ws.rows, d.input)?;
                let d_in = ws
                    .d_input(i)
                    .map(|m| as_pixels(m, ws.rows, d.input))
                    .transpose()?;
                let dcols = ws.dcols[i].as_ref().expect("conv scratch");
                out.extend(conv_transpose2d_backward(
                    gpu,
                    &io,
                    &x,
                    &ws.douts[i],
                    dcols,
                    (&grads.0, &grads.1),
                    d_in.as_ref(),
                    crate::ops::GradEpilogue {
                        accumulate: false,
                        act: input_act.map(|act| InputActivation { act, output: &x }),
                    },
                )?);
            }
        }
        if i == ws.heads + 1 {
            // dz is complete: add the sampling path into the heads' gradient.
            out.push(crate::ops::sample::sample_backward(
                gpu,
                &ws.outs[ws.heads],
                &ws.dz,
                &ws.eps,
                &ws.douts[ws.heads],
            )?);
        }
    }
    Ok(out)
}

/// Where a step's batches come from: `count` image indices into `images`.
pub struct Batches<'a> {
    pub images: &'a GpuImages,
    pub indices: &'a wgpu::Buffer,
    pub count: usize,
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
}

/// One step over a batch gathered from the GPU dataset: forward, loss, and when training,
/// backward and Adam.
pub struct StepProgram {
    pub ws: Workspace,
    pub gather: GatherDispatch,
    corrupt: Option<(Dispatch, Corruption)>,
    encoder: Vec<Dispatch>,
    sample: Dispatch,
    decoder: Vec<Dispatch>,
    pub loss: LossDispatch,
    backward: Vec<Dispatch>,
    pub adam: Option<AdamDispatch>,
    seed: u64,
    stream: u32,
    heads: usize,
    /// Scale of the posterior noise: 1 samples z, 0 decodes the mean.
    pub temperature: f32,
}

impl StepProgram {
    pub fn new(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        data: &Batches<'_>,
        spec: &StepSpec,
    ) -> Result<StepProgram, GpuError> {
        let mut ws = Workspace::new(gpu, params, c, spec.rows)?;
        let heads = ws.heads;
        let n = params.layers.len();
        let stream = if spec.adam.is_some() {
            STREAM_TRAIN
        } else {
            STREAM_EVAL
        };
        let gather = gather(gpu, data.images, data.indices, data.count, &ws.x)?;
        let corrupt = match spec.corruption {
            Some(kind) => {
                let noisy = Matrix::zeros(gpu, ws.x.rows, ws.x.cols, "corrupted x")?;
                let d = corrupt(
                    gpu,
                    &ws.x,
                    &noisy,
                    Noise {
                        seed: spec.seed,
                        step: 0,
                        stream: STREAM_CORRUPT,
                    },
                    kind,
                )?;
                ws.x_in = Some(noisy);
                Some((d, kind))
            }
            None => None,
        };
        let inference = spec.adam.is_none();
        let encoder = forward_layers(gpu, params, &ws, 0..heads + 1, inference)?;
        let sample = sample_forward(
            gpu,
            &ws.outs[heads],
            &ws.z,
            &ws.eps,
            Noise {
                seed: spec.seed,
                step: 0,
                stream,
            },
            1.0,
        )?;
        let decoder = forward_layers(gpu, params, &ws, heads + 1..n, inference)?;
        let buffers = LossBuffers {
            logits: ws.logits(),
            x: &ws.x,
            mulv: &ws.outs[heads],
            dlogits: &ws.douts[n - 1],
            dmulv: &ws.douts[heads],
            per_sample: &ws.per_sample,
            accum: &ws.accum,
        };
        let loss = match &c.table {
            Some(t) => table_loss(
                gpu,
                &buffers,
                &TableBlocks::new(gpu, &t.blocks(), t.width())?,
                &spec.settings,
            )?,
            None => loss(gpu, &buffers, &spec.settings)?,
        };
        let (backward, adam) = match spec.adam {
            Some(a) => (
                backward_layers(gpu, params, &ws)?,
                Some(adam(
                    gpu,
                    [&params.values, &params.grads, &params.m, &params.v],
                    params.len,
                    a,
                )?),
            ),
            None => (Vec::new(), None),
        };
        Ok(StepProgram {
            ws,
            gather,
            corrupt,
            encoder,
            sample,
            decoder,
            loss,
            backward,
            adam,
            seed: spec.seed,
            stream,
            heads,
            temperature: 1.0,
        })
    }

    /// Sets the per-step state: batch window, noise position, loss settings, Adam's t.
    pub fn prepare(&mut self, gpu: &Gpu, offset: usize, step: u64, settings: &LossSettings) {
        self.gather.set_offset(gpu, offset);
        let noise = Noise {
            seed: self.seed,
            step: step as u32,
            stream: self.stream,
        };
        set_noise(
            gpu,
            &self.sample,
            self.ws.outs[self.heads].ld,
            &self.ws.z,
            noise,
            self.temperature,
        );
        self.loss.update(gpu, settings);
        if let Some((d, kind)) = &self.corrupt {
            let noise = Noise {
                seed: self.seed,
                step: step as u32,
                stream: STREAM_CORRUPT,
            };
            set_corruption_noise(gpu, d, &self.ws.x, noise, *kind);
        }
        if let Some(adam) = &self.adam {
            adam.set_step(gpu, step + 1);
        }
    }

    /// Every launch of the step, in order.
    pub fn launches(&self) -> Vec<&Dispatch> {
        let mut all = vec![&self.gather.dispatch];
        all.extend(self.corrupt.as_ref().map(|(d, _)| d));
        all.extend(&self.encoder);
        all.push(&self.sample);
        all.extend(&self.decoder);
        all.extend(self.loss.launches());
        all.extend(&self.backward);
        all.extend(self.adam.as_ref().map(|a| &a.dispatch));
        all
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
            let a = &self.ws.accum;
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
        gpu.queue.write_buffer(&self.ws.accum.buffer, 0, &[0u8; 16]);
    }
}
