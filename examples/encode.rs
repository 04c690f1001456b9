//! Encodes images into latent codes with a saved model and prints them as CSV.
//!
//! `cargo run --release --example encode -- MODEL [IMAGE_FILE...]`: MODEL is a run or a
//! saved model (see the train example); without image files, the first ten test images of
//! the default data are encoded.

use vae_gpu::{DataOptions, Vae};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    vae_gpu::quiet_headless_probes();
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or("usage: encode MODEL [IMAGE_FILE...]")?;
    let files: Vec<String> = args.collect();
    let vae = Vae::load(&model)?;

    let codes = if files.is_empty() {
        let test = vae_gpu::load_data(None, &DataOptions::default())?
            .test
            .take(10);
        vae.encode(&test)?
    } else {
        let images = files
            .iter()
            .map(|f| image::open(f).map_err(|e| format!("{f}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        vae.encode(&images)?
    };
    let z = codes.latent;
    let header: Vec<String> = (0..z)
        .map(|j| format!("mu{j}"))
        .chain((0..z).map(|j| format!("logvar{j}")))
        .collect();
    println!("image,{}", header.join(","));
    for i in 0..codes.count() {
        let values: Vec<String> = codes
            .mu_of(i)
            .iter()
            .chain(&codes.logvar[i * z..(i + 1) * z])
            .map(|v| format!("{v:.4}"))
            .collect();
        println!("{i},{}", values.join(","));
    }
    Ok(())
}
