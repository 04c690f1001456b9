//! Files vae-gpu writes and reads: safetensors checkpoints, PNG grids and charts, and
//! atomic, durable replacement so a crash or a full disk never leaves a half-written file.

pub mod chart;
pub mod codes;
pub mod png;
pub mod safetensors;

use std::io::{Read, Write};
use std::path::Path;

/// FNV-1a, 64 bits: a stable hash (std's hasher may change between releases) for
/// checksums and cache keys.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads a whole input file. Anything but a regular file (a device such as /dev/zero, a
/// FIFO), even behind a symlink, is refused: reading it might never end or might exhaust
/// memory.
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    // Checked before opening too: opening a FIFO blocks until a writer appears.
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a directory, a device or a pipe)",
        ));
    }
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a directory, a device or a pipe)",
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `read_input` for text files.
pub fn read_input_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_input(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The directory a file path lives in ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` through a uniquely named temporary file in the same directory,
/// synced, then renamed over `path`, and syncs the directory so the rename survives a crash.
/// Readers see the old file or the new one, never part of one; on an error (a full disk)
/// the temporary file is removed and the old file stays as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A symlink is followed (its target is replaced); anything but a regular file (a device,
    // a directory, a FIFO) is refused rather than replaced.
    let resolved;
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = std::fs::canonicalize(path)?;
            resolved.as_path()
        }
        _ => path,
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(std::io::Error::other(
                "exists and is not a regular file (a directory or a device); choose a file path",
            ))
        }
        _ => {}
    }
    let dir = parent_dir(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".vae-gpu-").suffix(".tmp");
    // Readable by others like any file the user writes (tempfile's default is private).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Creates `path` with `bytes` and syncs it (for files inside a fresh temporary directory
/// that is published as a whole).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes the directory's entries (creations, renames) durable. A no-op where directories
/// cannot be opened as files (Windows).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
