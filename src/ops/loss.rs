//! Fused reconstruction + KL loss launcher (see shaders/loss.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// The decoder's likelihood p(x | z).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// Bernoulli on logits: binary cross-entropy, for pixels in [0, 1].
    #[default]
    Bernoulli,
    /// Gaussian with a fixed variance around the decoder output.
    Gaussian,
}

/// Settings of one loss launch that may change between steps.
#[derive(Clone, Copy, Debug)]
pub struct LossSettings {
    pub likelihood: Likelihood,
    /// Weight of the KL term.
    pub beta: f32,
    /// Multiplies every gradient (1 = gradient of the batch sum, as in PyTorch's example).
    pub grad_scale: f32,
    /// Variance of the Gaussian likelihood.
    pub gauss_var: f32,
    /// Rows that are real samples; later rows are padding.
    pub valid: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    rows: u32,
    valid: u32,
    d: u32,
    z: u32,
    ld_logits: u32,
    ld_x: u32,
    ld_mulv: u32,
    likelihood: u32,
    beta: f32,
    grad_scale: f32,
    gauss_var: f32,
    pad: u32,
}

/// The matrices one loss launch reads and writes.
pub struct LossBuffers<'a> {
    pub logits: &'a Matrix,
    pub x: &'a Matrix,
    /// [B, 2Z]: mu then logvar.
    pub mulv: &'a Matrix,
    pub dlogits: &'a Matrix,
    pub dmulv: &'a Matrix,
    /// [B, 3]: reconstruction, KL, total per sample.
    pub per_sample: &'a Matrix,
    /// [1, 4]: running sums of reconstruction, KL, total and sample count.
    pub accum: &'a Matrix,
}

/// The two launches: per-sample loss and gradients, then the batch sums into `accum`.
pub struct LossDispatch {
    pub per_sample: Dispatch,
    pub reduce: Dispatch,
    params: LossParams,
}

impl LossDispatch {
    /// Rewrites the settings that change between steps (beta, valid rows).
    pub fn update(&mut self, gpu: &Gpu, s: &LossSettings) {
        self.params = params_with(self.params, s);
        // Both launches share the parameter buffer.
        gpu.queue
            .write_buffer(&self.per_sample.params, 0, bytemuck::bytes_of(&self.params));
    }
}

fn params_with(mut p: LossParams, s: &LossSettings) -> LossParams {
    p.valid = s.valid.min(p.rows as usize) as u32;
    p.likelihood = match s.likelihood {
        Likelihood::Bernoulli => 0,
        Likelihood::Gaussian => 1,
    };
    p.beta = s.beta;
    p.grad_scale = s.grad_scale;
    p.gauss_var = s.gauss_var;
    p
}

pub fn loss(gpu: &Gpu, b: &LossBuffers<'_>, s: &LossSettings) -> Result<LossDispatch, GpuError> {
    let rows = b.logits.rows;
    let ok = b.x.same_shape(b.logits)
        && b.dlogits.same_shape(b.logits)
        && b.mulv.rows == rows
        && b.mulv.cols.is_multiple_of(2)
        && b.dmulv.same_shape(b.mulv)
        && b.per_sample.rows == rows
        && b.per_sample.cols == 3
        && b.per_sample.ld == 4
        && b.accum.rows * b.accum.cols == 4;
    if !ok {
        return Err(shape_err(
            "loss",
            format!(
                "logits [{rows}, {}], x [{}, {}], mu|logvar [{}, {}], per-sample [{}, {}]",
                b.logits.cols,
                b.x.rows,
                b.x.cols,
                b.mulv.rows,
                b.mulv.cols,
                b.per_sample.rows,
                b.per_sample.cols
            ),
        ));
    }
    if !(s.gauss_var.is_finite() && s.gauss_var > 0.0) {
        return Err(shape_err(
            "loss",
            format!("Gaussian variance must be positive, got {}", s.gauss_var),
        ));
    }
    let base = LossParams {
        rows: rows as u32,
        valid: 0,
        d: b.logits.cols as u32,
        z: (b.mulv.cols / 2) as u32,
        ld_logits: b.logits.ld as u32,
        ld_x: b.x.ld as u32,
        ld_mulv: b.mulv.ld as u32,
        likelihood: 0,
        beta: 0.0,
        grad_scale: 0.0,
        gauss_var: 1.0,
        pad: 0,
    };
    let params = params_with(base, s);
    let uniform = gpu.uniform("loss params", &params);
    let per_sample = gpu.dispatch(
        "loss".into(),
        gpu.pipeline(Shader::Loss, "loss_main", &[])?,
        uniform.clone(),
        &[
            (1, b.logits.binding()),
            (2, b.x.binding()),
            (3, b.mulv.binding()),
            (4, b.dlogits.binding()),
            (5, b.dmulv.binding()),
            (6, b.per_sample.binding()),
        ],
        gpu.grid(rows as u64)?,
    );
    let reduce = gpu.dispatch(
        "loss_reduce".into(),
        gpu.pipeline(Shader::Loss, "loss_reduce_main", &[])?,
        uniform,
        &[(6, b.per_sample.binding()), (7, b.accum.binding())],
        [1, 1, 1],
    );
    Ok(LossDispatch {
        per_sample,
        reduce,
        params,
    })
}
