//! 2-D convolution and transposed convolution as im2col / col2im plus the GEMM kernel
//! (see shaders/conv.wgsl). Images are NHWC; columns and weights order a kernel's taps
//! (ky, kx, channel), channel fastest: Conv2d weights are [Cout, K*K*Cin] and
//! ConvTranspose2d weights [Cin, K*K*Cout] (`gpu_col` maps PyTorch's order to this).
//! Square kernels.

use super::elementwise::bias_grad;
use super::gemm::{gemm, gemm_backward, GemmSpec};
use super::{shape_err, Activation, GradEpilogue};
use crate::gpu::shaders::Shader;
use crate::gpu::texture::{Reads, TextureOperand};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Height, width, channels of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    pub fn numel(&self) -> usize {
        self.h * self.w * self.c
    }
}

/// A convolution's geometry: the image side (`image`, the conv's input or the transposed
/// conv's output) and the column side (`oh` x `ow` positions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub image: Shape,
    pub oh: usize,
    pub ow: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeom {
    /// The geometry of a convolution over `image`; errors when the kernel does not fit.
    pub fn new(
        batch: usize,
        image: Shape,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ConvGeom, GpuError> {
        let out = |n: usize| (n + 2 * pad).checked_sub(k).map(|v| v / stride + 1);
        match (out(image.h), out(image.w)) {
            (Some(oh), Some(ow)) if stride > 0 && k > 0 && batch > 0 => Ok(ConvGeom {
                batch,
                image,
                oh,
                ow,
                k,
                stride,
                pad,
            }),
            _ => Err(shape_err(
                "conv",
                format!(
                    "kernel {k}, stride {stride}, padding {pad} does not fit a {}x{} image",
                    image.h, image.w
                ),
            )),
        }
    }

    /// Output size of a transposed convolution of an `ih` x `iw` input (PyTorch's formula,
    /// no output padding).
    pub fn transposed_output(
        ih: usize,
        iw: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Option<(usize, usize)> {
        let out = |n: usize| ((n - 1) * stride + k).checked_sub(2 * pad);
        Some((out(ih)?, out(iw)?)).filter(|&(h, w)| h > 0 && w > 0 && ih > 0 && iw > 0)
    }

    pub fn col_rows(&self) -> usize {
        self.batch * self.oh * self.ow
    }

    pub fn col_cols(&self) -> usize {
        self.image.c * self.k * self.k
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    pad: u32,
    ld_b: u32,
    ld_p: u32,
    ld_cols: u32,
    slope: f32,
    padding: [u32; 3],
}

impl ConvParams {
    /// The geometry and image strides; the column stride and slope at 0.
    fn new(g: &ConvGeom, ld_b: usize, ld_p: usize) -> ConvParams {
        ConvParams {
            batch: g.batch as u32,
            h: g.image.h as u32,
            w: g.image.w as u32,
            c: g.image.c as u32,
            oh: g.oh as u32,
            ow: g.ow as u32,
            k: g.k as u32,
            stride: g.stride as u32,
            pad: g.pad as u32,
            ld_b: ld_b as u32,
            ld_p: ld_p as u32,
            ld_cols: 0,
            slope: 0.0,
            padding: [0; 3],
        }
    }
}

/// Column of a GPU weight row holding PyTorch's flattened column `torch_col`
/// (channel-major (ch, ky, kx) there, tap-major (ky, kx, ch) here) for `channels` channels
/// and `taps` = K*K.
pub fn gpu_col(torch_col: usize, channels: usize, taps: usize) -> usize {
    (torch_col % taps) * channels + torch_col / taps
}

/// (batch stride, pixel stride) of an image matrix: [B, H*W*C] or [B*H*W, C].
fn image_strides(m: &Matrix, g: &ConvGeom) -> Result<(usize, usize), GpuError> {
    image_strides_of(m, g.batch, g.image)
}

/// (batch stride, pixel stride) of a matrix holding `batch` images of shape `s`:
/// [B, H*W*C] or [B*H*W, C].
pub fn image_strides_of(m: &Matrix, batch: usize, s: Shape) -> Result<(usize, usize), GpuError> {
    if m.rows == batch && m.cols == s.numel() {
        Ok((m.ld, s.c))
    } else if m.rows == batch * s.h * s.w && m.cols == s.c {
        Ok((s.h * s.w * m.ld, m.ld))
    } else {
        Err(shape_err(
            "conv",
            format!(
                "[{}, {}] is not a batch of {} {}x{}x{} images",
                m.rows, m.cols, batch, s.h, s.w, s.c
            ),
        ))
    }
}

/// What col2im does with its sums: add a bias (or none) and apply an activation (forward),
/// or, as a gradient, add them to what the image holds and multiply by the derivative of
/// the activation whose output (shaped like the image) the convolution read.
#[derive(Clone, Copy)]
pub enum Col2imEpilogue<'a> {
    Bias(Option<&'a Matrix>, Activation),
    Grad(GradEpilogue<'a>),
}

/// Which way data moves: image to columns, or columns to image.
#[derive(Clone, Copy)]
enum Move<'a> {
    Im2col,
    Col2im(Col2imEpilogue<'a>),
}

/// The launch, its vec4 kernels reading the source (image or columns) from the buffer or
/// from a texture copy, whichever this device runs faster for this geometry (measured once
/// on the launch's own matrices, which every use overwrites anyway).
fn launch(
    gpu: &Gpu,
    g: &ConvGeom,
    image: &Matrix,
    cols: &Matrix,
    mv: Move<'_>,
) -> Result<Dispatch, GpuError> {
    let source = match mv {
        Move::Im2col => image,
        Move::Col2im(_) => cols,
    };
    if !TextureOperand::fits(gpu, source.rows * source.ld) {
        return launch_with(gpu, g, image, cols, mv, Reads::Buffers);
    }
    let kind = match mv {
        Move::Im2col => "im2col",
        Move::Col2im(_) => "col2im",
    };
    let key = format!(
        "{kind} b{} {}x{}x{} k{} s{} p{}",
        g.batch, g.image.h, g.image.w, g.image.c, g.k, g.stride, g.pad
    );
    let candidates = [Reads::Buffers, Reads::Textures];
    let reads = gpu.choose(&key, &candidates, |gpu| {
        crate::gpu::tune::time_each(gpu, &candidates, |r| {
            Ok(vec![launch_with(gpu, g, image, cols, mv, r)?])
        })
    })?;
    launch_with(gpu, g, image, cols, mv, reads)
}

fn launch_with(
    gpu: &Gpu,
    g: &ConvGeom,
    image: &Matrix,
    cols: &Matrix,
    mv: Move<'_>,
    reads: Reads,
) -> Result<Dispatch, GpuError> {
    let (ld_b, ld_p) = image_strides(image, g)?;
    if cols.rows != g.col_rows() || cols.cols != g.col_cols() {
        return Err(shape_err(
            "conv",
            format!(
                "columns [{}, {}], expected [{}, {}]",
                cols.rows,
                cols.cols,
                g.col_rows(),
                g.col_cols()
            ),
        ));
    }
    // Whole vec4 runs of channels when every stride allows it.
    let vec4 = [g.image.c, ld_b, ld_p].iter().all(|v| v.is_multiple_of(4));
    let entry = match (&mv, vec4) {
        (Move::Im2col, false) => "im2col_main",
        (Move::Im2col, true) => "im2col_vec4_main",
        (Move::Col2im(_), false) => "col2im_main",
        (Move::Col2im(_), true) => "col2im_vec4_main",
    };
    let (bias, act, grad_of, accumulate) = match mv {
        Move::Im2col => (None, Activation::Identity, None, false),
        Move::Col2im(Col2imEpilogue::Bias(bias, act)) => (bias, act, None, false),
        Move::Col2im(Col2imEpilogue::Grad(e)) => (
            None,
            e.act.map_or(Activation::Identity, |a| a.act),
            e.act.map(|a| a.output),
            e.accumulate,
        ),
    };
    if grad_of.is_some() && !act.from_output() {
        return Err(shape_err(
            "conv",
            format!("{act:?}'s derivative needs its input, not its output"),
        ));
    }
    if let Some(y) = grad_of {
        if bias.is_some() || (y.rows, y.cols, y.ld) != (image.rows, image.cols, image.ld) {
            return Err(shape_err(
                "conv",
                "the activation output must be shaped like the image, without a bias".into(),
            ));
        }
    }
    if bias.is_some_and(|b| b.rows * b.cols != g.image.c) {
        return Err(shape_err(
            "conv",
            format!("bias must have {} values", g.image.c),
        ));
    }
    act.check()?;
    let (code, slope) = act.code();
    let params = ConvParams {
        ld_cols: cols.ld as u32,
        slope,
        ..ConvParams::new(g, ld_b, ld_p)
    };
    let (source, target) = match mv {
        Move::Im2col => (image, cols),
        Move::Col2im(_) => (cols, image),
    };
    // col2im's bias, or the activation output whose derivative it multiplies by.
    let side = bias.or(grad_of);
    // The kernels read the source and the side matrix through reads_*.wgsl: bindings 16
    // and 17 (vec4 kernels) or 20 and 21 (scalar ones) for buffers, 18 and 19 for textures.
    let textured = reads == Reads::Textures;
    let texture = |m: &Matrix| TextureOperand::new(gpu, m, "conv input");
    let src_tex = textured.then(|| texture(source)).transpose()?;
    let side_tex = side.filter(|_| textured).map(texture).transpose()?;
    let [src_at, side_at] = match (textured, vec4) {
        (false, false) => [20, 21],
        (false, true) => [16, 17],
        (true, _) => [18, 19],
    };
    // Without a side matrix col2im never reads its binding; the source fills it.
    let (src_binding, side_binding) = match (&src_tex, &side_tex) {
        (Some(t), Some(side)) => (t.binding(), side.binding()),
        (Some(t), None) => (t.binding(), t.binding()),
        _ => (source.binding(), side.unwrap_or(source).binding()),
    };
    let dst = if vec4 { 5 } else { 2 };
    let mut bindings = vec![(dst, target.binding()), (src_at, src_binding)];
    if matches!(mv, Move::Col2im(_)) {
        bindings.push((side_at, side_binding));
    }
    let lanes = if vec4 { 4 } else { 1 };
    let threads = match mv {
        Move::Im2col => cols.rows * g.image.c / lanes,
        Move::Col2im(_) => g.batch * g.image.numel() / lanes,
    };
    let shader = if textured {
        Shader::ConvTex
    } else {
        Shader::Conv
    };
    let mut dispatch = gpu.dispatch(
        entry.into(),
        gpu.pipeline(
            shader,
            entry,
            &[
                ("ACT", code),
                ("ADD_BIAS", u32::from(bias.is_some())),
                ("ACT_GRAD", u32::from(grad_of.is_some())),
                ("ACCUMULATE", u32::from(accumulate)),
                ("KSIZE", g.k as u32),
                ("TAPS", g.k.div_ceil(g.stride) as u32),
            ],
        )?,
        gpu.uniform(entry, &params),
        &bindings,
        gpu.grid(threads.div_ceil(256) as u64)?,
    );
    drop(bindings);
    dispatch.textures = src_tex.into_iter().chain(side_tex).collect();
    Ok(dispatch)
}

/// The data movement of one convolution on chosen reads (tests compare both ways).
pub fn im2col_with(
    gpu: &Gpu,
    g: &ConvGeom,
    image: &Matrix,
    cols: &Matrix,
    reads: Reads,
) -> Result<Dispatch, GpuError> {
    launch_with(gpu, g, image, cols, Move::Im2col, reads)
}

/// col2im on chosen reads.
pub fn col2im_with(
    gpu: &Gpu,
    g: &ConvGeom,
    cols: &Matrix,
    image: &Matrix,
    epilogue: Col2imEpilogue<'_>,
    reads: Reads,
) -> Result<Dispatch, GpuError> {
    launch_with(gpu, g, image, cols, Move::Col2im(epilogue), reads)
}

/// cols = im2col(image).
pub fn im2col(
    gpu: &Gpu,
    g: &ConvGeom,
    image: &Matrix,
    cols: &Matrix,
) -> Result<Dispatch, GpuError> {
    launch(gpu, g, image, cols, Move::Im2col)
}

/// image = act(col2im(cols) + bias).
pub fn col2im(
    gpu: &Gpu,
    g: &ConvGeom,
    cols: &Matrix,
    image: &Matrix,
    bias: Option<&Matrix>,
    act: Activation,
) -> Result<Dispatch, GpuError> {
    let mv = Move::Col2im(Col2imEpilogue::Bias(bias, act));
    launch(gpu, g, image, cols, mv)
}

/// image = col2im(cols) through a gradient epilogue: a convolution's input gradient, added
/// to what the image holds when accumulating, times the derivative of the activation whose
/// output (shaped like the image) the convolution read.
pub fn col2im_grad(
    gpu: &Gpu,
    g: &ConvGeom,
    cols: &Matrix,
    image: &Matrix,
    e: GradEpilogue<'_>,
) -> Result<Dispatch, GpuError> {
    launch(gpu, g, image, cols, Move::Col2im(Col2imEpilogue::Grad(e)))
}

/// The matrices of one convolution layer: weight, bias, the column scratch (shared by the
/// forward and the backward) and the output.
pub struct ConvIo<'a> {
    pub geom: ConvGeom,
    pub weight: &'a Matrix,
    pub bias: &'a Matrix,
    pub cols: &'a Matrix,
}

/// y [B*OH*OW, Cout] = act(im2col(x) W^T + b).
pub fn conv2d(
    gpu: &Gpu,
    io: &ConvIo<'_>,
    x: &Matrix,
    y: &Matrix,
    act: Activation,
) -> Result<Vec<Dispatch>, GpuError> {
    let spec = GemmSpec {
        trans_b: true,
        act,
        ..Default::default()
    };
    Ok(vec![
        im2col(gpu, &io.geom, x, io.cols)?,
        gemm(gpu, io.cols, io.weight, y, Some(io.bias), spec)?,
    ])
}

/// Gradients of conv2d given dy (already multiplied by the activation's derivative):
/// dW, db, and dx when asked (dcols is scratch shaped like the columns), through the
/// epilogue `dx_epilogue`.
pub fn conv2d_backward(
    gpu: &Gpu,
    io: &ConvIo<'_>,
    dy: &Matrix,
    grads: (&Matrix, &Matrix),
    dx: Option<(&Matrix, &Matrix)>,
    dx_epilogue: GradEpilogue<'_>,
) -> Result<Vec<Dispatch>, GpuError> {
    let (dw, db) = grads;
    let spec = GemmSpec {
        trans_b: true,
        ..Default::default()
    };
    let mut out = gemm_backward(
        gpu,
        io.cols,
        io.weight,
        dy,
        dx.map(|(dcols, _)| dcols),
        Some(dw),
        spec,
        GradEpilogue::default(),
    )?;
    out.extend(bias_grad(gpu, dy, db)?);
    if let Some((dcols, dx)) = dx {
        out.push(col2im_grad(gpu, &io.geom, dcols, dx, dx_epilogue)?);
    }
    Ok(out)
}

/// y (image side) = act(col2im(x W) + b) for x [B*IH*IW, Cin].
pub fn conv_transpose2d(
    gpu: &Gpu,
    io: &ConvIo<'_>,
    x: &Matrix,
    y: &Matrix,
    act: Activation,
) -> Result<Vec<Dispatch>, GpuError> {
    Ok(vec![
        gemm(gpu, x, io.weight, io.cols, None, GemmSpec::default())?,
        col2im(gpu, &io.geom, io.cols, y, Some(io.bias), act)?,
    ])
}

/// Gradients of conv_transpose2d given dy (image side, already through the activation):
/// dW, db, and dx when asked, through `dx_epilogue`. `dy_rows` is dy viewed as
/// [B*H*W, Cout] for the bias sum.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward(
    gpu: &Gpu,
    io: &ConvIo<'_>,
    x: &Matrix,
    dy: &Matrix,
    dcols: &Matrix,
    grads: (&Matrix, &Matrix),
    dx: Option<&Matrix>,
    dx_epilogue: GradEpilogue<'_>,
) -> Result<Vec<Dispatch>, GpuError> {
    let (dw, db) = grads;
    let g = &io.geom;
    let (ld_b, ld_p) = image_strides(dy, g)?;
    if ld_b != g.image.h * g.image.w * ld_p {
        return Err(shape_err(
            "conv_transpose2d_backward",
            "dy's rows are padded; its per-channel sum needs a contiguous image".into(),
        ));
    }
    let dy_rows = Matrix {
        rows: g.batch * g.image.h * g.image.w,
        cols: g.image.c,
        ld: ld_p,
        ..dy.clone()
    };
    let mut out = vec![im2col(gpu, g, dy, dcols)?];
    out.extend(gemm_backward(
        gpu,
        x,
        io.weight,
        dcols,
        dx,
        Some(dw),
        GemmSpec::default(),
        dx_epilogue,
    )?);
    out.extend(bias_grad(gpu, &dy_rows, db)?);
    Ok(out)
}

/// Whether `conv2d_implicit` runs on this device and layout: the subgroup GEMM, channels and
/// image strides in multiples of 4.
pub fn implicit_fits(gpu: &Gpu, g: &ConvGeom, (ld_b, ld_p): (usize, usize)) -> bool {
    gpu.gemm_paths().contains(&crate::gpu::GemmPath::Subgroup)
        && [g.image.c, ld_b, ld_p].iter().all(|v| v.is_multiple_of(4))
}

/// conv2d without the column matrix: the subgroup GEMM reads im2col(x) in place. Measured
/// on lavapipe (conv2 of the conv VAE, batch 128) about 20% faster than im2col + GEMM, so
/// inference uses it; training keeps the columns, which the weight gradient needs anyway.
/// None when the device or the layout does not allow it (see `implicit_fits`).
pub fn conv2d_implicit(
    gpu: &Gpu,
    g: &ConvGeom,
    (weight, bias): (&Matrix, &Matrix),
    x: &Matrix,
    y: &Matrix,
    act: Activation,
) -> Result<Option<Dispatch>, GpuError> {
    let (ld_b, ld_p) = image_strides(x, g)?;
    if !implicit_fits(gpu, g, (ld_b, ld_p)) {
        return Ok(None);
    }
    // The subgroup kernel declares the same struct (shaders/conv_params.wgsl).
    let params = ConvParams::new(g, ld_b, ld_p);
    let conv = gpu.uniform("implicit conv", &params);
    let spec = GemmSpec {
        act,
        ..Default::default()
    };
    super::gemm::gemm_implicit_conv(
        gpu,
        x,
        conv,
        [g.col_rows(), g.col_cols()],
        (weight, y),
        Some(bias),
        spec,
    )
    .map(Some)
}

/// The input gradient of a stride-1 convolution over `g` as a convolution itself: dx =
/// conv(dy, flipped) with the padding k - 1 - pad, the subgroup GEMM reading im2col(dy) in
/// place, through the epilogue. `flipped` is the weight with its taps reversed and its
/// channels swapped, [Cin, K*K*Cout] (see `flip_weight`). Where the columns route
/// multiplies dy [B*H*W, Cout] by the weight into K*K*Cin-wide columns (an inner dimension
/// of Cout, which the GEMM kernels run slowly) and col2im sums them, this is one launch
/// with an inner dimension of K*K*Cout. None where `implicit_fits` says no.
pub fn conv2d_input_grad(
    gpu: &Gpu,
    g: &ConvGeom,
    flipped: &Matrix,
    dy: &Matrix,
    dx: &Matrix,
    e: GradEpilogue<'_>,
) -> Result<Option<Dispatch>, GpuError> {
    let cout = flipped.cols / (g.k * g.k);
    let back = match (g.stride, g.pad < g.k) {
        (1, true) => ConvGeom::new(
            g.batch,
            Shape {
                h: g.oh,
                w: g.ow,
                c: cout,
            },
            g.k,
            1,
            g.k - 1 - g.pad,
        )?,
        _ => return Ok(None),
    };
    let (ld_b, ld_p) = image_strides(dy, &back)?;
    if !implicit_fits(gpu, &back, (ld_b, ld_p)) {
        return Ok(None);
    }
    let spec = GemmSpec {
        accumulate: e.accumulate,
        act_grad: e.act.is_some(),
        act: e.act.map_or(Activation::Identity, |a| a.act),
        ..Default::default()
    };
    let conv = gpu.uniform(
        "implicit conv input gradient",
        &ConvParams::new(&back, ld_b, ld_p),
    );
    super::gemm::gemm_implicit_conv(
        gpu,
        dy,
        conv,
        [back.col_rows(), back.col_cols()],
        (flipped, dx),
        e.act.map(|a| a.output),
        spec,
    )
    .map(Some)
}
