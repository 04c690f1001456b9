//! CSV tables: a header row, then one record per row. Every column is numeric, binary or
//! categorical (inferred from the training rows, or set with `--categorical`), ignored
//! (`--ignore`), or the label (`--label-column`). Empty, `NA` and `NaN` cells are missing.
//!
//! A record is encoded as `[values | mask]`, 2E floats: numeric columns standardized with
//! the training rows' mean and deviation, binary ones 0/1, categorical ones one-hot; a
//! missing cell is 0 with mask 0 (a categorical cell's mask covers its whole block). The
//! schema, statistics included, is saved with the run so that later commands encode new
//! rows exactly as the training rows were.

use std::path::Path;

use super::{DataError, Dtype, Images};

/// One column's type and what its encoding needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    /// Standardized with the training rows' statistics; a Gaussian with learned variance.
    Numeric { mean: f64, std: f64 },
    /// Two values, the first encoded 0; Bernoulli.
    Binary { levels: [String; 2] },
    /// One-hot over the levels; softmax.
    Categorical { levels: Vec<String> },
}

impl Kind {
    /// A binary or categorical column's levels (none for a numeric one).
    pub fn levels(&self) -> &[String] {
        match self {
            Kind::Numeric { .. } => &[],
            Kind::Binary { levels } => levels,
            Kind::Categorical { levels } => levels,
        }
    }
}

/// A modelled column.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(flatten)]
    pub kind: Kind,
}

impl Column {
    /// Encoded values (one-hot width for categorical columns).
    pub fn width(&self) -> usize {
        match &self.kind {
            Kind::Categorical { levels } => levels.len(),
            _ => 1,
        }
    }

    /// Decoder outputs: mean and log-variance for numeric columns, logits otherwise.
    pub fn outputs(&self) -> usize {
        match &self.kind {
            Kind::Numeric { .. } => 2,
            _ => self.width(),
        }
    }
}

/// How a table is read and encoded.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub columns: Vec<Column>,
    /// The label column and its levels (label i is levels[i]).
    pub label: Option<(String, Vec<String>)>,
    pub ignored: Vec<String>,
}

/// The column choices a user makes (`--categorical`, `--ignore`, `--label-column`).
#[derive(Clone, Debug, Default)]
pub struct TableOptions {
    pub categorical: Vec<String>,
    pub ignore: Vec<String>,
    pub label_column: Option<String>,
}

/// Kind codes of the loss kernel's column blocks (shaders/table_loss.wgsl).
pub const NUMERIC: u32 = 0;
pub const BINARY: u32 = 1;
pub const CATEGORICAL: u32 = 2;

impl Schema {
    /// Encoded values per record (E; the record is 2E with its mask).
    pub fn width(&self) -> usize {
        self.columns.iter().map(Column::width).sum()
    }

    /// Decoder outputs per record.
    pub fn outputs(&self) -> usize {
        self.columns.iter().map(Column::outputs).sum()
    }

    /// Per column: (kind code, first encoded value, first output, width), as the loss
    /// kernel reads them.
    pub fn blocks(&self) -> Vec<[u32; 4]> {
        let (mut at, mut out) = (0, 0);
        self.columns
            .iter()
            .map(|c| {
                let kind = match c.kind {
                    Kind::Numeric { .. } => NUMERIC,
                    Kind::Binary { .. } => BINARY,
                    Kind::Categorical { .. } => CATEGORICAL,
                };
                let block = [kind, at as u32, out as u32, c.width() as u32];
                at += c.width();
                out += c.outputs();
                block
            })
            .collect()
    }
}

impl Schema {
    /// What the model expects for each encoded value given its decoder `outputs` for a
    /// record: a numeric column's mean, a binary one's probability, a categorical one's
    /// softmax (E values).
    pub fn expected(&self, outputs: &[f32]) -> Vec<f32> {
        let mut v = vec![0f32; self.width()];
        for [kind, at, first, w] in self.blocks() {
            let (at, first, w) = (at as usize, first as usize, w as usize);
            match kind {
                NUMERIC => v[at] = outputs[first],
                BINARY => v[at] = 1.0 / (1.0 + (-outputs[first]).exp()),
                _ => {
                    let l = &outputs[first..first + w];
                    let top = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = l.iter().map(|x| (x - top).exp()).sum();
                    for k in 0..w {
                        v[at + k] = (l[k] - top).exp() / sum;
                    }
                }
            }
        }
        v
    }

    /// Column `i`'s cell for encoded values `block` (its width): a numeric value in the
    /// data's units, the likelier binary level, the likeliest category.
    pub fn cell(&self, i: usize, block: &[f32]) -> String {
        match &self.columns[i].kind {
            Kind::Numeric { mean, std } => {
                // The shortest text that reads back as the same f32: significant digits,
                // whatever the column's scale.
                let x = (f64::from(block[0]) * std + mean) as f32;
                if x != 0.0 && !(1e-4..1e15).contains(&x.abs()) {
                    format!("{x:e}")
                } else {
                    format!("{x}")
                }
            }
            Kind::Binary { levels } => levels[usize::from(block[0] >= 0.5)].clone(),
            Kind::Categorical { levels } => {
                let k = (0..block.len())
                    .max_by(|&a, &b| block[a].total_cmp(&block[b]))
                    .unwrap_or(0);
                levels[k].clone()
            }
        }
    }
}

impl Schema {
    /// A record drawn from the decoder's `outputs` (one record's), encoded as the training
    /// rows are (E values): a numeric cell from its Gaussian, a binary or categorical one
    /// from its probabilities. At `temperature` 0 each cell is its likeliest value (a
    /// numeric cell its mean); otherwise the numeric deviation is scaled by it.
    pub fn draw_encoded(
        &self,
        outputs: &[f32],
        rng: &mut crate::rng::Rng,
        temperature: f32,
    ) -> Vec<f32> {
        let mut v = self.expected(outputs);
        let t = f64::from(temperature);
        for [kind, at, first, w] in self.blocks() {
            let (at, first, w) = (at as usize, first as usize, w as usize);
            let block = &mut v[at..at + w];
            match kind {
                NUMERIC if t > 0.0 => {
                    let sd = (0.5 * f64::from(outputs[first + 1])).exp();
                    block[0] += (t * sd * rng.normal()) as f32;
                }
                BINARY => {
                    let p = f64::from(block[0]);
                    let on = if t > 0.0 {
                        rng.uniform(0.0, 1.0) < p
                    } else {
                        p >= 0.5
                    };
                    block[0] = f32::from(on);
                }
                CATEGORICAL => {
                    let pick = if t > 0.0 {
                        rng.pick(block.iter().map(|&p| f64::from(p)))
                    } else {
                        (0..w)
                            .max_by(|&a, &b| block[a].total_cmp(&block[b]))
                            .unwrap_or(0)
                    };
                    block
                        .iter_mut()
                        .enumerate()
                        .for_each(|(k, v)| *v = f32::from(k == pick));
                }
                _ => {}
            }
        }
        v
    }

    /// The cells of an encoded record (E values) in the table's own columns and units.
    pub fn cells(&self, encoded: &[f32]) -> Vec<String> {
        self.blocks()
            .iter()
            .enumerate()
            .map(|(i, &[_, at, _, w])| self.cell(i, &encoded[at as usize..(at + w) as usize]))
            .collect()
    }
}

/// Whether `path` names a CSV table (by its extension).
pub fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

fn missing(cell: &str) -> bool {
    matches!(cell, "" | "NA" | "NaN" | "nan" | "N/A" | "na")
}

/// A table's header and cells (trimmed), with each record's line number; a record with
/// another number of cells than the header is an error naming its line.
pub struct Cells {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub lines: Vec<u64>,
}

/// The distinct values, in numeric order when they are all integers, else as text.
fn sorted_levels(values: &[&str]) -> Vec<String> {
    let mut levels: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    if levels.iter().all(|v| v.parse::<i64>().is_ok()) {
        levels.sort_by_key(|v| v.parse::<i64>().expect("checked"));
    } else {
        levels.sort();
    }
    levels.dedup();
    levels
}

/// Reads `path` whole.
pub fn read_cells(path: &Path) -> Result<Cells, DataError> {
    let bytes = crate::io::read_input(path).map_err(|e| DataError::new(path, e.to_string()))?;
    cells_of(path, &bytes)
}

/// The cells of CSV text `bytes` read from `path` (see `read_cells`).
pub fn cells_of(path: &Path, bytes: &[u8]) -> Result<Cells, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::new(path, format!("unreadable header: {e}")))?
        .iter()
        .map(String::from)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(DataError::new(path, "no header row"));
    }
    if let Some(dup) = header
        .iter()
        .enumerate()
        .find(|(i, h)| header[..*i].contains(h))
    {
        return Err(DataError::new(
            path,
            format!("column '{}' appears twice in the header", dup.1),
        ));
    }
    let (mut rows, mut lines) = (Vec::new(), Vec::new());
    // The csv crate places a record where its reader began, before the blank lines and
    // line ends it skipped, so its line numbers fall short after a blank line and in CRLF
    // files: each record's line is counted here from its first byte instead.
    let (mut line, mut counted) = (1u64, 0usize);
    for record in reader.records() {
        let record = record.map_err(|e| DataError::new(path, e.to_string()))?;
        let mut start = record.position().map_or(counted, |p| p.byte() as usize);
        while bytes.get(start).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
            start += 1;
        }
        let start = start.max(counted);
        line += bytes[counted..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        counted = start;
        if record.len() != header.len() {
            return Err(DataError::new(
                path,
                format!(
                    "line {line}: {} cells where the header has {} columns",
                    record.len(),
                    header.len()
                ),
            ));
        }
        rows.push(record.iter().map(String::from).collect());
        lines.push(line);
    }
    if rows.len() < 2 {
        return Err(DataError::new(path, "fewer than 2 records"));
    }
    Ok(Cells {
        header,
        rows,
        lines,
    })
}

/// Columns of integers (written as such) with at most this many distinct values are
/// categorical.
const FEW_INTEGERS: usize = 10;

/// Infers the schema from the rows `train` of `cells`: types from every row's values, the
/// numeric statistics from the training rows only.
pub fn infer(
    path: &Path,
    cells: &Cells,
    train: &[usize],
    opts: &TableOptions,
) -> Result<Schema, DataError> {
    for name in opts
        .categorical
        .iter()
        .chain(&opts.ignore)
        .chain(&opts.label_column)
    {
        if !cells.header.contains(name) {
            return Err(DataError::new(
                path,
                format!(
                    "no column '{name}' (the header has: {})",
                    cells.header.join(", ")
                ),
            ));
        }
    }
    let both = |a: &[String], b: &[String]| a.iter().find(|n| b.contains(n)).cloned();
    let label: Vec<String> = opts.label_column.iter().cloned().collect();
    if let Some(n) = both(&opts.ignore, &label)
        .or_else(|| both(&opts.ignore, &opts.categorical))
        .or_else(|| both(&label, &opts.categorical))
    {
        return Err(DataError::new(
            path,
            format!(
                "column '{n}' is given two roles among --ignore, --categorical and --label-column"
            ),
        ));
    }
    if let [only] = &cells.header[..] {
        if only.contains([';', '\t']) {
            return Err(DataError::new(
                path,
                "the header is one column holding ';' or tabs; vae-gpu reads comma-separated files",
            ));
        }
    }
    let mut schema = Schema::default();
    for (j, name) in cells.header.iter().enumerate() {
        let values: Vec<&str> = cells
            .rows
            .iter()
            .map(|r| r[j].as_str())
            .filter(|c| !missing(c))
            .collect();
        let levels = sorted_levels(&values);
        if opts.ignore.contains(name) {
            schema.ignored.push(name.clone());
            continue;
        }
        if opts.label_column.as_ref() == Some(name) {
            if levels.len() > 256 {
                return Err(DataError::new(
                    path,
                    format!(
                        "label column '{name}' has {} values; at most 256",
                        levels.len()
                    ),
                ));
            }
            schema.label = Some((name.clone(), levels));
            continue;
        }
        let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
        let kind = match numbers {
            _ if levels.is_empty() => {
                return Err(DataError::new(
                    path,
                    format!("column '{name}' has no values; --ignore it"),
                ))
            }
            _ if opts.categorical.contains(name) => Kind::Categorical { levels },
            _ if levels.len() == 2 => Kind::Binary {
                levels: [levels[0].clone(), levels[1].clone()],
            },
            Some(_)
                if !(values.iter().all(|v| v.parse::<i64>().is_ok())
                    && levels.len() <= FEW_INTEGERS) =>
            {
                let stats: Vec<f64> = train
                    .iter()
                    .filter_map(|&i| cells.rows[i][j].parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .collect();
                let n = stats.len().max(1) as f64;
                let mean = stats.iter().map(|v| v / n).sum::<f64>();
                let var = stats.iter().map(|v| (v - mean).powi(2) / n).sum::<f64>();
                if !(mean.is_finite() && var.is_finite()) {
                    return Err(DataError::new(
                        path,
                        format!("column '{name}': values too large to standardize (keep them within 1e150)"),
                    ));
                }
                // A constant column ('3.5' throughout, or '1', '1.0' and '01') is centred,
                // not scaled: its variance is rounding error, 1e-30, not zero.
                let constant = stats.iter().all(|&v| v == stats[0]);
                Kind::Numeric {
                    mean: if constant {
                        stats.first().copied().unwrap_or(mean)
                    } else {
                        mean
                    },
                    std: if constant || var <= 0.0 {
                        1.0
                    } else {
                        var.sqrt()
                    },
                }
            }
            _ => {
                // An id, or numbers with a stray word: worth a look before training on it.
                if levels.len() > 20 && levels.len() * 2 > values.len() {
                    log::warn!(
                        "{}: column '{name}' is categorical with {} distinct values in {} rows; if it is an id, --ignore it; if it is numeric, a cell that is not a number made it categorical",
                        path.display(),
                        levels.len(),
                        values.len()
                    );
                }
                Kind::Categorical { levels }
            }
        };
        schema.columns.push(Column {
            name: name.clone(),
            kind,
        });
    }
    if schema.columns.is_empty() {
        return Err(DataError::new(path, "no columns left to model"));
    }
    Ok(schema)
}

/// The most standard deviations from its training mean a numeric cell is encoded at: an
/// outlier stays the most anomalous record, with finite losses.
const FARTHEST: f64 = 1e6;

/// Encodes every row of `cells` with `schema` as `[values | mask]` f32 records of shape
/// 1 x 2E, with labels when the schema has a label column. A cell that does not fit its
/// column (not a number, an unknown category) is an error naming its row and column.
pub fn encode(path: &Path, cells: &Cells, schema: &Schema) -> Result<Images, DataError> {
    let at = |name: &str| {
        cells.header.iter().position(|h| h == name).ok_or_else(|| {
            DataError::new(
                path,
                format!("no column '{name}', which the model was trained with"),
            )
        })
    };
    let cols: Vec<usize> = schema
        .columns
        .iter()
        .map(|c| at(&c.name))
        .collect::<Result<_, _>>()?;
    // Rows to score may come without their label column.
    let label = schema.label.as_ref().and_then(|(name, levels)| {
        cells
            .header
            .iter()
            .position(|h| h == name)
            .map(|j| (j, levels))
    });
    let e = schema.width();
    let (mut far, mut far_cells) = (None, 0);
    let mut values = Vec::with_capacity(cells.rows.len() * 2 * e);
    let mut labels = Vec::new();
    for (row, line) in cells.rows.iter().zip(&cells.lines) {
        let bad = |name: &str, why: String| {
            DataError::new(path, format!("line {line}, column '{name}': {why}"))
        };
        let mut v = vec![0f32; e];
        let mut mask = vec![0f32; e];
        let mut k = 0;
        for (c, &j) in schema.columns.iter().zip(&cols) {
            let cell = row[j].as_str();
            if !missing(cell) {
                match &c.kind {
                    Kind::Numeric { mean, std } => {
                        let x: f64 = cell
                            .parse()
                            .ok()
                            .filter(|x: &f64| x.is_finite())
                            .ok_or_else(|| {
                                bad(&c.name, format!("'{cell}' is not a finite number"))
                            })?;
                        let z = (x - mean) / std;
                        if z.abs() > FARTHEST {
                            far.get_or_insert((*line, c.name.clone(), z));
                            far_cells += 1;
                        }
                        v[k] = z.clamp(-FARTHEST, FARTHEST) as f32;
                    }
                    Kind::Binary { levels } => {
                        let i = levels.iter().position(|l| l == cell).ok_or_else(|| {
                            bad(
                                &c.name,
                                format!("'{cell}' is neither '{}' nor '{}'", levels[0], levels[1]),
                            )
                        })?;
                        v[k] = i as f32;
                    }
                    Kind::Categorical { levels } => {
                        let i = levels.iter().position(|l| l == cell).ok_or_else(|| {
                            bad(
                                &c.name,
                                format!("unknown category '{cell}' (known: {})", levels.join(", ")),
                            )
                        })?;
                        v[k + i] = 1.0;
                    }
                }
                mask[k..k + c.width()].fill(1.0);
            }
            k += c.width();
        }
        if let Some((j, levels)) = label {
            let cell = row[j].as_str();
            if missing(cell) {
                return Err(bad(
                    &cells.header[j],
                    "the label is missing; give every row its class, or leave out --label-column"
                        .into(),
                ));
            }
            let i = levels.iter().position(|l| l == cell).ok_or_else(|| {
                bad(
                    &cells.header[j],
                    format!("unknown label '{cell}' (known: {})", levels.join(", ")),
                )
            })?;
            labels.push(i as u8);
        }
        values.extend(v);
        values.extend(mask);
    }
    if let Some((line, name, z)) = far {
        log::warn!(
            "{}: line {line}, column '{name}' lies {z:.1e} standard deviations from the training mean; {far_cells} such cell(s) are clipped to {FARTHEST:.0e} (further out, the model's arithmetic overflows)",
            path.display()
        );
    }
    Ok(Images {
        pixels: Dtype::F32.bytes(&values),
        count: cells.rows.len(),
        height: 1,
        width: 2 * e,
        channels: 1,
        labels: label.map(|_| labels),
        dtype: Dtype::F32,
    })
}
