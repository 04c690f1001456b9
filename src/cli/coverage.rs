//! `vae-gpu coverage`: does the model generate every kind of image the data holds? Prior
//! samples are classified, and their class histogram is set beside the data's. The
//! classifier (softmax regression on pixels, as `probe` trains) learns from the model's
//! reconstructions of the labelled training images rather than the images themselves: a
//! VAE's samples are blurry, and a classifier that never saw blur files blurry images of
//! any class under whichever class looks blurriest.

use clap::Args;

use super::{check_dims, load_model, open_gpu, say, DataArgs, DeviceArgs, ModelArg};
use crate::data::class_name;
use crate::data::Images;
use crate::gpu::Gpu;
use crate::ops::adam::AdamConfig;
use crate::vae::codec::{decode, encode, own_classes};
use crate::vae::decode::{generate, Prior};
use crate::vae::probe::{Classifier, Features};
use crate::vae::{ModelConfig, Params};

#[derive(Args, Debug)]
pub struct CoverageArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Prior samples to decode and classify.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Seed of the prior noise (and of a mixture's fit).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where codes come from: normal (N(0, I)), gmm / gmm:K, a mixture of K Gaussians
    /// fitted to the training split's latent means (saved in the run; a conditional
    /// model's, one per class), or vamp, the VampPrior the model learned [default: the
    /// model's own]
    #[arg(long, value_parser = super::prior::parse_prior)]
    pub prior: Option<super::prior::PriorArg>,
    /// Full-batch Adam steps of the classifier (softmax regression on pixels).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub steps: u32,
    /// Labelled training images the classifier learns from (the first N; all of them must
    /// fit one GPU buffer).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(10..))]
    pub limit: u32,
    /// A class counts as covered when it gets at least this fraction of its share in the
    /// data.
    #[arg(long, default_value_t = 0.1, value_parser = super::positive)]
    pub min_share: f32,
}

/// The model's reconstructions of `images` (from their mean codes), flat.
fn reconstructions(
    gpu: &Gpu,
    params: &Params,
    c: &ModelConfig,
    images: &Images,
) -> anyhow::Result<Vec<f32>> {
    let mu = encode(gpu, params, c, images, 1.0)?.codes.mu;
    Ok(decode(gpu, params, c, &mu, own_classes(c, images))?.concat())
}

fn histogram(labels: impl Iterator<Item = usize>, classes: usize) -> Vec<f64> {
    let mut h = vec![0.0; classes];
    let mut n = 0.0;
    for l in labels {
        h[l.min(classes - 1)] += 1.0;
        n += 1.0;
    }
    h.iter().map(|c| c / f64::max(n, 1.0)).collect()
}

pub fn run(device: &DeviceArgs, a: &CoverageArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    let prior_arg = super::prior::PriorArg::resolve(a.prior, c)?;
    super::images_only(c)?;
    let loaded = input.load()?;
    // The classes the run trained on: a run on some classes covers those.
    let splits = crate::data::Splits {
        train: super::as_trained(&cfg, loaded.train, false),
        test: super::as_trained(&cfg, loaded.test, false),
        ..loaded
    };
    check_dims(c, &splits.train)?;
    let (Some(train_labels), Some(test_labels)) = (&splits.train.labels, &splits.test.labels)
    else {
        anyhow::bail!("coverage needs labelled data (IDX label files, class subfolders, --labels for a .npy array or a table's --label-column) to train its classifier");
    };
    let classes = usize::from(*train_labels.iter().max().unwrap_or(&0)) + 1;
    let learn = splits.train.take(a.limit as usize);
    say!(
        "training the classifier on the reconstructions of {} labelled images",
        learn.count
    );
    let classifier = Classifier::fit(
        &gpu,
        &Features {
            x: &reconstructions(&gpu, &params, c, &learn)?,
            labels: learn.labels.as_deref().expect("labelled above"),
            features: c.input_dim(),
        },
        classes,
        a.steps as usize,
        AdamConfig {
            lr: 0.01,
            ..AdamConfig::default()
        },
    )?;
    let test_pred = classifier.predict(&gpu, &reconstructions(&gpu, &params, c, &splits.test)?)?;
    let accuracy = test_pred
        .iter()
        .zip(test_labels)
        .filter(|(&p, &l)| p == usize::from(l))
        .count() as f64
        / test_labels.len().max(1) as f64;
    let mixture = prior_arg.mixture(&gpu, (&params, &cfg, &dir), &a.data, a.seed)?;
    let prior = Prior::of(mixture.as_ref());
    // A conditional model is asked for every class it trained on in turn.
    let asked: Option<Vec<u8>> = super::trained_classes(&cfg)
        .map(|w| (0..a.count as usize).map(|i| w[i % w.len()]).collect());
    let samples: Vec<f32> = generate(
        &gpu,
        &params,
        c,
        (a.count as usize, a.seed, 1.0),
        (prior, asked.as_deref()),
    )?
    .concat();
    let sample_pred = classifier.predict(&gpu, &samples)?;
    let data = histogram(train_labels.iter().map(|&l| usize::from(l)), classes);
    let model = histogram(sample_pred.iter().copied(), classes);
    let tv = 0.5
        * data
            .iter()
            .zip(&model)
            .map(|(p, q)| (p - q).abs())
            .sum::<f64>();
    let covered = |k: usize| data[k] > 0.0 && model[k] >= f64::from(a.min_share) * data[k];
    // A conditional model: the share of each class's samples filed under it, beside the
    // classifier's accuracy on that class's reconstructed test images.
    // A class without images counts 0.
    let shares = |pred: &[usize], truth: &[u8]| -> Vec<f64> {
        let per = crate::vae::probe::accuracy(pred, truth, classes).1;
        per.into_iter()
            .map(|a| if a.is_nan() { 0.0 } else { a })
            .collect()
    };
    let per_class: Option<Vec<(f64, f64)>> = asked.as_ref().map(|asked| {
        let (got, real) = (shares(&sample_pred, asked), shares(&test_pred, test_labels));
        got.into_iter().zip(real).collect()
    });
    let names = input.run_class_names(&cfg, splits.train.labels.as_deref())?;
    let mut table = format!("{:<16} {:>8} {:>9}", "class", "data %", "samples %");
    if per_class.is_some() {
        table += &format!(" {:>9} {:>9}", "asked %", "real %");
    }
    table += "\n";
    let mut rows = Vec::new();
    for k in 0..classes {
        let name = class_name(&names, k as u8);
        table += &format!(
            "{:<16} {:>8.2} {:>9.2}",
            name,
            100.0 * data[k],
            100.0 * model[k],
        );
        if let Some(p) = &per_class {
            table += &format!(" {:>9.1} {:>9.1}", 100.0 * p[k].0, 100.0 * p[k].1);
        }
        if !covered(k) && data[k] > 0.0 {
            table += "  (missed)";
        }
        table += "\n";
        let mut row = serde_json::json!({"class": k, "name": name, "data": data[k], "samples": model[k], "covered": covered(k)});
        if let Some(p) = &per_class {
            row["asked_filed_under_it"] = p[k].0.into();
            row["real_accuracy"] = p[k].1.into();
        }
        rows.push(row);
    }
    let n_covered = (0..classes).filter(|&k| covered(k)).count();
    let in_data = data.iter().filter(|&&p| p > 0.0).count();
    if let Some(p) = &per_class {
        // Averages over the classes the data holds.
        let (asked, real) = (0..classes)
            .filter(|&k| data[k] > 0.0)
            .fold((0.0, 0.0), |(a, r), k| (a + p[k].0, r + p[k].1));
        let n = in_data.max(1) as f64;
        table += &format!(
            "conditional: {:.1}% of the samples asked for a class are filed under it on average (asked %); the classifier files {:.1}% of reconstructed real test images under their class (real %)\n",
            100.0 * asked / n,
            100.0 * real / n,
        );
    }
    table += &format!(
        "{} samples: {n_covered} of {in_data} classes covered (at least {:.0}% of their share), total variation distance {tv:.3}; classifier accuracy on reconstructed test images {:.1}%",
        a.count,
        100.0 * a.min_share,
        100.0 * accuracy
    );
    super::report(
        &table,
        serde_json::json!({
            "samples": a.count,
            "classes": rows,
            "covered": n_covered,
            "classes_in_data": in_data,
            "total_variation": tv,
            "classifier_accuracy": accuracy,
        }),
    );
    Ok(())
}
