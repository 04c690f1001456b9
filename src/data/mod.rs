//! Datasets: IDX files (MNIST family) read strictly, and where the default data lives.

pub mod idx;

use std::path::{Path, PathBuf};

pub use idx::DataError;

/// Images as u8 pixels, `height * width * channels` per image (channel-last per pixel for
/// colour, which is what the PNG writer and the MLP expect), with optional labels.
#[derive(Clone, Debug)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub labels: Option<Vec<u8>>,
}

impl Images {
    /// Values per image.
    pub fn dim(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.dim()..(i + 1) * self.dim()]
    }

    /// The first `n` images.
    pub fn take(&self, n: usize) -> Images {
        let n = n.min(self.count);
        Images {
            pixels: self.pixels[..n * self.dim()].to_vec(),
            count: n,
            labels: self.labels.as_ref().map(|l| l[..n].to_vec()),
            ..*self
        }
    }
}

/// A training and a test split plus where they came from.
pub struct Splits {
    pub train: Images,
    pub test: Images,
    pub source: String,
}

/// Fashion-MNIST from the Debian package `dataset-fashion-mnist`.
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The subset of Fashion-MNIST that ships with the crate.
pub fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-mnist")
}

/// The data a run uses when `--data` is not given: the full Fashion-MNIST if installed,
/// else the bundled subset.
pub fn default_dir() -> PathBuf {
    let system = PathBuf::from(SYSTEM_FASHION_MNIST);
    if system.join("train-images-idx3-ubyte.gz").exists() {
        system
    } else {
        bundled_dir()
    }
}

/// Loads the splits from a directory of IDX files (train-* and t10k-*, raw or .gz).
pub fn load(path: Option<&Path>) -> Result<Splits, DataError> {
    let dir = path.map(Path::to_path_buf).unwrap_or_else(default_dir);
    if !dir.is_dir() {
        return Err(DataError::new(
            &dir,
            "not a directory of IDX files (train-images-idx3-ubyte[.gz], ...)",
        ));
    }
    let train = idx::load_split(&dir, "train")?;
    let test = idx::load_split(&dir, "t10k")?;
    if train.dim() != test.dim() {
        return Err(DataError::new(
            &dir,
            "training and test images differ in size",
        ));
    }
    Ok(Splits {
        source: format!(
            "{} ({} train, {} test images of {}x{})",
            dir.display(),
            train.count,
            test.count,
            train.height,
            train.width
        ),
        train,
        test,
    })
}
