//! Fused reconstruction + KL loss launcher (see shaders/loss.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::texture::{Reads, TextureOperand};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Texels per invocation of the pixel launch (CHUNK in shaders/loss.wgsl).
const CHUNK: usize = 8;

/// The decoder's likelihood p(x | z).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// Bernoulli on logits: binary cross-entropy, for pixels in [0, 1].
    #[default]
    Bernoulli,
    /// Gaussian with a fixed variance around the decoder output.
    Gaussian,
}

/// Settings of one loss launch that may change between steps.
#[derive(Clone, Copy, Debug)]
pub struct LossSettings {
    pub likelihood: Likelihood,
    /// Weight of the KL term.
    pub beta: f32,
    /// Multiplies every gradient (1 = gradient of the batch sum, as in PyTorch's example).
    pub grad_scale: f32,
    /// Variance of the Gaussian likelihood.
    pub gauss_var: f32,
    /// Rows that are real samples; later rows are padding.
    pub valid: usize,
    /// Free bits: each latent dimension's KL enters the total as max(KL_j, free_bits), per
    /// image (its gradient is zero below the floor). The reported KL stays the true one.
    pub free_bits: f32,
}

impl Default for LossSettings {
    /// Bernoulli, beta 1, gradient of the batch sum, no free bits, no valid rows.
    fn default() -> LossSettings {
        LossSettings {
            likelihood: Likelihood::Bernoulli,
            beta: 1.0,
            grad_scale: 1.0,
            gauss_var: 0.5,
            valid: 0,
            free_bits: 0.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    rows: u32,
    valid: u32,
    d: u32,
    z: u32,
    ld_logits: u32,
    ld_x: u32,
    ld_mulv: u32,
    likelihood: u32,
    beta: f32,
    grad_scale: f32,
    gauss_var: f32,
    chunks: u32,
    free_bits: f32,
    /// Tables: encoded values per record and column blocks (see table_loss.wgsl).
    table_e: u32,
    table_blocks: u32,
    /// Rows per record (the samples of an importance-weighted step): the batch's record
    /// count is valid / samples.
    samples: u32,
}

/// The matrices one loss launch reads and writes.
pub struct LossBuffers<'a> {
    pub logits: &'a Matrix,
    pub x: &'a Matrix,
    /// [B, 2Z]: mu then logvar.
    pub mulv: &'a Matrix,
    pub dlogits: &'a Matrix,
    pub dmulv: &'a Matrix,
    /// [B, 3]: reconstruction, KL, total per sample.
    pub per_sample: &'a Matrix,
    /// [1, 4]: running sums of reconstruction, KL, total and sample count.
    pub accum: &'a Matrix,
}

/// The three launches: the logits' gradient and per-chunk reconstruction sums, then the
/// per-sample losses and the KL gradient, then the batch sums into `accum`.
pub struct LossDispatch {
    pub pixels: Dispatch,
    pub rows: Dispatch,
    pub reduce: Dispatch,
    params: LossParams,
}

impl LossDispatch {
    /// Rewrites the settings that change between steps (beta, valid rows).
    pub fn update(&mut self, gpu: &Gpu, s: &LossSettings) {
        self.params = params_with(self.params, s);
        // The launches share the parameter buffer.
        gpu.queue
            .write_buffer(&self.pixels.params, 0, bytemuck::bytes_of(&self.params));
    }

    /// Counts every `samples` rows as one record in the sums.
    pub fn per_record(&mut self, gpu: &Gpu, samples: usize) {
        self.params.samples = samples.max(1) as u32;
        gpu.queue
            .write_buffer(&self.pixels.params, 0, bytemuck::bytes_of(&self.params));
    }

    /// The launches that compute per-sample losses and all gradients.
    pub fn per_sample(&self) -> [&Dispatch; 2] {
        [&self.pixels, &self.rows]
    }

    /// Every launch, in order.
    pub fn launches(&self) -> [&Dispatch; 3] {
        [&self.pixels, &self.rows, &self.reduce]
    }
}

fn params_with(mut p: LossParams, s: &LossSettings) -> LossParams {
    p.valid = s.valid.min(p.rows as usize) as u32;
    p.likelihood = match s.likelihood {
        Likelihood::Bernoulli => 0,
        Likelihood::Gaussian => 1,
    };
    p.beta = s.beta;
    p.grad_scale = s.grad_scale;
    p.gauss_var = s.gauss_var;
    p.free_bits = s.free_bits;
    p
}

/// The loss launches, reading logits and targets from buffers or textures, whichever this
/// device runs faster (measured once per device and shape).
pub fn loss(gpu: &Gpu, b: &LossBuffers<'_>, s: &LossSettings) -> Result<LossDispatch, GpuError> {
    let candidates = Reads::candidates(gpu, b.logits.rows * b.logits.ld);
    let key = format!("loss {}x{}", b.logits.rows, b.logits.cols);
    let reads = gpu.choose(&key, candidates, |gpu| {
        let like = |m: &Matrix, label: &str| Matrix::zeros(gpu, m.rows, m.cols, label);
        let scratch = [
            like(b.logits, "loss scratch logits")?,
            like(b.x, "loss scratch x")?,
            like(b.mulv, "loss scratch mulv")?,
            like(b.dlogits, "loss scratch dlogits")?,
            like(b.dmulv, "loss scratch dmulv")?,
            like(b.per_sample, "loss scratch per sample")?,
            like(b.accum, "loss scratch accum")?,
        ];
        let [logits, x, mulv, dlogits, dmulv, per_sample, accum] = &scratch;
        let bufs = LossBuffers {
            logits,
            x,
            mulv,
            dlogits,
            dmulv,
            per_sample,
            accum,
        };
        crate::gpu::tune::time_each(gpu, candidates, |r| {
            let l = loss_with(gpu, r, &bufs, s)?;
            Ok(vec![l.pixels, l.rows])
        })
    })?;
    loss_with(gpu, reads, b, s)
}

/// The loss launches on chosen reads (tests compare both).
pub fn loss_with(
    gpu: &Gpu,
    reads: Reads,
    b: &LossBuffers<'_>,
    s: &LossSettings,
) -> Result<LossDispatch, GpuError> {
    let rows = b.logits.rows;
    let ok = b.x.same_shape(b.logits)
        && b.x.ld == b.logits.ld
        && b.dlogits.same_shape(b.logits)
        && kl_buffers_fit(b);
    if !ok {
        return Err(shape_err(
            "loss",
            format!(
                "logits [{rows}, {}], x [{}, {}], mu|logvar [{}, {}], per-sample [{}, {}]",
                b.logits.cols,
                b.x.rows,
                b.x.cols,
                b.mulv.rows,
                b.mulv.cols,
                b.per_sample.rows,
                b.per_sample.cols
            ),
        ));
    }
    if !(s.gauss_var.is_finite() && s.gauss_var > 0.0) {
        return Err(shape_err(
            "loss",
            format!("Gaussian variance must be positive, got {}", s.gauss_var),
        ));
    }
    let params = params_with(base_params(b, b.logits.ld.div_ceil(4 * CHUNK), None), s);
    let uniform = gpu.uniform("loss params", &params);
    let partial = Matrix::zeros(gpu, rows, params.chunks as usize, "loss partial sums")?;
    let (shader, textures) = match reads {
        Reads::Buffers => (Shader::Loss, Vec::new()),
        Reads::Textures => (
            Shader::LossTex,
            vec![
                TextureOperand::new(gpu, b.logits, "loss logits")?,
                TextureOperand::new(gpu, b.x, "loss x")?,
            ],
        ),
    };
    let mut inputs = match &textures[..] {
        [l, x] => vec![(18, l.binding()), (19, x.binding())],
        _ => vec![(16, b.logits.binding()), (17, b.x.binding())],
    };
    inputs.extend([(4, b.dlogits.binding()), (8, partial.binding())]);
    let mut pixels = gpu.dispatch(
        "loss pixels".into(),
        gpu.pipeline(shader, "loss_pixels_main", &[])?,
        uniform.clone(),
        &inputs,
        gpu.grid((rows * params.chunks as usize).div_ceil(256) as u64)?,
    );
    drop(inputs);
    pixels.textures = textures;
    with_kl_and_sums(gpu, shader, b, &partial, pixels, params)
}

/// Whether the KL side of the buffers fits the logits' rows: mu|logvar [B, 2Z] and its
/// gradient, per-sample [B, 3] with a row stride of 4, the [1, 4] accumulator.
fn kl_buffers_fit(b: &LossBuffers<'_>) -> bool {
    let rows = b.logits.rows;
    b.mulv.rows == rows
        && b.mulv.cols.is_multiple_of(2)
        && b.dmulv.same_shape(b.mulv)
        && b.per_sample.rows == rows
        && b.per_sample.cols == 3
        && b.per_sample.ld == 4
        && b.accum.rows * b.accum.cols == 4
}

/// The shapes of the launches' parameters (the settings come from `params_with`);
/// `table`: encoded values per record and column blocks.
fn base_params(b: &LossBuffers<'_>, chunks: usize, table: Option<&TableBlocks>) -> LossParams {
    LossParams {
        rows: b.logits.rows as u32,
        valid: 0,
        d: b.logits.cols as u32,
        z: (b.mulv.cols / 2) as u32,
        ld_logits: b.logits.ld as u32,
        ld_x: b.x.ld as u32,
        ld_mulv: b.mulv.ld as u32,
        likelihood: 0,
        beta: 0.0,
        grad_scale: 0.0,
        gauss_var: 1.0,
        chunks: chunks as u32,
        free_bits: 0.0,
        table_e: table.map_or(0, |t| t.e as u32),
        table_blocks: table.map_or(0, |t| t.count as u32),
        samples: 1,
    }
}

/// The loss launches after the reconstruction one (`pixels`, which wrote `partial` [B,
/// chunks]): per-sample losses with the KL and its gradient, then the batch sums. All
/// three share `pixels`' parameter buffer.
fn with_kl_and_sums(
    gpu: &Gpu,
    shader: Shader,
    b: &LossBuffers<'_>,
    partial: &Matrix,
    pixels: Dispatch,
    params: LossParams,
) -> Result<LossDispatch, GpuError> {
    let kl = KlBuffers {
        mulv: b.mulv,
        dmulv: b.dmulv,
        per_sample: b.per_sample,
        accum: b.accum,
    };
    let [rows, reduce] = kl_launches(gpu, shader, &kl, partial, &pixels.params)?;
    Ok(LossDispatch {
        pixels,
        rows,
        reduce,
        params,
    })
}

/// loss_rows_main and loss_reduce_main over the rows of `b.mulv`, with parameters `uniform`.
fn kl_launches(
    gpu: &Gpu,
    shader: Shader,
    b: &KlBuffers<'_>,
    partial: &Matrix,
    uniform: &wgpu::Buffer,
) -> Result<[Dispatch; 2], GpuError> {
    let rows = gpu.dispatch(
        "loss rows".into(),
        gpu.pipeline(shader, "loss_rows_main", &[])?,
        uniform.clone(),
        &[
            (3, b.mulv.binding()),
            (5, b.dmulv.binding()),
            (6, b.per_sample.binding()),
            (8, partial.binding()),
        ],
        gpu.grid(b.mulv.rows.div_ceil(256) as u64)?,
    );
    let reduce = gpu.dispatch(
        "loss reduce".into(),
        gpu.pipeline(shader, "loss_reduce_main", &[])?,
        uniform.clone(),
        &[(6, b.per_sample.binding()), (7, b.accum.binding())],
        [1, 1, 1],
    );
    Ok([rows, reduce])
}

/// The KL side of the loss, for a model whose reconstruction another launch computes (a
/// sequence model's per-token cross-entropy).
pub struct KlBuffers<'a> {
    /// [B, 2Z]: mu then logvar, and its gradient.
    pub mulv: &'a Matrix,
    pub dmulv: &'a Matrix,
    /// [B, 3] (row stride 4): reconstruction, KL, total per record.
    pub per_sample: &'a Matrix,
    /// [1, 4]: running sums of reconstruction, KL, total and record count.
    pub accum: &'a Matrix,
}

/// Per-record losses from reconstruction sums another launch wrote, with the KL term and its
/// gradient, then the batch sums.
pub struct KlDispatch {
    pub rows: Dispatch,
    pub reduce: Dispatch,
    params: LossParams,
}

impl KlDispatch {
    /// Rewrites the settings that change between steps (beta, valid rows; the likelihood
    /// and its variance are not read).
    pub fn update(&mut self, gpu: &Gpu, s: &LossSettings) {
        self.params = params_with(self.params, s);
        gpu.queue
            .write_buffer(&self.rows.params, 0, bytemuck::bytes_of(&self.params));
    }

    pub fn launches(&self) -> [&Dispatch; 2] {
        [&self.rows, &self.reduce]
    }
}

/// The KL launches for records whose reconstruction terms are in `partial` [B, chunks] (each
/// record's are summed); the KL gradient is beta * grad_scale times the KL's.
pub fn kl_and_sums(
    gpu: &Gpu,
    b: &KlBuffers<'_>,
    partial: &Matrix,
    s: &LossSettings,
) -> Result<KlDispatch, GpuError> {
    let rows = b.mulv.rows;
    if !b.mulv.cols.is_multiple_of(2)
        || !b.dmulv.same_shape(b.mulv)
        || (b.per_sample.rows, b.per_sample.cols, b.per_sample.ld) != (rows, 3, 4)
        || b.accum.rows * b.accum.cols != 4
        || partial.rows != rows
        || partial.ld != partial.cols
    {
        return Err(shape_err(
            "kl",
            format!(
                "mu|logvar [{rows}, {}], per-record [{}, {}], sums [{}, {}] (dense)",
                b.mulv.cols, b.per_sample.rows, b.per_sample.cols, partial.rows, partial.cols
            ),
        ));
    }
    let params = params_with(
        LossParams {
            rows: rows as u32,
            valid: 0,
            d: 0,
            z: (b.mulv.cols / 2) as u32,
            ld_logits: 0,
            ld_x: 0,
            ld_mulv: b.mulv.ld as u32,
            likelihood: 0,
            beta: 0.0,
            grad_scale: 0.0,
            gauss_var: 1.0,
            chunks: partial.cols as u32,
            free_bits: 0.0,
            table_e: 0,
            table_blocks: 0,
            samples: 1,
        },
        s,
    );
    let uniform = gpu.uniform("kl params", &params);
    let [rows, reduce] = kl_launches(gpu, Shader::Loss, b, partial, &uniform)?;
    Ok(KlDispatch {
        rows,
        reduce,
        params,
    })
}

/// A table's column blocks on the GPU: (kind, first value, first output, width) each, for
/// records of `e` encoded values (see `data::table::Schema::blocks`).
pub struct TableBlocks {
    pub buffer: wgpu::Buffer,
    pub count: usize,
    pub e: usize,
}

impl TableBlocks {
    pub fn new(gpu: &Gpu, blocks: &[[u32; 4]], e: usize) -> Result<TableBlocks, GpuError> {
        let flat: Vec<u32> = blocks.iter().flatten().copied().collect();
        let m = Matrix::from_slice(
            gpu,
            1,
            flat.len().max(4),
            bytemuck::cast_slice(&flat),
            "table blocks",
        )?;
        Ok(TableBlocks {
            buffer: m.buffer,
            count: blocks.len(),
            e,
        })
    }
}

/// The loss launches of table records: table_loss.wgsl's per-column reconstruction and
/// gradient (x is [values | mask], 2E wide; the outputs per column block), then the KL and
/// batch sums of the image loss.
pub fn table_loss(
    gpu: &Gpu,
    b: &LossBuffers<'_>,
    table: &TableBlocks,
    s: &LossSettings,
) -> Result<LossDispatch, GpuError> {
    let rows = b.logits.rows;
    let ok = b.x.rows == rows
        && b.x.cols == 2 * table.e
        && b.dlogits.same_shape(b.logits)
        && b.dlogits.ld == b.logits.ld
        && kl_buffers_fit(b);
    if !ok {
        return Err(shape_err(
            "table loss",
            format!(
                "outputs [{rows}, {}], records [{}, {}] for {} encoded values, mu|logvar [{}, {}]",
                b.logits.cols, b.x.rows, b.x.cols, table.e, b.mulv.rows, b.mulv.cols
            ),
        ));
    }
    let params = params_with(base_params(b, 1, Some(table)), s);
    let uniform = gpu.uniform("table loss params", &params);
    let partial = Matrix::zeros(gpu, rows, 1, "table loss partial sums")?;
    let columns = gpu.dispatch(
        "table loss".into(),
        gpu.pipeline(Shader::TableLoss, "table_loss_main", &[])?,
        uniform.clone(),
        &[
            (1, b.logits.binding()),
            (2, b.x.binding()),
            (3, table.buffer.as_entire_binding()),
            (4, b.dlogits.binding()),
            (8, partial.binding()),
        ],
        gpu.grid(rows.div_ceil(64) as u64)?,
    );
    with_kl_and_sums(gpu, Shader::Loss, b, &partial, columns, params)
}
