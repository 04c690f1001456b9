//! GroupNorm with affine parameters and a fused activation (shaders/groupnorm.wgsl):
//! three launches forward, four backward, over dense [B * H * W, C] images.

use super::{shape_err, Activation, GradEpilogue};
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

/// Pixels per partial sum (ROWS in shaders/groupnorm.wgsl).
const ROWS: usize = 64;

/// PyTorch's default epsilon.
pub const EPS: f32 = 1e-5;

/// A GroupNorm over `batch` images of `hw` pixels and `c` channels in `groups` groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormGeom {
    pub batch: usize,
    pub hw: usize,
    pub c: usize,
    pub groups: usize,
}

impl NormGeom {
    fn chunks(&self) -> usize {
        self.hw.div_ceil(ROWS)
    }

    /// Checks the geometry and that `m` is the dense [B * HW, C] image it describes.
    fn check(&self, m: &Matrix, what: &str) -> Result<(), GpuError> {
        let g = self;
        if g.c == 0 || !g.c.is_multiple_of(4) || g.groups == 0 || !g.c.is_multiple_of(g.groups) {
            return Err(shape_err(
                "group_norm",
                format!(
                    "{} channels in {} groups: channels must be a positive multiple of 4 and of the groups",
                    g.c, g.groups
                ),
            ));
        }
        if (m.rows, m.cols, m.ld) != (g.batch * g.hw, g.c, g.c) {
            return Err(shape_err(
                "group_norm",
                format!(
                    "{what} is [{}, {}] (stride {}), expected a dense [{}, {}]",
                    m.rows,
                    m.cols,
                    m.ld,
                    g.batch * g.hw,
                    g.c
                ),
            ));
        }
        Ok(())
    }

    /// The (mean, 1 / std) of every group: [batch, 2 * groups].
    pub fn stats_shape(&self) -> (usize, usize) {
        (self.batch, 2 * self.groups)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    batch: u32,
    hw: u32,
    c4: u32,
    groups: u32,
    chunks: u32,
    eps: f32,
    slope: f32,
    in_slope: f32,
}

impl NormParams {
    fn new(g: &NormGeom, act: Activation, in_act: Activation) -> NormParams {
        NormParams {
            batch: g.batch as u32,
            hw: g.hw as u32,
            c4: (g.c / 4) as u32,
            groups: g.groups as u32,
            chunks: g.chunks() as u32,
            eps: EPS,
            slope: act.code().1,
            in_slope: in_act.code().1,
        }
    }
}

fn constants(g: &NormGeom, act: Activation) -> Vec<(&'static str, u32)> {
    vec![("CG", (g.c / g.groups) as u32), ("ACT", act.code().0)]
}

/// y = act(GroupNorm(x) * gamma + beta), writing each group's (mean, rstd) into `stats`
/// ([batch, 2 * groups]) for the backward.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    gpu: &Gpu,
    g: &NormGeom,
    x: &Matrix,
    (gamma, beta): (&Matrix, &Matrix),
    y: &Matrix,
    stats: &Matrix,
    act: Activation,
) -> Result<Vec<Dispatch>, GpuError> {
    g.check(x, "x")?;
    g.check(y, "y")?;
    check_affine(g, gamma, beta)?;
    check_stats(g, stats)?;
    act.check()?;
    let params = gpu.uniform(
        "group_norm params",
        &NormParams::new(g, act, Activation::Identity),
    );
    let cells = g.batch * g.chunks() * g.c;
    let partial = Matrix::zeros(gpu, 2, cells, "group_norm partial sums")?;
    let k = constants(g, act);
    let launch = |entry: &'static str, bindings: &[(u32, wgpu::BindingResource<'_>)], n: usize| {
        Ok::<_, GpuError>(gpu.dispatch(
            format!("{entry} {}x{} g{}", g.batch * g.hw, g.c, g.groups),
            gpu.pipeline(Shader::GroupNorm, entry, &k)?,
            params.clone(),
            bindings,
            gpu.grid(n.div_ceil(256) as u64)?,
        ))
    };
    Ok(vec![
        launch(
            "gn_partial_main",
            &[(1, x.binding()), (3, partial.binding())],
            cells / 4,
        )?,
        launch(
            "gn_stats_main",
            &[(4, partial.binding()), (5, stats.binding())],
            g.batch * g.groups,
        )?,
        launch(
            "gn_apply_main",
            &[
                (1, x.binding()),
                (2, gamma.binding()),
                (13, beta.binding()),
                (6, stats.binding()),
                (7, y.binding()),
            ],
            g.batch * g.hw * g.c / 4,
        )?,
    ])
}

fn check_affine(g: &NormGeom, gamma: &Matrix, beta: &Matrix) -> Result<(), GpuError> {
    if gamma.rows * gamma.cols != g.c || beta.rows * beta.cols != g.c {
        return Err(shape_err(
            "group_norm",
            format!("affine parameters must have {} values", g.c),
        ));
    }
    Ok(())
}

fn check_stats(g: &NormGeom, stats: &Matrix) -> Result<(), GpuError> {
    let (r, c) = g.stats_shape();
    if (stats.rows, stats.cols) != (r, c) {
        return Err(shape_err("group_norm", format!("stats must be [{r}, {c}]")));
    }
    Ok(())
}

/// Gradients of `group_norm` given dy (w.r.t. its output, before the activation's
/// derivative, which this applies from x): dgamma and dbeta (overwritten) and dx through
/// the epilogue.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    gpu: &Gpu,
    g: &NormGeom,
    x: &Matrix,
    dy: &Matrix,
    (gamma, beta): (&Matrix, &Matrix),
    stats: &Matrix,
    (dgamma, dbeta): (&Matrix, &Matrix),
    dx: &Matrix,
    act: Activation,
    epilogue: GradEpilogue<'_>,
) -> Result<Vec<Dispatch>, GpuError> {
    g.check(x, "x")?;
    g.check(dy, "dy")?;
    g.check(dx, "dx")?;
    check_affine(g, gamma, beta)?;
    check_affine(g, dgamma, dbeta)?;
    check_stats(g, stats)?;
    act.check()?;
    let (ep, in_slope) = epilogue.constants(dx)?;
    let mut params = NormParams::new(g, act, Activation::Identity);
    params.in_slope = in_slope;
    let params = gpu.uniform("group_norm backward params", &params);
    let cells = g.batch * g.chunks() * g.c;
    let partial = Matrix::zeros(gpu, 2, cells, "group_norm gradient partial sums")?;
    let coef = Matrix::zeros(gpu, g.batch, 4 * g.groups, "group_norm coefficients")?;
    let mut k = constants(g, act);
    let launch = |entry: &'static str,
                  k: &[(&'static str, u32)],
                  bindings: &[(u32, wgpu::BindingResource<'_>)],
                  n: usize| {
        Ok::<_, GpuError>(gpu.dispatch(
            format!("{entry} {}x{} g{}", g.batch * g.hw, g.c, g.groups),
            gpu.pipeline(Shader::GroupNorm, entry, k)?,
            params.clone(),
            bindings,
            gpu.grid(n.div_ceil(256) as u64)?,
        ))
    };
    let mut out = vec![
        launch(
            "gn_grad_partial_main",
            &k,
            &[
                (1, x.binding()),
                (2, gamma.binding()),
                (13, beta.binding()),
                (6, stats.binding()),
                (8, dy.binding()),
                (3, partial.binding()),
            ],
            cells / 4,
        )?,
        launch(
            "gn_param_grad_main",
            &k,
            &[
                (4, partial.binding()),
                (9, dgamma.binding()),
                (14, dbeta.binding()),
            ],
            g.c,
        )?,
        launch(
            "gn_coef_main",
            &k,
            &[
                (4, partial.binding()),
                (10, gamma.binding()),
                (6, stats.binding()),
                (5, coef.binding()),
            ],
            g.batch * g.groups,
        )?,
    ];
    k.extend(ep);
    out.push(launch(
        "gn_grad_apply_main",
        &k,
        &[
            (1, x.binding()),
            (2, gamma.binding()),
            (13, beta.binding()),
            (6, coef.binding()),
            (8, dy.binding()),
            (12, dx.binding()),
        ],
        g.batch * g.hw * g.c / 4,
    )?);
    Ok(out)
}
