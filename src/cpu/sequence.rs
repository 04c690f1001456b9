//! Twins of a recurrent layer's input ops (ops::sequence), dense row-major, time-major rows.

/// Rows of `width` values: table[tokens[r]] (zeros for a token past the table).
pub fn embed(tokens: &[u32], table: &[f64], width: usize) -> Vec<f64> {
    let vocab = table.len() / width;
    tokens
        .iter()
        .flat_map(|&t| {
            let t = t as usize;
            (0..width).map(move |j| if t < vocab { table[t * width + j] } else { 0.0 })
        })
        .collect()
}

/// `rows` rows: src's row r mod batch (src is [batch, width]).
pub fn repeat(src: &[f64], width: usize, rows: usize) -> Vec<f64> {
    let batch = src.len() / width;
    (0..rows)
        .flat_map(|r| src[(r % batch) * width..][..width].to_vec())
        .collect()
}

/// Twin of `ops::sequence::next_token` for one sequence: padding after its end, else the
/// likeliest token at temperature 0, or the draw of Philox uniform (record, step, stream,
/// noise.step).
pub fn next_token(
    logits: &[f64],
    prev: u32,
    ends: crate::ops::sequence::Ends,
    record: u32,
    step: u32,
    noise: crate::ops::sample::Noise,
    temperature: f64,
) -> u32 {
    if prev == ends.eos || prev == ends.pad {
        return ends.pad;
    }
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if temperature <= 0.0 {
        return logits.iter().position(|&l| l == m).unwrap_or(0) as u32;
    }
    let w: Vec<f64> = logits
        .iter()
        .map(|l| ((l - m) / temperature).exp())
        .collect();
    let r = super::sample::philox4x32_10(
        [record, step, noise.stream, noise.step],
        [noise.seed as u32, (noise.seed >> 32) as u32],
    );
    let u = f64::from(r[0] >> 8) / 16_777_216.0 * w.iter().sum::<f64>();
    let mut c = 0.0;
    for (k, wk) in w.iter().enumerate() {
        c += wk;
        if c > u {
            return k as u32;
        }
    }
    (w.len() - 1) as u32
}
