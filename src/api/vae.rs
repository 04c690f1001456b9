//! [`Vae`]: a trained model on a GPU, and what it does.

use std::path::Path;

use anyhow::Context;

use super::{Error, Input, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::vae::checkpoint::{self, Pick, RunConfig};
use crate::vae::gmm::{self, Gmm};
use crate::vae::{codec, decode, ModelConfig, Params};

/// Posterior parameters of each image: `mu` and `logvar`, `latent` values per image each.
pub use crate::vae::codec::Codes;

/// A trained VAE on a GPU: encode, decode, sample, reconstruct, score, save.
///
/// Images go in as anything [`Input`] takes (flat `f32` values in [0, 1] at the model's
/// size, `image` buffers, or [`Images`](crate::Images)) and come out as flat `f32` values in
/// [0, 1], `height * width * channels` per image (see [`Vae::to_images`] for `image`
/// buffers). Every call runs on the GPU in batches.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # vae_gpu::Trainer::new().mlp(&[32]).latent(4).epochs(1)
/// #     .fit(&vae_gpu::Images::from_f32(&[0.5; 64 * 64], 8, 8, 1)?,
/// #          &vae_gpu::Images::from_f32(&[0.5; 64 * 4], 8, 8, 1)?)?
/// #     .save(dir.path().join("run"))?;
/// # let path = dir.path().join("run");
/// let vae = vae_gpu::Vae::load(&path)?;
/// let images = vae.sample(4, 7)?;
/// let codes = vae.encode(&images)?;
/// assert_eq!((codes.count(), codes.latent), (4, vae.config().latent));
/// let again = vae.decode(&codes.mu)?;
/// assert_eq!(again.len(), images.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Vae {
    gpu: Gpu,
    params: Params,
    config: RunConfig,
}

impl Vae {
    pub(crate) fn new(gpu: Gpu, params: Params, config: RunConfig) -> Vae {
        Vae {
            gpu,
            params,
            config,
        }
    }

    /// Loads a model onto the GPU that `auto` picks (a real GPU first, then a CPU Vulkan
    /// driver, then GL). `path` is a run directory (its best checkpoint is taken), a
    /// checkpoint directory, or a `model.safetensors` file (F32, F16 or BF16; its config
    /// from `config.json` beside it, from the file's metadata, or inferred from the tensors).
    pub fn load(path: impl AsRef<Path>) -> Result<Vae> {
        Vae::load_on(path, &GpuOptions::default())
    }

    /// [`Vae::load`] on the adapter the options pick.
    pub fn load_on(path: impl AsRef<Path>, device: &GpuOptions) -> Result<Vae> {
        let path = path.as_ref();
        let gpu = Gpu::new(device)?;
        let (_, config, params) = checkpoint::load(&gpu, path, Pick::Best, false)
            .with_context(|| format!("loading model {}", path.display()))?;
        Ok(Vae::new(gpu, params, config))
    }

    /// The architecture: image size, layer widths, latent size, likelihood.
    pub fn config(&self) -> &ModelConfig {
        &self.config.model
    }

    /// The figures of the epoch the model was saved at (None for a bare model file).
    pub fn metrics(&self) -> Option<&crate::EpochMetrics> {
        self.config.metrics.as_ref()
    }

    /// The adapter the model runs on, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn device(&self) -> String {
        self.gpu.describe()
    }

    /// Values per image: `height * width * channels`.
    pub fn image_len(&self) -> usize {
        self.config.model.input_dim()
    }

    /// The posterior `q(z | x)` of each image: its mean and log-variance.
    ///
    /// Walking between two images through the latent space:
    /// ```
    /// # let bright: Vec<f32> = (0..64 * 64).map(|i| if i % 64 < 32 { 0.9 } else { 0.1 }).collect();
    /// # let data = vae_gpu::Images::from_f32(&bright, 8, 8, 1)?;
    /// # let vae = vae_gpu::Trainer::new().mlp(&[16]).latent(2).epochs(30).batch_size(16).learning_rate(1e-2).fit(&data, &data)?;
    /// let codes = vae.encode(&data.take(2))?;
    /// let (a, b) = (codes.mu_of(0), codes.mu_of(1));
    /// let halfway: Vec<f32> = a.iter().zip(b).map(|(x, y)| 0.5 * (x + y)).collect();
    /// let image = vae.decode(&halfway)?;
    /// assert_eq!(image.len(), vae.image_len());
    /// # Ok::<(), vae_gpu::Error>(())
    /// ```
    pub fn encode<I: Input + ?Sized>(&self, images: &I) -> Result<Codes> {
        Ok(self.passes(images)?.codes)
    }

    /// Decodes latent codes (`latent` values each, flat) into images.
    pub fn decode(&self, codes: &[f32]) -> Result<Vec<f32>> {
        self.decode_classes(codes, None)
    }

    /// A conditional model's `decode`: code i decoded as class `classes[i]` (the last
    /// class repeats, so one class decodes them all).
    pub fn decode_as(&self, codes: &[f32], classes: &[u8]) -> Result<Vec<f32>> {
        self.decode_classes(codes, Some(classes))
    }

    fn decode_classes(&self, codes: &[f32], classes: Option<&[u8]>) -> Result<Vec<f32>> {
        let z = self.config.model.latent;
        if !codes.len().is_multiple_of(z) {
            return Err(Error::Input(format!(
                "{} values are not a whole number of codes of {z}",
                codes.len()
            )));
        }
        if let Some(i) = codes.iter().position(|v| !v.is_finite()) {
            return Err(Error::Input(format!("code value {i} is {}", codes[i])));
        }
        let rows = codec::decode(&self.gpu, &self.params, &self.config.model, codes, classes)?;
        Ok(rows.concat())
    }

    /// Draws `count` new images: codes from the model's prior (N(0, I), or its VampPrior)
    /// fixed by `seed`, decoded.
    ///
    /// ```
    /// # let bright: Vec<f32> = (0..64 * 64).map(|i| if i % 64 < 32 { 0.9 } else { 0.1 }).collect();
    /// # let data = vae_gpu::Images::from_f32(&bright, 8, 8, 1)?;
    /// # let vae = vae_gpu::Trainer::new().mlp(&[16]).latent(2).epochs(30).batch_size(16).learning_rate(1e-2).fit(&data, &data)?;
    /// let images = vae.sample(16, 42)?;
    /// assert_eq!(images.len(), 16 * vae.image_len());
    /// assert_eq!(images, vae.sample(16, 42)?, "the seed fixes the draw");
    /// vae.to_images(&images)?[0].save(std::env::temp_dir().join("vae-gpu-doc-sample.png")).unwrap();
    /// # Ok::<(), vae_gpu::Error>(())
    /// ```
    pub fn sample(&self, count: usize, seed: u64) -> Result<Vec<f32>> {
        self.sample_classes(count, seed, None)
    }

    /// A mixture of `k` diagonal Gaussians fitted by EM (on the GPU, seeded) to the latent
    /// means of `images` (the training images): a prior whose samples fall where the
    /// encoder puts real images (pythae's GaussianMixtureSampler).
    ///
    /// ```
    /// # let bright: Vec<f32> = (0..64 * 64).map(|i| if i % 64 < 32 { 0.9 } else { 0.1 }).collect();
    /// # let data = vae_gpu::Images::from_f32(&bright, 8, 8, 1)?;
    /// # let vae = vae_gpu::Trainer::new().mlp(&[16]).latent(2).epochs(30).batch_size(16).learning_rate(1e-2).fit(&data, &data)?;
    /// let mixture = vae.fit_gmm(&data, 3, 1)?;
    /// let images = vae.sample_from(&mixture, 16, 42)?;
    /// assert_eq!(images.len(), 16 * vae.image_len());
    /// # Ok::<(), vae_gpu::Error>(())
    /// ```
    pub fn fit_gmm<I: Input + ?Sized>(&self, images: &I, k: usize, seed: u64) -> Result<Gmm> {
        let codes = self.encode(images)?;
        Ok(gmm::fit(
            &self.gpu,
            &codes.mu,
            codes.latent,
            k,
            seed,
            &mut |_, _| {},
        )?)
    }

    /// `count` new images decoded from codes drawn from `mixture` (see `fit_gmm`), seeded.
    pub fn sample_from(&self, mixture: &Gmm, count: usize, seed: u64) -> Result<Vec<f32>> {
        mixture
            .check(self.config.model.latent, mixture.components())
            .map_err(|e| Error::Input(format!("the mixture: {e}")))?;
        let rows = decode::generate(
            &self.gpu,
            &self.params,
            &self.config.model,
            (count, seed, 1.0),
            (decode::Prior::Mixture(mixture), None),
        )?;
        Ok(rows.concat())
    }

    /// A conditional model's `fit_gmm`: a mixture of `k` Gaussians per class, each fitted
    /// to the latent means of that class's images among `images` (None for a class they
    /// lack). A code carries some of its class, so a class's own mixture keeps its samples
    /// in the class (see `sample_as_from`).
    pub fn fit_class_gmms<I: Input + ?Sized>(
        &self,
        images: &I,
        k: usize,
        seed: u64,
    ) -> Result<Vec<Option<Gmm>>> {
        let c = &self.config.model;
        if c.classes.is_none() {
            return Err(Error::Input(
                "per-class mixtures need a conditional model; use fit_gmm".into(),
            ));
        }
        let images = images.to_images(c)?;
        Ok(gmm::fit_per_class(
            &self.gpu,
            (&self.params, c),
            &images,
            (k, seed),
            &mut |_, _, _| {},
        )?)
    }

    /// `count` new images of class `class`, their codes drawn from the class's mixture
    /// (see `fit_class_gmms`), seeded.
    pub fn sample_as_from(
        &self,
        mixtures: &[Option<Gmm>],
        count: usize,
        seed: u64,
        class: u8,
    ) -> Result<Vec<f32>> {
        let c = &self.config.model;
        if usize::from(class) >= c.classes.unwrap_or(0) {
            return Err(Error::Input(format!(
                "class {class} is outside the model's {} classes",
                c.classes.unwrap_or(0)
            )));
        }
        gmm::Fitted::PerClass(mixtures.to_vec())
            .check(
                c.latent,
                mixtures.iter().flatten().next().map_or(0, Gmm::components),
                c.classes,
            )
            .map_err(|e| Error::Input(format!("the mixtures: {e}")))?;
        let rows = decode::generate(
            &self.gpu,
            &self.params,
            c,
            (count, seed, 1.0),
            (decode::Prior::PerClass(mixtures), Some(&[class])),
        )?;
        Ok(rows.concat())
    }

    /// A conditional model's `sample`: `count` new images of class `class`.
    pub fn sample_as(&self, count: usize, seed: u64, class: u8) -> Result<Vec<f32>> {
        self.sample_classes(count, seed, Some(&[class]))
    }

    fn sample_classes(&self, count: usize, seed: u64, classes: Option<&[u8]>) -> Result<Vec<f32>> {
        let vamp = self.vamp_prior()?;
        let prior = vamp
            .as_ref()
            .map_or(decode::Prior::Standard, decode::Prior::Mixture);
        let rows = decode::generate(
            &self.gpu,
            &self.params,
            &self.config.model,
            (count, seed, 1.0),
            (prior, classes),
        )?;
        Ok(rows.concat())
    }

    /// A VampPrior model's prior (see [`super::Trainer::vamp_prior`]) as the mixture it is:
    /// the encoder's posteriors at the pseudo-inputs, equally weighted; None for a model
    /// with the standard prior N(0, I), which `sample` draws from otherwise.
    pub fn vamp_prior(&self) -> Result<Option<Gmm>> {
        Ok(crate::vae::vamp::mixture(&self.gpu, &self.params)?)
    }

    /// Each image decoded from the mean of its code.
    pub fn reconstruct<I: Input + ?Sized>(&self, images: &I) -> Result<Vec<f32>> {
        self.decode(&self.encode(images)?.mu)
    }

    /// The evidence lower bound of each image in nats (higher: the model explains the
    /// image better; its negative is an anomaly score): `log p(x | z) - KL(q(z | x) || p(z))`
    /// with one sample of z.
    ///
    /// Finding the image the model explains worst:
    /// ```
    /// # let bright: Vec<f32> = (0..64 * 64).map(|i| if i % 64 < 32 { 0.9 } else { 0.1 }).collect();
    /// # let data = vae_gpu::Images::from_f32(&bright, 8, 8, 1)?;
    /// # let vae = vae_gpu::Trainer::new().mlp(&[16]).latent(2).epochs(30).batch_size(16).learning_rate(1e-2).fit(&data, &data)?;
    /// let mut images = data.take(4).to_f32();
    /// images[64 * 3..].iter_mut().enumerate().for_each(|(i, v)| *v = (i % 2) as f32); // noise
    /// let elbo = vae.elbo(&images)?;
    /// let worst = (0..4).min_by(|&i, &j| elbo[i].total_cmp(&elbo[j])).unwrap();
    /// assert_eq!(worst, 3);
    /// # Ok::<(), vae_gpu::Error>(())
    /// ```
    pub fn elbo<I: Input + ?Sized>(&self, images: &I) -> Result<Vec<f64>> {
        let losses = self.passes(images)?.losses;
        Ok(losses
            .chunks(3)
            .map(|l| -(f64::from(l[0]) + f64::from(l[1])))
            .collect())
    }

    /// Saves the model as a checkpoint directory (model.safetensors with PyTorch's names and
    /// layouts, the optimizer's moments, config.json) at `dir`, which must not exist yet or
    /// be empty. The files are written in a temporary directory beside it and renamed into
    /// place, so `dir` is either absent or complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let write = || -> anyhow::Result<()> {
            let parent = crate::io::parent_dir(dir);
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            let tmp = tempfile::Builder::new()
                .prefix(".vae-gpu-save-")
                .tempdir_in(parent)
                .with_context(|| format!("creating a directory in {}", parent.display()))?;
            checkpoint::write(&self.gpu, tmp.path(), &self.params, &self.config)?;
            std::fs::rename(tmp.path(), dir).with_context(|| {
                format!("{}: exists and is not an empty directory", dir.display())
            })?;
            // Renamed away: nothing left for the guard to delete.
            let _ = tmp.keep();
            crate::io::sync_dir(parent).with_context(|| format!("syncing {}", parent.display()))
        };
        write().with_context(|| format!("saving the model to {}", dir.display()))?;
        Ok(())
    }

    /// Flat values in [0, 1] (as the calls above return) as `image` buffers: grayscale for
    /// one channel, RGB for three.
    pub fn to_images(&self, values: &[f32]) -> Result<Vec<image::DynamicImage>> {
        let c = &self.config.model;
        if !values.len().is_multiple_of(c.input_dim()) {
            return Err(Error::Input(format!(
                "{} values are not a whole number of {}x{}x{} images",
                values.len(),
                c.height,
                c.width,
                c.channels
            )));
        }
        Ok(values
            .chunks(c.input_dim())
            .map(|v| {
                let (w, h, px) = (c.width as u32, c.height as u32, decode::to_u8(v));
                match c.channels {
                    3 => image::RgbImage::from_raw(w, h, px).map(image::DynamicImage::from),
                    _ => image::GrayImage::from_raw(w, h, px).map(image::DynamicImage::from),
                }
                .expect("one image's values fill its buffer")
            })
            .collect())
    }

    /// The encoder pass with the per-image losses (beta 1).
    fn passes<I: Input + ?Sized>(&self, images: &I) -> Result<codec::Passes> {
        let images = images.to_images(&self.config.model)?;
        if images.count == 0 {
            return Err(Error::Input("no images given".into()));
        }
        Ok(codec::encode(
            &self.gpu,
            &self.params,
            &self.config.model,
            &images,
            1.0,
        )?)
    }
}
