//! Charts and labelled image grids, drawn with plotters into RGB buffers in the bundled
//! Roboto font (assets/fonts), so no system font is needed.

use std::path::Path;
use std::sync::Once;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Roboto Regular (Apache-2.0, see assets/fonts/README.md).
const FONT: &[u8] = include_bytes!("../../assets/fonts/Roboto-Regular.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters' text renderer, once per process.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            log::warn!("the bundled chart font did not load; charts will have no text");
        }
    });
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

/// Runs `draw` on a white `w` x `h` canvas and returns it.
pub fn canvas(
    w: u32,
    h: u32,
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> anyhow::Result<RgbImage> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels > super::png::MAX_PICTURE_PIXELS {
        anyhow::bail!(
            "a {w}x{h} picture ({:.0} megapixels) is over the limit of {}",
            pixels as f64 / 1e6,
            super::png::MAX_PICTURE_PIXELS / 1_000_000
        );
    }
    register_font();
    let mut buf = vec![255u8; pixels as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| anyhow::anyhow!("drawing a chart: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing a chart: {e}"))?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("the buffer is w x h x 3"))
}

/// Colour `i` of `n`: matplotlib's tab10 up to ten, evenly spaced hues beyond.
pub fn colour(i: usize, n: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    if n <= TAB10.len() {
        let (r, g, b) = TAB10[i % TAB10.len()];
        return RGBColor(r, g, b);
    }
    // Alternate lightness so neighbouring hues stay apart.
    let (r, g, b) = HSLColor(
        i as f64 / n as f64,
        0.75,
        if i.is_multiple_of(2) { 0.42 } else { 0.6 },
    )
    .rgb();
    RGBColor(r, g, b)
}

/// A named line of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel: a title, axis descriptions and lines with markers at every point (so a single
/// epoch shows as a dot), with a legend.
fn panel(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> DrawResult {
    let all = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (x0, x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = |lo: f64, hi: f64| {
        if lo > hi {
            (0.0, 1.0)
        } else {
            let m = ((hi - lo) * 0.08).max(hi.abs().max(1e-3) * 1e-3);
            (lo - m, hi + m)
        }
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 18))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    // Epochs and steps are whole numbers: label them so.
    let ticks = ((x1 - x0).ceil() as usize + 1).clamp(2, 10);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(ticks)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let c = colour(i, series.len());
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    Ok(())
}

/// One epoch of a training record as the loss chart draws it, in nats per image: the
/// train and test losses as [total, reconstruction, KL], and the training loss as read
/// during its steps, (step, loss).
pub struct EpochLosses {
    pub epoch: usize,
    pub train: [f64; 3],
    pub test: [f64; 3],
    pub steps: Vec<(u64, f64)>,
}

/// The training record as four panels: total, reconstruction and KL per epoch (train and
/// test, nats per image) and the training loss as read during the steps.
pub fn save_loss_chart(path: &Path, history: &[EpochLosses]) -> anyhow::Result<()> {
    let per_epoch = |name: &str, f: &dyn Fn(&EpochLosses) -> f64| Series {
        name: name.into(),
        points: history.iter().map(|m| (m.epoch as f64, f(m))).collect(),
    };
    let steps: Vec<(f64, f64)> = history
        .iter()
        .flat_map(|m| m.steps.iter().map(|&(s, l)| (s as f64, l)))
        .collect();
    let img = canvas(1100, 760, |root| {
        root.fill(&WHITE)?;
        let panels = root.split_evenly((2, 2));
        let titles = [
            "Loss per epoch (reconstruction + beta x KL)",
            "Reconstruction per epoch",
            "KL divergence per epoch",
        ];
        for (part, (area, title)) in panels.iter().zip(titles).enumerate() {
            panel(
                area,
                title,
                "epoch",
                "nats per image",
                &[
                    per_epoch("train", &|m| m.train[part]),
                    per_epoch("test", &|m| m.test[part]),
                ],
            )?;
        }
        panel(
            &panels[3],
            "Training loss during the steps",
            "optimizer step",
            "nats per image",
            &[Series {
                name: "train (running mean of the epoch)".into(),
                points: steps,
            }],
        )?;
        Ok(())
    })?;
    super::png::save(path, &img)
}

/// Bars, one per index, e.g. the KL of each latent dimension.
pub fn save_bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    values: &[f64],
) -> anyhow::Result<()> {
    let img = canvas(760, 420, |root| {
        root.fill(&WHITE)?;
        let top = values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 18))
            .margin(10)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d((0..values.len()).into_segmented(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v),
                ],
                colour(0, 1).filled(),
            );
            bar.set_margin(0, 0, 3, 3);
            bar
        }))?;
        Ok(())
    })?;
    super::png::save(path, &img)
}

/// A scatter plot of 2-D points coloured by class, with axes and a legend of class names at
/// the right (in columns when there are many classes).
pub fn save_scatter(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    points: &[(f32, f32)],
    labels: Option<&[u8]>,
    name: &dyn Fn(u8) -> String,
) -> anyhow::Result<()> {
    let mut classes: Vec<u8> = labels.map_or(vec![0], |l| l.to_vec());
    classes.sort_unstable();
    classes.dedup();
    let per_column = 24;
    let legend_cols = if labels.is_some() {
        classes.len().div_ceil(per_column)
    } else {
        0
    };
    let legend_w = 170 * legend_cols as u32;
    let img = canvas(760 + legend_w, 720, |root| {
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(760);
        let finite = || points.iter().filter(|p| p.0.is_finite() && p.1.is_finite());
        let (x0, x1) = finite().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = finite().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let pad = |lo: f32, hi: f32| {
            if lo > hi {
                (-1.0, 1.0)
            } else {
                let m = ((hi - lo) * 0.05).max(1e-3);
                (lo - m, hi + m)
            }
        };
        let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FAMILY, 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let index_of = |l: u8| classes.binary_search(&l).unwrap_or(0);
        chart.draw_series(points.iter().enumerate().map(|(i, &p)| {
            let l = labels.map_or(0, |l| l[i]);
            Circle::new(p, 2, colour(index_of(l), classes.len()).mix(0.8).filled())
        }))?;
        if labels.is_some() {
            for (k, &l) in classes.iter().enumerate() {
                let (x, y) = (
                    10 + 170 * (k / per_column) as i32,
                    40 + 26 * (k % per_column) as i32,
                );
                legend.draw(&Rectangle::new(
                    [(x, y), (x + 14, y + 14)],
                    colour(k, classes.len()).filled(),
                ))?;
                legend.draw(&Text::new(clip(&name(l), 20), (x + 22, y), (FAMILY, 14)))?;
            }
        }
        Ok(())
    })?;
    super::png::save(path, &img)
}

/// Characters of a label (a row's, a column's, a legend entry) and of a title that are
/// drawn; longer text (a class name of a million characters) is cut with an ellipsis, so
/// that text cannot stretch a picture.
const LABEL_CHARS: usize = 40;
const TITLE_CHARS: usize = 200;

/// `text` cut to `most` characters, an ellipsis marking the cut.
pub fn clip(text: &str, most: usize) -> String {
    if text.chars().count() <= most {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(most.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The frame `label_grid` puts around a grid for these (clipped) labels: (left margin,
/// top margin, title width), in pixels.
fn frame(labels: &super::png::Labels) -> (u32, u32, u32) {
    let widest = |v: &[String]| v.iter().map(|r| r.chars().count()).max().unwrap_or(0) as u32;
    let left = if labels.rows.is_empty() {
        0
    } else {
        12 + 7 * widest(&labels.rows)
    };
    let top =
        if labels.title.is_empty() { 0 } else { 26 } + if labels.cols.is_empty() { 0 } else { 18 };
    (left, top, 7 * labels.title.chars().count() as u32 + 12)
}

/// The largest frame any labels get (see `frame`): what a picture's size is bounded with
/// before its labels are known.
pub fn largest_frame() -> (u32, u32, u32) {
    frame(&super::png::Labels {
        title: "x".repeat(TITLE_CHARS),
        rows: vec!["x".repeat(LABEL_CHARS)],
        cols: vec![String::new()],
    })
}

/// An image grid with a title above it, a label left of each row and above each column.
pub fn label_grid(
    grid: &RgbImage,
    labels: &super::png::Labels,
    cell: (u32, u32),
    gap: u32,
) -> anyhow::Result<RgbImage> {
    let clipped =
        |v: &[String]| -> Vec<String> { v.iter().map(|l| clip(l, LABEL_CHARS)).collect() };
    let labels = &super::png::Labels {
        title: clip(&labels.title, TITLE_CHARS),
        rows: clipped(&labels.rows),
        cols: clipped(&labels.cols),
    };
    let (left, top, title_w) = frame(labels);
    let (w, h) = ((left + grid.width()).max(title_w), top + grid.height());
    let mut out = canvas(w, h, |root| {
        root.fill(&WHITE)?;
        if !labels.title.is_empty() {
            root.draw(&Text::new(labels.title.clone(), (6, 5), (FAMILY, 15)))?;
        }
        for (r, label) in labels.rows.iter().enumerate() {
            let y = top + gap + r as u32 * (cell.1 + gap) + cell.1 / 2;
            root.draw(&Text::new(label.clone(), (6, y as i32 - 7), (FAMILY, 12)))?;
        }
        for (c, label) in labels.cols.iter().enumerate() {
            let x = left + gap + c as u32 * (cell.0 + gap);
            root.draw(&Text::new(
                label.clone(),
                (x as i32, top as i32 - 16),
                (FAMILY, 11),
            ))?;
        }
        Ok(())
    })?;
    image::imageops::replace(&mut out, grid, i64::from(left), i64::from(top));
    Ok(out)
}
