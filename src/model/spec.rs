//! Architectures as data: the JSON format of `train --arch FILE.json`, which the built-in
//! architectures are written in too, and its translation into a graph, validated layer by
//! layer (an error names the layer and the shapes that do not fit).
//!
//! ```json
//! {
//!   "latent": 20,
//!   "encoder": [
//!     {"op": "conv", "out": 32, "kernel": 4, "stride": 2, "padding": 1, "act": "relu", "name": "conv1"},
//!     {"op": "residual", "name": "block", "body": [
//!       {"op": "groupnorm", "groups": 8, "act": "silu", "name": "norm"},
//!       {"op": "conv", "out": 32, "kernel": 3, "padding": 1, "name": "conv"}
//!     ]}
//!   ],
//!   "heads": "fc_enc",
//!   "decoder": [
//!     {"op": "linear", "out": [14, 14, 32], "act": "relu", "name": "fc_dec"},
//!     {"op": "deconv", "out": "data", "kernel": 4, "stride": 2, "padding": 1, "name": "deconv1"}
//!   ]
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::graph::{Builder, Graph, TensorId};
use crate::ops::conv::Shape;
use crate::ops::Activation;

/// A model's architecture: the encoder (data to features), the heads (a Linear to mu and
/// logvar), the decoder (the code z to one logit per data value), and optionally the
/// latent size. What `vae-gpu train --arch FILE.json` reads and `--print-arch` writes; see
/// the README's "Architectures from a file" for the layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// The latent size (`--latent` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<usize>,
    pub encoder: Vec<Layer>,
    /// The checkpoint name of the Linear to mu | logvar, or two names: the mu layer's and
    /// the logvar layer's (PyTorch's example, `["fc21", "fc22"]`).
    pub heads: Heads,
    pub decoder: Vec<Layer>,
    /// Stochastic layers below the code (stacked latents), bottom first: `heads` then give
    /// the lowest one, and the code sits above the last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub below: Vec<Stacked>,
}

/// A stochastic layer below the code (Burda et al. 2016's stacked latents): `latent`
/// values, whose posterior the heads below give; `encoder` runs from its sampled code to
/// `heads`, the posterior of the layer above; that layer's code runs through `decoder` to
/// `prior`, the Linear to this layer's prior mu | logvar, and its code on into the decoder
/// below (the data's, for the lowest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stacked {
    pub latent: usize,
    pub encoder: Vec<Layer>,
    pub heads: Heads,
    pub decoder: Vec<Layer>,
    pub prior: Heads,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "heads must be a layer name or two: \"fc\" or [\"fc21\", \"fc22\"]"
)]
pub enum Heads {
    One(String),
    Two([String; 2]),
}

/// How many outputs: a count, an image [h, w, c], or "data": the decoder's outputs (a
/// Linear's flat output: the data's values, or a table's per-column parameters) or the
/// data's channels (a convolution's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "out must be a count, an image [h, w, c], or \"data\""
)]
pub enum Size {
    Count(usize),
    Image([usize; 3]),
    Word(String),
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One entry of the encoder's or decoder's list. `act` is an activation's name (relu,
/// leaky_relu[:slope], sigmoid, tanh, silu; none by default), `name` the checkpoint name
/// of the layer's parameters (inside a block, prefixed with the block's), `repeat` how many
/// times the entry follows itself (names then get .0, .1, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    Linear {
        out: Size,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        act: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        repeat: usize,
    },
    Conv(ConvLayer),
    /// ConvTranspose2d.
    Deconv(ConvLayer),
    Groupnorm {
        groups: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        act: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        repeat: usize,
    },
    Act {
        act: String,
    },
    /// Nearest-neighbour upsampling by 2.
    Upsample,
    /// The values as one flat vector, in vae-gpu's (h, w, c) order.
    Flatten,
    /// The values as an image [h, w, c], in vae-gpu's (h, w, c) order.
    Reshape {
        to: [usize; 3],
    },
    /// y = skip(x) + body(x); no skip layers: x itself.
    Residual {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        body: Vec<Layer>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skip: Vec<Layer>,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        repeat: usize,
    },
    /// y = x and body(x) side by side (channels of an image, or features).
    Concat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        body: Vec<Layer>,
    },
}

/// JSON on one line with a space after each comma and colon: `{"op": "conv", "out": 32}`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn spaced(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    value
        .serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, Spaced,
        ))
        .expect("architectures serialise");
    String::from_utf8(out).expect("JSON is UTF-8")
}

impl ArchSpec {
    /// An architecture from the text of a file (JSON; see the README's "Architectures from
    /// a file"); a malformed one is an error naming the line and column.
    pub fn parse(text: &str) -> Result<ArchSpec, serde_json::Error> {
        // Editors on Windows may start a UTF-8 file with a byte-order mark.
        serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(text))
    }

    /// The architecture as a file holds it: JSON with one layer per line (a block's layers
    /// indented under it), as the README and `train --print-arch` show it.
    pub fn to_text(&self) -> String {
        fn list(out: &mut String, layers: &[Layer], indent: usize) {
            let pad = " ".repeat(indent);
            for (i, layer) in layers.iter().enumerate() {
                let mut head = layer.clone();
                let nested = match &mut head {
                    Layer::Residual { body, skip, .. } => {
                        vec![
                            ("body", std::mem::take(body)),
                            ("skip", std::mem::take(skip)),
                        ]
                    }
                    Layer::Concat { body, .. } => vec![("body", std::mem::take(body))],
                    _ => Vec::new(),
                };
                let line = spaced(&head);
                let nested: Vec<_> = nested.into_iter().filter(|(_, l)| !l.is_empty()).collect();
                if nested.is_empty() {
                    out.push_str(&format!("{pad}{line}"));
                } else {
                    out.push_str(&format!("{pad}{}", &line[..line.len() - 1]));
                    for (name, layers) in nested {
                        out.push_str(&format!(", \"{name}\": [\n"));
                        list(out, &layers, indent + 2);
                        out.push_str(&format!("\n{pad}]"));
                    }
                    out.push('}');
                }
                out.push_str(if i + 1 < layers.len() { ",\n" } else { "" });
            }
        }
        let mut out = String::from("{\n");
        if let Some(l) = self.latent {
            out.push_str(&format!("  \"latent\": {l},\n"));
        }
        out.push_str("  \"encoder\": [\n");
        list(&mut out, &self.encoder, 4);
        out.push_str(&format!(
            "\n  ],\n  \"heads\": {},\n  \"decoder\": [\n",
            spaced(&self.heads)
        ));
        list(&mut out, &self.decoder, 4);
        out.push_str("\n  ]");
        if !self.below.is_empty() {
            let levels: Vec<String> = self
                .below
                .iter()
                .map(|l| format!("    {}", spaced(l)))
                .collect();
            out.push_str(&format!(",\n  \"below\": [\n{}\n  ]", levels.join(",\n")));
        }
        out.push_str("\n}\n");
        out
    }
}

/// A convolution's fields (`conv`, `deconv`): output channels, kernel, stride, padding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    pub out: Size,
    pub kernel: usize,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub stride: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub padding: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: usize,
}

/// An activation's name as the format writes it: relu, leaky_relu (slope 0.01) or
/// leaky_relu:SLOPE, sigmoid, tanh, silu, none.
pub fn activation(name: Option<&str>) -> Result<Activation, String> {
    let Some(name) = name else {
        return Ok(Activation::Identity);
    };
    let act = match name.split_once(':') {
        None => match name {
            "none" | "identity" => Activation::Identity,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu(0.01),
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "silu" => Activation::Silu,
            _ => return Err(format!("unknown activation '{name}' (relu, leaky_relu[:slope], sigmoid, tanh, silu or none)")),
        },
        Some(("leaky_relu", s)) => match s.parse::<f32>() {
            Ok(v) if v > 0.0 && v.is_finite() => Activation::LeakyRelu(v),
            _ => return Err(format!("'{name}': the slope must be a positive number")),
        },
        Some(_) => return Err(format!("unknown activation '{name}'")),
    };
    Ok(act)
}

/// The most copies one entry's `repeat` makes; the graph's node limit bounds the whole.
const MAX_REPEAT: usize = 1024;

/// Builds the graph of `spec` for data of shape `data`, `outputs` decoder outputs (the
/// data's values, or a table's per-column parameters) and a code of `latent` values (with
/// stacked layers, the top one's). A
/// conditional model (`classes`) takes each record's class, one-hot, beside the encoder's
/// input (after any leading flatten or reshape: as more channels of an image, or more
/// features) and beside z at the decoder's input.
pub fn build(
    spec: &ArchSpec,
    data: Shape,
    outputs: usize,
    latent: usize,
    classes: Option<usize>,
) -> Result<Graph, String> {
    let sizes: Vec<usize> = spec
        .below
        .iter()
        .map(|l| l.latent)
        .chain([latent])
        .collect();
    if sizes.contains(&0) {
        return Err("the latent size must be at least 1".into());
    }
    if !spec.below.is_empty() && classes.is_some() {
        return Err("stacked latent layers (--latent with several sizes, or a below list) need an unconditional model: drop --conditional".into());
    }
    let mut w = Walker {
        b: Builder::new(data, classes),
        data,
        outputs,
        list: "encoder".into(),
    };
    let lead = spec
        .encoder
        .iter()
        .take_while(|l| matches!(l, Layer::Flatten | Layer::Reshape { .. }))
        .count();
    let x = w.layers(0, &spec.encoder[..lead], "", "encoder")?;
    let x = w.b.condition(x, "the condition").map_err(|e| e.0)?;
    let features = w.layers_from(x, &spec.encoder[lead..], "", "encoder", lead)?;
    let (name, parts) = heads_names(&spec.heads, sizes[0]);
    let mut z =
        w.b.heads(features, sizes[0], &name, parts, "heads")
            .map_err(|e| e.0)?;
    for (i, level) in spec.below.iter().enumerate() {
        let at = format!("below[{i}].encoder");
        w.list = at.clone();
        let h = w.layers(z, &level.encoder, "", &at)?;
        let (name, parts) = heads_names(&level.heads, sizes[i + 1]);
        z =
            w.b.heads(h, sizes[i + 1], &name, parts, &format!("below[{i}].heads"))
                .map_err(|e| e.0)?;
    }
    for (i, level) in spec.below.iter().enumerate().rev() {
        let at = format!("below[{i}].decoder");
        w.list = at.clone();
        let h = w.layers(z, &level.decoder, "", &at)?;
        let (name, parts) = heads_names(&level.prior, level.latent);
        z =
            w.b.prior(h, &name, parts, &format!("below[{i}].prior"))
                .map_err(|e| e.0)?;
    }
    let z = w.b.condition(z, "the condition").map_err(|e| e.0)?;
    w.list = "decoder".into();
    let logits = w.layers(z, &spec.decoder, "", "decoder")?;
    w.b.finish(logits, outputs, "decoder").map_err(|e| e.0)
}

/// The checkpoint name of a Linear to mu | logvar of `latent` each, and its parts when
/// stored as two layers.
fn heads_names(heads: &Heads, latent: usize) -> (String, Vec<(String, usize)>) {
    match heads {
        Heads::One(n) => (n.clone(), Vec::new()),
        Heads::Two([mu, lv]) => (mu.clone(), vec![(mu.clone(), latent), (lv.clone(), latent)]),
    }
}

/// Walks a layer list into the builder.
struct Walker {
    b: Builder,
    data: Shape,
    outputs: usize,
    /// The top-level list being walked, which names its unnamed layers.
    list: String,
}

impl Walker {
    /// Adds `layers` after tensor `x`; `prefix` starts the checkpoint names ("enc.0."),
    /// `at` says where the list is ("encoder", "encoder[2].body").
    fn layers(
        &mut self,
        x: TensorId,
        layers: &[Layer],
        prefix: &str,
        at: &str,
    ) -> Result<TensorId, String> {
        self.layers_from(x, layers, prefix, at, 0)
    }

    /// `layers`, which stand at `first` and on in their list.
    fn layers_from(
        &mut self,
        mut x: TensorId,
        layers: &[Layer],
        prefix: &str,
        at: &str,
        first: usize,
    ) -> Result<TensorId, String> {
        for (i, layer) in layers.iter().enumerate().map(|(i, l)| (first + i, l)) {
            let repeat = match layer {
                Layer::Linear { repeat, .. }
                | Layer::Groupnorm { repeat, .. }
                | Layer::Residual { repeat, .. } => *repeat,
                Layer::Conv(c) | Layer::Deconv(c) => c.repeat,
                _ => 1,
            };
            if !(1..=MAX_REPEAT).contains(&repeat) {
                return Err(format!(
                    "{at}[{i}]: repeat is {repeat}; it must be 1 to {MAX_REPEAT}"
                ));
            }
            for r in 0..repeat {
                let copy = (repeat > 1).then_some(r);
                x = self.layer(x, layer, prefix, &format!("{at}[{i}]"), i, copy)?;
            }
        }
        Ok(x)
    }

    /// The checkpoint name of a layer: its own (with the repeat index), or its place (at
    /// the top level with the list's name, so the encoder's and decoder's differ).
    fn name(
        &self,
        prefix: &str,
        own: &Option<String>,
        place: usize,
        copy: Option<usize>,
    ) -> String {
        let base = match own {
            Some(n) => n.clone(),
            None if prefix.is_empty() => format!("{}.{place}", self.list),
            None => place.to_string(),
        };
        match copy {
            Some(k) => format!("{prefix}{base}.{k}"),
            None => format!("{prefix}{base}"),
        }
    }

    fn layer(
        &mut self,
        x: TensorId,
        layer: &Layer,
        prefix: &str,
        at: &str,
        place: usize,
        copy: Option<usize>,
    ) -> Result<TensorId, String> {
        let kind = match layer {
            Layer::Linear { .. } => "linear",
            Layer::Conv(_) => "conv",
            Layer::Deconv(_) => "deconv",
            Layer::Groupnorm { .. } => "groupnorm",
            Layer::Act { .. } => "act",
            Layer::Upsample => "upsample",
            Layer::Flatten => "flatten",
            Layer::Reshape { .. } => "reshape",
            Layer::Residual { .. } => "residual",
            Layer::Concat { .. } => "concat",
        };
        let s = self.b.shape(x);
        let label = |name: Option<&str>| match name {
            Some(n) => format!("{at} ({kind} '{n}', input {}x{}x{})", s.h, s.w, s.c),
            None => format!("{at} ({kind}, input {}x{}x{})", s.h, s.w, s.c),
        };
        let err = |l: &str, e: String| format!("{l}: {e}");
        let act_of = |a: &Option<String>, l: &str| activation(a.as_deref()).map_err(|e| err(l, e));
        let g = |e: crate::graph::GraphError| e.0;
        match layer {
            Layer::Linear { out, act, name, .. } => {
                let name = self.name(prefix, name, place, copy);
                let l = label(Some(&name));
                let shape = match out {
                    Size::Count(n) => Shape { h: 1, w: 1, c: *n },
                    Size::Image([h, w, c]) => Shape {
                        h: *h,
                        w: *w,
                        c: *c,
                    },
                    Size::Word(word) if word == "data" => Shape {
                        h: 1,
                        w: 1,
                        c: self.outputs,
                    },
                    Size::Word(word) => {
                        return Err(err(
                            &l,
                            format!("out '{word}': a count, [h, w, c] or \"data\""),
                        ))
                    }
                };
                let y = self.b.linear(x, shape, &name, &l).map_err(g)?;
                self.b.act(y, act_of(act, &l)?, &l).map_err(g)
            }
            Layer::Conv(ConvLayer {
                out,
                kernel,
                stride,
                padding,
                act,
                name,
                ..
            })
            | Layer::Deconv(ConvLayer {
                out,
                kernel,
                stride,
                padding,
                act,
                name,
                ..
            }) => {
                let name = self.name(prefix, name, place, copy);
                let l = label(Some(&name));
                let cout = match out {
                    Size::Count(n) => *n,
                    Size::Word(word) if word == "data" => self.data.c,
                    _ => return Err(err(&l, "out: a channel count or \"data\"".into())),
                };
                let transposed = matches!(layer, Layer::Deconv(_));
                let y = self
                    .b
                    .conv(x, cout, (*kernel, *stride, *padding), transposed, &name, &l)
                    .map_err(g)?;
                self.b.act(y, act_of(act, &l)?, &l).map_err(g)
            }
            Layer::Groupnorm {
                groups, act, name, ..
            } => {
                let name = self.name(prefix, name, place, copy);
                let l = label(Some(&name));
                let y = self.b.group_norm(x, *groups, &name, &l).map_err(g)?;
                self.b.act(y, act_of(act, &l)?, &l).map_err(g)
            }
            Layer::Act { act } => {
                let l = label(None);
                self.b
                    .act(x, act_of(&Some(act.clone()), &l)?, &l)
                    .map_err(g)
            }
            Layer::Upsample => self.b.upsample(x, &label(None)).map_err(g),
            Layer::Flatten => self
                .b
                .reshape(
                    x,
                    Shape {
                        h: 1,
                        w: 1,
                        c: s.numel(),
                    },
                    &label(None),
                )
                .map_err(g),
            Layer::Reshape { to: [h, w, c] } => self
                .b
                .reshape(
                    x,
                    Shape {
                        h: *h,
                        w: *w,
                        c: *c,
                    },
                    &label(None),
                )
                .map_err(g),
            Layer::Residual {
                name, body, skip, ..
            } => {
                let block = format!("{}.", self.name(prefix, name, place, copy));
                let h = self.layers(x, body, &block, &format!("{at}.body"))?;
                let s = self.layers(x, skip, &block, &format!("{at}.skip"))?;
                self.b.add(s, h, &label(name.as_deref())).map_err(g)
            }
            Layer::Concat { name, body } => {
                let block = format!("{}.", self.name(prefix, name, place, copy));
                let h = self.layers(x, body, &block, &format!("{at}.body"))?;
                self.b.concat(x, h, &label(name.as_deref())).map_err(g)
            }
        }
    }
}
