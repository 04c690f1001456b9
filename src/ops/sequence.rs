//! Rows repeated, and their gradients summed back (shaders/sequence.wgsl): a recurrent
//! layer's inputs over time-major rows (token embeddings and a per-record vector repeated at
//! every step, written into a column range of a wider matrix), and a record's values over
//! its consecutive sample rows (an importance-weighted step's samples share its encoder).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Rows one gradient launch sums over: llvmpipe stops loops past 65535 iterations.
const SUM_ROWS: usize = 32768;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SeqParams {
    n: u32,
    width: u32,
    ld: u32,
    col: u32,
    lds: u32,
    batch: u32,
    start: u32,
    count: u32,
    vocab: u32,
    accumulate: u32,
    group: u32,
    stride: u32,
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    params: &SeqParams,
    bindings: &[(u32, wgpu::BindingResource<'_>)],
) -> Result<Dispatch, GpuError> {
    Ok(gpu.dispatch(
        format!("{entry} {}", params.n),
        gpu.pipeline(Shader::Sequence, entry, &[])?,
        gpu.uniform(entry, params),
        bindings,
        gpu.grid(u64::from(params.n).div_ceil(256))?,
    ))
}

/// `src`'s columns fit in `wide` from column `col`.
fn check_cols(op: &str, src: &Matrix, wide: &Matrix, col: usize) -> Result<(), GpuError> {
    if col + src.cols > wide.cols {
        return Err(shape_err(
            op,
            format!(
                "{} columns from column {col} of a [{}, {}] matrix",
                src.cols, wide.rows, wide.cols
            ),
        ));
    }
    Ok(())
}

/// out[r, col..col + E] = table[tokens[first + r]] for every row of `out`; a token of
/// table.rows or more gives zeros.
pub fn embed(
    gpu: &Gpu,
    tokens: &wgpu::Buffer,
    first: usize,
    table: &Matrix,
    out: &Matrix,
    col: usize,
) -> Result<Dispatch, GpuError> {
    check_cols("embed", table, out, col)?;
    if tokens.size() < ((first + out.rows) * 4) as u64 {
        return Err(shape_err(
            "embed",
            format!("{} bytes of tokens for {} rows", tokens.size(), out.rows),
        ));
    }
    let params = SeqParams {
        n: (out.rows * table.cols) as u32,
        width: table.cols as u32,
        ld: out.ld as u32,
        col: col as u32,
        lds: table.ld as u32,
        vocab: table.rows as u32,
        start: first as u32,
        ..SeqParams::default()
    };
    launch(
        gpu,
        "embed_main",
        &params,
        &[
            (1, tokens.as_entire_binding()),
            (2, table.binding()),
            (3, out.binding()),
        ],
    )
}

/// d table[v] (+)= sum of dout[r, col..col + E] over the rows r whose token is v.
pub fn embed_grad(
    gpu: &Gpu,
    tokens: &wgpu::Buffer,
    dout: &Matrix,
    col: usize,
    dtable: &Matrix,
    accumulate: bool,
) -> Result<Vec<Dispatch>, GpuError> {
    check_cols("embed_grad", dtable, dout, col)?;
    if tokens.size() < (dout.rows * 4) as u64 {
        return Err(shape_err(
            "embed_grad",
            format!("{} bytes of tokens for {} rows", tokens.size(), dout.rows),
        ));
    }
    sums(dout.rows, accumulate, |start, count, accumulate| {
        let params = SeqParams {
            n: (dtable.rows * dtable.cols) as u32,
            width: dtable.cols as u32,
            ld: dout.ld as u32,
            col: col as u32,
            lds: dtable.ld as u32,
            start,
            count,
            accumulate,
            ..SeqParams::default()
        };
        launch(
            gpu,
            "embed_grad_main",
            &params,
            &[
                (1, tokens.as_entire_binding()),
                (2, dout.binding()),
                (3, dtable.binding()),
            ],
        )
    })
}

/// out[t * batch + b, col..col + C] = src[b] for every row of `out` (batch = src.rows).
pub fn repeat(gpu: &Gpu, src: &Matrix, out: &Matrix, col: usize) -> Result<Dispatch, GpuError> {
    check_cols("repeat", src, out, col)?;
    if !out.rows.is_multiple_of(src.rows) {
        return Err(shape_err(
            "repeat",
            format!("{} rows are not steps of {} records", out.rows, src.rows),
        ));
    }
    repeat_launch(gpu, src, out, repeat_params(src, out, col, (src.rows, 1)))
}

/// repeat_main's settings: `out`'s rows from `src`'s, row r reading row (r / group) mod
/// batch (see shaders/sequence.wgsl).
fn repeat_params(
    src: &Matrix,
    out: &Matrix,
    col: usize,
    (batch, group): (usize, usize),
) -> SeqParams {
    SeqParams {
        n: (out.rows * src.cols) as u32,
        width: src.cols as u32,
        ld: out.ld as u32,
        col: col as u32,
        lds: src.ld as u32,
        batch: batch as u32,
        group: group as u32,
        ..SeqParams::default()
    }
}

fn repeat_launch(
    gpu: &Gpu,
    src: &Matrix,
    out: &Matrix,
    params: SeqParams,
) -> Result<Dispatch, GpuError> {
    launch(
        gpu,
        "repeat_main",
        &params,
        &[(2, src.binding()), (3, out.binding())],
    )
}

/// out[r] = src[row] for every row of `out`, the row set with `set`: one record's values
/// over many rows (each of an image's importance samples starting from its posterior).
pub struct RowRepeat {
    pub dispatch: Dispatch,
    params: SeqParams,
    rows: usize,
}

impl RowRepeat {
    /// Repeats row `row` of the source from the next submit on.
    pub fn set(&mut self, gpu: &Gpu, row: usize) -> Result<(), GpuError> {
        if row >= self.rows {
            return Err(shape_err(
                "repeat_row",
                format!("row {row} of a source of {} rows", self.rows),
            ));
        }
        self.params.start = row as u32;
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
        Ok(())
    }
}

/// `out` filled with row 0 of `src` (see `RowRepeat::set`).
pub fn repeat_row(gpu: &Gpu, src: &Matrix, out: &Matrix) -> Result<RowRepeat, GpuError> {
    if src.cols != out.cols {
        return Err(shape_err(
            "repeat_row",
            format!(
                "[{}, {}] into [{}, {}]",
                src.rows, src.cols, out.rows, out.cols
            ),
        ));
    }
    let params = repeat_params(src, out, 0, (1, 1));
    Ok(RowRepeat {
        dispatch: repeat_launch(gpu, src, out, params)?,
        params,
        rows: src.rows,
    })
}

/// d src[b] (+)= sum over steps of dout[t * batch + b, col..col + C] (batch = dsrc.rows).
pub fn repeat_grad(
    gpu: &Gpu,
    dout: &Matrix,
    col: usize,
    dsrc: &Matrix,
    accumulate: bool,
) -> Result<Vec<Dispatch>, GpuError> {
    check_cols("repeat_grad", dsrc, dout, col)?;
    if !dout.rows.is_multiple_of(dsrc.rows) {
        return Err(shape_err(
            "repeat_grad",
            format!("{} rows are not steps of {} records", dout.rows, dsrc.rows),
        ));
    }
    let steps = dout.rows / dsrc.rows;
    sum_back(gpu, (dout, col), dsrc, (steps, 1, dsrc.rows), accumulate)
}

/// repeat_grad_main over `rows` rows per record of `dout` (from column `col`) into `dsrc`,
/// row t of record b being dout's row t * stride + b * group: launches of at most
/// SUM_ROWS rows, each after the first accumulating (the first too when `accumulate`).
fn sum_back(
    gpu: &Gpu,
    (dout, col): (&Matrix, usize),
    dsrc: &Matrix,
    (rows, group, stride): (usize, usize, usize),
    accumulate: bool,
) -> Result<Vec<Dispatch>, GpuError> {
    sums(rows, accumulate, |start, count, accumulate| {
        let params = SeqParams {
            n: (dsrc.rows * dsrc.cols) as u32,
            width: dsrc.cols as u32,
            ld: dout.ld as u32,
            col: col as u32,
            lds: dsrc.ld as u32,
            batch: dsrc.rows as u32,
            start,
            count,
            accumulate,
            group: group as u32,
            stride: stride as u32,
            ..SeqParams::default()
        };
        launch(
            gpu,
            "repeat_grad_main",
            &params,
            &[(2, dout.binding()), (3, dsrc.binding())],
        )
    })
}

/// `records` [B, C] to `rows` [B K, C]: each record's row over its K consecutive rows.
pub fn repeat_records(
    gpu: &Gpu,
    records: &Matrix,
    rows: &Matrix,
    k: usize,
) -> Result<Dispatch, GpuError> {
    check_records("repeat_records", records, rows, k)?;
    let params = repeat_params(records, rows, 0, (records.rows, k));
    repeat_launch(gpu, records, rows, params)
}

/// `rows` [B K, C] summed into `records` [B, C]: each record's K consecutive rows (the
/// gradient of `repeat_records`), overwriting.
pub fn sum_records(
    gpu: &Gpu,
    rows: &Matrix,
    records: &Matrix,
    k: usize,
) -> Result<Vec<Dispatch>, GpuError> {
    check_records("sum_records", records, rows, k)?;
    sum_back(gpu, (rows, 0), records, (k, k, 1), false)
}

/// `rows` holds K rows of `records`' width per record.
fn check_records(op: &str, records: &Matrix, rows: &Matrix, k: usize) -> Result<(), GpuError> {
    if k == 0 || rows.rows != records.rows * k || rows.cols != records.cols {
        return Err(shape_err(
            op,
            format!(
                "[{}, {}] over {k} rows each as [{}, {}]",
                records.rows, records.cols, rows.rows, rows.cols
            ),
        ));
    }
    Ok(())
}

/// One launch per SUM_ROWS rows of `rows`: f(start, count, accumulate), every launch after the
/// first adding to what the first wrote (the first too when `accumulate`).
fn sums(
    rows: usize,
    accumulate: bool,
    mut f: impl FnMut(u32, u32, u32) -> Result<Dispatch, GpuError>,
) -> Result<Vec<Dispatch>, GpuError> {
    (0..rows.max(1))
        .step_by(SUM_ROWS)
        .map(|start| {
            f(
                start as u32,
                SUM_ROWS.min(rows - start) as u32,
                u32::from(start > 0 || accumulate),
            )
        })
        .collect()
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct TokenParams {
    rows: u32,
    vocab: u32,
    ld: u32,
    step: u32,
    eos: u32,
    pad: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    temperature: f32,
    draw: u32,
    pad0: u32,
}

/// The special ids a generated sequence ends with.
#[derive(Clone, Copy, Debug)]
pub struct Ends {
    pub eos: u32,
    pub pad: u32,
}

/// A next-token launch whose noise can move (see `set_noise`).
pub struct TokenDispatch {
    pub dispatch: Dispatch,
    params: TokenParams,
}

impl TokenDispatch {
    /// Draws with `noise` from here on (a new batch: its step tells the batches apart).
    pub fn set_noise(&mut self, gpu: &Gpu, noise: super::sample::Noise) {
        self.params.seed_lo = noise.seed as u32;
        self.params.seed_hi = (noise.seed >> 32) as u32;
        self.params.stream = noise.stream;
        self.params.draw = noise.step;
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
    }
}

/// tokens[(step + 1) * rows + b] = the next token of sequence b from logits [rows, vocab]
/// (shaders/tokens.wgsl): drawn at `temperature` with `noise` (Philox counter (b, step,
/// stream, noise.step)), the likeliest at 0; padding after a sequence's end.
pub fn next_token(
    gpu: &Gpu,
    logits: &Matrix,
    tokens: &wgpu::Buffer,
    step: usize,
    ends: Ends,
    noise: super::sample::Noise,
    temperature: f32,
) -> Result<TokenDispatch, GpuError> {
    let rows = logits.rows;
    if tokens.size() < ((step + 2) * rows * 4) as u64 || logits.cols == 0 {
        return Err(shape_err(
            "next_token",
            format!("step {step} of {rows} sequences: the token buffer is too small"),
        ));
    }
    let params = TokenParams {
        rows: rows as u32,
        vocab: logits.cols as u32,
        ld: logits.ld as u32,
        step: step as u32,
        eos: ends.eos,
        pad: ends.pad,
        seed_lo: noise.seed as u32,
        seed_hi: (noise.seed >> 32) as u32,
        stream: noise.stream,
        temperature,
        draw: noise.step,
        pad0: 0,
    };
    let dispatch = gpu.dispatch(
        format!("next_token step {step}"),
        gpu.pipeline(Shader::Tokens, "next_token_main", &[])?,
        gpu.uniform("next_token", &params),
        &[(1, logits.binding()), (2, tokens.as_entire_binding())],
        gpu.grid(rows.div_ceil(256) as u64)?,
    );
    Ok(TokenDispatch { dispatch, params })
}
