//! The quality classifier: a small convolutional net built on the model graph and trained
//! on a dataset's labelled training split. Its class scores file samples under classes;
//! its last hidden layer gives the features in which samples are compared with real
//! images (see `quality`). Trained once per dataset and kept in the cache directory.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::Images;
use crate::gpu::{Gpu, Matrix};
use crate::graph::program::{Mode, Program};
use crate::graph::{Builder, Graph, Params};
use crate::ops::adam::{adam, AdamConfig};
use crate::ops::conv::Shape;
use crate::ops::gather::{gather, GpuImages};
use crate::ops::softmax::softmax_xent;
use crate::ops::Activation;
use crate::rng::Rng;
use crate::vae::probe::{accuracy, argmax};

/// Width of the feature layer.
pub const FEATURES: usize = 128;
/// Training images the classifier sees at most (the first of the split).
pub const MAX_TRAIN: usize = 60_000;
const BATCH: usize = 128;
/// Changes when the architecture or the recipe does, so older cached nets are not reused.
const RECIPE: &str = "featurenet-1: conv32 k4s2, conv64 k4s2, fc128, Adam 1e-3, batch 128";

/// conv 32 (k4 s2 p1) ReLU, conv 64 (k4 s2 p1) ReLU, flatten, fc 128 ReLU (the features),
/// fc `classes` (the logits): the shape of the usual Fashion-MNIST baseline net.
pub fn graph(shape: Shape, classes: usize) -> anyhow::Result<Graph> {
    let err = |e: crate::graph::GraphError| anyhow::anyhow!("the quality classifier: {e}");
    let mut b = Builder::new(shape, None);
    let mut t = Builder::INPUT;
    for (i, c) in [32, 64].into_iter().enumerate() {
        let name = format!("conv{}", i + 1);
        t = b.conv(t, c, (4, 2, 1), false, &name, &name).map_err(err)?;
        t = b.act(t, Activation::Relu, &name).map_err(err)?;
    }
    let s = b.shape(t);
    let flat = Shape {
        h: 1,
        w: 1,
        c: s.h * s.w * s.c,
    };
    t = b.reshape(t, flat, "flatten").map_err(err)?;
    let hidden = Shape {
        h: 1,
        w: 1,
        c: FEATURES,
    };
    t = b.linear(t, hidden, "fc1", "fc1").map_err(err)?;
    let features = b.act(t, Activation::Relu, "fc1").map_err(err)?;
    let out = Shape {
        h: 1,
        w: 1,
        c: classes,
    };
    let logits = b.linear(features, out, "fc2", "fc2").map_err(err)?;
    b.finish_classifier(logits, features).map_err(err)
}

/// A trained classifier and its accuracy on the test split, overall and per class.
pub struct FeatureNet {
    params: Params,
    pub classes: usize,
    pub accuracy: f64,
    pub class_accuracy: Vec<f64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    recipe: String,
    classes: usize,
    accuracy: f64,
    /// NaN (null) for a class without test images.
    class_accuracy: Vec<Option<f64>>,
    /// FNV-1a of the weights file and of the fields above with the entry's name: a cache
    /// entry is used only whole, as written, and under the name it was written for.
    checksum: String,
}

impl Saved {
    fn seal(&self, weights: &[u8], path: &Path) -> String {
        let about = format!(
            "{} {} {:?} {:?} {}",
            self.recipe,
            self.classes,
            self.accuracy.to_bits(),
            self.class_accuracy
                .iter()
                .map(|a| a.map(f64::to_bits))
                .collect::<Vec<_>>(),
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let parts = [
            crate::io::fnv1a64(weights),
            crate::io::fnv1a64(about.as_bytes()),
        ];
        format!("{:016x}", crate::io::fnv1a64(bytemuck::cast_slice(&parts)))
    }
}

/// What a pass over images gives: each image's features and most likely class.
pub struct Pass {
    pub features: Vec<f32>,
    pub predicted: Vec<usize>,
}

/// The cache entry of a classifier of `classes` trained on `train` and measured on `test`
/// (their values, labels and shape, and the recipe).
pub fn cache_path(
    dir: &Path,
    (train, test): (&Images, &Images),
    classes: usize,
    (epochs, seed): (usize, u64),
) -> PathBuf {
    let about = format!(
        "{:016x} {:016x} {classes} {epochs} {seed} {RECIPE}",
        train.take(MAX_TRAIN).digest(),
        test.digest()
    );
    let h = crate::io::fnv1a64(about.as_bytes());
    dir.join(format!("classifier-{h:016x}.safetensors"))
}

impl FeatureNet {
    /// The classifier cached at `path`, if it is there whole, as written and of this
    /// recipe.
    pub fn load(gpu: &Gpu, path: &Path, shape: Shape) -> Option<FeatureNet> {
        let saved: Saved =
            serde_json::from_str(&std::fs::read_to_string(path.with_extension("json")).ok()?)
                .ok()?;
        let bytes = std::fs::read(path).ok()?;
        let share = |a: f64| (0.0..=1.0).contains(&a);
        if saved.recipe != RECIPE
            || saved.checksum != saved.seal(&bytes, path)
            || !share(saved.accuracy)
            || saved.class_accuracy.len() != saved.classes
            || !saved.class_accuracy.iter().flatten().all(|&a| share(a))
        {
            return None;
        }
        let params = Params::new(gpu, &graph(shape, saved.classes).ok()?, 0).ok()?;
        let tensors = crate::io::safetensors::load(path).ok()?;
        crate::vae::checkpoint::set_tensors(gpu, &params, tensors, path).ok()?;
        Some(FeatureNet {
            params,
            classes: saved.classes,
            accuracy: saved.accuracy,
            class_accuracy: saved
                .class_accuracy
                .iter()
                .map(|a| a.unwrap_or(f64::NAN))
                .collect(),
        })
    }

    /// Saves the weights, then the description that makes the entry whole.
    pub fn save(&self, gpu: &Gpu, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let bytes = crate::io::safetensors::to_bytes(
            &crate::vae::checkpoint::tensors(gpu, &self.params)?,
            &[],
        );
        crate::io::write_atomic(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        let mut saved = Saved {
            recipe: RECIPE.into(),
            classes: self.classes,
            accuracy: self.accuracy,
            class_accuracy: self
                .class_accuracy
                .iter()
                .map(|&a| (!a.is_nan()).then_some(a))
                .collect(),
            checksum: String::new(),
        };
        saved.checksum = saved.seal(&bytes, path);
        crate::io::write_atomic(
            &path.with_extension("json"),
            serde_json::to_string_pretty(&saved)?.as_bytes(),
        )
        .with_context(|| format!("writing {}", path.with_extension("json").display()))
    }

    /// Trains on the labelled `train` split (at most `MAX_TRAIN` images) for `epochs` with
    /// Adam, one submit per step, and measures the accuracy on `test`. `progress` gets the
    /// step and the steps in all.
    pub fn train(
        gpu: &Gpu,
        (train, test): (&Images, &Images),
        classes: usize,
        (epochs, seed): (usize, u64),
        progress: &mut dyn FnMut(usize, usize),
    ) -> anyhow::Result<FeatureNet> {
        // As many as the adapter binds (4 buffers of its largest binding).
        let fits = (4 * gpu.binding_limit() as usize / train.image_bytes().max(1)).max(1);
        let train = train.take(MAX_TRAIN.min(fits));
        let labels = train
            .labels
            .as_deref()
            .context("the quality classifier needs the training images' labels")?;
        let n = train.count;
        if n < BATCH {
            anyhow::bail!(
                "the quality classifier needs at least {BATCH} labelled training images, and has {n}"
            );
        }
        let shape = Shape {
            h: train.height,
            w: train.width,
            c: train.channels,
        };
        let params = Params::new(gpu, &graph(shape, classes)?, seed)?;
        let g = &params.graph;
        let d = train.dim();
        let images = GpuImages::upload(gpu, &train.pixels, d, train.dtype)?;
        let indices = Matrix::zeros(gpu, 1, n, "classifier order")?;
        let ordered = Matrix::zeros(gpu, 1, n, "classifier labels")?;
        let x = Matrix::zeros(gpu, BATCH, d, "classifier x")?;
        let mut gathered = gather(gpu, &images, &indices.buffer, n, &x)?;
        let program = Program::new(gpu, &params, BATCH, Mode::Train, &[(g.x, &x)])?;
        let loss = Matrix::zeros(gpu, 1, BATCH, "classifier loss")?;
        let mut xent = softmax_xent(
            gpu,
            program.value(g.logits),
            &ordered.buffer,
            program.grad(g.logits),
            &loss,
            BATCH,
            1.0 / BATCH as f32,
        )?;
        let opt = adam(
            gpu,
            [&params.values, &params.grads, &params.m, &params.v],
            params.len,
            AdamConfig::default(),
        )?;
        let per_epoch = n / BATCH;
        let mut rng = Rng::new(seed);
        let mut step = 0;
        for _ in 0..epochs {
            let order = rng.permutation(n);
            let by_order: Vec<u32> = order
                .iter()
                .map(|&i| u32::from(labels[i as usize]))
                .collect();
            gpu.queue
                .write_buffer(&indices.buffer, 0, bytemuck::cast_slice(&order));
            gpu.queue
                .write_buffer(&ordered.buffer, 0, bytemuck::cast_slice(&by_order));
            for b in 0..per_epoch {
                gathered.set_offset(gpu, b * BATCH);
                xent.set_offset(gpu, b * BATCH);
                step += 1;
                opt.set_step(gpu, step as u64);
                let mut all = vec![&gathered.dispatch];
                all.extend(&program.forward);
                all.push(&xent.dispatch);
                all.extend(&program.backward);
                all.push(&opt.dispatch);
                gpu.run(&all)?;
                // A bounded queue: the uniforms written for later steps wait their turn.
                if step % 32 == 0 {
                    gpu.wait()?;
                    progress(step, epochs * per_epoch);
                }
            }
        }
        gpu.wait()?;
        let mut net = FeatureNet {
            params,
            classes,
            accuracy: 0.0,
            class_accuracy: Vec::new(),
        };
        let test_labels = test
            .labels
            .as_deref()
            .context("the quality classifier is measured on the test images' labels")?;
        let predicted = net.pass(gpu, test)?.predicted;
        let (acc, per_class) = accuracy(&predicted, test_labels, classes);
        net.accuracy = acc;
        net.class_accuracy = per_class;
        Ok(net)
    }

    /// The features and the most likely class of every image of `images`, uploaded a part
    /// at a time.
    pub fn pass(&self, gpu: &Gpu, images: &Images) -> anyhow::Result<Pass> {
        const PART: usize = 8192;
        let mut out = Pass {
            features: Vec::with_capacity(images.count * FEATURES),
            predicted: Vec::with_capacity(images.count),
        };
        for first in (0..images.count).step_by(PART) {
            let keep: Vec<usize> = (first..(first + PART).min(images.count)).collect();
            let part = self.pass_part(gpu, &images.select(&keep))?;
            out.features.extend(part.features);
            out.predicted.extend(part.predicted);
        }
        Ok(out)
    }

    fn pass_part(&self, gpu: &Gpu, images: &Images) -> anyhow::Result<Pass> {
        let g = &self.params.graph;
        let n = images.count;
        let d = images.dim();
        let data = GpuImages::upload(gpu, &images.pixels, d, images.dtype)?;
        let batches = n.div_ceil(BATCH).max(1);
        // The last batch repeats image 0 to fill its rows; those rows are dropped.
        let order: Vec<u32> = (0..batches * BATCH)
            .map(|i| if i < n { i as u32 } else { 0 })
            .collect();
        let indices = Matrix::from_slice(
            gpu,
            1,
            order.len(),
            bytemuck::cast_slice(&order),
            "classifier order",
        )?;
        let x = Matrix::zeros(gpu, BATCH, d, "classifier x")?;
        let mut gathered = gather(gpu, &data, &indices.buffer, order.len(), &x)?;
        let program = Program::new(gpu, &self.params, BATCH, Mode::Infer, &[(g.x, &x)])?;
        let features = g.features.expect("a classifier graph");
        let mut out = Pass {
            features: Vec::with_capacity(n * FEATURES),
            predicted: Vec::with_capacity(n),
        };
        for b in 0..batches {
            gathered.set_offset(gpu, b * BATCH);
            let mut all = vec![&gathered.dispatch];
            all.extend(&program.forward);
            gpu.run(&all)?;
            let rows = BATCH.min(n - b * BATCH);
            let f = program.value(features).read(gpu)?;
            out.features.extend(&f[..rows * FEATURES]);
            let logits = program.value(g.logits).read(gpu)?;
            out.predicted
                .extend(logits.chunks(self.classes).take(rows).map(argmax));
        }
        Ok(out)
    }
}
