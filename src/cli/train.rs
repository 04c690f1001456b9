//! `vae-gpu train`: train a VAE, publishing a checkpoint per epoch into a run directory.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use clap::Args;

use super::{open_gpu, say, DataArgs, DeviceArgs, RUNS_DIR};
use crate::data::{TrainSet, TrainingData};
use crate::ops::adam::AdamConfig;
use crate::ops::sample::Corruption;
use crate::vae::checkpoint::{self, Pick, RunConfig, CONFIG_FILE, MODEL_FILE};
use crate::vae::rundir::{self, RunDir};
use crate::vae::train::{
    keep_best_and_last, resumed_history, train, Run, TrainEvent, DEFAULT_GPU_DATA_BYTES,
};
use crate::vae::{ModelConfig, RunState, TrainConfig};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Run directory for checkpoints, metrics and the loss curve [default: runs/run-N]
    #[arg(long, value_parser = run_dir)]
    pub out: Option<PathBuf>,
    /// Continue a run from its last checkpoint (Adam state, step counter, noise position) up
    /// to --epochs. The run keeps its settings: --epochs, --lr, --weight-decay,
    /// --max-loss-ratio and --class-names may change; any other flag that differs from the
    /// run is an error.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Architecture: mlp (fully connected), conv (strided convolutions, transposed
    /// convolutions in the decoder; image sides must divide by 2 per conv layer), resnet
    /// (GroupNorm + SiLU residual blocks, stride-2 convolutions down, nearest x2 upsampling
    /// up; sides must divide by 2 per level but one), or an architecture file
    /// (FILE.json, see the README's "Architectures from a file"), or gru: a sequence VAE for
    /// SMILES strings and text (MOSES's: GRU encoder, 3-layer GRU decoder; --data a CSV
    /// column or a file of lines, default the bundled MOSES molecules) [default: mlp]
    #[arg(long, value_name = "mlp|conv|resnet|gru|FILE.json", value_parser = arch)]
    pub arch: Option<String>,
    /// The CSV column holding the sequences (--arch gru) [default: the only column, or one
    /// named SMILES]
    #[arg(long, value_name = "COLUMN")]
    pub sequence_column: Option<String>,
    /// How sequences split into tokens (--arch gru): smiles (bracket atoms, Cl, Br and %nn
    /// ring bonds are one token each) or chars [default: smiles]
    #[arg(long, value_enum)]
    pub tokens: Option<crate::data::sequence::Tokens>,
    /// The most tokens a sequence may have (--arch gru); longer ones are left out with a
    /// warning (an error with --strict) [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_length: Option<u32>,
    /// GRU layers of the sequence decoder (--arch gru) [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub decoder_layers: Option<u32>,
    /// Word dropout (--arch gru; Bowman et al. 2016): each decoder input token after the
    /// first becomes a zero vector with this probability, against posterior collapse
    /// [default: 0]
    #[arg(long, value_name = "P", value_parser = super::probability)]
    pub word_dropout: Option<f32>,
    /// Clip the gradient's norm to this (--arch gru; MOSES: 50) [default: 50]
    #[arg(long, value_name = "NORM", value_parser = super::positive)]
    pub clip: Option<f32>,
    /// Channel widths of the conv encoder's layers, or of the resnet's levels (multiples of
    /// 4; the decoder mirrors them) [default: conv 32,64; resnet 32,64,128]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(4..=4096))]
    pub conv_channels: Option<Vec<u32>>,
    /// Residual blocks per level of the resnet [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub blocks: Option<u32>,
    /// GroupNorm's groups in the resnet; every width must divide by it [default: 8]
    #[arg(long, value_name = "G", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub groups: Option<u32>,
    /// Hidden layer widths of the MLP encoder (the decoder mirrors them), e.g. 512,256
    /// [default: 400]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub hidden: Option<Vec<u32>>,
    /// The MLP's hidden activation: relu, tanh (Burda et al.'s), sigmoid, silu,
    /// leaky_relu[:SLOPE], none [default: relu]
    #[arg(long, value_name = "NAME", value_parser = activation)]
    pub activation: Option<String>,
    /// A conditional VAE: each record's class (its label), one-hot, enters beside the
    /// encoder's input and beside z, so `sample --class NAME` draws the class asked for.
    /// Needs labelled data (IDX labels, an image folder's classes, --labels, a table's
    /// --label-column)
    #[arg(long)]
    pub conditional: bool,
    /// The prior the model learns with: normal (N(0, I)), or vamp / vamp:K, the VampPrior
    /// (Tomczak & Welling 2018): the mixture of the encoder's posteriors at K learned
    /// pseudo-inputs (default 50), which start as training images; the KL term becomes its
    /// one-sample Monte-Carlo estimate, and `sample` draws from it [default: normal]
    #[arg(long, value_name = "normal|vamp[:K]", value_parser = super::prior::parse_train_prior)]
    pub prior: Option<super::prior::TrainPrior>,
    /// Size of the latent code [default: 20]. Several sizes stack stochastic layers (the
    /// MLP; Burda et al.'s two-layer model is --hidden 200,200 --latent 100,50): bottom
    /// first, the last is the code that sample, encode and the other commands use; the
    /// networks between two layers have as many hidden layers as --hidden, each as wide as
    /// the layer below
    #[arg(long, value_name = "SIZE[,SIZE...]", value_parser = latents)]
    pub latent: Option<Latents>,
    /// Decoder likelihood: bernoulli (binary cross-entropy on logits) or gaussian
    /// [default: bernoulli]
    #[arg(long, value_enum)]
    pub likelihood: Option<crate::ops::loss::Likelihood>,
    /// dynamic: the data are binary draws of the pixels (each 1 with the pixel's value as
    /// probability), drawn anew each time an image is used, on the GPU, from the run's
    /// seed (Burda et al. 2016; a Bernoulli model of grey images); none: as they are
    /// [default: none]
    #[arg(long, value_name = "dynamic|none", value_parser = ["dynamic", "none"])]
    pub binarize: Option<String>,
    /// Variance of the Gaussian likelihood (0.5 makes its data term the summed squared
    /// error) [default: 0.5]
    #[arg(long, value_parser = super::positive)]
    pub gauss_var: Option<f32>,
    /// Weight of the KL term (beta-VAE) [default: 1]
    #[arg(long, value_parser = super::non_negative)]
    pub beta: Option<f32>,
    /// Ramp beta linearly from 0 over this many epochs (against posterior collapse)
    /// [default: 0]
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub kl_warmup: Option<u32>,
    /// Cyclical KL annealing: cut the run into N cycles; beta ramps from 0 over the first
    /// half of each, then holds (Fu et al., 2019; against posterior collapse) [default: 0]
    #[arg(long, value_name = "N", conflicts_with = "kl_warmup", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub kl_cycles: Option<u32>,
    /// Free bits: each latent dimension's KL counts in the loss as at least NATS per image,
    /// so the model gains nothing by shutting a dimension off [default: 0]
    #[arg(long, value_name = "NATS", value_parser = free_bits)]
    pub free_bits: Option<f32>,
    /// Train on the importance-weighted bound with K posterior samples per record (IWAE,
    /// Burda et al. 2016): a tighter bound on log p(x) than the ELBO, each record taking K
    /// rows of the step (so K x --batch-size rows in all); 1 is the ELBO [default: 1]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub iwae_k: Option<u32>,
    /// Average the ELBO over K posterior samples per record (Burda et al.'s "VAE, k
    /// samples", the baseline of --iwae-k K): the same rows, equal weights [default: 1]
    #[arg(long, value_name = "K", conflicts_with = "iwae_k", value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub elbo_k: Option<u32>,
    /// With --iwae-k: the doubly reparameterized gradient for the encoder (DReG, Tucker et
    /// al. 2019), whose variance does not grow with K as the plain IWAE encoder gradient's
    /// does (one stochastic layer; under --prior vamp too)
    #[arg(long)]
    pub dreg: bool,
    /// Adam learning rate (where a --lr-schedule starts) [default: 0.001]
    #[arg(long, value_parser = super::positive)]
    pub lr: Option<f32>,
    /// Start the decoder's output bias at the training data's mean (the logit of each
    /// pixel's mean for a Bernoulli model), as Burda et al. did, instead of PyTorch's
    /// random initialisation
    #[arg(long)]
    pub output_bias_from_data: bool,
    /// How the learning rate changes: constant; step:N:G (times G every N epochs); cosine
    /// (half a cosine to 0 over the run); burda (Burda et al. 2016: 10^(-i/7) times --lr
    /// for 3^i epochs, i = 0..7) [default: constant]
    #[arg(long, value_name = "SCHEDULE", value_parser = lr_schedule)]
    pub lr_schedule: Option<crate::vae::config::LrSchedule>,
    /// Adam's moment decay rates beta1,beta2 [default: 0.9,0.999]
    #[arg(long, value_name = "B1,B2", allow_hyphen_values = true, value_parser = adam_betas)]
    pub adam_betas: Option<(f32, f32)>,
    /// Adam's epsilon (Burda et al. used 1e-4) [default: 1e-8]
    #[arg(long, value_name = "EPS", value_parser = super::positive)]
    pub adam_eps: Option<f32>,
    /// Decoupled weight decay (AdamW); 0 is plain Adam [default: 0]
    #[arg(long, value_parser = super::non_negative)]
    pub weight_decay: Option<f32>,
    /// Images per optimizer step [default: 128; 64 for the resnet]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub batch_size: Option<u32>,
    /// Total epochs (with --resume: the total to reach) [default: 10]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub epochs: Option<u32>,
    /// Fixes weight init, shuffling and sampling noise [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use only the first N training images.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Train (and test) on these classes only, e.g. 0-8 to hold class 9 out for anomaly
    /// detection (`vae-gpu score --normal-classes 0-8`).
    #[arg(long, value_parser = super::parse_classes)]
    pub classes: Option<super::Classes>,
    /// Train a denoising VAE: corrupt the inputs with gaussian:SIGMA, saltpepper:P or mask:P
    /// and reconstruct the clean images (then see `vae-gpu denoise`).
    #[arg(long, value_name = "KIND:AMOUNT")]
    pub noise: Option<Corruption>,
    /// Stop (exit code 3, keeping the last good checkpoint) when a loss exceeds
    /// best + (R - 1) x max(|best|, initial - best), i.e. R times the best so far or back
    /// above the initial loss; NaN/Inf always stop. 0 checks NaN/Inf only [default: 2]
    #[arg(long, value_name = "R", value_parser = super::loss_ratio)]
    pub max_loss_ratio: Option<f64>,
    /// Most training data held on the GPU, in MiB; a larger split is streamed from disk a
    /// batch at a time (same batches, same run)
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_GPU_DATA_BYTES >> 20)]
    pub gpu_data_mib: u64,
    /// Print the model's architecture in the architecture-file format (for these flags and
    /// this data: a start for a file of your own) and stop, training nothing
    #[arg(long, conflicts_with = "resume")]
    pub print_arch: bool,
    /// Train N steps of one epoch after a warm-up step (which compiles the kernels), print
    /// samples/s over the N, and stop (a throughput benchmark)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub bench_steps: Option<u64>,
}

/// A new runs/run-N, N one past the highest existing, created here: `create_dir` fails on
/// a directory another process has just taken, and the next N is tried.
fn new_run_dir() -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(RUNS_DIR).with_context(|| format!("creating {RUNS_DIR}"))?;
    let highest = std::fs::read_dir(RUNS_DIR)
        .with_context(|| format!("reading {RUNS_DIR}"))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("run-")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    for n in highest + 1.. {
        let dir = PathBuf::from(RUNS_DIR).join(format!("run-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("run numbers run out only after u32::MAX runs")
}

/// An optional setting as the messages show it.
fn shown<T: Debug>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".into(), |v| format!("{v:?}"))
}

/// `--latent`: the code's size, or stochastic layers' sizes bottom first ("100,50").
#[derive(Clone, PartialEq, Eq)]
pub struct Latents(Vec<usize>);

impl Latents {
    /// The code's size (the top layer's).
    pub fn code(&self) -> usize {
        *self.0.last().expect("at least one size")
    }

    /// The sizes of the layers below the code, bottom first.
    pub fn below(&self) -> &[usize] {
        &self.0[..self.0.len() - 1]
    }

    fn of(m: &ModelConfig) -> Latents {
        Latents(m.below.iter().map(|l| l.latent).chain([m.latent]).collect())
    }
}

impl Debug for Latents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&sizes.join(","))
    }
}

fn latents(s: &str) -> Result<Latents, String> {
    let sizes: Vec<usize> = s
        .split(',')
        .map(|v| match v.trim().parse::<usize>() {
            Ok(n) if (1..=4096).contains(&n) => Ok(n),
            _ => Err(format!(
                "'{v}' is not a latent size in 1..=4096 (give one size, or several bottom first: 100,50)"
            )),
        })
        .collect::<Result<_, _>>()?;
    if sizes.len() > 9 {
        return Err(format!(
            "{} stochastic layers: at most 9 can be stacked",
            sizes.len()
        ));
    }
    Ok(Latents(sizes))
}

fn run_dir(s: &str) -> Result<PathBuf, String> {
    match s {
        "-" => Err("'-': a run is a directory of checkpoints; give its path".into()),
        _ => Ok(PathBuf::from(s)),
    }
}

fn activation(s: &str) -> Result<String, String> {
    crate::model::spec::activation(Some(s)).map(|_| s.to_string())
}

fn lr_schedule(s: &str) -> Result<crate::vae::config::LrSchedule, String> {
    use crate::vae::config::LrSchedule;
    let parts: Vec<&str> = s.split(':').collect();
    match parts[..] {
        ["constant"] => Ok(LrSchedule::Constant),
        ["cosine"] => Ok(LrSchedule::Cosine),
        ["burda"] => Ok(LrSchedule::Burda),
        ["step", every, gamma] => {
            let every = every
                .parse::<usize>()
                .ok()
                .filter(|&e| (1..=1_000_000).contains(&e))
                .ok_or_else(|| format!("{s}: N, the epochs between steps, must be 1 to 1000000"))?;
            let gamma = gamma
                .parse::<f32>()
                .ok()
                .filter(|g| g.is_finite() && *g > 0.0 && *g <= 1.0)
                .ok_or_else(|| format!("{s}: G, the factor per step, must be in (0, 1]"))?;
            Ok(LrSchedule::Step { every, gamma })
        }
        _ => Err(format!("{s}: use constant, step:N:G, cosine or burda")),
    }
}

fn adam_betas(s: &str) -> Result<(f32, f32), String> {
    let rate = |v: &str| {
        let b = v
            .trim()
            .parse::<f32>()
            .map_err(|_| format!("{s}: '{v}' is not a number"))?;
        match (0.0..1.0).contains(&b) {
            true => Ok(b),
            false => Err(format!("{s}: each beta must be at least 0 and below 1")),
        }
    };
    match s.split_once(',') {
        Some((b1, b2)) => Ok((rate(b1)?, rate(b2)?)),
        None => Err(format!("{s}: give beta1,beta2, e.g. 0.9,0.999")),
    }
}

fn free_bits(s: &str) -> Result<f32, String> {
    super::non_negative(s)
        .ok()
        .filter(|&v| v <= 100.0)
        .ok_or_else(|| format!("'{s}' is not a number of nats from 0 to 100"))
}

/// A setting a resumed run keeps: the flag's value if the run has none, the run's value if
/// the flag is absent, an error if they differ.
fn keep<T: PartialEq + Debug>(
    flag: &str,
    given: Option<T>,
    saved: Option<T>,
) -> anyhow::Result<Option<T>> {
    match (given, saved) {
        (Some(g), Some(s)) if g != s => bail!(
            "--{flag} {} differs from the run being resumed ({flag} {}); a resumed run keeps its settings (start a new run with --out to change them)",
            shown(&Some(g)),
            shown(&Some(s))
        ),
        (g, s) => Ok(s.or(g)),
    }
}

/// An optional setting a resumed run keeps (None is a setting: no --limit, all classes):
/// its saved value; a flag asking for another is an error.
fn same<T: PartialEq + Debug>(
    flag: &str,
    given: Option<T>,
    saved: Option<T>,
) -> anyhow::Result<Option<T>> {
    match given {
        Some(g) if Some(&g) != saved.as_ref() => bail!(
            "--{flag} {} differs from the run being resumed ({flag} {}); a resumed run keeps its settings (start a new run with --out to change them)",
            shown(&Some(g)),
            shown(&saved)
        ),
        _ => Ok(saved),
    }
}

/// A setting a resumed run may change: applied and said.
fn change<T: PartialEq + Debug + Copy>(flag: &str, given: Option<T>, saved: &mut T) {
    if let Some(g) = given.filter(|g| g != saved) {
        say!("--{flag}: {saved:?} -> {g:?} from here on");
        *saved = g;
    }
}

/// `--arch`: a built-in architecture's name, or an architecture file (.json).
fn arch(s: &str) -> Result<String, String> {
    match s {
        "mlp" | "conv" | "resnet" | "gru" => Ok(s.to_string()),
        _ if s.ends_with(".json") => Ok(s.to_string()),
        _ => Err(format!(
            "'{s}' is not mlp, conv, resnet, gru or an architecture file (FILE.json)"
        )),
    }
}

/// The architecture file `--arch` names, read and parsed (None for a built-in one).
fn arch_file(a: &TrainArgs) -> anyhow::Result<Option<crate::model::ArchSpec>> {
    let Some(path) = a.arch.as_deref().filter(|s| s.ends_with(".json")) else {
        return Ok(None);
    };
    let path = Path::new(path);
    super::paths::note_read(path, "the architecture file");
    let text =
        crate::io::read_input_text(path).with_context(|| format!("--arch {}", path.display()))?;
    let spec = crate::model::ArchSpec::parse(&text)
        .map_err(|e| anyhow::anyhow!("--arch {}: {e}", path.display()))?;
    Ok(Some(spec))
}

fn widths(v: &Option<Vec<u32>>) -> Option<Vec<usize>> {
    v.as_ref().map(|v| v.iter().map(|&w| w as usize).collect())
}

/// The data of a run: `--data` etc., or for a resumed run the data it was trained on.
struct DataChoice {
    args: DataArgs,
    limit: Option<usize>,
    classes: Option<Vec<u8>>,
}

impl DataChoice {
    /// `schema`: the table a resumed run was trained on, whose encoding it keeps.
    fn new(
        a: &TrainArgs,
        saved: Option<&TrainConfig>,
        schema: Option<crate::data::table::Schema>,
    ) -> anyhow::Result<DataChoice> {
        let limit = a.limit.map(|n| n as usize);
        let classes = a.classes.as_ref().map(|c| c.0.clone());
        let Some(t) = saved else {
            return Ok(DataChoice {
                args: a.data.clone(),
                limit,
                classes,
            });
        };
        if schema.is_some() {
            a.data
                .no_table_choices("a resumed run keeps the columns it was trained with")?;
        }
        let given = a.data.data.as_deref().map(super::paths::resolved);
        let data = match t.data_dir.as_deref().map(super::paths::resolved) {
            // Data that moved is taken from where --data says it is now (the shape and step
            // checks below still hold it to the run's).
            Some(saved) if !saved.exists() => Some(given.with_context(|| {
                format!(
                    "the run's data {} is gone; if it moved, give its new place with --data",
                    saved.display()
                )
            })?),
            // Runs saved before the data directory was recorded take --data.
            saved => keep("data", given, saved)?,
        };
        Ok(DataChoice {
            args: DataArgs {
                data,
                size: same("size", a.data.size, t.size)?,
                // No --channels means 1 (grayscale).
                channels: same("channels", a.data.channels, t.channels.or(Some(1)))?,
                strict: a.data.strict,
                class_names: a.data.class_names.clone(),
                labels: keep(
                    "labels",
                    a.data.labels.as_deref().map(super::paths::resolved),
                    t.labels.as_deref().map(super::paths::resolved),
                )?,
                // Runs record None for the default fraction, 0.1.
                test_fraction: match a.data.test_fraction {
                    Some(f) if f == t.test_fraction.unwrap_or(0.1) => t.test_fraction,
                    given => same("test-fraction", given, t.test_fraction)?,
                },
                categorical: a.data.categorical.clone(),
                ignore: a.data.ignore.clone(),
                label_column: a.data.label_column.clone(),
                schema,
            },
            limit: same("limit", limit, t.limit)?,
            classes: same("classes", classes, t.classes.clone())?,
        })
    }

    /// The data, its classes picked and its training split limited; a training split over
    /// `budget` bytes stays on disk when it comes from an image folder or an array.
    fn load(&self, budget: u64) -> anyhow::Result<TrainingData> {
        let mut splits = self.args.load_for_training(budget)?;
        if let Some(classes) = &self.classes {
            // A class the data does not have is a mistake in the list, not an empty class.
            if let Some(why) = splits
                .train
                .labels()
                .and_then(|l| super::absent_classes(classes, l))
            {
                bail!("--classes: the training data has no images of {why}");
            }
            let train = splits.train.with_classes(classes).filter(|t| t.count() > 0);
            let test = splits.test.with_classes(classes).filter(|i| i.count > 0);
            let (Some(train), Some(test)) = (train, test) else {
                bail!(
                    "--classes {classes:?}: the data has no labels or no images of those classes"
                );
            };
            say!(
                "classes {classes:?}: {} train, {} test images",
                train.count(),
                test.count
            );
            (splits.train, splits.test) = (train, test);
        }
        if let Some(n) = self.limit {
            splits.train = splits.train.take(n);
            say!("using the first {} training images", splits.train.count());
        }
        Ok(splits)
    }
}

/// The settings of a new run: the flags over the defaults.
fn new_run(
    a: &TrainArgs,
    data: &DataChoice,
    train: &TrainSet<'_>,
    dir: PathBuf,
    source: String,
    spec: Option<crate::model::ArchSpec>,
) -> (ModelConfig, TrainConfig) {
    let (h, w, ch) = train.shape();
    let base = match (a.arch.as_deref(), &spec) {
        (_, Some(spec)) => ModelConfig {
            arch: "file".into(),
            hidden: Vec::new(),
            latent: spec.latent.unwrap_or(20),
            spec: Some(spec.clone()),
            ..ModelConfig::mlp(h, w, ch)
        },
        (Some("conv"), _) => ModelConfig::conv(h, w, ch),
        (Some("resnet"), _) => ModelConfig::resnet(h, w, ch),
        _ => ModelConfig::mlp(h, w, ch),
    };
    let base_depth = base.hidden.len();
    let model = ModelConfig {
        hidden: widths(&a.hidden)
            .filter(|_| base.arch == "mlp")
            .unwrap_or(base.hidden),
        activation: a.activation.clone().filter(|_| base.arch == "mlp"),
        conv_channels: widths(&a.conv_channels)
            .filter(|_| ["conv", "resnet"].contains(&base.arch.as_str()))
            .unwrap_or(base.conv_channels),
        blocks: a.blocks.map_or(base.blocks, |b| b as usize),
        groups: a.groups.map_or(base.groups, |g| g as usize),
        latent: a.latent.as_ref().map_or(base.latent, Latents::code),
        // Burda et al.'s rule: as many hidden layers between two stochastic layers as
        // between the data and the first, each as wide as the layer below.
        below: a.latent.as_ref().map_or(Vec::new(), |l| {
            let depth = widths(&a.hidden).map_or(base_depth, |h| h.len()).max(1);
            l.below()
                .iter()
                .map(|&latent| crate::vae::config::LowerLatent {
                    latent,
                    hidden: vec![latent; depth],
                })
                .collect()
        }),
        // Real-valued data takes the Gaussian likelihood unless told otherwise.
        likelihood: a.likelihood.unwrap_or(match train.dtype() {
            crate::data::Dtype::F32 => crate::ops::loss::Likelihood::Gaussian,
            crate::data::Dtype::U8 => base.likelihood,
        }),
        gauss_var: a.gauss_var.unwrap_or(base.gauss_var),
        binarize: a.binarize.as_deref() == Some("dynamic"),
        ..base
    };
    let d = TrainConfig::default();
    let t = TrainConfig {
        beta: a.beta.unwrap_or(d.beta),
        kl_warmup: a.kl_warmup.map_or(d.kl_warmup, |k| k as usize),
        kl_cycles: a.kl_cycles.map_or(d.kl_cycles, |k| k as usize),
        free_bits: a.free_bits.unwrap_or(d.free_bits),
        iwae_k: a.iwae_k.map_or(d.iwae_k, |k| k as usize),
        elbo_k: a.elbo_k.map_or(d.elbo_k, |k| k as usize),
        dreg: a.dreg,
        output_bias_from_data: a.output_bias_from_data,
        // The resnet's column matrices at 28x28 outgrow what lavapipe binds at 128.
        batch_size: a.batch_size.map_or(
            if model.arch == "resnet" {
                64
            } else {
                d.batch_size
            },
            |b| b as usize,
        ),
        epochs: a.epochs.map_or(d.epochs, |e| e as usize),
        seed: a.seed.unwrap_or(d.seed),
        adam: AdamConfig {
            lr: a.lr.unwrap_or(d.adam.lr),
            weight_decay: a.weight_decay.unwrap_or(d.adam.weight_decay),
            beta1: a.adam_betas.map_or(d.adam.beta1, |b| b.0),
            beta2: a.adam_betas.map_or(d.adam.beta2, |b| b.1),
            eps: a.adam_eps.unwrap_or(d.adam.eps),
        },
        lr_schedule: a.lr_schedule.unwrap_or(d.lr_schedule),
        data: source,
        corruption: a.noise,
        data_dir: Some(super::paths::resolved(&dir)),
        size: data.args.size,
        channels: data.args.channels,
        limit: data.limit,
        classes: data.classes.clone(),
        labels: data.args.labels.as_deref().map(super::paths::resolved),
        test_fraction: data.args.test_fraction,
        class_names: Vec::new(),
        data_fingerprint: None,
        max_loss_ratio: a.max_loss_ratio.unwrap_or(d.max_loss_ratio),
    };
    (model, t)
}

/// Checks the flags against the run being resumed and applies those that may change.
fn resumed_run(
    a: &TrainArgs,
    saved: &RunConfig,
    train: &TrainSet<'_>,
) -> anyhow::Result<(ModelConfig, TrainConfig)> {
    let m = saved.model.clone();
    let mut t = saved
        .train
        .clone()
        .context("the checkpoint has no training settings to resume (a bare model file?)")?;
    match arch_file(a)? {
        // The architecture of a resumed run is the one it was trained with.
        Some(spec) if m.spec.as_ref() != Some(&spec) => bail!(
            "--arch {} differs from the architecture of the run being resumed; a resumed run keeps its settings (start a new run with --out to change them)",
            a.arch.as_deref().unwrap_or_default()
        ),
        Some(_) => None,
        None => keep("arch", a.arch.clone(), Some(m.arch.clone()))?,
    };
    match m.arch.as_str() {
        "mlp" => keep("hidden", widths(&a.hidden), Some(m.hidden.clone()))?,
        "conv" | "resnet" => keep(
            "conv-channels",
            widths(&a.conv_channels),
            Some(m.conv_channels.clone()),
        )?,
        _ => None,
    };
    check_arch_flags(a, &m.arch)?;
    if a.conditional && m.classes.is_none() {
        bail!("--conditional differs from the run being resumed (an unconditional model); a resumed run keeps its settings (start a new run with --out to change them)");
    }
    let prior = match m.vamp {
        Some(k) => super::prior::TrainPrior::Vamp(k),
        None => super::prior::TrainPrior::Normal,
    };
    keep("prior", a.prior, Some(prior))?;
    keep("blocks", a.blocks.map(|b| b as usize), Some(m.blocks))?;
    keep("groups", a.groups.map(|g| g as usize), Some(m.groups))?;
    keep("latent", a.latent.clone(), Some(Latents::of(&m)))?;
    // The MLP's default activation is stored as none.
    let saved_activation = match m.arch.as_str() {
        "mlp" => Some(m.activation.clone().unwrap_or_else(|| "relu".into())),
        _ => m.activation.clone(),
    };
    same("activation", a.activation.clone(), saved_activation)?;
    keep(
        "binarize",
        a.binarize.clone(),
        Some(if m.binarize { "dynamic" } else { "none" }.to_string()),
    )?;
    keep("likelihood", a.likelihood, Some(m.likelihood))?;
    keep("gauss-var", a.gauss_var, Some(m.gauss_var))?;
    keep("beta", a.beta, Some(t.beta))?;
    keep(
        "kl-warmup",
        a.kl_warmup.map(|k| k as usize),
        Some(t.kl_warmup),
    )?;
    keep(
        "kl-cycles",
        a.kl_cycles.map(|k| k as usize),
        Some(t.kl_cycles),
    )?;
    keep("free-bits", a.free_bits, Some(t.free_bits))?;
    keep("iwae-k", a.iwae_k.map(|k| k as usize), Some(t.iwae_k))?;
    keep("elbo-k", a.elbo_k.map(|k| k as usize), Some(t.elbo_k))?;
    if a.dreg && !t.dreg {
        bail!("--dreg differs from the run being resumed, which trains without it; a resumed run keeps its settings (start a new run with --out to change them)");
    }
    keep("lr-schedule", a.lr_schedule, Some(t.lr_schedule))?;
    keep(
        "adam-betas",
        a.adam_betas,
        Some((t.adam.beta1, t.adam.beta2)),
    )?;
    keep("adam-eps", a.adam_eps, Some(t.adam.eps))?;
    if a.output_bias_from_data && !t.output_bias_from_data {
        bail!("--output-bias-from-data sets how a new run starts; the run being resumed started otherwise (start a new run with --out to use it)");
    }
    keep(
        "batch-size",
        a.batch_size.map(|b| b as usize),
        Some(t.batch_size),
    )?;
    keep("seed", a.seed, Some(t.seed))?;
    same("noise", a.noise, t.corruption)?;
    change("lr", a.lr, &mut t.adam.lr);
    change("weight-decay", a.weight_decay, &mut t.adam.weight_decay);
    if let Some(e) = a.epochs.map(|e| e as usize) {
        if t.kl_cycles > 0 && e != t.epochs {
            log::warn!(
                "--kl-cycles spreads its {} cycles over the run's length: at --epochs {e} instead of {}, beta follows a stretched schedule from here on, so the run will not equal a straight {e}-epoch run",
                t.kl_cycles,
                t.epochs
            );
        }
    }
    change("epochs", a.epochs.map(|e| e as usize), &mut t.epochs);
    change("max-loss-ratio", a.max_loss_ratio, &mut t.max_loss_ratio);
    let (h, w, c) = train.shape();
    if (m.height, m.width, m.channels) != (h, w, c) {
        bail!(
            "the model was trained on {}x{}x{} images, the data has {h}x{w}x{c}",
            m.height,
            m.width,
            m.channels,
        );
    }
    Ok((m, t))
}

/// Raised by the first Ctrl-C once the training loop runs: it stops between two steps.
pub(super) static STOP: AtomicBool = AtomicBool::new(false);
/// Whether the training loop has begun; before it nothing can be lost, so Ctrl-C ends the
/// process at once (data loading and tuning can take minutes).
pub(super) static TRAINING: AtomicBool = AtomicBool::new(false);
/// A new run's directory, removed by a Ctrl-C that ends the process while it holds no
/// checkpoint.
static FRESH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Ctrl-C: the first one in the training loop stops it between two steps (the error then
/// names the kept checkpoint); any other ends the process now. Checkpoints are published
/// by one rename, so the last one is whole either way.
fn on_ctrl_c() {
    if TRAINING.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(dir) = FRESH.lock().ok().and_then(|d| d.clone()) {
        if rundir::checkpoints(&dir).is_empty() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    super::write_stderr(format_args!(
        "error: interrupted{}",
        if TRAINING.load(Ordering::SeqCst) {
            " again: stopped at once; the last checkpoint is whole"
        } else {
            " before training began; nothing was written"
        }
    ));
    std::process::exit(130);
}

/// Whether SIGINT is ignored, as for a job a script started in the background or under
/// some `nohup`s: such a process is not to be stopped by Ctrl-C, and stays so.
#[cfg(unix)]
fn sigint_ignored() -> bool {
    // SAFETY: sigaction with no new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(not(unix))]
fn sigint_ignored() -> bool {
    false
}

pub fn run(device: &DeviceArgs, a: &TrainArgs) -> anyhow::Result<()> {
    if !sigint_ignored() {
        let _ = ctrlc::set_handler(on_ctrl_c);
    }
    if a.print_arch {
        if a.arch.as_deref() == Some("gru") {
            bail!("--print-arch writes architecture files, which hold image and table models; a sequence model's shape is --hidden, --latent and --decoder-layers");
        }
        return print_arch(a);
    }
    if let Some(d) = &a.resume {
        // Locking takes the directory over (it removes temporary files), so it must be a run.
        if d.is_dir() && !d.join(CONFIG_FILE).is_file() && !rundir::is_run(d) {
            bail!(
                "--resume {}: not a vae-gpu run (it holds no checkpoint); give a run directory",
                d.display()
            );
        }
        // A checkpoint inside a run, or a model file: resuming it as a run would write
        // checkpoints inside it, next to the run's own.
        if d.is_file() || d.join(CONFIG_FILE).is_file() {
            let run = d.parent().filter(|p| !rundir::checkpoints(p).is_empty());
            bail!(
                "--resume {}: a checkpoint, not a run directory{}",
                d.display(),
                run.map_or(String::new(), |r| format!(
                    "; resume its run with --resume {}",
                    r.display()
                ))
            );
        }
    }
    match (&a.resume, &a.out) {
        (None, Some(out)) => super::paths::check_run_dir(out, &a.data.dir())?,
        (None, None) => super::paths::check_outside_data(Path::new(RUNS_DIR), &a.data.dir())?,
        _ => {}
    }
    let (dir_path, fresh) = match (&a.resume, &a.out) {
        (Some(d), _) | (None, Some(d)) => (d.clone(), false),
        (None, None) => (new_run_dir()?, true),
    };
    // Locked before anything is read from it, so no second process can interleave.
    let dir = RunDir::lock(&dir_path)?;
    let new = fresh || dir.created();
    if new {
        *FRESH.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir_path.clone());
    }
    let sequence = a.arch.as_deref() == Some("gru")
        || a.resume.as_ref().is_some_and(|d| {
            checkpoint::resolve(d, Pick::Last)
                .is_ok_and(|c| crate::vae::gru::train::is_sequence_checkpoint(&c))
        });
    let result = if sequence {
        super::sequence::train(device, a, &dir)
    } else {
        train_in(device, a, &dir)
    };
    // A new run that failed before its first checkpoint, or a benchmark (which writes none),
    // leaves nothing behind.
    let gone = result.is_err() || a.bench_steps.is_some();
    if gone && new && rundir::checkpoints(&dir_path).is_empty() {
        let _ = std::fs::remove_dir_all(&dir_path);
    }
    result
}

/// `--print-arch`: the architecture these flags and this data make, printed; no run
/// directory is made or locked.
fn print_arch(a: &TrainArgs) -> anyhow::Result<()> {
    let data = DataChoice::new(a, None, None)?;
    let TrainingData {
        train,
        dir,
        source,
        schema,
        ..
    } = data.load(a.gpu_data_mib << 20)?;
    let (model, _) = fresh_model(a, &data, &train, dir, source, schema)?;
    let spec = crate::model::ArchSpec {
        latent: Some(model.latent),
        ..model.spec().map_err(anyhow::Error::msg)?
    };
    super::write_stdout(spec.to_text().as_bytes());
    Ok(())
}

/// Refuses flags that shape another architecture than `arch`.
fn check_arch_flags(a: &TrainArgs, arch: &str) -> anyhow::Result<()> {
    let sequence_flags = a.sequence_column.is_some()
        || a.tokens.is_some()
        || a.max_length.is_some()
        || a.decoder_layers.is_some()
        || a.word_dropout.is_some()
        || a.clip.is_some();
    if sequence_flags {
        bail!("--sequence-column, --tokens, --max-length, --decoder-layers, --word-dropout and --clip shape a sequence model (--arch gru); this model's architecture is {arch}");
    }
    if a.hidden.is_some() && arch != "mlp" {
        bail!("--hidden sets the MLP's widths; this model's architecture is {arch} (its widths come from --conv-channels or the architecture file)");
    }
    if a.conv_channels.is_some() && !["conv", "resnet"].contains(&arch) {
        bail!("--conv-channels sets the conv and resnet VAEs' widths; this model's architecture is {arch}");
    }
    if (a.blocks.is_some() || a.groups.is_some()) && arch != "resnet" {
        bail!("--blocks and --groups shape the resnet VAE; this model's architecture is {arch}");
    }
    if a.activation.is_some() && arch != "mlp" {
        bail!("--activation sets the MLP's hidden activation; this model's architecture is {arch} (an architecture file names each layer's)");
    }
    Ok(())
}

/// Flags that do not go together, named as the user gave them (the configs' own checks
/// name their fields).
fn check_combinations(a: &TrainArgs, m: &ModelConfig, t: &TrainConfig) -> anyhow::Result<()> {
    if m.stacked() {
        let stacked = match m.below.is_empty() {
            true => "the architecture file stacks stochastic layers (its below list)".to_string(),
            false => format!("--latent {:?} stacks stochastic layers", Latents::of(m)),
        };
        if m.arch == "file" && !m.below.is_empty() {
            bail!("{stacked}; an architecture file stacks its layers with its below list: give --latent one size (the code's)");
        }
        if !["mlp", "file"].contains(&m.arch.as_str()) {
            bail!("{stacked}, which are built for the MLP; this model's architecture is {} (give one size)", m.arch);
        }
        if m.classes.is_some() || m.vamp.is_some() || m.table.is_some() {
            bail!("{stacked} under the standard prior for images and arrays; drop --conditional, --prior vamp or the table (or give one size)");
        }
        if t.free_bits > 0.0 {
            bail!("{stacked}, whose KLs are Monte-Carlo estimates with no per-dimension terms for --free-bits to floor: drop one of them");
        }
    }
    if t.dreg {
        if t.iwae_k < 2 {
            bail!("--dreg weighs the encoder's gradient by the importance weights: it needs --iwae-k 2 or more");
        }
        if m.stacked() {
            // An upper encoder's weights would take the path alone while its input (the
            // layer below's code) also needs log q's score terms: two backwards of one net.
            bail!("--dreg is built for one stochastic layer; this model stacks several (--latent with several sizes, or an architecture file's below list): drop --dreg or give one size");
        }
        if t.beta != 1.0 || t.kl_warmup > 0 || t.kl_cycles > 0 {
            bail!("--dreg's squared weights are the importance-weighted bound's own, with beta 1 throughout: drop --beta, --kl-warmup and --kl-cycles");
        }
    }
    if t.free_bits > 0.0 {
        if m.vamp.is_some() {
            bail!("--free-bits floors each latent dimension's closed-form KL, and the VampPrior's KL is one Monte-Carlo estimate per image: drop one of them");
        }
        if t.samples().k > 1 {
            bail!("--free-bits floors each latent dimension's closed-form KL, and --iwae-k or --elbo-k above 1 trains on Monte-Carlo estimates: drop one of them");
        }
    }
    if m.binarize {
        if m.table.is_some() {
            bail!(
                "--binarize is for images and arrays; a table's columns have their own likelihoods"
            );
        }
        if m.likelihood != crate::ops::loss::Likelihood::Bernoulli {
            bail!(
                "--binarize dynamic draws binary pixels for a Bernoulli model, and this model's likelihood is gaussian{}",
                match a.likelihood {
                    Some(_) => " (--likelihood gaussian)",
                    None => " (float data default to it: add --likelihood bernoulli if the values lie in [0, 1])",
                }
            );
        }
    }
    if t.output_bias_from_data && m.table.is_some() {
        bail!("--output-bias-from-data is for images and arrays; a table's outputs are its columns' parameters");
    }
    Ok(())
}

/// The model and settings of a new run, every layer checked against the data.
fn fresh_model(
    a: &TrainArgs,
    data: &DataChoice,
    train: &TrainSet<'_>,
    data_dir: PathBuf,
    source: String,
    schema: Option<crate::data::table::Schema>,
) -> anyhow::Result<(ModelConfig, TrainConfig)> {
    let spec = arch_file(a)?;
    let arch = if spec.is_some() {
        "file"
    } else {
        a.arch.as_deref().unwrap_or("mlp")
    };
    check_arch_flags(a, arch)?;
    if schema.is_some() && !["mlp", "file"].contains(&arch) {
        bail!("a table trains the MLP or a model from an architecture file; --arch {arch} is for images");
    }
    if schema.is_some() && (a.likelihood.is_some() || a.noise.is_some()) {
        bail!("--likelihood and --noise are for images and arrays; each column of a table has its own likelihood (Gaussian, Bernoulli or softmax) and its inputs are not corrupted");
    }
    let names = crate::data::class_names(&data_dir).len();
    let (mut model, t) = new_run(a, data, train, data_dir, source, spec);
    model.table = schema;
    model.vamp = a.prior.and_then(super::prior::TrainPrior::pseudo_inputs);
    check_combinations(a, &model, &t)?;
    if a.conditional && model.vamp.is_some() {
        bail!("--prior vamp needs an unconditional model: its pseudo-inputs have no class (drop --conditional, or train with the standard prior)");
    }
    if a.conditional {
        let labels = train.labels().context(
            "--conditional needs each record's class, and this data has no labels (IDX labels, an image folder's class subfolders, --labels for a .npy array, --label-column for a table)",
        )?;
        let mut distinct: Vec<u8> = labels.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 2 {
            bail!(
                "--conditional needs records of at least two classes, and the training data has {}",
                distinct.len()
            );
        }
        let seen = labels.iter().max().map_or(0, |&l| usize::from(l) + 1);
        model.classes = Some(seen.max(names));
    }
    model
        .graph()
        .map_err(|e| anyhow::anyhow!("--arch {}: {e}", a.arch.as_deref().unwrap_or("mlp")))?;
    Ok((model, t))
}

fn train_in(device: &DeviceArgs, a: &TrainArgs, dir: &RunDir) -> anyhow::Result<()> {
    let dir_path = dir.path();
    let saved = match &a.resume {
        Some(d) => {
            let at = checkpoint::resolve(d, Pick::Last)
                .with_context(|| format!("resuming {}", d.display()))?;
            let config_path = at.join(CONFIG_FILE);
            let cfg = checkpoint::read_config(&config_path).with_context(|| {
                format!(
                    "resuming {} from its last checkpoint (move a damaged one aside to resume from the one before)",
                    d.display()
                )
            })?;
            // The directory name says how many epochs its checkpoint holds.
            if at.file_name() != Some(rundir::checkpoint_name(cfg.state.epoch).as_ref()) {
                bail!(
                    "{}: state.epoch = {} does not match the checkpoint's name",
                    config_path.display(),
                    cfg.state.epoch
                );
            }
            Some((config_path, cfg))
        }
        None => {
            if !rundir::checkpoints(dir_path).is_empty() || dir_path.join(MODEL_FILE).exists() {
                bail!("{} already holds a model; use --resume {} to continue it or choose another --out", dir_path.display(), dir_path.display());
            }
            None
        }
    };
    let data = DataChoice::new(
        a,
        saved.as_ref().and_then(|(_, s)| s.train.as_ref()),
        saved.as_ref().and_then(|(_, s)| s.model.table.clone()),
    )
    .with_context(|| format!("resuming {}", dir_path.display()))?;
    let TrainingData {
        train: train_images,
        test: test_images,
        dir: data_dir,
        source,
        schema,
    } = data.load(a.gpu_data_mib << 20)?;
    let fingerprint = crate::data::store::fingerprint(&train_images, &test_images)?;
    let (model, mut train_cfg) = match &saved {
        Some((config_path, s)) => {
            let mut run = resumed_run(a, s, &train_images)
                .with_context(|| format!("resuming {}", dir_path.display()))?;
            if run
                .1
                .data_fingerprint
                .as_ref()
                .is_some_and(|f| *f != fingerprint)
            {
                bail!(
                    "resuming {}: the data at {} is not what the run trained on (its images, labels or count changed since); resume with that data, or start a new run with --out",
                    dir_path.display(),
                    data_dir.display()
                );
            }
            // Where the data is now: a run whose data moved records its new place.
            if run.1.data_dir.is_some() {
                run.1.data_dir = Some(super::paths::resolved(&data_dir));
            }
            // Every epoch takes the same steps, so the step counter follows from the epoch.
            let per_epoch = train_images.count().div_ceil(run.1.batch_size) as u64;
            if s.state.step != s.state.epoch as u64 * per_epoch {
                bail!(
                    "{}: state.step = {} does not match {} epochs of {per_epoch} steps ({} training images at batch {})",
                    config_path.display(),
                    s.state.step,
                    s.state.epoch,
                    train_images.count(),
                    run.1.batch_size
                );
            }
            run
        }
        None => fresh_model(a, &data, &train_images, data_dir, source, schema)?,
    };
    // Names are labels for people: a resumed run takes new ones from --class-names; a
    // table's label column names its classes by its values.
    let levels = model.table.as_ref().and_then(|t| t.label.as_ref());
    let known = match (&train_cfg.class_names[..], levels) {
        ([], Some((_, levels))) => levels.clone(),
        (names, _) => names.to_vec(),
    };
    let names = data.args.class_names(&known, train_images.labels())?;
    if saved.is_some() && names != train_cfg.class_names {
        say!("--class-names: the run's class names are replaced");
    }
    train_cfg.class_names = names;
    train_cfg.data_fingerprint = Some(fingerprint);
    model
        .validate()
        .and_then(|()| train_cfg.validate(&model))
        .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    let gpu = open_gpu(device)?;
    let (params, state, history) = match &a.resume {
        Some(d) => {
            let (at, cfg, params) = checkpoint::load(&gpu, d, Pick::Last, true)
                .with_context(|| format!("resuming {}", d.display()))?;
            say!(
                "resuming {} at epoch {}, step {}",
                at.display(),
                cfg.state.epoch,
                cfg.state.step
            );
            let history = resumed_history(dir_path, &cfg);
            (params, cfg.state, history)
        }
        None => (
            model.params(&gpu, train_cfg.seed)?,
            RunState::default(),
            Vec::new(),
        ),
    };
    if a.bench_steps.is_some() {
        train_cfg.epochs = state.epoch + 1;
    }
    say!("run directory: {}", dir_path.display());
    if state.epoch >= train_cfg.epochs {
        // A kill may have come between a save and its records or pruning: finish those.
        if !history.is_empty() {
            crate::vae::train::write_records(dir_path, &history)?;
        }
        keep_best_and_last(dir)?;
        say!(
            "{} already trained {} of {} epochs; nothing to do (raise --epochs)",
            dir_path.display(),
            state.epoch,
            train_cfg.epochs
        );
        return Ok(());
    }
    let start_step = state.step;
    let batch = train_cfg.batch_size;
    let epochs = train_cfg.epochs;
    let mut bar = indicatif::ProgressBar::hidden();
    let graph_parameters = params.graph.parameter_count();
    let arch = model.arch.clone();
    let mut observer = |event: TrainEvent<'_>| {
        match event {
        TrainEvent::EpochStart {
            epoch,
            epochs,
            images,
        } => {
            TRAINING.store(true, Ordering::SeqCst);
            bar = super::progress_bar(images as u64, &format!("epoch {epoch}/{epochs}"), "images");
        }
        TrainEvent::Progress { images, loss } => {
            bar.set_position(images as u64);
            if let Some(l) = loss {
                bar.set_message(format!("loss {l:.2}"));
            }
        }
        TrainEvent::Compiled {
            launches,
            workspace_bytes,
        } => say!(
            "model: {arch}, {:.2} M parameters; a training step is {launches} launches in one submit, with {:.1} MiB of matrices",
            graph_parameters as f64 / 1e6,
            workspace_bytes as f64 / (1u64 << 20) as f64
        ),
        TrainEvent::EpochEnd(m) => {
            bar.finish_and_clear();
            if a.bench_steps.is_none() {
                super::report(&format!(
                    "epoch {:>3}/{epochs}  train {:.2} (recon {:.2} + KL {:.2})  test {:.2} (recon {:.2} + KL {:.2})  {:.0} samples/s",
                    m.epoch, m.train.total, m.train.recon, m.train.kl, m.test.total, m.test.recon, m.test.kl, m.samples_per_sec
                ), m);
            }
        }
    }
    };
    let mut run = Run {
        gpu: &gpu,
        model,
        train: train_cfg,
        params,
        state,
        dir: Some(dir),
        history,
        max_steps: a.bench_steps,
        gpu_data_bytes: a.gpu_data_mib << 20,
        observer: &mut observer,
        stop: Some(&STOP),
    };
    let metrics = train(&mut run, &train_images, &test_images)?;
    if let (Some(_), Some(m)) = (a.bench_steps, metrics.last()) {
        let warmup = crate::vae::train::bench_warms_up(train_images.count(), batch);
        let steps = m.step - start_step - u64::from(warmup);
        super::report(
            &format!(
                "bench: {steps} steps at batch {batch} on {}: {:.0} samples/s",
                gpu.describe(),
                m.samples_per_sec
            ),
            serde_json::json!({
                "steps": steps,
                "batch_size": batch,
                "device": gpu.describe(),
                "samples_per_sec": m.samples_per_sec,
                "train": m.train,
            }),
        );
    }
    Ok(())
}
