//! Twins of the graph's structural ops on images [B, H, W, C] (channel fastest).

/// Nearest-neighbour upsampling by 2 of `batch` images of h x w x c.
pub fn upsample(x: &[f64], batch: usize, h: usize, w: usize, c: usize) -> Vec<f64> {
    let mut y = vec![0.0; 4 * x.len()];
    for b in 0..batch {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                for ch in 0..c {
                    y[((b * 2 * h + oy) * 2 * w + ox) * c + ch] =
                        x[((b * h + oy / 2) * w + ox / 2) * c + ch];
                }
            }
        }
    }
    y
}

/// Each pixel's channels of `a` (ca of them) then those of `b` (cb). A `b` with fewer
/// pixels than `a` (a flat condition beside an image) gives each of its pixels to as many
/// consecutive pixels of `a`.
pub fn concat(a: &[f64], ca: usize, b: &[f64], cb: usize) -> Vec<f64> {
    let repeat = (a.len() / ca) / (b.len() / cb).max(1);
    a.chunks(ca)
        .enumerate()
        .flat_map(|(i, x)| x.iter().chain(&b[i / repeat * cb..(i / repeat + 1) * cb]))
        .copied()
        .collect()
}

/// Twin of `ops::sequence::repeat_records`: each record's row of `records` [B, cols] over
/// its `k` consecutive rows.
pub fn repeat_records(records: &[f64], cols: usize, k: usize) -> Vec<f64> {
    records.chunks(cols).flat_map(|r| r.repeat(k)).collect()
}

/// Twin of `ops::sequence::sum_records`: each record's `k` consecutive rows of `rows`
/// [B k, cols] summed.
pub fn sum_records(rows: &[f64], cols: usize, k: usize) -> Vec<f64> {
    rows.chunks(cols * k)
        .flat_map(|group| (0..cols).map(move |j| (0..k).map(|i| group[i * cols + j]).sum::<f64>()))
        .collect()
}

/// Twin of `ops::moments`: each of `cols` columns' mean and population variance over the
/// rows of `x` [rows, cols] (two passes, f64).
pub fn column_moments(x: &[f64], cols: usize) -> Vec<(f64, f64)> {
    let n = x.len().checked_div(cols).unwrap_or(0).max(1) as f64;
    (0..cols)
        .map(|j| {
            let mean = x.iter().skip(j).step_by(cols).sum::<f64>() / n;
            let m2 = x
                .iter()
                .skip(j)
                .step_by(cols)
                .map(|v| (v - mean).powi(2))
                .sum::<f64>();
            (mean, m2 / n)
        })
        .collect()
}
