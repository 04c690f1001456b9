//! GEMM launcher: C = act(op(A) op(B) + bias (+ C)).

use super::{shape_err, Activation};
use crate::gpu::shaders::Shader;
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
    pad: u32,
}

/// (M, N, K) of op(A) op(B), checked against C and the bias.
fn dims(
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    bias: Option<&Matrix>,
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
    if let Some(bias) = bias {
        if bias.rows * bias.cols != n {
            return Err(shape_err(
                "gemm",
                format!("bias has {} values for {n} columns", bias.rows * bias.cols),
            ));
        }
    }
    spec.act.check()?;
    Ok((m, n, k))
}

/// Builds the launch on the device's preferred kernel.
pub fn gemm(
    gpu: &Gpu,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    bias: Option<&Matrix>,
    spec: GemmSpec,
) -> Result<Dispatch, GpuError> {
    gemm_with(gpu, gpu.gemm_path, a, b, c, bias, spec)
}

/// Builds the launch on a chosen kernel (tests and benches compare both).
pub fn gemm_with(
    gpu: &Gpu,
    path: GemmPath,
    a: &Matrix,
    b: &Matrix,
    c: &Matrix,
    bias: Option<&Matrix>,
    spec: GemmSpec,
) -> Result<Dispatch, GpuError> {
    let (m, n, k) = dims(a, b, c, bias, &spec)?;
    let (act, slope) = spec.act.code();
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        lda: a.ld as u32,
        ldb: b.ld as u32,
        ldc: c.ld as u32,
        slope,
        pad: 0,
    };
    let (shader, tile) = match path {
        GemmPath::Tiled => (Shader::Gemm, 64),
        GemmPath::Subgroup => (Shader::GemmSubgroup, 32),
        GemmPath::Register => (Shader::GemmRegister, 64),
    };
    let pipeline = gpu.pipeline(
        shader,
        "main",
        &[
            ("TRANS_A", u32::from(spec.trans_a)),
            ("TRANS_B", u32::from(spec.trans_b)),
            ("ACT", act),
            ("ADD_BIAS", u32::from(bias.is_some())),
            ("ACCUMULATE", u32::from(spec.accumulate)),
        ],
    )?;
    let groups = [n.div_ceil(tile) as u64, m.div_ceil(tile) as u64];
    let max = u64::from(gpu.limits.max_compute_workgroups_per_dimension);
    if groups.iter().any(|&g| g > max) {
        return Err(GpuError::Limit(format!(
            "gemm [{m}, {n}] needs {groups:?} workgroups"
        )));
    }
    let bias_binding = match bias {
        Some(bias) => bias.binding(),
        None => gpu.dummy.as_entire_binding(),
    };
    Ok(gpu.dispatch(
        format!(
            "gemm {m}x{n}x{k}{}{}",
            if spec.trans_a { " A^T" } else { "" },
            if spec.trans_b { " B^T" } else { "" }
        ),
        pipeline,
        gpu.uniform("gemm params", &params),
        &[
            (1, a.binding()),
            (2, b.binding()),
            (3, c.binding()),
            (4, bias_binding),
        ],
        [groups[0] as u32, groups[1] as u32, 1],
    ))
}

/// Launches for the gradients of C = op(A) op(B) given dC: dA and dB, written into the
/// given matrices shaped like A and B.
pub fn gemm_backward(
    gpu: &Gpu,
    a: &Matrix,
    b: &Matrix,
    dc: &Matrix,
    da: Option<&Matrix>,
    db: Option<&Matrix>,
    spec: GemmSpec,
) -> Result<Vec<Dispatch>, GpuError> {
    let mut out = Vec::new();
    let plain = |trans_a, trans_b| GemmSpec {
        trans_a,
        trans_b,
        ..GemmSpec::default()
    };
    if let Some(da) = da {
        // d op(A) = dC op(B)^T; stored transposed, dA = op(B) dC^T.
        out.push(if spec.trans_a {
            gemm(gpu, b, dc, da, None, plain(spec.trans_b, true))?
        } else {
            gemm(gpu, dc, b, da, None, plain(false, !spec.trans_b))?
        });
    }
    if let Some(db) = db {
        // d op(B) = op(A)^T dC; stored transposed, dB = dC^T op(A).
        out.push(if spec.trans_b {
            gemm(gpu, dc, a, db, None, plain(true, spec.trans_a))?
        } else {
            gemm(gpu, a, dc, db, None, plain(!spec.trans_a, false))?
        });
    }
    Ok(out)
}
