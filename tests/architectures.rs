//! Architectures from the command line: the resnet and a file-defined model train, resume
//! and serve every command; `--print-arch` writes a file that trains the same model bit for
//! bit; a PyTorch-style ResNetVAE state_dict loads on its own; a file that does not fit the
//! data is refused before anything runs, naming the layer and the shapes.

mod common;

use std::path::Path;

use common::cli::{data, fails_with, last_model, ok, tmp};

/// A small resnet and a short run: 256 images, batch 32, one epoch.
const SMALL: [&str; 12] = [
    "--conv-channels",
    "8,16",
    "--groups",
    "4",
    "--latent",
    "4",
    "--limit",
    "256",
    "--batch-size",
    "32",
    "--quiet",
    "--seed=2",
];

fn train(out: &str, arch: &str, extra: &[&str]) -> Vec<String> {
    let d = data();
    let mut args: Vec<String> = [
        "train", "--data", &d, "--out", out, "--arch", arch, "--epochs", "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run(args: &[String]) -> String {
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn names(model: &Path) -> Vec<String> {
    vae_gpu::io::safetensors::load(model)
        .unwrap()
        .into_keys()
        .collect()
}

#[test]
fn resnet_serves_every_command_and_resumes() {
    let out = tmp().join("resnet").display().to_string();
    let d = data();
    run(&train(&out, "resnet", &SMALL));
    let tensors = names(&last_model(&out));
    for want in [
        "enc_in.weight",
        "enc.0.norm1.weight",
        "enc.2.skip.weight",
        "fc_enc.weight",
        "dec.2.weight",
        "dec_norm.bias",
        "dec_out.weight",
    ] {
        assert!(tensors.iter().any(|t| t == want), "{want} in {tensors:?}");
    }
    ok(&["sample", "--model", &out, "--count", "4"]);
    ok(&["reconstruct", "--model", &out, "--data", &d, "--count", "3"]);
    ok(&["eval", "--model", &out, "--data", &d, "--limit", "64"]);
    // A resume keeps the architecture; another one is refused.
    let mut more = train(&out, "resnet", &SMALL);
    let at = more.iter().position(|a| a == "--out").unwrap();
    more[at] = "--resume".into();
    let at = more.iter().position(|a| a == "1").unwrap();
    more[at] = "2".into();
    run(&more);
    assert!(Path::new(&out).join("checkpoint-0002").is_dir());
    let mut other = more.clone();
    let at = other.iter().position(|a| a == "8,16").unwrap();
    other[at] = "8,24".into();
    fails_with(
        &other.iter().map(String::as_str).collect::<Vec<_>>(),
        1,
        &["--conv-channels", "differs"],
    );
    // Flags of another architecture are refused, not ignored.
    let mut mlp_flag = more.clone();
    mlp_flag.extend(["--hidden".into(), "64".into()]);
    fails_with(
        &mlp_flag.iter().map(String::as_str).collect::<Vec<_>>(),
        1,
        &["--hidden", "resnet"],
    );
    // The report describes the model and holds its architecture as a file.
    ok(&["report", "--model", &out, "--data", &d, "--limit", "64"]);
    let html = std::fs::read_to_string(Path::new(&out).join("report.html")).unwrap();
    assert!(html.contains("ResNet, levels of [8, 16]"), "{html}");
    assert!(html.contains("&quot;op&quot;: &quot;residual&quot;"));
}

/// A table's records train through a file-defined architecture too.
#[test]
fn a_table_trains_a_file_architecture() {
    let dir = tmp().join("table-arch");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mlp2.json");
    std::fs::write(
        &file,
        r#"{"encoder": [{"op": "flatten"}, {"op": "linear", "out": 32, "act": "silu"}, {"op": "linear", "out": 32, "act": "silu"}],
            "heads": ["mu", "logvar"],
            "decoder": [{"op": "linear", "out": 32, "act": "silu"}, {"op": "linear", "out": "data"}]}"#,
    )
    .unwrap();
    let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/wdbc/wdbc.csv");
    let table = table.display().to_string();
    let out = dir.join("run").display().to_string();
    let arch = file.display().to_string();
    ok(&[
        "train", "--data", &table, "--arch", &arch, "--out", &out, "--epochs", "1", "--quiet",
    ]);
    let tensors = names(&last_model(&out));
    // Unnamed layers are named by their list and place: the encoder's and decoder's differ.
    for want in ["encoder.1.weight", "decoder.1.weight", "mu.weight"] {
        assert!(tensors.iter().any(|t| t == want), "{want} in {tensors:?}");
    }
    let scores = dir.join("scores.csv").display().to_string();
    ok(&["score", "--model", &out, "--data", &table, "--out", &scores]);
    assert_eq!(
        std::fs::read_to_string(&scores).unwrap().lines().count(),
        58,
        "a header and one score per test record"
    );
}

#[test]
fn a_printed_architecture_trains_the_same_model() {
    let d = data();
    let mut print = vec!["train", "--data", &d, "--arch", "resnet", "--print-arch"];
    print.extend(&SMALL[..6]);
    let text = ok(&print);
    let file = tmp().join("printed.json");
    std::fs::write(&file, &text).unwrap();
    assert!(!Path::new("runs").join("run-0").exists());
    let (a, b) = (
        tmp().join("builtin").display().to_string(),
        tmp().join("printed").display().to_string(),
    );
    run(&train(&a, "resnet", &SMALL));
    run(&train(&b, &file.display().to_string(), &SMALL[6..]));
    let load = |run: &str| vae_gpu::io::safetensors::load(&last_model(run)).unwrap();
    assert_eq!(load(&a), load(&b), "the same tensors, names and values");
    // The run keeps its architecture: commands and a resume need no --arch.
    ok(&["sample", "--model", &b, "--count", "2"]);
    let vae = vae_gpu::Vae::load(&b).unwrap();
    assert_eq!(vae.config().arch, "file");
}

#[test]
fn a_pytorch_resnet_state_dict_loads_alone() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_resnet/model.safetensors");
    // The fixture's GroupNorm has 2 groups, which a state_dict does not say: with its
    // shapes alone, vae-gpu assumes ResNetVAE's 8 and refuses widths of 4.
    let copy = tmp().join("state-dict");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(&model, copy.join("model.safetensors")).unwrap();
    let m = copy.join("model.safetensors").display().to_string();
    fails_with(
        &["sample", "--model", &m, "--count", "2"],
        1,
        &["a width of 4", "8 groups", "config.json"],
    );
    // A config.json beside it says what the shapes cannot.
    let config = serde_json::json!({
        "model": {"arch": "resnet", "height": 8, "width": 8, "channels": 1, "conv_channels": [4, 8],
                  "groups": 2, "latent": 3, "likelihood": "bernoulli", "gauss_var": 0.5},
        "train": null,
        "state": {"epoch": 0, "step": 0},
    });
    std::fs::write(copy.join("config.json"), config.to_string()).unwrap();
    ok(&[
        "sample",
        "--model",
        &m,
        "--count",
        "2",
        "--out",
        &tmp().join("sd.png").display().to_string(),
    ]);
}

#[test]
fn architecture_files_that_do_not_fit_are_named() {
    let d = data();
    let dir = tmp().join("bad-archs");
    std::fs::create_dir_all(&dir).unwrap();
    let fail = |name: &str, body: &str, needles: &[&str]| {
        let file = dir.join(name);
        std::fs::write(&file, body).unwrap();
        let f = file.display().to_string();
        let out = dir.join(format!("{name}-run")).display().to_string();
        fails_with(
            &[
                "train", "--data", &d, "--arch", &f, "--out", &out, "--limit", "64",
            ],
            1,
            needles,
        );
        assert!(!Path::new(&out).exists(), "a refused run leaves nothing");
    };
    let with = |encoder: &str, decoder: &str| {
        format!(r#"{{"encoder": [{encoder}], "heads": "h", "decoder": [{decoder}]}}"#)
    };
    let ok_decoder = r#"{"op": "linear", "out": "data", "name": "out"}"#;
    fail(
        "typo.json",
        r#"{"encoder": [{"op": "conv", "out": 8, "kernal": 3}], "heads": "h", "decoder": []}"#,
        &["typo.json", "kernal", "line 1"],
    );
    fail(
        "too-big.json",
        &with(
            r#"{"op": "conv", "out": 8, "kernel": 4, "stride": 2, "padding": 1, "name": "a"}, {"op": "conv", "out": 8, "kernel": 16, "name": "b"}"#,
            ok_decoder,
        ),
        &["encoder[1]", "'b'", "14x14x8", "kernel 16"],
    );
    fail(
        "short.json",
        &with(
            r#"{"op": "flatten"}"#,
            r#"{"op": "linear", "out": [7, 7, 4], "name": "d"}, {"op": "deconv", "out": "data", "kernel": 4, "stride": 2, "padding": 1, "name": "u"}"#,
        ),
        &["decoder ends at 14x14x1", "28x28x1"],
    );
    fail(
        "groups.json",
        &with(
            r#"{"op": "conv", "out": 12, "kernel": 3, "padding": 1, "name": "a"}, {"op": "groupnorm", "groups": 8, "name": "n"}"#,
            ok_decoder,
        ),
        &["encoder[1]", "12 channels in 8 groups"],
    );
    fail(
        "act.json",
        &with(
            r#"{"op": "flatten"}, {"op": "act", "act": "swish"}"#,
            ok_decoder,
        ),
        &["encoder[1]", "unknown activation 'swish'"],
    );
    fail(
        "stride.json",
        &with(
            r#"{"op": "conv", "out": 3, "kernel": 4, "stride": 2, "padding": 1, "name": "a"}"#,
            ok_decoder,
        ),
        &["'a'", "output channels must be a multiple of 4"],
    );
    fail(
        "residual.json",
        &with(
            r#"{"op": "conv", "out": 8, "kernel": 3, "padding": 1, "name": "a"}, {"op": "residual", "name": "r", "body": [{"op": "conv", "out": 16, "kernel": 3, "padding": 1, "name": "c"}]}"#,
            ok_decoder,
        ),
        &["encoder[1]", "add of a 28x28x8 and a 28x28x16"],
    );
    fail(
        "twice.json",
        &with(
            r#"{"op": "flatten"}, {"op": "linear", "out": 16, "name": "a"}, {"op": "linear", "out": 16, "name": "a"}"#,
            ok_decoder,
        ),
        &["'a'", "distinct names"],
    );
    // The heads stored as two layers: their names are checked too.
    for (file, heads, encoder) in [
        (
            "heads-twice.json",
            r#"["mu", "mu"]"#,
            r#"{"op": "flatten"}"#,
        ),
        (
            "heads-clash.json",
            r#"["mu", "lv"]"#,
            r#"{"op": "flatten"}, {"op": "linear", "out": 16, "name": "lv"}"#,
        ),
    ] {
        fail(
            file,
            &format!(r#"{{"encoder": [{encoder}], "heads": {heads}, "decoder": [{ok_decoder}]}}"#),
            &["distinct names"],
        );
    }
    fail(
        "no-decoder.json",
        &with(r#"{"op": "flatten"}"#, ""),
        &["decoder"],
    );
    fail(
        "act-on-logits.json",
        &with(
            r#"{"op": "flatten"}"#,
            r#"{"op": "linear", "out": "data", "act": "sigmoid", "name": "out"}"#,
        ),
        &["logits"],
    );
    fail(
        "huge.json",
        &with(
            r#"{"op": "flatten"}, {"op": "linear", "out": 1000000000, "name": "wide"}"#,
            ok_decoder,
        ),
        &["'wide'", "2^28"],
    );
    fail(
        "kernel.json",
        &with(
            r#"{"op": "conv", "out": 8, "kernel": 100000, "name": "k"}"#,
            ok_decoder,
        ),
        &["'k'", "255"],
    );
    fail(
        "repeat.json",
        &with(
            r#"{"op": "flatten"}, {"op": "linear", "out": 8, "repeat": 1000000000000}"#,
            ok_decoder,
        ),
        &["encoder[1]", "repeat", "1 to 1024"],
    );
    fail(
        "heads.json",
        r#"{"encoder": [{"op": "flatten"}], "heads": 3, "decoder": []}"#,
        &["heads must be a layer name"],
    );
    // A byte-order mark, as some editors write, is not an error.
    let bom = dir.join("bom.json");
    std::fs::write(
        &bom,
        format!("\u{feff}{}", with(r#"{"op": "flatten"}"#, ok_decoder)),
    )
    .unwrap();
    let printed = dir.join("printed");
    ok(&[
        "train",
        "--data",
        &d,
        "--arch",
        &bom.display().to_string(),
        "--print-arch",
        "--out",
        &printed.display().to_string(),
    ]);
    assert!(!printed.exists(), "--print-arch makes no run directory");
    // Built-in architectures name the size that fits.
    let out = dir.join("odd").display().to_string();
    fails_with(
        &[
            "train", "--data", &d, "--arch", "resnet", "--size", "30", "--out", &out, "--limit",
            "64",
        ],
        1,
        &["30x30 must divide by 4", "--size 32x32"],
    );
    fails_with(
        &[
            "train", "--data", &d, "--arch", "resnet", "--hidden", "64", "--limit", "64",
        ],
        1,
        &["--hidden"],
    );
    fails_with(
        &["train", "--data", &d, "--blocks", "2", "--limit", "64"],
        1,
        &["--blocks and --groups"],
    );
}

/// The README's architecture files: the three built-in ones as `--print-arch` writes them
/// (so the documentation cannot drift from the code), and the example, which must build.
#[test]
fn the_readme_shows_the_architectures_as_they_are() {
    use vae_gpu::ModelConfig;
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("### Architectures from a file").unwrap()..];
    let blocks: Vec<&str> = section
        .split("```json\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .take(4)
        .collect();
    assert_eq!(
        blocks.len(),
        4,
        "the example and the three built-in architectures"
    );
    for (block, c) in blocks[1..].iter().zip([
        ModelConfig::mlp(28, 28, 1),
        ModelConfig::conv(28, 28, 1),
        ModelConfig::resnet(28, 28, 1),
    ]) {
        let spec = vae_gpu::ArchSpec {
            latent: Some(20),
            ..c.spec().unwrap()
        };
        assert_eq!(*block, spec.to_text(), "README's {} architecture", c.arch);
    }
    let example = vae_gpu::ArchSpec::parse(blocks[0]).unwrap();
    let c = ModelConfig {
        arch: "file".into(),
        latent: example.latent.unwrap(),
        spec: Some(example),
        ..ModelConfig::mlp(28, 28, 1)
    };
    c.graph().unwrap();
}

/// A batch whose matrices outgrow what the adapter binds at once is refused before
/// anything runs, naming the layer and the batch size that fits (lavapipe binds 128 MiB;
/// an adapter that binds more trains it).
#[test]
fn a_batch_too_large_to_bind_names_the_batch_that_fits() {
    let d = data();
    let args = [
        "train",
        "--data",
        &d,
        "--arch",
        "resnet",
        "--batch-size",
        "128",
        "--limit",
        "256",
        "--bench-steps",
        "1",
    ];
    let out = common::cli::run(&args);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("'dec.5'")
                && err.contains("use --batch-size")
                && !err.contains("panicked"),
            "{err}"
        );
    }
}
