//! Sequence models from the command line: train --arch gru on the bundled molecules and on a
//! text file, sample with MOSES's metrics, resume, reproducibility, and bad input.

mod common;

use common::cli::{fails_with, json, ok, tmp};

fn molecules() -> String {
    format!("{}/assets/moses/smiles.csv.gz", env!("CARGO_MANIFEST_DIR"))
}

/// A tiny model's flags: quick on any adapter.
const TINY: [&str; 14] = [
    "--arch",
    "gru",
    "--limit",
    "96",
    "--batch-size",
    "32",
    "--hidden",
    "16,24",
    "--latent",
    "4",
    "--decoder-layers",
    "2",
    "--test-fraction",
    "0.002",
];

fn train(out: &str, epochs: &str, extra: &[&str]) -> String {
    let data = molecules();
    let mut args = vec!["train", "--data", &data, "--out", out, "--epochs", epochs];
    args.extend(TINY);
    args.extend(extra);
    ok(&args)
}

#[test]
fn train_sample_resume() {
    let run = tmp().join("gru");
    let run = run.to_str().unwrap();
    train(run, "2", &[]);
    let ck = std::path::Path::new(run).join("checkpoint-0002");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "sequence.json",
    ] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    // The same seed gives the same model, bit for bit.
    let again = tmp().join("gru-again");
    train(again.to_str().unwrap(), "2", &[]);
    let bytes =
        |d: &std::path::Path| std::fs::read(d.join("checkpoint-0002/model.safetensors")).unwrap();
    assert_eq!(
        bytes(std::path::Path::new(run)),
        bytes(&again),
        "same seed, same model"
    );
    // Sampling: one line per sequence, MOSES's metrics.
    let out = tmp().join("molecules.txt");
    let r = json(&[
        "sample",
        "--model",
        run,
        "--count",
        "40",
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = r.last().unwrap();
    assert_eq!(r["sequences"], 40);
    for key in ["valid", "unique", "novel"] {
        let v = r[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 40);
    // A resumed run keeps its settings.
    fails_with(
        &["train", "--resume", run, "--epochs", "3", "--hidden", "8"],
        1,
        &["--hidden", "keeps its settings"],
    );
    fails_with(
        &["train", "--resume", run, "--arch", "mlp"],
        1,
        &["--arch mlp", "sequence model"],
    );
    // Resuming continues to the new total.
    ok(&["train", "--resume", run, "--epochs", "3"]);
    assert!(std::path::Path::new(run)
        .join("checkpoint-0003/sequence.json")
        .is_file());
    // The encoder's commands: reconstructions side by side, a path between two strings,
    // scores per line (a token the model lacks is an error naming the line).
    let rec = tmp().join("rec.txt");
    let r = json(&[
        "reconstruct",
        "--model",
        run,
        "--count",
        "3",
        "--out",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(r.last().unwrap()["sequences"], 3);
    let rec = std::fs::read_to_string(&rec).unwrap();
    assert_eq!(rec.lines().filter(|l| l.contains('\t')).count(), 3, "{rec}");
    let path = tmp().join("path.txt");
    let r = json(&[
        "interpolate",
        "--model",
        run,
        "--from",
        "CCO",
        "--to",
        "c1ccccc1",
        "--count",
        "4",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(r.last().unwrap()["path"].as_array().unwrap().len(), 4);
    let lines = tmp().join("score.txt");
    std::fs::write(&lines, "CCO\nc1ccccc1\nCC(=O)Nc1ccc(O)cc1\n").unwrap();
    let scores = tmp().join("scores.csv");
    let r = json(&[
        "score",
        "--model",
        run,
        "--data",
        lines.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
    ]);
    assert_eq!(r.last().unwrap()["sequences"], 3);
    let csv = std::fs::read_to_string(&scores).unwrap();
    assert!(
        csv.starts_with("line,sequence,recon,kl,score\n1,\"CCO\","),
        "{csv}"
    );
    let latents = tmp().join("latents.csv");
    let r = json(&[
        "embed",
        "--model",
        run,
        "--data",
        lines.to_str().unwrap(),
        "--out",
        latents.to_str().unwrap(),
    ]);
    assert_eq!(r.last().unwrap()["latent"], 4);
    let csv = std::fs::read_to_string(&latents).unwrap();
    assert!(
        csv.starts_with("line,sequence,mu_0,mu_1,mu_2,mu_3,logvar_0"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        4,
        "a header and three sequences: {csv}"
    );
    // The codes of a file of strings, quantized into a codes file, and back to strings: the
    // count encode says come back exactly is what decode gives.
    let codes = tmp().join("molecules.codes").display().to_string();
    let input = lines.to_str().unwrap();
    let r = json(&[
        "encode", "--model", run, "--data", input, "--bits", "32", "--out", &codes,
    ]);
    let exact = r.last().unwrap()["exact"].as_u64().unwrap();
    assert_eq!(r.last().unwrap()["sequences"], 3);
    let decoded = tmp().join("decoded.txt");
    let r = json(&[
        "decode",
        "--model",
        run,
        &codes,
        "--out",
        decoded.to_str().unwrap(),
    ]);
    assert_eq!(r.last().unwrap()["sequences"], 3);
    let back = std::fs::read_to_string(&decoded).unwrap();
    let originals = std::fs::read_to_string(&lines).unwrap();
    let same = back
        .lines()
        .zip(originals.lines())
        .filter(|(a, b)| a == b)
        .count();
    assert_eq!(same as u64, exact, "{back}");
    let png = tmp().join("decoded.png").display().to_string();
    fails_with(
        &["decode", "--model", run, &codes, "--out", &png],
        1,
        &["decoded.png", "text file"],
    );
    fails_with(
        &[
            "encode", "--model", run, "--split", "train", "--out", &codes,
        ],
        1,
        &["--split train", "sequence model"],
    );
    std::fs::write(&lines, "CCO\nCCXO\n").unwrap();
    fails_with(
        &["embed", "--model", run, "--data", lines.to_str().unwrap()],
        1,
        &["line 2", "'X'"],
    );
    fails_with(
        &[
            "score",
            "--model",
            run,
            "--data",
            lines.to_str().unwrap(),
            "--out",
            scores.to_str().unwrap(),
        ],
        1,
        &["score.txt", "line 2", "'X'"],
    );
    // eval: the loss per sequence and the importance-weighted bound, tighter than the
    // one-sample loss on average.
    std::fs::write(&lines, "CCO\nc1ccccc1\nCC(=O)Nc1ccc(O)cc1\n").unwrap();
    let r = json(&["eval", "--model", run, "--data", input, "--iwae-k", "16"]);
    let last = r.last().unwrap();
    assert_eq!(last["sequences"], 3);
    let (loss, bound) = (
        last["test"]["total"].as_f64().unwrap(),
        last["iwae_bound"].as_f64().unwrap(),
    );
    assert!(
        bound.is_finite() && bound > 0.0 && bound < loss + 1.0,
        "bound {bound}, loss {loss}"
    );
    // The rest refuse a sequence model by name.
    fails_with(&["manifold", "--model", run], 1, &["a sequence model"]);
}

#[test]
fn text_lines_with_characters() {
    let data = tmp().join("lines.txt");
    let lines: Vec<String> = (0..60)
        .map(|i| format!("word {i} and more {}", i * 7))
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    // A tiny character model of the lines into `name`; its model file's bytes.
    let train = |name: &str, extra: &[&str]| {
        let d = tmp().join(name);
        let mut args = vec![
            "train",
            "--arch",
            "gru",
            "--data",
            data.to_str().unwrap(),
            "--tokens",
            "chars",
            "--out",
            d.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--hidden",
            "8",
            "--latent",
            "2",
            "--decoder-layers",
            "1",
            "--test-fraction",
            "0.2",
        ];
        args.extend(extra);
        ok(&args);
        std::fs::read(d.join("checkpoint-0001/model.safetensors")).unwrap()
    };
    let plain = train("text", &[]);
    let run = tmp().join("text");
    // Word dropout changes the model, reproducibly.
    let dropped = [
        train("drop-a", &["--word-dropout", "0.5"]),
        train("drop-b", &["--word-dropout", "0.5"]),
    ];
    assert_eq!(dropped[0], dropped[1], "the same seed drops the same words");
    assert_ne!(dropped[0], plain, "word dropout changes training");
    let out = tmp().join("text-samples.txt");
    let r = json(&[
        "sample",
        "--model",
        run.to_str().unwrap(),
        "--count",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        r.last().unwrap().get("valid").is_none(),
        "no chemistry for text"
    );
}

#[test]
fn bad_sequence_input() {
    let file = |name: &str, text: &str| {
        let p = tmp().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let train_on = |data: &str, extra: &[&str], needles: &[&str]| {
        let out = tmp().join(format!("bad-{}", needles[0].len()));
        let mut args = vec![
            "train",
            "--arch",
            "gru",
            "--data",
            data,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        fails_with(&args, 1, needles);
    };
    let two_columns = file("two.csv", "id,smi\n1,CCO\n2,CCN\n3,CCC\n");
    train_on(
        &two_columns,
        &[],
        &["two.csv", "--sequence-column", "id, smi"],
    );
    train_on(
        &two_columns,
        &["--sequence-column", "SMILES"],
        &["no column 'SMILES'"],
    );
    train_on(
        &file("empty.txt", "CCO\n\nCCN\nCCC\n"),
        &[],
        &["empty.txt", "line 2 is empty"],
    );
    train_on(
        &file("long.txt", "CCO\nCCCCCCCCCC\nCCN\n"),
        &["--max-length", "5", "--strict"],
        &["long.txt", "line 2", "--max-length 5"],
    );
    train_on(
        &file("ring.txt", "CCO\nC[nH\nCCN\n"),
        &[],
        &["ring.txt", "line 2", "never closed"],
    );
    train_on(
        &molecules(),
        &["--conv-channels", "8"],
        &["--conv-channels", "sequence model"],
    );
    train_on(
        &molecules(),
        &["--max-loss-ratio", "3"],
        &["--max-loss-ratio", "sequence model"],
    );
    fails_with(
        &["train", "--arch", "gru", "--print-arch"],
        1,
        &["--print-arch", "sequence model"],
    );
    let out = tmp().join("mlp-flag");
    fails_with(
        &[
            "train",
            "--sequence-column",
            "SMILES",
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
        ],
        1,
        &["--sequence-column", "sequence model"],
    );
}
