//! Training data past the GPU budget: an image folder is decoded once into a cache on disk
//! and streamed a batch at a time, giving the same run as the resident path; the cache is
//! reused while the folder is unchanged, rebuilt when it changes, and an error when cut short.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{data, fails_with, json, number, tmp};

const TINY: [&str; 10] = [
    "--hidden",
    "32",
    "--latent",
    "4",
    "--batch-size",
    "64",
    "--seed",
    "3",
    "--lr=2e-3",
    "-q",
];

/// 200 real images from the bundled test split as PNGs in class folders c0..c9 (the
/// trainer holds out every tenth: 180 train, so the last batch of 64 is partial).
fn folder() -> PathBuf {
    let dir = tmp().join("folder");
    let imgs = vae_gpu::data::load(Some(Path::new(&data())), &Default::default())
        .unwrap()
        .test
        .take(200);
    for (i, label) in imgs.labels.iter().flatten().enumerate() {
        let class = dir.join(format!("c{label}"));
        std::fs::create_dir_all(&class).unwrap();
        image::GrayImage::from_raw(28, 28, imgs.image(i).to_vec())
            .unwrap()
            .save(class.join(format!("{i:03}.png")))
            .unwrap();
    }
    dir
}

/// `vae-gpu train` arguments of a tiny run on `dir` into `out`, with `extra` flags.
fn train_args<'a>(dir: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    args
}

/// Each epoch's (train, test) loss of `vae-gpu train` with `extra` flags on `dir`.
fn losses(dir: &Path, out: &str, extra: &[&str]) -> Vec<(f64, f64)> {
    let out = tmp().join(out);
    json(&train_args(dir, &out, extra))
        .iter()
        .map(|m| {
            (
                number(m, &["train", "total"]),
                number(m, &["test", "total"]),
            )
        })
        .collect()
}

/// The one data cache the tests have built.
fn cache_file() -> PathBuf {
    let dir = tmp().join("kernel-cache/data");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "images"))
        .collect();
    assert_eq!(files.len(), 1, "one cache in {}: {files:?}", dir.display());
    files[0].clone()
}

fn modified(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn streamed_from_the_cache_equals_resident() {
    let dir = folder();
    let resident = losses(&dir, "resident", &["--epochs", "2"]);
    let streamed = losses(&dir, "streamed", &["--epochs", "2", "--gpu-data-mib", "0"]);
    assert_eq!(resident.len(), 2);
    assert_eq!(streamed, resident, "same seed, same batches, same losses");
    assert!(resident[1].0 < resident[0].0, "it learns: {resident:?}");
    // A subset of classes is selected from the cache as from memory.
    let pick = ["--epochs", "1", "--classes", "0,1"];
    let resident = losses(&dir, "resident-classes", &pick);
    let streamed = losses(
        &dir,
        "streamed-classes",
        &[&pick[..], &["--gpu-data-mib", "0"]].concat(),
    );
    assert_eq!(streamed, resident, "--classes on the cache");

    // Reused while the folder is unchanged.
    let cache = cache_file();
    let built = modified(&cache);
    let again = losses(&dir, "again", &["--epochs", "1", "--gpu-data-mib", "0"]);
    assert_eq!(
        again,
        losses(&dir, "once", &["--epochs", "1"]),
        "the reused cache"
    );
    assert_eq!(
        modified(&cache),
        built,
        "an unchanged folder reuses its cache"
    );

    // Stale: an image rewritten with other pixels is decoded again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let first = std::fs::read_dir(dir.join("c0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    image::GrayImage::from_pixel(28, 28, image::Luma([255]))
        .save(&first)
        .unwrap();
    let changed = losses(&dir, "changed", &["--epochs", "1", "--gpu-data-mib", "0"]);
    assert_ne!(
        modified(&cache_file()),
        built,
        "a changed folder rebuilds the cache"
    );
    let changed_resident = losses(&dir, "changed-resident", &["--epochs", "1"]);
    assert_eq!(
        changed, changed_resident,
        "the rebuilt cache holds the new image"
    );

    // Damaged in place (same length): the image's checksum names it; with the byte
    // restored, the cache serves again.
    let cache = cache_file();
    let mut bytes = std::fs::read(&cache).unwrap();
    let at = 48 + 28 * 28 * 3 + 100;
    bytes[at] ^= 0x55;
    std::fs::write(&cache, &bytes).unwrap();
    // A new streamed run into `out` that must fail, naming `needles`.
    let streamed_fails = |out: &Path, needles: &[&str]| {
        fails_with(&train_args(&dir, out, &["--gpu-data-mib", "0"]), 1, needles);
        assert!(!out.exists(), "a failed new run leaves no directory");
    };
    streamed_fails(
        &tmp().join("damaged"),
        &["image 3 does not match its checksum"],
    );
    bytes[at] ^= 0x55;
    std::fs::write(&cache, &bytes).unwrap();
    // A cache of an earlier format is rebuilt, not refused.
    bytes[..8].copy_from_slice(b"VAEGPUD1");
    std::fs::write(&cache, &bytes).unwrap();
    let rebuilt = losses(&dir, "rebuilt", &["--epochs", "1", "--gpu-data-mib", "0"]);
    assert_eq!(rebuilt, changed_resident);
    assert_eq!(&std::fs::read(&cache).unwrap()[..8], b"VAEGPUD2");

    // Cut short: one error line naming the cache, exit code 1, no run left behind.
    let cache = cache_file();
    let len = std::fs::metadata(&cache).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    streamed_fails(
        &tmp().join("truncated"),
        &[cache.file_name().unwrap().to_str().unwrap(), "truncated"],
    );
}
