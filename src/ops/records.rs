//! A record's values over its samples' rows and the sum back (see shaders/records.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RecordParams {
    n: u32,
    k: u32,
    cols: u32,
    ld_src: u32,
    ld_dst: u32,
    pad: [u32; 3],
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    src: &Matrix,
    dst: &Matrix,
    k: usize,
) -> Result<Dispatch, GpuError> {
    let params = RecordParams {
        n: (dst.rows * dst.cols) as u32,
        k: k as u32,
        cols: dst.cols as u32,
        ld_src: src.ld as u32,
        ld_dst: dst.ld as u32,
        pad: [0; 3],
    };
    Ok(gpu.dispatch(
        entry.into(),
        gpu.pipeline(Shader::Records, entry, &[])?,
        gpu.uniform(entry, &params),
        &[(1, src.binding()), (2, dst.binding())],
        gpu.grid((dst.rows * dst.cols).div_ceil(256) as u64)?,
    ))
}

/// `records` [B, C] to `rows` [B K, C]: each record's row over its K consecutive rows.
pub fn repeat_records(
    gpu: &Gpu,
    records: &Matrix,
    rows: &Matrix,
    k: usize,
) -> Result<Dispatch, GpuError> {
    if k == 0 || rows.rows != records.rows * k || rows.cols != records.cols {
        return Err(shape_err(
            "repeat_records",
            format!(
                "[{}, {}] over {k} rows each into [{}, {}]",
                records.rows, records.cols, rows.rows, rows.cols
            ),
        ));
    }
    launch(gpu, "repeat_records_main", records, rows, k)
}

/// `rows` [B K, C] summed into `records` [B, C]: each record's K consecutive rows (the
/// gradient of `repeat_records`), overwriting.
pub fn sum_records(
    gpu: &Gpu,
    rows: &Matrix,
    records: &Matrix,
    k: usize,
) -> Result<Dispatch, GpuError> {
    if k == 0 || rows.rows != records.rows * k || rows.cols != records.cols {
        return Err(shape_err(
            "sum_records",
            format!(
                "[{}, {}] in groups of {k} rows into [{}, {}]",
                rows.rows, rows.cols, records.rows, records.cols
            ),
        ));
    }
    launch(gpu, "sum_records_main", rows, records, k)
}
