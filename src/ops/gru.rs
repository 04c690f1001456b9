//! A GRU layer over a whole sequence (shaders/gru.wgsl), PyTorch's nn.GRU with one layer:
//! the input projection of every step in one GEMM, then per step a GEMM of the previous
//! state and the fused cell; the backward through time in reverse, and the weight gradients
//! of all steps in one GEMM each after it. Everything is recorded into the caller's launch
//! list, so a whole sequence runs in one submit.
//!
//! Matrices are time-major: step t of record b is row t * batch + b. The states matrix holds
//! h0 in its first `batch` rows and h_t in rows t * batch .. (t + 1) * batch, so that the
//! states every step reads (h0 .. h_{T-1}) are one contiguous view for the weight gradient.
//! The projections gi and gh, three times as wide as the states, are held in chunks of
//! whole steps that each fit one binding (`projection_steps`): lavapipe binds 128 MiB, less than
//! MOSES's batch of 512 sequences of 57 steps takes.

use super::elementwise::bias_grad;
use super::gemm::{gemm, gemm_backward, GemmSpec, InputActivation};
use super::{shape_err, GradEpilogue};
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GruParams {
    batch: u32,
    hidden: u32,
    ld3: u32,
    ldh: u32,
    lddy: u32,
    step: u32,
    off3: u32,
    prev: u32,
    out: u32,
    offdy: u32,
    carry_in: u32,
    has_dy: u32,
}

/// Rows per step for `batch` records: the batch rounded up so that every step's rows start at
/// an offset the adapter lets a kernel bind (each step's GEMM binds its rows as a view). The
/// extra rows are records of length 0.
pub fn step_rows(gpu: &Gpu, batch: usize) -> usize {
    // Row strides are multiples of 4 floats (16 bytes).
    let align = (gpu.limits.min_storage_buffer_offset_alignment as usize / 16).max(1);
    batch.next_multiple_of(align)
}

/// The most steps of `batch` rows one chunk of a layer's projections (gi, gh, or their
/// gradients, three times as wide as its `hidden` units) holds within one binding.
pub fn projection_steps(
    gpu: &Gpu,
    batch: usize,
    hidden: usize,
    label: &str,
) -> Result<usize, GpuError> {
    let per_step = (batch * crate::gpu::round_up4(3 * hidden) * 4) as u64;
    let chunk = (gpu.binding_limit() / per_step.max(1)) as usize;
    if chunk == 0 {
        return Err(GpuError::Limit(format!(
            "{label}: one step of {batch} records and {hidden} units needs {per_step} bytes, the adapter binds at most {}",
            gpu.binding_limit()
        )));
    }
    Ok(chunk)
}

/// Zeroed projections over `steps` steps of `batch` rows in chunks of `chunk` steps (see
/// `projection_steps`; tests choose small ones).
pub fn projections_of(
    gpu: &Gpu,
    steps: usize,
    batch: usize,
    hidden: usize,
    chunk: usize,
    label: &str,
) -> Result<Vec<Matrix>, GpuError> {
    (0..steps)
        .step_by(chunk)
        .map(|t| Matrix::zeros(gpu, chunk.min(steps - t) * batch, 3 * hidden, label))
        .collect()
}

/// One GRU layer's tensors over `steps` steps of `batch` rows (see `step_rows`).
pub struct GruLayer<'a> {
    pub steps: usize,
    pub batch: usize,
    /// Inputs [steps * batch, I].
    pub x: &'a Matrix,
    /// PyTorch's weight_ih [3H, I], weight_hh [3H, H], bias_ih and bias_hh [1, 3H].
    pub w_ih: &'a Matrix,
    pub w_hh: &'a Matrix,
    pub b_ih: &'a Matrix,
    pub b_hh: &'a Matrix,
    /// Each step's input and state projections [steps * batch, 3H], kept for the backward,
    /// in chunks of whole steps (see `projection_steps`).
    pub gi: &'a [Matrix],
    pub gh: &'a [Matrix],
    /// [(steps + 1) * batch, H]: h0 (written by the caller), then each step's state.
    pub states: &'a Matrix,
    /// Each record's length (u32 per row): steps at or past it leave the state unchanged.
    pub lengths: &'a wgpu::Buffer,
}

/// Where a GRU layer's backward reads and writes.
pub struct GruGrads<'a> {
    /// Gradient of the outputs h_1 .. h_T [steps * batch, H], if they feed anything.
    pub dy: Option<&'a Matrix>,
    /// [batch, H]: on entry the gradient of the last state when `final_grad` (else ignored),
    /// on exit the gradient of h0.
    pub carry: &'a Matrix,
    pub final_grad: bool,
    /// Scratch shaped like gi and gh.
    pub dgi: &'a [Matrix],
    pub dgh: &'a [Matrix],
    /// The inputs' gradient, through its epilogue.
    pub dx: Option<(&'a Matrix, GradEpilogue<'a>)>,
    pub dw_ih: &'a Matrix,
    pub dw_hh: &'a Matrix,
    pub db_ih: &'a Matrix,
    pub db_hh: &'a Matrix,
}

impl GruLayer<'_> {
    fn hidden(&self) -> usize {
        self.w_hh.cols
    }

    fn check(&self, gpu: &Gpu) -> Result<(), GpuError> {
        let (t, b, h) = (self.steps, self.batch, self.hidden());
        let rows = t * b;
        let bad = |what: String| Err(shape_err("gru", what));
        if t == 0 || b == 0 || h == 0 {
            return bad(format!("{t} steps of {b} records, {h} units"));
        }
        if (self.w_hh.rows, self.w_ih.rows) != (3 * h, 3 * h)
            || self.b_ih.rows * self.b_ih.cols != 3 * h
            || self.b_hh.rows * self.b_hh.cols != 3 * h
            || self.x.cols != self.w_ih.cols
        {
            return bad(format!(
                "weight_ih [{}, {}], weight_hh [{}, {}] for input width {} and {h} units",
                self.w_ih.rows, self.w_ih.cols, self.w_hh.rows, self.w_hh.cols, self.x.cols
            ));
        }
        let chunk = self.gi.first().map_or(0, |m| m.rows / b);
        for (name, ms) in [("gi", self.gi), ("gh", self.gh)] {
            if !same_chunks(ms, self.gi)
                || ms.iter().map(|m| m.rows).sum::<usize>() != rows
                || chunk == 0
            {
                return bad(format!(
                    "{name} is not {t} steps of [{b}, {}] in chunks of whole steps",
                    3 * h
                ));
            }
            if ms
                .iter()
                .any(|m| m.cols != 3 * h || !m.rows.is_multiple_of(b))
            {
                return bad(format!("{name} needs {} columns", 3 * h));
            }
        }
        if (self.x.rows, self.states.rows, self.states.cols) != (rows, rows + b, h) {
            return bad(format!(
                "inputs [{}, ..] and states [{}, {}] for {t} steps of {b} records",
                self.x.rows, self.states.rows, self.states.cols
            ));
        }
        if self.lengths.size() < (b * 4) as u64 {
            return bad(format!(
                "{} bytes of lengths for {b} records",
                self.lengths.size()
            ));
        }
        if step_rows(gpu, b) != b {
            return bad(format!(
                "{b} rows per step: the adapter binds views at multiples of {} rows",
                step_rows(gpu, 1)
            ));
        }
        Ok(())
    }

    /// Steps per projection chunk.
    fn chunk(&self) -> usize {
        self.gi[0].rows / self.batch
    }

    fn params(&self, step: usize) -> GruParams {
        let b = self.batch;
        let ld3 = self.gi[0].ld;
        GruParams {
            batch: b as u32,
            hidden: self.hidden() as u32,
            ld3: ld3 as u32,
            ldh: self.states.ld as u32,
            step: step as u32,
            off3: (step % self.chunk() * b * ld3) as u32,
            prev: (step * b * self.states.ld) as u32,
            out: ((step + 1) * b * self.states.ld) as u32,
            ..GruParams::default()
        }
    }

    fn cell(
        &self,
        gpu: &Gpu,
        entry: &'static str,
        params: &GruParams,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
    ) -> Result<Dispatch, GpuError> {
        Ok(gpu.dispatch(
            format!("{entry} step {}", params.step),
            gpu.pipeline(Shader::Gru, entry, &[])?,
            gpu.uniform(entry, params),
            bindings,
            gpu.grid((self.batch * self.hidden()).div_ceil(256) as u64)?,
        ))
    }

    /// The state rows step t reads (h_{t-1}) and its state projection's rows.
    fn step_views(&self, t: usize) -> Result<(Matrix, Matrix), GpuError> {
        Ok((
            self.states.rows_view(t * self.batch, self.batch)?,
            step_rows_of(self.gh, self.chunk(), self.batch, t)?,
        ))
    }

    /// (first step, the inputs' rows, the states read) of each projection chunk.
    fn chunks(&self) -> Result<Vec<(usize, Matrix, Matrix)>, GpuError> {
        let b = self.batch;
        self.gi
            .iter()
            .scan(0, |t, m| {
                let first = *t;
                *t += m.rows / b;
                Some((first, m.rows))
            })
            .map(|(first, rows)| {
                Ok((
                    first,
                    self.x.rows_view(first * b, rows)?,
                    self.states.rows_view(first * b, rows)?,
                ))
            })
            .collect()
    }
}

/// Whether two chunked matrices have the same chunks.
fn same_chunks(a: &[Matrix], b: &[Matrix]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.same_shape(y) && x.ld == y.ld)
}

/// Step t's rows of a chunked projection.
fn step_rows_of(ms: &[Matrix], chunk: usize, batch: usize, t: usize) -> Result<Matrix, GpuError> {
    ms[t / chunk].rows_view(t % chunk * batch, batch)
}

/// Launches computing every step's state from h0 (in `states`' first rows) and `x`.
pub fn gru_forward(gpu: &Gpu, l: &GruLayer) -> Result<Vec<Dispatch>, GpuError> {
    l.check(gpu)?;
    let trans_b = GemmSpec {
        trans_b: true,
        ..GemmSpec::default()
    };
    let mut out = Vec::new();
    for ((_, x, _), gi) in l.chunks()?.iter().zip(l.gi) {
        out.push(gemm(gpu, x, l.w_ih, gi, Some(l.b_ih), trans_b)?);
    }
    for t in 0..l.steps {
        let (prev, gh) = l.step_views(t)?;
        out.push(gemm(gpu, &prev, l.w_hh, &gh, Some(l.b_hh), trans_b)?);
        let c = t / l.chunk();
        out.push(l.cell(
            gpu,
            "gru_cell_main",
            &l.params(t),
            &[
                (1, l.gi[c].binding()),
                (2, l.gh[c].binding()),
                (3, l.states.binding()),
                (4, l.lengths.as_entire_binding()),
            ],
        )?);
    }
    Ok(out)
}

/// Launches for the backward through time: every gradient of the layer given those of its
/// outputs and last state (see `GruGrads`). The weight gradients are overwritten.
pub fn gru_backward(gpu: &Gpu, l: &GruLayer, g: &GruGrads) -> Result<Vec<Dispatch>, GpuError> {
    l.check(gpu)?;
    let (b, h) = (l.batch, l.hidden());
    if !same_chunks(g.dgi, l.gi) || !same_chunks(g.dgh, l.gh) {
        return Err(shape_err(
            "gru backward",
            "d gi and d gh must be shaped like gi and gh".into(),
        ));
    }
    if (g.carry.rows, g.carry.cols, g.carry.ld) != (b, h, l.states.ld) {
        return Err(shape_err(
            "gru backward",
            format!(
                "the carried gradient is [{}, {}], needs [{b}, {h}]",
                g.carry.rows, g.carry.cols
            ),
        ));
    }
    if let Some(dy) = g.dy {
        if (dy.rows, dy.cols) != (l.steps * b, h) {
            return Err(shape_err(
                "gru backward",
                format!(
                    "output gradient [{}, {}], needs [{}, {h}]",
                    dy.rows,
                    dy.cols,
                    l.steps * b
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for t in (0..l.steps).rev() {
        let mut params = l.params(t);
        params.carry_in = u32::from(t + 1 < l.steps || g.final_grad);
        if let Some(dy) = g.dy {
            params.has_dy = 1;
            params.lddy = dy.ld as u32;
            params.offdy = (t * b * dy.ld) as u32;
        }
        let c = t / l.chunk();
        out.push(l.cell(
            gpu,
            "gru_cell_backward_main",
            &params,
            &[
                (1, l.gi[c].binding()),
                (2, l.gh[c].binding()),
                (3, l.states.binding()),
                (4, l.lengths.as_entire_binding()),
                // Without dy the kernel reads none; gi stands in for the binding.
                (5, g.dy.unwrap_or(&l.gi[c]).binding()),
                (6, g.carry.binding()),
                (7, g.dgi[c].binding()),
                (8, g.dgh[c].binding()),
            ],
        )?);
        // d h_{t-1} += d gh_t W_hh
        let dgh = step_rows_of(g.dgh, l.chunk(), b, t)?;
        let accumulate = GemmSpec {
            accumulate: true,
            ..GemmSpec::default()
        };
        out.push(gemm(gpu, &dgh, l.w_hh, g.carry, None, accumulate)?);
    }
    let trans_b = GemmSpec {
        trans_b: true,
        ..GemmSpec::default()
    };
    // The weight gradients sum over the chunks: the first writes them, each later one writes
    // scratch that is added in.
    let scratch: Vec<Matrix> = match l.gi.len() {
        1 => Vec::new(),
        _ => [l.w_ih, l.w_hh, l.b_ih, l.b_hh]
            .iter()
            .map(|m| Matrix::zeros(gpu, m.rows, m.cols, "gru weight gradient scratch"))
            .collect::<Result<_, _>>()?,
    };
    let accumulate = GradEpilogue {
        accumulate: true,
        act: None,
    };
    for (k, ((first, x, prev), (dgi, dgh))) in l
        .chunks()?
        .into_iter()
        .zip(g.dgi.iter().zip(g.dgh))
        .enumerate()
    {
        let targets = [g.dw_ih, g.dw_hh, g.db_ih, g.db_hh];
        let into: Vec<&Matrix> = if k == 0 {
            targets.to_vec()
        } else {
            scratch.iter().collect()
        };
        // The chunk's rows of dx, and of the activation output its epilogue reads.
        let dx = match g.dx {
            Some((dx, e)) => Some((
                dx.rows_view(first * b, x.rows)?,
                e.act
                    .map(|a| a.output.rows_view(first * b, x.rows))
                    .transpose()?,
                e,
            )),
            None => None,
        };
        let dx_epilogue = dx
            .as_ref()
            .map_or(GradEpilogue::default(), |(_, out, e)| GradEpilogue {
                act: e
                    .act
                    .zip(out.as_ref())
                    .map(|(a, output)| InputActivation { act: a.act, output }),
                ..*e
            });
        out.extend(gemm_backward(
            gpu,
            &x,
            l.w_ih,
            dgi,
            dx.as_ref().map(|d| &d.0),
            Some(into[0]),
            trans_b,
            dx_epilogue,
        )?);
        out.extend(gemm_backward(
            gpu,
            &prev,
            l.w_hh,
            dgh,
            None,
            Some(into[1]),
            trans_b,
            GradEpilogue::default(),
        )?);
        out.extend(bias_grad(gpu, dgi, into[2])?);
        out.extend(bias_grad(gpu, dgh, into[3])?);
        if k > 0 {
            for (s, t) in into.iter().zip(targets) {
                out.push(super::tensor::grad(gpu, s, t, None, accumulate)?);
            }
        }
    }
    Ok(out)
}
