//! Trains a small VAE with the library and saves it.
//!
//! `cargo run --release --example train -- [OUT_DIR] [EPOCHS]` trains on the first 4000
//! images of the default data (the full Fashion-MNIST if installed, else the subset that
//! ships with the crate) and saves the model to OUT_DIR (default: runs/example).

use vae_gpu::{DataOptions, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    vae_gpu::quiet_headless_probes();
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "runs/example".into());
    let epochs: usize = args.next().map_or(Ok(3), |e| e.parse())?;

    let data = vae_gpu::load_data(None, &DataOptions::default())?;
    println!("data: {}", data.source);
    let (train, test) = (data.train.take(4000), data.test.take(1000));

    let vae = Trainer::new()
        .mlp(&[256])
        .latent(8)
        .epochs(epochs)
        .seed(1)
        .on_epoch(|m| {
            println!(
                "epoch {}: train {:.2}, test {:.2} nats/image ({:.0} samples/s)",
                m.epoch, m.train.total, m.test.total, m.samples_per_sec
            )
        })
        .fit(&train, &test)?;
    vae.save(&out)?;
    println!("saved to {out} (trained on {})", vae.device());
    Ok(())
}
