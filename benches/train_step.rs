//! Training-step throughput of the MLP and conv VAEs at batch 128 (and 512 for the MLP)
//! and the ResNet VAE at batch 64 on random 28x28 images, with launches and workspace bytes
//! per step, plus the slowest launches of each step (each launch repeated in one submit),
//! to show where a step's time goes; and the sequence VAE (MOSES's, narrowed to 128/256 so
//! the bench stays short) on random sequences of the MOSES subset's lengths, in tokens/s.
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
    sequence_step(&gpu)
}

/// Training steps of the sequence VAE at batch 64: sequences of 20 to 50 random tokens of a
/// 23-token vocabulary (the MOSES subset's), one warm-up step, then 5 timed.
fn sequence_step(gpu: &Gpu) -> anyhow::Result<()> {
    use vae_gpu::data::sequence::{Sequences, Tokens, Vocab};
    use vae_gpu::vae::gru::step::{GruStep, Training};
    use vae_gpu::vae::gru::{GruParams, GruSpec};
    let vocab = Vocab {
        kind: Tokens::Chars,
        tokens: (0..23).map(|i| char::from(b'a' + i).to_string()).collect(),
    };
    let mut rng = Rng::new(2);
    let (count, width) = (64 * 6, 52);
    let mut data = Sequences {
        width,
        count,
        ..Sequences::default()
    };
    for _ in 0..count {
        let len = 20 + rng.below(31);
        let mut ids = vec![vocab.bos()];
        ids.extend((0..len).map(|_| rng.below(23) as u32));
        ids.push(vocab.eos());
        data.lengths.push(ids.len() as u32);
        ids.resize(width, vocab.pad());
        data.ids.extend(ids);
    }
    let spec = GruSpec {
        enc_hidden: 128,
        latent: 64,
        dec_hidden: 256,
        ..GruSpec::moses(vocab.len())
    };
    let params = GruParams::new(gpu, spec, 1)?;
    let training = Training {
        adam: AdamConfig::default(),
        clip: 50.0,
    };
    let records = 64;
    let mut step = GruStep::new(gpu, &params, records, width, Some(training), 1, 0)?;
    let mut tokens = 0;
    let mut start = Instant::now();
    for i in 0..6 {
        if i == 1 {
            gpu.wait()?;
            (start, tokens) = (Instant::now(), 0);
        }
        let batch: Vec<usize> = (i * records..(i + 1) * records).collect();
        tokens += step.set_batch(gpu, &vocab, &data, &batch, i as u64, 0.05)?;
        gpu.run(&step.launches())?;
    }
    gpu.wait()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "gru (embedding 26, encoder 128, latent 64, decoder 3 x 256) batch {records}, {width} ids: {:.1} ms/step, {:.0} sequences/s, {:.0} tokens/s, {} launches per step",
        secs / 5.0 * 1e3,
        (5 * records) as f64 / secs,
        tokens as f64 / secs,
        step.launches().len()
    );
    Ok(())
}
