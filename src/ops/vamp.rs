//! The VampPrior's Monte-Carlo KL term and its gradients (see shaders/vamp.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct VampParams {
    rows: u32,
    valid: u32,
    z: u32,
    k: u32,
    ld_mulv: u32,
    ld_z: u32,
    ld_pmulv: u32,
    ld_resp: u32,
    beta: f32,
    grad_scale: f32,
    /// 1: the records' gradients keep only the path through the code (`set_pathwise`).
    pathwise: u32,
    pad: u32,
}

/// The matrices the launches read and write.
pub struct VampBuffers<'a> {
    /// The records' mu | logvar [B, 2Z], their sampled code and its noise [B, Z].
    pub mulv: &'a Matrix,
    pub z: &'a Matrix,
    pub eps: &'a Matrix,
    /// The components' mu | logvar [K, 2Z].
    pub pmulv: &'a Matrix,
    /// [B, 3] with a row stride of 4: the loss's reconstruction in, KL and total out.
    pub per_sample: &'a Matrix,
    pub dmulv: &'a Matrix,
    pub dpmulv: &'a Matrix,
    /// Each record's weight in the components' gradients [1, B] (an importance-weighted
    /// step's normalized weights, written before the components' launch); None: ones.
    pub row_scale: Option<&'a Matrix>,
}

/// The records' launches (densities, KL and totals, their gradients) and the components'
/// (their gradients).
pub struct VampDispatch {
    pub records: [Dispatch; 3],
    pub components: Dispatch,
    params: VampParams,
}

/// The most rows (records x samples) a step's KL sums over per component: llvmpipe stops a
/// loop after 65535 iterations.
pub const MAX_ROWS: usize = 32768;

impl VampDispatch {
    /// Rewrites the settings that change between steps: valid records, beta, grad scale.
    pub fn update(&mut self, gpu: &Gpu, valid: usize, beta: f32, grad_scale: f32) {
        self.params.valid = valid.min(self.params.rows as usize) as u32;
        self.params.beta = beta;
        self.params.grad_scale = grad_scale;
        gpu.queue
            .write_buffer(&self.components.params, 0, bytemuck::bytes_of(&self.params));
    }

    /// The records' gradients keep only the path through the code, with log q's own
    /// parameters held (the doubly reparameterized estimator, Tucker et al. 2019).
    pub fn set_pathwise(&mut self, gpu: &Gpu) {
        self.params.pathwise = 1;
        gpu.queue
            .write_buffer(&self.components.params, 0, bytemuck::bytes_of(&self.params));
    }

    /// Every launch: the records', then the components'.
    pub fn launches(&self) -> Vec<&Dispatch> {
        self.records.iter().chain([&self.components]).collect()
    }
}

/// Writes each record's KL (and total, beside its reconstruction) and overwrites the
/// gradients of both mu | logvar matrices (times beta and the grad scale; the components'
/// also times each record's `row_scale`).
pub fn vamp(gpu: &Gpu, b: &VampBuffers<'_>) -> Result<VampDispatch, GpuError> {
    let (rows, z, k) = (b.z.rows, b.z.cols, b.pmulv.rows);
    let ok = b.mulv.rows == rows
        && b.mulv.cols == 2 * z
        && b.eps.same_shape(b.z)
        && b.eps.ld == b.z.ld
        && b.pmulv.cols == 2 * z
        && k > 0
        && b.dmulv.same_shape(b.mulv)
        && b.dmulv.ld == b.mulv.ld
        && b.dpmulv.same_shape(b.pmulv)
        && b.dpmulv.ld == b.pmulv.ld
        && b.per_sample.rows == rows
        && b.per_sample.cols == 3
        && b.per_sample.ld == 4
        && b.row_scale.is_none_or(|w| w.rows * w.cols == rows);
    if rows > MAX_ROWS {
        return Err(GpuError::Limit(format!(
            "the VampPrior's KL takes at most {MAX_ROWS} rows per step (records x samples), and this step has {rows}; use a smaller --batch-size"
        )));
    }
    if !ok {
        return Err(shape_err(
            "vamp",
            format!(
                "mu|logvar [{}, {}], z [{rows}, {z}], components [{k}, {}], per-sample [{}, {}]",
                b.mulv.rows, b.mulv.cols, b.pmulv.cols, b.per_sample.rows, b.per_sample.cols
            ),
        ));
    }
    let resp = Matrix::zeros(gpu, rows, k, "vamp responsibilities")?;
    let ones;
    let row_scale = match b.row_scale {
        Some(w) => w,
        None => {
            ones = Matrix::from_slice(gpu, 1, rows, &vec![1.0; rows], "vamp row scale")?;
            &ones
        }
    };
    let params = VampParams {
        rows: rows as u32,
        valid: rows as u32,
        z: z as u32,
        k: k as u32,
        ld_mulv: b.mulv.ld as u32,
        ld_z: b.z.ld as u32,
        ld_pmulv: b.pmulv.ld as u32,
        ld_resp: resp.ld as u32,
        beta: 1.0,
        grad_scale: 1.0,
        pathwise: 0,
        pad: 0,
    };
    let uniform = gpu.uniform("vamp params", &params);
    let launch =
        |entry: &'static str, bindings: &[(u32, wgpu::BindingResource<'_>)], threads: usize| {
            Ok::<_, GpuError>(gpu.dispatch(
                entry.into(),
                gpu.pipeline(Shader::Vamp, entry, &[])?,
                uniform.clone(),
                bindings,
                gpu.grid(threads.div_ceil(64) as u64)?,
            ))
        };
    let records = [
        launch(
            "vamp_densities_main",
            &[
                (2, b.z.binding()),
                (4, b.pmulv.binding()),
                (5, resp.binding()),
            ],
            rows * k,
        )?,
        launch(
            "vamp_rows_main",
            &[
                (1, b.mulv.binding()),
                (3, b.eps.binding()),
                (5, resp.binding()),
                (6, b.per_sample.binding()),
            ],
            rows,
        )?,
        launch(
            "vamp_record_grad_main",
            &[
                (1, b.mulv.binding()),
                (2, b.z.binding()),
                (3, b.eps.binding()),
                (4, b.pmulv.binding()),
                (5, resp.binding()),
                (7, b.dmulv.binding()),
            ],
            rows * z,
        )?,
    ];
    let components = launch(
        "vamp_components_main",
        &[
            (2, b.z.binding()),
            (4, b.pmulv.binding()),
            (5, resp.binding()),
            (8, b.dpmulv.binding()),
            (9, row_scale.binding()),
        ],
        k * z,
    )?;
    Ok(VampDispatch {
        records,
        components,
        params,
    })
}
