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

/// The entries of `dir`, sorted, without hidden ones (`.git`, `.DS_Store`, editors' and
/// vae-gpu's own temporary files): a hidden folder taken as a class would shift every
/// label after it.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::new(dir, e.to_string()))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

/// The class subfolders of `dir`, sorted (empty when it has none or cannot be read).
fn class_folders(dir: &Path) -> Vec<String> {
    sorted_entries(dir)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.is_dir())
        .filter_map(|e| Some(e.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

/// An image folder: its training and test folders (`DIR/train` and `DIR/test` when both
/// exist, else `DIR` alone, of which every tenth image is held out) and the classes of
/// both, so that a class name has the same label in every split.
#[derive(Clone, Debug)]
pub struct Layout {
    pub train: PathBuf,
    pub test: Option<PathBuf>,
    /// Class subfolder names of all splits, sorted: label i is `classes[i]`.
    pub classes: Vec<String>,
}

impl Layout {
    /// The layout of `dir`. One of train/ and test/ alone is an error (its images would be
    /// read as a class named after it), unless other class folders stand beside it: then
    /// it is a class.
    pub fn of(dir: &Path) -> Result<Layout, DataError> {
        let classes_beside = || {
            class_folders(dir)
                .iter()
                .any(|name| !matches!(name.as_str(), "train" | "test"))
        };
        let (train, test) = match (dir.join("train").is_dir(), dir.join("test").is_dir()) {
            (true, true) => (dir.join("train"), Some(dir.join("test"))),
            (false, false) => (dir.to_path_buf(), None),
            _ if classes_beside() => (dir.to_path_buf(), None),
            (train, _) => {
                let (has, lacks) = if train {
                    ("train", "test")
                } else {
                    ("test", "train")
                };
                return Err(DataError::new(
                    dir,
                    format!("has {has}/ but no {lacks}/: give both splits, or put the class folders (or images) directly in it and every tenth image is held out for testing"),
                ));
            }
        };
        let mut classes = class_folders(&train);
        classes.extend(test.as_deref().map(class_folders).unwrap_or_default());
        classes.sort();
        classes.dedup();
        if classes.len() > 256 {
            return Err(DataError::new(
                dir,
                format!(
                    "{} class subfolders; at most 256 are supported",
                    classes.len()
                ),
            ));
        }
        Ok(Layout {
            train,
            test,
            classes,
        })
    }

    /// (path, label) of every image in `dir` (one of the layout's folders): files directly
    /// in it have no label; files in a subfolder get that class's label.
    fn list(&self, dir: &Path) -> Result<Vec<(PathBuf, Option<u8>)>, DataError> {
        let mut files = Vec::new();
        for entry in sorted_entries(dir)? {
            if entry.is_dir() {
                let name = entry.file_name().unwrap_or_default().to_string_lossy();
                let label = self
                    .classes
                    .binary_search_by(|c| c.as_str().cmp(&name))
                    .ok()
                    .and_then(|i| u8::try_from(i).ok());
                for f in sorted_entries(&entry)? {
                    // Not is_file(): a dangling link must count as an unreadable image.
                    if !f.is_dir() && is_image(&f) {
                        files.push((f, label));
                    }
                }
            } else if is_image(&entry) {
                files.push((entry, None));
            }
        }
        Ok(files)
    }

    /// A hash of the image files of both splits: their paths, labels, sizes and
    /// modification times, which change when any image is added, removed or rewritten.
    pub fn fingerprint(&self) -> Result<u64, DataError> {
        let mut text = String::new();
        for dir in std::iter::once(&self.train).chain(&self.test) {
            for (path, label) in self.list(dir)? {
                let meta = std::fs::metadata(&path).ok();
                let modified = meta
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let len = meta.map_or(0, |m| m.len());
                text += &format!("{}|{label:?}|{len}|{modified}\n", path.display());
            }
            text += "--\n";
        }
        Ok(crate::io::fnv1a64(text.as_bytes()))
    }
}

/// The most pixels one image may have: 40 megapixels (a 7,300 x 5,500 photograph). It is
/// checked in the file's header before decoding, which allocates for every pixel.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// Pixels being decoded at once over all cores: one image at the limit, or many small
/// ones, so that decoding on every core cannot multiply the memory a large image takes.
static DECODING: (std::sync::Mutex<u64>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// Decodes an image file's bytes (in `format`, or the one its bytes show), refusing one of
/// more than `MAX_IMAGE_PIXELS` pixels before decoding it.
pub fn decode_image(
    bytes: &[u8],
    format: Option<image::ImageFormat>,
) -> Result<image::DynamicImage, String> {
    let reader = || {
        let r = std::io::Cursor::new(bytes);
        match format {
            Some(f) => Ok(image::ImageReader::with_format(r, f)),
            None => image::ImageReader::new(r)
                .with_guessed_format()
                .map_err(|e| e.to_string()),
        }
    };
    let (w, h) = reader()?.into_dimensions().map_err(|e| e.to_string())?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "{w}x{h} is {:.0} megapixels, over the limit of {} per image; scale it down first",
            pixels as f64 / 1e6,
            MAX_IMAGE_PIXELS / 1_000_000
        ));
    }
    let (lock, freed) = &DECODING;
    let mut busy = freed
        .wait_while(lock.lock().unwrap_or_else(|e| e.into_inner()), |busy| {
            *busy > 0 && *busy + pixels > MAX_IMAGE_PIXELS
        })
        .unwrap_or_else(|e| e.into_inner());
    *busy += pixels;
    drop(busy);
    let decoded = reader().and_then(|r| r.decode().map_err(|e| e.to_string()));
    *lock.lock().unwrap_or_else(|e| e.into_inner()) -= pixels;
    freed.notify_all();
    decoded
}

/// Decodes one image file of a folder.
fn decode(path: &Path) -> Result<image::DynamicImage, String> {
    let bytes = crate::io::read_input(path).map_err(|e| e.to_string())?;
    let format = image::ImageFormat::from_path(path).map_err(|e| e.to_string())?;
    decode_image(&bytes, Some(format))
}

/// An image file's (width, height), read from its header only.
fn dimensions(path: &Path) -> Result<(usize, usize), String> {
    let (w, h) = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?
        .into_dimensions()
        .map_err(|e| e.to_string())?;
    Ok((w as usize, h as usize))
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

/// The image files under `dir` (a folder of `layout`) and the size every image is brought
/// to: `--size`, or that of the first readable image (named when others differ).
fn survey(layout: &Layout, dir: &Path, opts: &DataOptions) -> Result<Survey, DataError> {
    let files = layout.list(dir)?;
    if files.is_empty() {
        return Err(DataError::new(
            dir,
            "no PNG, JPEG or BMP images found (directly or one subfolder down)",
        ));
    }
    if let Some(size) = opts.size {
        return Ok((files, size, None));
    }
    // The header gives the size; the image's own decoding comes with the others'.
    let found = files.iter().find_map(|(p, _)| {
        dimensions(p)
            .ok()
            .filter(|&(w, h)| (w * h) as u64 <= MAX_IMAGE_PIXELS)
            .map(|size| (size, p.clone()))
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
pub fn decoded_bytes(layout: &Layout, opts: &DataOptions) -> Result<u64, DataError> {
    let (files, (w, h), _) = survey(layout, &layout.train, opts)?;
    Ok((files.len() * w * h * opts.channels.unwrap_or(1)) as u64)
}

/// Decodes every image under `dir` (a folder of `layout`) on all cores, `CHUNK` files at a
/// time, handing each readable one to `sink` in listing order.
pub fn decode_folder(
    layout: &Layout,
    dir: &Path,
    opts: &DataOptions,
    sink: &mut Sink<'_>,
) -> Result<Decoded, DataError> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (files, (w, h), first) = survey(layout, dir, opts)?;
    let channels = opts.channels.unwrap_or(1);
    let dim = w * h * channels;
    let done = AtomicUsize::new(0);
    let mut pixels = vec![0u8; CHUNK.min(files.len()) * dim];
    let mut bad = Vec::new();
    let mut count = 0;
    for batch in files.chunks(CHUNK) {
        // Per file: Ok(None) decoded, Ok(Some(why)) skipped as unreadable, Err a stop.
        let outcomes: Vec<Result<Option<String>, DataError>> = batch
            .par_iter()
            .zip(pixels.par_chunks_mut(dim))
            .map(|((path, _), slot)| {
                let outcome = match decode(path) {
                    Err(e) if opts.strict => {
                        Err(DataError::new(path, format!("unreadable image: {e}")))
                    }
                    Err(e) => Ok(Some(e)),
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
                        Ok(None)
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
            match outcome? {
                None => {
                    sink(&pixels[i * dim..(i + 1) * dim], *label)?;
                    count += 1;
                }
                Some(why) => bad.push((path, why)),
            }
        }
    }
    if let Some((first, why)) = bad.first() {
        log::warn!(
            "skipped {} unreadable image file(s) in {} (first: {}: {why}); --strict makes this an error",
            bad.len(),
            dir.display(),
            first.display()
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

/// Reads every image under `dir` (a folder of `layout`) into memory (see `decode_folder`).
pub fn read_folder(layout: &Layout, dir: &Path, opts: &DataOptions) -> Result<Images, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let found = decode_folder(layout, dir, opts, &mut |image, label| {
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
