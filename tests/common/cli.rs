//! Running the `vae-gpu` binary from tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs `vae-gpu args` (with the device chosen as a user's default would be), echoing its
/// output into the test log.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vae-gpu"))
        .args(args)
        .env_remove("WGPU_BACKEND")
        .env_remove("WGPU_ADAPTER_NAME")
        .output()
        .expect("runs");
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
