//! `vae-gpu encode` / `vae-gpu decode`: images to a small file of quantized latent codes
//! (format in src/io/codes.rs) and back.

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::TypedValueParser as _;
use clap::Args;

use super::{load_model, open_gpu, DataArgs, DeviceArgs, ModelArg, SplitArgs};
use crate::io::codes::CodesFile;
use crate::vae::checkpoint;
use crate::vae::codec::{decode, encode, own_classes, psnr};
use crate::vae::decode::to_u8;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub images: SplitArgs,
    /// Bits per latent value.
    #[arg(long, default_value_t = 8, value_parser = clap::builder::PossibleValuesParser::new(["8", "16", "32"]).map(|s| s.parse::<u32>().expect("8, 16 or 32")))]
    pub bits: u32,
    /// The codes file to write.
    #[arg(long, value_parser = super::out_path)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A codes file written by `vae-gpu encode`.
    pub codes: PathBuf,
    #[command(flatten)]
    pub class: super::ClassArg,
    /// A .png grid, or a directory for one PNG per image [default: RUN/decoded.png]; for
    /// a sequence model a text file, one string per line [default: RUN/decoded.txt]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

pub fn run_encode(device: &DeviceArgs, a: &EncodeArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::encode(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (_, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let imgs = a.images.images(&input, c)?;
    super::paths::check_output(&a.out)?;
    let codes = encode(&gpu, &params, c, &imgs, 1.0)?.codes;
    let model = checkpoint::fingerprint(&gpu, &params)?;
    let file = CodesFile::quantize(&codes.mu, c.latent, a.bits, model);
    let bytes = file.to_bytes();
    crate::io::write_atomic(&a.out, &bytes)
        .with_context(|| format!("writing {}", a.out.display()))?;
    // How well the stored codes reproduce the images.
    let decoded = decode(&gpu, &params, c, &file.values(), own_classes(c, &imgs))?;
    let originals = imgs.to_f32();
    let mean_psnr = (0..imgs.count)
        .map(|i| {
            psnr(
                &originals[i * c.input_dim()..(i + 1) * c.input_dim()],
                &decoded[i],
                None,
            )
            .min(100.0)
        })
        .sum::<f64>()
        / imgs.count as f64;
    let per_image = bytes.len() as f64 / imgs.count as f64;
    let ratio = c.input_dim() as f64 / per_image;
    super::report(
        &format!(
            "wrote {} codes to {}: {} bytes, {per_image:.1} bytes/image ({ratio:.1}x smaller than {} raw pixel bytes), PSNR {mean_psnr:.2} dB",
            imgs.count,
            a.out.display(),
            bytes.len(),
            c.input_dim()
        ),
        serde_json::json!({
            "images": imgs.count,
            "out": a.out,
            "bytes": bytes.len(),
            "bytes_per_image": per_image,
            "compression": ratio,
            "bits": a.bits,
            "psnr_db": mean_psnr,
        }),
    );
    Ok(())
}

/// The largest latent value a codes file may hold: 10,000 standard deviations of the prior
/// N(0, I), beyond anything an encoder gives; larger ones (a damaged file) would decode to
/// saturated or non-finite pixels.
const LARGEST_CODE: f32 = 1e4;

/// A codes file whose values all lie in the latent space.
pub fn load_codes(path: &std::path::Path) -> anyhow::Result<CodesFile> {
    let file = CodesFile::load(path)?;
    super::paths::note_read(path, "the codes file");
    if let Some((i, v)) = file
        .values()
        .iter()
        .enumerate()
        .find(|(_, v)| v.abs() > LARGEST_CODE)
    {
        anyhow::bail!(
            "{}: value {} of code {} is {v:e}, far outside the latent space (its prior is N(0, I)); the file is damaged",
            path.display(),
            i % file.latent,
            i / file.latent
        );
    }
    Ok(file)
}

/// Warns when `file` was encoded by other weights than `model`'s (fingerprints).
pub fn check_encoder(path: &std::path::Path, file: &CodesFile, model: u64, items: &str) {
    if file.model.is_some_and(|m| m != model) {
        log::warn!(
            "{}: encoded by other weights than this model's (another run or checkpoint); the {items} will differ from those encoded",
            path.display()
        );
    }
}

pub fn run_decode(device: &DeviceArgs, a: &DecodeArgs) -> anyhow::Result<()> {
    let file = load_codes(&a.codes)?;
    let values = file.values();
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::decode(device, a, &at, &file);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    super::images_only(c)?;
    if file.latent != c.latent {
        anyhow::bail!(
            "{}: codes have {} dimensions, the model's latent space has {}",
            a.codes.display(),
            file.latent,
            c.latent
        );
    }
    // Other weights of the same shape decode the codes into other images.
    check_encoder(
        &a.codes,
        &file,
        checkpoint::fingerprint(&gpu, &params)?,
        "images",
    );
    let classes = a.class.labels(&cfg)?;
    if c.classes.is_some() && classes.is_none() {
        return Err(super::class_needed(&cfg));
    }
    let images: Vec<Vec<u8>> = decode(&gpu, &params, c, &values, classes.as_deref())?
        .iter()
        .map(|v| to_u8(v))
        .collect();
    let out = super::output_path(a.out.as_deref(), || dir.join("decoded.png"))?;
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        let cols = (images.len() as f64).sqrt().ceil() as usize;
        let title = format!(
            "{} images decoded from {} ({}-bit codes)",
            images.len(),
            a.codes.display(),
            file.bits
        );
        let shape = (c.height, c.width, c.channels);
        crate::io::png::save_grid(
            &out,
            &images,
            shape,
            cols,
            &crate::io::png::Labels::title(title),
        )?;
    } else {
        crate::io::png::save_each(&out, "decoded", &images, c.height, c.width, c.channels)?;
    }
    super::report(
        &format!(
            "decoded {} images ({} bits per value) to {}",
            images.len(),
            file.bits,
            out.display()
        ),
        serde_json::json!({"images": images.len(), "bits": file.bits, "out": out}),
    );
    Ok(())
}
