//! `vae-gpu report`: one self-contained HTML page about a run (figures inlined as base64
//! PNGs, no scripts, nothing fetched): settings, curves, samples, reconstructions, the latent
//! space, a traversal of its busiest dimensions and the KL of each dimension.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use clap::Args;

use super::{check_dims, load_model, open_gpu, say, DataArgs, DeviceArgs, ModelArg};
use crate::data::class_name;
use crate::io::chart;
use crate::io::png::{save_grid, Labels};
use crate::vae::codec::{decode_pixels, encode};
use crate::vae::train::{EpochMetrics, ACTIVE_VARIANCE};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run to report on (the same as --model) [default: the newest run under runs/]
    #[arg(value_name = "RUN", conflicts_with = "model")]
    pub run: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test images the latent figures use.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..))]
    pub limit: u32,
    /// Output HTML file [default: RUN/report.html]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A figure: the PNG at `path` inlined, with a caption.
fn figure(path: &Path, caption: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(format!(
        "<figure><img alt=\"{c}\" src=\"data:image/png;base64,{data}\"><figcaption>{c}</figcaption></figure>\n",
        c = esc(caption)
    ))
}

/// Rows of a two-column table.
fn table(rows: &[(String, String)]) -> String {
    let mut t = String::from("<table>\n");
    for (k, v) in rows {
        t += &format!("<tr><th>{}</th><td>{}</td></tr>\n", esc(k), esc(v));
    }
    t + "</table>\n"
}

fn metrics_table(history: &[EpochMetrics]) -> String {
    let mut t = String::from(
        "<table class=\"metrics\"><tr><th>epoch</th><th>beta</th><th>train total</th><th>train recon</th><th>train KL</th><th>test total</th><th>test recon</th><th>test KL</th><th>active units</th><th>samples/s</th></tr>\n",
    );
    for m in history {
        t += &format!(
            "<tr><td>{}</td><td>{:.3}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{:.0}</td></tr>\n",
            m.epoch,
            m.beta,
            m.train.total,
            m.train.recon,
            m.train.kl,
            m.test.total,
            m.test.recon,
            m.test.kl,
            m.active_units.map_or("-".into(), |a| a.to_string()),
            m.samples_per_sec
        );
    }
    t + "</table>\n"
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}\
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}\
table.metrics td{text-align:right}figure{margin:1em 0}img{max-width:100%}\
figcaption{color:#555;font-size:.9em}";

/// What `vae-gpu quality` measured on this run: one row per prior, the real floor beside.
fn quality_table(scores: &[serde_json::Value]) -> String {
    let f = |v: &serde_json::Value, key: &str, what: &str| {
        v[key][what]
            .as_f64()
            .map_or("-".into(), |x| format!("{x:.3}"))
    };
    let mut s = String::from(
        "<table class=\"metrics\"><tr><th>samples from</th><th>count</th><th>classifier accuracy</th><th>Fréchet</th><th>precision</th><th>recall</th><th>real: Fréchet</th><th>real: precision</th><th>real: recall</th></tr>\n",
    );
    for v in scores {
        s += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(v["prior"].as_str().unwrap_or("?")),
            v["count"],
            v["classifier"]["accuracy"]
                .as_f64()
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            f(v, "samples", "frechet"),
            f(v, "samples", "precision"),
            f(v, "samples", "recall"),
            f(v, "real", "frechet"),
            f(v, "real", "precision"),
            f(v, "real", "recall"),
        );
    }
    s += "</table>\n<p>From <code>vae-gpu quality</code>: samples against the test split in the features of a small conv net trained on the labelled training split (Fréchet distance: lower is better; precision: the share of samples inside the real images' k-nearest-neighbour manifold; recall: the share of real images inside the samples'). The real columns are the floor: as many real training images, scored the same way.</p>\n";
    s
}

pub fn run(device: &DeviceArgs, a: &ReportArgs) -> anyhow::Result<()> {
    let gpu = open_gpu(device)?;
    let model = ModelArg {
        model: a.run.clone().or_else(|| a.model.model.clone()),
    };
    let (dir, cfg, params) = load_model(&gpu, &model)?;
    let input = a.data.for_run(&cfg)?;
    let c = &cfg.model;
    super::images_only(c)?;
    let test = input.load_test()?;
    check_dims(c, &test)?;
    let test = test.take(a.limit as usize);
    let history = crate::vae::train::resumed_history(&dir, &cfg);
    let shape = (c.height, c.width, c.channels);

    // Figures are drawn into a scratch directory (the run is left as it is), except the
    // samples and reconstructions its training wrote.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let fig = |name: &str| scratch.path().join(name);
    if !history.is_empty() {
        chart::save_loss_chart(&fig("loss.png"), &crate::vae::train::chart_points(&history))?;
    }
    let codes = encode(&gpu, &params, c, &test, 1.0)?.codes;
    let kl = codes.kl_per_dim();
    let active = codes.active_units(ACTIVE_VARIANCE);
    chart::save_bars(
        &fig("kl.png"),
        &format!(
            "KL of each latent dimension ({active} of {} active)",
            c.latent
        ),
        "latent dimension",
        "nats per image",
        &kl,
    )?;
    // The two dimensions with the most KL carry the most information: plot and walk them.
    let mut busiest: Vec<usize> = (0..c.latent).collect();
    busiest.sort_by(|&i, &j| kl[j].total_cmp(&kl[i]));
    let (dx, dy) = (busiest[0], *busiest.get(1).unwrap_or(&busiest[0]));
    let points: Vec<(f32, f32)> = codes
        .mu
        .chunks(c.latent)
        .map(|r| (r[dx], if dy == dx { 0.0 } else { r[dy] }))
        .collect();
    let names = input.run_class_names(&cfg, test.labels.as_deref())?;
    chart::save_scatter(
        &fig("scatter.png"),
        &format!("Latent means of {} test images", test.count),
        (
            &format!("latent dimension {dx} (mean)"),
            &format!("latent dimension {dy} (mean)"),
        ),
        &points,
        test.labels.as_deref(),
        &|l| class_name(&names, l),
    )?;
    let walked: Vec<usize> = busiest.iter().copied().take(6).collect();
    let steps = 9;
    let value = |i: usize| -3.0 + 6.0 * i as f32 / (steps - 1) as f32;
    let mut z = Vec::new();
    for &d in &walked {
        for i in 0..steps {
            let mut code = vec![0.0; c.latent];
            code[d] = value(i);
            z.extend(code);
        }
    }
    save_grid(
        &fig("traverse.png"),
        // A conditional model walks the class of the first test image.
        &decode_pixels(
            &gpu,
            &params,
            c,
            &z,
            crate::vae::codec::own_classes(c, &test).map(|l| &l[..1]),
        )?,
        shape,
        steps,
        &Labels {
            title: "The busiest latent dimensions varied around the origin".into(),
            rows: walked.iter().map(|d| format!("z{d}")).collect(),
            cols: (0..steps).map(|i| format!("{:+.1}", value(i))).collect(),
        },
    )?;
    let (samples_png, recons_png) =
        if dir.join("samples.png").exists() && dir.join("reconstructions.png").exists() {
            (dir.join("samples.png"), dir.join("reconstructions.png"))
        } else {
            crate::vae::train::write_pictures(
                &gpu,
                &params,
                c,
                (&test, &names),
                scratch.path(),
                cfg.state.epoch,
            )?;
            (fig("samples.png"), fig("reconstructions.png"))
        };
    // Mixtures `sample --prior gmm:K` fitted to these weights: samples from the first.
    let mixture = super::prior::saved(&gpu, &params, c, &dir)?
        .into_iter()
        .next();
    if let Some((k, g)) = &mixture {
        crate::vae::train::save_samples(
            &gpu,
            &params,
            c,
            &names,
            (
                crate::vae::decode::Prior::of(Some(g)),
                &super::prior::PriorArg::Gmm(*k).describe(1.0, c.classes.is_some()),
            ),
            &fig("mixture.png"),
        )?;
    }

    let mut settings = vec![
        ("model".to_string(), dir.display().to_string()),
        ("architecture".into(), c.describe()),
        (
            "images".into(),
            format!("{}x{}x{}", c.height, c.width, c.channels),
        ),
        ("latent dimensions".into(), c.latent.to_string()),
        (
            "prior".into(),
            match c.vamp {
                Some(k) => format!("VampPrior, {k} learned pseudo-inputs"),
                None => "N(0, I)".into(),
            },
        ),
        (
            "likelihood".into(),
            format!(
                "{:?}{}",
                c.likelihood,
                if c.binarize {
                    ", of dynamically binarized pixels"
                } else {
                    ""
                }
            ),
        ),
        (
            "active units".into(),
            format!(
                "{active} of {} (variance of the mean above {ACTIVE_VARIANCE})",
                c.latent
            ),
        ),
        ("device".into(), gpu.describe()),
    ];
    if let Some(t) = &cfg.train {
        settings.extend([
            ("data".to_string(), t.data.clone()),
            (
                "epochs".into(),
                format!("{} of {}", cfg.state.epoch, t.epochs),
            ),
            ("batch size".into(), t.batch_size.to_string()),
            (
                "objective".into(),
                match (t.iwae_k, t.elbo_k) {
                    (1, 1) => "the ELBO, one sample per image".into(),
                    (1, k) => format!("the ELBO averaged over {k} samples per image"),
                    (k, _) if t.dreg => format!("the importance-weighted bound, {k} samples per image, the encoder's gradient doubly reparameterized"),
                    (k, _) => format!("the importance-weighted bound, {k} samples per image"),
                },
            ),
            (
                "learning rate".into(),
                format!("{}, {}", t.adam.lr, t.lr_schedule.describe()),
            ),
            (
                "Adam".into(),
                format!(
                    "betas {}, {}; epsilon {}; weight decay {}",
                    t.adam.beta1, t.adam.beta2, t.adam.eps, t.adam.weight_decay
                ),
            ),
            (
                "beta".into(),
                format!(
                    "{} (warm-up {} epochs, {} cycles, free bits {})",
                    t.beta, t.kl_warmup, t.kl_cycles, t.free_bits
                ),
            ),
            ("seed".into(), t.seed.to_string()),
        ]);
        if t.output_bias_from_data {
            settings.push((
                "output bias".into(),
                "started at the training data's mean".into(),
            ));
        }
    }
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vae-gpu report: {t}</title><style>{STYLE}</style></head><body>\n<h1>vae-gpu report: {t}</h1>\n",
        t = esc(&dir.display().to_string())
    );
    html += "<h2>Settings</h2>\n";
    html += &table(&settings);
    if let Ok(spec) = c.spec() {
        // The whole architecture, as `train --arch FILE.json` takes it back.
        html += &format!(
            "<details><summary>The architecture as a file (train --arch FILE.json)</summary><pre>{}</pre></details>\n",
            esc(&spec.to_text())
        );
    }
    if !history.is_empty() {
        html += "<h2>Training</h2>\n";
        html += &metrics_table(&history);
        html += &figure(
            &fig("loss.png"),
            "Losses per epoch and during the steps, in nats per image",
        )?;
    }
    html += "<h2>Samples and reconstructions</h2>\n";
    let drawn = match c.vamp {
        Some(k) => format!("New images decoded from codes drawn from the VampPrior the model learned (the mixture of its encoder's posteriors at {k} learned pseudo-inputs)"),
        None => "New images decoded from codes drawn from the prior".into(),
    };
    html += &figure(&samples_png, &drawn)?;
    // A VampPrior's pseudo-inputs, drawn beside the samples (by training, or just now).
    let png = samples_png.with_file_name("pseudo-inputs.png");
    if let Some(k) = c.vamp.filter(|_| png.exists()) {
        html += &figure(
            &png,
            &format!("The learned pseudo-inputs (the first {} of {k}), as the encoder sees them: the prior is the mixture of its posteriors at them", k.min(crate::vae::vamp::SHOWN)),
        )?;
    }
    if let Some((k, _)) = &mixture {
        html += &figure(
            &fig("mixture.png"),
            &format!(
                "New images decoded from codes drawn from the {k}-Gaussian mixture fitted to the training split's latent means{} (sample --prior gmm:{k}), which covers the codes the data uses better than N(0, I)",
                if c.classes.is_some() { ", one mixture per class, each row drawn from its class's" } else { "" }
            ),
        )?;
    }
    html += &figure(&recons_png, "Test images over their reconstructions")?;
    let fingerprint = format!(
        "{:016x}",
        crate::vae::checkpoint::fingerprint(&gpu, &params)?
    );
    let scores = super::quality::saved(&fingerprint, &dir);
    if !scores.is_empty() {
        html += "<h2>Sample quality</h2>\n";
        html += &quality_table(&scores);
    }
    html += "<h2>Latent space</h2>\n";
    html += &figure(
        &fig("scatter.png"),
        "The latent means of test images in the two dimensions with the most KL, coloured by class",
    )?;
    html += &figure(
        &fig("traverse.png"),
        "Each of the busiest dimensions varied from -3 to +3 with the others at 0",
    )?;
    html += &figure(&fig("kl.png"), "KL of each dimension on the test images: near 0, a dimension carries nothing (posterior collapse)")?;
    html += "</body></html>\n";
    let out = super::output_path(a.out.as_deref(), || dir.join("report.html"))?;
    crate::io::write_atomic(&out, html.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    say!(
        "open it in a browser: file://{}",
        out.canonicalize().unwrap_or(out.clone()).display()
    );
    super::report(
        &format!("wrote {} ({} KiB)", out.display(), html.len() / 1024),
        serde_json::json!({"out": out, "bytes": html.len(), "active_units": active, "kl_per_dim": kl}),
    );
    Ok(())
}
