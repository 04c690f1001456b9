//! The IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST: a big-endian magic
//! (0x00000803 images, 0x00000801 labels), the dimensions, then u8 data. Checked strictly:
//! magic, dimensions, exact payload length, and that labels match images in count.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Images;

/// A data file that could not be used: which file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct DataError {
    pub path: PathBuf,
    pub problem: String,
}

impl DataError {
    pub fn new(path: &Path, problem: impl Into<String>) -> DataError {
        DataError {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The file's bytes, gunzipped when it starts with the gzip magic (all members of a
/// multi-member file, as `pigz` or `cat a.gz b.gz` make). Decompression stops one byte past
/// the size the header announces (a small file can expand to gigabytes), and data after the
/// gzip stream is an error; `parse` checks the rest, the magic first.
fn read_maybe_gz(path: &Path, magic: u32) -> Result<Vec<u8>, DataError> {
    let raw = crate::io::read_input(path).map_err(|e| DataError::new(path, e.to_string()))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| DataError::new(path, format!("corrupt gzip data: {e}"));
    let mut dec = flate2::bufread::MultiGzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    (&mut dec).take(4).read_to_end(&mut out).map_err(corrupt)?;
    if out != magic.to_be_bytes() {
        return Ok(out); // parse reports the wrong magic or the short file
    }
    // The magic's low byte is the number of dimensions, 4 bytes each.
    let ndims = u64::from(magic & 0xff);
    (&mut dec)
        .take(4 * ndims)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    let payload = out[4.min(out.len())..]
        .chunks_exact(4)
        .try_fold(1u64, |acc, d| {
            acc.checked_mul(u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
        });
    let Some(payload) = payload.filter(|_| out.len() as u64 == 4 + 4 * ndims) else {
        return Ok(out); // parse reports the short or overflowing header
    };
    (&mut dec)
        .take(payload.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    let announced = 4 + 4 * ndims + payload;
    if out.len() as u64 > announced {
        return Err(DataError::new(
            path,
            format!(
                "decompresses to more than the {announced} bytes its header announces (trailing data)"
            ),
        ));
    }
    // Asking for one byte more than announced read every member to its end, so their
    // checksums were verified and bytes after them were read as a member (an error).
    Ok(out)
}

/// (dimensions, payload) of an IDX file whose magic must be `magic`.
fn parse(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| {
        DataError::new(
            path,
            format!("too short to be an IDX file ({} bytes)", bytes.len()),
        )
    })?;
    if found != magic {
        return Err(DataError::new(
            path,
            format!("wrong magic 0x{found:08x}, expected 0x{magic:08x} for IDX {what}"),
        ));
    }
    let ndims = (magic & 0xff) as usize;
    let dims: Vec<usize> = (1..=ndims)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            DataError::new(
                path,
                format!("truncated header: {ndims} dimensions expected"),
            )
        })?;
    if dims.contains(&0) {
        return Err(DataError::new(
            path,
            format!("zero dimension in header {dims:?}"),
        ));
    }
    let header = 4 * (1 + ndims);
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::new(
                path,
                format!("header dimensions {dims:?} overflow (corrupt header)"),
            )
        })?;
    let payload = bytes.len() - header;
    if payload != expected {
        return Err(DataError::new(
            path,
            format!(
                "payload is {payload} bytes but the header {dims:?} says {expected}{}",
                if payload < expected {
                    " (truncated file)"
                } else {
                    " (trailing data)"
                }
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Reads an IDX image file: [count, rows, cols] u8.
pub fn read_images(path: &Path) -> Result<Images, DataError> {
    let bytes = read_maybe_gz(path, IMAGES_MAGIC)?;
    let (dims, pixels) = parse(path, &bytes, IMAGES_MAGIC, "images")?;
    Ok(Images {
        pixels,
        count: dims[0],
        height: dims[1],
        width: dims[2],
        channels: 1,
        labels: None,
        dtype: crate::data::Dtype::U8,
    })
}

/// Reads an IDX label file: [count] u8.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_maybe_gz(path, LABELS_MAGIC)?;
    Ok(parse(path, &bytes, LABELS_MAGIC, "labels")?.1)
}

/// `dir/{prefix}-images-idx3-ubyte[.gz]`, or the raw name, whichever exists.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
}

/// Images and (when present) labels of one split, e.g. prefix "train" or "t10k".
pub fn load_split(dir: &Path, prefix: &str) -> Result<Images, DataError> {
    let stem = format!("{prefix}-images-idx3-ubyte");
    let images_path = find(dir, &stem)
        .ok_or_else(|| DataError::new(&dir.join(&stem), "missing (looked for .gz and raw)"))?;
    let mut images = read_images(&images_path)?;
    if let Some(labels_path) = find(dir, &format!("{prefix}-labels-idx1-ubyte")) {
        let labels = read_labels(&labels_path)?;
        if labels.len() != images.count {
            return Err(DataError::new(
                &labels_path,
                format!(
                    "{} labels for {} images in {}",
                    labels.len(),
                    images.count,
                    images_path.display()
                ),
            ));
        }
        images.labels = Some(labels);
    }
    Ok(images)
}
