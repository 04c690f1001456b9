//! The decoded-image cache of an image folder too large to hold in memory: decoded once
//! (with a progress bar) into one file under the user's cache directory, reused while the
//! folder's files (names, sizes, modification times) and the decoding options are
//! unchanged, rebuilt when they change.
//!
//! Layout: a 48-byte header (`MAGIC`, the folder's fingerprint, train and test counts,
//! height, width, channels, whether labelled), the training images, the test images, one
//! label byte per training and per test image when labelled, then a u64 checksum
//! (FNV-1a) per training and per test image, checked as each is read. A build writes a
//! temporary file and renames it into place, so a kill leaves the old cache or none.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::folder::{self, Decoded, Layout};
use super::store::DiskImages;
use super::{DataError, DataOptions, Dtype, Images};

const MAGIC: &[u8; 8] = b"VAEGPUD2";
/// Caches of earlier formats start with this and are rebuilt.
const MAGIC_STEM: &[u8; 7] = b"VAEGPUD";
const HEADER: u64 = 48;

struct Header {
    fingerprint: u64,
    train: u64,
    test: u64,
    shape: (usize, usize, usize),
    labelled: bool,
}

impl Header {
    fn to_bytes(&self) -> [u8; HEADER as usize] {
        let (h, w, c) = self.shape;
        let mut b = [0u8; HEADER as usize];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.fingerprint.to_le_bytes());
        b[16..24].copy_from_slice(&self.train.to_le_bytes());
        b[24..32].copy_from_slice(&self.test.to_le_bytes());
        for (i, v) in [h, w, c, usize::from(self.labelled)].iter().enumerate() {
            b[32 + 4 * i..36 + 4 * i].copy_from_slice(&(*v as u32).to_le_bytes());
        }
        b
    }

    fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER as usize || &b[..8] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at =
            |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as usize;
        Some(Header {
            fingerprint: u64_at(8),
            train: u64_at(16),
            test: u64_at(24),
            shape: (u32_at(32), u32_at(36), u32_at(40)),
            labelled: u32_at(44) != 0,
        })
    }

    /// The file length this header announces (None on overflow).
    fn file_len(&self) -> Option<u64> {
        let (h, w, c) = self.shape;
        let n = self.train.checked_add(self.test)?;
        let pixels = n.checked_mul((h as u64).checked_mul(w as u64)?.checked_mul(c as u64)?)?;
        HEADER
            .checked_add(pixels)?
            .checked_add(if self.labelled { n } else { 0 })?
            .checked_add(n.checked_mul(8)?)
    }
}

/// Where the cache of `dir` read with `opts` lives.
fn cache_path(dir: &Path, opts: &DataOptions) -> Result<PathBuf, DataError> {
    let root = crate::gpu::tune::cache_dir().ok_or_else(|| {
        DataError::new(
            dir,
            "too large to hold in memory, and no cache directory for its decoded images (set VAE_GPU_CACHE_DIR)",
        )
    })?;
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let key = format!(
        "{}|{:?}|{:?}|{}",
        canonical.display(),
        opts.size,
        opts.channels,
        opts.strict
    );
    Ok(root.join("data").join(format!(
        "{:016x}.images",
        crate::io::fnv1a64(key.as_bytes())
    )))
}

/// The training images of the folder `dir` on disk (from its cache, built or rebuilt as
/// needed) and its test images in memory.
pub fn open(dir: &Path, opts: &DataOptions) -> Result<(DiskImages, Images), DataError> {
    let path = cache_path(dir, opts)?;
    if let Some(parent) = path.parent() {
        remove_abandoned(parent);
    }
    let layout = Layout::of(dir)?;
    let fingerprint = layout.fingerprint()?;
    match read_header(&path)? {
        Some(h) if h.fingerprint == fingerprint => return open_cache(&path, &h),
        Some(_) => log::info!("{}: stale (the images changed); rebuilding", path.display()),
        None => log::info!(
            "caching the decoded images of {} in {}",
            dir.display(),
            path.display()
        ),
    }
    build(&path, fingerprint, &layout, opts)?;
    let h = read_header(&path)?.ok_or_else(|| DataError::new(&path, "vanished after writing"))?;
    open_cache(&path, &h)
}

/// The cache's header; None when there is no cache yet. A file too short for a header or
/// without the magic is an error (not a cache vae-gpu wrote whole).
fn read_header(path: &Path) -> Result<Option<Header>, DataError> {
    use std::io::Read;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::new(path, e.to_string())),
        // Not opened: opening a FIFO would wait for a writer.
        Ok(m) if !m.is_file() => {
            return Err(DataError::new(
                path,
                "not a regular file; remove it and the cache is rebuilt",
            ))
        }
        Ok(_) => {}
    }
    let mut file = std::fs::File::open(path).map_err(|e| DataError::new(path, e.to_string()))?;
    let mut b = Vec::new();
    (&mut file)
        .take(HEADER)
        .read_to_end(&mut b)
        .map_err(|e| DataError::new(path, e.to_string()))?;
    if b.starts_with(MAGIC_STEM) && !b.starts_with(MAGIC) {
        log::info!("{}: an earlier cache format; rebuilding", path.display());
        return Ok(None);
    }
    Header::parse(&b).map(Some).ok_or_else(|| {
        DataError::new(
            path,
            "not a whole vae-gpu image cache (truncated or overwritten); delete it and it is rebuilt",
        )
    })
}

fn open_cache(path: &Path, h: &Header) -> Result<(DiskImages, Images), DataError> {
    let len = std::fs::metadata(path)
        .map_err(|e| DataError::new(path, e.to_string()))?
        .len();
    if h.file_len() != Some(len) {
        let short = h.file_len().is_none_or(|n| len < n);
        return Err(DataError::new(
            path,
            format!(
                "{} image cache: {len} bytes where its header announces {}; delete it and it is rebuilt",
                if short { "truncated" } else { "damaged" },
                h.file_len().map_or("more than 2^64".into(), |n| n.to_string())
            ),
        ));
    }
    let (train, test) = (h.train as usize, h.test as usize);
    let (height, width, channels) = h.shape;
    let d = height * width * channels;
    // The labels sit after every image.
    let file = std::fs::File::open(path).map_err(|e| DataError::new(path, e.to_string()))?;
    let labels = if h.labelled {
        let mut l = vec![0u8; train + test];
        super::store::read_at(&file, &mut l, HEADER + ((train + test) * d) as u64)
            .map_err(|e| DataError::new(path, format!("reading the labels: {e}")))?;
        Some(l)
    } else {
        None
    };
    let mut sums = vec![0u8; 8 * (train + test)];
    let labels_len = if h.labelled { train + test } else { 0 };
    super::store::read_at(
        &file,
        &mut sums,
        HEADER + ((train + test) * d + labels_len) as u64,
    )
    .map_err(|e| DataError::new(path, format!("reading the checksums: {e}")))?;
    let sums: Vec<u64> = sums
        .chunks(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let split = |l: &Option<Vec<u8>>, r: std::ops::Range<usize>| l.as_ref().map(|l| l[r].to_vec());
    let train_set = DiskImages::open(
        path,
        HEADER,
        train,
        h.shape,
        Dtype::U8,
        split(&labels, 0..train),
    )?
    .with_sums(sums[..train].into());
    let test_set = DiskImages::open(
        path,
        HEADER + (train * d) as u64,
        test,
        h.shape,
        Dtype::U8,
        split(&labels, train..train + test),
    )?
    .with_sums(sums[train..].into());
    let all: Vec<usize> = (0..test).collect();
    Ok((train_set, test_set.load(&all)?))
}

/// A build writes into a temporary file that it holds an OS lock on until it publishes the
/// cache; a `.building-*` file nobody holds was left by a build that was killed. (One this
/// young may be a build that has not taken its lock yet.)
const SETTLING: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes the temporary files of builds that were killed.
fn remove_abandoned(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        // Only regular files: opening a FIFO would wait for a writer forever.
        let file = e.file_type().is_ok_and(|t| t.is_file());
        if !file || !e.file_name().to_string_lossy().starts_with(".building-") {
            continue;
        }
        let settled = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > SETTLING);
        let unheld = std::fs::File::open(e.path()).is_ok_and(|f| f.try_lock().is_ok());
        if settled && unheld {
            log::info!(
                "removing {}, left by an image-cache build that was killed",
                e.path().display()
            );
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Decodes the folder(s) into a new cache at `path`.
fn build(
    path: &Path,
    fingerprint: u64,
    layout: &Layout,
    opts: &DataOptions,
) -> Result<(), DataError> {
    let (train_dir, test_dir) = (&layout.train, layout.test.as_deref());
    let io = |e: std::io::Error| DataError::new(path, format!("writing the image cache: {e}"));
    let dir = path.parent().expect("the cache path has a directory");
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempfile_in(dir)
        .map_err(io)?;
    // Held until the cache is published (or the process dies): see `remove_abandoned`.
    tmp.as_file().try_lock().map_err(|e| io(e.into()))?;
    let mut out = BufWriter::new(tmp);
    out.write_all(&[0u8; HEADER as usize]).map_err(io)?;
    let (mut train_labels, mut test_labels, mut test_pixels) = (Vec::new(), Vec::new(), Vec::new());
    let mut train_sums = Vec::new();
    let mut kept = 0usize;
    let found: Decoded = folder::decode_folder(layout, train_dir, opts, &mut |image, label| {
        // With one folder, every tenth image is the test split (as `data::load` splits).
        if test_dir.is_none() && kept % 10 == 9 {
            test_pixels.extend_from_slice(image);
            test_labels.push(label.unwrap_or(0));
        } else {
            out.write_all(image).map_err(io)?;
            train_sums.push(crate::io::fnv1a64(image));
            train_labels.push(label.unwrap_or(0));
        }
        kept += 1;
        Ok(())
    })?;
    let mut labelled = found.labelled;
    let shape = (found.height, found.width, found.channels);
    if let Some(t) = test_dir {
        let test = folder::read_folder(layout, t, opts)?;
        if (test.height, test.width, test.channels) != shape {
            return Err(DataError::new(
                t,
                "training and test images differ in size; pass --size",
            ));
        }
        labelled &= test.labels.is_some();
        test_labels = test.labels.unwrap_or_default();
        test_pixels = test.pixels;
    }
    let header = Header {
        fingerprint,
        train: train_labels.len() as u64,
        test: (test_pixels.len() / (shape.0 * shape.1 * shape.2)) as u64,
        shape,
        labelled,
    };
    if header.train == 0 || header.test == 0 {
        return Err(DataError::new(
            train_dir,
            "too few images to hold out a test split (need at least 10)",
        ));
    }
    out.write_all(&test_pixels).map_err(io)?;
    if labelled {
        out.write_all(&train_labels).map_err(io)?;
        out.write_all(&test_labels).map_err(io)?;
    }
    let d = shape.0 * shape.1 * shape.2;
    let test_sums = test_pixels.chunks(d).map(crate::io::fnv1a64);
    for sum in train_sums.into_iter().chain(test_sums) {
        out.write_all(&sum.to_le_bytes()).map_err(io)?;
    }
    let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header.to_bytes()).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
