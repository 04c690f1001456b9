//! Tables: the per-column loss kernel against its CPU twin (parity on awkward shapes, and
//! finite differences), reading and encoding CSV files, and their errors.

mod common;

use common::{assert_close, for_each_gpu, Rng};
use vae_gpu::cpu;
use vae_gpu::data::table::{self, Column, Kind, Schema, TableOptions};
use vae_gpu::gpu::{Gpu, Matrix};
use vae_gpu::ops::loss::{table_loss, LossBuffers, LossSettings, TableBlocks};

/// numeric, binary, categorical(3), numeric, categorical(5), binary
fn schema() -> Schema {
    let num = |name: &str| Column {
        name: name.into(),
        kind: Kind::Numeric {
            mean: 0.0,
            std: 1.0,
        },
    };
    let bin = |name: &str| Column {
        name: name.into(),
        kind: Kind::Binary {
            levels: ["a".into(), "b".into()],
        },
    };
    let cat = |name: &str, k: usize| Column {
        name: name.into(),
        kind: Kind::Categorical {
            levels: (0..k).map(|i| format!("l{i}")).collect(),
        },
    };
    Schema {
        columns: vec![
            num("n1"),
            bin("b1"),
            cat("c3", 3),
            num("n2"),
            cat("c5", 5),
            bin("b2"),
        ],
        ..Default::default()
    }
}

/// Random records of `schema`: values of each kind, about a third of the cells missing.
fn records(rng: &mut Rng, s: &Schema, rows: usize) -> Vec<f64> {
    let e = s.width();
    let mut x = Vec::new();
    for _ in 0..rows {
        let mut v = vec![0.0; e];
        let mut m = vec![0.0; e];
        for [kind, at, _, w] in s.blocks() {
            let (at, w) = (at as usize, w as usize);
            match kind {
                table::NUMERIC => v[at] = rng.uniform(-2.5, 2.5),
                table::BINARY => v[at] = rng.below(2) as f64,
                _ => v[at + rng.below(w)] = 1.0,
            }
            if rng.below(3) > 0 {
                m[at..at + w].fill(1.0);
            }
        }
        x.extend(v);
        x.extend(m);
    }
    x
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Runs the table loss on the GPU: (per-sample recon, doutputs).
fn gpu_table_loss(
    gpu: &Gpu,
    s: &Schema,
    outputs: &[f32],
    x: &[f32],
    rows: usize,
    set: &LossSettings,
) -> (Vec<f32>, Vec<f32>) {
    let (o, e) = (s.outputs(), s.width());
    let up = |r, c, d: &[f32]| Matrix::from_slice(gpu, r, c, d, "t").unwrap();
    let (go, gx) = (up(rows, o, outputs), up(rows, 2 * e, x));
    let gm = Matrix::zeros(gpu, rows, 2, "mulv").unwrap();
    let gdo = Matrix::zeros(gpu, rows, o, "dout").unwrap();
    let gdm = Matrix::zeros(gpu, rows, 2, "dmulv").unwrap();
    let gps = Matrix::zeros(gpu, rows, 3, "per sample").unwrap();
    let gacc = Matrix::zeros(gpu, 1, 4, "accum").unwrap();
    let blocks = TableBlocks::new(gpu, &s.blocks(), e).unwrap();
    let bufs = LossBuffers {
        logits: &go,
        x: &gx,
        mulv: &gm,
        dlogits: &gdo,
        dmulv: &gdm,
        per_sample: &gps,
        accum: &gacc,
    };
    let l = table_loss(gpu, &bufs, &blocks, set).unwrap();
    gpu.run(&l.launches()).unwrap();
    let ps = gps.read(gpu).unwrap();
    (
        (0..rows).map(|r| ps[r * 3]).collect(),
        gdo.read(gpu).unwrap(),
    )
}

/// Per-row reconstruction to 1e-5 relative, gradients to 1e-5 relative + 1e-6, on awkward
/// row counts with padding rows, log-variances past the clamp included.
#[test]
fn table_loss_matches_cpu() {
    for_each_gpu(|gpu| {
        let s = schema();
        let mut rng = Rng::new(71);
        for (case, rows) in [1usize, 2, 7, 33, 65, 129].into_iter().enumerate() {
            let o = s.outputs();
            let (out32, mut out) = rng.vec(rows * o, -4.0, 4.0);
            let mut out32 = out32;
            // One log-variance beyond the clamp per row: no gradient there.
            for r in 0..rows {
                out[r * o + 1] = 25.0;
                out32[r * o + 1] = 25.0;
            }
            let x = records(&mut rng, &s, rows);
            let set = LossSettings {
                valid: rows - rows / 3,
                grad_scale: [1.0, 0.25][case % 2],
                ..Default::default()
            };
            let (recon, grad) = gpu_table_loss(gpu, &s, &out32, &f32s(&x), rows, &set);
            let (want_recon, want_grad) = cpu::loss::table_recon(
                &out,
                &x,
                (rows, o, s.width()),
                &s.blocks(),
                set.valid,
                f64::from(set.grad_scale),
            );
            assert_close(&format!("{rows} rows recon"), &recon, &want_recon, |i| {
                1e-5 * want_recon[i].abs() + 1e-5
            });
            assert_close(&format!("{rows} rows grad"), &grad, &want_grad, |i| {
                1e-5 * want_grad[i].abs() + 1e-6
            });
        }
    });
}

/// The GPU gradient against central differences of the f64 twin's loss.
#[test]
fn table_loss_gradients() {
    for_each_gpu(|gpu| {
        let s = schema();
        let mut rng = Rng::new(73);
        let (rows, o, e) = (3, s.outputs(), s.width());
        let (out32, out) = rng.vec(rows * o, -2.0, 2.0);
        let x = records(&mut rng, &s, rows);
        let set = LossSettings {
            valid: rows,
            ..Default::default()
        };
        let (_, grad) = gpu_table_loss(gpu, &s, &out32, &f32s(&x), rows, &set);
        let h = 1e-5;
        let loss = |v: &[f64]| {
            cpu::loss::table_recon(v, &x, (rows, o, e), &s.blocks(), rows, 1.0)
                .0
                .iter()
                .sum::<f64>()
        };
        let mut v = out.clone();
        for i in 0..v.len() {
            let orig = v[i];
            v[i] = orig + h;
            let up = loss(&v);
            v[i] = orig - h;
            let down = loss(&v);
            v[i] = orig;
            let fd = (up - down) / (2.0 * h);
            let g = f64::from(grad[i]);
            assert!(
                (g - fd).abs() <= 1e-4 * fd.abs() + 1e-4,
                "output {i}: gpu {g} vs finite difference {fd}"
            );
        }
    });
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let p = common::cli::tmp().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Types are inferred (numeric, binary from two values, categorical from strings or few
/// integers) and overridable; statistics come from the training rows; missing cells are
/// masked; the label column becomes labels.
#[test]
fn csv_types_statistics_and_masks() {
    let ages = [30, 50, 0, 70, 21, 34, 45, 62, 28, 39, 55, 48];
    let mut text = String::from("id,age,smoker,city,children,income,outcome\n");
    for (i, age) in ages.iter().enumerate() {
        let age = if i == 2 {
            String::new()
        } else {
            age.to_string()
        };
        let smoker = ["yes", "no"][i % 2];
        let city = ["Oslo", "Rome", "Lima"][i % 3];
        let income = if i == 1 {
            "NA".to_string()
        } else {
            format!("{}.5", 1000 + 37 * i)
        };
        let outcome = if i == 1 { "bad" } else { "ok" };
        text += &format!("{i},{age},{smoker},{city},{},{income},{outcome}\n", i % 4);
    }
    let path = write("people.csv", &text);
    let cells = table::read_cells(&path).unwrap();
    let opts = TableOptions {
        ignore: vec!["id".into()],
        label_column: Some("outcome".into()),
        ..Default::default()
    };
    // Every row but row 2 trains: the statistics are theirs (row 2's age is missing anyway,
    // row 5's is held out).
    let train: Vec<usize> = (0..12).filter(|&i| i != 5).collect();
    let s = table::infer(&path, &cells, &train, &opts).unwrap();
    let mean = train
        .iter()
        .filter(|&&i| i != 2)
        .map(|&i| f64::from(ages[i]))
        .sum::<f64>()
        / 10.0;
    let kinds: Vec<(&str, &Kind)> = s
        .columns
        .iter()
        .map(|c| (c.name.as_str(), &c.kind))
        .collect();
    assert!(
        matches!(kinds[0], ("age", Kind::Numeric { mean: m, .. }) if (*m - mean).abs() < 1e-9),
        "{kinds:?} (mean {mean})"
    );
    assert!(
        matches!(kinds[1], ("smoker", Kind::Binary { .. })),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[2], ("city", Kind::Categorical { levels }) if levels.len() == 3),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[3], ("children", Kind::Categorical { levels }) if levels.len() == 4),
        "few integers: {kinds:?}"
    );
    assert!(
        matches!(kinds[4], ("income", Kind::Numeric { .. })),
        "{kinds:?}"
    );
    assert_eq!(s.ignored, ["id"]);
    assert_eq!(s.label.as_ref().unwrap().1, ["bad", "ok"]);
    let images = table::encode(&path, &cells, &s).unwrap();
    let e = s.width();
    assert_eq!((images.count, images.width), (12, 2 * e));
    assert_eq!(&images.labels.as_deref().unwrap()[..4], &[1u8, 0, 1, 1][..]);
    let rows = images.to_f32();
    let row = |r: usize| &rows[r * 2 * e..(r + 1) * 2 * e];
    // Row 2: age missing (value 0, mask 0); the rest observed.
    assert_eq!((row(2)[0], row(2)[e]), (0.0, 0.0));
    assert_eq!(row(2)[e + 1], 1.0);
    // Row 1: income missing; smoker "no" is level 0, row 0's "yes" level 1.
    assert_eq!(row(1)[e + e - 1], 0.0);
    assert_eq!((row(1)[1], row(0)[1]), (0.0, 1.0));
    // --categorical turns a numeric column into levels.
    let forced = table::infer(
        &path,
        &cells,
        &train,
        &TableOptions {
            categorical: vec!["age".into()],
            ..opts.clone()
        },
    )
    .unwrap();
    assert!(matches!(&forced.columns[0].kind, Kind::Categorical { levels } if levels.len() == 11));
    // A constant column, however it is written ('3.5' throughout; '1', '1.0' and '01'), is
    // centred and not scaled: its variance is rounding error, not a deviation to divide by.
    let mut text = String::from("a,j,k\n");
    for i in 0..30 {
        text += &format!("{}.25,3.5,{}\n", i * 7 % 11, ["1", "1.0", "01"][i % 3]);
    }
    let path = write("constant.csv", &text);
    let cells = table::read_cells(&path).unwrap();
    let all: Vec<usize> = (0..30).collect();
    let s = table::infer(&path, &cells, &all, &TableOptions::default()).unwrap();
    for (column, want) in [(1, 3.5), (2, 1.0)] {
        assert!(
            matches!(s.columns[column].kind, Kind::Numeric { mean, std } if mean == want && std == 1.0),
            "{:?}",
            s.columns[column]
        );
    }
    // A later cell far outside the training values is clipped to 1e6 deviations, so its
    // losses stay finite.
    let later = write("constant-later.csv", "a,j,k\n1e300,3.5,1\n-1e300,3.5,1\n");
    let cells = table::read_cells(&later).unwrap();
    let row = table::encode(&later, &cells, &s).unwrap().to_f32();
    let e = s.width();
    assert_eq!((row[0], row[2 * e]), (1e6, -1e6));
}

/// A ragged row, a word in a numeric column and a category unknown to the schema are
/// one-line errors naming the file, the row and the column.
#[test]
fn csv_errors_name_file_row_and_column() {
    let ragged = write("ragged.csv", "a,b\n1,2\n3\n4,5\n");
    let err = table::read_cells(&ragged).err().unwrap().to_string();
    assert!(
        err.contains("ragged.csv") && err.contains("line 3"),
        "{err}"
    );
    let good = write(
        "good.csv",
        "x,colour\n1.5,red\n2.5,blue\n3.5,green\n4.25,red\n",
    );
    let cells = table::read_cells(&good).unwrap();
    let s = table::infer(&good, &cells, &[0, 1, 2, 3], &TableOptions::default()).unwrap();
    let word = write("word.csv", "x,colour\n1.5,red\nlots,blue\n");
    let err = table::encode(&word, &table::read_cells(&word).unwrap(), &s)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("word.csv")
            && err.contains("line 3")
            && err.contains("'x'")
            && err.contains("'lots' is not a finite number"),
        "{err}"
    );
    // Blank lines and CRLF line ends count as the file's lines do.
    let spaced = write("spaced.csv", "x,colour\r\n1.5,red\r\n\r\nlots,blue\r\n");
    let err = table::encode(&spaced, &table::read_cells(&spaced).unwrap(), &s)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("line 4, column 'x'"), "{err}");
    let unknown = write("unknown.csv", "x,colour\n1.5,purple\n2,red\n");
    let err = table::encode(&unknown, &table::read_cells(&unknown).unwrap(), &s)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown.csv")
            && err.contains("line 2")
            && err.contains("'colour'")
            && err.contains("unknown category 'purple'"),
        "{err}"
    );
    let options_err = |options: TableOptions| {
        table::infer(&good, &cells, &[0], &options)
            .err()
            .unwrap()
            .to_string()
    };
    let missing = options_err(TableOptions {
        ignore: vec!["nope".into()],
        ..Default::default()
    });
    assert!(missing.contains("no column 'nope'"), "{missing}");
    let roles = options_err(TableOptions {
        ignore: vec!["colour".into()],
        categorical: vec!["colour".into()],
        ..Default::default()
    });
    assert!(roles.contains("two roles"), "{roles}");
    let infer_err = |name: &str, text: &str| {
        let p = write(name, text);
        let cells = table::read_cells(&p).unwrap();
        let rows: Vec<usize> = (0..cells.rows.len()).collect();
        table::infer(&p, &cells, &rows, &TableOptions::default())
            .err()
            .unwrap()
            .to_string()
    };
    let err = infer_err("huge.csv", "x,y\n1e300,1\n-1e300,2\n5e299,3\n");
    assert!(err.contains("'x'") && err.contains("too large"), "{err}");
    let err = infer_err("semi.csv", "a;b\n1;2\n3;4\n");
    assert!(err.contains("comma-separated"), "{err}");
}

/// The shipped WDBC table end to end: trained on benign rows only, the model scores the
/// held-out rows; malignant ones stand out (AUROC well above chance), the class column
/// carries the label names, the schema with its training statistics is saved and reused,
/// and image commands refuse the model.
#[test]
fn wdbc_benign_vs_malignant() {
    use common::cli::{fails_with, json, number, tmp};
    let wdbc = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/wdbc/wdbc.csv");
    let run = tmp().join("wdbc").display().to_string();
    let split = ["--data", wdbc, "--test-fraction", "0.3"];
    let mut args = vec![
        "train",
        "--out",
        &run,
        "--label-column",
        "diagnosis",
        "--classes",
        "0",
    ];
    args.extend_from_slice(&split);
    args.extend_from_slice(&[
        "--hidden",
        "64",
        "--latent",
        "4",
        "--batch-size",
        "32",
        "--epochs",
        "40",
        "--lr",
        "2e-3",
        "-q",
    ]);
    let epochs = json(&args);
    assert_eq!(epochs.len(), 40);
    let first = number(&epochs[0], &["test", "total"]);
    let last = number(&epochs[39], &["test", "total"]);
    assert!(
        last < first - 10.0,
        "the test loss falls: {first} -> {last}"
    );
    let cfg = common::cli::last_model(&run).with_file_name("config.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    let radius = &cfg["model"]["table"]["columns"][0];
    assert_eq!(radius["name"], "mean radius");
    assert_eq!(radius["kind"], "numeric");
    assert_eq!(
        cfg["train"]["class_names"],
        serde_json::json!(["benign", "malignant"])
    );

    let out = tmp().join("wdbc-scores.csv").display().to_string();
    let mut score = vec![
        "score",
        "--model",
        &run,
        "--normal-classes",
        "0",
        "--out",
        &out,
    ];
    score.extend_from_slice(&split);
    let s = &json(&score)[0];
    let auroc = number(s, &["auroc"]);
    assert!(auroc > 0.95, "benign vs malignant AUROC {auroc}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1 + 171);
    assert!(
        text.contains(",malignant") && text.contains(",benign"),
        "{text:.300}"
    );

    // The IWAE bound scores rows too, and agrees on which are anomalous.
    let mut iwae = score.clone();
    iwae.extend_from_slice(&["--metric", "iwae", "--iwae-k", "16"]);
    let auroc_iwae = number(&json(&iwae)[0], &["auroc"]);
    assert!(auroc_iwae > 0.95, "IWAE AUROC {auroc_iwae}");
    // New rows are standardized with the run's statistics, not their own: the same rows
    // with one column shifted by 100 (which standardizing afresh would undo) score far worse.
    let original = std::fs::read_to_string(wdbc).unwrap();
    let shifted: Vec<String> = original
        .lines()
        .enumerate()
        .map(|(i, line)| match (i, line.split_once(',')) {
            (0, _) | (_, None) => line.to_string(),
            (_, Some((radius, rest))) => {
                format!("{},{rest}", radius.parse::<f64>().unwrap() + 100.0)
            }
        })
        .collect();
    let moved = tmp().join("wdbc-shifted.csv");
    std::fs::write(&moved, shifted.join("\n")).unwrap();
    let moved = moved.display().to_string();
    let mean = |data: &str| {
        let mut args = vec![
            "score",
            "--model",
            &run,
            "--data",
            data,
            "--test-fraction",
            "0.3",
        ];
        args.extend_from_slice(&["--out", &out]);
        json(&args);
        let text = std::fs::read_to_string(&out).unwrap();
        let scores: Vec<f64> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
            .collect();
        scores.iter().sum::<f64>() / scores.len() as f64
    };
    let (before, after) = (mean(wdbc), mean(&moved));
    assert!(
        after > before + 1000.0,
        "mean score {before} -> {after} after the shift"
    );

    // A row whose value is not a number, at scoring time: one line naming row and column.
    let bad = tmp().join("wdbc-bad.csv");
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    lines[5] = lines[5].replacen("20.29", "twenty", 1);
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let bad = bad.display().to_string();
    fails_with(
        &[
            "score",
            "--model",
            &run,
            "--data",
            &bad,
            "--test-fraction",
            "0.3",
        ],
        1,
        &[
            "wdbc-bad.csv",
            "line 6",
            "'mean radius'",
            "'twenty' is not a finite number",
        ],
    );
    fails_with(
        &["reconstruct", "--model", &run],
        1,
        &["trained on a table"],
    );
}

/// Drawn cells follow the decoder's distributions: a numeric cell its Gaussian in the
/// column's units, a binary one its probability, a categorical one its softmax; at
/// temperature 0, the likeliest value.
#[test]
fn drawn_records_follow_the_decoder() {
    let s = Schema {
        columns: vec![
            Column {
                name: "n".into(),
                kind: Kind::Numeric {
                    mean: 10.0,
                    std: 2.0,
                },
            },
            Column {
                name: "b".into(),
                kind: Kind::Binary {
                    levels: ["no".into(), "yes".into()],
                },
            },
            Column {
                name: "c".into(),
                kind: Kind::Categorical {
                    levels: vec!["x".into(), "y".into(), "z".into()],
                },
            },
        ],
        label: None,
        ignored: Vec::new(),
    };
    // Numeric mean 0.5 and variance 0.25 (standardized): 11 and sd 1 in the column's units;
    // P(yes) = 0.75; categories 0.2, 0.3, 0.5.
    let outputs = [
        0.5,
        0.25f32.ln(),
        3f32.ln(),
        0.2f32.ln(),
        0.3f32.ln(),
        0.5f32.ln(),
    ];
    let mut rng = vae_gpu::rng::Rng::new(3);
    let n = 20_000;
    let (mut sum, mut sq, mut yes) = (0.0, 0.0, 0.0);
    let mut cats = [0.0; 3];
    for _ in 0..n {
        let cells = s.cells(&s.draw_encoded(&outputs, &mut rng, 1.0));
        let x: f64 = cells[0].parse().unwrap();
        sum += x;
        sq += x * x;
        yes += f64::from(u8::from(cells[1] == "yes"));
        cats[["x", "y", "z"].iter().position(|&l| l == cells[2]).unwrap()] += 1.0;
    }
    let mean = sum / n as f64;
    let sd = (sq / n as f64 - mean * mean).sqrt();
    assert!(
        (mean - 11.0).abs() < 0.03 && (sd - 1.0).abs() < 0.03,
        "{mean} {sd}"
    );
    assert!((yes / n as f64 - 0.75).abs() < 0.015, "{yes}");
    for (got, want) in cats.iter().zip([0.2, 0.3, 0.5]) {
        assert!((got / n as f64 - want).abs() < 0.015, "{cats:?}");
    }
    let likeliest = s.cells(&s.draw_encoded(&outputs, &mut rng, 0.0));
    assert_eq!(likeliest, vec!["11", "yes", "z"]);
}

/// `sample` on a table model writes records in the table's columns (a conditional model's
/// with the class asked); `quality` compares them with the real records, column by column,
/// and trains the label's classifier on them to test on real records.
#[test]
fn synthetic_records_from_a_table_model() {
    use common::cli::{fails_with, json, number, ok, tmp};
    let wdbc = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/wdbc/wdbc.csv");
    let run = tmp().join("wdbc-cvae").display().to_string();
    ok(&[
        "train",
        "--data",
        wdbc,
        "--label-column",
        "diagnosis",
        "--conditional",
        "--test-fraction",
        "0.3",
        "--hidden",
        "64",
        "--latent",
        "4",
        "--batch-size",
        "32",
        "--epochs",
        "30",
        "--lr",
        "2e-3",
        "--out",
        &run,
        "-q",
    ]);
    let out = tmp().join("synthetic.csv");
    let out_s = out.to_str().unwrap();
    ok(&["sample", "--model", &run, "--count", "25", "--out", out_s]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header = rows.headers().unwrap().clone();
    assert_eq!(header.len(), 31);
    assert_eq!((&header[0], &header[30]), ("mean radius", "diagnosis"));
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 50, "25 of each class");
    for (i, r) in records.iter().enumerate() {
        assert!(r
            .iter()
            .take(30)
            .all(|v| v.parse::<f32>().is_ok_and(f32::is_finite)));
        assert_eq!(&r[30], if i < 25 { "benign" } else { "malignant" });
    }
    // The seed fixes the records.
    let again = tmp().join("synthetic2.csv");
    ok(&[
        "sample",
        "--model",
        &run,
        "--count",
        "25",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(text, std::fs::read_to_string(&again).unwrap());
    fails_with(
        &[
            "sample",
            "--model",
            &run,
            "--out",
            tmp().join("r.png").to_str().unwrap(),
        ],
        1,
        &["r.png", "give --out FILE.csv"],
    );
    // The CSV the run trained on is the user's: no output replaces it.
    fails_with(
        &["sample", "--model", &run, "--out", wdbc],
        1,
        &["wdbc.csv", "the data the model was trained on"],
    );

    let q = &json(&["quality", "--model", &run, "--count", "2000"])[0];
    assert_eq!(q["columns"].as_array().unwrap().len(), 30);
    let radius = &q["columns"][0];
    let (real, generated) = (
        number(radius, &["real", "mean"]),
        number(radius, &["generated", "mean"]),
    );
    assert!(
        (real - generated).abs() < 0.15 * real,
        "mean radius {real} vs {generated}"
    );
    let (synthetic, real) = (
        number(q, &["train_on_synthetic"]),
        number(q, &["train_on_real"]),
    );
    assert!(real > 0.85 && synthetic > 0.75, "{synthetic} vs {real}");
}

/// A missing cell's stored value changes neither the loss nor any gradient.
#[test]
fn masked_cells_change_nothing() {
    for_each_gpu(|gpu| {
        let s = schema();
        let mut rng = Rng::new(79);
        let (rows, o, e) = (5, s.outputs(), s.width());
        let (out32, _) = rng.vec(rows * o, -2.0, 2.0);
        let mut x = records(&mut rng, &s, rows);
        // Row 0: the first numeric cell and the 3-level block are missing.
        let [_, cat_at, _, cat_w] = s.blocks()[2];
        x[e] = 0.0;
        x[e + cat_at as usize..e + (cat_at + cat_w) as usize].fill(0.0);
        let set = LossSettings {
            valid: rows,
            ..Default::default()
        };
        let before = gpu_table_loss(gpu, &s, &out32, &f32s(&x), rows, &set);
        x[0] = 123.0;
        x[cat_at as usize] = 7.0;
        let after = gpu_table_loss(gpu, &s, &out32, &f32s(&x), rows, &set);
        assert_eq!(before, after, "a masked value must not matter");
    });
}

/// Records whose columns depend on each other, with missing cells: `impute` fills every
/// one, and on hidden known cells beats mean and most-common filling.
#[test]
fn impute_fills_records_better_than_mean_and_mode() {
    use common::cli::{json, number, tmp};
    let mut rng = Rng::new(83);
    let mut text = String::from("id,a,b,size,big,note\n");
    for i in 0..600 {
        let a = rng.uniform(-2.0, 2.0);
        let b = 2.0 * a + rng.uniform(-0.3, 0.3);
        let size = ["small", "medium", "large"][((a + 2.0) / 4.0 * 3.0).min(2.0) as usize];
        let big = if a > 0.0 { "yes" } else { "no" };
        let cell = |v: String, rng: &mut Rng| if rng.below(10) == 0 { String::new() } else { v };
        text += &format!(
            "{i},{},{},{},{},x\n",
            cell(format!("{a:.4}"), &mut rng),
            cell(format!("{b:.4}"), &mut rng),
            cell(size.into(), &mut rng),
            cell(big.into(), &mut rng)
        );
    }
    let csv = write("related.csv", &text);
    let csv = csv.to_str().unwrap();
    let run = tmp().join("related").display().to_string();
    json(&[
        "train",
        "--data",
        csv,
        "--ignore",
        "id,note",
        "--out",
        &run,
        "--hidden",
        "32",
        "--latent",
        "2",
        "--batch-size",
        "32",
        "--epochs",
        "40",
        "--lr",
        "3e-3",
        "-q",
    ]);
    let out = tmp().join("related-filled.csv").display().to_string();
    let r = &json(&[
        "impute",
        "--model",
        &run,
        "--data",
        csv,
        "--holdout",
        "0.3",
        "--out",
        &out,
        "-q",
    ])[0];
    let (rmse, rmse0) = (number(r, &["rmse_sd"]), number(r, &["rmse_sd_mean_fill"]));
    let (acc, acc0) = (number(r, &["accuracy"]), number(r, &["accuracy_mode_fill"]));
    assert!(rmse < 0.7 * rmse0, "RMSE {rmse} vs mean filling {rmse0}");
    assert!(
        acc > acc0 + 0.1,
        "accuracy {acc} vs most-common filling {acc0}"
    );
    let filled = table::read_cells(std::path::Path::new(&out)).unwrap();
    let given = table::read_cells(std::path::Path::new(csv)).unwrap();
    assert_eq!(filled.rows.len(), 600);
    for (row, known) in filled.rows.iter().zip(&given.rows) {
        assert!(
            row[1..5].iter().all(|c| !c.is_empty()),
            "a cell left empty: {row:?}"
        );
        assert!(
            ["small", "medium", "large"].contains(&row[3].as_str()),
            "{row:?}"
        );
        // Known cells, those hidden for --holdout included, are written as they were.
        for (f, k) in row.iter().zip(known) {
            assert!(k.is_empty() || f == k, "known cell {k} became {f}");
        }
    }
    // A pixel mask means nothing to a table: refused, not ignored.
    common::cli::fails_with(
        &[
            "impute",
            "--model",
            &run,
            "--data",
            csv,
            "--mask",
            "random:0.5",
        ],
        1,
        &["--mask", "empty ones"],
    );
}

/// The commands that use a model read the run's table and held-out fraction unless told
/// otherwise (so they score the rows it never trained on), and a table model takes only
/// tables.
#[test]
fn later_commands_follow_the_run() {
    use common::cli::{fails_with, json, number, tmp};
    let mut text = String::from("x,y\n");
    for i in 0..100 {
        // Row 57 is the outlier.
        let x = if i == 57 { 1000 } else { i % 13 };
        text += &format!("{x}.5,{}.25\n", i % 7);
    }
    let csv = write("follow.csv", &text);
    let run = tmp().join("follow").display().to_string();
    json(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--test-fraction",
        "0.3",
        "--out",
        &run,
        "--hidden",
        "8",
        "--latent",
        "2",
        "--epochs",
        "1",
        "-q",
    ]);
    let r = &json(&["score", "--model", &run, "-q"])[0];
    assert_eq!(number(r, &["images"]), 30.0, "{r}");
    // --split all scores every record, and `row` leads back to the file: the highest
    // score is the outlier's.
    let scores = tmp().join("follow-scores.csv");
    json(&[
        "score",
        "--model",
        &run,
        "--split",
        "all",
        "--out",
        scores.to_str().unwrap(),
        "-q",
    ]);
    let text = std::fs::read_to_string(&scores).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("index,label,elbo,class,row"));
    let records: Vec<(f64, usize)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect();
    let mut rows: Vec<usize> = records.iter().map(|r| r.1).collect();
    rows.sort_unstable();
    assert_eq!(rows, (0..100).collect::<Vec<_>>());
    let top = records.iter().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
    assert_eq!(top.1, 57, "{text}");
    fails_with(
        &["score", "--model", &run, "--data", &common::cli::data()],
        1,
        &["trained on a table", "CSV"],
    );
}

/// Flags a table cannot use, and a table too wide for the model, are named.
#[test]
fn table_misuse_is_named() {
    use common::cli::{fails_with, tmp};
    let mut text = String::from("x,y\n");
    for i in 0..40 {
        text += &format!("{}.5,{}\n", i % 13, ["a", "b", "c"][i % 3]);
    }
    let csv = write("plain.csv", &text);
    let csv = csv.to_str().unwrap();
    let out = tmp().join("misuse").display().to_string();
    for flag in [["--likelihood", "bernoulli"], ["--noise", "mask:0.5"]] {
        fails_with(
            &["train", "--data", csv, "--out", &out, flag[0], flag[1]],
            1,
            &["--likelihood and --noise are for images"],
        );
    }
    // An id column is one category per row: 2100 of them do not fit.
    let mut text = String::from("id,x\n");
    for i in 0..2100 {
        text += &format!("id{i},{}.5\n", i % 13);
    }
    let wide = write("ids.csv", &text);
    fails_with(
        &["train", "--data", wide.to_str().unwrap(), "--out", &out],
        1,
        &["ids.csv", "encodes to", "at most 2048"],
    );
    assert!(!std::path::Path::new(&out).exists());
}
