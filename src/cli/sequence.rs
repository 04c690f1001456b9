//! Sequence models (SMILES strings, lines of text) on the command line: `train --arch gru`
//! and `sample` of a sequence run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::train::TrainArgs;
use super::{open_gpu, say, DeviceArgs};
use crate::data::sequence::{self, SequenceData, SequenceOptions, Tokens};
use crate::vae::checkpoint::{self, Pick};
use crate::vae::gru::train::{
    is_sequence_checkpoint, load_checkpoint, SeqEvent, SeqTrainConfig, SequenceRun,
};
use crate::vae::gru::{GruParams, GruSpec};
use crate::vae::rundir::RunDir;

/// The data a sequence run reads when `--data` is not given: the bundled MOSES subset.
pub fn bundled_molecules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/moses/smiles.csv.gz")
}

/// The most tokens `--max-length` allows by default (MOSES generates up to 100).
pub const DEFAULT_MAX_LENGTH: usize = 100;

/// Flags that shape image and table models, refused for a sequence model with the flag's
/// name.
fn refuse_other_flags(a: &TrainArgs) -> anyhow::Result<()> {
    let given: [(&str, bool); 20] = [
        ("--max-loss-ratio", a.max_loss_ratio.is_some()),
        ("--conv-channels", a.conv_channels.is_some()),
        ("--blocks", a.blocks.is_some()),
        ("--groups", a.groups.is_some()),
        ("--activation", a.activation.is_some()),
        ("--conditional", a.conditional),
        ("--prior", a.prior.is_some()),
        ("--likelihood", a.likelihood.is_some()),
        ("--binarize", a.binarize.is_some()),
        ("--gauss-var", a.gauss_var.is_some()),
        ("--kl-cycles", a.kl_cycles.is_some()),
        ("--free-bits", a.free_bits.is_some()),
        ("--iwae-k", a.iwae_k.is_some()),
        ("--elbo-k", a.elbo_k.is_some()),
        ("--output-bias-from-data", a.output_bias_from_data),
        ("--lr-schedule", a.lr_schedule.is_some()),
        (
            "--adam-betas / --adam-eps",
            a.adam_betas.is_some() || a.adam_eps.is_some(),
        ),
        ("--weight-decay", a.weight_decay.is_some()),
        (
            "--classes / --noise",
            a.classes.is_some() || a.noise.is_some(),
        ),
        ("--size / --channels / --labels / --label-column", {
            let d = &a.data;
            d.size.is_some()
                || d.channels.is_some()
                || d.labels.is_some()
                || d.label_column.is_some()
        }),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
        bail!(
            "{flag} shapes image and table models; a sequence model (--arch gru) does not take it"
        );
    }
    if a.arch.as_deref().is_some_and(|arch| arch != "gru") {
        bail!(
            "--arch {}: this is a sequence model's run (--arch gru)",
            a.arch.as_deref().unwrap_or_default()
        );
    }
    if a.resume.is_some() {
        let kept: [(&str, bool); 7] = [
            (
                "--data / --sequence-column / --tokens / --max-length / --test-fraction / --limit",
                {
                    a.data.data.is_some()
                        || a.sequence_column.is_some()
                        || a.tokens.is_some()
                        || a.max_length.is_some()
                        || a.data.test_fraction.is_some()
                        || a.limit.is_some()
                },
            ),
            (
                "--hidden / --latent / --decoder-layers",
                a.hidden.is_some() || a.latent.is_some() || a.decoder_layers.is_some(),
            ),
            ("--batch-size", a.batch_size.is_some()),
            ("--lr", a.lr.is_some()),
            (
                "--beta / --kl-warmup",
                a.beta.is_some() || a.kl_warmup.is_some(),
            ),
            (
                "--word-dropout / --clip",
                a.word_dropout.is_some() || a.clip.is_some(),
            ),
            ("--seed", a.seed.is_some()),
        ];
        if let Some((flag, _)) = kept.iter().find(|(_, g)| *g) {
            bail!("{flag}: a resumed sequence run keeps its settings; only --epochs may change (start a new run with --out to change them)");
        }
    }
    Ok(())
}

/// Reads the sequences of `path`, warning of those left out for their length.
fn load_data(
    path: &Path,
    opts: &SequenceOptions,
    vocab: Option<&crate::data::sequence::Vocab>,
) -> anyhow::Result<SequenceData> {
    let data = sequence::load(path, opts, vocab)?;
    if data.skipped > 0 {
        log::warn!(
            "{}: {} sequences over --max-length {} tokens left out (--strict makes this an error)",
            path.display(),
            data.skipped,
            opts.max_length
        );
    }
    Ok(data)
}

/// `train --arch gru`: a new sequence run in `dir`, or `--resume` of one.
pub fn train(device: &DeviceArgs, a: &TrainArgs, dir: &RunDir) -> anyhow::Result<()> {
    refuse_other_flags(a)?;
    let gpu = open_gpu(device)?;
    let (mut run, params, data) = match &a.resume {
        Some(d) => {
            let at = checkpoint::resolve(d, Pick::Last)
                .with_context(|| format!("resuming {}", d.display()))?;
            if !is_sequence_checkpoint(&at) {
                bail!(
                    "--resume {}: an image or table model's run; resume it without --arch gru",
                    d.display()
                );
            }
            let (mut run, params) = load_checkpoint(&gpu, &at, true)
                .with_context(|| format!("resuming {}", at.display()))?;
            if let Some(e) = a.epochs {
                run.train.epochs = e as usize;
            }
            let data = load_data(
                Path::new(&run.data),
                &run.options(a.data.strict),
                Some(&run.vocab),
            )?;
            (run, params, data)
        }
        None => {
            let path = a.data.data.clone().unwrap_or_else(bundled_molecules);
            let max_length = a.max_length.map_or(DEFAULT_MAX_LENGTH, |m| m as usize);
            let tokens = a.tokens.unwrap_or_default();
            let test_fraction = a.data.test_fraction.unwrap_or(0.1);
            let opts = SequenceOptions {
                column: a.sequence_column.clone(),
                tokens,
                max_length,
                strict: a.data.strict,
                test_fraction,
            };
            let mut data = load_data(&path, &opts, None)?;
            if let Some(n) = a.limit {
                let keep: Vec<usize> = (0..data.train.count.min(n as usize)).collect();
                data.train = data.train.select(&keep);
            }
            let mut spec = GruSpec::moses(data.vocab.len());
            match a.hidden.as_deref() {
                None => {}
                Some([h]) => (spec.enc_hidden, spec.dec_hidden) = (*h as usize, *h as usize),
                Some([e, d]) => (spec.enc_hidden, spec.dec_hidden) = (*e as usize, *d as usize),
                Some(_) => bail!(
                    "--hidden for a sequence model: one width for both GRUs, or ENCODER,DECODER"
                ),
            }
            if let Some(z) = &a.latent {
                if !z.below().is_empty() {
                    bail!("--latent {z:?}: stacked latent layers are built for the MLP; a sequence model has one code (give one size)");
                }
                spec.latent = z.code();
            }
            if let Some(l) = a.decoder_layers {
                spec.dec_layers = l as usize;
            }
            spec.check().map_err(anyhow::Error::msg)?;
            let epochs = a.epochs.map_or(10, |e| e as usize);
            let mut train = SeqTrainConfig::moses(epochs);
            train.kl_warmup = a.kl_warmup.map_or(epochs, |w| w as usize);
            train.batch_size = a.batch_size.map_or(train.batch_size, |b| b as usize);
            train.lr = a.lr.unwrap_or(train.lr);
            train.beta = a.beta.unwrap_or(train.beta);
            train.word_dropout = a.word_dropout.unwrap_or(0.0);
            train.clip = a.clip.unwrap_or(train.clip);
            train.seed = a.seed.unwrap_or(1);
            let params = GruParams::new(&gpu, spec, train.seed)?;
            let run = SequenceRun {
                spec,
                vocab: data.vocab.clone(),
                max_length,
                train,
                data: path.display().to_string(),
                column: a.sequence_column.clone(),
                test_fraction,
                epoch: 0,
                step: 0,
                history: Vec::new(),
            };
            (run, params, data)
        }
    };
    let s = run.spec;
    say!(
        "data: {} ({} training and {} test sequences, up to {} tokens); vocabulary: {} tokens and begin, end, padding",
        run.data,
        data.train.count,
        data.test.count,
        data.train.width - 2,
        run.vocab.tokens.len()
    );
    say!(
        "model: GRU VAE, embedding {}, encoder {}, latent {}, decoder {} x {}; {:.2} M parameters",
        s.embed,
        s.enc_hidden,
        s.latent,
        s.dec_layers,
        s.dec_hidden,
        params.parameter_count() as f64 / 1e6
    );
    if let Some(steps) = a.bench_steps {
        return bench(&gpu, &params, &run, &data, steps as usize);
    }
    if run.epoch >= run.train.epochs {
        say!(
            "the run already has {} epochs; nothing to do (raise --epochs)",
            run.epoch
        );
        return Ok(());
    }
    super::train::TRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
    let bar = super::progress_bar(0, "epoch", "steps");
    let epochs = run.train.epochs;
    crate::vae::gru::train::train(
        &gpu,
        &params,
        &mut run,
        &data,
        dir,
        |e| match e {
            SeqEvent::Step(done, total) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            SeqEvent::Epoch(r) => {
                bar.suspend(|| {
                say!(
                    "epoch {}/{epochs}: train {:.3} nats/sequence (recon {:.3}, KL {:.3}), test {:.3} (recon {:.3}, KL {:.3}), KL weight {:.4}, {:.1} s",
                    r.epoch,
                    r.train_recon + r.train_kl,
                    r.train_recon,
                    r.train_kl,
                    r.test_nelbo(),
                    r.test_recon,
                    r.test_kl,
                    r.beta,
                    r.seconds
                )
            });
                bar.set_position(0);
            }
        },
        &super::train::STOP,
    )?;
    bar.finish_and_clear();
    say!("checkpoints in {}", dir.path().display());
    Ok(())
}

/// The sequence checkpoint a `--model` names (the newest run's by default), if it is one:
/// a run's last checkpoint, or a checkpoint directory.
pub fn sequence_checkpoint(arg: &super::ModelArg) -> anyhow::Result<Option<PathBuf>> {
    let path = match &arg.model {
        Some(p) => p.clone(),
        None => match checkpoint::newest_run(Path::new(super::RUNS_DIR)) {
            Ok(p) => p,
            Err(_) => return Ok(None),
        },
    };
    Ok(checkpoint::resolve(&path, Pick::Last)
        .ok()
        .filter(|at| is_sequence_checkpoint(at)))
}

/// Sequences per generation launch list (one submit each).
const GENERATE_BATCH: usize = 512;

/// `sample` of a sequence model: `count` sequences decoded from N(0, I) codes, written one
/// per line; for SMILES, the share of valid, unique and novel ones.
pub fn sample(device: &DeviceArgs, a: &super::sample::SampleArgs, at: &Path) -> anyhow::Result<()> {
    if a.prior.is_some() || a.separate.is_some() || a.cols.is_some() || !a.class.class.is_empty() {
        bail!("--prior, --separate, --cols and --class are for image and table models; a sequence model samples from N(0, I) into a text file");
    }
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let out = super::output_path(a.out.as_deref(), || {
        super::output_dir(at).join("samples.txt")
    })?;
    let count = a.count.map_or(100, |n| n as usize);
    let ids = generate(&gpu, &params, &run, count, a.seed, a.temperature)?;
    let strings: Vec<String> = ids.iter().map(|s| run.vocab.decode(s)).collect();
    let mut text = strings.join("\n");
    text.push('\n');
    crate::io::write_atomic(&out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let ended = ids.iter().filter(|s| s.contains(&run.vocab.eos())).count();
    let unique: std::collections::HashSet<&str> = strings.iter().map(String::as_str).collect();
    let mut human = format!(
        "wrote {count} sequences to {} ({ended} ended within {} tokens, {} distinct)",
        out.display(),
        run.max_length,
        unique.len()
    );
    let mut json = serde_json::json!({"sequences": count, "out": out, "ended": ended, "distinct": unique.len()});
    if run.vocab.kind == Tokens::Smiles {
        let (m, training) = smiles_metrics(&run, &strings)?;
        human += &format!(
            "\nvalid {:.4} ({} of {}), unique {:.4} of the valid, novel {:.4} of the unique (not among the {} training molecules; canonical SMILES, validity as RDKit decides it)",
            m.validity(),
            m.valid,
            m.generated,
            m.uniqueness(),
            m.novelty(),
            training
        );
        json["valid"] = m.validity().into();
        json["unique"] = m.uniqueness().into();
        json["novel"] = m.novelty().into();
    }
    super::report(&human, json);
    Ok(())
}

/// Validity, uniqueness and novelty of `generated` against the run's training split, and
/// that split's size.
fn smiles_metrics(
    run: &SequenceRun,
    generated: &[String],
) -> anyhow::Result<(crate::data::smiles::GenerationMetrics, usize)> {
    use crate::data::smiles;
    let training = sequence::training_strings(Path::new(&run.data), &run.options(false))
        .with_context(|| format!("reading the run's training data {} for novelty", run.data))?;
    let known = smiles::canonical_set(&training);
    Ok((smiles::metrics(generated, &known), training.len()))
}

/// `count` sequences' ids from N(0, I) codes (Philox, seed `seed`), at `temperature`.
pub fn generate(
    gpu: &crate::gpu::Gpu,
    params: &GruParams,
    run: &SequenceRun,
    count: usize,
    seed: u64,
    temperature: f32,
) -> anyhow::Result<Vec<Vec<u32>>> {
    use crate::ops::sample::{sample_prior, set_noise, Noise};
    use crate::vae::gru::decode::GruDecoder;
    use crate::vae::step::STREAM_PRIOR;
    let bar = super::progress_bar(count as u64, "sample", "sequences");
    let mut out = Vec::with_capacity(count);
    let records = count.min(GENERATE_BATCH);
    let noise = |i: usize| Noise {
        seed,
        step: i as u32,
        stream: STREAM_PRIOR,
    };
    let mut d = GruDecoder::new(
        gpu,
        params,
        &run.vocab,
        records,
        run.max_length,
        temperature,
        noise(0),
    )?;
    let prior = sample_prior(gpu, &d.z, noise(0), 1.0)?;
    for (i, start) in (0..count).step_by(records).enumerate() {
        // Each batch its own codes and draws.
        d.set_noise(gpu, noise(i));
        set_noise(gpu, &prior, 0, &d.z, noise(i), 1.0);
        gpu.run(&[&prior])?;
        out.extend(d.run(gpu)?.into_iter().take(records.min(count - start)));
        bar.set_position(out.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// `--bench-steps N`: one warm-up step (which compiles the kernels), then N training steps
/// timed; prints sequences/s and target tokens/s, writes nothing.
fn bench(
    gpu: &crate::gpu::Gpu,
    params: &GruParams,
    run: &SequenceRun,
    data: &SequenceData,
    steps: usize,
) -> anyhow::Result<()> {
    let t = &run.train;
    let mut step = crate::vae::gru::train::training_step(gpu, params, t, &data.train)?;
    let records = step.records;
    let order = crate::rng::Rng::new(t.seed).permutation(data.train.count);
    let batch = |i: usize| -> Vec<usize> {
        (0..records)
            .map(|k| order[(i * records + k) % order.len()] as usize)
            .collect()
    };
    step.set_batch(gpu, &run.vocab, &data.train, &batch(0), 0, t.beta)?;
    gpu.run(&step.launches())?;
    gpu.wait()?;
    let start = std::time::Instant::now();
    let mut tokens = 0;
    for i in 1..=steps {
        tokens += step.set_batch(gpu, &run.vocab, &data.train, &batch(i), i as u64, t.beta)?;
        gpu.run(&step.launches())?;
    }
    gpu.wait()?;
    let secs = start.elapsed().as_secs_f64();
    super::report(
        &format!(
            "bench: {steps} steps of {records} sequences ({} ids wide): {:.1} sequences/s, {:.0} tokens/s",
            data.train.width,
            (steps * records) as f64 / secs,
            tokens as f64 / secs
        ),
        serde_json::json!({"steps": steps, "batch": records, "sequences_per_s": (steps * records) as f64 / secs, "tokens_per_s": tokens as f64 / secs}),
    );
    Ok(())
}

/// What the encoder makes of some sequences: per sequence, mu | logvar and its losses
/// (summed cross-entropy with one posterior sample, KL), in nats.
struct Encoded {
    mulv: Vec<Vec<f32>>,
    recon: Vec<f64>,
    kl: Vec<f64>,
}

/// Encodes `strings` (each with its line in `path`, for messages): a token the vocabulary
/// lacks, or a sequence over the run's --max-length, is an error naming the line.
fn encode_strings(
    gpu: &crate::gpu::Gpu,
    params: &GruParams,
    run: &SequenceRun,
    path: &Path,
    strings: &[(u64, String)],
) -> anyhow::Result<Encoded> {
    use crate::vae::gru::step::GruStep;
    use crate::vae::step::STREAM_EVAL;
    let seqs = sequence::Sequences::for_model(path, &run.vocab, strings, run.max_length)?;
    let records = seqs.count.clamp(1, run.train.batch_size);
    let mut step = GruStep::new(
        gpu,
        params,
        records,
        seqs.width,
        None,
        run.train.seed,
        STREAM_EVAL,
    )?;
    let z2 = 2 * run.spec.latent;
    let mut out = Encoded {
        mulv: Vec::new(),
        recon: Vec::new(),
        kl: Vec::new(),
    };
    let rows: Vec<usize> = (0..seqs.count).collect();
    for (i, chunk) in rows.chunks(records).enumerate() {
        step.set_batch(gpu, &run.vocab, &seqs, chunk, i as u64, 1.0)?;
        gpu.run(&step.launches())?;
        let mulv = step.mulv.read(gpu)?;
        let per = step.per_sample.read(gpu)?;
        for r in 0..chunk.len() {
            out.mulv.push(mulv[r * z2..][..z2].to_vec());
            out.recon.push(f64::from(per[r * 3]));
            out.kl.push(f64::from(per[r * 3 + 1]));
        }
    }
    Ok(out)
}

/// The strings a sequence command reads: `--data` (a CSV column as the run's, or lines), else
/// the run's own test split.
fn input_strings(
    run: &SequenceRun,
    data: Option<&Path>,
) -> anyhow::Result<(PathBuf, Vec<(u64, String)>)> {
    match data {
        Some(p) => {
            let column = run.column.as_deref().filter(|_| sequence::is_csv(p));
            Ok((p.to_path_buf(), sequence::read_strings(p, column)?))
        }
        None => {
            let path = PathBuf::from(&run.data);
            let d = sequence::load(&path, &run.options(false), Some(&run.vocab))?;
            Ok((
                path,
                d.test
                    .text
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (i as u64 + 1, s))
                    .collect(),
            ))
        }
    }
}

/// Greedy decoding (the likeliest token each step) of `codes` (z rows).
fn decode_codes(
    gpu: &crate::gpu::Gpu,
    params: &GruParams,
    run: &SequenceRun,
    codes: &[Vec<f32>],
) -> anyhow::Result<Vec<String>> {
    use crate::ops::sample::Noise;
    use crate::vae::gru::decode::GruDecoder;
    let mut out = Vec::new();
    for chunk in codes.chunks(GENERATE_BATCH) {
        let d = GruDecoder::new(
            gpu,
            params,
            &run.vocab,
            chunk.len(),
            run.max_length,
            0.0,
            Noise::default(),
        )?;
        let mut z: Vec<f32> = chunk.iter().flatten().copied().collect();
        z.resize(d.rows * run.spec.latent, 0.0);
        d.z.write(gpu, &z)?;
        out.extend(d.run(gpu)?.iter().map(|ids| run.vocab.decode(ids)));
    }
    Ok(out)
}

/// A sequence command's model: (checkpoint, run, parameters).
fn open_model(gpu: &crate::gpu::Gpu, at: &Path) -> anyhow::Result<(SequenceRun, GruParams)> {
    let loaded = load_checkpoint(gpu, at, false)
        .with_context(|| format!("loading model {}", at.display()))?;
    say!("model: {}", at.display());
    Ok(loaded)
}

/// `score` of a sequence model: each sequence's -ELBO (summed cross-entropy with one
/// posterior sample, plus KL), higher is more anomalous, into a CSV.
pub fn score(device: &DeviceArgs, a: &super::score::ScoreArgs, at: &Path) -> anyhow::Result<()> {
    if a.metric != "elbo" {
        bail!(
            "--metric {}: a sequence model scores by -ELBO only (--metric elbo)",
            a.metric
        );
    }
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let (path, strings) = input_strings(&run, a.data.data.as_deref())?;
    let out = super::output_path(a.out.as_deref(), || {
        super::output_dir(at).join("scores.csv")
    })?;
    let e = encode_strings(&gpu, &params, &run, &path, &strings)?;
    let mut csv = String::from("line,sequence,recon,kl,score\n");
    let scores: Vec<f64> = e.recon.iter().zip(&e.kl).map(|(r, k)| r + k).collect();
    for (((line, s), (r, k)), sc) in strings.iter().zip(e.recon.iter().zip(&e.kl)).zip(&scores) {
        csv += &format!(
            "{line},\"{}\",{r:.4},{k:.4},{sc:.4}\n",
            s.replace('"', "\"\"")
        );
    }
    crate::io::write_atomic(&out, csv.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&x, &y| scores[y].total_cmp(&scores[x]));
    let top: Vec<String> = order
        .iter()
        .take(3)
        .map(|&i| format!("{} ({:.1})", strings[i].1, scores[i]))
        .collect();
    super::report(
        &format!(
            "scored {} sequences of {} into {}: mean -ELBO {mean:.3} nats; most anomalous: {}",
            scores.len(),
            path.display(),
            out.display(),
            top.join(", ")
        ),
        serde_json::json!({"sequences": scores.len(), "mean": mean, "out": out}),
    );
    Ok(())
}

/// `reconstruct` of a sequence model: the first `count` sequences (of --data, or the test
/// split) encoded to their means and decoded greedily, side by side in a text file.
pub fn reconstruct(
    device: &DeviceArgs,
    a: &super::reconstruct::ReconstructArgs,
    at: &Path,
) -> anyhow::Result<()> {
    if a.class.is_some() {
        bail!("--class is for conditional image models; a sequence model has no classes");
    }
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let (path, mut strings) = input_strings(&run, a.data.data.as_deref())?;
    strings.truncate(a.count as usize);
    let out = super::output_path(a.out.as_deref(), || {
        super::output_dir(at).join("reconstruction.txt")
    })?;
    let e = encode_strings(&gpu, &params, &run, &path, &strings)?;
    let z = run.spec.latent;
    let means: Vec<Vec<f32>> = e.mulv.iter().map(|m| m[..z].to_vec()).collect();
    let decoded = decode_codes(&gpu, &params, &run, &means)?;
    let same = strings
        .iter()
        .zip(&decoded)
        .filter(|((_, s), d)| s == *d)
        .count();
    let mut text = String::new();
    for ((_, s), d) in strings.iter().zip(&decoded) {
        text += &format!("{s}\t{d}\n");
    }
    crate::io::write_atomic(&out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    super::report(
        &format!(
            "{} sequences and their reconstructions (the decoder's likeliest tokens from each mean) in {}: {same} exact",
            strings.len(),
            out.display()
        ),
        serde_json::json!({"sequences": strings.len(), "exact": same, "out": out}),
    );
    Ok(())
}

/// `interpolate --from A --to B` of a sequence model: the sequences decoded (greedily) along
/// the path between the two strings' means.
pub fn interpolate(
    device: &DeviceArgs,
    a: &super::interpolate::InterpolateArgs,
    at: &Path,
) -> anyhow::Result<()> {
    if !a.class.class.is_empty() {
        bail!("--class is for conditional image models; a sequence model has no classes");
    }
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let ends = [(1, a.from.clone()), (2, a.to.clone())];
    let e = encode_strings(&gpu, &params, &run, Path::new("--from/--to"), &ends)?;
    let z = run.spec.latent;
    let n = a.count as usize;
    let codes: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            super::interpolate::interpolate(
                &e.mulv[0][..z],
                &e.mulv[1][..z],
                i as f32 / (n - 1) as f32,
                a.slerp,
            )
        })
        .collect();
    let path = decode_codes(&gpu, &params, &run, &codes)?;
    let out = super::output_path(a.out.as_deref(), || {
        super::output_dir(at).join("interpolate.txt")
    })?;
    let smiles = run.vocab.kind == Tokens::Smiles;
    let mut text = String::new();
    for s in &path {
        let mark = match smiles && crate::data::smiles::canonical(s).is_none() {
            true => "\t(not a valid molecule)",
            false => "",
        };
        text += &format!("{s}{mark}\n");
    }
    crate::io::write_atomic(&out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    super::report(
        &format!(
            "{} sequences from {} to {} in {}:\n{}",
            n,
            a.from,
            a.to,
            out.display(),
            text.trim_end()
        ),
        serde_json::json!({"path": path, "out": out}),
    );
    Ok(())
}

/// `embed` of a sequence model: each sequence's mu and logvar (features for a classifier of
/// few labels) into a CSV beside its line and string.
pub fn embed(device: &DeviceArgs, a: &super::embed::EmbedArgs, at: &Path) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let (path, strings) = input_strings(&run, a.data.data.as_deref())?;
    let out = super::output_path(a.out.as_deref(), || {
        super::output_dir(at).join("latents.csv")
    })?;
    let e = encode_strings(&gpu, &params, &run, &path, &strings)?;
    let z = run.spec.latent;
    let mut csv = String::from("line,sequence");
    for name in ["mu", "logvar"] {
        (0..z).for_each(|j| csv += &format!(",{name}_{j}"));
    }
    csv.push('\n');
    for ((line, s), m) in strings.iter().zip(&e.mulv) {
        csv += &format!("{line},\"{}\"", s.replace('"', "\"\""));
        m.iter().for_each(|v| csv += &format!(",{v}"));
        csv.push('\n');
    }
    crate::io::write_atomic(&out, csv.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    super::report(
        &format!(
            "wrote the codes of {} sequences of {} to {}",
            strings.len(),
            path.display(),
            out.display()
        ),
        serde_json::json!({"sequences": strings.len(), "latent": z, "out": out}),
    );
    Ok(())
}

/// `encode` of a sequence model: each sequence's posterior mean, quantized into a codes
/// file, and how many of the stored codes decode (greedily) back to their own string.
pub fn encode(device: &DeviceArgs, a: &super::codes::EncodeArgs, at: &Path) -> anyhow::Result<()> {
    if a.images.split != "test" {
        bail!(
            "--split {}: a sequence model encodes --data, or its run's test split",
            a.images.split
        );
    }
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let (path, mut strings) = input_strings(&run, a.data.data.as_deref())?;
    if let Some(n) = a.images.limit {
        strings.truncate(n as usize);
    }
    super::paths::check_output(&a.out)?;
    let e = encode_strings(&gpu, &params, &run, &path, &strings)?;
    let z = run.spec.latent;
    let mu: Vec<f32> = e.mulv.iter().flat_map(|m| m[..z].to_vec()).collect();
    let model = checkpoint::fingerprint_of(&gpu, &params.params.values, params.params.len)?;
    let file = crate::io::codes::CodesFile::quantize(&mu, z, a.bits, model);
    let bytes = file.to_bytes();
    crate::io::write_atomic(&a.out, &bytes)
        .with_context(|| format!("writing {}", a.out.display()))?;
    // How many of the stored codes give their string back.
    let codes: Vec<Vec<f32>> = file.values().chunks(z).map(<[f32]>::to_vec).collect();
    let decoded = decode_codes(&gpu, &params, &run, &codes)?;
    let exact = decoded
        .iter()
        .zip(&strings)
        .filter(|(d, (_, s))| *d == s)
        .count();
    let n = strings.len();
    let raw: usize = strings.iter().map(|(_, s)| s.len() + 1).sum();
    let per = bytes.len() as f64 / n as f64;
    let ratio = raw as f64 / bytes.len() as f64;
    let size = match ratio >= 1.0 {
        true => format!("{ratio:.1}x smaller than"),
        false => format!("{:.1}x larger than", 1.0 / ratio),
    };
    super::report(
        &format!(
            "wrote {n} codes of {} to {}: {} bytes, {per:.1} bytes/sequence ({size} the {raw} bytes of the strings, one per line); greedy decoding gives {exact} of them back exactly ({:.1}%)",
            path.display(),
            a.out.display(),
            bytes.len(),
            100.0 * exact as f64 / n as f64
        ),
        serde_json::json!({
            "sequences": n,
            "out": a.out,
            "bytes": bytes.len(),
            "bytes_per_sequence": per,
            "compression": ratio,
            "bits": a.bits,
            "exact": exact,
        }),
    );
    Ok(())
}

/// `decode` of a sequence model: the strings of a codes file's codes (greedy decoding),
/// one per line.
pub fn decode(
    device: &DeviceArgs,
    a: &super::codes::DecodeArgs,
    at: &Path,
    file: &crate::io::codes::CodesFile,
) -> anyhow::Result<()> {
    if !a.class.class.is_empty() {
        bail!("--class needs a conditional image or table model; a sequence model has no classes");
    }
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    if file.latent != run.spec.latent {
        bail!(
            "{}: codes have {} dimensions, the model's latent space has {}",
            a.codes.display(),
            file.latent,
            run.spec.latent
        );
    }
    let model = checkpoint::fingerprint_of(&gpu, &params.params.values, params.params.len)?;
    super::codes::check_encoder(&a.codes, file, model, "strings");
    let codes: Vec<Vec<f32>> = file
        .values()
        .chunks(file.latent)
        .map(<[f32]>::to_vec)
        .collect();
    let strings = decode_codes(&gpu, &params, &run, &codes)?;
    let out = super::output_path(a.out.as_deref(), || {
        super::output_dir(at).join("decoded.txt")
    })?;
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        bail!(
            "{}: a sequence model decodes to strings; give a text file (one string per line)",
            out.display()
        );
    }
    let text: String = strings.iter().map(|s| format!("{s}\n")).collect();
    crate::io::write_atomic(&out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    super::report(
        &format!(
            "decoded {} sequences ({} bits per value) to {}",
            strings.len(),
            file.bits,
            out.display()
        ),
        serde_json::json!({"sequences": strings.len(), "bits": file.bits, "out": out}),
    );
    Ok(())
}

/// `eval` of a sequence model: the loss per sequence of `--data` (or the run's test split)
/// with one posterior sample (summed cross-entropy and KL, nats), and with `--iwae-k K`
/// the importance-weighted bound on -log p(x): each sequence taken K times in a batch, each
/// copy decoding its own sample with teacher forcing, the K log-weights
/// log p(x | z) + log N(z; 0, I) - log q(z | x) merged per sequence.
pub fn eval(device: &DeviceArgs, a: &super::eval::EvalArgs, at: &Path) -> anyhow::Result<()> {
    use crate::vae::gru::step::GruStep;
    use crate::vae::step::STREAM_EVAL;
    let gpu = open_gpu(device)?;
    let (run, params) = open_model(&gpu, at)?;
    let (path, mut strings) = input_strings(&run, a.data.data.as_deref())?;
    if let Some(n) = a.limit {
        strings.truncate(n as usize);
    }
    let seqs = sequence::Sequences::for_model(&path, &run.vocab, &strings, run.max_length)?;
    let batch = (a.batch_size as usize).min(run.train.batch_size);
    let (recon, kl) =
        crate::vae::gru::train::evaluate(&gpu, &params, &run.vocab, &seqs, batch, run.train.seed)?;
    let n = seqs.count;
    let mut line = format!(
        "model {}: {n} sequences of {}\ntest loss {:.3} nats/sequence (reconstruction {recon:.3} + KL {kl:.3}, one posterior sample)",
        at.display(),
        path.display(),
        recon + kl
    );
    let mut bound = None;
    if a.iwae_k > 0 {
        let k = a.iwae_k as usize;
        let records = k.min(batch);
        let mut step = GruStep::new(
            &gpu,
            &params,
            records,
            seqs.width,
            None,
            run.train.seed,
            STREAM_EVAL + 10,
        )?;
        let z = run.spec.latent;
        let f64s = |v: Vec<f32>| -> Vec<f64> { v.into_iter().map(f64::from).collect() };
        let bar = super::progress_bar((n * k) as u64, "IWAE", "importance samples");
        let mut total = 0.0;
        let mut draw = 0u64;
        for i in 0..n {
            let (mut recons, mut mulv, mut zs, mut eps) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for start in (0..k).step_by(records) {
                let valid = (k - start).min(records);
                step.set_batch(&gpu, &run.vocab, &seqs, &vec![i; valid], draw, 1.0)?;
                gpu.run(&step.launches())?;
                draw += 1;
                let per = step.per_sample.read(&gpu)?;
                recons.extend((0..valid).map(|r| f64::from(per[r * 3])));
                mulv.extend(f64s(step.mulv.read(&gpu)?)[..valid * 2 * z].to_vec());
                zs.extend(f64s(step.z.read(&gpu)?)[..valid * z].to_vec());
                eps.extend(f64s(step.eps.read(&gpu)?)[..valid * z].to_vec());
                bar.inc(valid as u64);
            }
            total -= crate::cpu::loss::iwae_log_px(&recons, &mulv, &zs, &eps, z);
        }
        bar.finish_and_clear();
        let b = total / n as f64;
        if !b.is_finite() {
            bail!(
                "{}: the IWAE bound is {b}: the model's outputs overflow on these sequences",
                at.display()
            );
        }
        line += &format!("\nIWAE bound, K = {k}: -log p(x) <= {b:.3} nats/sequence");
        bound = Some(b);
    }
    super::report(
        &line,
        serde_json::json!({
            "sequences": n,
            "test": {"recon": recon, "kl": kl, "total": recon + kl},
            "iwae_k": a.iwae_k,
            "iwae_bound": bound,
        }),
    );
    Ok(())
}
