//! Datasets: IDX files (MNIST family) read strictly, image folders, and where the default
//! data lives.

pub mod cache;
pub mod emnist;
pub mod folder;
pub mod idx;
pub mod npy;
pub mod sequence;
pub mod smiles;
pub mod store;
pub mod table;

use std::path::{Path, PathBuf};

pub use idx::DataError;
pub use store::{DiskImages, TrainSet};

use folder::Layout;

/// How an image's values are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// u8 pixels, value = pixel / 255.
    #[default]
    U8,
    /// Little-endian f32 values as they are (real-valued data such as a float .npy array),
    /// kept at full precision on the GPU.
    F32,
}

impl Dtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 => 4,
        }
    }

    /// The values of `bytes` (see the variants).
    pub fn values(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Dtype::U8 => bytes.iter().map(|&p| f32::from(p) / 255.0).collect(),
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        }
    }

    /// `values` stored as this type (u8 rounds to the nearest 1/255, clamped to [0, 1]).
    pub fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::U8 => to_u8(values),
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Images (or records) of `height * width * channels` values each (channel-last per pixel
/// for colour, which is what the PNG writer and the MLP expect), stored as `dtype`, with
/// optional labels.
#[derive(Clone, Debug)]
pub struct Images {
    /// `dtype.size()` bytes per value.
    pub pixels: Vec<u8>,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub labels: Option<Vec<u8>>,
    pub dtype: Dtype,
}

impl Images {
    /// Values per image.
    pub fn dim(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Bytes per image.
    pub fn image_bytes(&self) -> usize {
        self.dim() * self.dtype.size()
    }

    /// Image `i`'s stored bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.pixels[i * b..(i + 1) * b]
    }

    /// Image `i` as u8 pixels for pictures (f32 values clamped to [0, 1]).
    pub fn image_u8(&self, i: usize) -> std::borrow::Cow<'_, [u8]> {
        match self.dtype {
            Dtype::U8 => std::borrow::Cow::Borrowed(self.image(i)),
            Dtype::F32 => {
                std::borrow::Cow::Owned(Dtype::U8.bytes(&self.dtype.values(self.image(i))))
            }
        }
    }

    /// The images whose label is in `classes` (labels required).
    pub fn with_classes(&self, classes: &[u8]) -> Option<Images> {
        let labels = self.labels.as_ref()?;
        let keep: Vec<usize> = (0..self.count)
            .filter(|&i| classes.contains(&labels[i]))
            .collect();
        Some(self.select(&keep))
    }

    /// Images of each class 0..classes (None without labels).
    pub fn class_counts(&self, classes: usize) -> Option<Vec<usize>> {
        let labels = self.labels.as_ref()?;
        let mut counts = vec![0; classes];
        for &l in labels {
            if let Some(n) = counts.get_mut(usize::from(l)) {
                *n += 1;
            }
        }
        Some(counts)
    }

    /// The images `keep`, in that order.
    pub fn select(&self, keep: &[usize]) -> Images {
        Images {
            pixels: keep
                .iter()
                .flat_map(|&i| self.image(i).iter().copied())
                .collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| keep.iter().map(|&i| l[i]).collect()),
            count: keep.len(),
            ..*self
        }
    }

    /// These images, then `more`'s (of the same shape); labels only when both have them.
    pub fn concat(mut self, more: &Images) -> Images {
        self.pixels.extend_from_slice(&more.pixels);
        self.labels = self.labels.zip(more.labels.as_ref()).map(|(mut l, m)| {
            l.extend_from_slice(m);
            l
        });
        self.count += more.count;
        self
    }

    /// Every image resized to (width, height) (bilinear), e.g. to fit the conv architecture.
    pub fn resized(self, (width, height): (usize, usize)) -> Images {
        if (width, height) == (self.width, self.height) {
            return self;
        }
        let mut pixels = Vec::with_capacity(self.count * width * height * self.channels);
        for i in 0..self.count {
            let (w, h) = (self.width as u32, self.height as u32);
            let data = self.image(i).to_vec();
            let img = match self.channels {
                3 => image::DynamicImage::ImageRgb8(
                    image::RgbImage::from_raw(w, h, data).expect("size matches"),
                ),
                _ => image::DynamicImage::ImageLuma8(
                    image::GrayImage::from_raw(w, h, data).expect("size matches"),
                ),
            };
            let out = img.resize_exact(
                width as u32,
                height as u32,
                image::imageops::FilterType::Triangle,
            );
            pixels.extend_from_slice(&if self.channels == 3 {
                out.to_rgb8().into_raw()
            } else {
                out.to_luma8().into_raw()
            });
        }
        Images {
            pixels,
            width,
            height,
            ..self
        }
    }

    /// The first `n` images.
    /// A digest of every value, the labels and the shape (FNV-1a): what was fitted to these
    /// images is reused only for the same images.
    pub fn digest(&self) -> u64 {
        let shape = format!(
            "{} {}x{}x{} {:?}",
            self.count, self.height, self.width, self.channels, self.dtype
        );
        let parts = [
            crate::io::fnv1a64(&self.pixels),
            crate::io::fnv1a64(self.labels.as_deref().unwrap_or(&[])),
            crate::io::fnv1a64(shape.as_bytes()),
        ];
        crate::io::fnv1a64(bytemuck::cast_slice(&parts))
    }

    pub fn take(&self, n: usize) -> Images {
        let n = n.min(self.count);
        Images {
            pixels: self.pixels[..n * self.image_bytes()].to_vec(),
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
    /// A table's columns (CSV data), to save with the run.
    pub schema: Option<table::Schema>,
    /// The directory read (the default one when none was named).
    pub dir: PathBuf,
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

/// Values in [0, 1] as pixels.
pub fn to_u8(v: &[f32]) -> Vec<u8> {
    v.iter()
        .map(|&p| (p.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// Whether the data a `--data` path names is there: a file or folder, or an EMNIST split
/// (`DIR/emnist-letters`, a name for some files in DIR).
pub fn exists(path: &Path) -> bool {
    path.exists() || emnist::resolve(path).is_ok_and(|s| s.is_some())
}

/// Fashion-MNIST's ten classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The names of the classes of the data in `dir`, by label: an image folder's class
/// subfolders (of train/ and test/ together when it has them), Fashion-MNIST's names for a directory whose name
/// says Fashion-MNIST; empty when unknown.
pub fn class_names(dir: &Path) -> Vec<String> {
    if let Ok(Some((dir, split))) = emnist::resolve(dir) {
        return emnist::class_names(&dir, &split);
    }
    if let Some(layout) = Layout::of(dir).ok().filter(|l| !l.classes.is_empty()) {
        return layout.classes;
    }
    let name = dir.to_string_lossy().to_lowercase();
    if name.contains("fashion") {
        return FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    Vec::new()
}

/// Label `l`'s name in `names`, or "class l".
pub fn class_name(names: &[String], l: u8) -> String {
    names
        .get(usize::from(l))
        .cloned()
        .unwrap_or_else(|| format!("class {l}"))
}

/// Called as images are decoded with (done, total).
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// How to read image folders (IDX files ignore these).
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// Resize every image to (width, height).
    pub size: Option<(usize, usize)>,
    /// 1 (grayscale, the default) or 3 (RGB).
    pub channels: Option<usize>,
    /// Unreadable files are an error instead of a warning.
    pub strict: bool,
    /// Hears how many of an image folder's files are decoded.
    pub progress: Option<Progress>,
    /// Labels of a .npy array: a 1-D integer .npy file.
    pub labels: Option<PathBuf>,
    /// The fraction of a .npy array's or a table's rows held out for testing [default: 0.1].
    pub test_fraction: Option<f64>,
    /// A table's column choices.
    pub table: table::TableOptions,
    /// The columns of the table a model was trained on: new rows are encoded with them
    /// (its standardization included) instead of inferring them again.
    pub schema: Option<table::Schema>,
}

/// Whether `path` names a NumPy array (by its extension).
pub fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// The training rows of a .npy array on disk and its test rows in memory; an error for the
/// options that apply to images only.
fn open_npy(path: &Path, opts: &DataOptions) -> Result<(DiskImages, Images), DataError> {
    let (train, test) = npy::open_splits(
        path,
        opts.labels.as_deref(),
        opts.test_fraction.unwrap_or(0.1),
    )?;
    // A run records --channels 1 by default, so the array's own channel count is accepted.
    if opts.size.is_some() || opts.channels.is_some_and(|c| c != train.channels) {
        return Err(DataError::new(
            path,
            format!(
                "an array of {}x{}x{} is used at its own shape; --size and --channels apply to image folders and IDX files",
                train.height, train.width, train.channels
            ),
        ));
    }
    Ok((train, test))
}

/// `--labels` and `--test-fraction` are a .npy array's: an error for other data, which
/// carries its labels and splits itself.
fn npy_options_fit(path: &Path, opts: &DataOptions) -> Result<(), DataError> {
    let table = table::is_csv(path);
    if !is_npy(path) && (opts.labels.is_some() || (opts.test_fraction.is_some() && !table)) {
        return Err(DataError::new(
            path,
            "--labels and --test-fraction apply to .npy arrays (--test-fraction to tables too); IDX files and image folders carry their own labels and splits",
        ));
    }
    // A run records --channels 1 by default.
    if table && (opts.size.is_some() || opts.channels.is_some_and(|c| c != 1)) {
        return Err(DataError::new(
            path,
            "--size and --channels apply to images; a table's records are its columns",
        ));
    }
    let t = &opts.table;
    if !table && (!t.categorical.is_empty() || !t.ignore.is_empty() || t.label_column.is_some()) {
        return Err(DataError::new(
            path,
            "--categorical, --ignore and --label-column apply to CSV tables",
        ));
    }
    Ok(())
}

/// A CSV table's rows, encoded with the saved schema or one inferred from its training
/// rows, split by `--test-fraction` as arrays are.
fn load_csv(path: &Path, opts: &DataOptions) -> Result<Splits, DataError> {
    let cells = table::read_cells(path)?;
    let (train, test) = npy::split_rows(cells.rows.len(), opts.test_fraction.unwrap_or(0.1));
    let schema = match &opts.schema {
        Some(s) => s.clone(),
        None => table::infer(path, &cells, &train, &opts.table)?,
    };
    // Each record is its values and their mask side by side, as a 1 x 2E image.
    if schema.width() > 2048 {
        return Err(DataError::new(
            path,
            format!(
                "the table encodes to {} values (one per numeric or binary column, one per category); at most 2048 fit; --ignore ids and free-text columns",
                schema.width()
            ),
        ));
    }
    let all = table::encode(path, &cells, &schema)?;
    Ok(Splits {
        source: format!(
            "{} (table: {} train, {} test rows of {} columns, {} encoded values)",
            path.display(),
            train.len(),
            test.len(),
            schema.columns.len(),
            schema.width()
        ),
        train: all.select(&train),
        test: all.select(&test),
        dir: path.to_path_buf(),
        schema: Some(schema),
    })
}

/// A .npy array's splits: the training rows read into memory, or left in the file when
/// they are more than `budget` bytes.
fn load_npy(path: PathBuf, opts: &DataOptions, budget: u64) -> Result<TrainingData, DataError> {
    let (disk, test) = open_npy(&path, opts)?;
    let on_disk = disk.count as u64 * disk.image_bytes() as u64 > budget;
    let source = format!(
        "{} (NumPy {:?} array: {} train rows{}, {} test, of {}x{}x{})",
        path.display(),
        test.dtype,
        disk.count,
        if on_disk {
            " read as they are needed"
        } else {
            ""
        },
        test.count,
        test.height,
        test.width,
        test.channels
    );
    let train = if on_disk {
        TrainSet::Disk(disk)
    } else {
        let all: Vec<usize> = (0..disk.count).collect();
        TrainSet::Memory(std::borrow::Cow::Owned(disk.load(&all)?))
    };
    Ok(TrainingData {
        source,
        train,
        test,
        dir: path,
        schema: None,
    })
}

/// Splits an image set into train and test: every tenth image goes to test, so the split
/// is fixed and spread over the classes.
fn holdout(all: Images) -> (Images, Images) {
    let pick = |test: bool| {
        let keep: Vec<usize> = (0..all.count).filter(|i| (i % 10 == 9) == test).collect();
        all.select(&keep)
    };
    (pick(false), pick(true))
}

/// Whether `dir` is an image folder (not IDX files or an EMNIST split); an error when it is
/// neither a directory nor an EMNIST split.
fn is_image_folder(dir: &Path) -> Result<bool, DataError> {
    if emnist::resolve(dir)?.is_some() {
        return Ok(false);
    }
    if !dir.is_dir() {
        let what = match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
            Err(_) => "cannot be read",
            Ok(_) => "not a directory",
        };
        return Err(DataError::new(dir, format!("{what} (expected a directory of IDX files such as train-images-idx3-ubyte[.gz], an image folder, a .npy array or a .csv table)")));
    }
    let has_idx = std::fs::read_dir(dir)
        .map_err(|e| DataError::new(dir, e.to_string()))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("-idx3-ubyte"));
    Ok(!has_idx)
}

/// The data of a training run: the training split, held in memory or, for an image folder
/// whose training images decode to more than `budget` bytes, read from its on-disk cache
/// (see `cache`); the test split in memory.
pub struct TrainingData {
    /// The training split, in memory or on disk.
    pub train: TrainSet<'static>,
    /// The test split, in memory.
    pub test: Images,
    /// What was read (the default directory when none was named).
    pub dir: PathBuf,
    /// A line saying what was read and how.
    pub source: String,
    /// A table's columns (CSV data), to save with the run.
    pub schema: Option<table::Schema>,
}

/// Loads a training run's data (see `TrainingData`).
pub fn load_for_training(
    path: Option<&Path>,
    opts: &DataOptions,
    budget: u64,
) -> Result<TrainingData, DataError> {
    let dir = path.map(Path::to_path_buf).unwrap_or_else(default_dir);
    npy_options_fit(&dir, opts)?;
    if is_npy(&dir) {
        return load_npy(dir, opts, budget);
    }
    if !table::is_csv(&dir)
        && is_image_folder(&dir)?
        && folder::decoded_bytes(&Layout::of(&dir)?, opts)? > budget
    {
        let (train, test) = cache::open(&dir, opts)?;
        return Ok(TrainingData {
            source: format!(
                "{} (image folder: {} train images of {}x{}x{} read from the cache {} as they are needed, {} test)",
                dir.display(),
                train.count,
                train.height,
                train.width,
                train.channels,
                train.path.display(),
                test.count
            ),
            train: TrainSet::Disk(train),
            test,
            dir,
            schema: None,
        });
    }
    let s = load(path, opts)?;
    Ok(TrainingData {
        train: TrainSet::Memory(std::borrow::Cow::Owned(s.train)),
        test: s.test,
        dir: s.dir,
        source: s.source,
        schema: s.schema,
    })
}

/// Loads the splits from a directory of IDX files (train-* and t10k-*, raw or .gz) or an
/// image folder (with train/ and test/ subfolders, or one set of which every tenth image
/// is held out for testing).
pub fn load(path: Option<&Path>, opts: &DataOptions) -> Result<Splits, DataError> {
    let dir = path.map(Path::to_path_buf).unwrap_or_else(default_dir);
    npy_options_fit(&dir, opts)?;
    if table::is_csv(&dir) {
        return load_csv(&dir, opts);
    }
    if is_npy(&dir) {
        let d = load_npy(dir, opts, u64::MAX)?;
        let TrainSet::Memory(train) = d.train else {
            unreachable!("an unlimited budget holds every row in memory")
        };
        return Ok(Splits {
            train: train.into_owned(),
            test: d.test,
            dir: d.dir,
            source: d.source,
            schema: None,
        });
    }
    let emnist = emnist::resolve(&dir)?;
    let is_idx = !is_image_folder(&dir)?;
    if !is_idx {
        let layout = Layout::of(&dir)?;
        let train = folder::read_folder(&layout, &layout.train, opts)?;
        let (train, test) = match &layout.test {
            Some(test) => (train, folder::read_folder(&layout, test, opts)?),
            None => holdout(train),
        };
        if train.dim() != test.dim() {
            return Err(DataError::new(
                &dir,
                "training and test images differ in size; pass --size",
            ));
        }
        if train.count == 0 || test.count == 0 {
            return Err(DataError::new(
                &dir,
                "too few images to hold out a test split (need at least 10)",
            ));
        }
        return Ok(Splits {
            source: format!(
                "{} (image folder: {} train, {} test images of {}x{}x{})",
                dir.display(),
                train.count,
                test.count,
                train.height,
                train.width,
                train.channels
            ),
            train,
            test,
            dir,
            schema: None,
        });
    }
    // IDX images are grayscale: --channels 3 repeats the gray value.
    let resize = |imgs: Images| {
        let imgs = match opts.size {
            Some(size) => imgs.resized(size),
            None => imgs,
        };
        match opts.channels {
            Some(3) => Images {
                pixels: imgs.pixels.iter().flat_map(|&p| [p; 3]).collect(),
                channels: 3,
                ..imgs
            },
            _ => imgs,
        }
    };
    let (train, test) = match &emnist {
        Some((root, split)) => (
            emnist::load(root, split, "train")?,
            emnist::load(root, split, "test")?,
        ),
        None => (
            idx::load_split(&dir, "train")?,
            idx::load_split(&dir, "t10k")?,
        ),
    };
    let (train, test) = (resize(train), resize(test));
    // An EMNIST split is named by its prefix path, made absolute for the run's record.
    let dir = match &emnist {
        Some((root, split)) => root
            .canonicalize()
            .unwrap_or_else(|_| root.clone())
            .join(format!("emnist-{split}")),
        None => dir,
    };
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
        dir,
        schema: None,
    })
}
