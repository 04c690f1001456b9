//! Files vae-gpu writes and reads: safetensors checkpoints, PNG grids and charts, and
//! atomic replacement so a crash never leaves a half-written file.

pub mod codes;
pub mod font;
pub mod png;
pub mod safetensors;

use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so readers see the old file or the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
