//! The MLP VAE as a fixed list of GPU launches: forward, fused loss, explicit layer-by-layer
//! backward and Adam, built once per batch size and recorded into one pass per step.

use crate::gpu::{Dispatch, Gpu, GpuError, Matrix, PendingRead};
use crate::ops::adam::{adam, AdamConfig, AdamDispatch};
use crate::ops::elementwise::{act_backward, bias_grad};
use crate::ops::gather::{gather, GatherDispatch, GpuImages};
use crate::ops::gemm::{gemm, gemm_backward, GemmSpec};
use crate::ops::loss::{loss, LossBuffers, LossDispatch, LossSettings};
use crate::ops::sample::{sample_forward, set_noise, Noise};
use crate::ops::Activation;

use super::config::ModelConfig;
use super::params::Params;

/// RNG streams, so training, evaluation and generation never share noise.
pub const STREAM_TRAIN: u32 = 0;
pub const STREAM_EVAL: u32 = 1;
pub const STREAM_PRIOR: u32 = 2;

/// Activations (and their gradients) of every layer for a batch of `rows`.
pub struct Workspace {
    pub rows: usize,
    pub x: Matrix,
    /// Outputs of every layer in order: encoder hidden, mu|logvar, decoder hidden, logits.
    pub outs: Vec<Matrix>,
    pub douts: Vec<Matrix>,
    pub z: Matrix,
    pub eps: Matrix,
    pub dz: Matrix,
    pub per_sample: Matrix,
    pub accum: Matrix,
}

impl Workspace {
    pub fn new(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        rows: usize,
    ) -> Result<Workspace, GpuError> {
        let mut outs = Vec::new();
        let mut douts = Vec::new();
        for l in &params.layers {
            outs.push(Matrix::zeros(
                gpu,
                rows,
                l.weight.rows,
                &format!("{} out", l.weight.name),
            )?);
            douts.push(Matrix::zeros(
                gpu,
                rows,
                l.weight.rows,
                &format!("{} grad", l.weight.name),
            )?);
        }
        Ok(Workspace {
            rows,
            x: Matrix::zeros(gpu, rows, c.input_dim(), "x")?,
            outs,
            douts,
            z: Matrix::zeros(gpu, rows, c.latent, "z")?,
            eps: Matrix::zeros(gpu, rows, c.latent, "eps")?,
            dz: Matrix::zeros(gpu, rows, c.latent, "dz")?,
            per_sample: Matrix::zeros(gpu, rows, 3, "per-sample loss")?,
            accum: Matrix::zeros(gpu, 1, 4, "loss sums")?,
        })
    }

    /// Index of the mu|logvar layer output.
    pub fn heads(&self, c: &ModelConfig) -> usize {
        c.hidden.len()
    }

    pub fn logits(&self) -> &Matrix {
        self.outs.last().expect("a model has layers")
    }
}

/// Activation after layer i (ReLU on hidden layers; heads and output are linear).
fn activation(c: &ModelConfig, i: usize, layers: usize) -> Activation {
    if i == c.hidden.len() || i + 1 == layers {
        Activation::Identity
    } else {
        Activation::Relu
    }
}

/// Input of layer i: x, the previous output, or z after the heads.
fn input<'a>(ws: &'a Workspace, c: &ModelConfig, i: usize) -> &'a Matrix {
    match i {
        0 => &ws.x,
        i if i == c.hidden.len() + 1 => &ws.z,
        i => &ws.outs[i - 1],
    }
}

/// Forward launches of layers `range` (Y = act(X W^T + b)).
pub fn forward_layers(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    ws: &Workspace,
    range: std::ops::Range<usize>,
) -> Result<Vec<Dispatch>, GpuError> {
    let n = params.layers.len();
    range
        .map(|i| {
            let l = &params.layers[i];
            let spec = GemmSpec {
                trans_b: true,
                act: activation(c, i, n),
                ..Default::default()
            };
            gemm(
                gpu,
                input(ws, c, i),
                &params.view(&params.values, &l.weight),
                &ws.outs[i],
                Some(&params.view(&params.values, &l.bias)),
                spec,
            )
        })
        .collect()
}

/// Backward launches of every layer, last to first; the heads' input gradient arrives in
/// douts[heads] (loss KL part plus the sampling path), the decoder's first layer writes dz.
fn backward_layers(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    ws: &Workspace,
) -> Result<Vec<Dispatch>, GpuError> {
    let n = params.layers.len();
    let heads = c.hidden.len();
    let mut out = Vec::new();
    for i in (0..n).rev() {
        let l = &params.layers[i];
        let act = activation(c, i, n);
        if act != Activation::Identity {
            out.push(act_backward(gpu, &ws.outs[i], &ws.douts[i], act)?);
        }
        let d_input = match i {
            0 => None,
            i if i == heads + 1 => Some(&ws.dz),
            i => Some(&ws.douts[i - 1]),
        };
        let spec = GemmSpec {
            trans_b: true,
            ..Default::default()
        };
        out.extend(gemm_backward(
            gpu,
            input(ws, c, i),
            &params.view(&params.values, &l.weight),
            &ws.douts[i],
            d_input,
            Some(&params.view(&params.grads, &l.weight)),
            spec,
        )?);
        out.push(bias_grad(
            gpu,
            &ws.douts[i],
            &params.view(&params.grads, &l.bias),
        )?);
        if i == heads + 1 {
            // dz is complete: add the sampling path into the heads' gradient.
            out.push(crate::ops::sample::sample_backward(
                gpu,
                &ws.outs[heads],
                &ws.dz,
                &ws.eps,
                &ws.douts[heads],
            )?);
        }
    }
    Ok(out)
}

/// One step over a batch gathered from the GPU dataset: forward, loss, and when training,
/// backward and Adam.
pub struct StepProgram {
    pub ws: Workspace,
    pub gather: GatherDispatch,
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
    /// `indices` holds `count` image indices into `images`; `adam_config` = None builds an
    /// evaluation program (no backward).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        params: &Params,
        c: &ModelConfig,
        rows: usize,
        images: &GpuImages,
        indices: &wgpu::Buffer,
        count: usize,
        settings: &LossSettings,
        adam_config: Option<AdamConfig>,
        seed: u64,
    ) -> Result<StepProgram, GpuError> {
        let ws = Workspace::new(gpu, params, c, rows)?;
        let heads = ws.heads(c);
        let n = params.layers.len();
        let stream = if adam_config.is_some() {
            STREAM_TRAIN
        } else {
            STREAM_EVAL
        };
        let gather = gather(gpu, images, indices, count, &ws.x)?;
        let encoder = forward_layers(gpu, params, c, &ws, 0..heads + 1)?;
        let sample = sample_forward(
            gpu,
            &ws.outs[heads],
            &ws.z,
            &ws.eps,
            Noise {
                seed,
                step: 0,
                stream,
            },
            1.0,
        )?;
        let decoder = forward_layers(gpu, params, c, &ws, heads + 1..n)?;
        let loss = loss(
            gpu,
            &LossBuffers {
                logits: ws.logits(),
                x: &ws.x,
                mulv: &ws.outs[heads],
                dlogits: &ws.douts[n - 1],
                dmulv: &ws.douts[heads],
                per_sample: &ws.per_sample,
                accum: &ws.accum,
            },
            settings,
        )?;
        let (backward, adam) = match adam_config {
            Some(a) => (
                backward_layers(gpu, params, c, &ws)?,
                Some(adam(
                    gpu,
                    &params.values,
                    &params.grads,
                    &params.m,
                    &params.v,
                    params.len,
                    a,
                )?),
            ),
            None => (Vec::new(), None),
        };
        Ok(StepProgram {
            ws,
            gather,
            encoder,
            sample,
            decoder,
            loss,
            backward,
            adam,
            seed,
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
        if let Some(adam) = &self.adam {
            adam.set_step(gpu, step + 1);
        }
    }

    /// Records the whole step into one pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.gather.dispatch.record(pass);
        for d in &self.encoder {
            d.record(pass);
        }
        self.sample.record(pass);
        for d in &self.decoder {
            d.record(pass);
        }
        self.loss.record(pass);
        for d in &self.backward {
            d.record(pass);
        }
        if let Some(adam) = &self.adam {
            adam.dispatch.record(pass);
        }
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
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            self.record(&mut pass);
        }
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
