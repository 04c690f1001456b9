//! A stacked latent layer's KL term and its gradients (see shaders/level.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LevelParams {
    rows: u32,
    valid: u32,
    z: u32,
    ld_mulv: u32,
    ld_z: u32,
    ld_prior: u32,
    beta: f32,
    grad_scale: f32,
}

/// The matrices the launches read and write.
pub struct LevelBuffers<'a> {
    /// The layer's posterior mu | logvar [B, 2Z], its sampled code and the code's noise
    /// [B, Z], and its prior's mu | logvar [B, 2Z] (from the layer above).
    pub mulv: &'a Matrix,
    pub z: &'a Matrix,
    pub eps: &'a Matrix,
    pub prior: &'a Matrix,
    /// [B, 3] with a row stride of 4: the KL and total are added to.
    pub per_sample: &'a Matrix,
    /// The gradients written (overwritten): the code's, the posterior's and the prior's.
    pub dz: &'a Matrix,
    pub dmulv: &'a Matrix,
    pub dprior: &'a Matrix,
    /// Each row's weight in the gradients [1, B] (an importance-weighted step's normalized
    /// weights, written before `grads` runs); None: ones.
    pub row_scale: Option<&'a Matrix>,
}

/// The rows' KL launch (run before the importance weights, which read the totals) and the
/// gradients' (run after them).
pub struct LevelDispatch {
    pub rows: Dispatch,
    pub grads: Dispatch,
    params: LevelParams,
}

impl LevelDispatch {
    /// Rewrites the settings that change between steps: valid rows, beta, grad scale.
    pub fn update(&mut self, gpu: &Gpu, valid: usize, beta: f32, grad_scale: f32) {
        self.params.valid = valid.min(self.params.rows as usize) as u32;
        self.params.beta = beta;
        self.params.grad_scale = grad_scale;
        gpu.queue
            .write_buffer(&self.rows.params, 0, bytemuck::bytes_of(&self.params));
    }
}

/// Adds each row's KL of the layer (times beta to its total) and writes the gradients of
/// beta * grad scale * row scale times it.
pub fn level(gpu: &Gpu, b: &LevelBuffers<'_>) -> Result<LevelDispatch, GpuError> {
    let (rows, z) = (b.z.rows, b.z.cols);
    let pair = |m: &Matrix| m.rows == rows && m.cols == 2 * z;
    let ok = pair(b.mulv)
        && pair(b.prior)
        && b.eps.same_shape(b.z)
        && b.eps.ld == b.z.ld
        && b.dz.same_shape(b.z)
        && b.dz.ld == b.z.ld
        && b.dmulv.same_shape(b.mulv)
        && b.dmulv.ld == b.mulv.ld
        && b.dprior.same_shape(b.prior)
        && b.dprior.ld == b.prior.ld
        && b.per_sample.rows == rows
        && b.per_sample.cols == 3
        && b.per_sample.ld == 4
        && b.row_scale.is_none_or(|w| w.rows * w.cols == rows);
    if !ok {
        return Err(shape_err(
            "level",
            format!(
                "mu|logvar [{}, {}], z [{rows}, {z}], prior [{}, {}], per-sample [{}, {}]",
                b.mulv.rows,
                b.mulv.cols,
                b.prior.rows,
                b.prior.cols,
                b.per_sample.rows,
                b.per_sample.cols
            ),
        ));
    }
    let ones;
    let row_scale = match b.row_scale {
        Some(w) => w,
        None => {
            ones = Matrix::from_slice(gpu, 1, rows, &vec![1.0; rows], "level row scale")?;
            &ones
        }
    };
    let params = LevelParams {
        rows: rows as u32,
        valid: rows as u32,
        z: z as u32,
        ld_mulv: b.mulv.ld as u32,
        ld_z: b.z.ld as u32,
        ld_prior: b.prior.ld as u32,
        beta: 1.0,
        grad_scale: 1.0,
    };
    let uniform = gpu.uniform("level params", &params);
    let launch =
        |entry: &'static str, bindings: &[(u32, wgpu::BindingResource<'_>)], threads: usize| {
            Ok::<_, GpuError>(gpu.dispatch(
                entry.into(),
                gpu.pipeline(Shader::Level, entry, &[])?,
                uniform.clone(),
                bindings,
                gpu.grid(threads.div_ceil(256) as u64)?,
            ))
        };
    let rows_launch = launch(
        "level_rows_main",
        &[
            (1, b.mulv.binding()),
            (2, b.z.binding()),
            (3, b.eps.binding()),
            (4, b.prior.binding()),
            (5, b.per_sample.binding()),
        ],
        rows,
    )?;
    let grads = launch(
        "level_grad_main",
        &[
            (1, b.mulv.binding()),
            (2, b.z.binding()),
            (4, b.prior.binding()),
            (6, b.dz.binding()),
            (7, b.dmulv.binding()),
            (8, b.dprior.binding()),
            (9, row_scale.binding()),
        ],
        rows * z,
    )?;
    Ok(LevelDispatch {
        rows: rows_launch,
        grads,
        params,
    })
}
