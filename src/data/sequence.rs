//! Token sequences: SMILES strings or lines of text, from a CSV column (`.csv`, `.csv.gz`) or a
//! text file with one sequence per line (gzipped or not). A vocabulary built from the
//! training split turns each into token ids between a begin and an end token, padded to the
//! longest sequence.

use std::io::Read;
use std::path::Path;

use super::DataError;

/// How a string splits into tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Tokens {
    /// SMILES: a bracket atom (`[nH]`, `[C@@H]`), `Cl`, `Br` and a two-digit ring bond
    /// (`%10`) are one token each, every other character is one.
    #[default]
    Smiles,
    /// Plain characters (text).
    Chars,
}

/// `s` split into tokens, or why it cannot be.
pub fn tokenize(kind: Tokens, s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let len = match (kind, c) {
            (Tokens::Chars, _) => c.len_utf8(),
            (Tokens::Smiles, '[') => match rest.find(']') {
                Some(end) => end + 1,
                None => {
                    return Err(format!(
                        "a '[' at character {} is never closed",
                        s.len() - rest.len() + 1
                    ))
                }
            },
            (Tokens::Smiles, 'C') if rest.starts_with("Cl") => 2,
            (Tokens::Smiles, 'B') if rest.starts_with("Br") => 2,
            (Tokens::Smiles, '%') => {
                let digits = rest[1..]
                    .chars()
                    .take(2)
                    .filter(char::is_ascii_digit)
                    .count();
                if digits != 2 {
                    return Err(format!(
                        "'%' at character {} needs two digits",
                        s.len() - rest.len() + 1
                    ));
                }
                3
            }
            _ => c.len_utf8(),
        };
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(out)
}

/// The tokens a model knows, in id order, followed by three ids of its own: begin, end and
/// padding.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Vocab {
    pub kind: Tokens,
    pub tokens: Vec<String>,
}

impl Vocab {
    /// The sorted distinct tokens of `sequences`.
    pub fn build<'a>(kind: Tokens, sequences: impl IntoIterator<Item = &'a Vec<&'a str>>) -> Vocab {
        let mut set = std::collections::BTreeSet::new();
        for s in sequences {
            set.extend(s.iter().copied());
        }
        Vocab {
            kind,
            tokens: set.into_iter().map(String::from).collect(),
        }
    }

    /// Ids in all: the tokens and begin, end, padding.
    pub fn len(&self) -> usize {
        self.tokens.len() + 3
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn bos(&self) -> u32 {
        self.tokens.len() as u32
    }

    pub fn eos(&self) -> u32 {
        self.bos() + 1
    }

    pub fn pad(&self) -> u32 {
        self.bos() + 2
    }

    /// The ids of `s` between begin and end, or the token the vocabulary lacks.
    pub fn encode(&self, s: &str) -> Result<Vec<u32>, String> {
        let mut ids = vec![self.bos()];
        for t in tokenize(self.kind, s)? {
            match self.tokens.binary_search_by(|k| k.as_str().cmp(t)) {
                Ok(i) => ids.push(i as u32),
                Err(_) => return Err(format!("the token '{t}' is not in the model's vocabulary")),
            }
        }
        ids.push(self.eos());
        Ok(ids)
    }

    /// The string of `ids`: tokens up to the first end or padding, begin tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .take_while(|&&i| i != self.eos() && i != self.pad())
            .filter_map(|&i| self.tokens.get(i as usize).map(String::as_str))
            .collect()
    }
}

/// Encoded sequences: `count` rows of `width` ids (begin, tokens, end, then padding).
#[derive(Clone, Debug, Default)]
pub struct Sequences {
    pub ids: Vec<u32>,
    /// Ids per sequence before the padding (tokens + 2).
    pub lengths: Vec<u32>,
    pub width: usize,
    pub count: usize,
    /// The strings as read.
    pub text: Vec<String>,
}

impl Sequences {
    /// Encodes `strings` (each with its line, for messages) padded to `width` ids.
    pub fn encode(
        path: &Path,
        vocab: &Vocab,
        strings: &[(u64, String)],
        width: usize,
    ) -> Result<Sequences, DataError> {
        let mut s = Sequences {
            width,
            ..Sequences::default()
        };
        for (line, text) in strings {
            let mut ids = vocab
                .encode(text)
                .map_err(|e| DataError::new(path, format!("line {line}: {e}")))?;
            if ids.len() > width {
                return Err(DataError::new(
                    path,
                    format!(
                        "line {line}: {} tokens, the model takes at most {}",
                        ids.len() - 2,
                        width - 2
                    ),
                ));
            }
            s.lengths.push(ids.len() as u32);
            ids.resize(width, vocab.pad());
            s.ids.extend(ids);
            s.text.push(text.clone());
        }
        s.count = strings.len();
        Ok(s)
    }

    /// Encodes `strings` for a trained model (its vocabulary and length limit), padded to
    /// the longest: a token the vocabulary lacks, or a sequence over `max_length` tokens, is
    /// an error naming its line.
    pub fn for_model(
        path: &Path,
        vocab: &Vocab,
        strings: &[(u64, String)],
        max_length: usize,
    ) -> Result<Sequences, DataError> {
        let w = within_limit(path, strings.to_vec(), vocab.kind, max_length, true)?;
        Sequences::encode(path, vocab, &w.kept, w.longest + 2)
    }

    /// The sequences at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Sequences {
        Sequences {
            ids: rows
                .iter()
                .flat_map(|&r| self.ids[r * self.width..][..self.width].to_vec())
                .collect(),
            lengths: rows.iter().map(|&r| self.lengths[r]).collect(),
            width: self.width,
            count: rows.len(),
            text: rows.iter().map(|&r| self.text[r].clone()).collect(),
        }
    }
}

/// The most bytes a gzipped file may expand to.
const MAX_TEXT: u64 = 1 << 32;

/// The text of `path`, gunzipped when it starts with the gzip magic.
fn read_text(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = crate::io::read_input(path).map_err(|e| DataError::new(path, e.to_string()))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::bufread::MultiGzDecoder::new(&raw[..])
        .take(MAX_TEXT + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::new(path, format!("corrupt gzip data: {e}")))?;
    if out.len() as u64 > MAX_TEXT {
        return Err(DataError::new(path, "expands to more than 4 GiB"));
    }
    Ok(out)
}

/// Whether `path` names a CSV file (`.csv` or `.csv.gz`).
pub fn is_csv(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

/// The strings of `path` with their lines: a CSV file's `column` (by default the only
/// column, or one named SMILES in any case), or every line of a text file (a `.smi` line's
/// first field). An empty string is an error naming its line.
pub fn read_strings(path: &Path, column: Option<&str>) -> Result<Vec<(u64, String)>, DataError> {
    let bytes = read_text(path)?;
    let strings: Vec<(u64, String)> = if is_csv(path) {
        let cells = super::table::cells_of(path, &bytes)?;
        let h = &cells.header;
        let col = match column {
            Some(c) => h.iter().position(|x| x == c).ok_or_else(|| {
                DataError::new(path, format!("no column '{c}' (columns: {})", h.join(", ")))
            })?,
            None if h.len() == 1 => 0,
            None => h.iter().position(|x| x.eq_ignore_ascii_case("smiles")).ok_or_else(|| {
                DataError::new(
                    path,
                    format!("which column holds the sequences? Name it with --sequence-column (columns: {})", h.join(", ")),
                )
            })?,
        };
        cells
            .rows
            .into_iter()
            .zip(cells.lines)
            .map(|(mut r, line)| (line, std::mem::take(&mut r[col])))
            .collect()
    } else {
        if column.is_some() {
            return Err(DataError::new(
                path,
                "--sequence-column needs a CSV file (.csv or .csv.gz)",
            ));
        }
        let text =
            std::str::from_utf8(&bytes).map_err(|_| DataError::new(path, "not UTF-8 text"))?;
        let smi = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("smi"));
        text.strip_suffix('\n')
            .unwrap_or(text)
            .split('\n')
            .enumerate()
            .map(|(i, l)| {
                let l = l.strip_suffix('\r').unwrap_or(l);
                let l = if smi {
                    l.split_whitespace().next().unwrap_or("")
                } else {
                    l
                };
                (i as u64 + 1, l.to_string())
            })
            .collect()
    };
    if let Some((line, _)) = strings.iter().find(|(_, s)| s.is_empty()) {
        return Err(DataError::new(path, format!("line {line} is empty")));
    }
    if strings.len() < 2 {
        return Err(DataError::new(path, "fewer than 2 sequences"));
    }
    Ok(strings)
}

/// How sequence data are read.
#[derive(Clone, Debug)]
pub struct SequenceOptions {
    pub column: Option<String>,
    pub tokens: Tokens,
    /// The most tokens a sequence may have; longer ones are skipped (counted), or an error
    /// with `strict`.
    pub max_length: usize,
    pub strict: bool,
    pub test_fraction: f64,
}

/// A sequence dataset: the vocabulary (the training split's tokens, or a model's) and the
/// two splits, padded to one width.
#[derive(Clone, Debug)]
pub struct SequenceData {
    pub vocab: Vocab,
    pub train: Sequences,
    pub test: Sequences,
    /// Sequences over the length limit that were left out.
    pub skipped: usize,
}

/// Strings within a length limit.
struct Within {
    /// (line, string) of each.
    kept: Vec<(u64, String)>,
    /// How many were over the limit.
    skipped: usize,
    /// The most tokens one has.
    longest: usize,
}

/// The `strings` of `path` (with their lines) of at most `max_length` tokens: a longer one is
/// left out and counted, or an error naming its line when `strict`; one that does not split
/// into tokens is an error naming its line.
fn within_limit(
    path: &Path,
    strings: Vec<(u64, String)>,
    tokens: Tokens,
    max_length: usize,
    strict: bool,
) -> Result<Within, DataError> {
    let mut kept = Vec::with_capacity(strings.len());
    let (mut skipped, mut longest) = (0, 0);
    for (line, s) in strings {
        let n = tokenize(tokens, &s)
            .map_err(|e| DataError::new(path, format!("line {line}: {e}")))?
            .len();
        if n > max_length {
            if strict {
                return Err(DataError::new(
                    path,
                    format!("line {line}: {n} tokens, over --max-length {max_length}"),
                ));
            }
            skipped += 1;
            continue;
        }
        longest = longest.max(n);
        kept.push((line, s));
    }
    Ok(Within {
        kept,
        skipped,
        longest,
    })
}

/// The strings of the file at `path` within the length limit, at least 2 of them.
fn read_within(path: &Path, opts: &SequenceOptions) -> Result<Within, DataError> {
    let strings = read_strings(path, opts.column.as_deref())?;
    let w = within_limit(path, strings, opts.tokens, opts.max_length, opts.strict)?;
    if w.kept.len() < 2 {
        return Err(DataError::new(
            path,
            format!(
                "{} of its sequences are within --max-length {}; at least 2 must be",
                w.kept.len(),
                opts.max_length
            ),
        ));
    }
    Ok(w)
}

/// The training split's strings of `path` (as `load` splits it).
pub fn training_strings(path: &Path, opts: &SequenceOptions) -> Result<Vec<String>, DataError> {
    let mut kept = read_within(path, opts)?.kept;
    let (train, _) = super::npy::split_rows(kept.len(), opts.test_fraction);
    Ok(train
        .into_iter()
        .map(|r| std::mem::take(&mut kept[r].1))
        .collect())
}

/// Reads `path` and splits it (a fixed shuffle holds out `test_fraction`, as for tables).
/// With `vocab` (a trained model's), a token it lacks is an error naming the line; without,
/// the training split's tokens make the vocabulary, and test sequences with a token outside
/// it are left out with a warning.
pub fn load(
    path: &Path,
    opts: &SequenceOptions,
    vocab: Option<&Vocab>,
) -> Result<SequenceData, DataError> {
    let Within {
        kept,
        skipped,
        longest,
    } = read_within(path, opts)?;
    let (train_rows, mut test_rows) = super::npy::split_rows(kept.len(), opts.test_fraction);
    let vocab = match vocab {
        Some(v) => v.clone(),
        None => {
            let tokens: Vec<Vec<&str>> = train_rows
                .iter()
                .map(|&r| tokenize(opts.tokens, &kept[r].1).expect("tokenized above"))
                .collect();
            let v = Vocab::build(opts.tokens, &tokens);
            let before = test_rows.len();
            test_rows.retain(|&r| v.encode(&kept[r].1).is_ok());
            if test_rows.is_empty() {
                return Err(DataError::new(
                    path,
                    "every test sequence has a token the training split lacks",
                ));
            }
            if test_rows.len() < before {
                log::warn!(
                    "{}: {} test sequences have tokens the training split lacks; they are left out",
                    path.display(),
                    before - test_rows.len()
                );
            }
            v
        }
    };
    let all: Vec<(u64, String)> = train_rows
        .iter()
        .chain(&test_rows)
        .map(|&r| kept[r].clone())
        .collect();
    let encoded = Sequences::encode(path, &vocab, &all, longest + 2)?;
    let n = train_rows.len();
    Ok(SequenceData {
        vocab,
        train: encoded.select(&(0..n).collect::<Vec<_>>()),
        test: encoded.select(&(n..all.len()).collect::<Vec<_>>()),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smiles_tokens() {
        let t = tokenize(Tokens::Smiles, "CC(Cl)c1cc[nH]c1Br%12[C@@H]").unwrap();
        assert_eq!(
            t,
            [
                "C", "C", "(", "Cl", ")", "c", "1", "c", "c", "[nH]", "c", "1", "Br", "%12",
                "[C@@H]"
            ]
        );
        assert!(tokenize(Tokens::Smiles, "C[nH")
            .unwrap_err()
            .contains("never closed"));
        assert!(tokenize(Tokens::Smiles, "C%1")
            .unwrap_err()
            .contains("two digits"));
        assert_eq!(tokenize(Tokens::Chars, "Clé").unwrap(), ["C", "l", "é"]);
    }

    #[test]
    fn vocab_round_trip() {
        let seqs = [
            tokenize(Tokens::Smiles, "CCO").unwrap(),
            tokenize(Tokens::Smiles, "c1ccccc1Cl").unwrap(),
        ];
        let v = Vocab::build(Tokens::Smiles, &seqs);
        assert_eq!(v.tokens, ["1", "C", "Cl", "O", "c"]);
        let ids = v.encode("ClCCO").unwrap();
        assert_eq!(ids, [v.bos(), 2, 1, 1, 3, v.eos()]);
        assert_eq!(v.decode(&ids), "ClCCO");
        assert!(v.encode("CCN").unwrap_err().contains("'N'"));
    }
}
