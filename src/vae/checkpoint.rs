//! Run directories: model.safetensors (PyTorch names and layouts), optimizer.safetensors
//! (Adam moments), config.json (architecture, training settings, progress). Every file is
//! replaced atomically, so an interrupted save leaves the previous checkpoint intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::params::Params;
use super::{ModelConfig, RunState, TrainConfig};
use crate::gpu::{read_buffer, Gpu};
use crate::io::safetensors::{self, Tensor};
use crate::ops::loss::Likelihood;

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "config.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub train: Option<TrainConfig>,
    #[serde(default)]
    pub state: RunState,
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

/// Like `tensors`, from any buffer laid out like the parameters (e.g. the gradients).
pub fn tensors_of(
    gpu: &Gpu,
    params: &Params,
    buffer: &wgpu::Buffer,
) -> anyhow::Result<Vec<Tensor>> {
    let flat = read_flat(gpu, buffer, params.len)?;
    let mut out = Vec::new();
    for layer in &params.layers {
        let mut row0 = 0;
        for (name, rows) in &layer.parts {
            for (slot, suffix) in [(&layer.weight, "weight"), (&layer.bias, "bias")] {
                let is_bias = slot.rows == 1;
                let (r0, nrows) = if is_bias { (0, 1) } else { (row0, *rows) };
                let mut data = Vec::new();
                for r in r0..r0 + nrows {
                    let base = slot.offset + r * slot.ld();
                    if is_bias {
                        data.extend_from_slice(&flat[base + row0..base + row0 + rows]);
                    } else {
                        data.extend_from_slice(&flat[base..base + slot.cols]);
                    }
                }
                let shape = if is_bias {
                    vec![*rows]
                } else {
                    vec![*rows, slot.cols]
                };
                out.push(Tensor {
                    name: format!("{name}.{suffix}"),
                    shape,
                    data,
                });
            }
            row0 += rows;
        }
    }
    Ok(out)
}

/// Writes the model's tensors from a name -> tensor map, checking names and shapes.
pub fn set_tensors(
    gpu: &Gpu,
    params: &Params,
    mut map: BTreeMap<String, Tensor>,
    source: &Path,
) -> anyhow::Result<()> {
    let mut flat = vec![0f32; params.len];
    for layer in &params.layers {
        let mut row0 = 0;
        for (name, rows) in &layer.parts {
            for (slot, suffix) in [(&layer.weight, "weight"), (&layer.bias, "bias")] {
                let key = format!("{name}.{suffix}");
                let is_bias = slot.rows == 1;
                let want = if is_bias {
                    vec![*rows]
                } else {
                    vec![*rows, slot.cols]
                };
                let t = map.remove(&key).with_context(|| {
                    format!(
                        "{}: tensor {key} is missing (expected shape {want:?})",
                        source.display()
                    )
                })?;
                if t.shape != want {
                    bail!(
                        "{}: tensor {key} has shape {:?}, the model config needs {want:?}",
                        source.display(),
                        t.shape
                    );
                }
                for (i, &v) in t.data.iter().enumerate() {
                    let idx = if is_bias {
                        slot.offset + row0 + i
                    } else {
                        slot.offset + (row0 + i / slot.cols) * slot.ld() + i % slot.cols
                    };
                    flat[idx] = v;
                }
            }
            row0 += rows;
        }
    }
    if let Some(extra) = map.keys().next() {
        bail!(
            "{}: unexpected tensor {extra}: the checkpoint is from another architecture",
            source.display()
        );
    }
    gpu.queue
        .write_buffer(&params.values, 0, bytemuck::cast_slice(&flat));
    Ok(())
}

/// Saves the whole run state into `dir`.
pub fn save(gpu: &Gpu, dir: &Path, params: &Params, config: &RunConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    safetensors::save(&dir.join(MODEL_FILE), &tensors(gpu, params)?)?;
    let moments = [("exp_avg", &params.m), ("exp_avg_sq", &params.v)]
        .into_iter()
        .map(|(name, buf)| {
            Ok(Tensor {
                name: name.into(),
                shape: vec![params.len],
                data: read_flat(gpu, buf, params.len)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    safetensors::save(&dir.join(OPTIMIZER_FILE), &moments)?;
    // config.json goes last: it names the progress the other two files hold.
    let json = serde_json::to_vec_pretty(config)?;
    crate::io::write_atomic(&dir.join(CONFIG_FILE), &json)
        .with_context(|| format!("writing {}", dir.join(CONFIG_FILE).display()))
}

/// Guesses the MLP config of a bare PyTorch checkpoint (model.safetensors without
/// config.json): widths from the tensor shapes, square grayscale images, Bernoulli.
fn infer_config(map: &BTreeMap<String, Tensor>, path: &Path) -> anyhow::Result<ModelConfig> {
    let shape = |name: &str| map.get(name).map(|t| t.shape.clone());
    let fc1 = shape("fc1.weight").with_context(|| {
        format!(
            "{}: no config.json beside it and no fc1.weight to infer the model from",
            path.display()
        )
    })?;
    let latent =
        shape("fc21.weight").with_context(|| format!("{}: no fc21.weight", path.display()))?[0];
    let d = fc1[1];
    let mut hidden = vec![fc1[0]];
    while let Some(s) = shape(&format!("fc1_{}.weight", hidden.len())) {
        hidden.push(s[0]);
    }
    let side = (d as f64).sqrt().round() as usize;
    if side * side != d {
        bail!(
            "{}: input size {d} is not a square image; add a config.json",
            path.display()
        );
    }
    Ok(ModelConfig {
        arch: "mlp".into(),
        height: side,
        width: side,
        channels: 1,
        hidden,
        latent,
        likelihood: Likelihood::Bernoulli,
        gauss_var: 1.0,
    })
}

/// Reads a run directory (or a bare model.safetensors) into a new parameter set on `gpu`.
/// Adam moments are loaded too when `with_optimizer`.
pub fn load(gpu: &Gpu, path: &Path, with_optimizer: bool) -> anyhow::Result<(RunConfig, Params)> {
    let (dir, model_path) = if path.is_dir() {
        (path.to_path_buf(), path.join(MODEL_FILE))
    } else {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path.to_path_buf(),
        )
    };
    let map = safetensors::load(&model_path)?;
    let config_path = dir.join(CONFIG_FILE);
    let config: RunConfig = if config_path.exists() {
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a vae-gpu config", config_path.display()))?
    } else {
        RunConfig {
            model: infer_config(&map, &model_path)?,
            train: None,
            state: RunState::default(),
        }
    };
    if config.model.arch != "mlp" {
        bail!(
            "{}: architecture '{}' is not supported by this build",
            config_path.display(),
            config.model.arch
        );
    }
    let params = Params::new(gpu, &config.model, 0)?;
    set_tensors(gpu, &params, map, &model_path)?;
    if with_optimizer {
        let opt_path = dir.join(OPTIMIZER_FILE);
        let mut opt = safetensors::load(&opt_path)?;
        for (name, buf) in [("exp_avg", &params.m), ("exp_avg_sq", &params.v)] {
            let t = opt
                .remove(name)
                .with_context(|| format!("{}: missing {name}", opt_path.display()))?;
            if t.data.len() != params.len {
                bail!(
                    "{}: {name} holds {} values, the model has {}",
                    opt_path.display(),
                    t.data.len(),
                    params.len
                );
            }
            gpu.queue
                .write_buffer(buf, 0, bytemuck::cast_slice(&t.data));
        }
    }
    Ok((config, params))
}

/// The most recently written run under `runs/` (the default `--model`).
pub fn newest_run(root: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(root).with_context(|| {
        format!(
            "no runs found: {} does not exist (train a model first, or pass --model)",
            root.display()
        )
    })?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(MODEL_FILE).exists())
        .max_by_key(|p| {
            p.join(MODEL_FILE)
                .metadata()
                .and_then(|m| m.modified())
                .ok()
        })
        .with_context(|| {
            format!(
                "no trained model under {} (train one first, or pass --model)",
                root.display()
            )
        })
}
