//! Variational Autoencoders trained and used entirely on the GPU: every tensor operation is
//! a WGSL compute shader run through wgpu, on Vulkan, Metal, DX12 or GL, and headless on a
//! CPU Vulkan driver (lavapipe).
//!
//! [`Trainer`] trains a model on [`Images`]; [`Vae`] loads one (from a run of the
//! `vae-gpu` program or a [`Vae::save`]) to encode, decode, sample, reconstruct and score
//! images. Images go in as flat `f32` values in [0, 1], `image` buffers or [`Images`]; every
//! failure is an [`Error`] naming what failed and where.
//!
//! ```
//! use vae_gpu::{Images, Trainer, Vae};
//!
//! // The Fashion-MNIST subset that ships with the crate (or the full set, if installed).
//! let data = vae_gpu::load_data(None, &vae_gpu::DataOptions::default())?;
//! let (train, test) = (data.train.take(512), data.test.take(128));
//!
//! let dir = tempfile::tempdir()?;
//! Trainer::new().mlp(&[64]).latent(4).epochs(1).fit(&train, &test)?.save(dir.path().join("model"))?;
//!
//! let vae = Vae::load(dir.path().join("model"))?;
//! let scores = vae.elbo(&test.take(3))?; // nats per image; low: anomalous
//! let new_images = vae.sample(8, 1)?; // 8 x 28 x 28 values in [0, 1]
//! assert_eq!((scores.len(), new_images.len()), (3, 8 * vae.image_len()));
//! vae.to_images(&new_images)?[0].save(dir.path().join("sample.png"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `cli` feature (on by default) builds the `vae-gpu` program; `default-features =
//! false` gives the library alone, without clap, indicatif and env_logger.
//!
//! On a headless Linux machine, call [`quiet_headless_probes`] first thing in `main` to keep
//! Mesa from printing "XDG_RUNTIME_DIR is invalid or not set" while adapters are listed.

#![warn(missing_docs)]

mod api;

pub use api::{Codes, Error, Input, Result, Trainer, Vae};
pub use data::{
    load as load_data, load_for_training as load_training_data, DataOptions, Dtype, Images, Splits,
    TrainSet, TrainingData,
};
pub use gpu::{BackendChoice, GpuError, GpuOptions};
pub use model::ArchSpec;
pub use ops::loss::Likelihood;
pub use vae::config::LrSchedule;
pub use vae::gmm::Gmm;
pub use vae::train::{Diverged, EpochMetrics};
pub use vae::{Losses, ModelConfig, TrainConfig};

/// Keeps Mesa quiet on headless machines: its Vulkan device-select layer and its EGL look
/// for a display server while adapters are listed, and print "XDG_RUNTIME_DIR is invalid or
/// not set" when that variable is unset. vae-gpu picks the adapter itself and never draws,
/// so then this sets `NODEVICE_SELECT=1` and `EGL_PLATFORM=surfaceless` (each only if unset).
///
/// It changes the process environment: call it at the start of `main`, before any thread
/// starts (the `vae-gpu` program does).
pub fn quiet_headless_probes() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    for (var, value) in [("NODEVICE_SELECT", "1"), ("EGL_PLATFORM", "surfaceless")] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    }
}

// The modules below are the program's internals: public for the command-line front end,
// the tests and the benches, hidden from the documentation and free to change.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod cpu;
#[doc(hidden)]
pub mod data;
#[doc(hidden)]
pub mod gpu;
#[doc(hidden)]
pub mod graph;
#[doc(hidden)]
pub mod io;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod ops;
#[doc(hidden)]
pub mod rng;
#[doc(hidden)]
pub mod vae;
