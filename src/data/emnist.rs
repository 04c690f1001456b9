//! EMNIST as it ships: `emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]`
//! with every image stored transposed (column by column), the `letters` split labelled
//! 1..=26, and `emnist-<split>-mapping.txt` giving each label's character codes. All six
//! splits usually sit in one directory: `--data DIR` loads the only one there, and
//! `--data DIR/emnist-<split>` picks one.

use std::path::{Path, PathBuf};

use super::{idx, DataError, Images};

/// The EMNIST splits in `dir` (e.g. "balanced", "letters"), sorted.
pub fn splits_in(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix("emnist-")?;
                    let split = rest.split_once("-train-images-idx3-ubyte")?.0;
                    Some(split.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.dedup();
    found
}

/// The directory and split an EMNIST `--data` path names: `DIR/emnist-<split>`, or a
/// directory holding exactly one split. None when the path is not EMNIST.
pub fn resolve(path: &Path) -> Result<Option<(PathBuf, String)>, DataError> {
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        if let Some(split) = name.to_string_lossy().strip_prefix("emnist-") {
            if !path.is_dir() && splits_in(parent).iter().any(|s| s == split) {
                return Ok(Some((parent.to_path_buf(), split.to_string())));
            }
        }
    }
    match splits_in(path).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((path.to_path_buf(), one.clone()))),
        many => Err(DataError::new(
            path,
            format!(
                "holds the EMNIST splits {}; pick one with --data {}/emnist-<split>",
                many.join(", "),
                path.display()
            ),
        )),
    }
}

/// One split's train or test part ("train" / "test"), untransposed, labels from 0.
pub fn load(dir: &Path, split: &str, part: &str) -> Result<Images, DataError> {
    let mut images = idx::load_split(dir, &format!("emnist-{split}-{part}"))?;
    // Stored column by column: pixel (row r, column c) sits at c * side + r.
    let side = images.height;
    if images.width != side {
        return Err(DataError::new(
            dir,
            format!(
                "emnist-{split}-{part} images are {side}x{}, EMNIST's are square",
                images.width
            ),
        ));
    }
    for img in images.pixels.chunks_mut(side * side) {
        let stored = img.to_vec();
        for r in 0..side {
            for c in 0..side {
                img[r * side + c] = stored[c * side + r];
            }
        }
    }
    // Labels per split (EMNIST's paper); letters count from 1.
    let classes = match split {
        "byclass" => 62,
        "bymerge" | "balanced" => 47,
        "letters" => 27,
        "digits" | "mnist" => 10,
        _ => 256,
    };
    if let Some(bad) = images
        .labels
        .iter()
        .flatten()
        .find(|&&l| usize::from(l) >= classes)
    {
        return Err(DataError::new(
            dir,
            format!("emnist-{split}-{part}: label {bad} is outside the split's {classes} classes"),
        ));
    }
    if split == "letters" {
        if let Some(labels) = images.labels.as_mut() {
            if let Some(bad) = labels.iter().find(|&&l| !(1..=26).contains(&l)) {
                return Err(DataError::new(
                    dir,
                    format!("emnist-letters label {bad} is outside 1..=26"),
                ));
            }
            labels.iter_mut().for_each(|l| *l -= 1);
        }
    }
    Ok(images)
}

/// The class names of a split from its mapping file ("label code [code...]" per line),
/// each the characters of its codes joined by "/" ("A/a"); empty when there is none.
pub fn class_names(dir: &Path, split: &str) -> Vec<String> {
    let path = dir.join(format!("emnist-{split}-mapping.txt"));
    if !path.exists() {
        return Vec::new();
    }
    let text = match crate::io::read_input_text(&path) {
        Ok(text) => text,
        Err(e) => {
            log::warn!("{}: {e}; classes go unnamed", path.display());
            return Vec::new();
        }
    };
    let offset = u32::from(split == "letters");
    let mut names: Vec<(u32, String)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
            let label = fields.next()??.checked_sub(offset)?;
            let chars: Option<Vec<String>> = fields
                .map(|code| char::from_u32(code?).map(String::from))
                .collect();
            Some((label, chars?.join("/")))
        })
        .collect();
    names.sort();
    // Names by label; a gap in the mapping leaves the rest unnamed ("class N").
    let named: Vec<String> = names
        .iter()
        .enumerate()
        .take_while(|(i, (label, _))| *label as usize == *i)
        .map(|(_, (_, name))| name.clone())
        .collect();
    if named.len() < text.lines().filter(|l| !l.trim().is_empty()).count() {
        log::warn!(
            "{}: only the first {} lines read as \"label code...\"; later classes go unnamed",
            path.display(),
            named.len()
        );
    }
    named
}
