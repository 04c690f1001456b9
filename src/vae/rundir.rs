//! A run directory and its checkpoints.
//!
//! ```text
//! RUN/checkpoint-0007/   model.safetensors, optimizer.safetensors, config.json
//! RUN/checkpoint-0010/   (the best and the last checkpoint are kept, older ones pruned)
//! RUN/metrics.jsonl, RUN/loss.png, RUN/.lock
//! ```
//!
//! A save writes a complete checkpoint into a fresh hidden directory, syncs every file and
//! the directory, and publishes it with one rename to `checkpoint-NNNN` (NNNN = epochs
//! done). Whatever dies when (a kill, a full disk), a reader sees whole checkpoints only:
//! the last one is the highest-numbered directory. Pruning renames a checkpoint out of the
//! way before deleting it, so a half-deleted one is never visible either. A process
//! training in a run holds an OS lock on `RUN/.lock`; the next one to take the lock removes
//! what dead processes left behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::io::sync_dir;

const CHECKPOINT_PREFIX: &str = "checkpoint-";
const TMP_PREFIX: &str = ".tmp-";
const TRASH_PREFIX: &str = ".trash-";
const LOCK_FILE: &str = ".lock";

/// The name of the checkpoint holding `epoch` epochs of training.
pub fn checkpoint_name(epoch: usize) -> String {
    format!("{CHECKPOINT_PREFIX}{epoch:04}")
}

/// The published checkpoints of a run directory, (epochs, path), oldest first.
pub fn checkpoints(dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            if !e.file_type().ok()?.is_dir() {
                return None;
            }
            let epoch = e
                .file_name()
                .to_str()?
                .strip_prefix(CHECKPOINT_PREFIX)?
                .parse()
                .ok()?;
            Some((epoch, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Whether `dir` is a run directory: one that holds checkpoints, or that a training
/// process locked and left nothing in but its lock and temporary files (a run stopped
/// before its first checkpoint).
pub fn is_run(dir: &Path) -> bool {
    if !checkpoints(dir).is_empty() {
        return true;
    }
    let lock = dir.join(LOCK_FILE);
    if !std::fs::symlink_metadata(&lock).is_ok_and(|m| m.is_file()) {
        return false;
    }
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).all(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == LOCK_FILE || is_temporary(&name)
        })
    })
}

/// Names of what an interrupted save or prune leaves, which the next run removes.
fn is_temporary(name: &str) -> bool {
    name.starts_with(TMP_PREFIX)
        || name.starts_with(TRASH_PREFIX)
        || (name.starts_with(".vae-gpu-") && name.ends_with(".tmp"))
}

/// Names a run gives its own files in its directory: training replaces or deletes what
/// they hold, and `sample --prior gmm` and `quality` keep their fits and scores there
/// (gmm-K.json, quality-*.json), so no other output may take them.
pub fn is_reserved(name: &str) -> bool {
    let kept = |prefix: &str| name.starts_with(prefix) && name.ends_with(".json");
    matches!(name, LOCK_FILE | "metrics.jsonl" | "loss.png")
        || name.starts_with(CHECKPOINT_PREFIX)
        || kept("gmm-")
        || kept("quality-")
        || is_temporary(name)
}

/// Files training rewrites in its run directory each epoch (see `vae::train`).
pub const RECORDS: [&str; 5] = [
    "metrics.jsonl",
    "loss.png",
    "samples.png",
    "reconstructions.png",
    "pseudo-inputs.png",
];

/// Whether `dir` (as it resolves) is one of a run's checkpoints.
pub fn is_checkpoint(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    dir.parent().is_some_and(|run| {
        checkpoints(run)
            .iter()
            .any(|(_, c)| c.canonicalize().is_ok_and(|c| c == dir))
    })
}

/// A run directory in exclusive use by one training process: its lock is released when
/// this is dropped, or by the OS when the process dies.
pub struct RunDir {
    path: PathBuf,
    _lock: File,
    created: bool,
}

impl RunDir {
    /// Creates `dir` if needed, takes its lock (failing at once if another process holds
    /// it), and removes temporary and half-pruned directories left by dead processes.
    pub fn lock(dir: &Path) -> anyhow::Result<RunDir> {
        if dir.exists() && !dir.is_dir() {
            bail!(
                "{}: not a directory (a run directory is expected)",
                dir.display()
            );
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let created = match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        };
        let path = dir.join(LOCK_FILE);
        // Never follow a link planted in place of the lock file: its target would be truncated.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            bail!(
                "{}: not a regular file; remove it if no vae-gpu process is training here",
                path.display()
            );
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "{}: another vae-gpu process{} is training in this run directory; wait for it to finish or choose another --out",
                    dir.display(),
                    match holder.trim() {
                        "" => String::new(),
                        pid => format!(" (pid {pid})"),
                    }
                );
            }
            Err(TryLockError::Error(e)) => bail!("{}: cannot lock: {e}", path.display()),
        }
        // The run's own files are replaced in place; a link there would have training
        // replace whatever it points to.
        for name in RECORDS {
            let record = dir.join(name);
            if std::fs::symlink_metadata(&record).is_ok_and(|m| m.file_type().is_symlink()) {
                bail!(
                    "{}: a link, not a regular file; a run writes its records itself, remove it",
                    record.display()
                );
            }
        }
        // The holder's pid, for the message above; the lock itself is what counts.
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(Result::ok)
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let removed = if !is_temporary(&name) {
                continue;
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                // An interrupted write_atomic of metrics.jsonl or loss.png.
                std::fs::remove_file(&path)
            };
            log::info!("removing {name}, left by an interrupted run");
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(RunDir {
            path: dir.to_path_buf(),
            _lock: file,
            created,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process created the directory when it took the lock.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Writes a checkpoint with `write` (which fills the directory it is given) and
    /// publishes it as `checkpoint-NNNN`. On an error nothing is published and the partial
    /// files are removed; the previous checkpoints stay as they were.
    pub fn publish(
        &self,
        epoch: usize,
        write: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        let dir = &self.path;
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{epoch}", std::process::id()));
        let written = (|| {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp)?;
            }
            std::fs::create_dir(&tmp)?;
            write(&tmp)?;
            sync_dir(&tmp)?;
            anyhow::Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        crash_point("publish");
        let target = dir.join(checkpoint_name(epoch));
        if target.exists() {
            self.discard(&target)?;
        }
        std::fs::rename(&tmp, &target)
            .and_then(|()| sync_dir(dir))
            .with_context(|| format!("publishing {}", target.display()))?;
        crash_point("published");
        Ok(target)
    }

    /// Removes every checkpoint but those in `keep`.
    pub fn prune(&self, keep: &[&Path]) -> anyhow::Result<()> {
        for (_, path) in checkpoints(&self.path) {
            if !keep.contains(&path.as_path()) {
                self.discard(&path)?;
            }
        }
        Ok(())
    }

    /// Renames a checkpoint out of sight (one atomic step), then deletes it.
    fn discard(&self, path: &Path) -> anyhow::Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let trash = self
            .path
            .join(format!("{TRASH_PREFIX}{}-{name}", std::process::id()));
        std::fs::rename(path, &trash).with_context(|| format!("removing {}", path.display()))?;
        crash_point("prune");
        std::fs::remove_dir_all(&trash).with_context(|| format!("removing {}", trash.display()))
    }
}

/// A test hook: `VAE_GPU_CRASH_AT=POINT[:N]` kills the process with SIGKILL the Nth time
/// (default 1st) it reaches POINT (publish, published, prune), so tests can prove that a
/// kill at any step of a save leaves a loadable run.
fn crash_point(point: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("VAE_GPU_CRASH_AT") else {
        return;
    };
    let (name, nth) = spec.split_once(':').unwrap_or((&spec, "1"));
    if name != point {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth.parse().unwrap_or(1) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}
