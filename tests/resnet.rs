//! The ResNet VAE against PyTorch: a fixture made with PyTorch's `ResNetVAE`
//! (tests/fixtures/make_tiny_resnet.py: its weights, a batch and the sampling noise, with
//! the float64 reference outputs) gives vae-gpu's noise, mu | logvar, logits, loss and every
//! parameter's gradient, each within 1e-4 of the reference tensor's largest magnitude. No
//! PyTorch is needed to run it. The state_dict loads under its own names and saves back
//! unchanged.

mod common;

use common::for_each_gpu;
use common::pytorch::step_matches;
use vae_gpu::vae::ModelConfig;

#[test]
fn resnet_matches_pytorch() {
    for_each_gpu(|gpu| {
        let c = ModelConfig {
            conv_channels: vec![4, 8],
            groups: 2,
            latent: 3,
            ..ModelConfig::resnet(8, 8, 1)
        };
        step_matches(gpu, &c, "tiny_resnet");
    });
}
