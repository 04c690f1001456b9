//! Training-step throughput of the MLP and conv VAEs at batch 128 (and 512 for the MLP)
//! and the ResNet VAE at batch 64 on random 28x28 images, with launches and workspace bytes
//! per step, plus the slowest launches of each step (each launch repeated in one submit),
//! to show where a step's time goes.
//! Run: `cargo bench --bench train_step`.

use std::time::Instant;

use vae_gpu::gpu::{Gpu, GpuOptions, Matrix};
use vae_gpu::ops::adam::AdamConfig;
use vae_gpu::ops::gather::GpuImages;
use vae_gpu::ops::loss::LossSettings;
use vae_gpu::rng::Rng;
use vae_gpu::vae::step::{Batches, Samples, StepProgram, StepSpec};
use vae_gpu::vae::ModelConfig;

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("adapter: {}", gpu.describe());
    let mut rng = Rng::new(1);
    let n = 2048;
    let pixels: Vec<u8> = (0..n * 784).map(|_| rng.below(256) as u8).collect();
    let images = GpuImages::upload(&gpu, &pixels, 784, vae_gpu::data::Dtype::U8)?;
    let order: Vec<u32> = (0..n as u32).collect();
    let indices = Matrix::from_slice(&gpu, 1, n, bytemuck::cast_slice(&order), "indices")?;
    let mlp = ModelConfig::mlp(28, 28, 1);
    let conv = ModelConfig::conv(28, 28, 1);
    let resnet = ModelConfig::resnet(28, 28, 1);
    for (c, rows) in [(&mlp, 128), (&mlp, 512), (&conv, 128), (&resnet, 64)] {
        let params = c.params(&gpu, 1)?;
        let s = LossSettings {
            likelihood: c.likelihood,
            beta: 1.0,
            grad_scale: 1.0,
            gauss_var: 1.0,
            valid: rows,
            free_bits: 0.0,
        };
        let mut p = StepProgram::new(
            &gpu,
            &params,
            c,
            &Batches {
                images: &images,
                indices: &indices.buffer,
                count: n,
                labels: None,
            },
            &StepSpec {
                rows,
                settings: s,
                adam: Some(AdamConfig::default()),
                seed: 1,
                corruption: None,
                samples: Samples::ONE,
            },
        )?;
        let steps = match c.arch.as_str() {
            "mlp" => 20,
            "conv" => 10,
            _ => 4,
        };
        for warm in [true, false] {
            let t = Instant::now();
            for i in 0..if warm { 3 } else { steps } {
                p.prepare(&gpu, (i * rows) % n, i as u64, &s);
                p.submit(&gpu, None)?;
            }
            p.accum.read(&gpu)?;
            if !warm {
                let per = t.elapsed().as_secs_f64() / steps as f64;
                println!(
                    "{} batch {rows}: {:.2} ms/step, {:.0} samples/s, {} launches per step, {} workspace bytes",
                    c.arch,
                    per * 1e3,
                    rows as f64 / per,
                    p.launches().len(),
                    p.workspace_bytes()
                );
            }
        }
        if rows == 128 || c.arch == "resnet" {
            let mut times: Vec<(f64, String)> = p
                .launches()
                .into_iter()
                .map(|d| {
                    let reps = 10;
                    let t = Instant::now();
                    gpu.run(&vec![d; reps])
                        .and_then(|_| gpu.wait())
                        .expect("launch runs");
                    (t.elapsed().as_secs_f64() / reps as f64, d.label.clone())
                })
                .collect();
            let total: f64 = times.iter().map(|t| t.0).sum();
            times.sort_by(|a, b| b.0.total_cmp(&a.0));
            println!(
                "{} step launches, slowest first (sum {:.2} ms):",
                c.arch,
                total * 1e3
            );
            for (t, label) in times.iter().take(12) {
                println!("  {:7.3} ms  {label}", t * 1e3);
            }
        }
    }
    Ok(())
}
