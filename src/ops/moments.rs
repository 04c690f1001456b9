//! Running mean and variance of a matrix's columns over batches (see shaders/moments.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Most rows one launch merges (under llvmpipe's loop limit of 65535 iterations).
pub const MAX_ROWS: usize = 32768;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MomentParams {
    rows: u32,
    cols: u32,
    ld: u32,
    col0: u32,
}

/// Merges the first rows of columns `first .. first + count` of `x` into its state on each
/// run; `set_rows` says how many rows the next runs read, `read` gives the moments so far.
pub struct Moments {
    pub dispatch: Dispatch,
    /// [count, 4]: rows merged, mean, summed squared deviations, unused.
    state: Matrix,
    params: MomentParams,
    max_rows: usize,
}

impl Moments {
    /// Reads rows 0 .. rows of `x` from the next submit on.
    pub fn set_rows(&mut self, gpu: &Gpu, rows: usize) -> Result<(), GpuError> {
        if rows > self.max_rows {
            return Err(shape_err(
                "moments",
                format!("{rows} rows of a matrix of {}", self.max_rows),
            ));
        }
        self.params.rows = rows as u32;
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
        Ok(())
    }

    /// Each column's mean and (population) variance over the rows merged so far.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<(f64, f64)>, GpuError> {
        Ok(self
            .state
            .read(gpu)?
            .chunks(4)
            .map(|s| {
                let n = f64::from(s[0]).max(1.0);
                (f64::from(s[1]), f64::from(s[2]) / n)
            })
            .collect())
    }
}

/// Moments of columns `first .. first + count` of `x`, every row of `x` at first.
pub fn moments(gpu: &Gpu, x: &Matrix, (first, count): (usize, usize)) -> Result<Moments, GpuError> {
    if count == 0 || first + count > x.cols || x.rows > MAX_ROWS {
        return Err(shape_err(
            "moments",
            format!(
                "columns {first} .. {} of a [{}, {}] matrix",
                first + count,
                x.rows,
                x.cols
            ),
        ));
    }
    let state = Matrix::zeros(gpu, count, 4, "column moments")?;
    let params = MomentParams {
        rows: x.rows as u32,
        cols: count as u32,
        ld: x.ld as u32,
        col0: first as u32,
    };
    let dispatch = gpu.dispatch(
        "moments".into(),
        gpu.pipeline(Shader::Moments, "moments_main", &[])?,
        gpu.uniform("moments params", &params),
        &[(1, x.binding()), (2, state.binding())],
        gpu.grid(count.div_ceil(64) as u64)?,
    );
    Ok(Moments {
        dispatch,
        state,
        params,
        max_rows: x.rows,
    })
}
