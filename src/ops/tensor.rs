//! The model graph's structural and elementwise ops (shaders/tensor.wgsl): residual add, a
//! standalone activation, gradient copies that sum contributions, channel copies for
//! concatenation, nearest x2 upsampling.

use super::conv::Shape;
use super::{shape_err, Activation, GradEpilogue};
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct TensorParams {
    n: u32,
    ld: u32,
    cols: u32,
    hw: u32,
    w: u32,
    c: u32,
    src_b: u32,
    src_p: u32,
    src_off: u32,
    dst_b: u32,
    dst_p: u32,
    dst_off: u32,
    slope: f32,
    in_slope: f32,
    pad: [u32; 2],
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    constants: &[(&'static str, u32)],
    params: &TensorParams,
    bindings: &[(u32, wgpu::BindingResource<'_>)],
) -> Result<Dispatch, GpuError> {
    Ok(gpu.dispatch(
        format!("{entry} {}", params.n),
        gpu.pipeline(Shader::Tensor, entry, constants)?,
        gpu.uniform(entry, params),
        bindings,
        gpu.grid(u64::from(params.n).div_ceil(256))?,
    ))
}

fn same(op: &str, a: &Matrix, b: &Matrix) -> Result<(), GpuError> {
    if (a.rows, a.cols, a.ld) != (b.rows, b.cols, b.ld) {
        return Err(shape_err(
            op,
            format!(
                "[{}, {}] (stride {}) vs [{}, {}] (stride {})",
                a.rows, a.cols, a.ld, b.rows, b.cols, b.ld
            ),
        ));
    }
    Ok(())
}

/// vec4s a flat kernel covers: every row with its padding.
fn flat4(m: &Matrix) -> u32 {
    (m.rows * m.ld / 4) as u32
}

/// y = a + b (all three shaped alike).
pub fn add(gpu: &Gpu, a: &Matrix, b: &Matrix, y: &Matrix) -> Result<Dispatch, GpuError> {
    same("add", a, b)?;
    same("add", a, y)?;
    let params = TensorParams {
        n: flat4(y),
        ..Default::default()
    };
    launch(
        gpu,
        "add_main",
        &[],
        &params,
        &[(5, a.binding()), (8, b.binding()), (6, y.binding())],
    )
}

/// y = act(x).
pub fn act(gpu: &Gpu, x: &Matrix, y: &Matrix, act: Activation) -> Result<Dispatch, GpuError> {
    same("act", x, y)?;
    act.check()?;
    let params = TensorParams {
        n: flat4(y),
        ld: y.ld as u32,
        cols: y.cols as u32,
        slope: act.code().1,
        ..Default::default()
    };
    launch(
        gpu,
        "act_main",
        &[("ACT", act.code().0)],
        &params,
        &[(5, x.binding()), (6, y.binding())],
    )
}

/// dx = dy (times act'(x) for an activation `through` = (act, x), its input), then the
/// epilogue: the gradient of a residual add's inputs, or of a standalone activation's.
pub fn grad(
    gpu: &Gpu,
    dy: &Matrix,
    dx: &Matrix,
    through: Option<(Activation, &Matrix)>,
    epilogue: GradEpilogue<'_>,
) -> Result<Dispatch, GpuError> {
    same("grad", dy, dx)?;
    let (act, x) = through.unwrap_or((Activation::Identity, dy));
    same("grad", x, dx)?;
    act.check()?;
    let (ep, in_slope) = epilogue.constants(dx)?;
    let params = TensorParams {
        n: flat4(dx),
        slope: act.code().1,
        in_slope,
        ..Default::default()
    };
    let side = match epilogue.act {
        Some(a) => a.output.binding(),
        None => gpu.dummy.as_entire_binding(),
    };
    let mut constants = vec![("ACT", act.code().0)];
    constants.extend(ep);
    launch(
        gpu,
        "grad_main",
        &constants,
        &params,
        &[
            (5, dy.binding()),
            (8, x.binding()),
            (6, dx.binding()),
            (7, side),
        ],
    )
}

/// An image batch held in a matrix: its shape, and its batch and pixel strides (floats).
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    pub m: &'a Matrix,
    pub batch: usize,
    pub shape: Shape,
}

impl ImageView<'_> {
    /// (batch stride, pixel stride): [B, H*W*C] or [B*H*W, C].
    fn strides(&self) -> Result<(usize, usize), GpuError> {
        super::conv::image_strides_of(self.m, self.batch, self.shape)
    }
}

/// dst's channels `dst_off..dst_off + src.c` = src's channels `src_off..src_off + c`
/// (c = the narrower image's channels), then the epilogue: an input of a concatenation
/// copied into its channel range (forward), or that range's gradient copied back. A flat
/// src (1 x 1) is copied to every pixel of dst (a condition concatenated to an image).
pub fn copy_channels(
    gpu: &Gpu,
    src: ImageView<'_>,
    src_off: usize,
    dst: ImageView<'_>,
    dst_off: usize,
    epilogue: GradEpilogue<'_>,
) -> Result<Dispatch, GpuError> {
    let c = src.shape.c.min(dst.shape.c);
    let broadcast = (src.shape.h, src.shape.w) == (1, 1);
    let fits = src.batch == dst.batch
        && (broadcast || (src.shape.h, src.shape.w) == (dst.shape.h, dst.shape.w))
        && src_off + c <= src.shape.c
        && dst_off + c <= dst.shape.c;
    if !fits {
        return Err(shape_err(
            "copy_channels",
            format!(
                "{c} channels from {:?} at {src_off} to {:?} at {dst_off}",
                src.shape, dst.shape
            ),
        ));
    }
    let (src_b, src_p) = src.strides()?;
    let src_p = if broadcast { 0 } else { src_p };
    let (dst_b, dst_p) = dst.strides()?;
    let (ep, in_slope) = epilogue.constants(dst.m)?;
    let hw = dst.shape.h * dst.shape.w;
    let params = TensorParams {
        n: (src.batch * hw * c) as u32,
        hw: hw as u32,
        c: c as u32,
        src_b: src_b as u32,
        src_p: src_p as u32,
        src_off: src_off as u32,
        dst_b: dst_b as u32,
        dst_p: dst_p as u32,
        dst_off: dst_off as u32,
        in_slope,
        ..Default::default()
    };
    let side = match epilogue.act {
        Some(a) => a.output.binding(),
        None => gpu.dummy.as_entire_binding(),
    };
    launch(
        gpu,
        "copy_channels_main",
        &ep,
        &params,
        &[(1, src.m.binding()), (2, dst.m.binding()), (3, side)],
    )
}

/// Checks a dense [B * H * W, C] image with C a multiple of 4.
fn dense(op: &str, m: &Matrix, batch: usize, s: Shape) -> Result<(), GpuError> {
    if !s.c.is_multiple_of(4) || (m.rows, m.cols, m.ld) != (batch * s.h * s.w, s.c, s.c) {
        return Err(shape_err(
            op,
            format!(
                "[{}, {}] (stride {}) is not a dense batch of {batch} {}x{}x{} images with channels in multiples of 4",
                m.rows, m.cols, m.ld, s.h, s.w, s.c
            ),
        ));
    }
    Ok(())
}

/// y = nearest x2 upsampling of x, a batch of `s` images.
pub fn upsample(
    gpu: &Gpu,
    x: &Matrix,
    y: &Matrix,
    batch: usize,
    s: Shape,
) -> Result<Dispatch, GpuError> {
    let big = Shape {
        h: 2 * s.h,
        w: 2 * s.w,
        c: s.c,
    };
    dense("upsample", x, batch, s)?;
    dense("upsample", y, batch, big)?;
    let params = TensorParams {
        n: (batch * big.h * big.w * s.c / 4) as u32,
        w: big.w as u32,
        c: (s.c / 4) as u32,
        ..Default::default()
    };
    launch(
        gpu,
        "upsample_main",
        &[],
        &params,
        &[(5, x.binding()), (6, y.binding())],
    )
}

/// dx = the gradient of `upsample` (each input pixel's four copies summed), then the
/// epilogue; x is a batch of `s` images.
pub fn upsample_grad(
    gpu: &Gpu,
    dy: &Matrix,
    dx: &Matrix,
    batch: usize,
    s: Shape,
    epilogue: GradEpilogue<'_>,
) -> Result<Dispatch, GpuError> {
    let big = Shape {
        h: 2 * s.h,
        w: 2 * s.w,
        c: s.c,
    };
    dense("upsample_grad", dx, batch, s)?;
    dense("upsample_grad", dy, batch, big)?;
    let (ep, in_slope) = epilogue.constants(dx)?;
    let params = TensorParams {
        n: (batch * s.h * s.w * s.c / 4) as u32,
        w: s.w as u32,
        c: (s.c / 4) as u32,
        in_slope,
        ..Default::default()
    };
    let side = match epilogue.act {
        Some(a) => a.output.binding(),
        None => gpu.dummy.as_entire_binding(),
    };
    launch(
        gpu,
        "upsample_grad_main",
        &ep,
        &params,
        &[(5, dy.binding()), (6, dx.binding()), (7, side)],
    )
}

/// A convolution's weight `w` [Cout, K*K*Cin] as the weight of the convolution that gives
/// its input gradient, `flipped` [Cin, K*K*Cout] with the taps reversed (see
/// `conv::conv2d_input_grad`).
pub fn flip_taps(gpu: &Gpu, w: &Matrix, flipped: &Matrix, k: usize) -> Result<Dispatch, GpuError> {
    let taps = k * k;
    let (cout, cin) = (w.rows, w.cols / taps.max(1));
    if taps == 0 || cin * taps != w.cols || (flipped.rows, flipped.cols) != (cin, taps * cout) {
        return Err(shape_err(
            "flip_taps",
            format!(
                "weight [{}, {}] and [{}, {}] for a kernel of {k}",
                w.rows, w.cols, flipped.rows, flipped.cols
            ),
        ));
    }
    let params = TensorParams {
        n: (cout * taps * cin) as u32,
        hw: taps as u32,
        c: cin as u32,
        w: cout as u32,
        src_b: w.ld as u32,
        dst_b: flipped.ld as u32,
        ..Default::default()
    };
    launch(
        gpu,
        "flip_taps_main",
        &[],
        &params,
        &[(1, w.binding()), (2, flipped.binding())],
    )
}
