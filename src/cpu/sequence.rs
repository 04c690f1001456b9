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
