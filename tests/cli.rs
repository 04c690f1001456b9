//! The command line end to end on the bundled Fashion-MNIST subset with a tiny model:
//! train, resume (equal to a straight run), sample, reconstruct, eval, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::cli::{assert_grid, data, fails, json, last_model, number, ok, run, tmp};

use vae_gpu::io::safetensors;

const TINY: [&str; 12] = [
    "--limit",
    "640",
    "--hidden",
    "32",
    "--latent",
    "4",
    "--batch-size",
    "64",
    "--seed",
    "3",
    "--quiet",
    "--lr=2e-3",
];

/// `train` arguments for a tiny run of `epochs` epochs into `out`, with TINY's values of
/// the flags in `set` replaced.
fn tiny_args<'a>(
    d: &'a str,
    out: &'a str,
    epochs: &'a str,
    set: &[(&str, &'a str)],
) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", d, "--epochs", epochs, "--out", out];
    args.extend(TINY);
    for (flag, value) in set {
        let i = args.iter().position(|a| a == flag).expect("a flag of TINY");
        args[i + 1] = value;
    }
    args
}

/// A trained tiny model shared by the tests (trained once per test binary).
fn trained() -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = tmp().join("straight").display().to_string();
        let d = data();
        let epochs = json(&tiny_args(&d, &out, "2", &[]));
        assert_eq!(epochs.len(), 2, "one result per epoch: {epochs:?}");
        assert_eq!(number(&epochs[1], &["epoch"]), 2.0);
        out
    })
    .clone()
}

fn tensors(run: &str) -> Vec<safetensors::Tensor> {
    safetensors::load(&last_model(run))
        .unwrap()
        .into_values()
        .collect()
}

#[test]
fn train_writes_a_complete_run() {
    let run = trained();
    let checkpoint = Path::new(&run).join("checkpoint-0002");
    for f in ["model.safetensors", "optimizer.safetensors", "config.json"] {
        assert!(checkpoint.join(f).exists(), "{f} missing");
    }
    for f in ["metrics.jsonl", "loss.png"] {
        assert!(Path::new(&run).join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(Path::new(&run).join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let names: Vec<String> = tensors(&run)
        .into_iter()
        .map(|t| format!("{} {:?}", t.name, t.shape))
        .collect();
    for want in [
        "fc1.weight [32, 784]",
        "fc21.weight [4, 32]",
        "fc22.bias [4]",
        "fc3.weight [32, 4]",
        "fc4.weight [784, 32]",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

#[test]
fn resumed_run_equals_straight_run() {
    let straight = trained();
    let out = tmp().join("resumed").display().to_string();
    let d = data();
    ok(&tiny_args(&d, &out, "1", &[]));
    let mut args = vec![
        "train", "--data", &d, "--epochs", "2", "--resume", &out, "--quiet",
    ];
    args.extend(&TINY[..2]);
    ok(&args);
    for (a, b) in tensors(&straight).iter().zip(tensors(&out)) {
        assert_eq!(a.name, b.name);
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{}: {x} vs {y}",
                a.name
            );
        }
    }
}

#[test]
fn sample_reconstruct_eval() {
    let run = trained();
    let grid = format!("{run}/grid.png");
    ok(&[
        "sample", "--model", &run, "--count", "10", "--cols", "5", "--out", &grid,
    ]);
    assert_grid(&grid, 5, 2, 56);
    let sep = format!("{run}/separate");
    ok(&[
        "sample",
        "--model",
        &run,
        "--count",
        "300",
        "--separate",
        &sep,
    ]);
    assert_eq!(std::fs::read_dir(&sep).unwrap().count(), 300);
    let d = data();
    ok(&["reconstruct", "--model", &run, "--data", &d, "--count", "4"]);
    assert!(Path::new(&run).join("reconstruction.png").exists());
    let result = &json(&[
        "eval", "--model", &run, "--data", &d, "--iwae-k", "8", "--limit", "20",
    ])[0];
    let (elbo, iwae) = (
        number(result, &["test", "total"]),
        number(result, &["iwae_bound"]),
    );
    assert!(
        iwae < elbo + 1.0 && iwae > 0.5 * elbo,
        "IWAE {iwae} should be at most about the loss {elbo}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    fails(
        &["train", "--data", "/nonexistent/dir", "--quiet"],
        "/nonexistent/dir: does not exist",
    );
    fails(&["train", "--latent", "0"], "latent");
    fails(&["train", "--lr=-1", "--quiet"], "--lr");
    let run = trained();
    let d = data();
    fails(
        &["train", "--data", &d, "--out", &run, "--quiet"],
        "already holds a model",
    );
    let broken = tmp().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(
        Path::new(&run).join("checkpoint-0002/config.json"),
        broken.join("config.json"),
    )
    .unwrap();
    std::fs::write(broken.join("model.safetensors"), b"\x10\0\0\0\0\0\0\0{").unwrap();
    fails(
        &["sample", "--model", broken.to_str().unwrap()],
        "model.safetensors",
    );
    // The run that was there is untouched by the failed attempts.
    assert_eq!(tensors(&run).len(), 10);
}

/// An RGB image folder written by the test (a fresh one per `name`): two class
/// subfolders and one corrupt file.
fn image_folder(name: &str) -> PathBuf {
    let dir = tmp().join(name);
    for class in ["circles", "squares"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
    }
    for i in 0..30u32 {
        let class = if i % 2 == 0 { "circles" } else { "squares" };
        let img = image::RgbImage::from_fn(8, 8, |x, y| {
            let inside = if i % 2 == 0 {
                (x as i32 - 4).pow(2) + (y as i32 - 4).pow(2) < 9
            } else {
                (2..6).contains(&x) && (2..6).contains(&y)
            };
            if inside {
                image::Rgb([200, (i * 8) as u8, 40])
            } else {
                image::Rgb([10, 10, 10 + i as u8])
            }
        });
        img.save(dir.join(class).join(format!("{i:02}.png")))
            .unwrap();
    }
    std::fs::write(dir.join("squares/broken.png"), b"not a png").unwrap();
    dir
}

#[test]
fn trains_on_an_rgb_image_folder() {
    let dir = image_folder("folder");
    let d = dir.display().to_string();
    let out = tmp().join("rgb").display().to_string();
    let args = [
        "train",
        "--data",
        &d,
        "--channels",
        "3",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--batch-size",
        "8",
        "--quiet",
    ];
    let mut strict = args.to_vec();
    strict.push("--strict");
    fails(&strict, "broken.png");
    let mut a = args.to_vec();
    a.extend(["--out", &out]);
    let o = run(&a);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("skipped 1 unreadable"),
        "warning expected"
    );
    let grid = format!("{out}/s.png");
    ok(&["sample", "--model", &out, "--count", "4", "--out", &grid]);
    assert_grid(&grid, 2, 2, 56);
    // An image of another size needs --size.
    image::RgbImage::new(5, 7)
        .save(dir.join("circles/odd.png"))
        .unwrap();
    fails(&args, "pass --size");
    let out2 = tmp().join("rgb-resized").display().to_string();
    let mut resized = args.to_vec();
    resized.extend(["--size", "8", "--out", &out2]);
    ok(&resized);
}

#[test]
fn conv_model_end_to_end() {
    let d = data();
    let out = tmp().join("conv").display().to_string();
    let epochs = json(&[
        "train",
        "--arch",
        "conv",
        "--conv-channels",
        "4,8",
        "--data",
        &d,
        "--limit",
        "256",
        "--latent",
        "3",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--out",
        &out,
        "--quiet",
    ]);
    assert_eq!(number(&epochs[1], &["epoch"]), 2.0, "{epochs:?}");
    let names: Vec<String> = tensors(&out)
        .into_iter()
        .map(|t| format!("{} {:?}", t.name, t.shape))
        .collect();
    for want in [
        "conv1.weight [4, 1, 4, 4]",
        "conv2.weight [8, 4, 4, 4]",
        "fc_enc.weight [6, 392]",
        "fc_dec.weight [392, 3]",
        "deconv2.weight [8, 4, 4, 4]",
        "deconv1.weight [4, 1, 4, 4]",
        "deconv1.bias [1]",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let grid = format!("{out}/grid.png");
    ok(&[
        "sample", "--model", &out, "--count", "6", "--cols", "3", "--out", &grid,
    ]);
    assert_grid(&grid, 3, 2, 56);
    ok(&["reconstruct", "--model", &out, "--data", &d, "--count", "5"]);
    let result = &json(&[
        "eval", "--model", &out, "--data", &d, "--iwae-k", "4", "--limit", "10",
    ])[0];
    assert!(number(result, &["iwae_bound"]) > 0.0, "{result}");
    // Resuming continues the conv run.
    ok(&[
        "train", "--resume", &out, "--data", &d, "--limit", "256", "--epochs", "3", "--quiet",
    ]);
    assert_eq!(
        std::fs::read_to_string(Path::new(&out).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn conv_model_on_an_rgb_folder() {
    let dir = image_folder("conv-folder").display().to_string();
    let out = tmp().join("conv-rgb").display().to_string();
    let base = [
        "train",
        "--arch",
        "conv",
        "--conv-channels",
        "4,8",
        "--data",
        &dir,
        "--channels",
        "3",
        "--latent",
        "2",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--quiet",
    ];
    // 10 does not divide by 4.
    let mut bad = base.to_vec();
    bad.extend(["--size", "10"]);
    fails(&bad, "must divide by 4");
    let mut good = base.to_vec();
    good.extend(["--size", "8", "--out", &out]);
    ok(&good);
    let grid = format!("{out}/s.png");
    ok(&["sample", "--model", &out, "--count", "4", "--out", &grid]);
    assert_eq!(image::open(&grid).unwrap().color(), image::ColorType::Rgb8);
}

/// A checkpoint holding a NaN weight (as a diverged run elsewhere might write) is refused
/// by --resume, naming the file and tensor, and is left as it was.
#[test]
fn a_checkpoint_with_nan_weights_is_refused_and_left_alone() {
    let d = data();
    let out = tmp().join("nan").display().to_string();
    ok(&tiny_args(&d, &out, "1", &[]));
    let path = last_model(&out);
    let mut t = tensors(&out);
    t.iter_mut().find(|t| t.name == "fc4.bias").unwrap().data[0] = f32::NAN;
    safetensors::save(&path, &t).unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut args = vec![
        "train", "--data", &d, "--epochs", "2", "--resume", &out, "--quiet",
    ];
    args.extend(&TINY[..2]);
    fails(&args, "tensor fc4.bias holds NaN");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the checkpoint changed"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&out).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// Every command that reports something prints one JSON object per line with --json, with
/// the figures scripts need.
#[test]
fn every_command_speaks_json() {
    let run = trained();
    let d = data();
    let dir = tmp().join("json");
    std::fs::create_dir_all(&dir).unwrap();
    let at = |name: &str| dir.join(name).display().to_string();
    let (codes, png, csv) = (at("c.vae"), at("x.png"), at("e.csv"));
    let m = ["--model", run.as_str(), "--data", d.as_str()];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["info"], "adapters"),
        (vec!["sample", "--count", "4", "--out", &png], "images"),
        (vec!["reconstruct", "--count", "3", "--out", &png], "images"),
        (vec!["eval", "--limit", "20"], "test"),
        (
            vec!["interpolate", "--from", "0", "--to", "1", "--out", &png],
            "latent_distance",
        ),
        (vec!["traverse", "--count", "3", "--out", &png], "dims"),
        (vec!["manifold", "--side", "3", "--out", &png], "z_range"),
        (vec!["embed", "--limit", "10", "--out", &csv], "latent"),
        (vec!["scatter", "--limit", "10", "--out", &png], "points"),
        (
            vec![
                "score",
                "--limit",
                "30",
                "--normal-classes",
                "0-8",
                "--out",
                &csv,
            ],
            "auroc",
        ),
        (vec!["encode", "--limit", "5", "--out", &codes], "psnr_db"),
        (vec!["decode", &codes, "--out", &png], "bits"),
        (
            vec![
                "denoise", "--noise", "mask:0.3", "--limit", "10", "--out", &png,
            ],
            "psnr_denoised_db",
        ),
        (
            vec![
                "impute",
                "--mask",
                "random:0.3",
                "--iters",
                "2",
                "--limit",
                "10",
                "--out",
                &png,
            ],
            "psnr_imputed_db",
        ),
        (
            vec![
                "probe",
                "--labels-per-class",
                "3",
                "--steps",
                "5",
                "--limit",
                "50",
            ],
            "rows",
        ),
    ];
    for (args, key) in cases {
        let mut all = args.clone();
        // Commands take a model and data, but info neither and these no data.
        match args[0] {
            "info" => {}
            "decode" | "sample" | "manifold" => all.extend(&m[..2]),
            _ => all.extend(m),
        }
        let results = json(&all);
        assert_eq!(results.len(), 1, "vae-gpu --json {all:?}: {results:?}");
        assert!(!results[0][key].is_null(), "no '{key}' in {}", results[0]);
    }
}

/// Exit codes by kind: 1 bad input, 2 usage, 4 no adapter; `--quiet` leaves stderr empty on
/// success; completions come from the same definitions as the parser.
#[test]
fn exit_codes_quiet_and_completions() {
    let code = |args: &[&str]| run(args).status.code();
    assert_eq!(code(&["sample", "--model", "/nonexistent/run"]), Some(1));
    assert_eq!(code(&["sample", "--no-such-flag"]), Some(2));
    assert_eq!(code(&["--backend", "metal", "sample"]), Some(4));
    let run_dir = trained();
    let out = run(&[
        "-q",
        "eval",
        "--model",
        &run_dir,
        "--data",
        &data(),
        "--limit",
        "10",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "--quiet prints nothing on stderr"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("test loss"));
    let bash = ok(&["completions", "bash"]);
    assert!(
        bash.contains("--iwae-k") && bash.contains("complete -F"),
        "{bash}"
    );
}

/// Found by attacking the commands: no `--out` can replace part of a run, a closed or full
/// stdout is not a panic, a FIFO is refused instead of blocking, and `--json` never lets a
/// shell script through.
#[test]
fn outputs_and_stdout_failures() {
    let run = trained();
    let d = data();
    let checkpoint = format!("{run}/checkpoint-0002");
    for (out, why) in [
        (format!("{checkpoint}/config.json"), "inside the checkpoint"),
        (format!("{checkpoint}/x.csv"), "inside the checkpoint"),
        (format!("{run}/metrics.jsonl"), "run's record"),
    ] {
        let o = common::cli::run(&[
            "embed", "--model", &run, "--data", &d, "--limit", "3", "--out", &out,
        ]);
        assert_eq!(o.status.code(), Some(1), "--out {out}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(why),
            "--out {out}"
        );
    }
    assert_eq!(tensors(&run).len(), 10, "the run is intact");
    // An image is written in the format its name says, and a name no image format has fails.
    let jpg = tmp().join("s.jpg").display().to_string();
    ok(&["sample", "--model", &run, "--count", "4", "--out", &jpg]);
    assert!(
        std::fs::read(&jpg).unwrap().starts_with(&[0xff, 0xd8]),
        "JPEG bytes"
    );
    let txt = tmp().join("s.txt").display().to_string();
    fails(
        &["sample", "--model", &run, "--count", "4", "--out", &txt],
        "not an image file name",
    );
    let full = std::fs::File::create("/dev/full").unwrap();
    let o = common::cli::command(&["completions", "bash"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("No space left") && !err.contains("panicked"),
        "{err}"
    );
    let o = common::cli::run(&["--json", "completions", "bash"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "no script under --json");
    // A stderr that cannot take the notes loses them, and nothing else: no panic.
    let full = std::fs::File::create("/dev/full").unwrap();
    let noteless = tmp().join("noteless").display().to_string();
    let mut args = tiny_args(&d, &noteless, "1", &[]);
    args.retain(|a| *a != "--quiet");
    let o = common::cli::command(&args).stderr(full).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(Path::new(&noteless).join("checkpoint-0001").is_dir());
    // A chart that cannot be written (here loss.png is a directory; a full disk alike) is a
    // warning, as samples.png's is: the run goes on.
    let chartless = tmp().join("chartless");
    let c = chartless.display().to_string();
    ok(&tiny_args(&d, &c, "1", &[]));
    std::fs::remove_file(chartless.join("loss.png")).unwrap();
    std::fs::create_dir_all(chartless.join("loss.png")).unwrap();
    let mut args = tiny_args(&d, &c, "2", &[]);
    let flag = args.iter().position(|a| *a == "--out").unwrap();
    args[flag] = "--resume";
    let o = common::cli::run(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("loss.png not written"), "{err}");
    assert!(chartless.join("checkpoint-0002").is_dir());
    // A reader that goes away (`| head -1`) ends a run with an error, never a false success.
    let piped = tmp().join("piped").display().to_string();
    let mut args = vec!["--json"];
    args.extend(tiny_args(&d, &piped, "4", &[]));
    let mut child = common::cli::command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let reader = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(reader), &mut first).unwrap();
    assert!(first.contains("\"epoch\""), "{first}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("broken pipe"), "{err}");
    let fifo = tmp().join("names.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.display().to_string();
    fails(
        &[
            "embed",
            "--model",
            &run,
            "--data",
            &d,
            "--limit",
            "3",
            "--class-names",
            &fifo,
        ],
        "not a regular file",
    );
}

/// Found by a second attack on the commands: each misuse is named, and nothing is
/// written in its place.
#[test]
fn misuse_found_by_attack_is_named() {
    use common::cli::fails_with;
    let run = trained();
    let d = data();
    // A --class-names list must name every label of the data.
    let names = tmp().join("two-names.txt");
    std::fs::write(&names, "first\nsecond\n").unwrap();
    let names = names.display().to_string();
    let csv = tmp().join("named.csv").display().to_string();
    fails_with(
        &[
            "embed",
            "--model",
            &run,
            "--data",
            &d,
            "--limit",
            "20",
            "--class-names",
            &names,
            "--out",
            &csv,
        ],
        1,
        &["two-names.txt", "2 class names", "label 9"],
    );
    assert!(!Path::new(&csv).exists());
    // Results go to files; stdout carries the summary.
    fails_with(
        &["embed", "--model", &run, "--data", &d, "--out", "-"],
        2,
        &["'-'", "give a file path"],
    );
    // One PNG per sample goes into a directory, never over a file.
    let file = tmp().join("a-file.png");
    std::fs::write(&file, b"mine").unwrap();
    fails_with(
        &[
            "sample",
            "--model",
            &run,
            "--count",
            "2",
            "--separate",
            file.to_str().unwrap(),
        ],
        1,
        &["a-file.png", "not a directory"],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    // A 32-bit code far outside the latent space is a damaged file, not a black image.
    let codes = tmp().join("huge.vcodes").display().to_string();
    ok(&[
        "encode", "--model", &run, "--data", &d, "--limit", "2", "--bits", "32", "--out", &codes,
    ]);
    // The file records the weights that wrote it: other weights of the same shape decode
    // other images, and say so.
    let decode = |model: &str, codes: &str| {
        let png = tmp().join("decoded.png").display().to_string();
        let o = common::cli::run(&["decode", "--model", model, codes, "--out", &png]);
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stderr).contains("encoded by other weights")
    };
    let other = tmp().join("other-seed").display().to_string();
    ok(&tiny_args(&d, &other, "1", &[("--seed", "4")]));
    assert!(!decode(&run, &codes));
    assert!(decode(&other, &codes));
    // A version 1 file (no model field) still decodes, without the check.
    let mut bytes = std::fs::read(&codes).unwrap();
    let mut v1 = bytes.clone();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1.drain(24..32);
    let v1_path = tmp().join("v1.vcodes").display().to_string();
    std::fs::write(&v1_path, &v1).unwrap();
    assert!(!decode(&other, &v1_path));
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&1e38f32.to_le_bytes());
    std::fs::write(&codes, &bytes).unwrap();
    fails_with(
        &[
            "decode",
            "--model",
            &run,
            &codes,
            "--out",
            &tmp().join("huge.png").display().to_string(),
        ],
        1,
        &[
            "huge.vcodes",
            "value 3 of code 1",
            "far outside the latent space",
        ],
    );
    // --help into a full disk fails as every other result does.
    let full = std::fs::File::create("/dev/full").unwrap();
    let o = common::cli::command(&["--help"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left"));
    // An image folder with train/ but no test/ says so (its images would become one class).
    let half = image_folder("half-split");
    std::fs::create_dir(half.join("train")).unwrap();
    for class in ["circles", "squares"] {
        std::fs::rename(half.join(class), half.join("train").join(class)).unwrap();
    }
    fails_with(
        &["train", "--data", half.to_str().unwrap(), "--quiet"],
        1,
        &["half-split", "has train/ but no test/"],
    );
    // Beside other class folders, a folder named train is a class.
    let classes = image_folder("class-named-train");
    std::fs::rename(classes.join("circles"), classes.join("train")).unwrap();
    let out = tmp().join("class-named-train-run").display().to_string();
    let o = common::cli::run(&[
        "--json",
        "train",
        "--data",
        classes.to_str().unwrap(),
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--latent",
        "2",
        "--out",
        &out,
        "--quiet",
    ]);
    assert!(o.status.success(), "{o:?}");
    let config =
        std::fs::read_to_string(Path::new(&out).join("checkpoint-0001/config.json")).unwrap();
    assert!(
        config.contains("\"train\"") && config.contains("\"squares\""),
        "{config}"
    );
    // A damaged last checkpoint: read-only commands pass over it with a warning, a resume
    // names it and says what to do.
    let damaged = tmp().join("damaged");
    std::fs::create_dir_all(damaged.join("checkpoint-0002")).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "config.json"] {
        let from = Path::new(&run).join("checkpoint-0002").join(f);
        std::fs::copy(from, damaged.join("checkpoint-0002").join(f)).unwrap();
    }
    std::fs::create_dir(damaged.join("checkpoint-0003")).unwrap();
    let damaged = damaged.display().to_string();
    let o = common::cli::run(&["eval", "--model", &damaged, "--data", &d, "--limit", "10"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("passing over") && err.contains("checkpoint-0003"),
        "{err}"
    );
    fails_with(
        &[
            "train", "--resume", &damaged, "--data", &d, "--epochs", "4", "--quiet",
        ],
        1,
        &["move a damaged one aside", "checkpoint-0003"],
    );
    // Without --data a command reads the run's data; a table is no data for an image model.
    let o = common::cli::run(&["eval", "--model", &run, "--limit", "10"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains(&format!("data: {d}")),
        "{err}"
    );
    let table = tmp().join("records.csv");
    std::fs::write(&table, "a,b\n1.5,2\n2.5,3\n3.5,1\n").unwrap();
    fails_with(
        &["embed", "--model", &run, "--data", table.to_str().unwrap()],
        1,
        &[
            "records.csv",
            "a table, but this model was trained on images",
        ],
    );
    // A class the data does not have is a mistake in --classes; an edit needs two classes.
    let classes = tmp().join("absent-class").display().to_string();
    let mut args = tiny_args(&d, &classes, "1", &[]);
    args.extend(["--classes", "0,200"]);
    fails_with(&args, 1, &["--classes", "no images of class [200]"]);
    fails_with(
        &["edit", "--model", &run, "--from", "0", "--to", "0"],
        1,
        &["--from and --to name the same class"],
    );
    // A kernel cache that cannot be written is said once, not once per measurement.
    let file = tmp().join("cache-is-a-file");
    std::fs::write(&file, b"").unwrap();
    let o = common::cli::command(&["tune", "--model", &run])
        .env("VAE_GPU_CACHE_DIR", &file)
        .env_remove("VAE_GPU_TUNE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        err.matches("cannot save the kernel cache").count(),
        1,
        "{err}"
    );
    // A manifold needs two latent dimensions.
    let line = tmp().join("one-latent").display().to_string();
    ok(&tiny_args(&d, &line, "1", &[("--latent", "1")]));
    fails_with(
        &["manifold", "--model", &line],
        1,
        &["two latent dimensions", "traverse"],
    );
}

/// Free bits raise the KL in the total, which a checkpoint's own check must allow: a run
/// trained with them loads and resumes.
#[test]
fn a_free_bits_run_loads_and_resumes() {
    let d = data();
    let out = tmp().join("free-bits").display().to_string();
    let mut args = tiny_args(&d, &out, "1", &[]);
    args.extend(["--free-bits", "0.5"]);
    ok(&args);
    ok(&["eval", "--model", &out, "--data", &d, "--limit", "10"]);
    ok(&[
        "train", "--resume", &out, "--data", &d, "--epochs", "2", "--quiet",
    ]);
}

/// Ctrl-C stops a run between two steps with exit code 130: the last checkpoint stays and
/// resumes; a new run stopped before its first checkpoint leaves nothing.
#[test]
fn ctrl_c_stops_a_run_cleanly() {
    use std::io::BufRead;
    // A job a non-interactive shell starts in the background ignores SIGINT, and so do
    // its children: vae-gpu, which honours that, would train on (1000 epochs).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
    assert!(
        ignored.is_none_or(|m| m & (1 << 1) == 0),
        "SIGINT is ignored in this process (a background job of a script?): run the tests in the foreground"
    );
    let d = data();
    let interrupt = |args: &[&str], after: &str| {
        let mut child = common::cli::command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        // Wait for the line that says the run is under way, on stdout or stderr, then keep
        // reading both: a closed pipe would end the run (as `| head` does) before the
        // interrupt arrives.
        let (watched, other): (Box<dyn BufRead + Send>, Box<dyn BufRead + Send>) =
            if after == "epoch" {
                (
                    Box::new(std::io::BufReader::new(out)),
                    Box::new(std::io::BufReader::new(err)),
                )
            } else {
                (
                    Box::new(std::io::BufReader::new(err)),
                    Box::new(std::io::BufReader::new(out)),
                )
            };
        let drain_other = std::thread::spawn(move || other.lines().for_each(drop));
        let mut lines = watched.lines();
        let seen = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains(after));
        assert!(seen, "no line with '{after}'");
        let drain = std::thread::spawn(move || lines.for_each(drop));
        let killed = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let code = child.wait().unwrap().code();
        drain.join().unwrap();
        drain_other.join().unwrap();
        code
    };
    let run = tmp().join("interrupted").display().to_string();
    let mut args = vec!["--json"];
    args.extend(tiny_args(&d, &run, "1000", &[]));
    assert_eq!(interrupt(&args, "epoch"), Some(130));
    assert!(Path::new(&run).join("checkpoint-0001").is_dir());
    ok(&[
        "eval", "--model", &run, "--data", &d, "--limit", "10", "--quiet",
    ]);
    // A new run stopped in its first epoch (one image a step) is removed.
    let fresh = tmp().join("interrupted-fresh").display().to_string();
    let mut args = tiny_args(&d, &fresh, "1000", &[("--batch-size", "1")]);
    args.retain(|a| *a != "--quiet");
    assert_eq!(interrupt(&args, "run directory"), Some(130));
    assert!(!Path::new(&fresh).exists());
}
