//! Test helpers: run a body on every adapter found, a seeded RNG, tolerance checks.
#![allow(dead_code)]

pub mod cli;
pub mod pytorch;

use std::sync::{Mutex, OnceLock};

use vae_gpu::gpu::{adapters, all_adapters, BackendChoice, Gpu, GpuOptions};

/// Error-level messages from wgpu and its back ends (the Vulkan validation layers report
/// through these); any one fails the test that was running.
static GPU_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct ErrorRecorder;

impl log::Log for ErrorRecorder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("[{} {}] {}", record.level(), record.target(), record.args());
        eprintln!("{line}");
        if record.level() == log::Level::Error && record.target().starts_with("wgpu") {
            GPU_ERRORS.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

/// One device per adapter, opened once per test binary. `VAE_GPU_TEST_BACKEND` (vulkan, gl,
/// ...) narrows the set; with `CI=true`, finding none is a failure, never a skip.
fn devices() -> &'static [Gpu] {
    static DEVICES: OnceLock<Vec<Gpu>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        if log::set_logger(&ErrorRecorder).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
        // Launches get the default GEMM kernel: nothing is timed or cached by these tests
        // (tests/tune.rs covers the tuner, the parity tests every kernel).
        std::env::set_var("VAE_GPU_TUNE", "off");
        let backend = match std::env::var("VAE_GPU_TEST_BACKEND").as_deref() {
            Ok("vulkan") => BackendChoice::Vulkan,
            Ok("gl") => BackendChoice::Gl,
            Ok("metal") => BackendChoice::Metal,
            Ok("dx12") => BackendChoice::Dx12,
            _ => BackendChoice::Auto,
        };
        let opts = GpuOptions {
            backend,
            adapter: std::env::var("VAE_GPU_TEST_ADAPTER").ok(),
            validation: std::env::var("VAE_GPU_VALIDATION").is_ok_and(|v| v == "1"),
        };
        // Auto means every adapter, GL included; a named back end means just that one.
        let found = if backend == BackendChoice::Auto {
            all_adapters(&opts)
        } else {
            adapters(&opts)
        };
        let list: Vec<Gpu> = found
            .into_iter()
            .filter_map(|a| match Gpu::from_adapter(a) {
                Ok(g) => Some(g),
                Err(e) => {
                    eprintln!("skipping an adapter that would not open: {e}");
                    None
                }
            })
            .collect();
        if list.is_empty() {
            let msg = "no GPU adapter found (install mesa-vulkan-drivers for lavapipe)";
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{msg}; CI=true so this is a failure");
            }
            eprintln!("{msg}; GPU tests skipped");
        }
        for g in &list {
            eprintln!("test adapter: {} gemm {:?}", g.describe(), g.gemm_paths());
        }
        list
    })
}

/// Runs `body` on every adapter; a failure names the adapter.
pub fn for_each_gpu(mut body: impl FnMut(&Gpu)) {
    for gpu in devices() {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(gpu)));
        if let Err(e) = result {
            eprintln!("failed on adapter {}", gpu.describe());
            std::panic::resume_unwind(e);
        }
        gpu.check()
            .unwrap_or_else(|e| panic!("{}: {e}", gpu.describe()));
        let errors = std::mem::take(&mut *GPU_ERRORS.lock().unwrap());
        assert!(
            errors.is_empty(),
            "{}: GPU errors logged:\n{}",
            gpu.describe(),
            errors.join("\n")
        );
    }
}

#[allow(unused_imports)]
pub use vae_gpu::rng::Rng;

/// Asserts |got - want| <= tol[i] elementwise, naming the first offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (f64::from(got[i]) - want[i]).abs();
        assert!(
            err <= tol(i) && got[i].is_finite(),
            "{what}: element {i}: got {} want {} (|err| {err:.3e} > tol {:.3e})",
            got[i],
            want[i],
            tol(i)
        );
    }
}

/// Central differences (step `h`) of `f` with respect to every entry of `x`.
pub fn numeric_grad(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(&x);
            x[i] = orig - h;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * h)
        })
        .collect()
}
