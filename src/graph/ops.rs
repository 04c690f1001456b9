//! Each op once: its parameters (GPU dims and initialisation), its forward launches and its
//! backward rule, given the matrices the compiler (`program`) assigned.

use super::{Graph, Node, Op};
use crate::gpu::{Dispatch, GpuError, Matrix};
use crate::ops::conv::{
    conv2d, conv2d_backward, conv2d_implicit, conv2d_input_grad, conv_transpose2d,
    conv_transpose2d_backward, ConvGeom, ConvIo, Shape,
};
use crate::ops::elementwise::bias_grad;
use crate::ops::gemm::{gemm, gemm_backward, GemmSpec, InputActivation};
use crate::ops::gru::{gru_backward, gru_forward, GruGrads, GruLayer};
use crate::ops::norm::{group_norm, group_norm_backward, NormGeom};
use crate::ops::sample::{sample_backward, sample_forward, Noise};
use crate::ops::sequence::{embed, embed_grad, repeat, repeat_grad};
use crate::ops::tensor::{self, ImageView};
use crate::ops::GradEpilogue;

use super::program::Ctx;

/// How a parameter starts.
#[derive(Clone, Copy, Debug)]
pub enum ParamInit {
    Uniform(f64),
    Const(f32),
    /// One-hot rows where the table is square (MOSES's embedding as wide as its
    /// vocabulary), else N(0, 1) (nn.Embedding's own).
    Embedding,
}

/// A stride-1 convolution to a channel count that is not a multiple of 4 (a decoder's last
/// layer, to 1 or 3 channels) runs as its transposed twin, with its taps flipped and the
/// padding k - 1 - pad: a GEMM on the input's [B*h*w, Cin] rows and col2im, which writes
/// any channel count, where im2col + GEMM would need the output rows padded to 4.
pub fn flipped(g: &Graph, n: &Node) -> bool {
    matches!(n.op, Op::Conv { stride: 1, .. }) && !g.shapes[n.output].c.is_multiple_of(4)
}

/// The (rows, cols) of a node's weight and bias as GPU matrices (empty without parameters):
/// Linear [out, in]; Conv2d [Cout, K*K*Cin]; ConvTranspose2d (and a flipped Conv2d)
/// [Cin, K*K*Cout]; GroupNorm [1, C] twice; an embedding [vocab, width]; a GRU PyTorch's
/// weight_ih [3H, I], weight_hh [3H, H], bias_ih and bias_hh [1, 3H].
pub fn param_dims(g: &Graph, n: &Node) -> Vec<(usize, usize)> {
    let (i, o) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    match n.op {
        Op::Linear { .. } => vec![(o.numel(), i.numel()), (1, o.numel())],
        Op::Conv { k, .. } if !flipped(g, n) => vec![(o.c, k * k * i.c), (1, o.c)],
        Op::Conv { k, .. } | Op::ConvT { k, .. } => vec![(i.c, k * k * o.c), (1, o.c)],
        Op::GroupNorm { .. } => vec![(1, o.c), (1, o.c)],
        Op::Embed { vocab } => vec![(vocab, o.c)],
        Op::Gru { .. } => vec![(3 * o.c, i.c), (3 * o.c, o.c), (1, 3 * o.c), (1, 3 * o.c)],
        _ => Vec::new(),
    }
}

/// The checkpoint names of a node's parameters, as `param_dims` orders them (a Linear
/// stored as several PyTorch layers is split further, see `params`).
pub fn param_names(n: &Node) -> Vec<String> {
    let name = &n.name;
    match n.op {
        Op::Embed { .. } => vec![format!("{name}.weight")],
        Op::Gru { layer, .. } => ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
            .iter()
            .map(|what| format!("{name}.{what}_l{layer}"))
            .collect(),
        op if op.has_params() => vec![format!("{name}.weight"), format!("{name}.bias")],
        _ => Vec::new(),
    }
}

/// How each parameter starts: PyTorch's default, uniform in +-1/sqrt(fan_in), with its
/// fan_in (a ConvTranspose2d's is Cout*K*K, from its weight's second dimension; a GRU's is
/// its hidden size); GroupNorm's scale 1 and shift 0; an embedding's see `ParamInit`.
pub fn init(g: &Graph, n: &Node) -> Vec<ParamInit> {
    let (i, o) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    let fan_in = match n.op {
        Op::Linear { .. } => i.numel(),
        Op::Conv { k, .. } => i.c * k * k,
        Op::ConvT { k, .. } => o.c * k * k,
        Op::Gru { .. } => o.c,
        Op::Embed { .. } => return vec![ParamInit::Embedding],
        _ => return vec![ParamInit::Const(1.0), ParamInit::Const(0.0)],
    };
    let bound = 1.0 / (fan_in as f64).sqrt();
    vec![ParamInit::Uniform(bound); param_dims(g, n).len()]
}

/// The convolution geometry of a conv node at batch `b`: over its input, or for a
/// transposed (or flipped) one over its output.
pub fn conv_geom(g: &Graph, n: &Node, b: usize) -> Result<ConvGeom, GpuError> {
    let (i, o) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    match n.op {
        Op::Conv { k, pad, .. } if flipped(g, n) => ConvGeom::new(b, o, k, 1, k - 1 - pad),
        Op::Conv { k, stride, pad, .. } => ConvGeom::new(b, i, k, stride, pad),
        Op::ConvT { k, stride, pad, .. } => ConvGeom::new(b, o, k, stride, pad),
        _ => Err(GpuError::Shape(format!("{} is not a convolution", n.label))),
    }
}

/// The (rows, cols) of a conv node's column scratch (its columns and their gradient) at
/// batch `b`.
pub fn cols_dims(g: &Graph, n: &Node, b: usize) -> Result<(usize, usize), GpuError> {
    let geom = conv_geom(g, n, b)?;
    Ok((geom.col_rows(), geom.col_cols()))
}

/// Whether a training program computes conv node `n`'s input gradient as a convolution of
/// its output gradient (`conv::conv2d_input_grad`): a plain stride-1 convolution between
/// images held as [B*h*w, C], on a device with the implicit-GEMM kernel.
pub fn implicit_input_grad(gpu: &crate::gpu::Gpu, g: &Graph, n: &Node, b: usize) -> bool {
    let (i, o) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    let Op::Conv {
        k, stride: 1, pad, ..
    } = n.op
    else {
        return false;
    };
    let held = |s: Shape| s.c.is_multiple_of(4);
    let back = ConvGeom::new(b, o, k, 1, k.saturating_sub(1 + pad));
    !flipped(g, n)
        && pad < k
        && held(i)
        && held(o)
        && back.is_ok_and(|back| {
            crate::ops::conv::implicit_fits(gpu, &back, super::Layout::of(o).strides(o))
        })
}

/// Images per chunk of a convolution whose column matrix for the whole batch `b` would be
/// more than one binding holds (`Gpu::binding_limit`): the most images whose columns fit,
/// in whole steps that start every chunk at an offset the binding alignment allows; `b`
/// itself when the batch's fit. A convolution runs its chunks one after the other in the
/// same step.
pub fn conv_chunk(gpu: &crate::gpu::Gpu, g: &Graph, n: &Node, b: usize) -> Result<usize, GpuError> {
    let limit = gpu.binding_limit();
    let one = conv_geom(g, n, 1)?;
    let per_image = (one.col_rows() * crate::gpu::round_up4(one.col_cols()) * 4) as u64;
    if b as u64 * per_image <= limit {
        return Ok(b);
    }
    // Chunks start at offsets of the input and output images that the binding alignment
    // allows: a whole number of `step` images.
    let align = u64::from(gpu.limits.min_storage_buffer_offset_alignment).max(4);
    let step = [n.inputs[0], n.output]
        .iter()
        .map(|&t| {
            let l = super::Layout::of(g.shapes[t]);
            let bytes = (l.rows * crate::gpu::round_up4(l.cols) * 4) as u64;
            (align / gcd(align, bytes)) as usize
        })
        .max()
        .unwrap_or(1);
    let fit = (limit / per_image) as usize / step * step;
    if fit == 0 {
        return Err(GpuError::Limit(format!(
            "{}: the columns of {step} images take {} MiB, over the {} MiB the adapter binds at once; use smaller images or fewer channels",
            n.label,
            (step as u64 * per_image) >> 20,
            limit >> 20
        )));
    }
    Ok(fit)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// (first image, images) of each chunk of `chunk` images of a batch of `b`.
pub fn chunks(b: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..b)
        .step_by(chunk.max(1))
        .map(move |from| (from, chunk.min(b - from)))
}

/// Images `from..from + count` of a batch of `b` held in `m` (rows per image = rows / b).
fn images(m: &Matrix, b: usize, (from, count): (usize, usize)) -> Matrix {
    let per = m.rows / b;
    Matrix {
        offset: m.offset + (from * per * m.ld * 4) as u64,
        rows: count * per,
        ..m.clone()
    }
}

/// The first `rows` rows of `m` (a chunk's part of a scratch matrix sized for the largest
/// chunk).
fn leading(m: &Matrix, rows: usize) -> Matrix {
    Matrix { rows, ..m.clone() }
}

/// `m` as [batch, features]: the view a Linear layer (a GEMM operand) needs.
fn as_rows(m: &Matrix, batch: usize) -> Result<Matrix, GpuError> {
    if m.rows == batch {
        Ok(m.clone())
    } else {
        m.reshaped(batch, m.rows * m.cols / batch)
    }
}

fn image<'a>(m: &'a Matrix, batch: usize, shape: Shape) -> ImageView<'a> {
    ImageView { m, batch, shape }
}

/// The launches of node `i`'s forward pass.
pub fn forward(cx: &Ctx<'_>, i: usize) -> Result<Vec<Dispatch>, GpuError> {
    let (g, n, gpu, b) = (cx.graph, &cx.graph.nodes[i], cx.gpu, cx.batch);
    let x = cx.value(g.inputs_of(i, cx.mode)[0]);
    let y = cx.value(n.output);
    let (si, so) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    let params = cx.params.of(&cx.params.values, i);
    let weights = || {
        params
            .as_ref()
            .ok_or_else(|| GpuError::Shape(format!("{}: no parameters", n.label)))
    };
    match n.op {
        Op::Linear { act } => {
            let (w, bias) = weights()?;
            let spec = GemmSpec {
                trans_b: true,
                act,
                ..Default::default()
            };
            // A sequence's rows are its steps: the layer acts on each.
            let rows = cx.rows(n.output);
            Ok(vec![gemm(
                gpu,
                &as_rows(x, rows)?,
                w,
                &as_rows(y, rows)?,
                Some(bias),
                spec,
            )?])
        }
        Op::Conv { act, .. } | Op::ConvT { act, .. } => {
            let (w, bias) = weights()?;
            let geom = conv_geom(g, n, b)?;
            let plain = matches!(n.op, Op::Conv { .. }) && !flipped(g, n);
            if plain && cx.inference {
                if let Some(one) = conv2d_implicit(gpu, &geom, (w, bias), x, y, act)? {
                    return Ok(vec![one]);
                }
            }
            if cx.chunk < b {
                // Each chunk's columns, written and multiplied before the next chunk's.
                let mut out = Vec::new();
                let per = conv_geom(g, n, 1)?.col_rows();
                for (j, part) in chunks(b, cx.chunk).enumerate() {
                    let io = ConvIo {
                        geom: conv_geom(g, n, part.1)?,
                        weight: w,
                        bias,
                        cols: &leading(cx.cols_of(j)?, part.1 * per),
                    };
                    let (xj, yj) = (images(x, b, part), images(y, b, part));
                    out.extend(match plain {
                        true => conv2d(gpu, &io, &xj, &yj, act)?,
                        false => conv_transpose2d(gpu, &io, &xj, &yj, act)?,
                    });
                }
                return Ok(out);
            }
            if plain {
                let io = ConvIo {
                    geom,
                    weight: w,
                    bias,
                    cols: cx.cols()?,
                };
                return conv2d(gpu, &io, x, y, act);
            }
            let io = ConvIo {
                geom,
                weight: w,
                bias,
                cols: cx.cols()?,
            };
            conv_transpose2d(gpu, &io, x, y, act)
        }
        Op::GroupNorm { groups, act } => {
            let (gamma, beta) = weights()?;
            let geom = NormGeom {
                batch: b,
                hw: si.h * si.w,
                c: si.c,
                groups,
            };
            group_norm(gpu, &geom, x, (gamma, beta), y, cx.stats()?, act)
        }
        Op::Act(act) => Ok(vec![tensor::act(gpu, x, y, act)?]),
        Op::Add => Ok(vec![tensor::add(gpu, x, cx.value(n.inputs[1]), y)?]),
        Op::Concat if g.time[n.inputs[1]] != g.time[n.inputs[0]] => {
            // A per-record tensor beside a sequence, at every step.
            let rows = cx.rows(n.output);
            Ok(vec![
                tensor::copy_channels(
                    gpu,
                    image(x, rows, si),
                    0,
                    image(y, rows, so),
                    0,
                    GradEpilogue::default(),
                )?,
                repeat(gpu, cx.value(n.inputs[1]), y, si.c)?,
            ])
        }
        Op::Concat => {
            let b = cx.rows(n.output);
            let second = g.shapes[n.inputs[1]];
            Ok(vec![
                tensor::copy_channels(
                    gpu,
                    image(x, b, si),
                    0,
                    image(y, b, so),
                    0,
                    GradEpilogue::default(),
                )?,
                tensor::copy_channels(
                    gpu,
                    image(cx.value(n.inputs[1]), b, second),
                    0,
                    image(y, b, so),
                    si.c,
                    GradEpilogue::default(),
                )?,
            ])
        }
        Op::Upsample => Ok(vec![tensor::upsample(gpu, x, y, b, si)?]),
        Op::Reshape => Ok(Vec::new()),
        Op::Sample => {
            // The noise position is set per step (see `Program::set_noise`).
            let noise = Noise {
                seed: 0,
                step: 0,
                stream: 0,
            };
            Ok(vec![sample_forward(gpu, x, y, cx.eps()?, noise, 1.0)?])
        }
        Op::Embed { .. } => {
            let table = &cx.params.all_of(&cx.params.values, i)[0];
            Ok(vec![embed(gpu, &x.buffer, 0, table, y, 0)?])
        }
        Op::Gru { .. } => {
            let w = cx.params.all_of(&cx.params.values, i);
            let (gi, gh, states) = cx.gru()?;
            let layer = gru_layer(cx, i, &w, (gi, gh, states))?;
            let mut out = Vec::new();
            if let Some(&h0) = n.inputs.get(1) {
                let first = states.rows_view(0, b)?;
                out.push(tensor::grad(
                    gpu,
                    cx.value(h0),
                    &first,
                    None,
                    GradEpilogue::default(),
                )?);
            }
            out.extend(gru_forward(gpu, &layer)?);
            Ok(out)
        }
    }
}

/// Node `i`'s GRU layer over its input, with its weights `w` (values or gradients' shapes)
/// and scratch.
fn gru_layer<'a>(
    cx: &'a Ctx<'_>,
    i: usize,
    w: &'a [Matrix],
    (gi, gh, states): (&'a [Matrix], &'a [Matrix], &'a Matrix),
) -> Result<GruLayer<'a>, GpuError> {
    let (g, n) = (cx.graph, &cx.graph.nodes[i]);
    let x = n.inputs[0];
    let time = g.time[x].ok_or_else(|| GpuError::Shape(format!("{}: not a sequence", n.label)))?;
    Ok(GruLayer {
        steps: g.steps_of(x, cx.steps),
        batch: cx.batch,
        x: cx.value(x),
        w_ih: &w[0],
        w_hh: &w[1],
        b_ih: &w[2],
        b_hh: &w[3],
        gi,
        gh,
        states,
        lengths: &cx.lengths(time).buffer,
    })
}

/// The launches of node `i`'s backward pass, given the gradient of its output (complete,
/// and already through the output's fused activation, see `program`); `targets[k]` is
/// where input k's gradient goes and how (None: no gradient wanted).
pub fn backward(
    cx: &Ctx<'_>,
    i: usize,
    targets: &[Option<(Matrix, GradEpilogue<'_>)>],
) -> Result<Vec<Dispatch>, GpuError> {
    let (g, n, gpu, b) = (cx.graph, &cx.graph.nodes[i], cx.gpu, cx.batch);
    // A reshape's gradient is its input's, in the same storage.
    if n.op == Op::Reshape {
        return Ok(Vec::new());
    }
    let x = cx.value(n.inputs[0]);
    let dy = cx.grad(n.output)?;
    let (si, so) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    let params = cx.params.of(&cx.params.values, i);
    let grads = cx.params.of(&cx.params.grads, i);
    let both = || {
        params
            .as_ref()
            .zip(grads.as_ref())
            .ok_or_else(|| GpuError::Shape(format!("{}: no parameters", n.label)))
    };
    let target = |k: usize| targets.get(k).and_then(|t| t.as_ref());
    let epilogue = |k: usize| target(k).map_or_else(GradEpilogue::default, |t| t.1);
    match n.op {
        Op::Linear { .. } => {
            let ((w, _), (dw, db)) = both()?;
            let b = cx.rows(n.output);
            let dy = as_rows(dy, b)?;
            let dx = target(0).map(|t| as_rows(&t.0, b)).transpose()?;
            // The activation output the epilogue reads, in dx's [batch, features] view too.
            let y = epilogue(0).act.map(|a| as_rows(a.output, b)).transpose()?;
            let dx_epilogue = GradEpilogue {
                act: epilogue(0)
                    .act
                    .zip(y.as_ref())
                    .map(|(a, output)| InputActivation { act: a.act, output }),
                ..epilogue(0)
            };
            let spec = GemmSpec {
                trans_b: true,
                ..Default::default()
            };
            let mut out = gemm_backward(
                gpu,
                &as_rows(x, b)?,
                w,
                &dy,
                dx.as_ref(),
                Some(dw),
                spec,
                dx_epilogue,
            )?;
            out.extend(bias_grad(gpu, &dy, db)?);
            Ok(out)
        }
        Op::Conv { .. } | Op::ConvT { .. } if cx.chunk < b => {
            let ((w, _), (dw, db)) = both()?;
            conv_backward_chunked(cx, i, (w, dw, db), dy, target(0))
        }
        Op::Conv { .. } | Op::ConvT { .. } => {
            let ((w, bias), (dw, db)) = both()?;
            let io = ConvIo {
                geom: conv_geom(g, n, b)?,
                weight: w,
                bias,
                cols: cx.cols()?,
            };
            if matches!(n.op, Op::Conv { .. }) && !flipped(g, n) {
                if let (Some((dx, e)), Some(w_flipped)) = (target(0), cx.flipped_weight()) {
                    let Op::Conv { k, .. } = n.op else {
                        unreachable!("a conv")
                    };
                    let mut out = vec![tensor::flip_taps(gpu, w, w_flipped, k)?];
                    out.extend(conv2d_backward(
                        gpu,
                        &io,
                        dy,
                        (dw, db),
                        None,
                        GradEpilogue::default(),
                    )?);
                    out.push(
                        conv2d_input_grad(gpu, &io.geom, w_flipped, dy, dx, *e)?.ok_or_else(
                            || GpuError::Shape(format!("{}: no implicit input gradient", n.label)),
                        )?,
                    );
                    return Ok(out);
                }
                let dx = match target(0) {
                    Some(t) => Some((cx.dcols()?, &t.0)),
                    None => None,
                };
                return conv2d_backward(gpu, &io, dy, (dw, db), dx, epilogue(0));
            }
            conv_transpose2d_backward(
                gpu,
                &io,
                x,
                dy,
                cx.dcols()?,
                (dw, db),
                target(0).map(|t| &t.0),
                epilogue(0),
            )
        }
        Op::GroupNorm { groups, act } => {
            let ((gamma, beta), (dgamma, dbeta)) = both()?;
            let geom = NormGeom {
                batch: b,
                hw: si.h * si.w,
                c: si.c,
                groups,
            };
            // The kernel writes dx; a GroupNorm on the batch itself has nowhere to put it.
            let spare;
            let dx = match target(0) {
                Some(t) => &t.0,
                None => {
                    spare = Matrix::zeros(gpu, x.rows, x.cols, "unused dx")?;
                    &spare
                }
            };
            group_norm_backward(
                gpu,
                &geom,
                x,
                dy,
                (gamma, beta),
                cx.stats()?,
                (dgamma, dbeta),
                dx,
                act,
                epilogue(0),
            )
        }
        Op::Act(act) => Ok(match target(0) {
            Some((dx, e)) => vec![tensor::grad(gpu, dy, dx, Some((act, x)), *e)?],
            None => Vec::new(),
        }),
        Op::Add => (0..2)
            .filter_map(|k| target(k).map(|(dx, e)| tensor::grad(gpu, dy, dx, None, *e)))
            .collect(),
        Op::Concat if g.time[n.inputs[1]] != g.time[n.inputs[0]] => {
            let rows = cx.rows(n.output);
            let mut out = Vec::new();
            if let Some((dx, e)) = target(0) {
                out.push(tensor::copy_channels(
                    gpu,
                    image(dy, rows, so),
                    0,
                    image(dx, rows, si),
                    0,
                    *e,
                )?);
            }
            if let Some((dx, e)) = target(1) {
                if e.act.is_some() {
                    return Err(GpuError::Shape(format!(
                        "{}: a per-record input beside a sequence takes its gradient without an activation",
                        n.label
                    )));
                }
                out.extend(repeat_grad(gpu, dy, si.c, dx, e.accumulate)?);
            }
            Ok(out)
        }
        Op::Concat => {
            let b = cx.rows(n.output);
            let offsets = [0, si.c];
            (0..2)
                .filter_map(|k| {
                    target(k).map(|(dx, e)| {
                        let s = g.shapes[n.inputs[k]];
                        tensor::copy_channels(
                            gpu,
                            image(dy, b, so),
                            offsets[k],
                            image(dx, b, s),
                            0,
                            *e,
                        )
                    })
                })
                .collect()
        }
        Op::Upsample => Ok(match target(0) {
            Some((dx, e)) => vec![tensor::upsample_grad(gpu, dy, dx, b, si, *e)?],
            None => Vec::new(),
        }),
        Op::Reshape => unreachable!("handled above"),
        // Adds the sampling path to mu | logvar's gradient, which the loss wrote first.
        Op::Sample => Ok(match target(0) {
            Some((dmulv, _)) => vec![sample_backward(gpu, x, dy, cx.eps()?, dmulv)?],
            None => Vec::new(),
        }),
        // The ids take no gradient; the table's adds up over the rows of each id.
        Op::Embed { .. } => {
            let dtable = &cx.params.all_of(&cx.params.grads, i)[0];
            embed_grad(gpu, &x.buffer, dy, 0, dtable, cx.accumulate_params)
        }
        Op::Gru { last, .. } => {
            let w = cx.params.all_of(&cx.params.values, i);
            let dw = cx.params.all_of(&cx.params.grads, i);
            let layer = gru_layer(cx, i, &w, cx.gru()?)?;
            let (dgi, dgh, carry) = cx.gru_grads();
            // The last state's gradient is carried back in its own buffer.
            let carry = match (last, carry) {
                (true, _) => dy,
                (false, Some(c)) => c,
                (false, None) => {
                    return Err(GpuError::Shape(format!("{}: no carry scratch", n.label)))
                }
            };
            let mut out = gru_backward(
                gpu,
                &layer,
                &GruGrads {
                    dy: (!last).then_some(dy),
                    carry,
                    final_grad: last,
                    dgi,
                    dgh,
                    dx: target(0).map(|(dx, e)| (dx, *e)),
                    dw_ih: &dw[0],
                    dw_hh: &dw[1],
                    db_ih: &dw[2],
                    db_hh: &dw[3],
                },
            )?;
            if let Some((dh0, e)) = target(1) {
                out.push(tensor::grad(gpu, carry, dh0, None, *e)?);
            }
            Ok(out)
        }
    }
}

/// The backward of a convolution run in chunks of images (see `conv_chunk`): the weight
/// gradient summed over the chunks (each adds its product), the bias gradient over the
/// whole batch, and the input gradient chunk by chunk (or, for a stride-1 convolution with
/// its flipped weight, as one convolution of the whole batch).
fn conv_backward_chunked(
    cx: &Ctx<'_>,
    i: usize,
    (w, dw, db): (&Matrix, &Matrix, &Matrix),
    dy: &Matrix,
    target: Option<&(Matrix, GradEpilogue<'_>)>,
) -> Result<Vec<Dispatch>, GpuError> {
    let (g, n, gpu, b) = (cx.graph, &cx.graph.nodes[i], cx.gpu, cx.batch);
    let x = cx.value(n.inputs[0]);
    let plain = matches!(n.op, Op::Conv { .. }) && !flipped(g, n);
    let k = match n.op {
        Op::Conv { k, .. } | Op::ConvT { k, .. } => k,
        _ => unreachable!("a convolution"),
    };
    let mut out = Vec::new();
    let implicit = plain.then(|| cx.flipped_weight()).flatten().zip(target);
    if let Some((w_flipped, _)) = implicit {
        out.push(tensor::flip_taps(gpu, w, w_flipped, k)?);
    }
    let plain_spec = |trans_a, trans_b, accumulate| GemmSpec {
        trans_a,
        trans_b,
        accumulate,
        ..Default::default()
    };
    let per = conv_geom(g, n, 1)?.col_rows();
    for (j, part) in chunks(b, cx.chunk).enumerate() {
        let geom = conv_geom(g, n, part.1)?;
        let dyj = images(dy, b, part);
        let dcols = || cx.dcols().map(|m| leading(m, part.1 * per));
        // This chunk's part of the input gradient's epilogue (the activation output is
        // the input's value, seen in the same chunk).
        let y_in = target
            .and_then(|t| t.1.act)
            .map(|a| images(a.output, b, part));
        let dx = target.map(|(dx, e)| {
            let dxj = images(dx, b, part);
            let e = GradEpilogue {
                act: e
                    .act
                    .zip(y_in.as_ref())
                    .map(|(a, output)| InputActivation { act: a.act, output }),
                ..*e
            };
            (dxj, e)
        });
        if plain {
            let cols = leading(cx.cols_of(j)?, part.1 * per);
            // dW += dy_j^T cols_j
            out.push(gemm(
                gpu,
                &dyj,
                &cols,
                dw,
                None,
                plain_spec(true, false, j > 0),
            )?);
            if let (Some((dxj, e)), None) = (&dx, implicit) {
                let dcols = dcols()?;
                out.push(gemm(
                    gpu,
                    &dyj,
                    w,
                    &dcols,
                    None,
                    plain_spec(false, false, false),
                )?);
                out.push(crate::ops::conv::col2im_grad(gpu, &geom, &dcols, dxj, *e)?);
            }
        } else {
            // A transposed convolution's columns come from its output gradient.
            let dcols = dcols()?;
            let dcols = &dcols;
            let xj = images(x, b, part);
            out.push(crate::ops::conv::im2col(gpu, &geom, &dyj, dcols)?);
            if let Some((dxj, e)) = &dx {
                // dx_j = dcols_j W^T, through the epilogue.
                let spec = GemmSpec {
                    trans_b: true,
                    accumulate: e.accumulate,
                    act_grad: e.act.is_some(),
                    act: e.act.map_or(crate::ops::Activation::Identity, |a| a.act),
                    ..Default::default()
                };
                out.push(gemm(gpu, dcols, w, dxj, e.act.map(|a| a.output), spec)?);
            }
            // dW += x_j^T dcols_j
            out.push(gemm(
                gpu,
                &xj,
                dcols,
                dw,
                None,
                plain_spec(true, false, j > 0),
            )?);
        }
    }
    // The bias gradient sums the whole batch's output gradient, as [B*h*w, Cout] rows.
    let s = g.shapes[n.output];
    let rows = Matrix {
        rows: b * s.h * s.w,
        cols: s.c,
        ld: dy.ld * dy.rows / (b * s.h * s.w),
        ..dy.clone()
    };
    out.extend(bias_grad(gpu, &rows, db)?);
    if let Some(((w_flipped, (dx, e)), g0)) = implicit.zip(Some(conv_geom(g, n, b)?)) {
        out.push(
            conv2d_input_grad(gpu, &g0, w_flipped, dy, dx, *e)?.ok_or_else(|| {
                GpuError::Shape(format!("{}: no implicit input gradient", n.label))
            })?,
        );
    }
    Ok(out)
}
