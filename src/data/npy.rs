//! NumPy `.npy` arrays (format versions 1 to 3, C order): data as u8 or little-endian f32
//! of shape [N, H, W], [N, H, W, C] (C = 1 or 3) or [N, D]; labels as a 1-D integer array
//! with values 0..=255. Written by hand: the format is a short text header before raw
//! data, and the crates that read it load whole arrays into memory, which a dataset larger
//! than memory must not be.

use std::io::Read;
use std::path::Path;

use super::store::DiskImages;
use super::{DataError, Dtype, Images};

/// What an array's header says.
#[derive(Debug)]
pub struct Header {
    /// The element type, e.g. `|u1` or `<f4`.
    pub descr: String,
    pub shape: Vec<usize>,
    /// Where the data begins.
    pub offset: u64,
}

/// The header of a version 1 .npy file of `shape` and element type `descr` (e.g. `|u1`,
/// `<f4`), padded so that the data after it starts on a multiple of 64 bytes.
pub fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut text = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Reads and checks the header of `path`.
pub fn header(path: &Path) -> Result<Header, DataError> {
    let err = |m: String| DataError::new(path, m);
    if !std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .is_file()
    {
        return Err(err("not a regular file".into()));
    }
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut start = [0u8; 12];
    let got = read_up_to(&mut file, &mut start).map_err(|e| err(e.to_string()))?;
    if got < 10 || &start[..6] != b"\x93NUMPY" {
        return Err(err("not a NumPy .npy file (no \\x93NUMPY magic)".into()));
    }
    let (len, at) = match start[6] {
        1 => (u64::from(u16::from_le_bytes([start[8], start[9]])), 10u64),
        2 | 3 if got == 12 => (
            u64::from(u32::from_le_bytes([
                start[8], start[9], start[10], start[11],
            ])),
            12,
        ),
        v => return Err(err(format!("unsupported .npy format version {v}"))),
    };
    if len > 1 << 20 {
        return Err(err(format!("header of {len} bytes is implausibly long")));
    }
    let mut text = vec![0u8; len as usize];
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    std::io::copy(&mut (&mut file).take(at), &mut std::io::sink())
        .map_err(|e| err(e.to_string()))?;
    if read_up_to(&mut file, &mut text).map_err(|e| err(e.to_string()))? < text.len() {
        return Err(err("truncated in its header".into()));
    }
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| -> Option<&str> {
        let rest = &text[text.find(&format!("'{key}'"))? + key.len() + 2..];
        Some(rest.trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| err("header has no 'descr'".into()))?
        .to_string();
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(err(
            "stored in Fortran order; save it with np.ascontiguousarray first".into(),
        ));
    }
    let dims = field("shape")
        .and_then(|v| v.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| err("header has no 'shape'".into()))?;
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err(format!("unreadable shape ({dims})")))?;
    Ok(Header {
        descr,
        shape,
        offset: at + len,
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// The element type of image data.
fn image_dtype(path: &Path, descr: &str) -> Result<Dtype, DataError> {
    match descr {
        "|u1" | "<u1" | "=u1" | "u1" => Ok(Dtype::U8),
        "<f4" => Ok(Dtype::F32),
        "=f4" if cfg!(target_endian = "little") => Ok(Dtype::F32),
        ">f4" => Err(DataError::new(
            path,
            "big-endian float32; save it with .astype('<f4')",
        )),
        d => Err(DataError::new(
            path,
            format!("element type {d}; vae-gpu reads uint8 or float32 (convert with .astype('float32'))"),
        )),
    }
}

/// The images of the array at `path` on disk (read as they are needed), after checking its
/// header, shape and length.
pub fn open(path: &Path) -> Result<DiskImages, DataError> {
    let h = header(path)?;
    let dtype = image_dtype(path, &h.descr)?;
    let shape = match h.shape[..] {
        [n, height, width] => (n, height, width, 1),
        [n, height, width, c @ (1 | 3)] => (n, height, width, c),
        [n, d] => (n, 1, d, 1),
        _ => {
            return Err(DataError::new(
                path,
                format!(
                    "shape {:?}; expected [N, H, W], [N, H, W, C] with C = 1 or 3, or [N, D]",
                    h.shape
                ),
            ))
        }
    };
    let (n, height, width, channels) = shape;
    let Some(values) = height.checked_mul(width) else {
        return Err(DataError::new(
            path,
            format!("shape {:?} overflows (corrupt header)", h.shape),
        ));
    };
    if n == 0 || values == 0 {
        return Err(DataError::new(
            path,
            format!("empty array of shape {:?}", h.shape),
        ));
    }
    DiskImages::open(path, h.offset, n, (height, width, channels), dtype, None)
}

/// The labels of `path`: a 1-D integer array of `count` values in 0..=255.
pub fn labels(path: &Path, count: usize) -> Result<Vec<u8>, DataError> {
    let h = header(path)?;
    let size = match h.descr.trim_start_matches(['<', '|', '=']) {
        "u1" | "i1" => 1,
        "u2" | "i2" => 2,
        "u4" | "i4" => 4,
        "u8" | "i8" => 8,
        d => {
            return Err(DataError::new(
                path,
                format!("labels of element type {d}; expected integers (little-endian)"),
            ))
        }
    };
    let signed = h.descr.contains('i');
    if h.shape != [count] {
        return Err(DataError::new(
            path,
            format!(
                "shape {:?}; expected [{count}], one label per row of the data",
                h.shape
            ),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| DataError::new(path, e.to_string()))?;
    let mut raw = vec![0u8; count * size];
    super::store::read_at(&file, &mut raw, h.offset).map_err(|_| {
        DataError::new(
            path,
            format!(
                "truncated: {count} labels of {size} bytes need {} bytes after the header",
                raw.len()
            ),
        )
    })?;
    raw.chunks_exact(size)
        .enumerate()
        .map(|(i, b)| {
            let mut le = [0u8; 16];
            le[..size].copy_from_slice(b);
            // Sign-extend negative values so they are reported as such.
            if signed && b[size - 1] & 0x80 != 0 {
                le[size..].fill(0xff);
            }
            let v = i128::from_le_bytes(le);
            u8::try_from(v).map_err(|_| {
                DataError::new(
                    path,
                    format!("label {i} is {v}; labels must lie in 0..=255"),
                )
            })
        })
        .collect()
}

/// Splits rows 0..n into (train, test): a fixed shuffle (seed 0, the same every run) puts
/// `fraction` of them, rounded, at least one, in the test split; each split keeps file
/// order.
pub fn split_rows(n: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let tests = ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut order = crate::rng::Rng::new(0).permutation(n);
    let (test, train) = order.split_at_mut(tests);
    let sorted = |rows: &mut [u32]| {
        rows.sort_unstable();
        rows.iter().map(|&r| r as usize).collect::<Vec<_>>()
    };
    (sorted(train), sorted(test))
}

/// The training rows of `path` on disk and its test rows in memory (see `split_rows`),
/// with labels from `labels_path`.
pub fn open_splits(
    path: &Path,
    labels_path: Option<&Path>,
    test_fraction: f64,
) -> Result<(DiskImages, Images), DataError> {
    let mut all = open(path)?;
    if all.count < 2 {
        return Err(DataError::new(
            path,
            "one row: too few to hold out a test split",
        ));
    }
    if let Some(l) = labels_path {
        all.labels = Some(labels(l, all.count)?);
    }
    let (train, test) = split_rows(all.count, test_fraction);
    let test = all.load(&test)?;
    Ok((all.select(&train), test))
}
