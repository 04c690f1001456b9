//! Image folders (PNG, JPEG, BMP through `image`): subfolder names become labels, images are
//! resized with `size` and converted to 1 or 3 channels. Unreadable files are counted and
//! named in a warning, or are an error when `strict`.

use std::path::{Path, PathBuf};

use super::{DataError, DataOptions, Images};

const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::new(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// The class subfolders of `dir` in label order (empty when it has none or cannot be read).
pub fn class_folders(dir: &Path) -> Vec<String> {
    sorted_entries(dir)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.is_dir())
        .filter_map(|e| Some(e.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

/// (path, label) of every image: files directly in `dir` have no label; files in a
/// subfolder get the subfolder's index in sorted order.
fn list(dir: &Path) -> Result<Vec<(PathBuf, Option<u8>)>, DataError> {
    let mut files = Vec::new();
    let mut classes = 0usize;
    for entry in sorted_entries(dir)? {
        if entry.is_dir() {
            let label = u8::try_from(classes)
                .map_err(|_| DataError::new(dir, "more than 256 class subfolders"))?;
            classes += 1;
            for f in sorted_entries(&entry)? {
                // Not is_file(): a dangling link must count as an unreadable image.
                if !f.is_dir() && is_image(&f) {
                    files.push((f, Some(label)));
                }
            }
        } else if is_image(&entry) {
            files.push((entry, None));
        }
    }
    Ok(files)
}

/// Reads every image under `dir`.
pub fn read_folder(dir: &Path, opts: &DataOptions) -> Result<Images, DataError> {
    let files = list(dir)?;
    if files.is_empty() {
        return Err(DataError::new(
            dir,
            "no PNG, JPEG or BMP images found (directly or one subfolder down)",
        ));
    }
    let channels = opts.channels.unwrap_or(1);
    let mut size = opts.size;
    // The first image read: it fixes the size when --size is absent.
    let mut first: Option<&Path> = None;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut bad = Vec::new();
    for (path, label) in &files {
        let decoded = crate::io::read_input(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let format = image::ImageFormat::from_path(path).map_err(|e| e.to_string())?;
                image::load_from_memory_with_format(&bytes, format).map_err(|e| e.to_string())
            });
        let img = match decoded {
            Ok(img) => img,
            Err(e) => {
                if opts.strict {
                    return Err(DataError::new(path, format!("unreadable image: {e}")));
                }
                bad.push(path.display().to_string());
                continue;
            }
        };
        let (w, h) = *size.get_or_insert((img.width() as usize, img.height() as usize));
        let first = *first.get_or_insert(path);
        let img = if (img.width() as usize, img.height() as usize) == (w, h) {
            img
        } else if opts.size.is_some() {
            img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        } else {
            return Err(DataError::new(
                path,
                format!(
                    "is {}x{}, but {} is {w}x{h}; pass --size to resize them all",
                    img.width(),
                    img.height(),
                    first.display()
                ),
            ));
        };
        match channels {
            1 => pixels.extend_from_slice(img.to_luma8().as_raw()),
            _ => pixels.extend_from_slice(img.to_rgb8().as_raw()),
        }
        labels.push(label.unwrap_or(0));
    }
    if !bad.is_empty() {
        let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
        log::warn!(
            "skipped {} unreadable image file(s) in {} (first: {}); --strict makes this an error",
            bad.len(),
            dir.display(),
            shown[0]
        );
    }
    let count = labels.len();
    if count == 0 {
        return Err(DataError::new(dir, "no readable images"));
    }
    let (width, height) = size.expect("set by the first image");
    let labelled = files.iter().all(|(_, l)| l.is_some());
    Ok(Images {
        pixels,
        count,
        height,
        width,
        channels,
        labels: labelled.then_some(labels),
    })
}
