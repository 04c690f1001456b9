//! `--prior` of `sample` and `coverage`: N(0, I), or a Gaussian mixture fitted after training
//! to the training split's latent means (pythae's GaussianMixtureSampler), saved in the run
//! as `gmm-K.json` and reused while the weights and the seed are the same.

use std::path::Path;

use anyhow::Context;

use super::{check_dims, output_path, progress_bar, say, DataArgs};
use crate::gpu::Gpu;
use crate::vae::checkpoint::{self, RunConfig};
use crate::vae::gmm::{file_name, fit, Gmm, MixtureFile, MAX_ITERATIONS};
use crate::vae::Params;

/// `--prior`: where generated codes come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PriorArg {
    /// N(0, I).
    Normal,
    /// A mixture of K diagonal Gaussians fitted to the training split's latent means.
    Gmm(usize),
}

/// Components of `--prior gmm` without a count.
pub const DEFAULT_COMPONENTS: usize = 10;

pub fn parse_prior(s: &str) -> Result<PriorArg, String> {
    let k = match s.split_once(':') {
        None if s == "normal" => return Ok(PriorArg::Normal),
        None if s == "gmm" => DEFAULT_COMPONENTS,
        Some(("gmm", k)) => k
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=256).contains(k))
            .ok_or_else(|| format!("gmm:{k}: the components must be 1 to 256"))?,
        _ => return Err(format!("{s}: use normal, gmm or gmm:K")),
    };
    Ok(PriorArg::Gmm(k))
}

impl PriorArg {
    /// The mixture this prior needs, if any (see `mixture`).
    pub fn mixture(
        self,
        gpu: &Gpu,
        run: (&Params, &RunConfig, &Path),
        data: &DataArgs,
        seed: u64,
    ) -> anyhow::Result<Option<Gmm>> {
        match self {
            PriorArg::Normal => Ok(None),
            PriorArg::Gmm(k) => mixture(gpu, run, data, k, seed).map(Some),
        }
    }

    /// The prior in a file name: normal, gmm-K.
    pub fn file_stem(self) -> String {
        match self {
            PriorArg::Normal => "normal".into(),
            PriorArg::Gmm(k) => format!("gmm-{k}"),
        }
    }

    /// How a picture's title says where its codes came from.
    pub fn describe(self, temperature: f32) -> String {
        match self {
            PriorArg::Normal => format!("the prior N(0, {temperature}² I)"),
            PriorArg::Gmm(k) => format!(
                "a {k}-Gaussian mixture fitted to the training codes{}",
                match temperature {
                    1.0 => String::new(),
                    t => format!(" (spread x{t})"),
                }
            ),
        }
    }
}

const NEEDS_DATA: &str =
    "--prior gmm fits a mixture to the training split's codes: give the training data with --data";

/// The K-component mixture of the model `params` of run `cfg`: the one saved in `dir` when
/// it was fitted to these weights, with this seed, to this data; else one fitted now by EM
/// (seeded) to the latent means of the training split of `data` and saved there.
fn mixture(
    gpu: &Gpu,
    (params, cfg, dir): (&Params, &RunConfig, &Path),
    data: &DataArgs,
    k: usize,
    seed: u64,
) -> anyhow::Result<Gmm> {
    let fingerprint = format!("{:016x}", checkpoint::fingerprint(gpu, params)?);
    let input = data.for_run(cfg).context(NEEDS_DATA)?;
    let source = input.dir().display().to_string();
    let path = dir.join(file_name(k));
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<MixtureFile>(&text) {
            Ok(f) if f.fingerprint == fingerprint && f.seed == seed && f.data == source => {
                say!(
                    "prior: the {k}-Gaussian mixture in {} ({} codes of {})",
                    path.display(),
                    f.codes,
                    f.data
                );
                return Ok(f.mixture);
            }
            Ok(_) => log::info!(
                "{}: fitted to other weights, data or seed; fitting again",
                path.display()
            ),
            Err(e) => log::warn!("{}: unreadable ({e}); fitting again", path.display()),
        }
    }
    let splits = input.load().context(NEEDS_DATA)?;
    let c = &cfg.model;
    check_dims(c, &splits.train)?;
    let codes = crate::vae::codec::encode(gpu, params, c, &splits.train, 1.0)?
        .codes
        .mu;
    let bar = progress_bar(MAX_ITERATIONS as u64, "EM", "iterations");
    let g = fit(gpu, &codes, c.latent, k, seed, &mut |it, ll| {
        bar.set_position(it as u64);
        bar.set_message(format!("log-likelihood {ll:.3}"));
    })?;
    bar.finish_and_clear();
    let out = output_path(None, || path.clone())?;
    let file = MixtureFile {
        fingerprint,
        seed,
        codes: splits.train.count,
        data: source,
        mixture: g.clone(),
    };
    crate::io::write_atomic(&out, serde_json::to_string_pretty(&file)?.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    say!(
        "prior: fitted {k} Gaussians to the latent means of {} training records in {} EM iterations (log-likelihood {:.3} per code), saved in {}",
        splits.train.count,
        g.iterations,
        g.log_likelihood,
        out.display()
    );
    Ok(g)
}

/// The mixtures saved in run `dir` that were fitted to these weights, by component count.
pub fn saved(gpu: &Gpu, params: &Params, dir: &Path) -> anyhow::Result<Vec<(usize, Gmm)>> {
    let fingerprint = format!("{:016x}", checkpoint::fingerprint(gpu, params)?);
    Ok((1..=256)
        .filter_map(|k| {
            let text = std::fs::read_to_string(dir.join(file_name(k))).ok()?;
            let f: MixtureFile = serde_json::from_str(&text).ok()?;
            (f.fingerprint == fingerprint).then_some((k, f.mixture))
        })
        .collect())
}
