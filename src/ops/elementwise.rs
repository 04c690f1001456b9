//! Activation forward/backward and the bias gradient.

use super::{shape_err, Activation};
use crate::gpu::shaders::Shader;
use crate::gpu::texture::{Reads, TextureOperand};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EwParams {
    rows: u32,
    cols: u32,
    ld: u32,
    slope: f32,
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
        slope,
    };
    let pipeline = gpu.pipeline(Shader::Elementwise, entry, &[("ACT", code)])?;
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

/// Rows summed per invocation of the first bias-gradient launch (ROWS in
/// shaders/bias_grad.wgsl).
const BIAS_ROWS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasParams {
    rows: u32,
    cols: u32,
    width: u32,
    chunks: u32,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// db[n] = sum over rows of dy[r, n] (db holds dy.cols values): two launches, reading dy
/// from its buffer or a texture copy, whichever this device runs faster (measured once per
/// device and shape).
pub fn bias_grad(gpu: &Gpu, dy: &Matrix, db: &Matrix) -> Result<Vec<Dispatch>, GpuError> {
    let candidates = Reads::candidates(gpu, dy.rows * dy.ld);
    let key = format!("bias_grad {}x{}", dy.rows, dy.cols);
    let reads = gpu.choose(&key, candidates, |gpu| {
        let dy = Matrix::zeros(gpu, dy.rows, dy.cols, "bias scratch dy")?;
        let db = Matrix::zeros(gpu, 1, dy.cols, "bias scratch db")?;
        crate::gpu::tune::time_each(gpu, candidates, |r| bias_grad_with(gpu, r, &dy, &db))
    })?;
    bias_grad_with(gpu, reads, dy, db)
}

/// The bias gradient on chosen reads (tests compare both).
pub fn bias_grad_with(
    gpu: &Gpu,
    reads: Reads,
    dy: &Matrix,
    db: &Matrix,
) -> Result<Vec<Dispatch>, GpuError> {
    if db.rows * db.cols != dy.cols {
        return Err(shape_err(
            "bias_grad",
            format!("{} bias values for {} columns", db.rows * db.cols, dy.cols),
        ));
    }
    // dy as rows of `width` floats: its own padded rows, or whole unpadded rows run together
    // into widths of a multiple of 4 (see shaders/bias_grad.wgsl).
    let (rows, width) = if dy.ld.is_multiple_of(4) {
        (dy.rows, dy.ld)
    } else {
        let width = dy.cols * 4 / gcd(dy.cols, 4);
        let total = dy.rows * dy.cols;
        if dy.ld != dy.cols || !total.is_multiple_of(width) {
            return Err(shape_err(
                "bias_grad",
                format!(
                    "[{}, {}] with row stride {} is neither padded to 4 nor whole in runs of {width}",
                    dy.rows, dy.cols, dy.ld
                ),
            ));
        }
        (total / width, width)
    };
    let params = BiasParams {
        rows: rows as u32,
        cols: dy.cols as u32,
        width: width as u32,
        chunks: rows.div_ceil(BIAS_ROWS) as u32,
    };
    let cols4 = width / 4;
    let partial = Matrix::zeros(gpu, params.chunks as usize, width, "bias partial sums")?;
    let uniform = gpu.uniform("bias_grad params", &params);
    let view = Matrix {
        rows,
        cols: width,
        ld: width,
        ..dy.clone()
    };
    let (shader, textures) = match reads {
        Reads::Buffers => (Shader::BiasGrad, Vec::new()),
        Reads::Textures => (
            Shader::BiasGradTex,
            vec![TextureOperand::new(gpu, &view, "bias_grad dy")?],
        ),
    };
    let input = match textures.first() {
        Some(t) => (18, t.binding()),
        None => (16, view.binding()),
    };
    let mut sums = gpu.dispatch(
        "bias_grad partial".into(),
        gpu.pipeline(shader, "bias_partial_main", &[])?,
        uniform.clone(),
        &[input, (1, partial.binding())],
        gpu.grid((params.chunks as usize * cols4).div_ceil(256) as u64)?,
    );
    sums.textures = textures;
    let total = gpu.dispatch(
        "bias_grad sum".into(),
        gpu.pipeline(shader, "bias_sum_main", &[])?,
        uniform,
        &[(3, partial.binding()), (2, db.binding())],
        gpu.grid(dy.cols.div_ceil(256) as u64)?,
    );
    Ok(vec![sums, total])
}
