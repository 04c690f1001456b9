//! NumPy arrays as data: every layout trains; f32 data reaches the model unquantized;
//! labels and the held-out fraction; a truncated or malformed array is a one-line error
//! naming the file; past the GPU budget the array is streamed from disk with the same run.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{data, fails_with, json, number, tmp};
use vae_gpu::data::Dtype;

/// Writes a version 1 .npy file.
fn write_npy(name: &str, descr: &str, shape: &[usize], payload: &[u8]) -> PathBuf {
    let mut bytes = vae_gpu::data::npy::header_bytes(descr, shape);
    bytes.extend_from_slice(payload);
    let path = tmp().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// 300 real images of the bundled test split.
fn images() -> vae_gpu::Images {
    vae_gpu::data::load(Some(Path::new(&data())), &Default::default())
        .unwrap()
        .test
        .take(300)
}

fn train(data: &Path, out: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = tmp().join(out);
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--hidden",
        "32",
        "--latent",
        "4",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--seed",
        "5",
        "-q",
    ];
    args.extend_from_slice(extra);
    json(&args)
}

#[test]
fn every_layout_trains() {
    let imgs = images();
    let n = imgs.count;
    // The values the GPU makes of u8 pixels (times the f32 reciprocal of 255).
    let values: Vec<f32> = imgs
        .pixels
        .iter()
        .map(|&p| f32::from(p) * (1.0 / 255.0))
        .collect();
    let u8_3d = write_npy("u8.npy", "|u1", &[n, 28, 28], &imgs.pixels);
    let u8_4d = write_npy("u8c.npy", "|u1", &[n, 28, 28, 1], &imgs.pixels);
    let f32_3d = write_npy("f32.npy", "<f4", &[n, 28, 28], &Dtype::F32.bytes(&values));
    // Standardized values: real-valued, negative, no 8-bit pixel holds them.
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    let z: Vec<f32> = values.iter().map(|v| (v - mean) * 3.0).collect();
    let f32_2d = write_npy("z.npy", "<f4", &[n, 784], &Dtype::F32.bytes(&z));
    let labels: Vec<u8> = imgs
        .labels
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|&l| i64::from(l).to_le_bytes())
        .collect();
    let labels = write_npy("labels.npy", "<i8", &[n], &labels);

    // A run's held-out fraction stays with its array: other data, here IDX files, is read
    // with its own split.
    train(&u8_3d, "u8-split", &["--test-fraction", "0.2"]);
    json(&[
        "eval",
        "--model",
        tmp().join("u8-split").to_str().unwrap(),
        "--data",
        &data(),
        "--limit",
        "10",
        "-q",
    ]);
    let a = train(&u8_3d, "u8", &[]);
    let b = train(&u8_4d, "u8c", &[]);
    assert_eq!(
        a[0]["train"], b[0]["train"],
        "[N,H,W] and [N,H,W,1] are the same data"
    );
    // Every f32 value reaches the model as it is: the same values as the u8 pixels give
    // the same run (under the same likelihood; f32 data defaults to the Gaussian).
    let f = train(&f32_3d, "f32", &["--likelihood", "bernoulli"]);
    assert_eq!(a[0]["train"], f[0]["train"], "f32 data as stored");
    assert_eq!(a[0]["test"], f[0]["test"], "f32 data as stored");
    let zrun = train(
        &f32_2d,
        "z",
        &[
            "--test-fraction",
            "0.2",
            "--labels",
            labels.to_str().unwrap(),
        ],
    );
    assert!(number(&zrun[0], &["test", "total"]).is_finite());
    let last = common::cli::last_model(tmp().join("z").to_str().unwrap());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.with_file_name("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model"]["likelihood"], "gaussian", "{cfg}");
    assert_eq!(cfg["train"]["test_fraction"], 0.2);
    // A run on an array resumes with the array, its labels and its split.
    let resumed = json(&[
        "train",
        "--resume",
        tmp().join("z").to_str().unwrap(),
        "--epochs",
        "2",
        "-q",
    ]);
    assert_eq!(number(&resumed[0], &["epoch"]), 2.0);
    // The labels reach the codes: embed writes them per row of the test split (60 rows).
    let csv = tmp().join("z.csv");
    let model = tmp().join("z");
    json(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        f32_2d.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--test-fraction",
        "0.2",
        "--out",
        csv.to_str().unwrap(),
        "-q",
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    // Without --data, or with the run's own array, its labels and split are read.
    let own = tmp().join("z-own.csv");
    for data in [None, Some(f32_2d.to_str().unwrap())] {
        let mut args = vec![
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--out",
            own.to_str().unwrap(),
            "-q",
        ];
        args.extend(data.map(|d| ["--data", d]).into_iter().flatten());
        json(&args);
        assert_eq!(std::fs::read_to_string(&own).unwrap(), text, "{data:?}");
    }
    assert_eq!(
        text.lines().count(),
        1 + 60,
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(
        text.lines().next().unwrap().contains("label"),
        "{text:.200}"
    );
}

#[test]
fn streamed_array_equals_resident() {
    let imgs = images();
    let path = write_npy("stream.npy", "|u1", &[imgs.count, 28, 28], &imgs.pixels);
    let resident = train(&path, "resident", &[]);
    let streamed = train(&path, "streamed", &["--gpu-data-mib", "0"]);
    assert_eq!(resident[0]["train"], streamed[0]["train"]);
    assert_eq!(resident[0]["test"], streamed[0]["test"]);
    // An array of the same shape with other contents is not the data the run trained on:
    // a resume refuses it (on disk and in memory alike).
    let inverted: Vec<u8> = imgs.pixels.iter().map(|p| 255 - p).collect();
    write_npy("stream.npy", "|u1", &[imgs.count, 28, 28], &inverted);
    for (run, budget) in [("resident", "256"), ("streamed", "0")] {
        let run = tmp().join(run).display().to_string();
        fails_with(
            &[
                "train",
                "--resume",
                &run,
                "--epochs",
                "2",
                "--gpu-data-mib",
                budget,
                "-q",
            ],
            1,
            &["stream.npy", "not what the run trained on"],
        );
    }
}

#[test]
fn bad_arrays_are_one_line_errors() {
    let imgs = images();
    let whole = write_npy("whole.npy", "|u1", &[imgs.count, 28, 28], &imgs.pixels);
    let bytes = std::fs::read(&whole).unwrap();
    let cut = tmp().join("cut.npy");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let out = tmp().join("bad");
    let run = |path: &Path, extra: &[&str], needles: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fails_with(&args, 1, needles);
    };
    run(&cut, &[], &["cut.npy", "truncated"]);
    run(&cut, &["--gpu-data-mib", "0"], &["cut.npy", "truncated"]);
    let header_only = tmp().join("header.npy");
    std::fs::write(&header_only, &bytes[..20]).unwrap();
    run(
        &header_only,
        &[],
        &["header.npy", "truncated in its header"],
    );
    let text = tmp().join("text.npy");
    std::fs::write(&text, "1,2,3\n").unwrap();
    run(&text, &[], &["text.npy", "not a NumPy .npy file"]);
    let f64s = write_npy("f64.npy", "<f8", &[2, 3], &[0u8; 48]);
    run(&f64s, &[], &["f64.npy", "<f8", "uint8 or float32"]);
    let cube = write_npy("cube.npy", "|u1", &[2, 2, 2, 2, 2], &[0u8; 32]);
    run(&cube, &[], &["cube.npy", "shape [2, 2, 2, 2, 2]"]);
    // Dimensions whose product wraps to zero in 64 bits are an overflow, not an empty array.
    let wrap = write_npy("wrap.npy", "|u1", &[2, 1 << 32, 1 << 32], &[]);
    run(&wrap, &[], &["wrap.npy", "overflows"]);
    // A non-finite value is named by its row of the file, resident or streamed.
    let mut values = vec![0.5f32; 40 * 2];
    values[2 * 33 + 1] = f32::NAN;
    let nan = write_npy("nan.npy", "<f4", &[40, 2], &Dtype::F32.bytes(&values));
    run(&nan, &[], &["nan.npy", "row 33, value 1 is NaN"]);
    run(
        &nan,
        &["--gpu-data-mib", "0"],
        &["nan.npy", "row 33, value 1 is NaN"],
    );
    let five = write_npy("five.npy", "<f4", &[40, 2], &Dtype::F32.bytes(&[5.0; 80]));
    run(
        &five,
        &["--likelihood", "bernoulli"],
        &["values in [0, 1]", "--likelihood gaussian"],
    );
    run(
        Path::new(&data()),
        &["--test-fraction", "0.5"],
        &["apply to .npy arrays"],
    );
    let labels = write_npy("short-labels.npy", "<i8", &[3], &[0u8; 24]);
    run(
        &whole,
        &["--labels", labels.to_str().unwrap()],
        &["short-labels.npy", "expected [300]"],
    );
    run(&whole, &["--size", "14"], &["whole.npy", "--size"]);
    assert!(!out.exists(), "failed runs leave no directory");
}
