//! Streaming past the GPU budget: trains `vae-gpu train --bench-steps` on a generated
//! uint8 .npy of 64x64 RGB images streamed from disk (`--gpu-data-mib 0`), and the same
//! model on a small array that the GPU holds, alternating; prints samples/s of each and the
//! streamed run's peak resident memory (VmHWM, polled every 50 ms).
//!
//! `cargo bench --bench stream` runs a small array once (CI: figures only);
//! `cargo bench --bench stream -- --gib 3 --steps 200 --rounds 2` the full size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SIDE: usize = 64;
const IMAGE: usize = SIDE * SIDE * 3;

/// Writes `n` images of random colour discs as a uint8 .npy, through a buffered writer.
fn write_array(path: &Path, n: usize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(&vae_gpu::data::npy::header_bytes(
        "|u1",
        &[n, SIDE, SIDE, 3],
    ))?;
    let mut rng = vae_gpu::rng::Rng::new(7);
    let mut image = vec![0u8; IMAGE];
    for _ in 0..n {
        let (cx, cy, r) = (
            rng.uniform(0.0, 64.0),
            rng.uniform(0.0, 64.0),
            rng.uniform(8.0, 30.0),
        );
        let colour = [rng.below(256), rng.below(256), rng.below(256)];
        for (p, px) in image.chunks_exact_mut(3).enumerate() {
            let (x, y) = ((p % SIDE) as f64, (p / SIDE) as f64);
            let inside = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() < r;
            for (c, v) in px.iter_mut().enumerate() {
                *v = if inside { colour[c] as u8 } else { 20 };
            }
        }
        out.write_all(&image)?;
    }
    out.flush()
}

/// The peak resident memory of process `pid` so far, in MiB.
fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Trains `steps` steps on `data`; returns (samples/s, peak RSS in MiB).
fn run(data: &Path, steps: usize, extra: &[&str], out: &Path) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vae-gpu"))
        .args(["--json", "-q", "train", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--hidden", "256", "--latent", "32", "--batch-size", "128"])
        .args([
            "--test-fraction",
            "0.01",
            "--bench-steps",
            &steps.to_string(),
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("vae-gpu runs");
    let mut peak = 0.0f64;
    while child.try_wait().expect("waits").is_none() {
        peak = peak.max(peak_mib(child.id()).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("finishes");
    assert!(output.status.success(), "vae-gpu train failed");
    let line = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    (result["samples_per_sec"].as_f64().expect("samples/s"), peak)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    let gib = flag("--gib", 0.03);
    let steps = flag("--steps", 10.0) as usize;
    let rounds = flag("--rounds", 1.0) as usize;
    let dir: PathBuf = tempfile::tempdir().expect("temp dir").keep();
    let big = dir.join("big.npy");
    let small = dir.join("small.npy");
    let n = (gib * (1u64 << 30) as f64 / IMAGE as f64) as usize;
    let fits = n.min(20_000);
    let started = std::time::Instant::now();
    write_array(&big, n).expect("writes the big array");
    write_array(&small, fits).expect("writes the small array");
    println!(
        "stream bench: {n} images of {SIDE}x{SIDE}x3 ({:.2} GB) written in {:.1} s; MLP 256-32, batch 128, {steps} steps per run",
        (n * IMAGE) as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let (mut streamed, mut resident, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (s, peak) = run(&big, steps, &["--gpu-data-mib", "0"], &dir.join("s"));
        let (r, _) = run(&small, steps, &[], &dir.join("r"));
        println!(
            "round {round}: streamed {s:.0} samples/s (peak RSS {peak:.0} MiB), resident {r:.0} samples/s ({fits} images)"
        );
        streamed.push(s);
        resident.push(r);
        peaks.push(peak);
    }
    let (s, r) = (median(streamed), median(resident));
    println!(
        "stream bench: streamed {s:.0} samples/s = {:.2} x resident {r:.0}; peak RSS {:.0} MiB",
        s / r,
        peaks.iter().cloned().fold(0.0, f64::max)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
