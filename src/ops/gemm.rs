//! GEMM launcher: C = act(op(A) op(B) + bias (+ C)), or op(A) op(B) * act'(Y).

use super::{shape_err, Activation, GradEpilogue};
use crate::gpu::shaders::Shader;
use crate::gpu::texture::TextureOperand;
use crate::gpu::tune::GemmShape;
use crate::gpu::{Dispatch, GemmPath, Gpu, GpuError, Matrix};

/// What to compute besides the plain product.
#[derive(Clone, Copy, Debug, Default)]
pub struct GemmSpec {
    /// A is stored [K, M] and read transposed.
    pub trans_a: bool,
    /// B is stored [N, K] and read transposed.
    pub trans_b: bool,
    /// Add into C instead of overwriting it.
    pub accumulate: bool,
    pub act: Activation,
    /// Instead of applying `act`, multiply the product by its derivative at Y, the
    /// activation's output, passed as the `side` matrix (shaped like C): an activation's
    /// backward fused into the GEMM that makes its output gradient.
    pub act_grad: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    slope: f32,
    /// K per workgroup along z (shaders/gemm_common.wgsl): K, or a split-K slice.
    kchunk: u32,
}

/// (M, N, K) of op(A) op(B), checked against C and the side matrix (bias or Y).
fn dims(
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    side: Option<&Matrix>,
    spec: &GemmSpec,
) -> Result<(usize, usize, usize), GpuError> {
    let (m, k) = if spec.trans_a {
        (a.cols, a.rows)
    } else {
        (a.rows, a.cols)
    };
    let (kb, n) = if spec.trans_b {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    let shapes = || {
        format!(
            "op(A) [{m}, {k}] x op(B) [{kb}, {n}] -> C [{}, {}]",
            c.rows, c.cols
        )
    };
    if k != kb || c.rows != m || c.cols != n {
        return Err(shape_err("gemm", shapes()));
    }
    if [a.ld, b.ld, c.ld].iter().any(|ld| !ld.is_multiple_of(4)) {
        return Err(shape_err(
            "gemm",
            format!(
                "row strides must be multiples of 4, got {}, {}, {}",
                a.ld, b.ld, c.ld
            ),
        ));
    }
    if m == 0 || n == 0 || k == 0 {
        return Err(shape_err("gemm", format!("empty product {}", shapes())));
    }
    match (side, spec.act_grad) {
        (Some(y), true) if (y.rows, y.cols, y.ld) != (c.rows, c.cols, c.ld) => {
            return Err(shape_err(
                "gemm",
                format!(
                    "activation output [{}, {}] (stride {}) must match C [{}, {}] (stride {})",
                    y.rows, y.cols, y.ld, c.rows, c.cols, c.ld
                ),
            ))
        }
        (None, true) => {
            return Err(shape_err(
                "gemm",
                "act_grad needs the activation output".into(),
            ))
        }
        (Some(bias), false) if bias.rows * bias.cols != n => {
            return Err(shape_err(
                "gemm",
                format!("bias has {} values for {n} columns", bias.rows * bias.cols),
            ))
        }
        _ => {}
    }
    spec.act.check()?;
    if spec.act_grad && !spec.act.from_output() {
        return Err(shape_err(
            "gemm",
            format!(
                "{:?}'s derivative needs its input, not its output",
                spec.act
            ),
        ));
    }
    Ok((m, n, k))
}

/// Builds the launch on the device's preferred kernel.
pub fn gemm(
    gpu: &Gpu,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    side: Option<&Matrix>,
    spec: GemmSpec,
) -> Result<Dispatch, GpuError> {
    gemm_with(gpu, kernel(gpu, a, b, c, side, &spec)?, a, b, c, side, spec)
}

/// The kernel the device picks (measured once per shape) for this product.
fn kernel(
    gpu: &Gpu,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    side: Option<&Matrix>,
    spec: &GemmSpec,
) -> Result<GemmPath, GpuError> {
    let (m, n, k) = dims(a, b, c, side, spec)?;
    let shape = GemmShape {
        m,
        n,
        k,
        trans_a: spec.trans_a,
        trans_b: spec.trans_b,
    };
    gemm_kernel(gpu, shape, *spec, side.is_some())
}

/// The GEMM kernel for `shape` on this device: the one function that decides. The
/// first time a device meets a shape, every kernel it runs is timed on it, with the
/// epilogue of this first caller (`spec`, and its side matrix when `side`: the bias, or
/// Y with `act_grad`), and the fastest is cached for the shape (see `tune`); with
/// `VAE_GPU_TUNE=off`, unmeasured shapes get the default kernel.
fn gemm_kernel(
    gpu: &Gpu,
    shape: GemmShape,
    spec: GemmSpec,
    side: bool,
) -> Result<GemmPath, GpuError> {
    let candidates: Vec<GemmPath> = gpu
        .gemm_paths()
        .into_iter()
        .filter(|p| !p.textures() || shape.fits_textures(gpu))
        // Workgroup-memory tiles measured 20-40x slower than the rest on every CPU
        // driver tried (lavapipe, llvmpipe GL, SwiftShader), and buffer reads 3-10x
        // slower than texture reads where the operands fit a texture: not worth
        // compiling and timing there.
        .filter(|p| *p != GemmPath::Tiled || !gpu.cpu_driver)
        .filter(|p| !gpu.cpu_driver || p.textures() || !shape.fits_textures(gpu))
        // The narrow kernel reuses A half as much: worth timing (each candidate costs a
        // pipeline compile) only where it skips at least a quarter of the wide one's
        // padded columns, as for N = 16, 20, 32 or 96.
        .filter(|p| {
            *p != GemmPath::SubgroupTexNarrow
                || 4 * shape.n.next_multiple_of(32) <= 3 * shape.n.next_multiple_of(64)
        })
        .collect();
    gpu.choose(&shape.to_string(), &candidates, |gpu| {
        measure_gemm(gpu, &shape, spec, side, &candidates)
    })
}

/// Times each GEMM kernel on `shape` with random operands and the caller's epilogue
/// (`spec`; a random side matrix when `side`: Y with `act_grad`, else a bias): the pipeline
/// the winner compiles here is the one the caller then runs, which on CPU drivers saves a
/// second LLVM compile of about a second. Candidates whose output differs from the first
/// candidate's are dropped with a warning.
pub fn measure_gemm(
    gpu: &Gpu,
    shape: &GemmShape,
    spec: GemmSpec,
    side: bool,
    candidates: &[GemmPath],
) -> Result<Vec<(GemmPath, f64)>, GpuError> {
    let (a_rows, a_cols) = if shape.trans_a {
        (shape.k, shape.m)
    } else {
        (shape.m, shape.k)
    };
    let (b_rows, b_cols) = if shape.trans_b {
        (shape.n, shape.k)
    } else {
        (shape.k, shape.n)
    };
    let mut rng = crate::rng::Rng::new(0x7475_6e65);
    let mut random = |rows: usize, cols: usize, label: &str| {
        let m = Matrix::zeros(gpu, rows, cols, label)?;
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.uniform(-1.0, 1.0) as f32)
            .collect();
        m.write(gpu, &values)?;
        Ok::<_, GpuError>(m)
    };
    let a = random(a_rows, a_cols, "tune a")?;
    let b = random(b_rows, b_cols, "tune b")?;
    let c = Matrix::zeros(gpu, shape.m, shape.n, "tune c")?;
    // The derivative's Y is shaped like C, a bias is one row.
    let side = match (side, spec.act_grad) {
        (false, _) => None,
        (true, true) => Some(random(shape.m, shape.n, "tune y")?),
        (true, false) => Some(random(1, shape.n, "tune bias")?),
    };
    // Accumulating would add each candidate's check run onto the last one's output.
    let spec = GemmSpec {
        trans_a: shape.trans_a,
        trans_b: shape.trans_b,
        accumulate: false,
        ..spec
    };
    let mut reference: Option<Vec<f32>> = None;
    let mut agreeing = Vec::new();
    let mut launches = Vec::new();
    for &path in candidates {
        let launch = gemm_with(gpu, path, &a, &b, &c, side.as_ref(), spec)?;
        // The first run compiles the pipeline; it is checked, not timed.
        gpu.run(&[&launch])?;
        let result = c.read(gpu)?;
        match &reference {
            None => reference = Some(result),
            Some(want) => {
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                let worst = want
                    .iter()
                    .zip(&result)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                let agrees = worst <= 1e-4 * scale * (shape.k as f32).sqrt();
                if !agrees {
                    log::warn!(
                        "{shape}: {path:?} kernel disagrees with {:?} by {worst}, skipped",
                        candidates[0]
                    );
                    continue;
                }
            }
        }
        agreeing.push(path);
        launches.push(vec![launch]);
    }
    let times = crate::gpu::tune::time_interleaved(gpu, &launches)?;
    Ok(agreeing.into_iter().zip(times).collect())
}

/// Builds the launch on a chosen kernel (tests and benches compare both).
pub fn gemm_with(
    gpu: &Gpu,
    path: GemmPath,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    side: Option<&Matrix>,
    spec: GemmSpec,
) -> Result<Dispatch, GpuError> {
    let (m, n, k) = dims(a, b, c, side, &spec)?;
    build(
        gpu,
        path,
        [m, n, k],
        Operands {
            a,
            b,
            c,
            side,
            implicit: None,
        },
        spec,
        1,
    )
}

/// Workgroups below which a long plain product splits its K (see `gemm_split_k`): enough
/// to keep a 2-core CPU driver's cores busy.
const SPLIT_K_TILES: usize = 4;

/// C = op(A) op(B), no epilogue, as launches: one GEMM, or where the product has fewer
/// than SPLIT_K_TILES output tiles and K is long, a GEMM whose workgroups each sum a slice
/// of K into their own copy of C (SubgroupTex kernels), then the copies' sum (the bias
/// gradient's column sums over the copies laid end to end). A 32x16 weight gradient over a
/// K of 25088 otherwise runs on one core while the other idles.
pub fn gemm_split_k(
    gpu: &Gpu,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    spec: GemmSpec,
) -> Result<Vec<Dispatch>, GpuError> {
    gemm_split_k_with(gpu, kernel(gpu, a, b, c, None, &spec)?, a, b, c, spec)
}

/// `gemm_split_k` on a chosen kernel (tests run the split on every kernel that has it).
pub fn gemm_split_k_with(
    gpu: &Gpu,
    path: GemmPath,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    spec: GemmSpec,
) -> Result<Vec<Dispatch>, GpuError> {
    if spec.accumulate || spec.act_grad || spec.act != Activation::Identity {
        return Err(shape_err(
            "gemm_split_k",
            "plain products only (no activation, accumulation or derivative)".into(),
        ));
    }
    let (m, n, k) = dims(a, b, c, None, &spec)?;
    let (_, tile_m, tile_n) = tiles(path);
    let tiles = m.div_ceil(tile_m) * n.div_ceil(tile_n);
    let splits = (SPLIT_K_TILES / tiles).min(k / 1024);
    let splittable = matches!(path, GemmPath::SubgroupTex | GemmPath::SubgroupTexNarrow)
        && c.ld == crate::gpu::round_up4(n);
    if splits < 2 || !splittable {
        return Ok(vec![gemm_with(gpu, path, a, b, c, None, spec)?]);
    }
    let copies = Matrix::zeros(gpu, splits * m, n, "split-K partial products")?;
    let product = build(
        gpu,
        path,
        [m, n, k],
        Operands {
            a,
            b,
            c: &copies,
            side: None,
            implicit: None,
        },
        spec,
        splits,
    )?;
    // The copies as [splits, M * ld] rows, C as one such row.
    let row = m * c.ld;
    let stacked = Matrix {
        rows: splits,
        cols: row,
        ld: row,
        ..copies.clone()
    };
    let sum = Matrix {
        rows: 1,
        cols: row,
        ld: row,
        ..c.clone()
    };
    let mut out = vec![product];
    out.extend(super::elementwise::bias_grad(gpu, &stacked, &sum)?);
    Ok(out)
}

/// The matrices of a launch; `implicit` holds the convolution uniform when A is an image
/// read as its im2col columns in place (subgroup kernel only).
struct Operands<'a> {
    a: &'a Matrix,
    b: &'a Matrix,
    c: &'a Matrix,
    /// The bias, or Y with `act_grad`.
    side: Option<&'a Matrix>,
    implicit: Option<wgpu::Buffer>,
}

/// A kernel's shader and output tile (rows, columns) per workgroup.
fn tiles(path: GemmPath) -> (Shader, usize, usize) {
    match path {
        GemmPath::Tiled => (Shader::Gemm, 64, 64),
        GemmPath::Subgroup => (Shader::GemmSubgroup, 32, 32),
        GemmPath::Register => (Shader::GemmRegister, 64, 64),
        GemmPath::SubgroupTex => (Shader::GemmSubgroupTex, 32, 64),
        GemmPath::SubgroupTexNarrow => (Shader::GemmSubgroupTex, 32, 32),
        GemmPath::RegisterTex => (Shader::GemmRegisterTex, 64, 64),
    }
}

/// The launch; with `splits` > 1 (SubgroupTex kernels, plain products) workgroup z sums
/// the z-th slice of K into rows z M.. of C.
fn build(
    gpu: &Gpu,
    path: GemmPath,
    [m, n, k]: [usize; 3],
    ops: Operands<'_>,
    spec: GemmSpec,
    splits: usize,
) -> Result<Dispatch, GpuError> {
    let (act, slope) = spec.act.code();
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        lda: ops.a.ld as u32,
        ldb: ops.b.ld as u32,
        ldc: ops.c.ld as u32,
        slope,
        kchunk: k.div_ceil(splits).next_multiple_of(4) as u32,
    };
    let (shader, tile_m, tile_n) = tiles(path);
    let mut constants = vec![
        ("TRANS_A", u32::from(spec.trans_a)),
        ("TRANS_B", u32::from(spec.trans_b)),
        ("ACT", act),
        ("ADD_BIAS", u32::from(ops.side.is_some() && !spec.act_grad)),
        ("ACT_GRAD", u32::from(spec.act_grad)),
        ("ACCUMULATE", u32::from(spec.accumulate)),
    ];
    match path {
        GemmPath::Subgroup => constants.push(("IMPLICIT_A", u32::from(ops.implicit.is_some()))),
        GemmPath::SubgroupTex | GemmPath::SubgroupTexNarrow => {
            constants.push(("WIDE", u32::from(path == GemmPath::SubgroupTex)))
        }
        _ => {}
    }
    let pipeline = gpu.pipeline(shader, "main", &constants)?;
    let groups = [
        n.div_ceil(tile_n) as u64,
        m.div_ceil(tile_m) as u64,
        splits as u64,
    ];
    let max = u64::from(gpu.limits.max_compute_workgroups_per_dimension);
    if groups.iter().any(|&g| g > max) {
        return Err(GpuError::Limit(format!(
            "gemm [{m}, {n}] needs {groups:?} workgroups"
        )));
    }
    let side = ops
        .side
        .map(Matrix::binding)
        .unwrap_or_else(|| gpu.dummy.as_entire_binding());
    let textures = if path.textures() {
        vec![
            TextureOperand::new(gpu, ops.a, "gemm a")?,
            TextureOperand::new(gpu, ops.b, "gemm b")?,
        ]
    } else {
        Vec::new()
    };
    let mut bindings = match &textures[..] {
        [a, b] => vec![(1, a.binding()), (2, b.binding())],
        _ => vec![(1, ops.a.binding()), (2, ops.b.binding())],
    };
    bindings.extend([(3, ops.c.binding()), (4, side)]);
    if path == GemmPath::Subgroup {
        // The subgroup kernel always declares the convolution uniform.
        bindings.push((
            6,
            ops.implicit
                .as_ref()
                .unwrap_or(&gpu.dummy_uniform)
                .as_entire_binding(),
        ));
    }
    let label = format!(
        "gemm {m}x{n}x{k}{}{}{}{} {path:?}",
        if spec.trans_a { " A^T" } else { "" },
        if spec.trans_b { " B^T" } else { "" },
        if ops.implicit.is_some() {
            " implicit conv"
        } else {
            ""
        },
        if splits > 1 {
            format!(" split-K {splits}")
        } else {
            String::new()
        }
    );
    let mut dispatch = gpu.dispatch(
        label,
        pipeline,
        gpu.uniform("gemm params", &params),
        &bindings,
        groups.map(|g| g as u32),
    );
    drop(bindings);
    dispatch.textures = textures;
    Ok(dispatch)
}

/// C [M, N] = epilogue(im2col(image) B^T) without materializing the columns: the subgroup
/// kernel reads each vec4 of A from the image (`conv` is the convolution's uniform, see
/// shaders/gemm_subgroup.wgsl). B is the conv weight [N, K]; `side` is the bias, or with
/// `spec.act_grad` the activation output whose derivative multiplies C.
pub(crate) fn gemm_implicit_conv(
    gpu: &Gpu,
    image: &Matrix,
    conv: wgpu::Buffer,
    [m, k]: [usize; 2],
    (b, c): (&Matrix, &Matrix),
    side: Option<&Matrix>,
    spec: GemmSpec,
) -> Result<Dispatch, GpuError> {
    let bias_ok = spec.act_grad || side.is_none_or(|bias| bias.rows * bias.cols == b.rows);
    if b.cols != k || c.rows != m || c.cols != b.rows || !bias_ok {
        return Err(shape_err(
            "implicit conv gemm",
            format!(
                "weight [{}, {}] for K {k}, output [{}, {}]",
                b.rows, b.cols, c.rows, c.cols
            ),
        ));
    }
    build(
        gpu,
        GemmPath::Subgroup,
        [m, b.rows, k],
        Operands {
            a: image,
            b,
            c,
            side,
            implicit: Some(conv),
        },
        GemmSpec {
            trans_b: true,
            ..spec
        },
        1,
    )
}

/// The activation whose output is a GEMM's input A: the backward multiplies dA by its
/// derivative at `output` (shaped like A) in the same launch.
#[derive(Clone, Copy, Debug)]
pub struct InputActivation<'a> {
    pub act: Activation,
    pub output: &'a Matrix,
}

/// Launches for the gradients of C = op(A) op(B) given dC: dA and dB, written into the
/// given matrices shaped like A and B; dA through `da_epilogue` (added to what dA holds,
/// times the derivative of the activation that produced A).
#[allow(clippy::too_many_arguments)]
pub fn gemm_backward(
    gpu: &Gpu,
    a: &Matrix,
    b: &Matrix,
    dc: &Matrix,
    da: Option<&Matrix>,
    db: Option<&Matrix>,
    spec: GemmSpec,
    da_epilogue: GradEpilogue<'_>,
) -> Result<Vec<Dispatch>, GpuError> {
    let mut out = Vec::new();
    let plain = |trans_a, trans_b| GemmSpec {
        trans_a,
        trans_b,
        ..GemmSpec::default()
    };
    if let Some(da) = da {
        let fused = |s: GemmSpec| {
            let s = GemmSpec {
                accumulate: da_epilogue.accumulate,
                ..s
            };
            match da_epilogue.act {
                Some(f) => GemmSpec {
                    act: f.act,
                    act_grad: true,
                    ..s
                },
                None => s,
            }
        };
        let y = da_epilogue.act.map(|f| f.output);
        // d op(A) = dC op(B)^T; stored transposed, dA = op(B) dC^T.
        out.push(if spec.trans_a {
            gemm(gpu, b, dc, da, y, fused(plain(spec.trans_b, true)))?
        } else {
            gemm(gpu, dc, b, da, y, fused(plain(false, !spec.trans_b)))?
        });
    }
    if let Some(db) = db {
        // d op(B) = op(A)^T dC; stored transposed, dB = dC^T op(A). A weight gradient
        // sums over the batch (or every pixel of it): long K, few output tiles.
        out.extend(if spec.trans_b {
            gemm_split_k(gpu, dc, a, db, plain(true, spec.trans_a))?
        } else {
            gemm_split_k(gpu, a, dc, db, plain(!spec.trans_a, false))?
        });
    }
    Ok(out)
}
