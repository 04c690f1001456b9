//! A GRU layer over a whole sequence (shaders/gru.wgsl), PyTorch's nn.GRU with one layer:
//! the input projection of every step in one GEMM, then per step a GEMM of the previous
//! state and the fused cell; the backward through time in reverse, and the weight gradients
//! of all steps in one GEMM each after it. Everything is recorded into the caller's launch
//! list, so a whole sequence runs in one submit.
//!
//! Matrices are time-major: step t of record b is row t * batch + b. The states matrix holds
//! h0 in its first `batch` rows and h_t in rows t * batch .. (t + 1) * batch, so that the
//! states every step reads (h0 .. h_{T-1}) are one contiguous view for the weight gradient.

use super::elementwise::bias_grad;
use super::gemm::{gemm, gemm_backward, GemmSpec};
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
    /// Each step's input and state projections [steps * batch, 3H], kept for the backward.
    pub gi: &'a Matrix,
    pub gh: &'a Matrix,
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
    pub dgi: &'a Matrix,
    pub dgh: &'a Matrix,
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
        for (name, m, cols) in [("gi", self.gi, 3 * h), ("gh", self.gh, 3 * h)] {
            if (m.rows, m.cols) != (rows, cols) {
                return bad(format!(
                    "{name} is [{}, {}], needs [{rows}, {cols}]",
                    m.rows, m.cols
                ));
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

    fn params(&self, step: usize) -> GruParams {
        let b = self.batch;
        GruParams {
            batch: b as u32,
            hidden: self.hidden() as u32,
            ld3: self.gi.ld as u32,
            ldh: self.states.ld as u32,
            step: step as u32,
            off3: (step * b * self.gi.ld) as u32,
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

    /// The state rows step t reads (h_{t-1}) and its projections' rows.
    fn step_views(&self, t: usize) -> Result<(Matrix, Matrix), GpuError> {
        Ok((
            self.states.rows_view(t * self.batch, self.batch)?,
            self.gh.rows_view(t * self.batch, self.batch)?,
        ))
    }
}

/// Launches computing every step's state from h0 (in `states`' first rows) and `x`.
pub fn gru_forward(gpu: &Gpu, l: &GruLayer) -> Result<Vec<Dispatch>, GpuError> {
    l.check(gpu)?;
    let trans_b = GemmSpec {
        trans_b: true,
        ..GemmSpec::default()
    };
    let mut out = vec![gemm(gpu, l.x, l.w_ih, l.gi, Some(l.b_ih), trans_b)?];
    for t in 0..l.steps {
        let (prev, gh) = l.step_views(t)?;
        out.push(gemm(gpu, &prev, l.w_hh, &gh, Some(l.b_hh), trans_b)?);
        out.push(l.cell(
            gpu,
            "gru_cell_main",
            &l.params(t),
            &[
                (1, l.gi.binding()),
                (2, l.gh.binding()),
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
    if !g.dgi.same_shape(l.gi)
        || g.dgi.ld != l.gi.ld
        || !g.dgh.same_shape(l.gh)
        || g.dgh.ld != l.gh.ld
    {
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
        out.push(l.cell(
            gpu,
            "gru_cell_backward_main",
            &params,
            &[
                (1, l.gi.binding()),
                (2, l.gh.binding()),
                (3, l.states.binding()),
                (4, l.lengths.as_entire_binding()),
                // Without dy the kernel reads none; gi stands in for the binding.
                (5, g.dy.unwrap_or(l.gi).binding()),
                (6, g.carry.binding()),
                (7, g.dgi.binding()),
                (8, g.dgh.binding()),
            ],
        )?);
        // d h_{t-1} += d gh_t W_hh
        let dgh = g.dgh.rows_view(t * b, b)?;
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
    let (dx, epilogue) = match g.dx {
        Some((dx, e)) => (Some(dx), e),
        None => (None, GradEpilogue::default()),
    };
    out.extend(gemm_backward(
        gpu,
        l.x,
        l.w_ih,
        g.dgi,
        dx,
        Some(g.dw_ih),
        trans_b,
        epilogue,
    )?);
    let prev = l.states.rows_view(0, l.steps * b)?;
    out.extend(gemm_backward(
        gpu,
        &prev,
        l.w_hh,
        g.dgh,
        None,
        Some(g.dw_hh),
        trans_b,
        GradEpilogue::default(),
    )?);
    out.extend(bias_grad(gpu, g.dgi, g.db_ih)?);
    out.extend(bias_grad(gpu, g.dgh, g.db_hh)?);
    Ok(out)
}
