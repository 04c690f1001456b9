//! The VAE: configuration, parameters, the launch program of a step, checkpoints,
//! training and evaluation.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod decode;
pub mod featurenet;
pub mod gmm;
pub mod gru;
pub mod init;
pub mod probe;
pub mod quality;
pub mod rundir;
pub mod step;
pub mod train;
pub mod vamp;

pub use crate::graph::Params;
pub use config::{ModelConfig, TrainConfig};

/// Progress of a run, saved with each checkpoint so `--resume` continues exactly.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken (also the position of the training noise).
    pub step: u64,
    /// The training loss first observed in the run (at its initial weights): the scale of
    /// the divergence guard.
    #[serde(default)]
    pub init_loss: Option<f64>,
}

/// Losses in nats per sample: reconstruction, KL and their beta-weighted total.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Losses {
    pub recon: f64,
    pub kl: f64,
    pub total: f64,
}

impl Losses {
    /// From the GPU's running sums [recon, kl, total, count].
    pub fn from_sums(sums: &[f32]) -> Losses {
        let n = f64::from(sums[3]).max(1.0);
        Losses {
            recon: f64::from(sums[0]) / n,
            kl: f64::from(sums[1]) / n,
            total: f64::from(sums[2]) / n,
        }
    }

    pub fn is_finite(&self) -> bool {
        self.recon.is_finite() && self.kl.is_finite() && self.total.is_finite()
    }
}
