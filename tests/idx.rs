//! The IDX reader on every malformed case: each is a one-line error naming the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use vae_gpu::data::{self, idx};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vae-gpu-idx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn images_bytes(count: u32, rows: u32, cols: u32, payload: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [0x803, count, rows, cols] {
        b.extend_from_slice(&u32::to_be_bytes(w));
    }
    b.extend((0..payload).map(|i| i as u8));
    b
}

fn labels_bytes(count: u32, payload: usize) -> Vec<u8> {
    let mut b = [0x801u32, count]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect::<Vec<u8>>();
    b.extend((0..payload).map(|i| (i % 10) as u8));
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A gzip file whose CRC-32 trailer does not match its data.
fn bad_crc() -> Vec<u8> {
    let mut z = gz(&images_bytes(2, 3, 4, 24));
    let crc = z.len() - 8;
    z[crc] ^= 1;
    z
}

fn expect_err(path: &Path, result: Result<impl std::fmt::Debug, data::DataError>, needle: &str) {
    let e = result
        .expect_err("malformed input must be an error")
        .to_string();
    assert!(
        e.contains(&path.display().to_string()),
        "error should name the file: {e}"
    );
    assert!(e.contains(needle), "error should say '{needle}': {e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn reads_valid_raw_and_gz() {
    let d = tmpdir("valid");
    let raw = d.join("a-images-idx3-ubyte");
    std::fs::write(&raw, images_bytes(2, 3, 4, 24)).unwrap();
    let img = idx::read_images(&raw).unwrap();
    assert_eq!(
        (img.count, img.height, img.width, img.channels),
        (2, 3, 4, 1)
    );
    assert_eq!(img.pixels[23], 23);
    let z = d.join("b.gz");
    std::fs::write(&z, gz(&images_bytes(2, 3, 4, 24))).unwrap();
    assert_eq!(idx::read_images(&z).unwrap().pixels, img.pixels);
    // A multi-member gzip file (pigz, or `cat a.gz b.gz`) is one stream of its members.
    let bytes = images_bytes(2, 3, 4, 24);
    let multi = d.join("c.gz");
    std::fs::write(&multi, [gz(&bytes[..10]), gz(&bytes[10..])].concat()).unwrap();
    assert_eq!(idx::read_images(&multi).unwrap().pixels, img.pixels);
}

#[test]
fn rejects_every_malformed_case() {
    let d = tmpdir("bad");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("wrong-magic", labels_bytes(2, 2), "wrong magic 0x00000801"),
        ("short", vec![0, 0, 8], "too short"),
        (
            "truncated-header",
            images_bytes(2, 3, 4, 0)[..10].to_vec(),
            "truncated header",
        ),
        (
            "truncated-payload",
            images_bytes(2, 3, 4, 20),
            "truncated file",
        ),
        ("trailing", images_bytes(2, 3, 4, 30), "trailing data"),
        ("zero-dim", images_bytes(2, 0, 4, 0), "zero dimension"),
        (
            "corrupt-gz",
            gz(&images_bytes(2, 3, 4, 24))[..30].to_vec(),
            "corrupt gzip",
        ),
        // Bytes after a gzip member are read as the next member.
        (
            "garbage-after-gz",
            [gz(&images_bytes(2, 3, 4, 24)), b"garbage!".to_vec()].concat(),
            "corrupt gzip",
        ),
        ("bad-crc", bad_crc(), "corrupt gzip"),
        // The magic is checked before the header it implies is read.
        (
            "wrong-magic-gz",
            gz(&[b"GIF8".as_slice(), &images_bytes(2, 3, 4, 24)[4..]].concat()),
            "wrong magic 0x47494638",
        ),
        (
            "second-gz-member",
            [gz(&images_bytes(2, 3, 4, 24)), gz(b"more")].concat(),
            "trailing data",
        ),
        // 64 MiB of zeros in ~64 KiB: decompression stops one byte past the 24 announced.
        (
            "gz-bomb",
            gz(&images_bytes(2, 3, 4, 64 << 20)),
            "trailing data",
        ),
    ];
    for (name, bytes, needle) in cases {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        expect_err(&p, idx::read_images(&p), needle);
    }
    let p = d.join("labels-as-images");
    std::fs::write(&p, images_bytes(1, 1, 1, 1)).unwrap();
    expect_err(&p, idx::read_labels(&p), "wrong magic 0x00000803");
    let missing = d.join("missing");
    expect_err(&missing, idx::read_images(&missing), "No such file");
}

#[test]
fn label_count_must_match_images() {
    let d = tmpdir("count");
    std::fs::write(d.join("train-images-idx3-ubyte"), images_bytes(3, 2, 2, 12)).unwrap();
    let labels = d.join("train-labels-idx1-ubyte.gz");
    std::fs::write(&labels, gz(&labels_bytes(2, 2))).unwrap();
    expect_err(
        &labels,
        idx::load_split(&d, "train"),
        "2 labels for 3 images",
    );
}

#[test]
fn bundled_subset_loads() {
    let s = data::load(Some(&data::bundled_dir()), &data::DataOptions::default()).unwrap();
    assert_eq!(
        (s.train.count, s.test.count, s.train.dim()),
        (10_000, 2_000, 784)
    );
    assert_eq!(s.train.labels.as_ref().unwrap().len(), 10_000);
}

#[test]
fn idx_data_resizes_and_repeats_channels() {
    let opts = data::DataOptions {
        size: Some((16, 12)),
        channels: Some(3),
        ..Default::default()
    };
    let s = data::load(Some(&data::bundled_dir()), &opts).unwrap();
    assert_eq!(
        (s.train.width, s.train.height, s.train.channels),
        (16, 12, 3)
    );
    assert_eq!(s.test.pixels.len(), s.test.count * 16 * 12 * 3);
    let px = &s.test.pixels[..3];
    assert!(
        px[0] == px[1] && px[1] == px[2],
        "gray repeated over the channels"
    );
}

/// EMNIST as shipped: its file names, images stored transposed, `letters` labelled from 1,
/// class names from the mapping file; a directory of several splits names them.
#[test]
fn emnist_as_shipped() {
    let dir = std::env::temp_dir().join(format!("vae-gpu-emnist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Image i has a bright pixel at row 1, column 3 (stored transposed: at 3 * 28 + 1).
    let images = |n: usize| {
        let mut bytes = vec![0, 0, 8, 3];
        for d in [n as u32, 28, 28] {
            bytes.extend(d.to_be_bytes());
        }
        for _ in 0..n {
            let mut img = vec![0u8; 784];
            img[3 * 28 + 1] = 255;
            bytes.extend(img);
        }
        bytes
    };
    let labels = |l: &[u8]| {
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend((l.len() as u32).to_be_bytes());
        bytes.extend(l);
        bytes
    };
    for (part, n) in [("train", 3), ("test", 2)] {
        let p = |kind: &str| dir.join(format!("emnist-letters-{part}-{kind}"));
        std::fs::write(p("images-idx3-ubyte"), images(n)).unwrap();
        std::fs::write(p("labels-idx1-ubyte"), labels(&[1, 26, 2][..n])).unwrap();
    }
    std::fs::write(
        dir.join("emnist-letters-mapping.txt"),
        "1 65 97\n2 66 98\n26 90 122\n",
    )
    .unwrap();
    let s = vae_gpu::data::load(Some(&dir), &Default::default()).unwrap();
    assert_eq!((s.train.count, s.test.count), (3, 2));
    assert_eq!(
        s.train.image(0)[28 + 3],
        255,
        "untransposed: row 1, column 3"
    );
    assert_eq!(
        s.train.labels.as_deref(),
        Some(&[0, 25, 1][..]),
        "letters count from 0"
    );
    let names = vae_gpu::data::class_names(&dir);
    assert_eq!(&names[..2], ["A/a", "B/b"]);

    // A second split in the same directory: --data DIR is ambiguous, DIR/emnist-<split> is not.
    for part in ["train", "test"] {
        let p = |kind: &str| dir.join(format!("emnist-digits-{part}-{kind}"));
        std::fs::write(p("images-idx3-ubyte"), images(1)).unwrap();
        std::fs::write(p("labels-idx1-ubyte"), labels(&[7])).unwrap();
    }
    let err = vae_gpu::data::load(Some(&dir), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("digits, letters") && err.contains("emnist-<split>"),
        "{err}"
    );
    let digits =
        vae_gpu::data::load(Some(&dir.join("emnist-digits")), &Default::default()).unwrap();
    assert_eq!(
        digits.train.labels.as_deref(),
        Some(&[7][..]),
        "digits keep their labels"
    );
    let bad = dir.join("emnist-letters-test-labels-idx1-ubyte");
    std::fs::write(&bad, labels(&[0, 3])).unwrap();
    let err = vae_gpu::data::load(Some(&dir.join("emnist-letters")), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("outside 1..=26"), "{err}");
    // Labels beyond the split's classes are an error, not phantom classes.
    std::fs::write(
        dir.join("emnist-digits-train-labels-idx1-ubyte"),
        labels(&[200]),
    )
    .unwrap();
    let err = vae_gpu::data::load(Some(&dir.join("emnist-digits")), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("label 200 is outside the split's 10 classes"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Image folders decode in parallel into one buffer, in the listing's order, skipping an
/// unreadable file (and naming it with --strict), reporting progress.
#[test]
fn folder_decodes_in_order_on_all_cores() {
    let dir = std::env::temp_dir().join(format!("vae-gpu-folder-{}", std::process::id()));
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
    }
    for i in 0..60u8 {
        let class = if i < 30 { "a" } else { "b" };
        image::GrayImage::from_pixel(4, 3, image::Luma([i]))
            .save(dir.join(class).join(format!("{i:03}.png")))
            .unwrap();
    }
    std::fs::write(dir.join("a/015x.png"), b"not a png").unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let opts = vae_gpu::DataOptions {
        progress: Some(vae_gpu::data::Progress(std::sync::Arc::new(
            move |_, total| {
                assert_eq!(total, 61);
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        ))),
        ..Default::default()
    };
    let layout = vae_gpu::data::folder::Layout::of(&dir).unwrap();
    let imgs = vae_gpu::data::folder::read_folder(&layout, &dir, &opts).unwrap();
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        61,
        "progress per file"
    );
    assert_eq!((imgs.count, imgs.height, imgs.width), (60, 3, 4));
    let firsts: Vec<u8> = (0..60).map(|i| imgs.image(i)[0]).collect();
    assert_eq!(firsts, (0..60).collect::<Vec<u8>>(), "listing order kept");
    let labels = imgs.labels.unwrap();
    assert_eq!((labels[29], labels[30]), (0, 1));
    let strict = vae_gpu::DataOptions {
        strict: true,
        ..Default::default()
    };
    let err = vae_gpu::data::folder::read_folder(&layout, &dir, &strict)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("015x.png"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
