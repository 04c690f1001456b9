//! A checkpoint: model.safetensors (PyTorch names and layouts), optimizer.safetensors (Adam
//! moments) and config.json (architecture, training settings, progress, the epoch's
//! figures) in one directory, which `rundir` writes and publishes as a whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::train::{Diverged, EpochMetrics};
use super::{rundir, ModelConfig, RunState, TrainConfig};
use crate::gpu::{read_buffer, Gpu};
use crate::graph::Params;
use crate::io::safetensors::{self, Tensor};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "config.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub train: Option<TrainConfig>,
    pub state: RunState,
    /// The figures of the epoch this checkpoint ends (what `Pick::Best` compares).
    #[serde(default)]
    pub metrics: Option<EpochMetrics>,
}

fn read_flat(gpu: &Gpu, buffer: &wgpu::Buffer, len: usize) -> anyhow::Result<Vec<f32>> {
    let bytes = read_buffer(gpu, buffer, 0, (len * 4) as u64)?;
    Ok(bytemuck::cast_slice(&bytes).to_vec())
}

/// The model's tensors under their PyTorch names, [out, in] weights; the fused heads are
/// split into fc21 (mu) and fc22 (logvar).
pub fn tensors(gpu: &Gpu, params: &Params) -> anyhow::Result<Vec<Tensor>> {
    tensors_of(gpu, params, &params.values)
}

/// Each checkpoint tensor of the model: (name, PyTorch shape, flat indices).
fn layout(params: &Params) -> Vec<(String, Vec<usize>, Vec<usize>)> {
    params
        .torch_layout()
        .into_iter()
        .map(|t| (t.name, t.shape, t.indices))
        .collect()
}

/// A fingerprint of a model's weights (FNV-1a of their bytes): a codes file records the
/// model that encoded it.
pub fn fingerprint(gpu: &Gpu, params: &Params) -> anyhow::Result<u64> {
    fingerprint_of(gpu, &params.values, params.len)
}

/// The same of any model's flat parameter buffer of `len` floats (a sequence model's).
pub fn fingerprint_of(gpu: &Gpu, values: &wgpu::Buffer, len: usize) -> anyhow::Result<u64> {
    let flat = read_flat(gpu, values, len)?;
    Ok(crate::io::fnv1a64(bytemuck::cast_slice(&flat)))
}

/// Like `tensors`, from any buffer laid out like the parameters (e.g. the gradients).
pub fn tensors_of(
    gpu: &Gpu,
    params: &Params,
    buffer: &wgpu::Buffer,
) -> anyhow::Result<Vec<Tensor>> {
    let flat = read_flat(gpu, buffer, params.len)?;
    Ok(layout(params)
        .into_iter()
        .map(|(name, shape, idx)| Tensor {
            name,
            shape,
            data: idx.iter().map(|&i| flat[i]).collect(),
        })
        .collect())
}

/// Writes the model's tensors from a name -> tensor map, checking names and shapes.
pub fn set_tensors(
    gpu: &Gpu,
    params: &Params,
    mut map: BTreeMap<String, Tensor>,
    source: &Path,
) -> anyhow::Result<()> {
    let mut flat = vec![0f32; params.len];
    for (name, want, idx) in layout(params) {
        let t = map.remove(&name).with_context(|| {
            format!(
                "{}: tensor {name} is missing (expected shape {want:?})",
                source.display()
            )
        })?;
        if t.shape != want {
            bail!(
                "{}: tensor {name} has shape {:?}, the model config needs {want:?}",
                source.display(),
                t.shape
            );
        }
        for (&i, &v) in idx.iter().zip(&t.data) {
            flat[i] = v;
        }
    }
    if let Some(extra) = map.keys().next() {
        bail!(
            "{}: tensor {extra} is not one of the model config's {} tensors (a file from another architecture, or one with tensors added)",
            source.display(),
            layout(params).len()
        );
    }
    gpu.queue
        .write_buffer(&params.values, 0, bytemuck::cast_slice(&flat));
    Ok(())
}

/// Writes a complete checkpoint (model, Adam moments, config) into `dir`, each file synced.
/// `rundir::publish` hands it a fresh directory and publishes it whole.
pub fn write(gpu: &Gpu, dir: &Path, params: &Params, config: &RunConfig) -> anyhow::Result<()> {
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        crate::io::write_synced(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    let model = tensors(gpu, params)?;
    // ReLU can hide a NaN weight from the loss; a checkpoint must never hold one.
    if let Some(t) = model.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
        return Err(Diverged(format!(
            "tensor {} became NaN/Inf; it was not saved",
            t.name
        ))
        .into());
    }
    // The model's config also travels inside the model file, for a file used on its own.
    let meta = [(
        safetensors::MODEL_CONFIG,
        serde_json::to_string(&config.model)?,
    )];
    file(MODEL_FILE, &safetensors::to_bytes(&model, &meta))?;
    file(
        OPTIMIZER_FILE,
        &moments_bytes(gpu, [&params.m, &params.v], params.len, MOMENTS)?,
    )?;
    file(CONFIG_FILE, &serde_json::to_vec_pretty(config)?)
}

/// The names of Adam's moments in an optimizer file: exp_avg and exp_avg_sq, as PyTorch's
/// Adam names them.
pub const MOMENTS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

/// The optimizer file of Adam's moments [m, v] of `len` floats each, under `names` (see
/// `MOMENTS`).
pub fn moments_bytes(
    gpu: &Gpu,
    moments: [&wgpu::Buffer; 2],
    len: usize,
    names: [&str; 2],
) -> anyhow::Result<Vec<u8>> {
    let tensors: Vec<Tensor> = names
        .into_iter()
        .zip(moments)
        .map(|(name, buf)| {
            Ok(Tensor {
                name: name.into(),
                shape: vec![len],
                data: read_flat(gpu, buf, len)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(safetensors::to_bytes(&tensors, &[]))
}

/// Reads the optimizer file at `path` (see `moments_bytes`) into Adam's moments [m, v] of
/// `len` floats each: both tensors under `names`, of that length, nothing else, and no
/// negative second moment.
pub fn load_moments(
    gpu: &Gpu,
    path: &Path,
    moments: [&wgpu::Buffer; 2],
    len: usize,
    names: [&str; 2],
) -> anyhow::Result<()> {
    let mut opt = safetensors::load(path)?;
    for (k, (name, buf)) in names.into_iter().zip(moments).enumerate() {
        let t = opt
            .remove(name)
            .with_context(|| format!("{}: missing {name}", path.display()))?;
        if t.shape != [len] {
            bail!(
                "{}: {name} has shape {:?}, the model needs [{len}]",
                path.display(),
                t.shape
            );
        }
        // A second moment is a running mean of squares: a negative one would reach a
        // square root in Adam.
        if k == 1 {
            if let Some(i) = t.data.iter().position(|&v| v < 0.0) {
                bail!(
                    "{}: exp_avg_sq[{i}] = {} is negative (a mean of squares cannot be)",
                    path.display(),
                    t.data[i]
                );
            }
        }
        gpu.queue
            .write_buffer(buf, 0, bytemuck::cast_slice(&t.data));
    }
    if let Some(extra) = opt.keys().next() {
        bail!(
            "{}: unexpected tensor {extra} (expected {} and {})",
            path.display(),
            names[0],
            names[1]
        );
    }
    Ok(())
}

/// Guesses the config of a bare PyTorch checkpoint (model.safetensors without config.json)
/// from its tensor shapes: square images, Bernoulli likelihood.
fn infer_config(map: &BTreeMap<String, Tensor>, path: &Path) -> anyhow::Result<ModelConfig> {
    let shape = |name: &str| map.get(name).map(|t| t.shape.clone());
    // The shape of a tensor that must exist with `rank` dimensions.
    let need = |name: &str, rank: usize| match shape(name) {
        Some(s) if s.len() == rank => Ok(s),
        Some(s) => bail!(
            "{}: {name} has shape {s:?}, expected {rank} dimensions",
            path.display()
        ),
        None => bail!(
            "{}: no config.json beside it and no {name} to infer the model from",
            path.display()
        ),
    };
    let square = |n: usize| Some((n as f64).sqrt().round() as usize).filter(|s| s * s == n);
    let mut c = ModelConfig {
        hidden: Vec::new(),
        latent: 0,
        gauss_var: 1.0,
        ..ModelConfig::mlp(0, 0, 1)
    };
    let side = if shape("enc_in.weight").is_some() {
        // ResNetVAE: the levels' widths from its blocks, the downsampling convolutions
        // between levels, and its blocks per level.
        c.arch = "resnet".into();
        c.hidden.clear();
        c.channels = need("enc_in.weight", 4)?[1];
        let mut level_blocks = vec![0usize];
        c.conv_channels = vec![need("enc_in.weight", 4)?[0]];
        for i in 0.. {
            if let Some(s) = shape(&format!("enc.{i}.conv1.weight")) {
                let last = level_blocks.len() - 1;
                if level_blocks[last] == 0 {
                    c.conv_channels[last] = s[0];
                }
                level_blocks[last] += 1;
            } else if let Some(s) = shape(&format!("enc.{i}.weight")) {
                level_blocks.push(0);
                c.conv_channels.push(s[0]);
            } else {
                break;
            }
        }
        c.blocks = level_blocks[0];
        if c.blocks == 0 || level_blocks.iter().any(|&b| b != c.blocks) {
            bail!(
                "{}: blocks per level {level_blocks:?} do not describe a vae-gpu resnet VAE",
                path.display()
            );
        }
        if c.conv_channels.len() > 8 || c.conv_channels.contains(&0) {
            bail!(
                "{}: level widths {:?} do not describe a vae-gpu resnet VAE (1 to 8 levels)",
                path.display(),
                c.conv_channels
            );
        }
        // GroupNorm's groups are not in a state_dict: ResNetVAE's default, 8.
        if let Some(w) = c.conv_channels.iter().find(|&&w| w % 8 != 0) {
            bail!(
                "{}: a width of {w} does not split into GroupNorm's 8 groups (ResNetVAE's default, assumed without a config.json); add a config.json that says model.groups",
                path.display()
            );
        }
        log::warn!(
            "{}: no config.json beside it; assuming GroupNorm in 8 groups (ResNetVAE's default)",
            path.display()
        );
        let enc = need("fc_enc.weight", 2)?;
        c.latent = enc[0] / 2;
        let last = *c.conv_channels.last().expect("enc_in exists");
        square(enc[1] / last.max(1)).map(|s| s << (c.conv_channels.len() - 1))
    } else if shape("conv1.weight").is_some() {
        c.arch = "conv".into();
        c.channels = need("conv1.weight", 4)?[1];
        while let Some(s) = shape(&format!("conv{}.weight", c.conv_channels.len() + 1)) {
            c.conv_channels.push(s[0]);
        }
        let enc = need("fc_enc.weight", 2)?;
        c.latent = enc[0] / 2;
        if c.conv_channels.len() > 8 || c.conv_channels.contains(&0) {
            bail!(
                "{}: conv widths {:?} do not describe a vae-gpu conv VAE",
                path.display(),
                c.conv_channels
            );
        }
        let last = *c.conv_channels.last().expect("conv1 exists");
        square(enc[1] / last).map(|s| s << c.conv_channels.len())
    } else {
        let fc1 = need("fc1.weight", 2)?;
        c.latent = need("fc21.weight", 2)?[0];
        c.hidden.push(fc1[0]);
        while let Some(s) = shape(&format!("fc1_{}.weight", c.hidden.len())) {
            c.hidden.push(s[0]);
        }
        // Stacked layers (see `model::mlp`): layer L's encoder encL [, encL_1 ...] and its
        // heads encL_mu | encL_logvar above the layer below.
        for level in 2.. {
            let Some(mu) = shape(&format!("enc{level}_mu.weight")) else {
                break;
            };
            let base = format!("enc{level}");
            let mut hidden = vec![need(&format!("{base}.weight"), 2)?[0]];
            while let Some(s) = shape(&format!("{base}_{}.weight", hidden.len())) {
                hidden.push(s[0]);
            }
            c.below.push(super::config::LowerLatent {
                latent: c.latent,
                hidden,
            });
            c.latent = mu[0];
        }
        square(fc1[1])
    };
    let side = side.with_context(|| {
        format!(
            "{}: the input is not a square image; add a config.json",
            path.display()
        )
    })?;
    (c.height, c.width) = (side, side);
    // A VampPrior's pseudo-inputs: [K, C, H, W] (or [K, D]).
    c.vamp = shape("pseudo_inputs").and_then(|s| s.first().copied());
    c.validate().map_err(|e| {
        anyhow::anyhow!("{}: the model its shapes describe has {e}", path.display())
    })?;
    Ok(c)
}

/// Which checkpoint of a run directory to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The one with the lowest test loss (what the commands that use a model load).
    Best,
    /// The newest (what `--resume` continues).
    Last,
}

/// Reads and validates a checkpoint's config.json.
pub fn read_config(path: &Path) -> anyhow::Result<RunConfig> {
    let text =
        crate::io::read_input_text(path).with_context(|| format!("reading {}", path.display()))?;
    let config: RunConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a vae-gpu config", path.display()))?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

impl RunConfig {
    /// Every field against its range, and the progress fields against each other (the step
    /// against the data happens at resume, which knows the data).
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        if let Some(t) = &self.train {
            t.validate(&self.model)?;
        }
        let s = &self.state;
        if s.epoch > 1_000_000 {
            return Err(format!("state.epoch = {}, expected 0..=1000000", s.epoch));
        }
        if s.epoch == 0 && s.step != 0 {
            return Err(format!(
                "state.step = {}, expected 0 before the first epoch",
                s.step
            ));
        }
        if s.epoch > 0 && !s.init_loss.is_some_and(f64::is_finite) {
            return Err(format!(
                "state.init_loss = {:?}, expected the run's first training loss once an epoch is done",
                s.init_loss
            ));
        }
        let Some(m) = &self.metrics else {
            return Ok(());
        };
        if (m.epoch, m.step) != (s.epoch, s.step) {
            return Err(format!(
                "metrics.epoch, metrics.step = {}, {} do not match state.epoch, state.step = {}, {}",
                m.epoch, m.step, s.epoch, s.step
            ));
        }
        // Free bits raise each dimension's KL to at least the floor in the total: by at most
        // latent x free_bits nats in all.
        let floor = self
            .train
            .as_ref()
            .map_or(0.0, |t| f64::from(t.free_bits) * self.model.latent as f64);
        let beta = f64::from(m.beta);
        // A Monte-Carlo KL (the VampPrior's, an importance-weighted step's) is an estimate:
        // its mean may fall below 0; the closed form may not.
        let estimated =
            self.model.vamp.is_some() || self.train.as_ref().is_some_and(|t| t.samples().k > 1);
        for (name, l) in [("train", &m.train), ("test", &m.test)] {
            // Nats per image: finite, a KL that is not negative, and the total the parts give.
            let (low, high) = (l.recon + beta * l.kl, l.recon + beta * (l.kl + floor));
            let tol = 1e-3 * (1.0 + high.abs());
            let ok = [l.recon, l.kl, l.total].iter().all(|v| v.is_finite())
                && (estimated || l.kl >= -1e-3)
                && l.total >= low - tol
                && l.total <= high + tol;
            if !ok {
                return Err(format!(
                    "metrics.{name}: reconstruction {}, KL {}, total {} at beta {beta}; expected finite losses with total = reconstruction + beta x KL{}",
                    l.recon,
                    l.kl,
                    l.total,
                    if floor > 0.0 { " (free bits add up to beta x latent x free_bits)" } else { "" }
                ));
            }
        }
        Ok(())
    }
}

/// The checkpoint `path` names: a bare model file, a checkpoint directory, or a run
/// directory, whose best or last checkpoint is picked.
pub fn resolve(path: &Path, pick: Pick) -> anyhow::Result<PathBuf> {
    let all = rundir::checkpoints(path);
    let Some((_, last)) = all.last() else {
        // A bare file, a single checkpoint, or a run written before checkpoint directories.
        if path.is_file() || path.join(MODEL_FILE).is_file() {
            return Ok(path.to_path_buf());
        }
        bail!(
            "{}: no checkpoint here (no {MODEL_FILE}, no checkpoint-NNNN directory)",
            path.display()
        );
    };
    if pick == Pick::Last {
        return Ok(last.clone());
    }
    // A damaged checkpoint is passed over, and said so: the best of the others is loaded.
    let test_loss = |dir: &Path| match read_config(&dir.join(CONFIG_FILE)) {
        Ok(cfg) => cfg.metrics.map(|m| m.test.total),
        Err(e) => {
            log::warn!("passing over {}: {e:#}", dir.display());
            None
        }
    };
    Ok(all
        .iter()
        .rev()
        .filter_map(|(_, dir)| Some((test_loss(dir)?, dir)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(last, |(_, dir)| dir)
        .clone())
}

/// Loads a checkpoint (see `resolve`) into a new parameter set on `gpu`, with Adam's moments
/// when `with_optimizer`. Returns the checkpoint's path too.
pub fn load(
    gpu: &Gpu,
    path: &Path,
    pick: Pick,
    with_optimizer: bool,
) -> anyhow::Result<(PathBuf, RunConfig, Params)> {
    let checkpoint = resolve(path, pick)?;
    let (dir, model_path) = if checkpoint.is_dir() {
        (checkpoint.clone(), checkpoint.join(MODEL_FILE))
    } else {
        (
            crate::io::parent_dir(&checkpoint).to_path_buf(),
            checkpoint.clone(),
        )
    };
    let (map, meta) = safetensors::load_with_metadata(&model_path)?;
    // The config the model file carries (vae-gpu writes one), checked as config.json is.
    let carried = match meta.get(safetensors::MODEL_CONFIG) {
        Some(json) => {
            let c: ModelConfig = serde_json::from_str(json).with_context(|| {
                format!(
                    "{}: metadata {}",
                    model_path.display(),
                    safetensors::MODEL_CONFIG
                )
            })?;
            c.validate()
                .map_err(|e| anyhow::anyhow!("{}: metadata {e}", model_path.display()))?;
            Some(c)
        }
        None => None,
    };
    let config_path = dir.join(CONFIG_FILE);
    let config: RunConfig = if config_path.exists() {
        let config = read_config(&config_path)?;
        if carried.as_ref().is_some_and(|c| *c != config.model) {
            bail!(
                "{} was written for another model than {} describes (files from two checkpoints?)",
                model_path.display(),
                config_path.display()
            );
        }
        config
    } else {
        RunConfig {
            model: match carried {
                Some(c) => c,
                None => infer_config(&map, &model_path)?,
            },
            train: None,
            state: RunState::default(),
            metrics: None,
        }
    };
    let params = config
        .model
        .params(gpu, 0)
        .with_context(|| format!("{}: the model it describes", config_path.display()))?;
    set_tensors(gpu, &params, map, &model_path)?;
    if with_optimizer {
        load_moments(
            gpu,
            &dir.join(OPTIMIZER_FILE),
            [&params.m, &params.v],
            params.len,
            MOMENTS,
        )?;
    }
    Ok((checkpoint, config, params))
}

/// The run under `root` with the most recently written checkpoint (the default `--model`).
pub fn newest_run(root: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(root).with_context(|| {
        format!(
            "no runs found: {} does not exist (train a model first, or pass --model)",
            root.display()
        )
    })?;
    let written = |run: &Path| {
        let checkpoint = resolve(run, Pick::Last).ok()?;
        let model = if checkpoint.is_dir() {
            checkpoint.join(MODEL_FILE)
        } else {
            checkpoint
        };
        model.metadata().and_then(|m| m.modified()).ok()
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| Some((written(&p)?, p)))
        .max()
        .map(|(_, p)| p)
        .with_context(|| {
            format!(
                "no trained model under {} (train one first, or pass --model)",
                root.display()
            )
        })
}
