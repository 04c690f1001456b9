//! Softmax cross-entropy launcher (see shaders/softmax.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    valid: u32,
    classes: u32,
    ld: u32,
    scale: f32,
    /// Where the rows' labels start in the label buffer.
    offset: u32,
    /// Above 1: the rows are `steps` time-major steps of rows / steps records, and row
    /// t * records + b's loss goes to b * steps + t (each record's losses side by side).
    steps: u32,
    pad: u32,
}

impl SoftmaxParams {
    /// The rows of `logits`, the first `valid` of them live, gradients scaled by `scale`.
    fn of(logits: &Matrix, valid: usize, scale: f32) -> SoftmaxParams {
        SoftmaxParams {
            rows: logits.rows as u32,
            valid: valid as u32,
            classes: logits.cols as u32,
            ld: logits.ld as u32,
            scale,
            offset: 0,
            steps: 1,
            pad: 0,
        }
    }
}

/// A softmax cross-entropy launch whose labels can move (see `set_offset`).
pub struct XentDispatch {
    pub dispatch: Dispatch,
    params: SoftmaxParams,
}

impl XentDispatch {
    /// Row r takes the label at `offset + r`: the batch's window of labels laid out in the
    /// order of the batch's indices.
    pub fn set_offset(&mut self, gpu: &Gpu, offset: usize) {
        self.params.offset = offset as u32;
        self.write(gpu);
    }

    /// Multiplies every gradient by `scale` (a mean over the tokens of a batch, whose count
    /// changes between batches).
    pub fn set_scale(&mut self, gpu: &Gpu, scale: f32) {
        self.params.scale = scale;
        self.write(gpu);
    }

    /// Reads the rows as `steps` time-major steps of a batch of sequences and writes each
    /// record's losses side by side (see `SoftmaxParams::steps`).
    pub fn per_record(&mut self, gpu: &Gpu, steps: usize) -> Result<(), GpuError> {
        if steps == 0 || !(self.params.rows as usize).is_multiple_of(steps) {
            return Err(shape_err(
                "softmax_xent",
                format!("{} rows are not {steps} steps of a batch", self.params.rows),
            ));
        }
        self.params.steps = steps as u32;
        self.write(gpu);
        Ok(())
    }

    fn write(&self, gpu: &Gpu) {
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
    }
}

/// grad = (softmax(logits) - onehot(labels)) * scale and loss[r] = cross-entropy of row r,
/// for the first `valid` rows. `labels` holds one u32 per row (from the offset, 0 until
/// moved); a label of logits.cols or more (a sequence's padding) gives that row zero loss and
/// gradient.
pub fn softmax_xent(
    gpu: &Gpu,
    logits: &Matrix,
    labels: &wgpu::Buffer,
    grad: &Matrix,
    loss: &Matrix,
    valid: usize,
    scale: f32,
) -> Result<XentDispatch, GpuError> {
    if !logits.same_shape(grad)
        || logits.ld != grad.ld
        || loss.rows * loss.cols < logits.rows
        || labels.size() < (logits.rows * 4) as u64
    {
        return Err(shape_err(
            "softmax_xent",
            format!(
                "logits [{}, {}], grad [{}, {}], {} losses",
                logits.rows,
                logits.cols,
                grad.rows,
                grad.cols,
                loss.rows * loss.cols
            ),
        ));
    }
    let params = SoftmaxParams::of(logits, valid, scale);
    let dispatch = gpu.dispatch(
        "softmax_xent".into(),
        gpu.pipeline(Shader::Softmax, "softmax_xent_main", &[])?,
        gpu.uniform("softmax params", &params),
        &[
            (1, logits.binding()),
            (2, labels.as_entire_binding()),
            (3, grad.binding()),
            (4, loss.binding()),
        ],
        gpu.grid(logits.rows.div_ceil(256) as u64)?,
    );
    Ok(XentDispatch { dispatch, params })
}

/// probs[r] = softmax(logits[r]) and lse[r] = log sum exp(logits[r]) for every row (a
/// mixture's responsibilities and per-record log-likelihoods).
pub fn softmax_rows(
    gpu: &Gpu,
    logits: &Matrix,
    probs: &Matrix,
    lse: &Matrix,
) -> Result<Dispatch, GpuError> {
    if !logits.same_shape(probs) || logits.ld != probs.ld || lse.rows * lse.cols < logits.rows {
        return Err(shape_err(
            "softmax_rows",
            format!(
                "logits [{}, {}], probs [{}, {}], {} sums",
                logits.rows,
                logits.cols,
                probs.rows,
                probs.cols,
                lse.rows * lse.cols
            ),
        ));
    }
    let params = SoftmaxParams::of(logits, logits.rows, 1.0);
    Ok(gpu.dispatch(
        "softmax_rows".into(),
        gpu.pipeline(Shader::Softmax, "softmax_rows_main", &[])?,
        gpu.uniform("softmax params", &params),
        &[
            (1, logits.binding()),
            (3, probs.binding()),
            (4, lse.binding()),
        ],
        gpu.grid(logits.rows.div_ceil(256) as u64)?,
    ))
}
