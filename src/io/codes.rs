//! The `.vae` codes file: latent means of images, quantized, so images can be stored as a
//! few bytes and decoded later by the same model.
//!
//! Layout, little-endian:
//!   magic    8 bytes  "VAECODES"
//!   version  u32      2 (1: without the model field)
//!   latent   u32      dimensions per code
//!   count    u32      number of codes
//!   bits     u32      8, 16 or 32
//!   model    u64      (version 2) fingerprint of the model's weights that encoded them
//!   (8/16 bits only) min  f32 x latent, then step f32 x latent: value = min + q * step
//!   data     count x latent values: u8, u16 or f32

use std::path::Path;

const MAGIC: &[u8; 8] = b"VAECODES";
const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct CodesError {
    pub path: String,
    pub problem: String,
}

/// Quantized codes.
#[derive(Clone, Debug, PartialEq)]
pub struct CodesFile {
    pub latent: usize,
    pub bits: u32,
    /// Per-dimension offset and step (empty for 32 bits).
    pub min: Vec<f32>,
    pub step: Vec<f32>,
    /// The quantized values, or the raw f32 bits for 32 bits.
    pub data: Vec<u32>,
    /// The fingerprint of the weights that encoded them (`checkpoint::fingerprint`); None
    /// in version 1 files.
    pub model: Option<u64>,
}

impl CodesFile {
    /// Quantizes codes ([count, latent]) of the model with fingerprint `model` with `bits`
    /// per value, uniformly between each dimension's min and max.
    pub fn quantize(codes: &[f32], latent: usize, bits: u32, model: u64) -> CodesFile {
        if bits == 32 {
            return CodesFile {
                latent,
                bits,
                min: vec![],
                step: vec![],
                data: codes.iter().map(|v| v.to_bits()).collect(),
                model: Some(model),
            };
        }
        let levels = ((1u64 << bits) - 1) as f32;
        let (mut min, mut max) = (vec![f32::MAX; latent], vec![f32::MIN; latent]);
        for row in codes.chunks(latent) {
            for j in 0..latent {
                min[j] = min[j].min(row[j]);
                max[j] = max[j].max(row[j]);
            }
        }
        let step: Vec<f32> = (0..latent)
            .map(|j| {
                if max[j] > min[j] {
                    (max[j] - min[j]) / levels
                } else {
                    1.0
                }
            })
            .collect();
        let data = codes
            .iter()
            .enumerate()
            .map(|(i, v)| {
                ((v - min[i % latent]) / step[i % latent])
                    .round()
                    .clamp(0.0, levels) as u32
            })
            .collect();
        CodesFile {
            latent,
            bits,
            min,
            step,
            data,
            model: Some(model),
        }
    }

    pub fn count(&self) -> usize {
        self.data.len() / self.latent.max(1)
    }

    /// The codes back as floats.
    pub fn values(&self) -> Vec<f32> {
        if self.bits == 32 {
            return self.data.iter().map(|&b| f32::from_bits(b)).collect();
        }
        self.data
            .iter()
            .enumerate()
            .map(|(i, &q)| self.min[i % self.latent] + q as f32 * self.step[i % self.latent])
            .collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let version = if self.model.is_some() { VERSION } else { 1 };
        for w in [version, self.latent as u32, self.count() as u32, self.bits] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        if let Some(model) = self.model {
            out.extend_from_slice(&model.to_le_bytes());
        }
        for v in self.min.iter().chain(&self.step) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for &q in &self.data {
            match self.bits {
                8 => out.push(q as u8),
                16 => out.extend_from_slice(&(q as u16).to_le_bytes()),
                _ => out.extend_from_slice(&q.to_le_bytes()),
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<CodesFile, CodesError> {
        let err = |problem: String| CodesError {
            path: path.display().to_string(),
            problem,
        };
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(err("not a vae-gpu codes file (wrong magic)".into()));
        }
        let word = |i: usize| {
            bytes
                .get(8 + 4 * i..12 + 4 * i)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let header = (0..4)
            .map(word)
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| err("truncated header".into()))?;
        let [version, latent, count, bits] = header[..] else {
            unreachable!()
        };
        if !(1..=VERSION).contains(&version) {
            return Err(err(format!(
                "version {version}, this build reads versions 1 to {VERSION}"
            )));
        }
        let (model, start) = match version {
            1 => (None, 24),
            _ => {
                let b = bytes
                    .get(24..32)
                    .ok_or_else(|| err("truncated header".into()))?;
                (Some(u64::from_le_bytes(b.try_into().expect("8 bytes"))), 32)
            }
        };
        if ![8, 16, 32].contains(&bits) || latent == 0 {
            return Err(err(format!(
                "bad header: {latent} dimensions at {bits} bits"
            )));
        }
        let (latent, count) = (latent as usize, count as usize);
        let scales = if bits == 32 { 0 } else { 2 * latent };
        let width = bits as usize / 8;
        let expected = count
            .checked_mul(latent * width)
            .and_then(|data| data.checked_add(start + 4 * scales))
            .ok_or_else(|| {
                err(format!(
                    "bad header: {count} codes of {latent} dimensions overflow"
                ))
            })?;
        if bytes.len() != expected {
            return Err(err(format!(
                "{} bytes, but the header ({count} codes of {latent} x {bits} bits) needs {expected}{}",
                bytes.len(),
                if bytes.len() < expected { " (truncated)" } else { "" }
            )));
        }
        let f32_at = |o: usize| f32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let min: Vec<f32> = (0..latent.min(scales))
            .map(|j| f32_at(start + 4 * j))
            .collect();
        let step: Vec<f32> = (0..latent.min(scales))
            .map(|j| f32_at(start + 4 * (latent + j)))
            .collect();
        // The largest code, min + (2^bits - 1) step, must be finite too.
        let top = ((1u64 << bits.min(31)) - 1) as f32;
        if let Some(j) = (0..latent.min(scales)).find(|&j| {
            !(min[j].is_finite() && step[j] > 0.0 && (min[j] + top * step[j]).is_finite())
        }) {
            return Err(err(format!(
                "dimension {j} has minimum {} and step {} (need a finite minimum and a positive step that keep all {top} levels finite)",
                min[j], step[j]
            )));
        }
        let data: Vec<u32> = bytes[start + 4 * scales..]
            .chunks(width)
            .map(|c| match width {
                1 => u32::from(c[0]),
                2 => u32::from(u16::from_le_bytes([c[0], c[1]])),
                _ => u32::from_le_bytes(c.try_into().expect("4 bytes")),
            })
            .collect();
        if bits == 32 {
            if let Some(i) = data
                .iter()
                .position(|&b: &u32| !f32::from_bits(b).is_finite())
            {
                return Err(err(format!(
                    "code value {i} is {}",
                    f32::from_bits(data[i])
                )));
            }
        }
        Ok(CodesFile {
            latent,
            bits,
            min,
            step,
            data,
            model,
        })
    }

    pub fn load(path: &Path) -> Result<CodesFile, CodesError> {
        let bytes = crate::io::read_input(path).map_err(|e| CodesError {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        CodesFile::from_bytes(&bytes, path)
    }
}
