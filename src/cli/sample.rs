//! `vae-gpu sample`: new images decoded from codes drawn from the prior (a table model's:
//! records in the table's columns, as CSV).

use std::path::PathBuf;

use clap::Args;

use super::{load_model, open_gpu, DeviceArgs, ModelArg};
use crate::vae::decode::{generate, generate_each, generate_outputs, to_u8, Prior};
use crate::vae::step::class_of;

/// `--temperature`: 0 to 10 (the prior's spread; far beyond 1 the codes leave everything
/// the decoder learned, and the values overflow).
pub(super) fn temperature(s: &str) -> Result<f32, String> {
    super::non_negative(s)
        .ok()
        .filter(|t| *t <= 10.0)
        .ok_or_else(|| format!("'{s}' is not a temperature from 0 to 10"))
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// How many images to draw [default: 100; with several classes, 10 of each]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: Option<u32>,
    /// A conditional model's classes, each a row of the grid [default: all]
    #[command(flatten)]
    pub class: super::ClassArg,
    /// Seed of the prior noise (and of a mixture's fit).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where codes come from: normal (N(0, I)); gmm / gmm:K, a mixture of K Gaussians
    /// (default 10) fitted by EM to the latent means of the training split (--data,
    /// default the run's), saved in the run and reused (a conditional model: one per
    /// class, fitted to that class's codes, which keeps samples in their class); vamp,
    /// the VampPrior the model learned (train --prior vamp:K) [default: the model's own:
    /// vamp or normal]
    #[arg(long, value_parser = super::prior::parse_prior)]
    pub prior: Option<super::prior::PriorArg>,
    #[command(flatten)]
    pub data: super::DataArgs,
    /// Scale of the prior's standard deviation (below 1 gives safer, blurrier samples). For
    /// a table model, the cells' spread instead: 0 gives each cell its likeliest value. For
    /// a sequence model, the softmax temperature of each next token: 0 takes the likeliest.
    #[arg(long, default_value_t = 1.0, value_parser = temperature)]
    pub temperature: f32,
    /// Output PNG grid, or a table model's CSV [default: RUN/samples.png, RUN/samples.csv]
    #[arg(long, value_parser = super::out_path)]
    pub out: Option<PathBuf>,
    /// Columns of the grid [default: square-ish]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cols: Option<u32>,
    /// Write one PNG per sample into this directory instead of a grid.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "cols"], value_parser = super::out_path)]
    pub separate: Option<PathBuf>,
}

pub fn run(device: &DeviceArgs, a: &SampleArgs) -> anyhow::Result<()> {
    if let Some(at) = super::sequence::sequence_checkpoint(&a.model)? {
        return super::sequence::sample(device, a, &at);
    }
    let gpu = open_gpu(device)?;
    let (dir, cfg, params) = load_model(&gpu, &a.model)?;
    let c = &cfg.model;
    let prior_arg = super::prior::PriorArg::resolve(a.prior, c)?;
    if a.prior.is_none() && prior_arg == super::prior::PriorArg::Normal && c.classes.is_some() {
        super::say!("note: codes from N(0, I) can drift toward another class; --prior gmm draws each class's from its own codes (see the README's conditional VAEs)");
    }
    // A conditional model draws each class asked (all by default): `per` images of each.
    let asked = match a.class.labels(&cfg)? {
        None if c.classes.is_some() => super::ClassArg {
            class: vec!["all".into()],
        }
        .labels(&cfg)?,
        asked => asked,
    };
    let several = asked.as_ref().is_some_and(|l| l.len() > 1);
    let per = a
        .count
        .map_or(if several { 10 } else { 100 }, |n| n as usize);
    let classes: Option<Vec<u8>> = asked.as_ref().map(|l| {
        l.iter()
            .flat_map(|&k| std::iter::repeat_n(k, per))
            .collect()
    });
    let count = classes.as_ref().map_or(per, Vec::len);
    let shape = (c.height, c.width, c.channels);
    // Outputs are checked before a mixture is fitted for them, against the data named too.
    if a.data.data.is_some() {
        a.data.note_reads();
    }
    for out in a.out.iter().chain(&a.separate) {
        super::paths::check_output(out)?;
    }
    let mixture = prior_arg.mixture(&gpu, (&params, &cfg, &dir), &a.data, a.seed)?;
    let prior = Prior::of(mixture.as_ref());
    if let Some(schema) = &c.table {
        return write_records(
            &gpu,
            (&params, c, &dir),
            schema,
            a,
            (count, prior, classes.as_deref()),
        );
    }
    if let Some(sep) = &a.separate {
        // Written as each batch is decoded: a large --count never sits in memory at once.
        super::paths::check_output(sep)?;
        let out = crate::io::png::Numbered::new(sep, "sample", shape)?;
        let mut i = 0;
        generate_each::<anyhow::Error>(
            &gpu,
            &params,
            c,
            (count, a.seed, a.temperature),
            (prior, classes.as_deref()),
            &mut |v| {
                out.save(i, &to_u8(&v))?;
                i += 1;
                Ok(())
            },
        )?;
        super::report(
            &format!("wrote {count} images to {}", sep.display()),
            serde_json::json!({"images": count, "out": sep}),
        );
    } else {
        let out = super::output_path(a.out.as_deref(), || dir.join("samples.png"))?;
        let cols = a.cols.map(|c| c as usize).unwrap_or_else(|| match several {
            true => per,
            false => (count as f64).sqrt().ceil() as usize,
        });
        // Refused before any decoding when the grid would be too large.
        crate::io::png::check_grid(count, (c.height, c.width), cols).map_err(|e| {
            anyhow::anyhow!("{e} (or write one file per image with --separate DIR)")
        })?;
        let images: Vec<Vec<u8>> = generate(
            &gpu,
            &params,
            c,
            (count, a.seed, a.temperature),
            (prior, classes.as_deref()),
        )?
        .iter()
        .map(|v| to_u8(v))
        .collect();
        let names = cfg.train.as_ref().map_or(&[][..], |t| &t.class_names[..]);
        let name = |l: u8| crate::data::class_name(names, l);
        let of = match asked.as_deref() {
            Some([one]) => format!(" of {}", name(*one)),
            Some(_) => format!(", {per} of each class"),
            None => String::new(),
        };
        let mut from = prior_arg.describe(a.temperature, c.classes.is_some());
        if c.stacked() {
            from += ", the layers below drawn top-down";
        }
        let title = format!("{} samples{of} from {from}, seed {}", images.len(), a.seed);
        // One named row per class when each class fills its own rows.
        let rows = match asked.as_deref() {
            Some(l) if l.len() > 1 && cols == per => l.iter().map(|&k| name(k)).collect(),
            _ => Vec::new(),
        };
        crate::io::png::save_grid(
            &out,
            &images,
            shape,
            cols,
            &crate::io::png::Labels {
                title,
                rows,
                cols: Vec::new(),
            },
        )?;
        super::report(
            &format!("wrote {} samples to {}", images.len(), out.display()),
            serde_json::json!({"images": images.len(), "out": out}),
        );
    }
    Ok(())
}

/// A table model's samples: records in the table's own columns and units (and a
/// conditional model's label column, the class asked), as CSV. Codes come from the prior at
/// full spread; `--temperature` scales the cells' own noise.
fn write_records(
    gpu: &crate::gpu::Gpu,
    (params, c, dir): (
        &crate::vae::Params,
        &crate::vae::ModelConfig,
        &std::path::Path,
    ),
    schema: &crate::data::table::Schema,
    a: &SampleArgs,
    (count, prior, classes): (usize, Prior<'_>, Option<&[u8]>),
) -> anyhow::Result<()> {
    use anyhow::Context;
    if a.separate.is_some() || a.cols.is_some() {
        anyhow::bail!(
            "--separate and --cols lay out images; a table model's samples are records (--out FILE.csv)"
        );
    }
    let out = super::output_path(a.out.as_deref(), || dir.join("samples.csv"))?;
    if !crate::data::table::is_csv(&out) {
        anyhow::bail!(
            "{}: a table model's samples are records; give --out FILE.csv",
            out.display()
        );
    }
    let outputs = generate_outputs(gpu, params, c, (count, a.seed, 1.0), (prior, classes))?;
    let mut rng = crate::rng::Rng::new(a.seed);
    let label = schema.label.as_ref().filter(|_| classes.is_some());
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    header.extend(label.map(|(name, _)| name.as_str()));
    w.write_record(&header)?;
    for (i, row) in outputs.iter().enumerate() {
        let mut cells = schema.cells(&schema.draw_encoded(row, &mut rng, a.temperature));
        if let (Some((_, levels)), Some(asked)) = (label, classes) {
            let l = class_of(asked, i);
            cells.push(
                levels
                    .get(usize::from(l))
                    .cloned()
                    .unwrap_or_else(|| l.to_string()),
            );
        }
        w.write_record(&cells)?;
    }
    let bytes = w.into_inner().context("writing CSV")?;
    crate::io::write_atomic(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    super::report(
        &format!("wrote {count} records to {}", out.display()),
        serde_json::json!({"records": count, "out": out}),
    );
    Ok(())
}
