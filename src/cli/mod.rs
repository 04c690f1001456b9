//! Command-line front end: one module per subcommand.

pub mod classify;
pub mod codes;
pub mod completions;
pub mod coverage;
pub mod denoise;
pub mod edit;
pub mod embed;
pub mod eval;
pub mod impute;
pub mod impute_table;
pub mod info;
pub mod interpolate;
pub mod manifold;
pub mod paths;
pub mod prior;
pub mod probe;
pub mod quality;
pub mod quality_table;
pub mod reconstruct;
pub mod report;
pub mod sample;
pub mod score;
pub mod sequence;
pub mod train;
pub mod traverse;
pub mod tune;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

pub use paths::{out_path, output_path};

use crate::gpu::{BackendChoice, Gpu, GpuOptions};
use crate::vae::checkpoint::{self, Pick, RunConfig};
use crate::vae::{ModelConfig, Params};

/// Where runs go by default, and where `--model` looks for the newest one.
pub const RUNS_DIR: &str = "runs";

#[derive(Parser, Debug)]
#[command(
    name = "vae-gpu",
    version,
    about = "Variational Autoencoders trained and used entirely on the GPU (WGSL compute shaders via wgpu)",
    long_about = None,
    after_help = "Exit codes: 0 success, 1 bad input (data, checkpoint, flag value, I/O), 2 usage, \
                  3 training diverged (the last good checkpoint is kept), 4 no GPU adapter or a \
                  device failure, 130 training stopped by Ctrl-C (between two steps; the last \
                  checkpoint is kept)."
)]
pub struct Cli {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How results and notes are shown; shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Print results on stdout as JSON (one object per line) instead of prose, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only results, warnings and errors: no progress bars, no notes on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail in the log on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

static OUTPUT: OnceLock<OutputArgs> = OnceLock::new();

pub(crate) fn output() -> &'static OutputArgs {
    OUTPUT.get_or_init(|| OutputArgs {
        json: false,
        quiet: false,
        verbose: 0,
    })
}

/// Whether notes and progress bars are off (`--quiet`).
pub fn quiet() -> bool {
    output().quiet
}

/// A note on stderr (what was loaded, where things go), unless `--quiet`.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::quiet() {
            $crate::cli::write_stderr(format_args!($($arg)*));
        }
    };
}
pub(crate) use say;

/// Writes a line to stderr. A stderr that cannot take it (closed, a full disk) loses the
/// line and nothing else: `eprintln!` would panic, and the work must go on or end as it
/// would have (results and errors decide the exit code).
pub fn write_stderr(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A result on stdout: the prose line, or with `--json` the value as one JSON line.
pub fn report(human: &str, value: impl serde::Serialize) {
    let text = if output().json {
        serde_json::to_string(&value).expect("results serialise to JSON")
    } else {
        human.to_string()
    };
    write_stdout(format!("{text}\n").as_bytes());
}

/// Writes to stdout. A failure ends the program with a non-zero status, as a closed pipe
/// ends any Unix tool: a reader that has gone (`| head`) must not pass for a command that
/// finished (a training run would stop early and report success), and a full disk is an
/// error, not a panic.
pub fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            write_stderr(format_args!(
                "error: stdout was closed by its reader (broken pipe); stopping"
            ));
        } else {
            write_stderr(format_args!("error: writing to stdout: {e}"));
        }
        std::process::exit(1);
    }
}

/// A progress bar on stderr over `len` items (hidden with `--quiet` or off a terminal).
pub fn progress_bar(len: u64, prefix: &str, unit: &str) -> indicatif::ProgressBar {
    if quiet() {
        return indicatif::ProgressBar::hidden();
    }
    indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{prefix} {{bar:30}} {{human_pos}}/{{human_len}} {unit}, {{per_sec}}, eta {{eta}} {{msg}}"
        ))
        .expect("valid template"),
    )
}

/// Which GPU to use; shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Graphics API back end: auto prefers a real GPU, then a CPU Vulkan driver, then GL.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WGPU_BACKEND",
        default_value = "auto"
    )]
    pub backend: BackendChoice,
    /// Use the adapter whose name contains this text (case-insensitive); see `vae-gpu info`.
    #[arg(long, global = true, env = "WGPU_ADAPTER_NAME")]
    pub adapter: Option<String>,
    /// Turn on wgpu validation (and the Vulkan validation layers when installed).
    #[arg(long, global = true)]
    pub validation: bool,
}

impl DeviceArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend,
            adapter: self.adapter.clone(),
            validation: self.validation,
        }
    }
}

/// Where the data comes from, shared by the commands that read data.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// IDX directory (train-images-idx3-ubyte[.gz], t10k-...), image folder (PNG/JPEG/BMP;
    /// subfolders are classes; train/ and test/ subfolders are the splits, else every 10th
    /// image is held out), NumPy array (.npy: uint8 or float32, [N, H, W], [N, H, W, C]
    /// or [N, D]) or CSV table (.csv, see --label-column). Default: the full Fashion-MNIST if installed
    /// (/usr/share/datasets/fashion-mnist), else the bundled subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Resize every image (IDX or folder) to N (square) or WxH.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
    /// Channels: 1 (grayscale) or 3 (RGB; grayscale IDX data is repeated) [default: 1]
    #[arg(long, value_parser = PossibleValuesParser::new(["1", "3"]).map(|s| s.parse::<usize>().expect("1 or 3")))]
    pub channels: Option<usize>,
    /// Fail on unreadable image files instead of skipping them with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Class names, one per line in label order [default: image folders' subfolder names,
    /// Fashion-MNIST's and EMNIST's own, or those saved with the run]
    #[arg(long, value_name = "FILE")]
    pub class_names: Option<PathBuf>,
    /// Labels of a .npy --data array: a 1-D integer .npy file, one label (0-255) per row.
    #[arg(long, value_name = "FILE.npy")]
    pub labels: Option<PathBuf>,
    /// Fraction of a .npy array's or a table's rows held out for testing (a fixed shuffle)
    /// [default: 0.1]
    #[arg(long, value_name = "F", value_parser = fraction)]
    pub test_fraction: Option<f64>,
    /// Table columns to treat as categorical (comma-separated names)
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Table columns to leave out (comma-separated names), e.g. an id
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// The table column that holds each row's class (not modelled; used by score, probe,
    /// scatter and embed)
    #[arg(long, value_name = "COLUMN")]
    pub label_column: Option<String>,
    /// The columns of the table a model was trained on (set from the model, not a flag).
    #[arg(skip)]
    pub schema: Option<crate::data::table::Schema>,
}

fn fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| *f > 0.0 && *f < 1.0)
        .ok_or_else(|| format!("'{s}' is not a fraction strictly between 0 and 1"))
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|&v| (1..=4096).contains(&v))
    };
    let parsed = match s.split_once(['x', 'X']) {
        Some((w, h)) => parse(w).zip(parse(h)),
        None => parse(s).map(|n| (n, n)),
    };
    parsed.ok_or_else(|| format!("'{s}' is not N or WxH with sizes in 1..=4096"))
}

impl DataArgs {
    /// The directory the data comes from (`--data` or the default).
    pub fn dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(crate::data::default_dir)
    }

    /// The names of the classes, by label: `--class-names`, else what the data says
    /// (`data::class_names`), else `saved` (the run's). A `--class-names` list must name
    /// every label in `labels`.
    pub fn class_names(
        &self,
        saved: &[String],
        labels: Option<&[u8]>,
    ) -> anyhow::Result<Vec<String>> {
        if let Some(path) = &self.class_names {
            let text = crate::io::read_input_text(path)
                .with_context(|| format!("reading --class-names {}", path.display()))?;
            let lines: Vec<&str> = text.trim_end().lines().map(str::trim).collect();
            // A blank line would shift every later name onto the wrong label.
            if let Some(i) = lines.iter().position(|l| l.is_empty()) {
                anyhow::bail!(
                    "{}: line {} is empty; give one name per label, in label order",
                    path.display(),
                    i + 1
                );
            }
            let names: Vec<String> = lines.into_iter().map(String::from).collect();
            if names.is_empty() || names.len() > 256 {
                anyhow::bail!(
                    "{}: {} class names; expected 1 to 256, one per line",
                    path.display(),
                    names.len()
                );
            }
            if let Some(&top) = labels.and_then(|l| l.iter().max()) {
                if usize::from(top) >= names.len() {
                    anyhow::bail!(
                        "{}: {} class names, but the data has label {top}; give one name per label, in label order (0 to {top})",
                        path.display(),
                        names.len()
                    );
                }
            }
            return Ok(names);
        }
        let found = crate::data::class_names(&self.dir());
        Ok(if found.is_empty() {
            saved.to_vec()
        } else {
            found
        })
    }

    /// `class_names` for data a model of run `cfg` works on: the run's names are the
    /// fallback.
    pub fn run_class_names(
        &self,
        cfg: &RunConfig,
        labels: Option<&[u8]>,
    ) -> anyhow::Result<Vec<String>> {
        self.class_names(
            cfg.train.as_ref().map_or(&[][..], |t| &t.class_names[..]),
            labels,
        )
    }

    pub fn load(&self) -> anyhow::Result<crate::data::Splits> {
        self.read(crate::data::load)
    }

    /// These arguments reading data for the model of run `cfg`. What they leave open comes
    /// from the run: its data while it is still in place (with a .npy array's labels), its
    /// held-out fraction (so the test rows are the ones it never trained on), image size and
    /// channels. A table is encoded with the model's columns and standardization.
    /// Fails when no --data is given and the run's training data is gone: what is fitted
    /// to or scored against the training split must not silently use other data.
    pub fn run_data_present(&self, cfg: &RunConfig) -> anyhow::Result<()> {
        let gone = cfg
            .train
            .as_ref()
            .and_then(|t| t.data_dir.as_ref())
            .filter(|d| !crate::data::exists(d));
        match (&self.data, gone) {
            (None, Some(dir)) => anyhow::bail!(
                "the run's data, {}, is gone; give its training data with --data",
                dir.display()
            ),
            _ => Ok(()),
        }
    }

    pub fn for_run(&self, cfg: &RunConfig) -> anyhow::Result<DataArgs> {
        let c = &cfg.model;
        if c.table.is_some() {
            self.no_table_choices("the model's columns were fixed when it was trained")?;
        }
        let mut d = DataArgs {
            schema: c.table.clone(),
            ..self.clone()
        };
        if let Some(t) = &cfg.train {
            let runs = match (&d.data, &t.data_dir) {
                (None, Some(dir)) if crate::data::exists(dir) => {
                    d.data = Some(dir.clone());
                    true
                }
                (None, Some(dir)) if c.table.is_some() => anyhow::bail!(
                    "the run's table, {}, is gone; give the records with --data FILE.csv",
                    dir.display()
                ),
                (None, Some(dir)) => {
                    log::warn!(
                        "the run's data, {}, is gone; reading the default data (give --data)",
                        dir.display()
                    );
                    false
                }
                (Some(given), Some(dir)) => paths::resolved(given) == *dir,
                _ => false,
            };
            // The run's own data comes with its labels and split; other data has its own.
            if runs {
                d.test_fraction = d.test_fraction.or(t.test_fraction);
                match &t.labels {
                    Some(l) if d.labels.is_none() && !l.exists() => log::warn!(
                        "the run's labels, {}, are gone; reading its data without labels (give --labels)",
                        l.display()
                    ),
                    l => d.labels = d.labels.take().or_else(|| l.clone()),
                }
            }
            // The model's image size, for data that can be resized to it.
            let path = d.dir();
            if !crate::data::table::is_csv(&path) && !crate::data::is_npy(&path) {
                d.size = d.size.or(t.size);
                d.channels = d.channels.or(t.channels);
            }
        }
        let csv = crate::data::table::is_csv(&d.dir());
        if c.table.is_some() && !csv {
            anyhow::bail!(
                "{}: this model was trained on a table; give it a CSV file with the same columns (--data FILE.csv)",
                d.dir().display()
            );
        }
        if c.table.is_none() && csv {
            anyhow::bail!(
                "{}: a table, but this model was trained on images or an array of {} values each",
                d.dir().display(),
                c.input_dim()
            );
        }
        d.note_reads();
        Ok(d)
    }

    /// Notes the files these arguments read, so that no output replaces them (see
    /// `paths::output_path`).
    pub fn note_reads(&self) {
        let dir = self.dir();
        // EMNIST's `DIR/emnist-letters` names a split of the files in DIR.
        let read = match dir.exists() {
            true => dir.clone(),
            false => crate::io::parent_dir(&dir).to_path_buf(),
        };
        paths::note_read(&read, "the command's data");
        // Class folders may be links to folders elsewhere: they are data too.
        if let Ok(layout) = crate::data::folder::Layout::of(&dir) {
            for split in std::iter::once(&layout.train).chain(&layout.test) {
                for class in &layout.classes {
                    paths::note_read(&split.join(class), "a class folder of the command's data");
                }
            }
        }
        if let Some(l) = &self.labels {
            paths::note_read(l, "the data's --labels");
        }
        if let Some(n) = &self.class_names {
            paths::note_read(n, "the --class-names file");
        }
    }

    /// An error when a table's column choices are given where the columns are already
    /// fixed (`why`).
    pub fn no_table_choices(&self, why: &str) -> anyhow::Result<()> {
        if !self.categorical.is_empty() || !self.ignore.is_empty() || self.label_column.is_some() {
            anyhow::bail!("--categorical, --ignore and --label-column apply to a new run: {why}");
        }
        Ok(())
    }

    /// The test split only: the training split of large data stays on disk (an image
    /// folder's through its cache), unread.
    pub fn load_test(&self) -> anyhow::Result<crate::data::Images> {
        Ok(self
            .load_for_training(crate::vae::train::DEFAULT_GPU_DATA_BYTES)?
            .test)
    }

    /// As `load`, with a training split over `budget` bytes left on disk (see
    /// `data::load_for_training`).
    pub fn load_for_training(&self, budget: u64) -> anyhow::Result<crate::data::TrainingData> {
        self.read(|path, opts| crate::data::load_for_training(path, opts, budget))
    }

    /// Runs a loader with these options and a bar over the images it decodes, then says
    /// what was read.
    fn read<T: Described>(
        &self,
        loader: impl FnOnce(
            Option<&std::path::Path>,
            &crate::data::DataOptions,
        ) -> Result<T, crate::data::DataError>,
    ) -> anyhow::Result<T> {
        // A bar over an image folder's files (shown once decoding takes a moment).
        let bar = progress_bar(0, "decoding", "images");
        let shown = bar.clone();
        let opts = crate::data::DataOptions {
            size: self.size,
            channels: self.channels,
            strict: self.strict,
            labels: self.labels.clone(),
            test_fraction: self.test_fraction,
            table: crate::data::table::TableOptions {
                categorical: self.categorical.clone(),
                ignore: self.ignore.clone(),
                label_column: self.label_column.clone(),
            },
            schema: self.schema.clone(),
            progress: Some(crate::data::Progress(std::sync::Arc::new(
                move |done, total| {
                    shown.set_length(total as u64);
                    shown.set_position(done as u64);
                },
            ))),
        };
        self.note_reads();
        let data = loader(self.data.as_deref(), &opts);
        bar.finish_and_clear();
        let data = data?;
        say!("data: {}", data.source());
        Ok(data)
    }
}

/// Loaded data that says where it came from.
trait Described {
    fn source(&self) -> &str;
}

impl Described for crate::data::Splits {
    fn source(&self) -> &str {
        &self.source
    }
}

impl Described for crate::data::TrainingData {
    fn source(&self) -> &str {
        &self.source
    }
}

/// Which images of the data a command works on.
#[derive(Args, Debug, Clone)]
pub struct SplitArgs {
    /// Which split to use: test, train, or all (train, then test; a table's or array's
    /// `row` column gives each record's row in its file).
    #[arg(long, default_value = "test", value_parser = ["train", "test", "all"])]
    pub split: String,
    /// Use only the first N images.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

impl SplitArgs {
    /// The chosen split of `data` (arguments resolved with `DataArgs::for_run`), limited,
    /// checked against the model's image size.
    pub fn images(&self, data: &DataArgs, c: &ModelConfig) -> anyhow::Result<crate::data::Images> {
        let imgs = match self.split.as_str() {
            "train" => data.load()?.train,
            "test" => data.load_test()?,
            _ => {
                let s = data.load()?;
                s.train.concat(&s.test)
            }
        };
        check_dims(c, &imgs)?;
        Ok(match self.limit {
            Some(n) => imgs.take(n as usize),
            None => imgs,
        })
    }

    /// Each chosen record's row in its file (0-based; a CSV's header not counted) for a
    /// table or an array, whose splits are a fixed shuffle of the rows
    /// (`data::npy::split_rows`); None for images.
    pub fn file_rows(&self, data: &DataArgs) -> anyhow::Result<Option<Vec<usize>>> {
        let path = data.dir();
        let n = if crate::data::table::is_csv(&path) {
            crate::data::table::read_cells(&path)?.rows.len()
        } else if crate::data::is_npy(&path) {
            crate::data::npy::open(&path)?.count
        } else {
            return Ok(None);
        };
        let (train, test) = crate::data::npy::split_rows(n, data.test_fraction.unwrap_or(0.1));
        let mut rows = match self.split.as_str() {
            "train" => train,
            "test" => test,
            _ => [train, test].concat(),
        };
        if let Some(n) = self.limit {
            rows.truncate(n as usize);
        }
        Ok(Some(rows))
    }
}

/// The CSV columns that name each record a command writes a line for: its index in the
/// chosen images, label, class name and, for tables and arrays, its row in the file.
pub struct RecordCsv<'a> {
    labels: Option<&'a [u8]>,
    names: Vec<String>,
    rows: Option<Vec<usize>>,
}

impl<'a> RecordCsv<'a> {
    /// For `imgs`, the images `split` chose from `input` for a model of run `cfg`.
    pub fn new(
        imgs: &'a crate::data::Images,
        split: &SplitArgs,
        input: &DataArgs,
        cfg: &RunConfig,
    ) -> anyhow::Result<RecordCsv<'a>> {
        let labels = imgs.labels.as_deref();
        Ok(RecordCsv {
            labels,
            names: input.run_class_names(cfg, labels)?,
            rows: split.file_rows(input)?,
        })
    }

    /// The header, around the command's own `columns`.
    pub fn header(&self, columns: &str) -> String {
        let row = if self.rows.is_some() { ",row" } else { "" };
        format!("index,label,{columns},class{row}\n")
    }

    /// Record `i`'s line, around its `values`.
    pub fn line(&self, i: usize, values: &str) -> String {
        let (label, class) = self.labels.map_or((String::new(), String::new()), |l| {
            (l[i].to_string(), crate::data::class_name(&self.names, l[i]))
        });
        let row = self
            .rows
            .as_ref()
            .map_or(String::new(), |r| format!(",{}", r[i]));
        format!("{i},{label},{values},{}{row}\n", csv_field(&class))
    }
}

/// The classes of `wanted` that `labels` lack, as "class [..] (the labels run from 0 to
/// N)"; None when every one is there.
pub fn absent_classes(wanted: &[u8], labels: &[u8]) -> Option<String> {
    let absent: Vec<u8> = wanted
        .iter()
        .copied()
        .filter(|c| !labels.contains(c))
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "class {absent:?} (the labels run from 0 to {})",
            labels.iter().max().unwrap_or(&0)
        )
    })
}

/// `--model`, shared by the commands that use a trained model.
#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// Run directory (or a bare model.safetensors) [default: the newest run under runs/]
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a VAE; each epoch prints train/test loss and writes a checkpoint.
    Train(Box<train::TrainArgs>),
    /// Draw new images from a trained model's prior into a PNG grid (a table model's:
    /// records, as CSV; a sequence model's: strings, one per line, with MOSES's validity,
    /// uniqueness and novelty for SMILES).
    Sample(sample::SampleArgs),
    /// Show test images over their reconstructions.
    Reconstruct(reconstruct::ReconstructArgs),
    /// Test loss (reconstruction + KL) and the importance-weighted bound.
    Eval(eval::EvalArgs),
    /// A strip of images decoded along the latent path between two images.
    Interpolate(interpolate::InterpolateArgs),
    /// One row per latent dimension, varied around an image's code or the origin.
    Traverse(traverse::TraverseArgs),
    /// A square grid decoded over two latent dimensions (through the Gaussian quantiles).
    Manifold(manifold::ManifoldArgs),
    /// Write every image's latent code (mu, logvar, label) as CSV.
    Embed(embed::EmbedArgs),
    /// Plot the latent means in 2-D (dimensions 0, 1 or --pca), coloured by label.
    Scatter(embed::EmbedArgs),
    /// Per-image anomaly scores (-ELBO, reconstruction or -IWAE) as CSV, with the AUROC.
    Score(score::ScoreArgs),
    /// A conditional model as a classifier: each record's class by the highest ELBO.
    Classify(classify::ClassifyArgs),
    /// Compress images (or a sequence model's strings) to quantized latent codes in a small file.
    Encode(codes::EncodeArgs),
    /// Restore images (or strings) from a codes file.
    Decode(codes::DecodeArgs),
    /// Corrupt test images and reconstruct them; PSNR before and after.
    Denoise(denoise::DenoiseArgs),
    /// Fill in missing pixels by iterating encode -> decode; PSNR against mean filling.
    Impute(impute::ImputeArgs),
    /// Test accuracy of a softmax classifier on latent means vs raw pixels, few labels.
    Probe(probe::ProbeArgs),
    /// Move images along an attribute vector (mean code of one class minus another's).
    Edit(edit::EditArgs),
    /// Mode coverage: each class's share among prior samples against its share in the data.
    Coverage(coverage::CoverageArgs),
    /// Sample quality: Fréchet distance, precision and recall against the test split in a
    /// classifier's features, beside real images' (the floor).
    Quality(quality::QualityArgs),
    /// One self-contained HTML page about a run: settings, curves, samples, latent space.
    Report(report::ReportArgs),
    /// List every GPU adapter with its back end, type, driver, limits and features, marking
    /// the one that would be used, and the GEMM kernels measured on it.
    Info,
    /// Time every kernel variant on a model's shapes (GEMMs, Adam, loss, bias gradient,
    /// convolution data movement), cache the fastest, print the table.
    Tune(tune::TuneArgs),
    /// Print a shell completion script, e.g. `vae-gpu completions bash > /etc/bash_completion.d/vae-gpu`.
    Completions(completions::CompletionsArgs),
}

/// Runs the parsed command line (after `main` has set up logging).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Set once, before anything prints.
    let _ = OUTPUT.set(cli.output.clone());
    match &cli.command {
        Command::Train(a) => train::run(&cli.device, a),
        Command::Sample(a) => sample::run(&cli.device, a),
        Command::Reconstruct(a) => reconstruct::run(&cli.device, a),
        Command::Eval(a) => eval::run(&cli.device, a),
        Command::Interpolate(a) => interpolate::run(&cli.device, a),
        Command::Traverse(a) => traverse::run(&cli.device, a),
        Command::Manifold(a) => manifold::run(&cli.device, a),
        Command::Embed(a) => embed::run_embed(&cli.device, a),
        Command::Scatter(a) => embed::run_scatter(&cli.device, a),
        Command::Score(a) => score::run(&cli.device, a),
        Command::Classify(a) => classify::run(&cli.device, a),
        Command::Encode(a) => codes::run_encode(&cli.device, a),
        Command::Decode(a) => codes::run_decode(&cli.device, a),
        Command::Denoise(a) => denoise::run(&cli.device, a),
        Command::Impute(a) => impute::run(&cli.device, a),
        Command::Probe(a) => probe::run(&cli.device, a),
        Command::Edit(a) => edit::run(&cli.device, a),
        Command::Coverage(a) => coverage::run(&cli.device, a),
        Command::Quality(a) => quality::run(&cli.device, a),
        Command::Report(a) => report::run(&cli.device, a),
        Command::Info => info::run(&cli.device),
        Command::Tune(a) => tune::run(&cli.device, a),
        Command::Completions(a) => completions::run(a),
    }
}

/// Per image, the IWAE estimate of log p(x) with `k` samples, under a progress bar.
pub fn iwae_log_px(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &crate::data::Images,
    k: usize,
) -> anyhow::Result<Vec<f64>> {
    let bar = progress_bar((images.count * k) as u64, "IWAE", "importance samples");
    let log_px = crate::vae::codec::iwae_log_px(gpu, params, c, images, k, &mut |done| {
        bar.set_position(done)
    })?;
    bar.finish_and_clear();
    Ok(log_px)
}

/// Opens the device the flags choose and says which it is.
pub fn open_gpu(device: &DeviceArgs) -> anyhow::Result<Gpu> {
    let gpu = Gpu::new(&device.options())?;
    say!("device: {}", gpu.describe());
    gpu.on_first_measure(|note| say!("{note}"));
    Ok(gpu)
}

/// Loads `--model` (or the newest run; its best checkpoint) onto the GPU. Returns the
/// directory outputs go to by default: the run named (or whose checkpoint is named), or the
/// directory of a model file.
pub fn load_model(gpu: &Gpu, arg: &ModelArg) -> anyhow::Result<(PathBuf, RunConfig, Params)> {
    let path = match &arg.model {
        Some(p) => p.clone(),
        None => checkpoint::newest_run(Path::new(RUNS_DIR))?,
    };
    if let Some(at) = sequence::sequence_checkpoint(arg)? {
        anyhow::bail!(
            "{}: a sequence model (--arch gru); this command takes image and table models (sequence models: train, sample)",
            at.display()
        );
    }
    let (at, cfg, params) = checkpoint::load(gpu, &path, Pick::Best, false)
        .with_context(|| format!("loading model {}", path.display()))?;
    say!("model: {}", at.display());
    // The data the run trained on is the user's, whether this command reads it or not.
    if let Some(data) = cfg.train.as_ref().and_then(|t| t.data_dir.as_ref()) {
        if crate::data::exists(data) {
            paths::note_read(data, "the data the model was trained on");
        }
    }
    // The checkpoint's files, or the model file and the config beside it.
    let files = if at.is_dir() {
        at.clone()
    } else {
        crate::io::parent_dir(&at).to_path_buf()
    };
    for name in [
        checkpoint::MODEL_FILE,
        checkpoint::CONFIG_FILE,
        checkpoint::OPTIMIZER_FILE,
    ] {
        if files.join(name).exists() {
            paths::note_read(&files.join(name), "the model's own file");
        }
    }
    if at.is_file() {
        paths::note_read(&at, "the model");
    }
    Ok((output_dir(&path), cfg, params))
}

/// Where a command's default outputs go for the model at `path`: its directory, or for a
/// checkpoint of a run, the run (training prunes checkpoint directories with whatever they
/// hold).
pub fn output_dir(path: &Path) -> PathBuf {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        crate::io::parent_dir(path).to_path_buf()
    };
    let resolved = paths::resolved(&dir);
    match resolved.parent() {
        Some(run) if crate::vae::rundir::is_checkpoint(&resolved) => run.to_path_buf(),
        _ => dir,
    }
}

/// Images named on the command line: indices into the test split, or image files (resized
/// to the model's size and channels).
pub fn pick_images(
    data: &DataArgs,
    c: &ModelConfig,
    picks: &[&str],
) -> anyhow::Result<crate::data::Images> {
    let mut test: Option<crate::data::Images> = None;
    let mut values = Vec::new();
    // Each pick's label: a test image's own, none for a file.
    let mut labels: Vec<Option<u8>> = Vec::new();
    for pick in picks {
        if let Ok(i) = pick.parse::<usize>() {
            if test.is_none() {
                let t = data.load_test()?;
                check_dims(c, &t)?;
                test = Some(t);
            }
            let t = test.as_ref().expect("loaded above");
            if i >= t.count {
                anyhow::bail!(
                    "image index {i} is out of range: the test split has {} images",
                    t.count
                );
            }
            values.extend(t.dtype.values(t.image(i)));
            labels.push(t.labels.as_ref().map(|l| l[i]));
        } else {
            paths::note_read(Path::new(pick), "an image this command reads");
            let img = crate::io::read_input(Path::new(pick))
                .map_err(anyhow::Error::from)
                .and_then(|bytes| {
                    crate::data::folder::decode_image(&bytes, None).map_err(anyhow::Error::msg)
                })
                .with_context(|| format!("{pick}: not an image index or a readable image file"))?;
            let one = crate::data::Images::from_dynamic(&[img], c.height, c.width, c.channels)?;
            values.extend(one.to_f32());
            labels.push(None);
        }
    }
    // Stored as the data is (image files among f32 data become f32 values).
    let dtype = test.map_or(crate::data::Dtype::U8, |t| t.dtype);
    Ok(crate::data::Images {
        pixels: dtype.bytes(&values),
        count: picks.len(),
        height: c.height,
        width: c.width,
        channels: c.channels,
        labels: labels.into_iter().collect(),
        dtype,
    })
}

/// A CSV field: quoted (with its quotes doubled) when it holds a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A finite number above 0 (a flag's value parser).
pub fn positive(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// A probability below 1: at least 0 (a flag's value parser).
pub fn probability(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a probability from 0 to below 1")),
    }
}

/// A finite number of at least 0 (a flag's value parser).
pub fn non_negative(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a finite non-negative number (at most {:e})",
            f32::MAX
        )),
    }
}

/// The divergence guard's ratio: 0 (off) or a finite number above 1.
pub fn loss_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v == 0.0 || (v.is_finite() && v > 1.0) => Ok(v),
        _ => Err(format!("'{s}' is not 0 or a number above 1")),
    }
}

/// A set of class labels, as parsed by `parse_classes`.
#[derive(Clone, Debug)]
pub struct Classes(pub Vec<u8>);

/// Class labels from "0-8", "0,2,5" or "0-3,7".
pub fn parse_classes(s: &str) -> Result<Classes, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let num = |t: &str| {
            t.trim()
                .parse::<u8>()
                .map_err(|_| format!("'{t}' is not a class label (0-255)"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty class range {part}"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(Classes(out))
}

/// `--class`: the classes a conditional model decodes.
#[derive(Args, Debug, Clone, Default)]
pub struct ClassArg {
    /// A conditional model's class to decode: a name or a label; several separated by
    /// commas, or `all`
    #[arg(long = "class", value_name = "CLASS", value_delimiter = ',')]
    pub class: Vec<String>,
}

/// The classes a conditional model draws when asked for all: those its run trained on
/// (its --classes), else every class of the model; None for an unconditional model.
pub fn trained_classes(cfg: &RunConfig) -> Option<Vec<u8>> {
    cfg.model.classes.map(|k| {
        cfg.train
            .as_ref()
            .and_then(|t| t.classes.clone())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| (0..k).map(|l| l as u8).collect())
    })
}

impl ClassArg {
    /// The labels named (None when none is), for the model of run `cfg`, which must be
    /// conditional.
    pub fn labels(&self, cfg: &RunConfig) -> anyhow::Result<Option<Vec<u8>>> {
        if self.class.is_empty() {
            return Ok(None);
        }
        let Some(k) = cfg.model.classes else {
            anyhow::bail!("--class needs a conditional model (train --conditional)");
        };
        let names = cfg.train.as_ref().map_or(&[][..], |t| &t.class_names[..]);
        let listing = || {
            (0..k)
                .map(|l| format!("{l} {}", crate::data::class_name(names, l as u8)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.class.iter().any(|c| c == "all") {
            return Ok(trained_classes(cfg));
        }
        self.class
            .iter()
            .map(|want| {
                let by_name = names.iter().position(|n| n.eq_ignore_ascii_case(want));
                let by_label = want.parse::<usize>().ok().filter(|&l| l < k);
                by_name.or(by_label).map(|l| l as u8).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--class {want}: no such class; the model's are {}",
                        listing()
                    )
                })
            })
            .collect::<anyhow::Result<Vec<u8>>>()
            .map(Some)
    }
}

/// Images a conditional model encodes, with their classes: their own labels, else the one
/// class `asked` (`--class`) for all of them.
pub fn labelled(
    mut images: crate::data::Images,
    cfg: &RunConfig,
    asked: Option<&[u8]>,
) -> anyhow::Result<crate::data::Images> {
    if cfg.model.classes.is_none() || images.labels.is_some() {
        return Ok(images);
    }
    match asked {
        Some([one]) => {
            images.labels = Some(vec![*one; images.count]);
            Ok(images)
        }
        _ => Err(anyhow::anyhow!(
            "these images have no labels, and this model is conditional: say their class with one --class"
        )),
    }
}

/// The error for a conditional model given no `--class` where one is needed: it lists
/// the classes.
pub fn class_needed(cfg: &RunConfig) -> anyhow::Error {
    let k = cfg.model.classes.unwrap_or(0);
    let names = cfg.train.as_ref().map_or(&[][..], |t| &t.class_names[..]);
    let list: Vec<String> = (0..k.min(12))
        .map(|l| crate::data::class_name(names, l as u8))
        .collect();
    anyhow::anyhow!(
        "this model is conditional: say which class to decode with --class (a name or a label, several, or all; its classes: {}{})",
        list.join(", "),
        if k > 12 { ", ..." } else { "" }
    )
}

/// "1 Gaussian", "10 Gaussians".
pub fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Commands that draw or rebuild images refuse a model of table records (whose decoder
/// outputs are per-column parameters, not values).
pub fn images_only(c: &ModelConfig) -> anyhow::Result<()> {
    if c.table.is_some() {
        anyhow::bail!(
            "this model was trained on a table; use train, eval, score, impute, embed, scatter, probe, sample (records as CSV) or quality with it"
        );
    }
    Ok(())
}

/// The images of `images` the run `cfg` trained on or was tested on: its `--classes`, and
/// for the training split (`limit`), its `--limit`.
pub fn as_trained(
    cfg: &RunConfig,
    images: crate::data::Images,
    limit: bool,
) -> crate::data::Images {
    let Some(t) = &cfg.train else {
        return images;
    };
    let picked = match &t.classes {
        Some(classes) => images.with_classes(classes).unwrap_or(images),
        None => images,
    };
    match t.limit.filter(|_| limit) {
        Some(n) => picked.take(n),
        None => picked,
    }
}

/// The data must have the image size the model was trained on.
pub fn check_dims(c: &ModelConfig, images: &crate::data::Images) -> anyhow::Result<()> {
    if (c.height, c.width, c.channels) != (images.height, images.width, images.channels) {
        // Image folders and IDX files can be resized; an array has its shape.
        let hint = format!(
            "resize image folders and IDX data with --size {}x{} --channels {}; an array must have the model's shape",
            c.width, c.height, c.channels
        );
        anyhow::bail!(
            "the model expects {}x{}x{} images, the data has {}x{}x{} ({hint})",
            c.height,
            c.width,
            c.channels,
            images.height,
            images.width,
            images.channels,
        );
    }
    if c.table.is_none() && c.likelihood == crate::ops::loss::Likelihood::Bernoulli {
        crate::vae::train::bernoulli_targets(images, "data's")?;
    }
    Ok(())
}
