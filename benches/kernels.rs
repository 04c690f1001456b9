//! Kernel throughput: GFLOP/s of the MLP VAE's GEMM shapes at batch 128 on each GEMM kernel
//! the adapter runs, plus per-dispatch and per-submit overhead.
//! Run: `cargo bench --bench kernels` (VAE_GPU_BACKEND / VAE_GPU_ADAPTER pick the device).

use std::time::Instant;

use vae_gpu::gpu::{BackendChoice, Gpu, GpuOptions, Matrix};
use vae_gpu::ops::conv::{conv2d, conv2d_implicit, ConvGeom, ConvIo, Shape};
use vae_gpu::ops::elementwise::act_forward;
use vae_gpu::ops::gemm::{gemm_with, GemmSpec};
use vae_gpu::ops::Activation;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds per run of `launch`: the median of 5 batches, each about 20 ms long (at most 20
/// runs), or a single run for a kernel slower than 50 ms, so that the slow kernels (CPU
/// drivers run some 100x slower than others) keep the bench short.
fn time_launch(gpu: &Gpu, launch: &vae_gpu::gpu::Dispatch) -> anyhow::Result<f64> {
    let once = || -> anyhow::Result<f64> {
        let t = Instant::now();
        gpu.run(&[launch])?;
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let first = once()?;
    if first > 0.05 {
        return once();
    }
    let reps = ((0.02 / first) as usize).clamp(1, 20);
    let batch: Vec<_> = std::iter::repeat_n(launch, reps).collect();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        gpu.run(&batch)?;
        gpu.wait()?;
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok(median(times))
}

fn options() -> GpuOptions {
    let backend = match std::env::var("VAE_GPU_BACKEND").as_deref() {
        Ok("vulkan") => BackendChoice::Vulkan,
        Ok("gl") => BackendChoice::Gl,
        _ => BackendChoice::Auto,
    };
    GpuOptions {
        backend,
        adapter: std::env::var("VAE_GPU_ADAPTER").ok(),
        validation: false,
    }
}

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&options())?;
    println!("adapter: {}", gpu.describe());
    // (label, M, N, K, trans_a, trans_b) for Linear layers stored [out, in] like PyTorch.
    let shapes = [
        ("encoder fwd  X[128x784] W1^T", 128, 400, 784, false, true),
        ("decoder fwd  H[128x400] W4^T", 128, 784, 400, false, true),
        ("encoder dX   dY[128x400] W1", 128, 784, 400, false, false),
        ("decoder dX   dY[128x784] W4", 128, 400, 784, false, false),
        ("encoder dW   dY^T[400x128] X", 400, 784, 128, true, false),
        ("decoder dW   dY^T[784x128] H", 784, 400, 128, true, false),
        // The conv VAE's largest products at batch 128 (conv2 / deconv1, 7x7 <-> 14x14).
        (
            "conv2 fwd    cols[6272x512] W^T",
            6272,
            64,
            512,
            false,
            true,
        ),
        ("deconv1 fwd  X[6272x64] W", 6272, 512, 64, false, false),
        (
            "conv2 dW     dY^T[64x6272] cols",
            64,
            512,
            6272,
            true,
            false,
        ),
    ];
    for path in gpu.gemm_paths() {
        for &(label, m, n, k, ta, tb) in &shapes {
            let a = if ta {
                Matrix::zeros(&gpu, k, m, "a")?
            } else {
                Matrix::zeros(&gpu, m, k, "a")?
            };
            let b = if tb {
                Matrix::zeros(&gpu, n, k, "b")?
            } else {
                Matrix::zeros(&gpu, k, n, "b")?
            };
            a.write(&gpu, &vec![0.5; a.rows * a.cols])?;
            b.write(&gpu, &vec![0.25; b.rows * b.cols])?;
            let c = Matrix::zeros(&gpu, m, n, "c")?;
            let spec = GemmSpec {
                trans_a: ta,
                trans_b: tb,
                ..Default::default()
            };
            let d = gemm_with(&gpu, path, &a, &b, &c, None, spec)?;
            let t = time_launch(&gpu, &d)?;
            let gflops = 2.0 * (m * n * k) as f64 / t / 1e9;
            println!(
                "gemm {path:?} {label:32} {:8.3} ms  {gflops:6.1} GFLOP/s",
                t * 1e3
            );
        }
    }
    // The conv VAE's conv2 forward at batch 128 (14x14x32 -> 7x7x64, k4 s2 p1) both ways.
    let g = ConvGeom::new(
        128,
        Shape {
            h: 14,
            w: 14,
            c: 32,
        },
        4,
        2,
        1,
    )?;
    let x = Matrix::zeros(&gpu, g.col_rows() * 4, 32, "x")?;
    let (w, bias) = (
        Matrix::zeros(&gpu, 64, 512, "w")?,
        Matrix::zeros(&gpu, 1, 64, "b")?,
    );
    let cols = Matrix::zeros(&gpu, g.col_rows(), g.col_cols(), "cols")?;
    let y = Matrix::zeros(&gpu, g.col_rows(), 64, "y")?;
    let io = ConvIo {
        geom: g,
        weight: &w,
        bias: &bias,
        cols: &cols,
    };
    let explicit = conv2d(&gpu, &io, &x, &y, Activation::Relu)?;
    let implicit = conv2d_implicit(
        &gpu,
        &io.geom,
        (io.weight, io.bias),
        &x,
        &y,
        Activation::Relu,
    )?;
    for (label, launches) in [
        ("im2col + GEMM", explicit.iter().collect::<Vec<_>>()),
        ("implicit GEMM", implicit.iter().collect()),
    ] {
        if launches.is_empty() {
            continue;
        }
        let batch: Vec<_> = std::iter::repeat_n(launches, 10).flatten().collect();
        gpu.run(&batch)?;
        gpu.wait()?;
        let t = Instant::now();
        gpu.run(&batch)?;
        gpu.wait()?;
        println!(
            "conv2 forward [128x14x14x32 -> 7x7x64] {label:14} {:8.3} ms",
            t.elapsed().as_secs_f64() * 100.0
        );
    }
    // Overheads, with a launch that does almost nothing.
    let x = Matrix::zeros(&gpu, 1, 4, "x")?;
    let y = Matrix::zeros(&gpu, 1, 4, "y")?;
    let tiny = act_forward(&gpu, &x, &y, Activation::Relu)?;
    let many: Vec<_> = std::iter::repeat_n(&tiny, 1000).collect();
    gpu.run(&many)?;
    gpu.wait()?;
    let t = Instant::now();
    gpu.run(&many)?;
    gpu.wait()?;
    println!(
        "per dispatch (1000 in one submit): {:8.1} us",
        t.elapsed().as_secs_f64() * 1e3
    );
    // A launch reading a 4-float texture: each is its own pass after a copy.
    let a = Matrix::zeros(&gpu, 4, 4, "a")?;
    let c = Matrix::zeros(&gpu, 4, 4, "c")?;
    let tiny_gemm = |path| gemm_with(&gpu, path, &a, &a, &c, None, GemmSpec::default());
    let plain = tiny_gemm(vae_gpu::gpu::GemmPath::Register)?;
    let tex = tiny_gemm(vae_gpu::gpu::GemmPath::RegisterTex)?;
    for (label, launch) in [
        ("buffer GEMM 4x4x4", &plain),
        ("texture GEMM 4x4x4 (2 copies + pass)", &tex),
    ] {
        let many: Vec<_> = std::iter::repeat_n(launch, 200).collect();
        gpu.run(&many)?;
        gpu.wait()?;
        let t = Instant::now();
        gpu.run(&many)?;
        gpu.wait()?;
        println!(
            "per {label} (200 in one submit): {:8.1} us",
            t.elapsed().as_secs_f64() * 1e6 / 200.0
        );
    }
    let t = Instant::now();
    for _ in 0..100 {
        gpu.run(&[&tiny])?;
        gpu.wait()?;
    }
    println!(
        "per submit + wait (100 submits):   {:8.1} us",
        t.elapsed().as_secs_f64() * 1e4
    );
    Ok(())
}
