//! Running the `vae-gpu` binary from tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `vae-gpu args` with the device chosen as a user's default would be, and the default
/// GEMM kernels: a run's kernels must not depend on timings taken by a neighbouring test
/// process, or runs compared bit for bit could differ (tests/tune.rs covers the tuner).
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vae-gpu"));
    c.args(args)
        .env_remove("WGPU_BACKEND")
        .env_remove("WGPU_ADAPTER_NAME")
        .env("VAE_GPU_TUNE", "off")
        .env("VAE_GPU_CACHE_DIR", tmp().join("kernel-cache"));
    c
}

/// Runs `vae-gpu args`, echoing its output into the test log.
pub fn run(args: &[&str]) -> Output {
    finish(args, command(args).output().expect("runs"))
}

/// Echoes a finished run's output into the test log.
pub fn finish(args: &[&str], out: Output) -> Output {
    eprintln!(
        "$ vae-gpu {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs and expects success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "vae-gpu {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `vae-gpu --json args`, expects success and returns its results: one JSON value per
/// line of stdout.
pub fn json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut with = vec!["--json"];
    with.extend_from_slice(args);
    ok(&with)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A number in a JSON result, found by its path of keys.
pub fn number(value: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(value, |v, key| &v[key])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {value}"))
}

/// Asserts that the PNG at `path` is a labelled grid of `cols` x `rows` cells of `cell`
/// pixels (small images are scaled up to at least 56 pixels): below its title and column
/// labels (0, 26 or 44 pixels), with 2-pixel gaps.
pub fn assert_grid(path: &str, cols: u32, rows: u32, cell: u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (w, h) = (img.width(), img.height());
    let grid_h = rows * (cell + 2) + 2;
    assert!(
        [0, 26, 44].contains(&h.saturating_sub(grid_h)) && h >= grid_h,
        "{path}: height {h} is not {rows} rows of {cell} pixels under a title"
    );
    assert!(
        w >= cols * (cell + 2) + 2,
        "{path}: width {w} holds fewer than {cols} columns of {cell}"
    );
    // The last column ends at the right edge unless the title is wider.
    let right = img.to_rgb8().get_pixel(w - 1, h - 1).0;
    assert!(
        right == [40, 40, 40] || right == [255, 255, 255],
        "{path}: corner {right:?}"
    );
}

/// Runs and expects a non-zero exit whose stderr mentions `needle`.
pub fn fails(args: &[&str], needle: &str) {
    let out = run(args);
    assert!(
        !out.status.success(),
        "vae-gpu {} should fail",
        args.join(" ")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "stderr should mention '{needle}': {err}"
    );
}

/// Runs and expects exit code `code` with one `error:` line that mentions every needle, and
/// no panic. Returns that line.
pub fn fails_with(args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code of vae-gpu {}",
        args.join(" ")
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "error should mention '{needle}': {}",
            lines[0]
        );
    }
    lines[0].to_string()
}

/// The model file of a run's last checkpoint.
pub fn last_model(run: &str) -> PathBuf {
    vae_gpu::vae::checkpoint::resolve(Path::new(run), vae_gpu::vae::checkpoint::Pick::Last)
        .unwrap()
        .join("model.safetensors")
}

/// The bundled Fashion-MNIST subset.
pub fn data() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/fashion-mnist")
        .display()
        .to_string()
}

/// A fresh scratch directory for this test binary.
pub fn tmp() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!(
            "vae-gpu-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}
