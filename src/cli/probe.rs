//! `vae-gpu probe`: how well latent means serve as features when few labels exist (the
//! semi-supervised "M1" setup of Kingma et al., 2014): a softmax classifier trained on the
//! GPU with N labels per class, on latent means and, for comparison, on raw pixels.

use clap::Args;

use super::{check_dims, load_model, open_gpu, DataArgs, DeviceArgs, ModelArg};
use crate::data::Images;
use crate::ops::adam::AdamConfig;
use crate::rng::Rng;
use crate::vae::codec::encode;
use crate::vae::probe::{train_and_test, Features};

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Labelled training images per class, one probe per budget.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub labels_per_class: Vec<u32>,
    /// Full-batch Adam steps of each classifier.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub steps: u32,
    /// Adam learning rate of the classifiers.
    #[arg(long, default_value_t = 0.01, value_parser = super::positive)]
    pub lr: f32,
    /// Evaluate on the first N test images [default: all]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Seed of the choice of labelled images.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `per_class` images of each label, picked by a seeded shuffle.
fn labelled_subset(imgs: &Images, per_class: usize, seed: u64) -> Images {
    let labels = imgs.labels.as_ref().expect("checked by the caller");
    let mut taken = [0usize; 256];
    let keep: Vec<usize> = Rng::new(seed)
        .permutation(imgs.count)
        .into_iter()
        .map(|i| i as usize)
        .filter(|&i| {
            let l = usize::from(labels[i]);
            taken[l] += 1;
            taken[l] <= per_class
        })
        .collect();
    Images {
        pixels: keep
            .iter()
            .flat_map(|&i| imgs.image(i).iter().copied())
            .collect(),
        labels: Some(keep.iter().map(|&i| labels[i]).collect()),
        count: keep.len(),
        ..*imgs
    }
}

pub fn run(device: &DeviceArgs, a: &ProbeArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let (_, cfg, params) = load_model(&gpu, &a.model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    let splits = input.load()?;
    check_dims(c, &splits.train)?;
    let test = match a.limit {
        Some(n) => splits.test.take(n as usize),
        None => splits.test,
    };
    let (Some(train_labels), Some(test_labels)) = (&splits.train.labels, &test.labels) else {
        anyhow::bail!("probe needs labelled data (IDX label files, class subfolders, --labels for a .npy array or a table's --label-column)");
    };
    let classes = usize::from(*train_labels.iter().chain(test_labels).max().unwrap_or(&0)) + 1;
    let mut in_train = [false; 256];
    for &l in train_labels {
        in_train[usize::from(l)] = true;
    }
    let unseen: std::collections::BTreeSet<u8> = test_labels
        .iter()
        .copied()
        .filter(|&l| !in_train[usize::from(l)])
        .collect();
    if !unseen.is_empty() {
        log::warn!(
            "test labels {unseen:?} never occur among the training labels: no classifier trained on these can predict them"
        );
    }
    let config = AdamConfig {
        lr: a.lr,
        ..AdamConfig::default()
    };
    let test_mu = encode(&gpu, &params, c, &test, 1.0)?.codes.mu;
    let test_px = test.to_f32();
    let mut table = format!("labels/class  train images  latent-means accuracy  raw-pixel accuracy  ({} test images, {classes} classes)", test.count);
    let mut rows = Vec::new();
    for &per_class in &a.labels_per_class {
        let sub = labelled_subset(&splits.train, per_class as usize, a.seed);
        let labels = sub.labels.as_deref().expect("subset keeps labels");
        let mu = encode(&gpu, &params, c, &sub, 1.0)?.codes.mu;
        let on = |x: &[f32], tx: &[f32], f: usize| {
            train_and_test(
                &gpu,
                &Features {
                    x,
                    labels,
                    features: f,
                },
                &Features {
                    x: tx,
                    labels: test_labels,
                    features: f,
                },
                classes,
                a.steps as usize,
                config,
            )
        };
        let latent_acc = on(&mu, &test_mu, c.latent)?;
        let pixel_acc = on(&sub.to_f32(), &test_px, c.input_dim())?;
        table += &format!(
            "\n{per_class:>12}  {:>12}  {:>20.2}%  {:>17.2}%",
            sub.count,
            100.0 * latent_acc,
            100.0 * pixel_acc
        );
        rows.push(serde_json::json!({
            "labels_per_class": per_class,
            "train_images": sub.count,
            "latent_accuracy": latent_acc,
            "pixel_accuracy": pixel_acc,
        }));
    }
    super::report(
        &table,
        serde_json::json!({"test_images": test.count, "classes": classes, "rows": rows}),
    );
    Ok(())
}
