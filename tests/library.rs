//! The library API as a Rust program uses it: train with `Trainer`, then `Vae`'s calls on
//! the bundled Fashion-MNIST subset; a float16 checkpoint in PyTorch's layout; bad input.

use std::path::Path;
use std::sync::OnceLock;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use vae_gpu::{DataOptions, Error, Images, Trainer, Vae};

fn splits() -> (Images, Images) {
    let s = vae_gpu::load_data(Some(&vae_gpu::data::bundled_dir()), &DataOptions::default())
        .expect("the bundled data loads");
    (s.train.take(4096), s.test.take(200))
}

/// A model trained once per test binary and saved; its directory.
fn saved() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let (train, test) = splits();
        let mut epochs = Vec::new();
        let vae = Trainer::new()
            .mlp(&[64])
            .latent(4)
            .epochs(2)
            .batch_size(64)
            .learning_rate(3e-3)
            .seed(5)
            .on_epoch(|m| epochs.push(m.clone()))
            .fit(&train, &test)
            .expect("training runs");
        assert_eq!(epochs.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2]);
        assert!(epochs[1].test.total < epochs[0].test.total, "{epochs:?}");
        assert_eq!(vae.metrics().map(|m| m.epoch), Some(2));
        let dir = tempfile::tempdir().unwrap();
        vae.save(dir.path().join("model")).expect("saves");
        // A second save to the same place is refused, leaving the first intact.
        let again = vae.save(dir.path().join("model"));
        assert!(matches!(again, Err(Error::Input(_))), "{again:?}");
        dir
    })
    .path()
}

fn model_dir() -> std::path::PathBuf {
    saved().join("model")
}

#[test]
fn calls_return_what_they_promise() {
    let vae = Vae::load(model_dir()).unwrap();
    let (_, test) = splits();
    let few = test.take(5);
    let dim = vae.image_len();
    assert_eq!(dim, 784);
    let codes = vae.encode(&few).unwrap();
    assert_eq!((codes.count(), codes.latent), (5, 4));
    assert!(codes.logvar.iter().all(|v| v.is_finite()));
    let recon = vae.reconstruct(&few).unwrap();
    assert_eq!(recon.len(), 5 * dim);
    assert!(recon.iter().all(|v| (0.0..=1.0).contains(v)));
    // Reconstructions resemble their own image more than another's.
    let x = few.to_f32();
    let err = |a: usize, b: usize| -> f32 {
        (0..dim)
            .map(|i| (recon[a * dim + i] - x[b * dim + i]).powi(2))
            .sum()
    };
    let own: f32 = (0..5).map(|i| err(i, i)).sum();
    let other: f32 = (0..5).map(|i| err(i, (i + 1) % 5)).sum();
    assert!(own < 0.7 * other, "own {own} vs another's {other}");
    // The same images as f32 values and as `image` buffers give the same codes.
    let as_f32 = vae.encode(&x).unwrap();
    let buffers = vae.to_images(&x).unwrap();
    assert_eq!(buffers.len(), 5);
    let as_images = vae.encode(&buffers).unwrap();
    assert_eq!(as_f32.mu, codes.mu);
    assert_eq!(as_images.mu, codes.mu);
    let samples = vae.sample(7, 3).unwrap();
    assert_eq!(samples.len(), 7 * dim);
    assert_eq!(
        samples,
        vae.sample(7, 3).unwrap(),
        "a seed fixes the samples"
    );
    assert_ne!(samples, vae.sample(7, 4).unwrap());
    let decoded = vae.decode(&codes.mu).unwrap();
    assert_eq!(decoded, recon);
    // ELBO: images of the data score higher than noise.
    let elbo = vae.elbo(&few).unwrap();
    let noise: Vec<f32> = (0..5 * dim)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let noise_elbo = vae.elbo(&noise).unwrap();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&elbo) > mean(&noise_elbo) + 100.0,
        "{elbo:?} vs {noise_elbo:?}"
    );
}

#[test]
fn bad_input_is_an_input_error() {
    let vae = Vae::load(model_dir()).unwrap();
    let input = |r: vae_gpu::Result<_>| match r {
        Err(Error::Input(m)) => m,
        other => panic!(
            "expected an input error, got {:?}",
            other.map(|_: Vec<f32>| ())
        ),
    };
    assert!(input(vae.reconstruct(&vec![0.5; 783])).contains("783 values"));
    assert!(input(vae.reconstruct(&vec![1.5; 784])).contains("[0, 1]"));
    assert!(input(vae.decode(&[0.0; 5])).contains("codes of 4"));
    assert!(input(vae.decode(&[f32::NAN; 4])).contains("NaN"));
    let small = Images::from_f32(&[0.5; 16], 4, 4, 1).unwrap();
    assert!(input(vae.reconstruct(&small)).contains("28x28x1"));
    // Images' fields are public: a set that contradicts itself is an input error.
    let liar = Images {
        count: 3,
        ..Images::from_f32(&[0.5; 784], 28, 28, 1).unwrap()
    };
    assert!(input(vae.reconstruct(&liar)).contains("784 pixel bytes for 3 images"));
    let (train, test) = splits();
    let mislabelled = Images {
        labels: Some(vec![0; 2]),
        ..test.take(5)
    };
    match Trainer::new().fit(&train.take(64), &mislabelled) {
        Err(Error::Input(m)) => assert!(m.contains("2 labels for 5 images"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    match Vae::load(saved().join("missing")) {
        Err(Error::Input(m)) => assert!(m.contains("missing"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
    let (train, test) = splits();
    match Trainer::new().latent(0).fit(&train, &test) {
        Err(Error::Input(m)) => assert!(m.contains("latent"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

/// A checkpoint directory written by `Trainer::checkpoints` is a run the CLI can read.
#[test]
fn trainer_checkpoints_are_a_run() {
    let (train, test) = splits();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let vae = Trainer::new()
        .mlp(&[16])
        .latent(2)
        .epochs(2)
        .checkpoints(&run)
        .fit(&train.take(256), &test.take(64))
        .unwrap();
    for f in ["checkpoint-0002/model.safetensors", "metrics.jsonl"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let loaded = Vae::load(&run).unwrap();
    assert_eq!(loaded.config(), vae.config());
    let again = Trainer::new().checkpoints(&run).fit(&train, &test);
    assert!(
        matches!(&again, Err(Error::Input(m)) if m.contains("already holds a run")),
        "{:?}",
        again.err()
    );
}

/// A float16 model.safetensors in PyTorch's layout (as `model.half()` and
/// `safetensors.torch.save_file` write it) loads, and scores the data as the float32
/// model does, within float16 rounding.
#[test]
fn float16_checkpoint_matches_float32() {
    let dir = tempfile::tempdir().unwrap();
    let half_dir = dir.path().join("half");
    std::fs::create_dir_all(&half_dir).unwrap();
    let full = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&full).unwrap();
    let halves: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let bytes: Vec<u8> = view
                .data()
                .chunks(4)
                .flat_map(|b| {
                    let v = f32::from_le_bytes(b.try_into().unwrap());
                    half::f16::from_f32(v).to_le_bytes()
                })
                .collect();
            (name, view.shape().to_vec(), bytes)
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = halves
        .iter()
        .map(|(n, s, b)| {
            (
                n.as_str(),
                TensorView::new(Dtype::F16, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    assert!(bytes.len() < full.len() * 6 / 10, "half the size");
    std::fs::write(half_dir.join("model.safetensors"), bytes).unwrap();
    std::fs::copy(
        model_dir().join("config.json"),
        half_dir.join("config.json"),
    )
    .unwrap();

    let (_, test) = splits();
    let f32_model = Vae::load(model_dir()).unwrap();
    let f16_model = Vae::load(&half_dir).unwrap();
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (
        mean(f32_model.elbo(&test).unwrap()),
        mean(f16_model.elbo(&test).unwrap()),
    );
    assert!(a != b, "float16 rounding changes the weights");
    assert!(
        ((a - b) / a).abs() < 1e-3,
        "float16 ELBO {b} should be the float32 {a} within rounding"
    );
}

/// The model file carries its config: a bare model.safetensors of a non-square Gaussian
/// model (which no inference from shapes could recover) loads as it was; next to the
/// config.json of another model it is refused.
#[test]
fn a_model_file_carries_its_config() {
    let values: Vec<f32> = (0..40 * 32).map(|i| (i % 7) as f32 / 7.0).collect();
    let images = Images::from_f32(&values, 4, 8, 1).unwrap();
    let vae = Trainer::new()
        .mlp(&[8])
        .latent(3)
        .likelihood(vae_gpu::Likelihood::Gaussian)
        .epochs(1)
        .batch_size(8)
        .fit(&images, &images)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    vae.save(dir.path().join("full")).unwrap();
    let bare = dir.path().join("bare.safetensors");
    std::fs::copy(dir.path().join("full/model.safetensors"), &bare).unwrap();
    let loaded = Vae::load(&bare).unwrap();
    assert_eq!(loaded.config(), vae.config());
    assert_eq!((loaded.config().height, loaded.config().width), (4, 8));

    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(&bare, mixed.join("model.safetensors")).unwrap();
    std::fs::copy(model_dir().join("config.json"), mixed.join("config.json")).unwrap();
    match Vae::load(&mixed) {
        Err(Error::Input(m)) => assert!(m.contains("written for another model"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

/// Data past the GPU budget: `fit` streaming from memory and `fit_data` streaming a .npy
/// array from disk take the resident run's batches, so the same losses.
#[test]
fn streamed_fits_equal_resident() {
    let (train, test) = splits();
    let (train, test) = (train.take(300), test.take(100));
    let fit = |mib: u64, data: Option<&vae_gpu::TrainingData>| {
        let mut losses = Vec::new();
        let t = Trainer::new()
            .mlp(&[16])
            .latent(2)
            .epochs(1)
            .batch_size(64)
            .gpu_data_mib(mib)
            .on_epoch(|m| losses.push((m.train.total, m.test.total)));
        match data {
            Some(d) => t.fit_data(d),
            None => t.fit(&train, &test),
        }
        .unwrap();
        losses
    };
    let resident = fit(2048, None);
    assert_eq!(fit(0, None), resident, "streamed from memory");
    // The same images as a .npy array (its test rows are picked by a fixed shuffle, so the
    // disk run is compared with a resident fit_data of the same array).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let mut bytes = vae_gpu::data::npy::header_bytes("|u1", &[400, 28, 28]);
    bytes.extend_from_slice(&train.pixels);
    bytes.extend_from_slice(&test.pixels);
    std::fs::write(&path, bytes).unwrap();
    let load = |budget| vae_gpu::load_training_data(Some(&path), &DataOptions::default(), budget);
    let (in_memory, on_disk) = (load(u64::MAX).unwrap(), load(0).unwrap());
    assert!(matches!(in_memory.train, vae_gpu::TrainSet::Memory(_)));
    assert!(matches!(on_disk.train, vae_gpu::TrainSet::Disk(_)));
    assert_eq!(
        fit(0, Some(&on_disk)),
        fit(2048, Some(&in_memory)),
        "streamed from disk"
    );
}
