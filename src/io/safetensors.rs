//! Checkpoint tensors in the safetensors format, through the `safetensors` crate (which
//! checks that the header's byte ranges are in order, non-overlapping and cover the file
//! exactly). vae-gpu writes F32 with its version and a checksum of the data in the
//! metadata; it reads F32, F16 and BF16 (converted to f32), and rejects NaN/Inf values and
//! data whose checksum does not match. PyTorch and JAX read the files with `safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

/// A named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct CheckpointError {
    pub path: String,
    pub problem: String,
}

fn err(path: &Path, problem: impl Into<String>) -> CheckpointError {
    CheckpointError {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// Tensors by name and the file's metadata.
pub type Loaded = (BTreeMap<String, Tensor>, HashMap<String, String>);

/// Metadata key of the FNV-1a checksum of the data section.
const CHECKSUM: &str = "vae-gpu.fnv1a64";

/// Metadata key of the model's configuration (JSON) in a model file.
pub const MODEL_CONFIG: &str = "vae-gpu.model";

/// Serialises tensors (F32) with vae-gpu's version, the data's checksum and `extra` as
/// metadata.
pub fn to_bytes(tensors: &[Tensor], extra: &[(&str, String)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| bytemuck::cast_slice(&t.data).to_vec())
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), b).expect("shape matches data");
            (t.name.as_str(), view)
        })
        .collect();
    // The checksum covers the data as the crate lays it out: written as a placeholder of
    // the same length, then filled in.
    let placeholder = "0".repeat(16);
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("vae-gpu".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        (CHECKSUM.to_string(), placeholder.clone()),
    ]);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut out = safetensors::serialize(views, Some(metadata)).expect("f32 tensors serialise");
    let header = u64::from_le_bytes(out[..8].try_into().expect("8 bytes")) as usize;
    sort_metadata(&mut out[8..8 + header]);
    let sum = format!("{:016x}", super::fnv1a64(&out[8 + header..]));
    let key = format!("\"{CHECKSUM}\":\"{placeholder}\"");
    let at = out[8..8 + header]
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("the placeholder is in the header")
        + 8
        + key.len()
        - 17;
    out[at..at + 16].copy_from_slice(sum.as_bytes());
    out
}

/// Rewrites a header with its metadata keys sorted. The crate writes them in `HashMap`
/// order, which changes from run to run, so two runs with one seed wrote equal weights into
/// files that differed byte for byte. The sorted header holds the same characters, so it
/// has the same length and the tensor offsets stand (should it not, the crate's header is
/// kept: a valid file matters more than a reproducible one).
fn sort_metadata(header: &mut [u8]) {
    let json = header.trim_ascii_end();
    let sorted =
        serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(json).and_then(|mut top| {
            if let Some(meta) = top.get_mut("__metadata__") {
                let keys: BTreeMap<String, String> = serde_json::from_value(meta.take())?;
                *meta = serde_json::to_value(keys)?;
            }
            serde_json::to_vec(&top)
        });
    match sorted {
        Ok(sorted) if sorted.len() == json.len() => header[..sorted.len()].copy_from_slice(&sorted),
        _ => log::debug!("safetensors header left in the crate's key order"),
    }
}

/// Writes the file atomically.
pub fn save(path: &Path, tensors: &[Tensor]) -> Result<(), CheckpointError> {
    super::write_atomic(path, &to_bytes(tensors, &[])).map_err(|e| err(path, e.to_string()))
}

/// What a parse error means for a user.
fn explain(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "too short to be a safetensors file".into(),
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooLarge => {
            "header length runs past the end of the file (truncated or not safetensors)".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors do not cover the file exactly (truncated, or data after them)".into()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name}: byte range out of order or overlapping another tensor")
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        SafeTensorError::TensorInvalidInfo => "a tensor's byte range does not fit its shape".into(),
        other => format!("bad header: {other}"),
    }
}

/// A tensor's values as f32: F32 as is, F16 and BF16 converted.
fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let b = view.data();
    Some(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Reads every tensor, checking the layout, the checksum when the file has one, the dtype
/// (F32, F16 or BF16) and that every value is finite.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    Ok(load_with_metadata(path)?.0)
}

/// `load`, with the file's metadata (empty when it has none).
pub fn load_with_metadata(path: &Path) -> Result<Loaded, CheckpointError> {
    let bytes = super::read_input(path).map_err(|e| err(path, e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| err(path, explain(e)))?;
    let (header, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(path, explain(e)))?;
    if let Some(want) = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM)) {
        let got = format!("{:016x}", super::fnv1a64(&bytes[8 + header..]));
        if &got != want {
            return Err(err(
                path,
                format!("checksum {got} does not match the recorded {want}: the data is corrupt"),
            ));
        }
    }
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let data = to_f32(&view).ok_or_else(|| {
            err(
                path,
                format!(
                    "tensor {name} is {:?}; F32, F16 and BF16 are supported",
                    view.dtype()
                ),
            )
        })?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(err(
                path,
                format!(
                    "tensor {name} holds {} at index {i} (a diverged or corrupt checkpoint)",
                    data[i]
                ),
            ));
        }
        out.insert(
            name.clone(),
            Tensor {
                name,
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tensors_and_metadata_give_equal_bytes() {
        let tensors = [Tensor {
            name: "w".into(),
            shape: vec![2, 2],
            data: vec![1.0, -2.0, 0.5, 3.0],
        }];
        let extra: Vec<(&str, String)> = ["a", "m", "z", "b", "q", "k", "c"]
            .iter()
            .map(|k| (*k, format!("value of {k}")))
            .collect();
        let first = to_bytes(&tensors, &extra);
        for _ in 0..20 {
            assert_eq!(to_bytes(&tensors, &extra), first);
        }
        let file = SafeTensors::deserialize(&first).unwrap();
        assert_eq!(file.tensor("w").unwrap().shape(), [2, 2]);
        let (_, meta) = SafeTensors::read_metadata(&first).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["q"], "value of q");
        assert_eq!(meta.len(), 3 + extra.len());
    }
}
