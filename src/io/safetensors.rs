//! The safetensors format (an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the raw data), F32 tensors only. PyTorch and
//! JAX read it with the `safetensors` package.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

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

#[derive(Serialize, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Serialises tensors in the given order.
pub fn to_bytes(tensors: &[Tensor]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for t in tensors {
        let end = offset + t.data.len() * 4;
        let entry = Entry {
            dtype: "F32".into(),
            shape: t.shape.clone(),
            data_offsets: [offset, end],
        };
        header.insert(
            t.name.clone(),
            serde_json::to_value(entry).expect("entry serialises"),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).expect("header serialises");
    // Pad the header with spaces so the data starts 8-byte aligned.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    for t in tensors {
        out.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
    }
    out
}

/// Writes the file atomically.
pub fn save(path: &Path, tensors: &[Tensor]) -> Result<(), CheckpointError> {
    super::write_atomic(path, &to_bytes(tensors)).map_err(|e| err(path, e.to_string()))
}

/// Reads every tensor (F32 only), checking the header against the file's length.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or_else(|| err(path, "too short to be a safetensors file"))?;
    let header = bytes.get(8..8usize.saturating_add(n)).ok_or_else(|| {
        err(
            path,
            format!(
                "header of {n} bytes runs past the end of the file (truncated or not safetensors)"
            ),
        )
    })?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| err(path, format!("bad header: {e}")))?;
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry =
            serde_json::from_value(value).map_err(|e| err(path, format!("tensor {name}: {e}")))?;
        if e.dtype != "F32" {
            return Err(err(
                path,
                format!("tensor {name} is {}, only F32 is supported", e.dtype),
            ));
        }
        let [start, end] = e.data_offsets;
        let bytes = e
            .shape
            .iter()
            .try_fold(4usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                err(
                    path,
                    format!("tensor {name}: shape {:?} overflows", e.shape),
                )
            })?;
        if end < start || end - start != bytes || end > data.len() {
            return Err(err(path, format!("tensor {name}: byte range {start}..{end} does not fit shape {:?} in {} data bytes", e.shape, data.len())));
        }
        let values = data[start..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.insert(
            name.clone(),
            Tensor {
                name,
                shape: e.shape,
                data: values,
            },
        );
    }
    Ok(out)
}
