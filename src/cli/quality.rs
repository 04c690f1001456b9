//! `vae-gpu quality`: how good a model's samples are, in the features of a classifier of
//! the same data (see `vae::featurenet`): the Fréchet distance to the test split, precision
//! and recall of the k-nearest-neighbour manifolds, and the floor, the same figures for as
//! many real training images. A conditional model's samples are asked for every class in
//! turn; each class's share filed under it is printed beside the classifier's accuracy on
//! real images of the class. A table model's records are compared in `quality_table`.

use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::prior::PriorArg;
use super::{load_model, open_gpu, say, DataArgs, DeviceArgs, ModelArg};
use crate::data::Images;
use crate::gpu::Gpu;
use crate::ops::conv::Shape;
use crate::vae::checkpoint;
use crate::vae::decode::{generate_each, to_u8, Prior};
use crate::vae::featurenet::{cache_path, FeatureNet, FEATURES};
use crate::vae::probe::accuracy;
use crate::vae::quality::{frechet, precision_recall, Moments, NEIGHBOURS};

/// The fewest images compared (also `--count`'s minimum).
const MIN_COUNT: usize = 100;

#[derive(Args, Debug)]
pub struct QualityArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Samples to generate, and real images to compare (at most the test split's).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(MIN_COUNT as i64..=100_000))]
    pub count: u32,
    /// Seed of the samples (and of a mixture's fit).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where codes come from: normal (N(0, I)), gmm / gmm:K, a mixture fitted to the
    /// training split's latent means (a conditional model's, one per class), or vamp, the
    /// model's learned VampPrior (see `sample --prior`) [default: the model's own]
    #[arg(long, value_parser = super::prior::parse_prior)]
    pub prior: Option<PriorArg>,
    /// As `sample --temperature`: the scale of the prior's standard deviation (below 1:
    /// safer, less varied samples); for a table model, of the cells' own noise. Figures at
    /// another temperature than 1 are kept apart (quality-PRIOR-tT.json).
    #[arg(long, default_value_t = 1.0, value_parser = super::sample::temperature)]
    pub temperature: f32,
    /// Epochs of the quality classifier, when it is trained (once per dataset, then
    /// reused from the cache directory).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub classifier_epochs: u32,
}

/// Fréchet distance, precision and recall of `fake` against `reference`.
fn compare(
    gpu: &Gpu,
    fake: &[f32],
    (reference, moments): (&[f32], &Moments),
) -> anyhow::Result<serde_json::Value> {
    let fd = frechet(&Moments::of(fake, FEATURES), moments);
    let (precision, recall) = precision_recall(gpu, reference, fake, FEATURES, NEIGHBOURS)?;
    Ok(serde_json::json!({"frechet": fd, "precision": precision, "recall": recall}))
}

pub fn run(device: &DeviceArgs, a: &QualityArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    let prior_arg = super::prior::PriorArg::resolve(a.prior, c)?;
    a.data.run_data_present(&cfg)?;
    let input = a.data.for_run(&cfg)?;
    let splits = input.load()?;
    // The classes the run trained on; the classifier learns from every image of them.
    let (train, test) = (
        &super::as_trained(&cfg, splits.train, false),
        &super::as_trained(&cfg, splits.test, false),
    );
    super::check_dims(c, train)?;
    if c.table.is_some() {
        let mixture = prior_arg.mixture(&gpu, (&params, &cfg, &dir), &a.data, a.seed)?;
        let prior = Prior::of(mixture.as_ref());
        let (line, json) = super::quality_table::run(
            &gpu,
            (&params, c),
            (train, test),
            (a.count as usize, a.seed, a.temperature, prior),
        )?;
        super::report(&line, json);
        return Ok(());
    }
    let (Some(train_labels), Some(_)) = (&train.labels, &test.labels) else {
        anyhow::bail!(
            "{}: quality needs labelled data (IDX labels, class folders, --labels for .npy): its classifier learns the classes",
            input.dir().display()
        );
    };
    // Labels of both splits: a class only the test split has is still one to learn.
    let test_labels = test.labels.as_deref().unwrap_or(&[]);
    let top = train_labels
        .iter()
        .chain(test_labels)
        .max()
        .copied()
        .unwrap_or(0);
    let present = |l: u8| train_labels.contains(&l);
    if (0..=top).filter(|&l| present(l)).count() < 2 {
        anyhow::bail!(
            "{}: quality needs at least two classes of training images to train its classifier",
            input.dir().display()
        );
    }
    let classes = (usize::from(top) + 1).max(c.classes.unwrap_or(0));
    // A conditional model is asked for the classes it trained on, each of which the
    // classifier must have learned.
    let wanted = super::trained_classes(&cfg);
    if let Some(l) = wanted.iter().flatten().find(|&&l| !present(l)) {
        anyhow::bail!(
            "{}: the conditional model's class {l} has no training images here; score it on the data it was trained on",
            input.dir().display()
        );
    }
    let n = (a.count as usize).min(test.count).min(train.count);
    if n < MIN_COUNT {
        anyhow::bail!(
            "{}: quality compares at least {MIN_COUNT} images (fewer say little), and the {} split has {}",
            input.dir().display(),
            if test.count < train.count { "test" } else { "training" },
            test.count.min(train.count)
        );
    }
    let shape = Shape {
        h: c.height,
        w: c.width,
        c: c.channels,
    };
    let epochs = a.classifier_epochs as usize;
    let cache = crate::gpu::tune::cache_dir()
        .context("no cache directory for the quality classifier (set VAE_GPU_CACHE_DIR)")?;
    let path = cache_path(&cache, (train, test), classes, (epochs, 1));
    let mut kept_path = Some(path.clone());
    let net = match FeatureNet::load(&gpu, &path, shape) {
        Some(net) => {
            say!(
                "classifier: {} (test accuracy {:.1}%)",
                path.display(),
                100.0 * net.accuracy
            );
            net
        }
        None => {
            let started = Instant::now();
            let bar = super::progress_bar(0, "classifier", "steps");
            let net = FeatureNet::train(
                &gpu,
                (train, test),
                classes,
                (epochs, 1),
                &mut |step, all| {
                    bar.set_length(all as u64);
                    bar.set_position(step as u64);
                },
            )?;
            bar.finish_and_clear();
            let kept = match net.save(&gpu, &path) {
                Ok(()) => format!("kept in {}", path.display()),
                Err(e) => {
                    log::warn!(
                        "the quality classifier is not kept ({e:#}); the next run trains it again"
                    );
                    kept_path = None;
                    "not kept".into()
                }
            };
            say!(
                "classifier: a small conv net trained {} on {} training images in {:.0} s, test accuracy {:.1}%, {kept}",
                super::plural(epochs, "epoch"),
                train.count.min(crate::vae::featurenet::MAX_TRAIN),
                started.elapsed().as_secs_f64(),
                100.0 * net.accuracy,
            );
            net
        }
    };

    // Chance is one in the classes present; a classifier near it files samples at random.
    let present_classes = (0..=top).filter(|&l| present(l)).count();
    if net.accuracy < 1.5 / present_classes as f64 {
        log::warn!(
            "the quality classifier is right on {:.1}% of test images, near chance ({:.1}%): its figures say little; train it longer with --classifier-epochs",
            100.0 * net.accuracy,
            100.0 / present_classes as f64
        );
    }
    let reference = net.pass(&gpu, &test.take(n))?;
    let moments = Moments::of(&reference.features, FEATURES);
    let floor_images = train.take(n);
    let floor = compare(
        &gpu,
        &net.pass(&gpu, &floor_images)?.features,
        (&reference.features, &moments),
    )?;

    let mixture = prior_arg.mixture(&gpu, (&params, &cfg, &dir), &a.data, a.seed)?;
    let prior = Prior::of(mixture.as_ref());
    // A conditional model is asked for every class in turn, evenly.
    let asked: Option<Vec<u8>> = wanted
        .as_ref()
        .map(|w| (0..n).map(|i| w[i % w.len()]).collect());
    // Samples kept as pixels as they are decoded: a quarter of their floats' memory.
    let mut pixels = Vec::with_capacity(n * c.input_dim());
    generate_each::<anyhow::Error>(
        &gpu,
        &params,
        c,
        (n, a.seed, a.temperature),
        (prior, asked.as_deref()),
        &mut |v| {
            pixels.extend(to_u8(&v));
            Ok(())
        },
    )?;
    let samples = Images {
        pixels,
        count: n,
        labels: None,
        dtype: crate::data::Dtype::U8,
        ..train.take(0)
    };
    let fake = net.pass(&gpu, &samples)?;
    let got = compare(&gpu, &fake.features, (&reference.features, &moments))?;

    let names = input.run_class_names(&cfg, test.labels.as_deref())?;
    let from = prior_arg.describe(a.temperature, c.classes.is_some());
    // The figures' file: a prior's at full spread, another temperature's apart.
    let stem = match a.temperature {
        1.0 => prior_arg.file_stem(),
        t => format!("{}-t{t}", prior_arg.file_stem()),
    };
    let mut line = format!(
        "{n} samples from {from} against {n} test images, in the features of a classifier with test accuracy {:.1}%\n{:<24} {:>9} {:>10} {:>8}\n",
        100.0 * net.accuracy,
        "",
        "Fréchet",
        "precision",
        "recall"
    );
    for (what, v) in [("samples", &got), ("real training images", &floor)] {
        line += &format!(
            "{what:<24} {:>9.3} {:>10.3} {:>8.3}\n",
            v["frechet"].as_f64().unwrap_or(f64::NAN),
            v["precision"].as_f64().unwrap_or(f64::NAN),
            v["recall"].as_f64().unwrap_or(f64::NAN)
        );
    }
    line += "(the real images are the floor: what the same number of real images scores)";
    let mut json = serde_json::json!({
        "count": n,
        "prior": prior_arg.describe(a.temperature, c.classes.is_some()),
        "prior_file": stem,
        "temperature": a.temperature,
        "seed": a.seed,
        "classifier": {"accuracy": net.accuracy, "path": kept_path, "epochs": epochs},
        "samples": got,
        "real": floor,
    });
    if let (Some(wanted), Some(asked)) = (&wanted, &asked) {
        let (share, per_class) = accuracy(&fake.predicted, asked, classes);
        line += &format!(
            "\nasked-for class: {:.1}% of samples filed under it (classifier on real test images: {:.1}%)\n  {:<16} {:>8} {:>8}",
            100.0 * share,
            100.0 * net.accuracy,
            "class",
            "samples",
            "real"
        );
        let mut rows = Vec::new();
        for (j, s) in per_class.iter().enumerate() {
            if !wanted.contains(&(j as u8)) {
                continue;
            }
            let name = crate::data::class_name(&names, j as u8);
            let real = net.class_accuracy.get(j).copied().unwrap_or(f64::NAN);
            line += &format!("\n  {name:<16} {:>7.1}% {:>7.1}%", 100.0 * s, 100.0 * real);
            rows.push(serde_json::json!({"class": j, "name": name, "samples": s, "real": real}));
        }
        json["asked_share"] = share.into();
        json["per_class"] = rows.into();
    }
    // Kept in the run for the report, with the weights they measure.
    json["fingerprint"] = format!("{:016x}", checkpoint::fingerprint(&gpu, &params)?).into();
    // The run's own file at a fixed name; a run that cannot be written still gets its score.
    let out = dir.join(format!("quality-{stem}.json"));
    if let Err(e) = crate::io::write_atomic(&out, serde_json::to_string_pretty(&json)?.as_bytes()) {
        log::warn!(
            "{}: not saved ({e}); the report will not show this score",
            out.display()
        );
    }
    super::report(&line, json);
    Ok(())
}

/// Whether saved figures are in their ranges: a positive count, distances at least 0,
/// precision and recall between 0 and 1 (a file read back may have been edited).
fn plausible(v: &serde_json::Value) -> bool {
    let within = |x: &serde_json::Value, lo: f64, hi: f64| {
        x.as_f64().is_some_and(|x| (lo..=hi).contains(&x))
    };
    v["count"].as_u64().is_some_and(|n| n > 0)
        && v["prior"].as_str().is_some_and(|p| p.len() <= 200)
        && within(&v["classifier"]["accuracy"], 0.0, 1.0)
        && ["samples", "real"].iter().all(|k| {
            within(&v[k]["frechet"], 0.0, 1e9)
                && within(&v[k]["precision"], 0.0, 1.0)
                && within(&v[k]["recall"], 0.0, 1.0)
        })
}

/// The figures `quality` kept in run `dir` for these weights, one per prior.
pub fn saved(fingerprint: &str, dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut found: Vec<(String, serde_json::Value)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("quality-") && name.ends_with(".json")).then_some(())?;
            let read = std::fs::read_to_string(e.path()).map_err(|e| e.to_string());
            let v: serde_json::Value =
                match read.and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
                    Ok(v) => v,
                    Err(err) => {
                        log::warn!(
                            "{}: unreadable ({err}); left out of the report",
                            e.path().display()
                        );
                        return None;
                    }
                };
            // Figures of these weights, under the name their prior gives them.
            if v["fingerprint"] != fingerprint
                || v["prior_file"]
                    .as_str()
                    .map(|p| format!("quality-{p}.json"))
                    != Some(name.clone())
            {
                return None;
            }
            if !plausible(&v) {
                log::warn!(
                    "{}: figures out of their ranges; left out of the report",
                    e.path().display()
                );
                return None;
            }
            Some((name, v))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, v)| v).collect()
}
