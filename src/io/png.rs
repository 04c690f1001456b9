//! PNG output: image grids and a small line chart of the loss curves.

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};

/// Lays `images` (u8, `height * width * channels` each, channels 1 or 3) out in a grid with
/// `cols` columns and a 2-pixel gap, and saves it.
pub fn save_grid(
    path: &Path,
    images: &[Vec<u8>],
    height: usize,
    width: usize,
    channels: usize,
    cols: usize,
) -> anyhow::Result<()> {
    let cols = cols.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let gap = 2;
    let (w, h) = (cols * (width + gap) + gap, rows * (height + gap) + gap);
    let mut out = RgbImage::from_pixel(w as u32, h as u32, Rgb([40, 40, 40]));
    for (i, img) in images.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % cols) * (width + gap),
            gap + (i / cols) * (height + gap),
        );
        for y in 0..height {
            for x in 0..width {
                let p = (y * width + x) * channels;
                let px = if channels == 3 {
                    [img[p], img[p + 1], img[p + 2]]
                } else {
                    [img[p]; 3]
                };
                out.put_pixel((x0 + x) as u32, (y0 + y) as u32, Rgb(px));
            }
        }
    }
    save(path, &out)
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

fn save(path: &Path, img: &RgbImage) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    super::write_atomic(path, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Plots each series (values per epoch) as a polyline on a shared scale: blue, red, green...
/// Gridlines mark tenths of the value range; the lowest and highest are labelled.
pub fn save_curves(path: &Path, series: &[&[f64]]) -> anyhow::Result<()> {
    let (w, h, margin) = (640u32, 400u32, 30.0f64);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let values = series
        .iter()
        .flat_map(|s| s.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = series.iter().map(|s| s.len()).max().unwrap_or(0).max(2);
    let px = |i: usize| margin + i as f64 * (f64::from(w) - 2.0 * margin) / (n - 1) as f64;
    let py = |v: f64| f64::from(h) - margin - (v - lo) / span * (f64::from(h) - 2.0 * margin);
    for t in 0..=10 {
        let y = py(lo + span * f64::from(t) / 10.0) as u32;
        for x in margin as u32..w - margin as u32 {
            img.put_pixel(x, y, Rgb([225, 225, 225]));
        }
    }
    for v in [lo, hi] {
        let label = format!("{v:.1}");
        super::font::draw_text(
            &mut img,
            2,
            (py(v) as u32).saturating_sub(12).max(2),
            &label,
            Rgb([90, 90, 90]),
            2,
        );
    }
    let colours = [[30, 90, 200], [200, 40, 40], [40, 150, 60]];
    for (s, values) in series.iter().enumerate() {
        let c = Rgb(colours[s % colours.len()]);
        for i in 1..values.len() {
            let (x0, y0, x1, y1) = (px(i - 1), py(values[i - 1]), px(i), py(values[i]));
            let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
            for k in 0..=steps {
                let t = k as f64 / steps as f64;
                let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
                for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                    let (xx, yy) = (x as u32 + dx, y as u32 + dy);
                    if xx < w && yy < h {
                        img.put_pixel(xx, yy, c);
                    }
                }
            }
        }
    }
    save(path, &img)
}

/// Ten distinguishable colours (matplotlib's tab10).
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// A scatter plot of 2-D points coloured by label (`PALETTE`, cycling), with a legend of the
/// labels present in the top-right corner.
pub fn save_scatter(path: &Path, points: &[(f32, f32)], labels: &[u8]) -> anyhow::Result<()> {
    let (size, margin) = (640u32, 20.0f32);
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let finite = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut lo, mut hi) = ((f32::MAX, f32::MAX), (f32::MIN, f32::MIN));
    for p in finite {
        lo = (lo.0.min(p.0), lo.1.min(p.1));
        hi = (hi.0.max(p.0), hi.1.max(p.1));
    }
    let span = |a: f32, b: f32| if b > a { b - a } else { 1.0 };
    let inner = size as f32 - 2.0 * margin;
    let place = |p: (f32, f32)| {
        let x = margin + (p.0 - lo.0) / span(lo.0, hi.0) * inner;
        let y = size as f32 - margin - (p.1 - lo.1) / span(lo.1, hi.1) * inner;
        (x as i64, y as i64)
    };
    for (p, &l) in points.iter().zip(labels) {
        let (x, y) = place(*p);
        let c = Rgb(PALETTE[l as usize % PALETTE.len()]);
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (px, py) = (x + dx, y + dy);
                if (0..size as i64).contains(&px) && (0..size as i64).contains(&py) {
                    img.put_pixel(px as u32, py as u32, c);
                }
            }
        }
    }
    let mut present: Vec<u8> = labels.to_vec();
    present.sort_unstable();
    present.dedup();
    for (row, l) in present.iter().enumerate() {
        let (x, y) = (size - 70, 10 + row as u32 * 16);
        let c = Rgb(PALETTE[*l as usize % PALETTE.len()]);
        for dy in 0..10 {
            for dx in 0..10 {
                img.put_pixel(x + dx, y + dy, c);
            }
        }
        super::font::draw_text(&mut img, x + 16, y, &l.to_string(), Rgb([40, 40, 40]), 2);
    }
    save(path, &img)
}
