//! Gradient-norm clipping over one flat gradient buffer (shaders/clip.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Partial sums of squares: enough invocations to fill a CPU driver's threads, few enough
/// for one workgroup to add them.
const PARTS: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    len4: u32,
    parts: u32,
    max_norm: f32,
    pad: u32,
}

/// The three clipping launches, and [factor, norm] as they leave it.
pub struct ClipDispatch {
    pub launches: [Dispatch; 3],
    /// [1, 2]: the factor the gradients were multiplied by, and their norm before.
    pub factor: Matrix,
}

/// Launches scaling the first `len` floats (a multiple of 4) of `grads` to a 2-norm of at
/// most `max_norm` (PyTorch's clip_grad_norm_, with its 1e-6).
pub fn clip_grad_norm(
    gpu: &Gpu,
    grads: &wgpu::Buffer,
    len: usize,
    max_norm: f32,
) -> Result<ClipDispatch, GpuError> {
    if !len.is_multiple_of(4)
        || grads.size() < (len * 4) as u64
        || max_norm.is_nan()
        || max_norm <= 0.0
    {
        return Err(shape_err(
            "clip_grad_norm",
            format!("{len} values (a multiple of 4 within the buffer), max norm {max_norm}"),
        ));
    }
    let parts = PARTS.min(len / 4).max(1);
    let params = ClipParams {
        len4: (len / 4) as u32,
        parts: parts as u32,
        max_norm,
        pad: 0,
    };
    let uniform = gpu.uniform("clip params", &params);
    let partial = Matrix::zeros(gpu, 1, parts, "clip partial sums")?;
    let factor = Matrix::zeros(gpu, 1, 2, "clip factor")?;
    let launch =
        |entry: &'static str, groups: u64, bindings: &[(u32, wgpu::BindingResource<'_>)]| {
            Ok::<_, GpuError>(gpu.dispatch(
                entry.into(),
                gpu.pipeline(Shader::Clip, entry, &[])?,
                uniform.clone(),
                bindings,
                gpu.grid(groups)?,
            ))
        };
    let launches = [
        launch(
            "clip_partial_main",
            parts.div_ceil(256) as u64,
            &[(1, grads.as_entire_binding()), (2, partial.binding())],
        )?,
        launch(
            "clip_factor_main",
            1,
            &[(2, partial.binding()), (3, factor.binding())],
        )?,
        launch(
            "clip_apply_main",
            (len / 4).div_ceil(256) as u64,
            &[(1, grads.as_entire_binding()), (3, factor.binding())],
        )?,
    ];
    Ok(ClipDispatch { launches, factor })
}
