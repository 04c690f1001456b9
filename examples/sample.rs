//! Draws new images from a saved model and writes them as one PNG grid.
//!
//! `cargo run --release --example sample -- MODEL OUT.png [COUNT]` (default 64 images).

use image::GenericImage;
use vae_gpu::Vae;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    vae_gpu::quiet_headless_probes();
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: sample MODEL OUT.png [COUNT]".into());
    };
    let count: usize = args.next().map_or(Ok(64), |c| c.parse())?;

    let vae = Vae::load(&model)?;
    let images = vae.to_images(&vae.sample(count, 1)?)?;
    let c = vae.config();
    let cols = (count as f64).sqrt().ceil() as usize;
    let rows = count.div_ceil(cols);
    let (w, h) = (c.width as u32, c.height as u32);
    let mut grid = image::RgbImage::new(cols as u32 * w, rows as u32 * h);
    for (i, img) in images.iter().enumerate() {
        let (x, y) = ((i % cols) as u32 * w, (i / cols) as u32 * h);
        grid.copy_from(&img.to_rgb8(), x, y)?;
    }
    grid.save(&out)?;
    println!("wrote {count} samples to {out}");
    Ok(())
}
