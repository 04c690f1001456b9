//! Runs that can be trusted: a kill at any step of a save, a second process, a full disk
//! and a corpus of malformed files and flags. Every failure is one clear line and a
//! non-zero exit, and the last good checkpoint always loads and resumes to the same
//! weights as an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cli::{self, command, data, fails_with, finish, last_model, ok, tmp};
use vae_gpu::io::safetensors;

/// A tiny model: 10 steps per epoch.
const TINY: [&str; 10] = [
    "--limit",
    "640",
    "--hidden",
    "32",
    "--latent",
    "4",
    "--batch-size",
    "64",
    "--quiet",
    "--seed=5",
];
const EPOCHS: &str = "3";

fn train_args<'a>(d: &'a str, flag: &'a str, dir: &'a str, epochs: &'a str) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", d, "--epochs", epochs, flag, dir];
    args.extend(TINY);
    args
}

/// The weights of a run trained straight through (once per test binary).
fn straight() -> &'static [safetensors::Tensor] {
    static WEIGHTS: OnceLock<Vec<safetensors::Tensor>> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let out = tmp().join("straight").display().to_string();
        let d = data();
        ok(&train_args(&d, "--out", &out, EPOCHS));
        weights(&out)
    })
}

fn weights(run: &str) -> Vec<safetensors::Tensor> {
    safetensors::load(&last_model(run))
        .unwrap()
        .into_values()
        .collect()
}

/// Resumes `run` to the last epoch and checks it ends where the straight run did: the same
/// weights and one metrics line per epoch.
fn resume_matches_straight(run: &str) {
    let d = data();
    let out = finish(
        &["resume"],
        command(&train_args(&d, "--resume", run, EPOCHS))
            .output()
            .unwrap(),
    );
    assert!(out.status.success(), "resume of {run} failed");
    for (a, b) in straight().iter().zip(weights(run)) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.data, b.data, "{}: resumed weights differ", a.name);
    }
    let metrics = std::fs::read_to_string(Path::new(run).join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3], "{run}/metrics.jsonl");
    let names: Vec<String> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".tmp") || n.starts_with(".trash")),
        "leftovers in {run}: {names:?}"
    );
}

/// Kills the trainer (SIGKILL) at each step of a save (before the publishing rename, after
/// it, in the middle of pruning) in epoch 2; the run still loads, and resumes to the
/// straight run's weights.
#[test]
fn a_kill_at_any_step_of_a_save_leaves_a_resumable_run() {
    let d = data();
    // published:3 dies after the last checkpoint, before metrics.jsonl: the resume that
    // has nothing left to train still brings the records up to date.
    for point in ["publish:2", "published:2", "prune:1", "published:3"] {
        let dir = tmp().join(format!("kill-{}", point.replace(':', "-")));
        let run = dir.display().to_string();
        let args = train_args(&d, "--out", &run, EPOCHS);
        let out = finish(
            &args,
            command(&args)
                .env("VAE_GPU_CRASH_AT", point)
                .output()
                .unwrap(),
        );
        assert_eq!(
            out.status.code(),
            None,
            "{point}: the hook should kill the process"
        );
        ok(&["eval", "--model", &run, "--data", &d, "--limit", "64"]);
        // As an interrupted write of metrics.jsonl would leave it.
        std::fs::write(dir.join(".vae-gpu-AbC123.tmp"), b"partial").unwrap();
        resume_matches_straight(&run);
    }
}

/// Kills at random moments, resuming after each, until the run completes.
#[test]
fn random_kills_leave_a_resumable_run() {
    let d = data();
    let run = tmp().join("random-kills").display().to_string();
    let mut rng = vae_gpu::rng::Rng::new(7);
    let mut first = true;
    for _ in 0..4 {
        let flag = if first { "--out" } else { "--resume" };
        let args = train_args(&d, flag, &run, EPOCHS);
        let mut child = command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.uniform(200.0, 1500.0) as u64));
        let _ = child.kill();
        child.wait().unwrap();
        // Once a checkpoint exists, the run continues with --resume.
        first = vae_gpu::vae::rundir::checkpoints(Path::new(&run)).is_empty();
    }
    if first {
        ok(&train_args(&d, "--out", &run, "1"));
    }
    resume_matches_straight(&run);
}

/// A second trainer in a run directory in use is refused with a clear error.
#[test]
fn a_second_process_cannot_train_in_the_same_run() {
    let d = data();
    let dir = tmp().join("two");
    let run = dir.display().to_string();
    let mut first = command(&[
        "train", "--data", &d, "--epochs", "100", "--out", &run, "--quiet",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let lock = dir.join(".lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default() != first.id().to_string() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first trainer never locked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = format!("pid {}", first.id());
    fails_with(
        &["train", "--data", &d, "--out", &run, "--quiet"],
        1,
        &[&run, "another vae-gpu process", &pid],
    );
    fails_with(
        &["train", "--data", &d, "--resume", &run, "--quiet"],
        1,
        &[&run, "another vae-gpu process"],
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let after = cli::run(&[
        "train", "--data", &d, "--resume", &run, "--epochs", "1", "--quiet",
    ]);
    let after = String::from_utf8_lossy(&after.stderr);
    assert!(
        !after.contains("another vae-gpu process"),
        "the lock dies with its process: {after}"
    );
}

/// A full disk while saving epoch 2: a clear error, the epoch 1 checkpoint intact and
/// loadable, no temporary files. Needs root for a private tmpfs mount (CI runs as root).
#[test]
fn a_full_disk_keeps_the_last_checkpoint() {
    let root = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run this test as root"
        );
        eprintln!("skipped: needs root for a tmpfs mount");
        return;
    }
    let mnt = tmp().join("small-disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_vae-gpu");
    let d = data();
    let run = mnt.join("run").display().to_string();
    // One checkpoint of the tiny model is ~620 KB, its charts and pictures ~400 KB: the
    // second checkpoint does not fit.
    let script = format!(
        "mount -t tmpfs -o size=1400k tmpfs {mnt} || exit 99
         {bin} train --data {d} --epochs 3 --out {run} {tiny}; echo \"train-exit=$?\"
         ls -a {run}
         {bin} eval --model {run} --data {d} --limit 64 && echo eval-ok",
        mnt = mnt.display(),
        tiny = TINY.join(" "),
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env_remove("WGPU_BACKEND")
        .env("VAE_GPU_TUNE", "off")
        .output()
        .unwrap();
    let out = finish(&["(full disk)"], out);
    assert_ne!(out.status.code(), Some(99), "tmpfs mount failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("train-exit=1"), "{stdout}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("saving epoch 2 failed (the last checkpoint")
            && stderr.contains("checkpoint-0001 is intact"),
        "{stderr}"
    );
    assert!(
        stdout.contains("checkpoint-0001") && !stdout.contains(".tmp"),
        "{stdout}"
    );
    assert!(stdout.contains("eval-ok"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A trained run to corrupt copies of.
fn good_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tmp().join("good");
        let d = data();
        ok(&train_args(&d, "--out", &dir.display().to_string(), "1"));
        dir
    })
}

/// A copy of the good run with `file` of its checkpoint replaced by `bytes`.
fn corrupted(name: &str, file: &str, bytes: &[u8]) -> (String, String) {
    let dir = tmp().join("corpus").join(name);
    let checkpoint = dir.join("checkpoint-0001");
    std::fs::create_dir_all(&checkpoint).unwrap();
    for f in ["model.safetensors", "optimizer.safetensors", "config.json"] {
        std::fs::copy(
            good_run().join("checkpoint-0001").join(f),
            checkpoint.join(f),
        )
        .unwrap();
    }
    let path = checkpoint.join(file);
    std::fs::write(&path, bytes).unwrap();
    (dir.display().to_string(), path.display().to_string())
}

/// The good run's config.json with one field set to `value` (a JSON pointer path).
fn config_with(pointer: &str, value: serde_json::Value) -> Vec<u8> {
    let text = std::fs::read_to_string(good_run().join("checkpoint-0001/config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    *json.pointer_mut(pointer).unwrap() = value;
    serde_json::to_vec(&json).unwrap()
}

/// Every config field out of range names the file and the field, for a command that uses
/// the model and for --resume; nothing panics.
#[test]
fn malformed_configs_are_clear_errors() {
    let huge = serde_json::json!(1u64 << 62);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "hidden-huge",
            config_with("/model/hidden", serde_json::json!([1u64 << 62])),
            "model.hidden",
        ),
        (
            "latent-zero",
            config_with("/model/latent", serde_json::json!(0)),
            "model.latent",
        ),
        (
            "latent-huge",
            config_with("/model/latent", huge.clone()),
            "model.latent",
        ),
        (
            "height-huge",
            config_with("/model/height", huge),
            "model.height",
        ),
        (
            "arch",
            config_with("/model/arch", serde_json::json!("transformer")),
            "model.arch",
        ),
        (
            "gauss-var",
            config_with("/model/gauss_var", serde_json::json!(0.0)),
            "model.gauss_var",
        ),
        (
            "conv-widths",
            config_with("/model/conv_channels", serde_json::json!([3])),
            "model.conv_channels",
        ),
        (
            "batch-zero",
            config_with("/train/batch_size", serde_json::json!(0)),
            "train.batch_size",
        ),
        (
            "lr-negative",
            config_with("/train/adam/lr", serde_json::json!(-5.0)),
            "train.adam.lr",
        ),
        (
            "beta-negative",
            config_with("/train/beta", serde_json::json!(-5.0)),
            "train.beta",
        ),
        (
            "beta2",
            config_with("/train/adam/beta2", serde_json::json!(1.0)),
            "train.adam.beta2",
        ),
        (
            "epochs-zero",
            config_with("/train/epochs", serde_json::json!(0)),
            "train.epochs",
        ),
        (
            "not-json",
            b"{ this is not json".to_vec(),
            "not a vae-gpu config",
        ),
        ("empty", Vec::new(), "not a vae-gpu config"),
        // The progress fields, each alone and against the others.
        (
            "step-wrapped",
            config_with("/state/step", serde_json::json!(u64::MAX)),
            "state.step",
        ),
        (
            "epoch-zero",
            config_with("/state/epoch", serde_json::json!(0)),
            "state.step",
        ),
        (
            "init-loss-null",
            config_with("/state/init_loss", serde_json::Value::Null),
            "state.init_loss",
        ),
        (
            "test-loss-absurd",
            config_with("/metrics/test/total", serde_json::json!(-1e30)),
            "metrics.test",
        ),
        (
            "corruption",
            config_with("/train/corruption", serde_json::json!({"SaltPepper": 5.0})),
            "train.corruption",
        ),
        (
            "missing-field",
            br#"{"model": {"arch": "mlp"}}"#.to_vec(),
            "missing field",
        ),
    ];
    let d = data();
    for (name, bytes, field) in cases {
        let (run, path) = corrupted(name, "config.json", &bytes);
        fails_with(
            &["sample", "--model", &run, "--count", "4"],
            1,
            &[&path, field],
        );
        fails_with(
            &["train", "--data", &d, "--resume", &run, "--quiet"],
            1,
            &[&path, field],
        );
    }
}

/// The header of a safetensors file with one F32 tensor `fc1.weight` of `shape` over `data`
/// bytes at `offsets`.
fn safetensors_bytes(dtype: &str, shape: &str, offsets: [u64; 2], data: usize) -> Vec<u8> {
    let header = format!(
        r#"{{"fc1.weight":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{},{}]}}}}"#,
        offsets[0], offsets[1]
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + data, 0);
    out
}

/// Malformed model files: overflowing shapes and offsets, truncation, a foreign dtype, a
/// flipped header byte, another architecture's tensors. Each names the file.
#[test]
fn malformed_model_files_are_clear_errors() {
    let good = std::fs::read(good_run().join("checkpoint-0001/model.safetensors")).unwrap();
    let mut flipped = good.clone();
    flipped[9] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "shape-overflow",
            safetensors_bytes("F32", "[400, 4611686018427387904]", [0, 16], 16),
            "overflows",
        ),
        (
            "offsets-past-end",
            safetensors_bytes("F32", "[2, 2]", [0, 1 << 40], 16),
            "does not fit its shape",
        ),
        (
            "offsets-reversed",
            safetensors_bytes("F32", "[2, 2]", [16, 0], 16),
            "out of order or overlapping",
        ),
        (
            "header-too-long",
            u64::MAX.to_le_bytes().to_vec(),
            "runs past the end",
        ),
        ("too-short", b"abc".to_vec(), "too short"),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "do not cover the file",
        ),
        ("flipped-header", flipped, "bad header"),
        (
            "f64",
            safetensors_bytes("F64", "[2]", [0, 16], 16),
            "F32, F16 and BF16 are supported",
        ),
        (
            "foreign",
            safetensors_bytes("F32", "[2, 2]", [0, 16], 16),
            "the model config needs",
        ),
    ];
    for (name, bytes, needle) in cases {
        let (run, path) = corrupted(name, "model.safetensors", &bytes);
        fails_with(
            &["sample", "--model", &run, "--count", "4"],
            1,
            &[&path, needle],
        );
    }
    // A bare PyTorch file whose shapes describe a model past every limit.
    let bare = tmp().join("corpus/bare.safetensors");
    std::fs::write(
        &bare,
        safetensors_bytes("F32", "[65537, 4]", [0, 4 * 4 * 65537], 4 * 4 * 65537),
    )
    .unwrap();
    let bare = bare.display().to_string();
    fails_with(&["sample", "--model", &bare], 1, &[&bare]);
}

/// Sizes read from IDX and codes headers that overflow, with the options that used to
/// reach them (--limit).
#[test]
fn overflowing_headers_are_clear_errors() {
    let dir = tmp().join("idx-overflow");
    std::fs::create_dir_all(&dir).unwrap();
    // 4194304 x 2097152 x 2097152 wraps to 0 in 64 bits: a 16-byte file would "fit".
    let mut header = Vec::new();
    for w in [0x803u32, 1 << 22, 1 << 21, 1 << 21] {
        header.extend_from_slice(&w.to_be_bytes());
    }
    std::fs::write(dir.join("train-images-idx3-ubyte"), &header).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), &header).unwrap();
    let d = dir.display().to_string();
    fails_with(
        &[
            "train",
            "--data",
            &d,
            "--limit",
            "5",
            "--out",
            &format!("{d}-run"),
            "--quiet",
        ],
        1,
        &["train-images-idx3-ubyte", "overflow"],
    );
    let codes = tmp().join("overflow.vae");
    let mut bytes = b"VAECODES".to_vec();
    for w in [1u32, u32::MAX, u32::MAX, 32] {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    std::fs::write(&codes, &bytes).unwrap();
    let c = codes.display().to_string();
    let run = good_run().display().to_string();
    fails_with(&["decode", &c, "--model", &run], 1, &[&c]);
}

/// Flags out of range are usage errors (exit 2) or one clear line (exit 1).
#[test]
fn flags_out_of_range_are_refused() {
    let d = data();
    let run = good_run().display().to_string();
    for args in [
        vec!["eval", "--model", &run, "--iwae", "1000000"],
        vec!["sample", "--model", &run, "--count", "0"],
        vec!["train", "--batch-size", "0"],
        vec!["train", "--epochs", "0"],
        vec!["score", "--model", &run, "--iwae-k", "0"],
    ] {
        let out = cli::run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // Numbers out of range are usage errors too, naming the flag.
    for (args, flag) in [
        (
            vec!["train", "--data", &d, "--max-loss-ratio", "0.5"],
            "--max-loss-ratio",
        ),
        (
            vec!["train", "--data", &d, "--gauss-var", "0"],
            "--gauss-var",
        ),
        (vec!["train", "--data", &d, "--lr", "nan"], "--lr"),
        (vec!["train", "--data", &d, "--beta=-1"], "--beta"),
        (
            vec!["sample", "--model", &run, "--temperature=-1"],
            "--temperature",
        ),
        (vec!["probe", "--model", &run, "--lr", "inf"], "--lr"),
        (vec!["traverse", "--model", &run, "--range", "0"], "--range"),
    ] {
        fails_with(&args, 2, &[flag]);
    }
}

/// --resume keeps the run's settings: a conflicting flag is an error, --lr and --epochs
/// are applied and said.
#[test]
fn resume_refuses_conflicts_and_applies_changes() {
    let d = data();
    let dir = tmp().join("resume-flags");
    let run = dir.display().to_string();
    ok(&train_args(&d, "--out", &run, "1"));
    for (flag, value) in [
        ("--latent", "8"),
        ("--hidden", "64"),
        ("--arch", "conv"),
        ("--batch-size", "32"),
        ("--seed", "9"),
        ("--beta", "4"),
        ("--likelihood", "gaussian"),
        ("--limit", "100"),
        ("--noise", "gaussian:0.3"),
        ("--classes", "0-8"),
    ] {
        fails_with(
            &["train", "--resume", &run, flag, value, "--quiet"],
            1,
            &[flag, "differs from the run being resumed"],
        );
    }
    // Without --quiet: the notes on stderr are what is checked.
    let out = cli::run(&["train", "--resume", &run, "--epochs", "2", "--lr", "5e-4"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--lr: 0.001 -> 0.0005"), "{err}");
    // The resumed run read the data it was trained on (--data and --limit were saved).
    assert!(err.contains("using the first 640 training images"), "{err}");
}

/// A diverging run stops with exit code 3 and keeps its last good checkpoint, also when
/// the loss stays finite.
#[test]
fn a_diverging_run_keeps_the_good_checkpoint() {
    let d = data();
    let run = tmp().join("diverge").display().to_string();
    ok(&train_args(&d, "--out", &run, "1"));
    let before = std::fs::read(last_model(&run)).unwrap();
    let line = fails_with(
        &[
            "train", "--resume", &run, "--epochs", "3", "--lr", "1e6", "--quiet",
        ],
        3,
        &["training diverged", "epoch 2", "checkpoint-0001 is intact"],
    );
    assert!(
        line.contains("over the bound") || line.contains("NaN/Inf"),
        "{line}"
    );
    assert!(
        std::fs::read(last_model(&run)).unwrap() == before,
        "the checkpoint changed"
    );
    // A new run that diverges at once claims no checkpoint.
    let fresh = tmp().join("diverge-fresh").display().to_string();
    let mut args = vec![
        "train", "--data", &d, "--epochs", "1", "--out", &fresh, "--lr", "1e6",
    ];
    args.extend(TINY);
    fails_with(
        &args,
        3,
        &["training diverged", "no checkpoint was written"],
    );
}

/// Outputs are replaced atomically: a failing score leaves the previous CSV as it was.
#[test]
fn a_failing_command_leaves_earlier_outputs_alone() {
    let run = good_run().display().to_string();
    let folder = tmp().join("unlabelled");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..20u8 {
        image::GrayImage::from_pixel(28, 28, image::Luma([i * 10]))
            .save(folder.join(format!("{i}.png")))
            .unwrap();
    }
    let f = folder.display().to_string();
    let csv = tmp().join("scores.csv");
    std::fs::write(&csv, "earlier results\n").unwrap();
    let c = csv.display().to_string();
    fails_with(
        &[
            "score",
            "--model",
            &run,
            "--data",
            &f,
            "--normal-classes",
            "0",
            "--out",
            &c,
        ],
        1,
        &["labelled"],
    );
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "earlier results\n");
    let sep = tmp().join("separate");
    ok(&[
        "sample",
        "--model",
        &run,
        "--count",
        "3",
        "--separate",
        &sep.display().to_string(),
    ]);
    let names: Vec<String> = std::fs::read_dir(&sep)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// A benchmark (--bench-steps) measures speed and leaves the run it resumes untouched.
#[test]
fn a_benchmark_leaves_the_run_alone() {
    let d = data();
    let dir = tmp().join("bench-resume");
    let run = dir.display().to_string();
    ok(&train_args(&d, "--out", &run, "1"));
    let before = std::fs::read(last_model(&run)).unwrap();
    let result = &cli::json(&[
        "train",
        "--resume",
        &run,
        "--epochs",
        "3",
        "--bench-steps",
        "2",
        "--quiet",
    ])[0];
    assert_eq!(
        (result["steps"].as_u64(), result["batch_size"].as_u64()),
        (Some(2), Some(64)),
        "{result}"
    );
    let names: Vec<(usize, PathBuf)> = vae_gpu::vae::rundir::checkpoints(&dir);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        std::fs::read(last_model(&run)).unwrap() == before,
        "the benchmark changed the checkpoint"
    );
}

/// Corrupt numbers inside well-formed files: a NaN in the Adam state, a flipped bit in the
/// weights (caught by the checksum), non-finite codes scales.
#[test]
fn corrupt_values_are_caught() {
    let d = data();
    // The good run's Adam state with one value of `tensor` replaced: resuming it fails.
    let resume_with_moment = |name: &str, tensor: &str, at: usize, value: f32, needles: &[&str]| {
        let mut t: Vec<safetensors::Tensor> =
            safetensors::load(&good_run().join("checkpoint-0001/optimizer.safetensors"))
                .unwrap()
                .into_values()
                .collect();
        t.iter_mut().find(|t| t.name == tensor).unwrap().data[at] = value;
        let (run, path) = corrupted(
            name,
            "optimizer.safetensors",
            &safetensors::to_bytes(&t, &[]),
        );
        let args = [
            "train", "--data", &d, "--resume", &run, "--epochs", "2", "--quiet",
        ];
        fails_with(&args, 1, &[&[path.as_str()], needles].concat());
    };
    resume_with_moment("opt-nan", "exp_avg_sq", 10, f32::NAN, &["holds NaN"]);
    // A negative second moment would reach Adam's square root.
    resume_with_moment(
        "opt-negative",
        "exp_avg_sq",
        3,
        -1.0,
        &["exp_avg_sq[3]", "negative"],
    );
    let mut flipped = std::fs::read(good_run().join("checkpoint-0001/model.safetensors")).unwrap();
    let at = flipped.len() - 1000;
    flipped[at] ^= 0x10;
    let (run, path) = corrupted("model-flip", "model.safetensors", &flipped);
    fails_with(&["sample", "--model", &run], 1, &[&path, "checksum"]);
    let model = good_run().display().to_string();
    let codes = tmp().join("corpus-codes.vae");
    let c = codes.display().to_string();
    ok(&[
        "encode", "--model", &model, "--data", &d, "--limit", "5", "--out", &c,
    ]);
    let mut bytes = std::fs::read(&codes).unwrap();
    // The scales follow the header: magic, four u32 words and the u64 model fingerprint.
    let min = 32;
    bytes[min..min + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&codes, &bytes).unwrap();
    fails_with(&["decode", &c, "--model", &model], 1, &[&c, "dimension 0"]);
    // Finite scales whose top level overflows (min + 255 step = inf) are refused too.
    let latent = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    bytes[min..min + 4].copy_from_slice(&(-3e38f32).to_le_bytes());
    let step = min + 4 * latent;
    bytes[step..step + 4].copy_from_slice(&3e38f32.to_le_bytes());
    std::fs::write(&codes, &bytes).unwrap();
    fails_with(
        &["decode", &c, "--model", &model],
        1,
        &[&c, "dimension 0", "levels finite"],
    );
    // Devices are no input files, even behind a link: reading one would never end.
    let zero = tmp().join("zero-codes.vae");
    let _ = std::fs::remove_file(&zero);
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let z = zero.display().to_string();
    fails_with(
        &["decode", &z, "--model", &model],
        1,
        &[&z, "not a regular file"],
    );
}

/// --resume resumes runs, not their checkpoints; the step counter must fit the epoch and
/// the data; a path where a run should be that is a file, or a planted .lock link, is
/// refused; the default --channels is the saved one.
#[test]
fn resume_checks_what_it_continues() {
    let d = data();
    let dir = tmp().join("resume-checks");
    let run = dir.display().to_string();
    ok(&train_args(&d, "--out", &run, "1"));
    let checkpoint = dir.join("checkpoint-0001").display().to_string();
    fails_with(
        &["train", "--resume", &checkpoint, "--epochs", "2", "--quiet"],
        1,
        &[
            "a checkpoint, not a run directory",
            &format!("--resume {run}"),
        ],
    );
    assert!(!dir.join("checkpoint-0001/.lock").exists());
    // An explicit --channels 1 is what the run was trained with.
    ok(&[
        "train",
        "--resume",
        &run,
        "--epochs",
        "1",
        "--channels",
        "1",
        "--quiet",
    ]);
    // state.step and metrics.step agree with each other, not with 1 epoch of 10 steps.
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(good_run().join("checkpoint-0001/config.json")).unwrap(),
    )
    .unwrap();
    *json.pointer_mut("/state/step").unwrap() = serde_json::json!(5);
    *json.pointer_mut("/metrics/step").unwrap() = serde_json::json!(5);
    let (bad, path) = corrupted(
        "step-consistent",
        "config.json",
        &serde_json::to_vec(&json).unwrap(),
    );
    fails_with(
        &[
            "train", "--data", &d, "--resume", &bad, "--epochs", "2", "--quiet",
        ],
        1,
        &[&path, "state.step = 5", "10 steps"],
    );
    // A file where the run directory should be.
    let file = tmp().join("not-a-run.txt");
    std::fs::write(&file, "notes").unwrap();
    let f = file.display().to_string();
    fails_with(
        &["train", "--data", &d, "--out", &f, "--quiet"],
        1,
        &[&f, "not a directory"],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "notes");
    // A .lock planted as a link: its target is never written.
    let victim = tmp().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let lock = dir.join(".lock");
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    fails_with(
        &["train", "--resume", &run, "--epochs", "2", "--quiet"],
        1,
        &[".lock", "not a regular file"],
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

/// A run whose data moved resumes from where --data says it is now, and records that
/// place; without --data the error names the missing path; other data is still refused.
#[test]
fn a_run_follows_its_moved_data() {
    let (old, new) = (tmp().join("data-before"), tmp().join("data-after"));
    std::fs::create_dir_all(&old).unwrap();
    for f in std::fs::read_dir(data()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, old.join(f.file_name().unwrap())).unwrap();
    }
    let run = tmp().join("moved-data").display().to_string();
    ok(&train_args(&old.display().to_string(), "--out", &run, "1"));
    std::fs::rename(&old, &new).unwrap();
    let resume = |epochs: &'static str| ["train", "--resume", &run, "--epochs", epochs, "--quiet"];
    fails_with(
        &resume("2"),
        1,
        &[&old.display().to_string(), "is gone", "--data"],
    );
    let new_path = new.display().to_string();
    ok(&[&resume("2")[..], &["--data", &new_path]].concat());
    ok(&resume("3"));
    let other = data();
    fails_with(
        &[&resume("4")[..], &["--data", &other]].concat(),
        1,
        &["differs from the run being resumed"],
    );
}

/// Outputs never replace what is not a regular file, and follow symlinks to their target.
#[test]
fn outputs_follow_links_and_spare_devices() {
    let run = good_run().display().to_string();
    fails_with(
        &[
            "sample",
            "--model",
            &run,
            "--count",
            "4",
            "--out",
            "/dev/null",
        ],
        1,
        &["/dev/null", "not a regular file"],
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    let target = tmp().join("link-target.png");
    let link = tmp().join("link.png");
    std::fs::write(&target, b"old").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(&[
        "sample",
        "--model",
        &run,
        "--count",
        "4",
        "--out",
        &link.display().to_string(),
    ]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        image::open(&target).is_ok(),
        "the link's target holds the new PNG"
    );
}

/// A dangling symlink in an image folder counts as an unreadable image.
#[test]
fn a_dangling_image_link_is_reported() {
    let dir = tmp().join("dangling");
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..10u8 {
            image::GrayImage::from_pixel(8, 8, image::Luma([i * 20]))
                .save(dir.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::os::unix::fs::symlink(dir.join("nowhere.png"), dir.join("a/dangle.png")).unwrap();
    let d = dir.display().to_string();
    let out = tmp().join("dangling-run").display().to_string();
    let args = [
        "train", "--data", &d, "--epochs", "1", "--hidden", "8", "--latent", "2", "--quiet",
    ];
    let mut strict = args.to_vec();
    strict.push("--strict");
    fails_with(&strict, 1, &["dangle.png"]);
    let mut lenient = args.to_vec();
    lenient.extend(["--out", &out]);
    let o = cli::run(&lenient);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped 1 unreadable"));
}
