//! [`Trainer`]: settings for a training run, and the run itself.

use std::path::PathBuf;

use super::{Error, Result, Vae};
use crate::data::{Images, TrainSet, TrainingData};
use crate::gpu::{Gpu, GpuOptions};
use crate::ops::loss::Likelihood;
use crate::vae::checkpoint::{RunConfig, MODEL_FILE};
use crate::vae::rundir::{self, RunDir};
use crate::vae::train::{train, EpochMetrics, Run, TrainEvent, DEFAULT_GPU_DATA_BYTES};
use crate::vae::{ModelConfig, RunState, TrainConfig};

/// What `Trainer::on_epoch` calls.
type EpochCallback<'a> = Box<dyn FnMut(&EpochMetrics) + 'a>;

/// Trains a VAE: the settings of `vae-gpu train` as builder methods (the same defaults),
/// then [`Trainer::fit`] on training and test images. The library prints nothing; pass
/// [`Trainer::on_epoch`] to see each epoch's figures.
///
/// ```
/// use vae_gpu::{Images, Trainer};
///
/// // 64 training and 16 test images of 8x8 gray: a bright square on a dark ground.
/// let square: Vec<f32> = (0..64).map(|i| if (i / 8) % 6 > 1 && (i % 8) % 6 > 1 { 0.9 } else { 0.1 }).collect();
/// let train = Images::from_f32(&square.repeat(64), 8, 8, 1)?;
/// let test = Images::from_f32(&square.repeat(16), 8, 8, 1)?;
///
/// let mut losses = Vec::new();
/// let vae = Trainer::new()
///     .mlp(&[32])
///     .latent(2)
///     .epochs(3)
///     .batch_size(16)
///     .on_epoch(|m| losses.push(m.test.total))
///     .fit(&train, &test)?;
/// assert_eq!(losses.len(), 3);
/// assert!(losses[2] < losses[0], "the test loss falls: {losses:?}");
/// assert_eq!(vae.config().latent, 2);
/// # Ok::<(), vae_gpu::Error>(())
/// ```
pub struct Trainer<'a> {
    model: ModelConfig,
    train: TrainConfig,
    device: GpuOptions,
    checkpoints: Option<PathBuf>,
    on_epoch: Option<EpochCallback<'a>>,
    /// Whether `likelihood` was called (else float32 data takes the Gaussian).
    likelihood_chosen: bool,
    gpu_data_bytes: u64,
}

impl Default for Trainer<'_> {
    fn default() -> Self {
        Trainer::new()
    }
}

impl<'a> Trainer<'a> {
    /// The defaults of `vae-gpu train`: an MLP with one hidden layer of 400, a latent of 20,
    /// Bernoulli likelihood (Gaussian for float32 data), beta 1, Adam at 1e-3, batch 128, 10 epochs, seed 1, no
    /// checkpoints, the GPU `auto` picks.
    pub fn new() -> Trainer<'a> {
        Trainer {
            // The image size is the data's, filled in by `fit`.
            model: ModelConfig::mlp(0, 0, 0),
            train: TrainConfig::default(),
            device: GpuOptions::default(),
            checkpoints: None,
            on_epoch: None,
            likelihood_chosen: false,
            gpu_data_bytes: DEFAULT_GPU_DATA_BYTES,
        }
    }

    /// A fully connected model with these hidden widths (the decoder mirrors them).
    pub fn mlp(mut self, hidden: &[usize]) -> Self {
        self.model.arch = "mlp".into();
        self.model.hidden = hidden.to_vec();
        self.model.conv_channels.clear();
        self.model.spec = None;
        self
    }

    /// A convolutional model: stride-2 convolutions of these channel widths (multiples of
    /// 4; the image sides must divide by 2 per layer), transposed in the decoder.
    pub fn conv(mut self, channels: &[usize]) -> Self {
        self.model.arch = "conv".into();
        self.model.conv_channels = channels.to_vec();
        self.model.hidden.clear();
        self.model.spec = None;
        self
    }

    /// The ResNet VAE (see the README): levels of these channel widths (multiples of 4 and
    /// of `groups`; the image sides must divide by 2 per level but one), `blocks` residual
    /// blocks per level, GroupNorm in `groups` groups.
    pub fn resnet(mut self, widths: &[usize], blocks: usize, groups: usize) -> Self {
        self.model.arch = "resnet".into();
        self.model.conv_channels = widths.to_vec();
        self.model.blocks = blocks;
        self.model.groups = groups;
        self.model.hidden.clear();
        self.model.spec = None;
        self
    }

    /// An architecture of your own, as a file of `vae-gpu train --arch FILE.json` holds it
    /// ([`ArchSpec::parse`](crate::ArchSpec::parse)); its latent size, if it gives one,
    /// unless [`Trainer::latent`] sets another.
    ///
    /// ```
    /// use vae_gpu::{ArchSpec, Images, Trainer};
    ///
    /// let spec = ArchSpec::parse(r#"{
    ///   "latent": 2,
    ///   "encoder": [
    ///     {"op": "conv", "out": 8, "kernel": 4, "stride": 2, "padding": 1, "act": "relu", "name": "down"},
    ///     {"op": "residual", "name": "res", "body": [
    ///       {"op": "groupnorm", "groups": 4, "act": "silu", "name": "norm"},
    ///       {"op": "conv", "out": 8, "kernel": 3, "padding": 1, "name": "conv"}
    ///     ]}
    ///   ],
    ///   "heads": "fc_enc",
    ///   "decoder": [
    ///     {"op": "linear", "out": [4, 4, 8], "act": "relu", "name": "fc_dec"},
    ///     {"op": "deconv", "out": "data", "kernel": 4, "stride": 2, "padding": 1, "name": "up"}
    ///   ]
    /// }"#)?;
    /// let square: Vec<f32> = (0..64).map(|i| if (i / 8) % 6 > 1 && (i % 8) % 6 > 1 { 0.9 } else { 0.1 }).collect();
    /// let train = Images::from_f32(&square.repeat(32), 8, 8, 1)?;
    /// let vae = Trainer::new().architecture(spec).epochs(1).batch_size(16).fit(&train, &train.take(8))?;
    /// assert_eq!(vae.config().latent, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn architecture(mut self, spec: crate::model::ArchSpec) -> Self {
        self.model.arch = "file".into();
        self.model.latent = spec.latent.unwrap_or(self.model.latent);
        self.model.spec = Some(spec);
        self.model.hidden.clear();
        self.model.conv_channels.clear();
        self
    }

    /// A conditional VAE of `classes` classes: each image's label, one-hot, enters beside
    /// the encoder's input and beside z (the training and test images need labels below
    /// `classes`); [`Vae::sample_as`] and [`Vae::decode_as`] then draw a class.
    pub fn conditional(mut self, classes: usize) -> Self {
        self.model.classes = Some(classes);
        self
    }

    /// The VampPrior (Tomczak & Welling 2018): the prior is the mixture of the encoder's
    /// posteriors at `pseudo_inputs` learned inputs, which start as training images; the
    /// KL term is its one-sample Monte-Carlo estimate. [`Vae::sample`] then draws from it.
    pub fn vamp_prior(mut self, pseudo_inputs: usize) -> Self {
        self.model.vamp = Some(pseudo_inputs);
        self
    }

    /// Size of the latent code (default 20); with stacked layers, the top one's.
    pub fn latent(mut self, size: usize) -> Self {
        self.model.latent = size;
        self
    }

    /// Stochastic layers stacked below the code (the MLP's; Burda et al. 2016), bottom
    /// first: each one's size and the hidden widths between it and the layer above. Burda
    /// et al.'s two-layer model is `.mlp(&[200, 200]).stacked(&[(100, &[100, 100])])
    /// .latent(50)`. The code is the top layer; [`Vae::sample`] draws top-down.
    ///
    /// ```
    /// # use vae_gpu::{Images, Trainer};
    /// let train = Images::from_f32(&[0.5; 64 * 32], 8, 8, 1)?;
    /// let vae = Trainer::new()
    ///     .mlp(&[16])
    ///     .stacked(&[(6, &[6])])
    ///     .latent(3)
    ///     .epochs(1)
    ///     .batch_size(16)
    ///     .fit(&train, &train.take(8))?;
    /// assert_eq!(vae.config().below[0].latent, 6);
    /// assert_eq!(vae.encode(&train.take(4))?.latent, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stacked(mut self, below: &[(usize, &[usize])]) -> Self {
        self.model.below = below
            .iter()
            .map(|&(latent, hidden)| crate::vae::config::LowerLatent {
                latent,
                hidden: hidden.to_vec(),
            })
            .collect();
        self
    }

    /// The decoder's likelihood: Bernoulli for values in [0, 1], or Gaussian.
    pub fn likelihood(mut self, likelihood: Likelihood) -> Self {
        self.model.likelihood = likelihood;
        self.likelihood_chosen = true;
        self
    }

    /// Weight of the KL term (a beta-VAE above 1).
    pub fn beta(mut self, beta: f32) -> Self {
        self.train.beta = beta;
        self
    }

    /// Ramps beta linearly from 0 over this many epochs.
    pub fn kl_warmup(mut self, epochs: usize) -> Self {
        self.train.kl_warmup = epochs;
        self
    }

    /// Cyclical KL annealing over this many cycles (instead of a warm-up): beta ramps from
    /// 0 over the first half of each cycle, then holds.
    pub fn kl_cycles(mut self, cycles: usize) -> Self {
        self.train.kl_cycles = cycles;
        self
    }

    /// Free bits: each latent dimension's KL counts in the loss as at least `nats` per
    /// image.
    pub fn free_bits(mut self, nats: f32) -> Self {
        self.train.free_bits = nats;
        self
    }

    /// Trains on the importance-weighted bound with `k` posterior samples per image (IWAE);
    /// 1 is the ELBO.
    pub fn iwae_k(mut self, k: usize) -> Self {
        self.train.iwae_k = k;
        self
    }

    /// With `iwae_k`: the doubly reparameterized gradient for the encoder (Tucker et al.
    /// 2019).
    pub fn dreg(mut self) -> Self {
        self.train.dreg = true;
        self
    }

    /// Averages the ELBO over `k` posterior samples per image (the IWAE paper's baseline).
    pub fn elbo_k(mut self, k: usize) -> Self {
        self.train.elbo_k = k;
        self
    }

    /// Dynamic binarization: every image a binary draw of its pixels, anew each time it is
    /// used (a Bernoulli model's).
    pub fn binarize(mut self) -> Self {
        self.model.binarize = true;
        self
    }

    /// The MLP's hidden activation by name: relu (the default), tanh, sigmoid, silu,
    /// leaky_relu[:slope].
    pub fn activation(mut self, name: &str) -> Self {
        self.model.activation = Some(name.to_string());
        self
    }

    /// Starts the decoder's output bias at the training data's mean (its logit for a
    /// Bernoulli model).
    pub fn output_bias_from_data(mut self) -> Self {
        self.train.output_bias_from_data = true;
        self
    }

    /// How the learning rate changes over the epochs.
    pub fn lr_schedule(mut self, schedule: crate::vae::config::LrSchedule) -> Self {
        self.train.lr_schedule = schedule;
        self
    }

    /// Adam's learning rate (where a schedule starts).
    pub fn learning_rate(mut self, lr: f32) -> Self {
        self.train.adam.lr = lr;
        self
    }

    /// Adam's moment decay rates and epsilon.
    pub fn adam(mut self, (beta1, beta2): (f32, f32), eps: f32) -> Self {
        (
            self.train.adam.beta1,
            self.train.adam.beta2,
            self.train.adam.eps,
        ) = (beta1, beta2, eps);
        self
    }

    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    pub fn weight_decay(mut self, decay: f32) -> Self {
        self.train.adam.weight_decay = decay;
        self
    }

    /// Images per optimizer step.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.train.batch_size = size;
        self
    }

    /// Epochs to train.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.train.epochs = epochs;
        self
    }

    /// Fixes weight init, shuffling and sampling noise: the same seed, the same run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.train.seed = seed;
        self
    }

    /// Stops with [`Error::Diverged`] when a loss exceeds `ratio` times the best so far or
    /// climbs back above the initial loss (0: only on NaN/Inf).
    pub fn max_loss_ratio(mut self, ratio: f64) -> Self {
        self.train.max_loss_ratio = ratio;
        self
    }

    /// The adapter to train on.
    pub fn device(mut self, device: GpuOptions) -> Self {
        self.device = device;
        self
    }

    /// Publishes a checkpoint per epoch into this run directory (created; it must not hold
    /// a model yet), keeping the best and the last, as `vae-gpu train --out` does. The CLI
    /// reads it with `--model DIR` and continues it with `--resume DIR`.
    pub fn checkpoints(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoints = Some(dir.into());
        self
    }

    /// Called after every epoch with its figures (losses in nats per image, samples/s).
    pub fn on_epoch(mut self, f: impl FnMut(&EpochMetrics) + 'a) -> Self {
        self.on_epoch = Some(Box::new(f));
        self
    }

    /// Trains on `train`, measuring `test` after each epoch, and returns the model as it is
    /// after the last epoch.
    pub fn fit(self, train_images: &Images, test_images: &Images) -> Result<Vae> {
        train_images.check()?;
        self.fit_set(
            &TrainSet::Memory(std::borrow::Cow::Borrowed(train_images)),
            test_images,
        )
    }

    /// Trains on data read with [`crate::load_training_data`]: a training split larger than
    /// [`Trainer::gpu_data_mib`] stays on disk and is streamed a batch at a time, with the
    /// batches (and so the run) the GPU-resident path would take.
    ///
    /// ```no_run
    /// let data = vae_gpu::load_training_data(
    ///     Some("faces/".as_ref()), // an image folder, a .npy array, IDX files
    ///     &vae_gpu::DataOptions { size: Some((64, 64)), channels: Some(3), ..Default::default() },
    ///     1 << 30, // training splits over 1 GiB stay on disk
    /// )?;
    /// let vae = vae_gpu::Trainer::new().gpu_data_mib(1024).fit_data(&data)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fit_data(self, data: &TrainingData) -> Result<Vae> {
        self.fit_set(&data.train, &data.test)
    }

    /// Most training data held on the GPU, in MiB (default 2048); a larger training split
    /// is streamed to it a batch at a time.
    pub fn gpu_data_mib(mut self, mib: u64) -> Self {
        self.gpu_data_bytes = mib << 20;
        self
    }

    fn fit_set(mut self, train_set: &TrainSet<'_>, test_images: &Images) -> Result<Vae> {
        test_images.check()?;
        let (height, width, channels) = train_set.shape();
        (self.model.height, self.model.width, self.model.channels) = (height, width, channels);
        if test_images.dim() != train_set.dim() || test_images.dtype != train_set.dtype() {
            return Err(Error::Input(format!(
                "training images are {height}x{width}x{channels} {:?}, test images {}x{}x{} {:?}",
                train_set.dtype(),
                test_images.height,
                test_images.width,
                test_images.channels,
                test_images.dtype
            )));
        }
        if let Some(k) = self.model.classes {
            for (split, labels) in [
                ("training", train_set.labels()),
                ("test", test_images.labels.as_deref()),
            ] {
                match labels {
                    None => return Err(Error::Input(format!("a conditional model needs labels, and the {split} images have none"))),
                    Some(l) if l.iter().any(|&c| usize::from(c) >= k) => return Err(Error::Input(format!("the {split} images hold a label of {} or more; the model has {k} classes", k))),
                    _ => {}
                }
            }
        }
        // Real-valued data takes the Gaussian likelihood unless one was chosen.
        if !self.likelihood_chosen && train_set.dtype() == crate::data::Dtype::F32 {
            self.model.likelihood = Likelihood::Gaussian;
        }
        self.model
            .validate()
            .and_then(|()| self.train.validate(&self.model))
            .map_err(|e| Error::Input(format!("invalid settings: {e}")))?;
        let gpu = Gpu::new(&self.device)?;
        let params = self.model.params(&gpu, self.train.seed)?;
        let dir = match &self.checkpoints {
            Some(path) => {
                let dir = RunDir::lock(path)?;
                if !rundir::checkpoints(path).is_empty() || path.join(MODEL_FILE).exists() {
                    return Err(Error::Input(format!(
                        "{} already holds a run; continue it with `vae-gpu train --resume` or choose another directory",
                        path.display()
                    )));
                }
                Some(dir)
            }
            None => None,
        };
        let mut on_epoch = self.on_epoch.take();
        let mut observer = |event: TrainEvent<'_>| {
            if let (TrainEvent::EpochEnd(m), Some(f)) = (event, on_epoch.as_mut()) {
                f(m);
            }
        };
        let mut run = Run {
            gpu: &gpu,
            model: self.model,
            train: self.train,
            params,
            state: RunState::default(),
            dir: dir.as_ref(),
            history: Vec::new(),
            max_steps: None,
            stop: None,
            gpu_data_bytes: self.gpu_data_bytes,
            observer: &mut observer,
        };
        train(&mut run, train_set, test_images)?;
        let config = RunConfig {
            model: run.model,
            train: Some(run.train),
            state: run.state,
            metrics: run.history.last().cloned(),
        };
        let params = run.params;
        drop(dir);
        Ok(Vae::new(gpu, params, config))
    }
}
