//! Training images that stay on disk: a file of fixed-size u8 images (a decoded folder's
//! cache, or a .npy array) read a batch at a time, and `TrainSet`, the training split in
//! memory or on disk.
//!
//! Images are read with positioned reads rather than a memory map: a mapped page counts
//! in the process's resident memory once touched, so one epoch over a 3 GB map would hold
//! 3 GB resident, while read pages stay in the kernel's page cache, which it can drop.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::{DataError, Dtype, Images};

/// Images in `file` from byte `offset` on, `image_bytes` each, of which this set holds
/// `rows` (or the first `count`).
#[derive(Debug)]
pub struct DiskImages {
    pub path: PathBuf,
    file: File,
    offset: u64,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub labels: Option<Vec<u8>>,
    pub dtype: Dtype,
    /// The file's images this set holds, in order; None: the first `count`.
    rows: Option<Vec<u32>>,
    /// A checksum (FNV-1a) of each of the file's images from `offset` on, checked as it is
    /// read (the image cache's; an array has none).
    sums: Option<std::sync::Arc<[u64]>>,
}

impl DiskImages {
    /// Opens `count` images of `height x width x channels` values of `dtype` at `offset`
    /// in `path`, checking that the file holds them all.
    pub fn open(
        path: &Path,
        offset: u64,
        count: usize,
        (height, width, channels): (usize, usize, usize),
        dtype: Dtype,
        labels: Option<Vec<u8>>,
    ) -> Result<DiskImages, DataError> {
        let file = File::open(path).map_err(|e| DataError::new(path, e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| DataError::new(path, e.to_string()))?
            .len();
        let need = (count as u64)
            .checked_mul((height * width * channels * dtype.size()) as u64)
            .and_then(|b| b.checked_add(offset));
        match need {
            Some(need) if need <= len => {}
            _ => {
                return Err(DataError::new(
                    path,
                    format!(
                        "truncated: {len} bytes, but {count} images of {height}x{width}x{channels} {dtype:?} need {}",
                        need.map_or("more than 2^64".into(), |n| n.to_string())
                    ),
                ))
            }
        }
        Ok(DiskImages {
            path: path.to_path_buf(),
            file,
            offset,
            count,
            height,
            width,
            channels,
            labels,
            dtype,
            rows: None,
            sums: None,
        })
    }

    /// These images, each checked against its checksum (`sums[i]` for the file's image
    /// `i` from the offset on) as it is read.
    pub fn with_sums(self, sums: std::sync::Arc<[u64]>) -> DiskImages {
        DiskImages {
            sums: Some(sums),
            ..self
        }
    }

    /// Bytes per image.
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * self.channels * self.dtype.size()
    }

    /// Image `i` of this set into `out` (`image_bytes`). A NaN or infinite f32 value is an
    /// error naming its row of the file: it would poison every step it is in.
    pub fn read(&self, i: usize, out: &mut [u8]) -> Result<(), DataError> {
        let row = self.rows.as_ref().map_or(i, |r| r[i] as usize);
        let at = self.offset + (row * self.image_bytes()) as u64;
        read_at(&self.file, out, at).map_err(|e| {
            DataError::new(&self.path, format!("reading row {row} at byte {at}: {e}"))
        })?;
        if self
            .sums
            .as_ref()
            .is_some_and(|s| s[row] != crate::io::fnv1a64(out))
        {
            return Err(DataError::new(
                &self.path,
                format!("image {row} does not match its checksum: the file was damaged after it was written; delete it and it is rebuilt"),
            ));
        }
        if self.dtype == Dtype::F32 {
            if let Some((j, v)) = Dtype::F32
                .values(out)
                .into_iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
            {
                return Err(DataError::new(
                    &self.path,
                    format!("row {row}, value {j} is {v}; the data must be finite"),
                ));
            }
        }
        Ok(())
    }

    /// The set of the images `keep` (indices into this set), in that order.
    pub fn select(self, keep: &[usize]) -> DiskImages {
        let row = |i: usize| self.rows.as_ref().map_or(i as u32, |r| r[i]);
        DiskImages {
            rows: Some(keep.iter().map(|&i| row(i)).collect()),
            labels: self
                .labels
                .as_ref()
                .map(|l| keep.iter().map(|&i| l[i]).collect()),
            count: keep.len(),
            ..self
        }
    }

    /// The images `keep` read into memory.
    pub fn load(&self, keep: &[usize]) -> Result<Images, DataError> {
        let d = self.image_bytes();
        let mut pixels = vec![0u8; keep.len() * d];
        for (&i, out) in keep.iter().zip(pixels.chunks_mut(d.max(1))) {
            self.read(i, out)?;
        }
        Ok(Images {
            pixels,
            count: keep.len(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            labels: self
                .labels
                .as_ref()
                .map(|l| keep.iter().map(|&i| l[i]).collect()),
            dtype: self.dtype,
        })
    }
}

#[cfg(unix)]
pub(super) fn read_at(file: &File, out: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, out, at)
}

#[cfg(windows)]
pub(super) fn read_at(file: &File, mut out: &mut [u8], mut at: u64) -> std::io::Result<()> {
    while !out.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, out, at)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                out = &mut out[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// The training split: in memory, or on disk when it is larger than the data budget.
#[derive(Debug)]
pub enum TrainSet<'a> {
    /// Borrowed from a caller who keeps the images (the library), or owned.
    Memory(Cow<'a, Images>),
    /// Read from a file as they are needed.
    Disk(DiskImages),
}

impl TrainSet<'_> {
    pub fn count(&self) -> usize {
        match self {
            TrainSet::Memory(m) => m.count,
            TrainSet::Disk(d) => d.count,
        }
    }

    /// (height, width, channels) of every image.
    pub fn shape(&self) -> (usize, usize, usize) {
        match self {
            TrainSet::Memory(m) => (m.height, m.width, m.channels),
            TrainSet::Disk(d) => (d.height, d.width, d.channels),
        }
    }

    /// Values per image.
    pub fn dim(&self) -> usize {
        let (h, w, c) = self.shape();
        h * w * c
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            TrainSet::Memory(m) => m.dtype,
            TrainSet::Disk(d) => d.dtype,
        }
    }

    pub fn labels(&self) -> Option<&[u8]> {
        match self {
            TrainSet::Memory(m) => m.labels.as_deref(),
            TrainSet::Disk(d) => d.labels.as_deref(),
        }
    }

    /// Bytes per image.
    pub fn image_bytes(&self) -> usize {
        self.dim() * self.dtype().size()
    }

    /// Bytes of all images.
    pub fn bytes(&self) -> u64 {
        self.count() as u64 * self.image_bytes() as u64
    }

    /// The images `order[first..]` (the last one repeated past the end, as the GPU gather
    /// does) into `out`, `image_bytes` each.
    pub fn gather(&self, order: &[u32], first: usize, out: &mut [u8]) -> Result<(), DataError> {
        let d = self.image_bytes();
        let last = order.len() - 1;
        for (r, slot) in out.chunks_exact_mut(d).enumerate() {
            let i = order[(first + r).min(last)] as usize;
            match self {
                TrainSet::Memory(m) => slot.copy_from_slice(m.image(i)),
                TrainSet::Disk(disk) => disk.read(i, slot)?,
            }
        }
        Ok(())
    }

    /// The first `n` images.
    pub fn take(self, n: usize) -> Self {
        match self {
            TrainSet::Memory(m) => TrainSet::Memory(Cow::Owned(m.take(n))),
            TrainSet::Disk(d) => {
                let keep: Vec<usize> = (0..n.min(d.count)).collect();
                TrainSet::Disk(d.select(&keep))
            }
        }
    }

    /// The images whose label is in `classes`; None without labels.
    pub fn with_classes(self, classes: &[u8]) -> Option<Self> {
        match self {
            TrainSet::Memory(m) => m
                .with_classes(classes)
                .map(|m| TrainSet::Memory(Cow::Owned(m))),
            TrainSet::Disk(d) => {
                let labels = d.labels.as_ref()?;
                let keep: Vec<usize> = (0..d.count)
                    .filter(|&i| classes.contains(&labels[i]))
                    .collect();
                Some(TrainSet::Disk(d.select(&keep)))
            }
        }
    }
}

/// A fingerprint of a run's data, as 16 hex digits: each split's count, shape and labels,
/// and the bytes of up to 64 images spread evenly over it. A resume compares it with the
/// run's, so data that changed under a run (new contents, a class folder that shifts every
/// label, rescaled table values) is refused; sampling keeps it cheap for data on disk.
pub fn fingerprint(train: &TrainSet<'_>, test: &Images) -> Result<String, DataError> {
    const SAMPLES: usize = 64;
    let mut bytes = Vec::new();
    let mut header = |count: usize, shape: (usize, usize, usize), labels: Option<&[u8]>| {
        for v in [count, shape.0, shape.1, shape.2] {
            bytes.extend_from_slice(&(v as u64).to_le_bytes());
        }
        bytes.extend_from_slice(labels.unwrap_or_default());
    };
    header(train.count(), train.shape(), train.labels());
    header(
        test.count,
        (test.height, test.width, test.channels),
        test.labels.as_deref(),
    );
    let picks = |count: usize| (0..SAMPLES.min(count)).map(move |k| k * count / SAMPLES.min(count));
    let mut image = vec![0u8; train.image_bytes()];
    for i in picks(train.count()) {
        match train {
            TrainSet::Memory(m) => image.copy_from_slice(m.image(i)),
            TrainSet::Disk(d) => d.read(i, &mut image)?,
        }
        bytes.extend_from_slice(&image);
    }
    for i in picks(test.count) {
        bytes.extend_from_slice(test.image(i));
    }
    Ok(format!("{:016x}", crate::io::fnv1a64(&bytes)))
}
