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

/// A hash of the image files under `dir`: their paths, labels, sizes and modification
/// times, which change when any image is added, removed or rewritten.
pub fn fingerprint(dir: &Path) -> Result<u64, DataError> {
    let mut text = String::new();
    for (path, label) in list(dir)? {
        let meta = std::fs::metadata(&path).ok();
        let modified = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let len = meta.map_or(0, |m| m.len());
        text += &format!("{}|{label:?}|{len}|{modified}\n", path.display());
    }
    Ok(crate::io::fnv1a64(text.as_bytes()))
}

/// Decodes one image file, converted to `channels`; None when it cannot be read.
fn decode(path: &Path) -> Result<image::DynamicImage, String> {
    let bytes = crate::io::read_input(path).map_err(|e| e.to_string())?;
    let format = image::ImageFormat::from_path(path).map_err(|e| e.to_string())?;
    image::load_from_memory_with_format(&bytes, format).map_err(|e| e.to_string())
}

/// Where decoded images go, in listing order with unreadable files skipped: the image's
/// pixels and its label (None for a file outside any class subfolder).
pub type Sink<'a> = dyn FnMut(&[u8], Option<u8>) -> Result<(), DataError> + 'a;

/// What `decode_folder` found.
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// Readable images, all passed to the sink.
    pub count: usize,
    /// Every image sits in a class subfolder.
    pub labelled: bool,
}

/// Files decoded at once: enough to keep every core busy, few enough that only this many
/// images are held in memory besides what the sink keeps.
const CHUNK: usize = 4096;

/// An image folder's files with their labels (see `list`), the (width, height) every image
/// is brought to, and the file that size was taken from (None: `--size`).
type Survey = (Vec<(PathBuf, Option<u8>)>, (usize, usize), Option<PathBuf>);

/// The image files under `dir` and the size every image is brought to: `--size`, or that of
/// the first readable image (named when others differ).
fn survey(dir: &Path, opts: &DataOptions) -> Result<Survey, DataError> {
    let files = list(dir)?;
    if files.is_empty() {
        return Err(DataError::new(
            dir,
            "no PNG, JPEG or BMP images found (directly or one subfolder down)",
        ));
    }
    if let Some(size) = opts.size {
        return Ok((files, size, None));
    }
    let found = files.iter().find_map(|(p, _)| {
        decode(p)
            .ok()
            .map(|img| ((img.width() as usize, img.height() as usize), p.clone()))
    });
    match found {
        Some((size, p)) => Ok((files, size, Some(p))),
        None if opts.strict => {
            let (p, _) = &files[0];
            let e = decode(p).err().unwrap_or_default();
            Err(DataError::new(p, format!("unreadable image: {e}")))
        }
        None => Err(DataError::new(dir, "no readable images")),
    }
}

/// The number of image files under `dir` and the bytes they decode to (a survey that
/// decodes at most one file), to decide whether the data is held in memory.
pub fn decoded_bytes(dir: &Path, opts: &DataOptions) -> Result<u64, DataError> {
    let (files, (w, h), _) = survey(dir, opts)?;
    Ok((files.len() * w * h * opts.channels.unwrap_or(1)) as u64)
}

/// Decodes every image under `dir` on all cores, `CHUNK` files at a time, handing each
/// readable one to `sink` in listing order.
pub fn decode_folder(
    dir: &Path,
    opts: &DataOptions,
    sink: &mut Sink<'_>,
) -> Result<Decoded, DataError> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (files, (w, h), first) = survey(dir, opts)?;
    let channels = opts.channels.unwrap_or(1);
    let dim = w * h * channels;
    let done = AtomicUsize::new(0);
    let mut pixels = vec![0u8; CHUNK.min(files.len()) * dim];
    let mut bad = Vec::new();
    let mut count = 0;
    for batch in files.chunks(CHUNK) {
        // Per file: Ok(true) decoded, Ok(false) skipped as unreadable, Err a stop.
        let outcomes: Vec<Result<bool, DataError>> = batch
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
                            img.resize_exact(
                                w as u32,
                                h as u32,
                                image::imageops::FilterType::Triangle,
                            )
                        } else {
                            return Err(DataError::new(
                                path,
                                format!(
                                    "is {}x{}, but {} is {w}x{h}; pass --size to resize them all",
                                    img.width(),
                                    img.height(),
                                    first
                                        .as_deref()
                                        .map_or(String::new(), |f| f.display().to_string())
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
        for (i, ((path, label), outcome)) in batch.iter().zip(outcomes).enumerate() {
            if outcome? {
                sink(&pixels[i * dim..(i + 1) * dim], *label)?;
                count += 1;
            } else {
                bad.push(path.display().to_string());
            }
        }
    }
    if let Some(first_bad) = bad.first() {
        log::warn!(
            "skipped {} unreadable image file(s) in {} (first: {first_bad}); --strict makes this an error",
            bad.len(),
            dir.display(),
        );
    }
    if count == 0 {
        return Err(DataError::new(dir, "no readable images"));
    }
    Ok(Decoded {
        width: w,
        height: h,
        channels,
        count,
        labelled: files.iter().all(|(_, l)| l.is_some()),
    })
}

/// Reads every image under `dir` into memory (see `decode_folder`).
pub fn read_folder(dir: &Path, opts: &DataOptions) -> Result<Images, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let found = decode_folder(dir, opts, &mut |image, label| {
        pixels.extend_from_slice(image);
        labels.push(label.unwrap_or(0));
        Ok(())
    })?;
    Ok(Images {
        pixels,
        count: found.count,
        height: found.height,
        width: found.width,
        channels: found.channels,
        labels: found.labelled.then_some(labels),
        dtype: crate::data::Dtype::U8,
    })
}
