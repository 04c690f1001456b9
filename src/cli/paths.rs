//! Where outputs may go: the one place every command's output path (and `train`'s run
//! directory) is resolved against what the command reads and against a run's own files, so
//! that no output replaces an input, lands inside a data folder (where it would become
//! data), or overwrites part of a run.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::vae::rundir;

/// What this process has read, canonical: (path, what it is, for the message).
static READS: Mutex<Vec<(PathBuf, &'static str)>> = Mutex::new(Vec::new());

/// Notes that the command reads `path` (`what`: "its --data", "its --labels" ...): no output
/// may replace it, or be written inside it when it is a folder.
pub fn note_read(path: &Path, what: &'static str) {
    if let Ok(p) = path.canonicalize() {
        READS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((p, what));
    }
}

/// `path` made absolute with every link and `..` resolved as far as it exists, the rest
/// (what the command will create) appended as given.
pub fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The input `out` would replace or land inside, with what it is; None when it is clear.
fn clashing_input(out: &Path) -> Option<(PathBuf, &'static str, bool)> {
    let out = resolved(out);
    let reads = READS.lock().unwrap_or_else(|e| e.into_inner());
    reads.iter().find_map(|(read, what)| {
        if out == *read {
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

/// Where a command writes its output (`out`, else `default`): refused when it is one of the
/// command's inputs, lies inside an input folder, lies inside a run's checkpoint (which
/// training prunes with what it holds), or is a run's own record (metrics.jsonl, loss.png,
/// .lock, a checkpoint). Called once the inputs are known.
pub fn output_path(
    out: Option<&Path>,
    default: impl FnOnce() -> PathBuf,
) -> anyhow::Result<PathBuf> {
    let path = out.map_or_else(default, Path::to_path_buf);
    check_output(&path)?;
    Ok(path)
}

/// `output_path` for an output the command line names.
pub fn check_output(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    if let Some((read, what, inside)) = clashing_input(path) {
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
    let parent = crate::io::parent_dir(path);
    let in_checkpoint = rundir::is_checkpoint(parent);
    let in_run = rundir::is_run(parent);
    let record = matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("metrics.jsonl" | ".lock" | "loss.png")
    ) || path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("checkpoint-"));
    if in_checkpoint || (in_run && record) {
        anyhow::bail!(
            "{shown} would write into a checkpoint or over a run's record; choose another path"
        );
    }
    Ok(())
}

/// Checks the directory a new training run writes to: it must not exist, be empty, or
/// already be a run (which `train` then refuses or resumes), and must be neither the
/// `data` it trains on nor inside it (its charts would become training images).
pub fn check_run_dir(dir: &Path, data: &Path) -> anyhow::Result<()> {
    check_outside_data(dir, data)?;
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
