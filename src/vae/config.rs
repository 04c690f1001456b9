//! The model's architecture and training settings, saved as config.json beside the weights.

use serde::{Deserialize, Serialize};

use crate::ops::adam::AdamConfig;
use crate::ops::loss::Likelihood;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    /// "mlp", "conv", "resnet", or "file" (the architecture is `spec`, read from a file).
    pub arch: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// Hidden layer widths of the MLP encoder; the decoder mirrors them.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// The MLP's hidden activation (an architecture file's name for it: relu, tanh, ...);
    /// none: relu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
    /// Channel widths of the conv encoder's layers (resnet: of its levels); the decoder
    /// mirrors them.
    #[serde(default)]
    pub conv_channels: Vec<usize>,
    /// resnet: residual blocks per level, and GroupNorm's groups.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub blocks: usize,
    #[serde(default = "eight", skip_serializing_if = "is_eight")]
    pub groups: usize,
    /// arch "file": the architecture, as its file gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<crate::model::ArchSpec>,
    /// The code's size: with stacked layers, the top one's.
    pub latent: usize,
    /// Stochastic layers below the code (`--latent 100,50`: one of 100 under a code of 50),
    /// bottom first, each with the hidden widths between it and the layer above: Burda et
    /// al.'s two-layer model for arch "mlp" (see `model::mlp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub below: Vec<LowerLatent>,
    pub likelihood: Likelihood,
    /// Variance of the Gaussian likelihood.
    pub gauss_var: f32,
    /// A model of table records: their columns, whose likelihoods replace `likelihood`
    /// (the records are [values | mask], 1 x 2E; see `data::table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<crate::data::table::Schema>,
    /// A conditional VAE's number of classes: each record's class, one-hot, enters beside
    /// the encoder's input and beside z (see `model::build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// The VampPrior's number of pseudo-inputs (`train --prior vamp:K`); none: N(0, I).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vamp: Option<usize>,
    /// Dynamic binarization: the model's data are binary draws of the pixels (each 1 with
    /// the pixel's value as probability), drawn anew on the GPU each time a batch is
    /// gathered (Burda et al. 2016).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binarize: bool,
}

/// A stochastic layer below the code: its size, and the hidden widths of the networks
/// between it and the layer above (q's upward, p's downward in reverse).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowerLatent {
    pub latent: usize,
    pub hidden: Vec<usize>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn eight() -> usize {
    8
}

fn is_eight(n: &usize) -> bool {
    *n == 8
}

impl ModelConfig {
    /// The default fully connected model for images of this size: one hidden layer of 400,
    /// a latent of 20, the Bernoulli likelihood (PyTorch's VAE example).
    pub fn mlp(height: usize, width: usize, channels: usize) -> ModelConfig {
        ModelConfig {
            arch: "mlp".into(),
            height,
            width,
            channels,
            hidden: vec![400],
            activation: None,
            conv_channels: Vec::new(),
            blocks: 1,
            groups: 8,
            spec: None,
            latent: 20,
            below: Vec::new(),
            likelihood: Likelihood::Bernoulli,
            gauss_var: 0.5,
            table: None,
            classes: None,
            vamp: None,
            binarize: false,
        }
    }

    /// The default convolutional model: stride-2 convolutions of 32 and 64 channels (the
    /// decoder mirrors them), otherwise as `mlp`.
    pub fn conv(height: usize, width: usize, channels: usize) -> ModelConfig {
        ModelConfig {
            arch: "conv".into(),
            hidden: Vec::new(),
            conv_channels: vec![32, 64],
            ..ModelConfig::mlp(height, width, channels)
        }
    }

    /// The ResNet VAE: levels of 32, 64 and 128 channels, one residual block each,
    /// GroupNorm in 8 groups, otherwise as `mlp`.
    pub fn resnet(height: usize, width: usize, channels: usize) -> ModelConfig {
        ModelConfig {
            arch: "resnet".into(),
            hidden: Vec::new(),
            conv_channels: vec![32, 64, 128],
            ..ModelConfig::mlp(height, width, channels)
        }
    }

    /// The architecture in the architecture format (see `model::spec`).
    pub fn spec(&self) -> Result<crate::model::ArchSpec, String> {
        let data = self.data_shape();
        match self.arch.as_str() {
            "mlp" => {
                let below: Vec<(usize, Vec<usize>)> = self
                    .below
                    .iter()
                    .map(|l| (l.latent, l.hidden.clone()))
                    .collect();
                Ok(crate::model::mlp(
                    &self.hidden,
                    self.activation.as_deref().unwrap_or("relu"),
                    &below,
                ))
            }
            "conv" => crate::model::conv(data, &self.conv_channels),
            "resnet" => crate::model::resnet(data, &self.conv_channels, self.blocks, self.groups),
            "file" => self
                .spec
                .clone()
                .ok_or_else(|| "model.spec is missing for arch \"file\"".to_string()),
            other => Err(format!(
                "unknown architecture '{other}' (mlp, conv, resnet or a .json file)"
            )),
        }
    }

    /// Whether stochastic layers are stacked below the code (`below`, or an architecture
    /// file's `below` list).
    pub fn stacked(&self) -> bool {
        !self.below.is_empty() || self.spec.as_ref().is_some_and(|s| !s.below.is_empty())
    }

    /// The stochastic layers below the code in words: "100 (hidden [100, 100]), ...".
    fn describe_below(&self) -> String {
        let layers: Vec<String> = self
            .below
            .iter()
            .map(|l| format!("{} (hidden {:?})", l.latent, l.hidden))
            .collect();
        format!("[{}]", layers.join(", "))
    }

    /// The architecture in words, for reports.
    pub fn describe(&self) -> String {
        match self.arch.as_str() {
            "mlp" if !self.below.is_empty() => format!(
                "fully connected, hidden widths {:?}, stochastic layers of {} below the code (hidden widths {})",
                self.hidden,
                self.below.iter().map(|l| l.latent.to_string()).collect::<Vec<_>>().join(", "),
                self.below.iter().map(|l| format!("{:?}", l.hidden)).collect::<Vec<_>>().join(", "),
            ),
            "mlp" => format!("fully connected, hidden widths {:?}", self.hidden),
            "conv" => format!("convolutional, channels {:?}", self.conv_channels),
            "resnet" => format!(
                "ResNet, levels of {:?} channels, {} residual block(s) each, GroupNorm in {} groups",
                self.conv_channels, self.blocks, self.groups
            ),
            "file" => match &self.spec {
                Some(s) => format!(
                    "from a file: {} encoder and {} decoder entries",
                    s.encoder.len(),
                    s.decoder.len()
                ),
                None => "from a file (missing)".into(),
            },
            other => other.to_string(),
        }
    }

    /// The model graph.
    pub fn graph(&self) -> Result<crate::graph::Graph, String> {
        let g = crate::model::build(
            &self.spec()?,
            self.data_shape(),
            self.output_dim(),
            self.latent,
            self.classes,
        )?;
        match self.vamp {
            Some(k) => g
                .with_pseudo_inputs(k, self.pseudo_activation())
                .map_err(|e| e.to_string()),
            None => Ok(g),
        }
    }

    /// How the encoder sees the VampPrior's raw pseudo-inputs: through a sigmoid, inside
    /// the (0, 1) of a Bernoulli model's data; as they are for other data.
    pub fn pseudo_activation(&self) -> crate::ops::Activation {
        match (self.likelihood, &self.table) {
            (Likelihood::Bernoulli, None) => crate::ops::Activation::Sigmoid,
            _ => crate::ops::Activation::Identity,
        }
    }

    /// The model's parameters on the GPU, initialised from `seed` (see `graph::Params`).
    pub fn params(
        &self,
        gpu: &crate::gpu::Gpu,
        seed: u64,
    ) -> Result<crate::graph::Params, crate::gpu::GpuError> {
        let graph = self.graph().map_err(crate::gpu::GpuError::Config)?;
        crate::graph::Params::new(gpu, &graph, seed)
    }

    /// One input: height x width x channels.
    pub fn data_shape(&self) -> crate::ops::conv::Shape {
        crate::ops::conv::Shape {
            h: self.height,
            w: self.width,
            c: self.channels,
        }
    }

    /// Values per image: height x width x channels.
    pub fn input_dim(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// What the model's inputs are called in messages and titles.
    pub fn items(&self) -> &'static str {
        match self.table {
            Some(_) => "records",
            None => "images",
        }
    }

    /// The decoder's outputs: one per input value, or a table's per-column parameters.
    pub fn output_dim(&self) -> usize {
        self.table
            .as_ref()
            .map_or(self.input_dim(), |t| t.outputs())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub beta: f32,
    /// Epochs over which beta ramps linearly from 0 (0 = no warm-up).
    pub kl_warmup: usize,
    /// Cyclical annealing (Fu et al., 2019): the run is cut into this many cycles; in the
    /// first half of each, beta ramps linearly from 0, then it holds (0 = off).
    #[serde(default)]
    pub kl_cycles: usize,
    /// Free bits: each latent dimension's KL counts in the loss as at least this many nats
    /// (per image), so the optimizer gains nothing by pushing it lower (0 = off).
    #[serde(default)]
    pub free_bits: f32,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub adam: AdamConfig,
    /// Where the data came from, for the record.
    pub data: String,
    /// Input corruption of a denoising VAE (the loss targets the clean images).
    #[serde(default)]
    pub corruption: Option<crate::ops::sample::Corruption>,
    /// Posterior samples per record: above 1 the objective is the importance-weighted
    /// bound over them (IWAE, Burda et al. 2016); 1 is the ELBO.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub iwae_k: usize,
    /// Posterior samples per record whose ELBOs are averaged (Burda et al.'s "VAE, k
    /// samples"); 1 is the ELBO. At most one of this and `iwae_k` is above 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub elbo_k: usize,
    /// The doubly reparameterized gradient for the encoder under `iwae_k` (Tucker et al.
    /// 2019): its gradient flows along the codes' paths only, weighted by the squared
    /// normalized importance weights.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dreg: bool,
    /// Start the decoder's output bias at the training data's mean (its logit for a
    /// Bernoulli model) instead of PyTorch's initialisation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_bias_from_data: bool,
    /// How the learning rate (`adam.lr`, the start) changes over the run.
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// What was read (`--data`, `--size`, `--channels`, `--limit`, `--classes`), so that
    /// `--resume` reads the same images.
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    pub size: Option<(usize, usize)>,
    #[serde(default)]
    pub channels: Option<usize>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub classes: Option<Vec<u8>>,
    /// A .npy array's labels file and held-out fraction.
    #[serde(default)]
    pub labels: Option<std::path::PathBuf>,
    #[serde(default)]
    pub test_fraction: Option<f64>,
    /// The names of the classes by label, shown wherever classes are (empty: unknown).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// `data::store::fingerprint` of the data the run trains on, checked at each resume
    /// (None in runs saved before it was recorded).
    #[serde(default)]
    pub data_fingerprint: Option<String>,
    /// The divergence guard's ratio (see `train::Guard`).
    #[serde(default = "default_max_loss_ratio")]
    pub max_loss_ratio: f64,
}

/// The part of each annealing cycle over which beta rises (Fu et al.'s R).
const CYCLE_RAMP: f64 = 0.5;

fn default_max_loss_ratio() -> f64 {
    2.0
}

impl Default for TrainConfig {
    /// `vae-gpu train`'s defaults: beta 1, batch 128, 10 epochs, seed 1, Adam at 1e-3.
    fn default() -> TrainConfig {
        TrainConfig {
            beta: 1.0,
            kl_warmup: 0,
            kl_cycles: 0,
            free_bits: 0.0,
            batch_size: 128,
            epochs: 10,
            seed: 1,
            adam: AdamConfig::default(),
            data: String::new(),
            corruption: None,
            iwae_k: 1,
            elbo_k: 1,
            dreg: false,
            output_bias_from_data: false,
            lr_schedule: LrSchedule::Constant,
            data_dir: None,
            labels: None,
            test_fraction: None,
            size: None,
            channels: None,
            limit: None,
            classes: None,
            class_names: Vec::new(),
            data_fingerprint: None,
            max_loss_ratio: default_max_loss_ratio(),
        }
    }
}

impl TrainConfig {
    /// The posterior samples each record takes in a training step.
    pub fn samples(&self) -> crate::vae::step::Samples {
        match self.elbo_k {
            1 => crate::vae::step::Samples {
                dreg: self.dreg,
                ..crate::vae::step::Samples::importance(self.iwae_k)
            },
            k => crate::vae::step::Samples {
                k,
                average: true,
                dreg: false,
            },
        }
    }

    /// beta at a fraction `frac` (0..1) of a 0-based epoch: the warm-up ramps per epoch,
    /// cyclical annealing per step.
    pub fn beta_at(&self, epoch: usize, frac: f64) -> f32 {
        let ramp = |u: f64| (f64::from(self.beta) * u.clamp(0.0, 1.0)) as f32;
        if self.kl_cycles > 0 {
            let progress = (epoch as f64 + frac) / self.epochs as f64;
            ramp((progress * self.kl_cycles as f64).fract() / CYCLE_RAMP)
        } else if self.kl_warmup > 0 {
            ramp((epoch + 1) as f64 / self.kl_warmup as f64)
        } else {
            self.beta
        }
    }
}

/// How the learning rate changes over a run.
#[derive(Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum LrSchedule {
    /// The same rate throughout.
    #[default]
    Constant,
    /// Multiplied by `gamma` every `every` epochs.
    Step { every: usize, gamma: f32 },
    /// Half a cosine from the rate to 0 over the run's epochs (per step).
    Cosine,
    /// Burda et al. (2016): 10^(-i/7) times the rate for 3^i epochs, i = 0 .. 7 (3280
    /// epochs in all; the last rate holds after).
    Burda,
}

/// As `train --lr-schedule` takes it (messages name settings this way).
impl std::fmt::Debug for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            LrSchedule::Cosine => write!(f, "cosine"),
            LrSchedule::Burda => write!(f, "burda"),
        }
    }
}

impl LrSchedule {
    /// The schedule in words, for reports.
    pub fn describe(&self) -> String {
        match self {
            LrSchedule::Constant => "constant".into(),
            LrSchedule::Step { every, gamma } => format!("times {gamma} every {every} epochs"),
            LrSchedule::Cosine => "cosine decay to 0 over the run".into(),
            LrSchedule::Burda => "Burda et al.'s: 10^(-i/7) for 3^i epochs".into(),
        }
    }

    pub fn is_constant(&self) -> bool {
        *self == LrSchedule::Constant
    }

    /// The rate at a fraction `frac` (0..1) of 0-based `epoch` of `epochs`, from `lr`.
    pub fn at(&self, lr: f32, epoch: usize, frac: f64, epochs: usize) -> f32 {
        let lr = f64::from(lr);
        let scaled = match *self {
            LrSchedule::Constant => lr,
            LrSchedule::Step { every, gamma } => {
                lr * f64::from(gamma).powi((epoch / every.max(1)).min(i32::MAX as usize) as i32)
            }
            LrSchedule::Cosine => {
                let progress = ((epoch as f64 + frac) / epochs.max(1) as f64).min(1.0);
                lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Burda => {
                // Stage i covers epochs (3^i - 1) / 2 .. (3^(i+1) - 1) / 2.
                let stage = (0..7u32)
                    .find(|&i| epoch < (3usize.pow(i + 1) - 1) / 2)
                    .unwrap_or(7);
                lr * 10f64.powf(-f64::from(stage) / 7.0)
            }
        };
        scaled as f32
    }
}

/// `Err("FIELD = VALUE, expected WANT")` unless `ok`.
fn field(ok: bool, name: &str, value: impl std::fmt::Debug, want: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{name} = {value:?}, expected {want}"))
    }
}

fn positive(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

fn non_negative(v: f32) -> bool {
    v.is_finite() && v >= 0.0
}

impl ModelConfig {
    /// Checks every field against the ranges the program supports (the same as the flags'),
    /// so sizes read from a file can neither overflow nor reach a kernel unchecked.
    pub fn validate(&self) -> Result<(), String> {
        let conv = self.arch == "conv";
        field(
            ["mlp", "conv", "resnet", "file"].contains(&self.arch.as_str()),
            "model.arch",
            &self.arch,
            "\"mlp\", \"conv\", \"resnet\" or \"file\"",
        )?;
        field(
            (1..=16).contains(&self.blocks),
            "model.blocks",
            self.blocks,
            "1..=16",
        )?;
        field(
            (1..=4096).contains(&self.groups),
            "model.groups",
            self.groups,
            "1..=4096",
        )?;
        field(
            (self.arch == "file") == self.spec.is_some(),
            "model.spec",
            self.spec.is_some(),
            "an architecture exactly when arch is \"file\"",
        )?;
        field(
            (1..=4096).contains(&self.height),
            "model.height",
            self.height,
            "1..=4096",
        )?;
        field(
            (1..=4096).contains(&self.width),
            "model.width",
            self.width,
            "1..=4096",
        )?;
        field(
            (1..=4).contains(&self.channels),
            "model.channels",
            self.channels,
            "1..=4",
        )?;
        field(
            self.hidden.len() <= 16 && self.hidden.iter().all(|h| (1..=65536).contains(h)),
            "model.hidden",
            &self.hidden,
            "at most 16 widths in 1..=65536",
        )?;
        field(
            self.conv_channels.len() <= 8
                && self
                    .conv_channels
                    .iter()
                    .all(|c| (4..=4096).contains(c) && c % 4 == 0),
            "model.conv_channels",
            &self.conv_channels,
            "at most 8 widths, multiples of 4 in 4..=4096",
        )?;
        field(
            !(conv || self.arch == "resnet") || !self.conv_channels.is_empty(),
            "model.conv_channels",
            &self.conv_channels,
            "at least one width for arch conv or resnet",
        )?;
        field(
            (1..=4096).contains(&self.latent),
            "model.latent",
            self.latent,
            "1..=4096",
        )?;
        field(
            self.below.len() <= 8
                && self.below.iter().all(|l| {
                    (1..=4096).contains(&l.latent)
                        && (1..=16).contains(&l.hidden.len())
                        && l.hidden.iter().all(|h| (1..=65536).contains(h))
                }),
            "model.below",
            self.describe_below(),
            "at most 8 layers, each of 1..=4096 latents with 1 to 16 hidden widths in 1..=65536",
        )?;
        if self.stacked() {
            let alone = ["mlp", "file"].contains(&self.arch.as_str())
                && self.classes.is_none()
                && self.vamp.is_none()
                && self.table.is_none();
            field(
                alone,
                "model.below",
                self.describe_below(),
                "empty, and no below list in an architecture file, unless the model is an unconditional image model (arch \"mlp\" or \"file\") under the standard prior",
            )?;
        }
        field(
            positive(self.gauss_var),
            "model.gauss_var",
            self.gauss_var,
            "a positive number",
        )?;
        field(
            !self.binarize || (self.likelihood == Likelihood::Bernoulli && self.table.is_none()),
            "model.binarize",
            self.binarize,
            "false unless the likelihood is bernoulli and the data are images or arrays in [0, 1]",
        )?;
        if let Some(a) = &self.activation {
            field(
                self.arch == "mlp",
                "model.activation",
                a,
                "none unless model.arch is \"mlp\" (the other architectures name their own)",
            )?;
            crate::model::spec::activation(Some(a))
                .map_err(|e| format!("model.activation: {e}"))?;
        }
        if let Some(k) = self.classes {
            field(
                (2..=256).contains(&k),
                "model.classes",
                k,
                "2..=256 (labels are 0..=255)",
            )?;
        }
        if let Some(t) = &self.table {
            field(
                ["mlp", "file"].contains(&self.arch.as_str()),
                "model.arch",
                &self.arch,
                "\"mlp\" or \"file\" for a table",
            )?;
            field(
                (self.height, self.width, self.channels) == (1, 2 * t.width(), 1),
                "model.width",
                self.width,
                "twice the table's encoded width (values and mask)",
            )?;
        }
        // The architecture itself: every layer must fit the data.
        self.graph().map(drop).map_err(|e| format!("model: {e}"))
    }
}

/// The most posterior samples per record of `train --iwae-k`.
pub const MAX_IWAE_K: usize = 5000;

impl TrainConfig {
    /// Checks every field against the ranges the flags allow, and against the model.
    pub fn validate(&self, model: &ModelConfig) -> Result<(), String> {
        if let LrSchedule::Step { every, gamma } = self.lr_schedule {
            field(
                every >= 1 && gamma.is_finite() && gamma > 0.0 && gamma <= 1.0,
                "train.lr_schedule",
                self.lr_schedule,
                "step every >= 1 epochs by a gamma in (0, 1]",
            )?;
        }
        field(
            (1..=MAX_IWAE_K).contains(&self.iwae_k),
            "train.iwae_k",
            self.iwae_k,
            "1..=5000",
        )?;
        field(
            (1..=MAX_IWAE_K).contains(&self.elbo_k) && (self.elbo_k == 1 || self.iwae_k == 1),
            "train.elbo_k",
            self.elbo_k,
            "1..=5000, and 1 when iwae_k is above 1 (one way to weigh the samples)",
        )?;
        field(
            !self.dreg
                || (self.iwae_k > 1
                    && !model.stacked()
                    && self.beta == 1.0
                    && self.kl_warmup == 0
                    && self.kl_cycles == 0),
            "train.dreg",
            self.dreg,
            "false unless iwae_k is above 1, with one stochastic layer and beta 1 throughout (no warm-up or cycles)",
        )?;
        field(
            self.iwae_k == 1 || self.free_bits == 0.0,
            "train.free_bits",
            self.free_bits,
            "0 with iwae_k above 1 (the importance-weighted bound has no per-dimension KL to floor)",
        )?;
        field(
            !self.output_bias_from_data || model.table.is_none(),
            "train.output_bias_from_data",
            self.output_bias_from_data,
            "false for a table (its outputs are its columns' parameters)",
        )?;
        field(
            !model.stacked() || self.free_bits == 0.0,
            "train.free_bits",
            self.free_bits,
            "0 with stacked latent layers (their KLs are Monte-Carlo estimates, with no per-dimension terms to floor)",
        )?;
        field(
            model.vamp.is_none() || self.free_bits == 0.0,
            "train.free_bits",
            self.free_bits,
            "0 with the VampPrior (its KL is one Monte-Carlo estimate per record, with no per-dimension terms to floor)",
        )?;
        let a = &self.adam;
        field(
            non_negative(self.beta),
            "train.beta",
            self.beta,
            "a non-negative number",
        )?;
        field(
            self.kl_warmup <= 1_000_000,
            "train.kl_warmup",
            self.kl_warmup,
            "0..=1000000",
        )?;
        field(
            self.kl_cycles <= 1_000_000 && (self.kl_cycles == 0 || self.kl_warmup == 0),
            "train.kl_cycles",
            self.kl_cycles,
            "0..=1000000, and 0 when kl_warmup is set (one schedule at a time)",
        )?;
        field(
            non_negative(self.free_bits) && self.free_bits <= 100.0,
            "train.free_bits",
            self.free_bits,
            "0..=100 nats",
        )?;
        field(
            (1..=65535).contains(&self.batch_size),
            "train.batch_size",
            self.batch_size,
            "1..=65535",
        )?;
        field(
            (1..=1_000_000).contains(&self.epochs),
            "train.epochs",
            self.epochs,
            "1..=1000000",
        )?;
        field(
            self.size
                .is_none_or(|(w, h)| (1..=4096).contains(&w) && (1..=4096).contains(&h)),
            "train.size",
            self.size,
            "null or [width, height] in 1..=4096",
        )?;
        field(
            matches!(self.channels, None | Some(1 | 3)),
            "train.channels",
            self.channels,
            "null, 1 or 3",
        )?;
        field(
            self.limit.is_none_or(|n| n >= 1),
            "train.limit",
            self.limit,
            "null or at least 1",
        )?;
        field(
            self.max_loss_ratio == 0.0
                || (self.max_loss_ratio.is_finite() && self.max_loss_ratio > 1.0),
            "train.max_loss_ratio",
            self.max_loss_ratio,
            "0 (off) or a number above 1",
        )?;
        if let Some(c) = self.corruption {
            // The rules of --noise, by parsing what the flag would have been.
            c.to_string()
                .parse::<crate::ops::sample::Corruption>()
                .map_err(|e| format!("train.corruption = {c}: {e}"))?;
        }
        field(positive(a.lr), "train.adam.lr", a.lr, "a positive number")?;
        field(
            (0.0..1.0).contains(&a.beta1),
            "train.adam.beta1",
            a.beta1,
            "0 <= beta1 < 1",
        )?;
        field(
            (0.0..1.0).contains(&a.beta2),
            "train.adam.beta2",
            a.beta2,
            "0 <= beta2 < 1",
        )?;
        field(
            positive(a.eps),
            "train.adam.eps",
            a.eps,
            "a positive number",
        )?;
        field(
            non_negative(a.weight_decay),
            "train.adam.weight_decay",
            a.weight_decay,
            "a non-negative number",
        )
    }
}
