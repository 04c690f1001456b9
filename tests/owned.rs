//! What the user owns stays theirs: no output replaces an input or lands inside a data
//! folder, every picture sized from data or flags stays bounded, class labels mean the same
//! in every split, and a killed build leaves nothing that the next run keeps.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{data, fails_with, ok, run, tmp};

/// A tiny MLP run on the bundled data (trained once per test binary).
fn tiny_run() -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let out = tmp().join("tiny").display().to_string();
        let d = data();
        ok(&[
            "train", "--data", &d, "--out", &out, "--limit", "512", "--hidden", "32", "--latent",
            "4", "--epochs", "1", "--quiet",
        ]);
        out
    })
    .clone()
}

/// A folder of 8x8 gray PNGs: `classes` per split, `n` images each, pixel value = class
/// index * 40 + 20 (so each image says which folder it came from).
fn folder(root: &Path, splits: &[(&str, &[&str])], n: u8) {
    for (split, classes) in splits {
        for name in *classes {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let value = 20 + 40 * (name.as_bytes()[0] - b'a');
            for i in 0..n {
                image::GrayImage::from_pixel(8, 8, image::Luma([value]))
                    .save(dir.join(format!("{i:02}.png")))
                    .unwrap();
            }
        }
    }
}

#[test]
fn train_refuses_directories_it_does_not_own() {
    let d = data();
    let mine = tmp().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("metrics.jsonl"), "mine\n").unwrap();
    let m = mine.display().to_string();
    fails_with(
        &[
            "train", "--data", &d, "--out", &m, "--limit", "256", "--epochs", "1",
        ],
        1,
        &["not a vae-gpu run", "metrics.jsonl"],
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("metrics.jsonl")).unwrap(),
        "mine\n"
    );
    // The current directory (not empty, not a run) likewise.
    let out = common::cli::command(&["train", "--data", &d, "--out", ".", "--limit", "256"])
        .current_dir(&mine)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a vae-gpu run"));
    // An empty directory is fine.
    let empty = tmp().join("empty-out");
    std::fs::create_dir_all(&empty).unwrap();
    ok(&[
        "train",
        "--data",
        &d,
        "--out",
        &empty.display().to_string(),
        "--limit",
        "256",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(empty.join("checkpoint-0001").is_dir());
}

#[test]
fn a_run_never_lands_inside_its_image_folder() {
    let root = tmp().join("inside-data");
    folder(&root, &[("", &["a", "b"])], 10);
    let r = root.display().to_string();
    let before = std::fs::read_dir(&root).unwrap().count();
    for out in [
        r.clone(),
        root.join("a").display().to_string(),
        root.join("run").display().to_string(),
    ] {
        fails_with(
            &["train", "--data", &r, "--out", &out, "--epochs", "1"],
            1,
            &["inside the training data"],
        );
    }
    // The default runs/ inside the data (training from within the folder) too.
    let out = common::cli::command(&["train", "--data", ".", "--epochs", "1"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the training data"));
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        before,
        "nothing written into the data"
    );
}

#[test]
fn outputs_never_replace_inputs() {
    let run = tiny_run();
    let d = data();
    // A table scored onto itself.
    let table = tmp().join("t.csv");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/wdbc/wdbc.csv"),
        &table,
    )
    .unwrap();
    let t = table.display().to_string();
    let trun = tmp().join("table-run").display().to_string();
    ok(&[
        "train",
        "--data",
        &t,
        "--label-column",
        "diagnosis",
        "--out",
        &trun,
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--quiet",
    ]);
    let before = std::fs::read(&table).unwrap();
    fails_with(
        &["score", "--model", &trun, "--data", &t, "--out", &t],
        1,
        &["is the command's data"],
    );
    // Through another spelling of the same file.
    let other = format!(
        "{}/../{}/t.csv",
        tmp().display(),
        tmp().file_name().unwrap().to_string_lossy()
    );
    fails_with(
        &["embed", "--model", &trun, "--data", &t, "--out", &other],
        1,
        &["is the command's data"],
    );
    fails_with(
        &["impute", "--model", &trun, "--data", &t, "--out", &t],
        1,
        &["is the command's data"],
    );
    assert_eq!(
        std::fs::read(&table).unwrap(),
        before,
        "the data is untouched"
    );
    // Inside a data folder, over a class-names file, a codes file or an image read.
    let names = tmp().join("names.txt");
    std::fs::write(
        &names,
        (0..10).map(|i| format!("c{i}\n")).collect::<String>(),
    )
    .unwrap();
    let n = names.display().to_string();
    fails_with(
        &[
            "score",
            "--model",
            &run,
            "--data",
            &d,
            "--out",
            &format!("{d}/scores.csv"),
        ],
        1,
        &["inside", "the command's data"],
    );
    fails_with(
        &[
            "embed",
            "--model",
            &run,
            "--data",
            &d,
            "--class-names",
            &n,
            "--out",
            &n,
        ],
        1,
        &["--class-names"],
    );
    let codes = tmp().join("c.vae").display().to_string();
    ok(&[
        "encode", "--model", &run, "--data", &d, "--limit", "4", "--out", &codes,
    ]);
    fails_with(
        &["decode", &codes, "--model", &run, "--out", &codes],
        1,
        &["codes file"],
    );
    let png = tmp().join("one.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([9]))
        .save(&png)
        .unwrap();
    let p = png.display().to_string();
    fails_with(
        &[
            "interpolate",
            "--model",
            &run,
            "--data",
            &d,
            "--from",
            &p,
            "--to",
            "1",
            "--out",
            &p,
        ],
        1,
        &["an image this command reads"],
    );
    assert_eq!(image::open(&png).unwrap().width(), 28);
    // A run's own record and its checkpoints.
    fails_with(
        &[
            "sample",
            "--model",
            &run,
            "--out",
            &format!("{run}/metrics.jsonl"),
        ],
        1,
        &["run's record"],
    );
    fails_with(
        &[
            "sample",
            "--model",
            &run,
            "--separate",
            &format!("{run}/checkpoint-0001"),
        ],
        1,
        &["run's record"],
    );
}

#[test]
fn pictures_of_records_stay_small() {
    // 600 records of 784 values: each is drawn as a strip, not a 56-pixel-high image.
    let npy = tmp().join("records.npy");
    let mut bytes = vae_gpu::data::npy::header_bytes("|u1", &[600, 784]);
    bytes.extend((0..600 * 784).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&npy, bytes).unwrap();
    let n = npy.display().to_string();
    let out = tmp().join("records-run").display().to_string();
    ok(&[
        "train", "--data", &n, "--out", &out, "--hidden", "16", "--latent", "2", "--epochs", "1",
        "--quiet",
    ]);
    let (w, h) = image::image_dimensions(format!("{out}/samples.png")).unwrap();
    assert!(
        u64::from(w) * u64::from(h) < 4_000_000,
        "samples.png of records is {w}x{h}"
    );
    let grid = tmp().join("records-samples.png").display().to_string();
    ok(&["sample", "--model", &out, "--count", "2000", "--out", &grid]);
    let (w, h) = image::image_dimensions(&grid).unwrap();
    assert!(u64::from(w) * u64::from(h) <= 64_000_000, "{w}x{h}");
    let manifold = tmp().join("records-manifold.png").display().to_string();
    ok(&["manifold", "--model", &out, "--out", &manifold]);
}

#[test]
fn pictures_have_a_bound() {
    let run = tiny_run();
    let grid = tmp().join("huge.png").display().to_string();
    fails_with(
        &[
            "sample", "--model", &run, "--count", "100000", "--out", &grid,
        ],
        1,
        &["megapixels", "over the limit of 64", "--separate"],
    );
    assert!(!Path::new(&grid).exists());
}

#[test]
fn a_huge_class_name_is_clipped() {
    let run = tiny_run();
    let d = data();
    let names = tmp().join("long-names.txt");
    let long = "x".repeat(1_000_000);
    let text: String = (0..10)
        .map(|i| {
            if i == 1 {
                format!("{long}\n")
            } else {
                format!("c{i}\n")
            }
        })
        .collect();
    std::fs::write(&names, text).unwrap();
    let out = tmp().join("edit.png").display().to_string();
    ok(&[
        "edit",
        "--model",
        &run,
        "--data",
        &d,
        "--class-names",
        &names.display().to_string(),
        "--from",
        "0",
        "--to",
        "1",
        "--count",
        "2",
        "--out",
        &out,
    ]);
    let (w, h) = image::image_dimensions(&out).unwrap();
    assert!(w < 4000 && h < 4000, "{w}x{h}");
}

#[test]
fn oversized_images_are_refused_from_their_header() {
    // A 10000 x 5000 PNG (50 megapixels) is a few kilobytes of file.
    let root = tmp().join("huge-images");
    folder(&root, &[("", &["a", "b"])], 10);
    let big = root.join("a/big.png");
    image::GrayImage::new(10_000, 5_000).save(&big).unwrap();
    let r = root.display().to_string();
    let out = run(&["train", "--data", &r, "--size", "8", "--bench-steps", "1"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("big.png") && err.contains("over the limit of 40"),
        "{err}"
    );
    fails_with(
        &[
            "train",
            "--data",
            &r,
            "--size",
            "8",
            "--strict",
            "--bench-steps",
            "1",
        ],
        1,
        &["big.png", "megapixels"],
    );
}

#[test]
fn class_labels_are_the_same_in_every_split() {
    let root = tmp().join("split-classes");
    folder(&root, &[("train", &["a", "b"]), ("test", &["a", "c"])], 10);
    // A hidden folder is no class.
    folder(&root.join("train"), &[(".git", &["a"])], 2);
    let splits = vae_gpu::load_data(Some(&root), &Default::default()).unwrap();
    let names = vae_gpu::data::class_names(&root);
    assert_eq!(names, ["a", "b", "c"]);
    for imgs in [&splits.train, &splits.test] {
        for (i, &l) in imgs.labels.as_ref().unwrap().iter().enumerate() {
            // The pixel says the folder: 20 for a, 60 for b, 100 for c.
            assert_eq!(imgs.image(i)[0], 20 + 40 * l, "image {i} labelled {l}");
        }
    }
    assert_eq!(
        splits.train.count, 20,
        "the hidden folder's images are left out"
    );
}

#[test]
fn a_killed_cache_build_is_cleaned_up() {
    let cache = tmp().join("cache-dir");
    let data_dir = cache.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // What a build killed mid-way leaves: a temporary file nobody holds.
    let left = data_dir.join(".building-killed");
    std::fs::write(&left, vec![0u8; 4096]).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(&left)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A FIFO named like a build's file is passed over, not opened (that would block).
    let fifo = data_dir.join(".building-fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let root = tmp().join("cache-images");
    folder(&root, &[("", &["a", "b"])], 10);
    let r = root.display().to_string();
    let mut child = common::cli::command(&[
        "train",
        "--data",
        &r,
        "--gpu-data-mib",
        "0",
        "--bench-steps",
        "1",
        "--quiet",
    ])
    .env("VAE_GPU_CACHE_DIR", &cache)
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("train hung on the cache directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success());
    assert!(!left.exists(), "the killed build's file is removed");
    let caches: Vec<PathBuf> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(caches.len(), 2, "the cache and the FIFO: {caches:?}");
}

#[test]
fn eval_of_overflowing_weights_is_an_error() {
    let run = tiny_run();
    let d = data();
    let mut tensors: Vec<vae_gpu::io::safetensors::Tensor> =
        vae_gpu::io::safetensors::load(&common::cli::last_model(&run))
            .unwrap()
            .into_values()
            .collect();
    for t in tensors.iter_mut().filter(|t| t.name == "fc1.weight") {
        t.data.iter_mut().for_each(|v| *v = 3e38);
    }
    let dir = tmp().join("overflow");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.safetensors");
    std::fs::write(&model, vae_gpu::io::safetensors::to_bytes(&tensors, &[])).unwrap();
    let m = model.display().to_string();
    fails_with(
        &["eval", "--model", &m, "--data", &d, "--limit", "64"],
        1,
        &["not a number", "earlier checkpoint"],
    );
    fails_with(
        &["score", "--model", &m, "--data", &d, "--limit", "64"],
        1,
        &["not numbers"],
    );
}

/// Found by attacking the rules above: outputs are checked where links lead, a model's
/// own files are inputs, names training uses in a run are refused, a folder is a run only
/// when it looks like one, and a new run never goes inside another.
#[test]
fn outputs_are_checked_where_they_lead() {
    use std::os::unix::fs::symlink;
    let run = tiny_run();
    let d = data();
    let at = tmp().join("links");
    std::fs::create_dir_all(&at).unwrap();
    let link = |name: &str, target: &str| {
        let l = at.join(name);
        let _ = std::fs::remove_file(&l);
        symlink(target, &l).unwrap();
        l.display().to_string()
    };
    let metrics = std::fs::read(format!("{run}/metrics.jsonl")).unwrap();
    let m = link("m", &format!("{run}/metrics.jsonl"));
    fails_with(
        &["report", "--model", &run, "--out", &m],
        1,
        &["run's record"],
    );
    let w = link("w", &format!("{run}/checkpoint-0001/model.safetensors"));
    fails_with(
        &[
            "encode", "--model", &run, "--data", &d, "--limit", "3", "--out", &w,
        ],
        1,
        &["inside the checkpoint"],
    );
    assert_eq!(
        std::fs::read(format!("{run}/metrics.jsonl")).unwrap(),
        metrics
    );
    // A checkpoint reached through a link: outputs go to its run, never inside it.
    let ck = link("ck", &format!("{run}/checkpoint-0001"));
    ok(&["sample", "--model", &ck, "--count", "4"]);
    assert!(!Path::new(&format!("{run}/checkpoint-0001/samples.png")).exists());
    fails_with(
        &[
            "sample",
            "--model",
            &run,
            "--separate",
            &format!("{ck}/a/b"),
        ],
        1,
        &["inside the checkpoint"],
    );
    // Names training uses in a run, and a run inside a run.
    for name in [
        ".tmp-s",
        ".trash-n.png",
        ".vae-gpu-a.tmp",
        "checkpoint-0009",
        ".lock",
    ] {
        fails_with(
            &["sample", "--model", &run, "--out", &format!("{run}/{name}")],
            1,
            &["name training uses"],
        );
    }
    fails_with(
        &[
            "train",
            "--data",
            &d,
            "--out",
            &format!("{run}/inner"),
            "--limit",
            "256",
        ],
        1,
        &["inside the run"],
    );
    // A copied checkpoint's files are the model's.
    let copy = tmp().join("copied-checkpoint");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["model.safetensors", "config.json", "optimizer.safetensors"] {
        std::fs::copy(format!("{run}/checkpoint-0001/{f}"), copy.join(f)).unwrap();
    }
    let c = copy.display().to_string();
    fails_with(
        &[
            "embed",
            "--model",
            &c,
            "--data",
            &d,
            "--out",
            &format!("{c}/config.json"),
        ],
        1,
        &["the model's own file"],
    );
    fails_with(
        &[
            "encode",
            "--model",
            &format!("{c}/model.safetensors"),
            "--data",
            &d,
            "--limit",
            "3",
            "--out",
            &format!("{c}/config.json"),
        ],
        1,
        &["the model's own file"],
    );
    // `..` after a folder that does not exist yet is resolved as the system will.
    let data_link = link("data-link", &d);
    fails_with(
        &[
            "train",
            "--data",
            &d,
            "--out",
            &format!("{}/gone/../data-link/r", at.display()),
            "--limit",
            "256",
        ],
        1,
        &["inside the training data"],
    );
    let _ = data_link;
}

#[test]
fn only_runs_are_taken_over() {
    let d = data();
    // A folder holding a .lock beside the user's files is no run.
    let proj = tmp().join("proj");
    std::fs::create_dir_all(proj.join(".tmp-mine")).unwrap();
    std::fs::write(proj.join(".lock"), "").unwrap();
    std::fs::write(proj.join("samples.png"), "mine").unwrap();
    let p = proj.display().to_string();
    fails_with(
        &["train", "--data", &d, "--out", &p, "--limit", "256"],
        1,
        &["not a vae-gpu run"],
    );
    // Resuming it takes nothing over either.
    fails_with(
        &["train", "--data", &d, "--resume", &p, "--limit", "256"],
        1,
        &["not a vae-gpu run"],
    );
    assert!(
        proj.join(".tmp-mine").is_dir(),
        "the user's folder is untouched"
    );
    assert_eq!(std::fs::read(proj.join("samples.png")).unwrap(), b"mine");
    // A file named like a checkpoint is not one.
    let named = tmp().join("named");
    std::fs::create_dir_all(&named).unwrap();
    std::fs::write(named.join("checkpoint-1"), "mine").unwrap();
    fails_with(
        &[
            "train",
            "--data",
            &d,
            "--out",
            &named.display().to_string(),
            "--limit",
            "256",
        ],
        1,
        &["not a vae-gpu run"],
    );
    assert!(!named.join(".lock").exists());
    // A run's record that is a link is refused instead of written through.
    let run = tmp().join("linked-record");
    ok(&[
        "train",
        "--data",
        &d,
        "--out",
        &run.display().to_string(),
        "--limit",
        "256",
        "--hidden",
        "16",
        "--latent",
        "2",
        "--epochs",
        "1",
        "--quiet",
    ]);
    let victim = tmp().join("victim.png");
    std::fs::write(&victim, "mine").unwrap();
    std::fs::remove_file(run.join("samples.png")).unwrap();
    std::os::unix::fs::symlink(&victim, run.join("samples.png")).unwrap();
    fails_with(
        &[
            "train",
            "--data",
            &d,
            "--resume",
            &run.display().to_string(),
            "--epochs",
            "2",
            "--limit",
            "256",
            "--hidden",
            "16",
            "--latent",
            "2",
        ],
        1,
        &["samples.png", "not a regular file"],
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"mine");
}

#[test]
fn a_grid_too_large_is_refused_before_decoding() {
    let run = tiny_run();
    let grid = tmp().join("tall.png").display().to_string();
    // One column: the title's width counts too.
    fails_with(
        &[
            "sample", "--model", &run, "--count", "8000", "--cols", "1", "--out", &grid,
        ],
        1,
        &["over the limit", "--separate"],
    );
}
