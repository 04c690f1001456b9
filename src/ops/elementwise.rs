//! Activation forward/backward and the bias gradient.

use super::{shape_err, Activation};
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EwParams {
    rows: u32,
    cols: u32,
    ld: u32,
    act: u32,
    slope: f32,
    pad: [u32; 3],
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    src: &Matrix,
    dst: &Matrix,
    act: Activation,
    threads: usize,
) -> Result<Dispatch, GpuError> {
    act.check()?;
    let (code, slope) = act.code();
    let params = EwParams {
        rows: src.rows as u32,
        cols: src.cols as u32,
        ld: src.ld as u32,
        act: code,
        slope,
        pad: [0; 3],
    };
    let pipeline = gpu.pipeline(Shader::Elementwise, entry, &[])?;
    let grid = gpu.grid(threads.div_ceil(256) as u64)?;
    // The vec4 entry points bind the same matrices as arrays of vec4.
    let (s, d) = if entry.contains("vec4") {
        (3, 4)
    } else {
        (1, 2)
    };
    Ok(gpu.dispatch(
        entry.into(),
        pipeline,
        gpu.uniform(entry, &params),
        &[(s, src.binding()), (d, dst.binding())],
        grid,
    ))
}

fn same(op: &str, x: &Matrix, y: &Matrix) -> Result<(), GpuError> {
    if !x.same_shape(y) {
        return Err(shape_err(
            op,
            format!("[{}, {}] vs [{}, {}]", x.rows, x.cols, y.rows, y.cols),
        ));
    }
    Ok(())
}

/// y = act(x); x and y have the same shape (and may not be the same matrix).
pub fn act_forward(
    gpu: &Gpu,
    x: &Matrix,
    y: &Matrix,
    act: Activation,
) -> Result<Dispatch, GpuError> {
    same("act_forward", x, y)?;
    launch(gpu, "act_forward_main", x, y, act, x.rows * x.cols)
}

/// dy *= act'(x), computed from the forward output y (in place on dy).
pub fn act_backward(
    gpu: &Gpu,
    y: &Matrix,
    dy: &Matrix,
    act: Activation,
) -> Result<Dispatch, GpuError> {
    same("act_backward", y, dy)?;
    let n = y.rows * y.cols;
    if y.ld == y.cols && dy.ld == dy.cols && n.is_multiple_of(4) {
        launch(gpu, "act_backward_vec4_main", y, dy, act, n / 4)
    } else {
        launch(gpu, "act_backward_main", y, dy, act, n)
    }
}

/// db[n] = sum over rows of dy[r, n]; db holds dy.cols values.
pub fn bias_grad(gpu: &Gpu, dy: &Matrix, db: &Matrix) -> Result<Dispatch, GpuError> {
    if db.rows * db.cols != dy.cols {
        return Err(shape_err(
            "bias_grad",
            format!("{} bias values for {} columns", db.rows * db.cols, dy.cols),
        ));
    }
    // A thread per column leaves most of the device idle when columns are few and rows
    // many (conv layers); then a workgroup shares each column.
    let tall = dy.cols < 256 && dy.rows >= 4096;
    if tall && dy.ld == dy.cols && dy.cols.is_multiple_of(4) {
        let n = dy.cols;
        launch(
            gpu,
            "bias_grad_tall_vec4_main",
            dy,
            db,
            Activation::Identity,
            n / 4 * 256,
        )
    } else if tall {
        launch(
            gpu,
            "bias_grad_tall_main",
            dy,
            db,
            Activation::Identity,
            dy.cols * 256,
        )
    } else {
        launch(gpu, "bias_grad_main", dy, db, Activation::Identity, dy.cols)
    }
}
