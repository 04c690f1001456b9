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

/// Decodes one image file, converted to `channels`; None when it cannot be read.
fn decode(path: &Path) -> Result<image::DynamicImage, String> {
    let bytes = crate::io::read_input(path).map_err(|e| e.to_string())?;
    let format = image::ImageFormat::from_path(path).map_err(|e| e.to_string())?;
    image::load_from_memory_with_format(&bytes, format).map_err(|e| e.to_string())
}

/// Reads every image under `dir`, decoding on all cores straight into one pixel buffer
/// (the only copy held), in the listing's order.
pub fn read_folder(dir: &Path, opts: &DataOptions) -> Result<Images, DataError> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let files = list(dir)?;
    if files.is_empty() {
        return Err(DataError::new(
            dir,
            "no PNG, JPEG or BMP images found (directly or one subfolder down)",
        ));
    }
    let channels = opts.channels.unwrap_or(1);
    // The size: --size, or that of the first readable image (named when others differ).
    let (size, first) = match opts.size {
        Some(size) => (size, None),
        None => {
            let found = files.iter().find_map(|(p, _)| {
                decode(p)
                    .ok()
                    .map(|img| ((img.width() as usize, img.height() as usize), p))
            });
            match found {
                Some((size, p)) => (size, Some(p.as_path())),
                None if opts.strict => {
                    let (p, _) = &files[0];
                    let e = decode(p).err().unwrap_or_default();
                    return Err(DataError::new(p, format!("unreadable image: {e}")));
                }
                None => return Err(DataError::new(dir, "no readable images")),
            }
        }
    };
    let (w, h) = size;
    let dim = w * h * channels;
    let mut pixels = vec![0u8; files.len() * dim];
    let done = AtomicUsize::new(0);
    // Per file: Ok(true) decoded, Ok(false) skipped as unreadable, Err a stop.
    let outcomes: Vec<Result<bool, DataError>> = files
        .par_iter()
        .zip(pixels.par_chunks_mut(dim))
        .map(|((path, _), slot)| {
            let outcome = match decode(path) {
                Err(e) if opts.strict => {
                    Err(DataError::new(path, format!("unreadable image: {e}")))
                }
                Err(_) => Ok(false),
                Ok(img) => {
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
                                first.map_or(String::new(), |f| f.display().to_string())
                            ),
                        ));
                    };
                    match channels {
                        1 => slot.copy_from_slice(img.to_luma8().as_raw()),
                        _ => slot.copy_from_slice(img.to_rgb8().as_raw()),
                    }
                    Ok(true)
                }
            };
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(progress) = &opts.progress {
                (progress.0)(n, files.len());
            }
            outcome
        })
        .collect();
    // The first failure in listing order, as a sequential read would report it.
    let mut labels = Vec::new();
    let mut bad = Vec::new();
    let mut kept = 0;
    for (i, ((path, label), outcome)) in files.iter().zip(outcomes).enumerate() {
        if outcome? {
            pixels.copy_within(i * dim..(i + 1) * dim, kept * dim);
            kept += 1;
            labels.push(label.unwrap_or(0));
        } else {
            bad.push(path.display().to_string());
        }
    }
    pixels.truncate(kept * dim);
    pixels.shrink_to_fit();
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
    let (width, height) = size;
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
