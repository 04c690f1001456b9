//! PNG output: image grids (charts are in `chart`).

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};

/// What a grid says about itself: a title, a label per row (left) and per column (above).
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
}

impl Labels {
    /// A title and nothing else.
    pub fn title(title: impl Into<String>) -> Labels {
        Labels {
            title: title.into(),
            ..Labels::default()
        }
    }
}

/// Cells are drawn at least this many pixels high (small images are scaled up by a whole
/// factor), so that a label fits beside each row.
const MIN_CELL: usize = 56;

/// Lays `images` (u8, `height * width * channels` each, channels 1 or 3) out in a grid with
/// `cols` columns and a 2-pixel gap, with its labels, and saves it.
pub fn save_grid(
    path: &Path,
    images: &[Vec<u8>],
    (height, width, channels): (usize, usize, usize),
    cols: usize,
    labels: &Labels,
) -> anyhow::Result<()> {
    let cols = cols.clamp(1, images.len().max(1));
    let scale = MIN_CELL.div_ceil(height).max(1);
    let grid = grid(images, height, width, channels, cols, scale);
    let cell = ((width * scale) as u32, (height * scale) as u32);
    let labelled = super::chart::label_grid(&grid, labels, cell, GAP as u32)?;
    save(path, &labelled)
}

/// Pixels between cells.
const GAP: usize = 2;

/// The grid itself, each pixel drawn `scale` x `scale`.
fn grid(
    images: &[Vec<u8>],
    height: usize,
    width: usize,
    channels: usize,
    cols: usize,
    scale: usize,
) -> RgbImage {
    let rows = images.len().div_ceil(cols);
    let gap = GAP;
    let (height, width) = (height * scale, width * scale);
    let (w, h) = (cols * (width + gap) + gap, rows * (height + gap) + gap);
    let mut out = RgbImage::from_pixel(w as u32, h as u32, Rgb([40, 40, 40]));
    for (i, img) in images.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % cols) * (width + gap),
            gap + (i / cols) * (height + gap),
        );
        for y in 0..height {
            for x in 0..width {
                let p = ((y / scale) * (width / scale) + x / scale) * channels;
                let px = if channels == 3 {
                    [img[p], img[p + 1], img[p + 2]]
                } else {
                    [img[p]; 3]
                };
                out.put_pixel((x0 + x) as u32, (y0 + y) as u32, Rgb(px));
            }
        }
    }
    out
}

/// Saves each image (u8, `height * width * channels`, channels 1 or 3) at its own size as
/// `dir/{prefix}_{i:05}.png`, grayscale or RGB like the data.
pub fn save_each(
    dir: &Path,
    prefix: &str,
    images: &[Vec<u8>],
    height: usize,
    width: usize,
    channels: usize,
) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{}: a file, not a directory; one PNG per image is written into a directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let color = if channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    for (i, img) in images.iter().enumerate() {
        let path = dir.join(format!("{prefix}_{i:05}.png"));
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes).write_image(
            img,
            width as u32,
            height as u32,
            color,
        )?;
        super::write_atomic(&path, &bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Encodes `img` in the format its extension names (PNG, JPEG or BMP; PNG without an
/// extension) and replaces `path` with it atomically.
pub fn save(path: &Path, img: &RgbImage) -> anyhow::Result<()> {
    use image::ImageFormat;
    let format = match path.extension() {
        None => ImageFormat::Png,
        Some(_) => match ImageFormat::from_path(path) {
            Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp)) => f,
            _ => anyhow::bail!(
                "{}: not an image file name (use .png, .jpg or .bmp)",
                path.display()
            ),
        },
    };
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)?;
    super::write_atomic(path, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
