//! The model's architecture and training settings, saved as config.json beside the weights.

use serde::{Deserialize, Serialize};

use crate::ops::adam::AdamConfig;
use crate::ops::loss::Likelihood;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    /// "mlp" or "conv"
    pub arch: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// Hidden layer widths of the MLP encoder; the decoder mirrors them.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Channel widths of the conv encoder's layers; the decoder mirrors them.
    #[serde(default)]
    pub conv_channels: Vec<usize>,
    pub latent: usize,
    pub likelihood: Likelihood,
    /// Variance of the Gaussian likelihood.
    pub gauss_var: f32,
}

impl ModelConfig {
    pub fn input_dim(&self) -> usize {
        self.height * self.width * self.channels
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub beta: f32,
    /// Epochs over which beta ramps linearly from 0 (0 = no warm-up).
    pub kl_warmup: usize,
    pub batch_size: usize,
    pub epochs: usize,
    pub seed: u64,
    pub adam: AdamConfig,
    /// Where the data came from, for the record.
    pub data: String,
    /// Input corruption of a denoising VAE (the loss targets the clean images).
    #[serde(default)]
    pub corruption: Option<crate::ops::sample::Corruption>,
}

impl TrainConfig {
    /// beta for a 0-based epoch under the warm-up schedule.
    pub fn beta_at(&self, epoch: usize) -> f32 {
        if self.kl_warmup == 0 {
            self.beta
        } else {
            self.beta * ((epoch + 1) as f32 / self.kl_warmup as f32).min(1.0)
        }
    }
}
