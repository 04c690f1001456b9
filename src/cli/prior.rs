//! `--prior` of `sample`, `coverage` and `quality`: N(0, I), a Gaussian mixture fitted after
//! training to the training split's latent means (pythae's GaussianMixtureSampler), saved in
//! the run as `gmm-K.json` and reused while the weights and the seed are the same, or the
//! VampPrior a model learned (`train --prior vamp:K`). And `train --prior`.

use std::path::Path;

use anyhow::Context;

use super::{check_dims, progress_bar, say, DataArgs};
use crate::gpu::Gpu;
use crate::vae::checkpoint::{self, RunConfig};
use crate::vae::gmm::{file_name, fit, fit_per_class, Fitted, MixtureFile, MAX_ITERATIONS};
use crate::vae::Params;

/// `--prior`: where generated codes come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PriorArg {
    /// N(0, I).
    Normal,
    /// A mixture of K diagonal Gaussians fitted to the training split's latent means.
    Gmm(usize),
    /// The VampPrior the model learned.
    Vamp,
}

/// `train --prior`: the prior the model learns with.
#[derive(Clone, Copy, PartialEq)]
pub enum TrainPrior {
    Normal,
    /// The VampPrior with K pseudo-inputs.
    Vamp(usize),
}

/// Pseudo-inputs of `train --prior vamp` without a count (pythae's default).
pub const DEFAULT_PSEUDO: usize = 50;

pub fn parse_train_prior(s: &str) -> Result<TrainPrior, String> {
    let most = crate::graph::MAX_PSEUDO;
    match s.split_once(':') {
        None if s == "normal" => Ok(TrainPrior::Normal),
        None if s == "vamp" => Ok(TrainPrior::Vamp(DEFAULT_PSEUDO)),
        Some(("vamp", k)) => k
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=most).contains(k))
            .map(TrainPrior::Vamp)
            .ok_or_else(|| format!("vamp:{k}: the pseudo-inputs must be 1 to {most}")),
        _ => Err(format!("{s}: use normal, vamp or vamp:K")),
    }
}

/// As the flag takes it (messages name settings this way).
impl std::fmt::Debug for TrainPrior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainPrior::Normal => write!(f, "normal"),
            TrainPrior::Vamp(k) => write!(f, "vamp:{k}"),
        }
    }
}

impl TrainPrior {
    /// The model's VampPrior size (see `ModelConfig::vamp`).
    pub fn pseudo_inputs(self) -> Option<usize> {
        match self {
            TrainPrior::Normal => None,
            TrainPrior::Vamp(k) => Some(k),
        }
    }
}

/// Components of `--prior gmm` without a count.
pub const DEFAULT_COMPONENTS: usize = 10;

pub fn parse_prior(s: &str) -> Result<PriorArg, String> {
    let k = match s.split_once(':') {
        None if s == "normal" => return Ok(PriorArg::Normal),
        None if s == "gmm" => DEFAULT_COMPONENTS,
        None if s == "vamp" => return Ok(PriorArg::Vamp),
        Some(("gmm", k)) => k
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=256).contains(k))
            .ok_or_else(|| format!("gmm:{k}: the components must be 1 to 256"))?,
        _ => return Err(format!("{s}: use normal, gmm, gmm:K or vamp")),
    };
    Ok(PriorArg::Gmm(k))
}

impl PriorArg {
    /// The prior asked for, or the model's own: its VampPrior, else N(0, I).
    pub fn resolve(
        given: Option<PriorArg>,
        c: &crate::vae::ModelConfig,
    ) -> anyhow::Result<PriorArg> {
        match (given, c.vamp) {
            (Some(PriorArg::Vamp), None) => anyhow::bail!(
                "--prior vamp: this model learned no VampPrior (train it with --prior vamp:K)"
            ),
            (Some(p), _) => Ok(p),
            (None, Some(_)) => Ok(PriorArg::Vamp),
            (None, None) => Ok(PriorArg::Normal),
        }
    }

    /// The mixture this prior needs, if any (see `mixture`).
    pub fn mixture(
        self,
        gpu: &Gpu,
        run: (&Params, &RunConfig, &Path),
        data: &DataArgs,
        seed: u64,
    ) -> anyhow::Result<Option<Fitted>> {
        match self {
            PriorArg::Normal => Ok(None),
            PriorArg::Gmm(k) => mixture(gpu, run, data, k, seed).map(Some),
            PriorArg::Vamp => Ok(crate::vae::vamp::mixture(gpu, run.0)?.map(Fitted::Shared)),
        }
    }

    /// The prior in a file name: normal, gmm-K.
    pub fn file_stem(self) -> String {
        match self {
            PriorArg::Normal => "normal".into(),
            PriorArg::Gmm(k) => format!("gmm-{k}"),
            PriorArg::Vamp => "vamp".into(),
        }
    }

    /// How a picture's title says where its codes came from (a conditional model's
    /// mixtures are per class).
    pub fn describe(self, temperature: f32, conditional: bool) -> String {
        match self {
            PriorArg::Normal => match temperature {
                1.0 => "the prior N(0, I)".into(),
                t => format!("the prior N(0, {t}² I)"),
            },
            PriorArg::Gmm(k) => format!(
                "{} fitted to {} training codes{}",
                if conditional {
                    format!("{k}-Gaussian mixtures")
                } else {
                    format!("a {k}-Gaussian mixture")
                },
                if conditional { "each class's" } else { "the" },
                match temperature {
                    1.0 => String::new(),
                    t => format!(" (spread x{t})"),
                }
            ),
            PriorArg::Vamp => format!(
                "the learned VampPrior{}",
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

/// The K-component mixture of the model `params` of run `cfg` (one per class for a
/// conditional model): the one saved in `dir` when it was fitted to these weights, with
/// this seed, to this data; else one fitted now by EM (seeded) to the latent means of the
/// training split of `data` and saved there.
fn mixture(
    gpu: &Gpu,
    (params, cfg, dir): (&Params, &RunConfig, &Path),
    data: &DataArgs,
    k: usize,
    seed: u64,
) -> anyhow::Result<Fitted> {
    let fingerprint = format!("{:016x}", checkpoint::fingerprint(gpu, params)?);
    data.run_data_present(cfg)?;
    let input = data.for_run(cfg).context(NEEDS_DATA)?;
    let splits = input.load().context(NEEDS_DATA)?;
    let c = &cfg.model;
    check_dims(c, &splits.train)?;
    let train = &super::as_trained(cfg, splits.train, true);
    let data_fingerprint = format!("{:016x}", train.digest());
    // A conditional model's training images per class: each class with images has a
    // mixture, and only those.
    let counts: Option<Vec<usize>> = match c.classes {
        None => None,
        Some(classes) => Some(train.class_counts(classes).with_context(|| {
            format!(
                "--prior gmm on a conditional model fits each class's codes, and {} has no labels",
                input.dir().display()
            )
        })?),
    };
    let covers = |f: &Fitted| match (f, &counts) {
        (Fitted::PerClass(gs), Some(n)) => gs.iter().zip(n).all(|(g, &n)| g.is_some() == (n > 0)),
        _ => true,
    };
    let path = dir.join(file_name(k));
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<MixtureFile>(&text) {
            Ok(f)
                if f.fingerprint == fingerprint
                    && f.seed == seed
                    && f.data_fingerprint == data_fingerprint =>
            {
                let usable = f.mixture.check(c.latent, k, c.classes).and_then(|()| {
                    covers(&f.mixture).then_some(()).ok_or_else(|| {
                        "its classes are not those of the training images".to_string()
                    })
                });
                match usable {
                    Ok(()) => {
                        say!(
                            "prior: the {k}-Gaussian mixture in {} ({} codes of {})",
                            path.display(),
                            f.codes,
                            f.data.escape_debug()
                        );
                        return Ok(f.mixture);
                    }
                    Err(e) => log::warn!("{}: {e}; fitting again", path.display()),
                }
            }
            Ok(_) => log::info!(
                "{}: fitted to other weights, data or seed; fitting again",
                path.display()
            ),
            Err(e) => log::warn!("{}: unreadable ({e}); fitting again", path.display()),
        }
    }
    let bar = progress_bar(MAX_ITERATIONS as u64, "EM", "iterations");
    let (g, fitted) = match c.classes {
        None => {
            let codes = crate::vae::codec::encode(gpu, params, c, train, 1.0)?
                .codes
                .mu;
            let g = fit(gpu, &codes, c.latent, k, seed, &mut |it, ll| {
                bar.set_position(it as u64);
                bar.set_message(format!("log-likelihood {ll:.3}"));
            })?;
            let line = format!(
                "in {} EM iterations (log-likelihood {:.3} per code)",
                g.iterations, g.log_likelihood
            );
            (Fitted::Shared(g), line)
        }
        Some(classes) => {
            let names = input.run_class_names(cfg, None)?;
            let name = |l: u8| crate::data::class_name(&names, l);
            let counts = counts.as_deref().unwrap_or_default();
            let fewest = (0..=u8::MAX)
                .zip(counts)
                .filter(|&(_, &n)| n > 0)
                .min_by_key(|&(_, &n)| n);
            if let Some((l, &n)) = fewest.filter(|&(_, &n)| n < k) {
                anyhow::bail!(
                    "--prior gmm:{k} fits {k} Gaussians to each class's codes, and {} has {n} training images: ask for fewer (gmm:{n})",
                    name(l)
                );
            }
            let each = fit_per_class(gpu, (params, c), train, (k, seed), &mut |l, it, ll| {
                if it == 1 {
                    bar.reset();
                }
                bar.set_position(it as u64);
                bar.set_message(format!("{}: log-likelihood {ll:.3}", name(l)));
            })?;
            let fitted = each.iter().flatten().count();
            let line = format!(
                "one mixture per class ({fitted} of {classes} classes have training images)"
            );
            (Fitted::PerClass(each), line)
        }
    };
    bar.finish_and_clear();
    let file = MixtureFile {
        fingerprint,
        seed,
        codes: train.count,
        data: input.dir().display().to_string(),
        data_fingerprint,
        mixture: g.clone(),
    };
    // The run's own file at a fixed name; a run that cannot be written still samples.
    let kept = match crate::io::write_atomic(&path, serde_json::to_string_pretty(&file)?.as_bytes())
    {
        Ok(()) => format!("saved in {}", path.display()),
        Err(e) => {
            log::warn!(
                "{}: not saved ({e}); the next run fits it again",
                path.display()
            );
            "not saved".into()
        }
    };
    say!(
        "prior: fitted {} to the latent means of {} training records, {fitted}, {kept}",
        super::plural(k, "Gaussian"),
        train.count,
    );
    Ok(g)
}

/// The mixtures saved in run `dir` that were fitted to these weights (of model `c`), by
/// component count.
pub fn saved(
    gpu: &Gpu,
    params: &Params,
    c: &crate::vae::ModelConfig,
    dir: &Path,
) -> anyhow::Result<Vec<(usize, Fitted)>> {
    let fingerprint = format!("{:016x}", checkpoint::fingerprint(gpu, params)?);
    Ok((1..=256)
        .filter_map(|k| {
            let text = std::fs::read_to_string(dir.join(file_name(k))).ok()?;
            let f: MixtureFile = serde_json::from_str(&text)
                .map_err(|e| log::warn!("{}: unreadable ({e})", dir.join(file_name(k)).display()))
                .ok()?;
            let usable = f
                .mixture
                .check(c.latent, k, c.classes)
                .map_err(|e| log::warn!("{}: {e}; left out", dir.join(file_name(k)).display()));
            (f.fingerprint == fingerprint && usable.is_ok()).then_some((k, f.mixture))
        })
        .collect())
}
