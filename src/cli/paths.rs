//! Where outputs may go: the one place every command's output path (and `train`'s run
//! directory) is resolved against what the command reads and against a run's own files, so
//! that no output replaces an input, lands inside a data folder (where it would become
//! data), or overwrites or hides inside part of a run. Paths are compared where they lead:
//! links and `..` are resolved as the operating system would.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::vae::rundir;

/// What this process has read, resolved: (path, what it is, for the message).
static READS: Mutex<Vec<(PathBuf, &'static str)>> = Mutex::new(Vec::new());

/// Notes that the command reads `path` (`what`: "the command's data" ...): no output may
/// replace it, or be written inside it when it is a folder.
pub fn note_read(path: &Path, what: &'static str) {
    let at = resolved(path);
    READS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((at, what));
}

/// `path` made absolute and resolved one component at a time as the operating system
/// would: each existing prefix through its links, `..` against what it leads to, and the
/// part that does not exist yet (what the command will create) appended as given.
pub fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(c) = absolute.canonicalize() {
        return c;
    }
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => {
                out.push(other);
                if let Ok(c) = out.canonicalize() {
                    out = c;
                }
            }
        }
    }
    out
}

/// The input `out` (resolved) would replace or land inside: (input, what, inside).
fn clashing_input(out: &Path) -> Option<(PathBuf, &'static str, bool)> {
    let reads = READS.lock().unwrap_or_else(|e| e.into_inner());
    // The latest note first: what the command itself names before what a run implies.
    reads.iter().rev().find_map(|(read, what)| {
        if out == read {
            Some((read.clone(), *what, false))
        } else if read.is_dir() && out.starts_with(read) {
            Some((read.clone(), *what, true))
        } else {
            None
        }
    })
}

/// An output path (a flag's value parser): never `-`, since stdout carries the command's
/// summary and files are written whole, then renamed into place. Where the path may go is
/// decided by `output_path` once the command knows its inputs.
pub fn out_path(s: &str) -> Result<PathBuf, String> {
    if s == "-" {
        return Err(
            "'-': vae-gpu writes its results to files, not to stdout (which carries the summary); give a file path".into(),
        );
    }
    Ok(PathBuf::from(s))
}

/// Where a command writes its output (`out`, else `default`): see `check_output`. Called
/// once the inputs are known.
pub fn output_path(
    out: Option<&Path>,
    default: impl FnOnce() -> PathBuf,
) -> anyhow::Result<PathBuf> {
    let path = out.map_or_else(default, Path::to_path_buf);
    check_output(&path)?;
    Ok(path)
}

/// Refuses an output (file or directory) that is one of the command's inputs, lies inside
/// an input folder, or lies in a run where training would replace or delete it (see
/// `check_not_in_run`).
pub fn check_output(path: &Path) -> anyhow::Result<()> {
    let at = resolved(path);
    let shown = path.display();
    check_not_in_run(path, &at, false)?;
    if let Some((read, what, inside)) = clashing_input(&at) {
        if inside {
            anyhow::bail!(
                "{shown} is inside {}, {what}: an output there would become part of the input; write it elsewhere",
                read.display()
            );
        }
        anyhow::bail!(
            "{shown} is {what} ({}); write the output elsewhere",
            read.display()
        );
    }
    Ok(())
}

/// Refuses a path (`at`, resolved) inside a run's checkpoint (training prunes checkpoints
/// with what they hold), or named in a run as training names its own files (records,
/// checkpoints, temporary and discarded directories, which training replaces or deletes),
/// or, for a new run (`new_run`), anywhere inside another run.
fn check_not_in_run(path: &Path, at: &Path, new_run: bool) -> anyhow::Result<()> {
    for dir in at.ancestors().skip(1) {
        if rundir::is_checkpoint(dir) {
            anyhow::bail!(
                "{} is inside the checkpoint {}, which training prunes with what it holds; choose another path",
                path.display(),
                dir.display()
            );
        }
        if !rundir::is_run(dir) {
            continue;
        }
        if new_run {
            anyhow::bail!(
                "{} is inside the run {}; put a new run beside it",
                path.display(),
                dir.display()
            );
        }
        let child = at
            .strip_prefix(dir)
            .ok()
            .and_then(|r| r.components().next());
        let name = child.map(|c| c.as_os_str().to_string_lossy().into_owned());
        if name.as_deref().is_some_and(rundir::is_reserved) {
            anyhow::bail!(
                "{} would write over a run's record or into a name training uses in {} (metrics.jsonl, loss.png, .lock, checkpoint-*, gmm-*.json, quality-*.json, .tmp-*, .trash-*); choose another path",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Checks the directory a new training run writes to: it must not exist, be empty, or
/// already be a run (which `train` then refuses or resumes); it must lie neither inside the
/// `data` it trains on (its charts would become training images) nor inside another run.
pub fn check_run_dir(dir: &Path, data: &Path) -> anyhow::Result<()> {
    check_outside_data(dir, data)?;
    let at = resolved(dir);
    check_not_in_run(dir, &at, true)?;
    if !dir.is_dir() || rundir::is_run(dir) {
        return Ok(());
    }
    let entries: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if let Some(first) = entries.first() {
        anyhow::bail!(
            "--out {}: an existing directory that is not a vae-gpu run (it holds {} entr{}, e.g. {first}); a run would replace files there. Give a new or empty directory",
            dir.display(),
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}

/// Refuses a run directory that is the training `data` or lies inside it.
pub fn check_outside_data(dir: &Path, data: &Path) -> anyhow::Result<()> {
    let (at, data_at) = (resolved(dir), resolved(data));
    if at == data_at || (data_at.is_dir() && at.starts_with(&data_at)) {
        anyhow::bail!(
            "{}: inside the training data {}; a run's pictures and checkpoints there would become data. Choose another --out",
            dir.display(),
            data.display()
        );
    }
    Ok(())
}
