//! PyTorch layout round trip: a state_dict saved by Python's `safetensors` (fixture made by
//! tests/fixtures/make_tiny_mlp.py) loads with its shapes inferred, computes what NumPy
//! computed, and saves back to the same tensors. Mismatched checkpoints are clear errors.

mod common;

use std::path::Path;

use common::for_each_gpu;
use vae_gpu::gpu::Matrix;
use vae_gpu::graph::{Mode, Program};
use vae_gpu::io::safetensors;
use vae_gpu::vae::checkpoint;
use vae_gpu::vae::step::Decoder;

fn fixture(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

/// Loads fixture `name`/model.safetensors, checks the inferred config, runs the encoder on
/// the fixture's x and the decoder on its z, compares with NumPy, and saves it back.
fn round_trip(name: &str, check_config: impl Fn(&vae_gpu::vae::ModelConfig)) {
    for_each_gpu(|gpu| {
        let model_path = fixture(&format!("{name}/model.safetensors"));
        let (_, cfg, params) =
            checkpoint::load(gpu, &model_path, checkpoint::Pick::Best, false).unwrap();
        let c = &cfg.model;
        check_config(c);
        let expected =
            safetensors::load(&fixture(&format!("{name}_expected.safetensors"))).unwrap();
        let rows = expected["z"].shape[0];
        // The encoder on the fixture's x, the decoder on its z.
        let x = Matrix::from_slice(gpu, rows, c.input_dim(), &expected["x"].data, "x").unwrap();
        let encoder =
            Program::new(gpu, &params, rows, Mode::Infer, &[(params.graph.x, &x)]).unwrap();
        gpu.run(&encoder.forward.iter().collect::<Vec<_>>())
            .unwrap();
        let mulv = encoder.value(params.graph.mulv).read(gpu).unwrap();
        let z = c.latent;
        for r in 0..rows {
            for j in 0..z {
                let (mu, lv) = (mulv[r * 2 * z + j], mulv[r * 2 * z + z + j]);
                assert!(
                    (mu - expected["mu"].data[r * z + j]).abs() < 1e-5,
                    "{name} mu[{r},{j}]"
                );
                assert!(
                    (lv - expected["logvar"].data[r * z + j]).abs() < 1e-5,
                    "{name} logvar[{r},{j}]"
                );
            }
        }
        let decoder = Decoder::new(gpu, &params, rows).unwrap();
        decoder.z().write(gpu, &expected["z"].data).unwrap();
        gpu.run(&decoder.launches()).unwrap();
        let logits = decoder.logits().unwrap().read(gpu).unwrap();
        for (i, (g, w)) in logits.iter().zip(&expected["logits"].data).enumerate() {
            assert!((g - w).abs() < 1e-5, "{name} logits[{i}]: {g} vs {w}");
        }
        // Saving gives back exactly the fixture's tensors, names and shapes.
        let saved = checkpoint::tensors(gpu, &params).unwrap();
        let original = safetensors::load(&model_path).unwrap();
        assert_eq!(saved.len(), original.len());
        for t in saved {
            assert_eq!(original[&t.name], t, "{name} tensor {}", t.name);
        }
    });
}

#[test]
fn pytorch_mlp_state_dict_round_trip() {
    round_trip("tiny_mlp", |c| {
        assert_eq!(
            (
                c.arch.as_str(),
                c.height,
                c.width,
                c.hidden.clone(),
                c.latent
            ),
            ("mlp", 3, 3, vec![4], 2)
        )
    });
}

/// The conv design: PyTorch's [out, in, k, k] / [in, out, k, k] weights and NCHW flatten
/// against vae-gpu's NHWC internals.
#[test]
fn pytorch_conv_state_dict_round_trip() {
    round_trip("tiny_conv", |c| {
        assert_eq!(
            (
                c.arch.as_str(),
                c.height,
                c.width,
                c.channels,
                c.conv_channels.clone(),
                c.latent
            ),
            ("conv", 8, 8, 2, vec![4, 8], 3)
        )
    });
}

#[test]
fn mismatched_checkpoints_are_clear_errors() {
    for_each_gpu(|gpu| {
        let dir = std::env::temp_dir().join(format!("vae-gpu-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut tensors: Vec<_> = safetensors::load(&fixture("tiny_mlp/model.safetensors"))
            .unwrap()
            .into_values()
            .collect();
        // A wrong shape.
        let bad = dir.join("wrong_shape.safetensors");
        let mut t2 = tensors.clone();
        let fc3 = t2.iter_mut().find(|t| t.name == "fc3.bias").unwrap();
        fc3.shape = vec![2, 2];
        safetensors::save(&bad, &t2).unwrap();
        let e = format!(
            "{:#}",
            checkpoint::load(gpu, &bad, checkpoint::Pick::Best, false)
                .err()
                .unwrap()
        );
        assert!(e.contains("fc3.bias") && e.contains("[2, 2]"), "{e}");
        // An extra tensor from another architecture.
        let extra = dir.join("extra.safetensors");
        tensors.push(safetensors::Tensor {
            name: "head2.weight".into(),
            shape: vec![1],
            data: vec![0.0],
        });
        safetensors::save(&extra, &tensors).unwrap();
        let e = format!(
            "{:#}",
            checkpoint::load(gpu, &extra, checkpoint::Pick::Best, false)
                .err()
                .unwrap()
        );
        assert!(
            e.contains("head2.weight") && e.contains("another architecture"),
            "{e}"
        );
        // A truncated file.
        let trunc = dir.join("truncated.safetensors");
        let bytes = std::fs::read(fixture("tiny_mlp/model.safetensors")).unwrap();
        std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
        let e = format!(
            "{:#}",
            checkpoint::load(gpu, &trunc, checkpoint::Pick::Best, false)
                .err()
                .unwrap()
        );
        assert!(e.contains("truncated.safetensors"), "{e}");
    });
}
