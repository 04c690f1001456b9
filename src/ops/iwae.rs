//! Importance-weighted bound launcher (see shaders/iwae.wgsl).

use super::shape_err;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct IwaeParams {
    rows: u32,
    valid: u32,
    z: u32,
    ld_mulv: u32,
    ld_z: u32,
    image: u32,
    mc_kl: u32,
    pad: u32,
}

/// The empty log-sum-exp state (max, sum) the GPU merges into.
pub const EMPTY: [f32; 2] = [-3.0e38, 0.0];

/// Merges the log-weights of the first `valid` rows into state[image]; `state` holds one
/// (max, sum) pair per image, packed ([1, 2 * images]). Rewrite the target with `set`.
pub struct IwaeDispatch {
    pub dispatch: Dispatch,
    params: IwaeParams,
}

impl IwaeDispatch {
    pub fn set(&mut self, gpu: &Gpu, image: usize, valid: usize) {
        self.params.image = image as u32;
        self.params.valid = valid.min(self.params.rows as usize) as u32;
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
    }
}

/// `mc_kl`: the per-sample KL column is each sample's Monte-Carlo KL (a VampPrior's), which
/// the weights take as it is; else they compute the standard prior's from z and eps.
pub fn iwae(
    gpu: &Gpu,
    mc_kl: bool,
    per_sample: &Matrix,
    mulv: &Matrix,
    z: &Matrix,
    eps: &Matrix,
    state: &Matrix,
) -> Result<IwaeDispatch, GpuError> {
    let rows = z.rows;
    if per_sample.rows != rows
        || per_sample.ld != 4
        || mulv.rows != rows
        || mulv.cols != 2 * z.cols
        || !z.same_shape(eps)
        || !state.cols.is_multiple_of(2)
    {
        return Err(shape_err(
            "iwae",
            format!(
                "per-sample [{}, {}], mu|logvar [{}, {}], z [{rows}, {}]",
                per_sample.rows, per_sample.cols, mulv.rows, mulv.cols, z.cols
            ),
        ));
    }
    let params = IwaeParams {
        rows: rows as u32,
        valid: rows as u32,
        z: z.cols as u32,
        ld_mulv: mulv.ld as u32,
        ld_z: z.ld as u32,
        image: 0,
        mc_kl: u32::from(mc_kl),
        pad: 0,
    };
    let dispatch = gpu.dispatch(
        "iwae".into(),
        gpu.pipeline(Shader::Iwae, "iwae_main", &[])?,
        gpu.uniform("iwae params", &params),
        &[
            (1, per_sample.binding()),
            (2, mulv.binding()),
            (3, z.binding()),
            (4, eps.binding()),
            (5, state.binding()),
        ],
        [1, 1, 1],
    );
    Ok(IwaeDispatch { dispatch, params })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WeightParams {
    rows: u32,
    k: u32,
    valid: u32,
    ld4_logits: u32,
    ld_mulv: u32,
    mulv_cols: u32,
    average: u32,
    beta: f32,
    dreg: u32,
    pad: [u32; 3],
}

/// The importance-weighted objective of a training step (see shaders/iwae_weights.wgsl):
/// each record's K samples in K consecutive rows, their losses replaced by the record's
/// bound and their gradients weighted. Set the valid records and beta with `update`.
pub struct IwaeWeights {
    pub weights: Dispatch,
    pub scale: Dispatch,
    /// The doubly reparameterized estimator's second weighting of the code's gradient, to
    /// run where the backward has completed it (see shaders/iwae_weights.wgsl).
    pub code_scale: Option<Dispatch>,
    /// The rows' normalized weights [1, B K] after `weights` runs.
    pub normalized: Matrix,
    params: WeightParams,
}

impl IwaeWeights {
    /// Sets the valid records and the KL's weight (the loss rows' split of each bound).
    pub fn update(&mut self, gpu: &Gpu, records: usize, beta: f32) {
        self.params.valid = records.min((self.params.rows / self.params.k) as usize) as u32;
        self.params.beta = beta;
        gpu.queue
            .write_buffer(&self.weights.params, 0, bytemuck::bytes_of(&self.params));
    }

    pub fn launches(&self) -> [&Dispatch; 2] {
        [&self.weights, &self.scale]
    }
}

/// `per_sample` [B K, 3] (row stride 4), the logits' gradient [B K, D] and mu | logvar's
/// [B K, 2Z], K samples per record; `average`: equal weights (the K-sample ELBO) instead of
/// the importance weights; `dreg`: the code's gradient [B K, Z], weighed for the doubly
/// reparameterized estimator (with a pathwise KL, see `VampDispatch::set_pathwise`).
pub fn iwae_weights(
    gpu: &Gpu,
    (k, average): (usize, bool),
    per_sample: &Matrix,
    (dlogits, dmulv): (&Matrix, &Matrix),
    dreg: Option<&Matrix>,
) -> Result<IwaeWeights, GpuError> {
    let rows = per_sample.rows;
    if k == 0
        || !rows.is_multiple_of(k)
        || per_sample.ld != 4
        || dlogits.rows != rows
        || dmulv.rows != rows
        || dreg.is_some_and(|dz| dz.rows != rows || average)
    {
        return Err(shape_err(
            "iwae weights",
            format!(
                "{k} samples per record, per-sample [{rows}, {}], logits' gradient [{}, {}], mu|logvar's [{}, {}]",
                per_sample.cols, dlogits.rows, dlogits.cols, dmulv.rows, dmulv.cols
            ),
        ));
    }
    let weights = Matrix::zeros(gpu, 1, rows, "importance weights")?;
    let params = WeightParams {
        rows: rows as u32,
        k: k as u32,
        valid: (rows / k) as u32,
        ld4_logits: (dlogits.ld / 4) as u32,
        ld_mulv: dmulv.ld as u32,
        mulv_cols: dmulv.cols as u32,
        average: u32::from(average),
        beta: 1.0,
        dreg: u32::from(dreg.is_some()),
        pad: [0; 3],
    };
    let uniform = gpu.uniform("iwae weights params", &params);
    let weigh = gpu.dispatch(
        "iwae weights".into(),
        gpu.pipeline(Shader::IwaeWeights, "iwae_weights_main", &[])?,
        uniform.clone(),
        &[(1, per_sample.binding()), (2, weights.binding())],
        gpu.grid((rows / k).div_ceil(64) as u64)?,
    );
    let scale = gpu.dispatch(
        "iwae scale".into(),
        gpu.pipeline(Shader::IwaeWeights, "iwae_scale_main", &[])?,
        uniform,
        &[
            (2, weights.binding()),
            (3, dlogits.binding()),
            (4, dmulv.binding()),
        ],
        gpu.grid((rows * dlogits.ld / 4).div_ceil(256) as u64)?,
    );
    let code_scale = match dreg {
        Some(dz) => {
            // The same launch over the code's gradient alone (no mu | logvar columns).
            let p = WeightParams {
                ld4_logits: (dz.ld / 4) as u32,
                mulv_cols: 0,
                ..params
            };
            let none = Matrix::zeros(gpu, 1, 4, "no mu | logvar")?;
            Some(gpu.dispatch(
                "iwae code scale".into(),
                gpu.pipeline(Shader::IwaeWeights, "iwae_scale_main", &[])?,
                gpu.uniform("iwae code scale params", &p),
                &[
                    (2, weights.binding()),
                    (3, dz.binding()),
                    (4, none.binding()),
                ],
                gpu.grid((rows * dz.ld / 4).div_ceil(256) as u64)?,
            ))
        }
        None => None,
    };
    Ok(IwaeWeights {
        weights: weigh,
        scale,
        code_scale,
        normalized: weights,
        params,
    })
}
