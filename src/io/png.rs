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

/// The most pixels a picture may have: 64 megapixels (192 MB as RGB; 8,000 x 8,000).
/// Every picture vae-gpu draws is checked against it before any pixel is allocated.
pub const MAX_PICTURE_PIXELS: u64 = 64_000_000;

/// A record (a row of an [N, D] array) is drawn as a strip of cells this many pixels high,
/// one cell per value, at most `RECORD_WIDTH` pixels wide (longer records average
/// neighbouring values into one cell).
const RECORD_HEIGHT: usize = 14;
const RECORD_WIDTH: usize = 256;

/// How a grid draws each of its items: images scaled up by a whole factor, or records as
/// strips of value cells.
#[derive(Clone, Copy, Debug)]
struct Cells {
    /// Pixels each value (or pixel) takes across and down.
    across: usize,
    down: usize,
    /// Values averaged into one cell across (records longer than `RECORD_WIDTH`).
    bin: usize,
    /// Cell size in pixels.
    width: usize,
    height: usize,
}

impl Cells {
    /// The cells for items of `height` x `width` at `scale` (images); a height of 1 is a
    /// record of `width` values.
    fn new(height: usize, width: usize, scale: usize) -> Cells {
        if height == 1 {
            let bin = width.div_ceil(RECORD_WIDTH);
            let shown = width.div_ceil(bin);
            let across = (RECORD_WIDTH / shown).clamp(1, 16);
            return Cells {
                across,
                down: RECORD_HEIGHT,
                bin,
                width: shown * across,
                height: RECORD_HEIGHT,
            };
        }
        Cells {
            across: scale,
            down: scale,
            bin: 1,
            width: width * scale,
            height: height * scale,
        }
    }
}

/// The cells of a grid of `count` items of `(height, width)` in `cols` columns: images at
/// least `MIN_CELL` pixels high, scaled down as far as one pixel per value to stay within
/// `MAX_PICTURE_PIXELS`; an error when even that is too large. Called before drawing, and
/// by commands before they compute what they would draw.
pub fn check_grid(
    count: usize,
    (height, width): (usize, usize),
    cols: usize,
) -> anyhow::Result<()> {
    grid_cells(count, (height, width), cols).map(drop)
}

fn grid_cells(count: usize, (height, width): (usize, usize), cols: usize) -> anyhow::Result<Cells> {
    let cols = cols.clamp(1, count.max(1));
    let rows = count.div_ceil(cols);
    // With room for the largest title and labels.
    let (left, top, title_w) = super::chart::largest_frame();
    let span = |cells: &Cells| {
        let w = ((cols * (cells.width + GAP) + GAP) as u64 + u64::from(left)).max(title_w.into());
        let h = (rows * (cells.height + GAP) + GAP) as u64 + u64::from(top);
        w.saturating_mul(h)
    };
    let mut scale = MIN_CELL.div_ceil(height).max(1);
    while scale > 1 && span(&Cells::new(height, width, scale)) > MAX_PICTURE_PIXELS {
        scale -= 1;
    }
    let cells = Cells::new(height, width, scale);
    if span(&cells) > MAX_PICTURE_PIXELS {
        anyhow::bail!(
            "{count} {} in {cols} columns make a picture of about {:.0} megapixels, over the limit of {}; draw fewer",
            if height == 1 { "records" } else { "images" },
            span(&cells) as f64 / 1e6,
            MAX_PICTURE_PIXELS / 1_000_000
        );
    }
    Ok(cells)
}

/// Lays `images` (u8, `height * width * channels` each, channels 1 or 3) out in a grid with
/// `cols` columns and a 2-pixel gap, with its labels, and saves it. Records (height 1) are
/// drawn as strips of grey cells, one per value. The size is bounded (see `check_grid`).
pub fn save_grid(
    path: &Path,
    images: &[Vec<u8>],
    (height, width, channels): (usize, usize, usize),
    cols: usize,
    labels: &Labels,
) -> anyhow::Result<()> {
    let cols = cols.clamp(1, images.len().max(1));
    let cells = grid_cells(images.len(), (height, width), cols)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let grid = grid(images, (height, width, channels), cols, &cells);
    let mut labels = labels.clone();
    if height == 1 {
        labels.title += &format!(
            " (one strip per record of {width} values{}: dark 0, bright 1)",
            if cells.bin > 1 {
                format!(", {} averaged per cell", cells.bin)
            } else {
                String::new()
            }
        );
    }
    let cell = (cells.width as u32, cells.height as u32);
    let labelled = super::chart::label_grid(&grid, &labels, cell, GAP as u32)?;
    save(path, &labelled)
}

/// Pixels between cells.
const GAP: usize = 2;

/// The grid itself: images with each pixel drawn `scale` x `scale`, records as strips.
fn grid(
    images: &[Vec<u8>],
    (height, width, channels): (usize, usize, usize),
    cols: usize,
    cells: &Cells,
) -> RgbImage {
    let rows = images.len().div_ceil(cols);
    let gap = GAP;
    let (cw, ch) = (cells.width, cells.height);
    let (w, h) = (cols * (cw + gap) + gap, rows * (ch + gap) + gap);
    let mut out = RgbImage::from_pixel(w as u32, h as u32, Rgb([40, 40, 40]));
    for (i, img) in images.iter().enumerate() {
        let (x0, y0) = (gap + (i % cols) * (cw + gap), gap + (i / cols) * (ch + gap));
        for y in 0..ch {
            for x in 0..cw {
                let px = if height == 1 {
                    // A record: the mean of the values in this cell, as one grey level.
                    let first = (x / cells.across) * cells.bin;
                    let values = &img[first..(first + cells.bin).min(width)];
                    let mean =
                        values.iter().map(|&v| u32::from(v)).sum::<u32>() / values.len() as u32;
                    [mean as u8; 3]
                } else {
                    let p = ((y / cells.down) * width + x / cells.across) * channels;
                    if channels == 3 {
                        [img[p], img[p + 1], img[p + 2]]
                    } else {
                        [img[p]; 3]
                    }
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
    let out = Numbered::new(dir, prefix, (height, width, channels))?;
    for (i, img) in images.iter().enumerate() {
        out.save(i, img)?;
    }
    Ok(())
}

/// A directory of numbered PNGs, `{prefix}_{i:05}.png`, written one at a time.
pub struct Numbered<'a> {
    dir: &'a Path,
    prefix: &'a str,
    shape: (usize, usize, usize),
}

impl<'a> Numbered<'a> {
    /// Creates `dir` when needed (a file there is an error).
    pub fn new(
        dir: &'a Path,
        prefix: &'a str,
        shape: (usize, usize, usize),
    ) -> anyhow::Result<Numbered<'a>> {
        if dir.exists() && !dir.is_dir() {
            anyhow::bail!(
                "{}: a file, not a directory; one PNG per image is written into a directory",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        Ok(Numbered { dir, prefix, shape })
    }

    /// Writes image `i` (u8, grayscale or RGB like the data).
    pub fn save(&self, i: usize, img: &[u8]) -> anyhow::Result<()> {
        let (height, width, channels) = self.shape;
        let color = if channels == 3 {
            image::ExtendedColorType::Rgb8
        } else {
            image::ExtendedColorType::L8
        };
        let path = self.dir.join(format!("{}_{i:05}.png", self.prefix));
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes).write_image(
            img,
            width as u32,
            height as u32,
            color,
        )?;
        super::write_atomic(&path, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
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
