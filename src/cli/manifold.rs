//! `vae-gpu manifold`: an n x n grid decoded from a regular grid over two latent dimensions,
//! placed through the Gaussian inverse CDF so it covers the prior evenly (as in Keras' VAE
//! example); the other dimensions stay at 0.

use std::path::PathBuf;

use clap::Args;

use super::traverse::parse_dims;
use super::{load_model, open_gpu, DeviceArgs, ModelArg};
use crate::vae::codec::decode_pixels;

#[derive(Args, Debug)]
pub struct ManifoldArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The two dimensions that span the grid.
    #[arg(long, default_value = "0,1")]
    pub dims: String,
    /// Images per side of the square grid.
    #[arg(long, alias = "n", default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub side: u32,
    #[command(flatten)]
    pub class: super::ClassArg,
    /// Output PNG [default: RUN/manifold.png]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

pub fn run(device: &DeviceArgs, a: &ManifoldArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    super::images_only(c)?;
    if c.latent < 2 {
        anyhow::bail!("a manifold spans two latent dimensions and this model has 1; `vae-gpu traverse` walks a single one");
    }
    let dims = parse_dims(&a.dims, c.latent)?;
    let class = a.class.labels(&cfg)?;
    if c.classes.is_some() && class.as_ref().is_none_or(|l| l.len() != 1) {
        return Err(super::class_needed(&cfg));
    }
    let [dx, dy] = dims[..] else {
        anyhow::bail!("--dims needs exactly two dimensions, got {}", a.dims);
    };
    if dx == dy {
        anyhow::bail!("--dims needs two different dimensions");
    }
    let n = a.side as usize;
    // Quantiles 0.05 .. 0.95, rows top to bottom with the second dimension decreasing.
    let q = |i: usize| normal_quantile(0.05 + 0.9 * i as f64 / (n - 1) as f64) as f32;
    let mut codes = Vec::with_capacity(n * n * c.latent);
    for row in 0..n {
        for col in 0..n {
            let mut z = vec![0.0; c.latent];
            z[dx] = q(col);
            z[dy] = q(n - 1 - row);
            codes.extend(z);
        }
    }
    let images = decode_pixels(&gpu, &params, c, &codes, class.as_deref())?;
    let out = super::output_path(a.out.as_deref(), || dir.join("manifold.png"))?;
    let labels = crate::io::png::Labels {
        title: format!(
            "Decoded over z{dx} (across) and z{dy} (down) at the prior's quantiles 5%..95%"
        ),
        rows: (0..n)
            .map(|r| format!("z{dy}={:+.2}", q(n - 1 - r)))
            .collect(),
        cols: (0..n).map(|col| format!("{:+.1}", q(col))).collect(),
    };
    crate::io::png::save_grid(&out, &images, (c.height, c.width, c.channels), n, &labels)?;
    super::report(
        &format!(
            "wrote {}: {n} x {n} grid over dimensions {dx} (across) and {dy} (down), z in [{:.2}, {:.2}]",
            out.display(),
            q(0),
            q(n - 1)
        ),
        serde_json::json!({"side": n, "dims": [dx, dy], "z_range": [q(0), q(n - 1)], "out": out}),
    );
    Ok(())
}
