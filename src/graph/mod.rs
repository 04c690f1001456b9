//! The model graph: a VAE as a small static graph of ops on per-sample tensors, from the
//! batch x through mu | logvar and the sampled code z to the decoder's logits. Each op
//! states its shapes, parameters, forward launches and backward rule once (`ops`); the
//! compiler (`program`) orders them, derives the backward pass in reverse, sums gradients
//! where a tensor feeds several ops, applies the fusions as rewrites (`fuse`) and assigns
//! buffers by liveness. `params` lays the parameters out in one flat buffer, `cpu`
//! evaluates the graph in f64 (the oracle of the whole-model gradient checks).
//!
//! Tensors are per sample (h, w, c); a batch of B is a matrix: [B * h * w, c] when c is a
//! multiple of 4 or the tensor is flat (h = w = 1), else [B, h * w * c] (see `Layout`).
//! A sequence tensor (see `Time`) holds one step's features per sample; a batch of B over
//! T steps is [T * B, c], time-major as the recurrent kernels read it (see `ops::gru`).

pub mod cpu;
pub mod ops;
pub mod params;
pub mod program;

use crate::ops::conv::Shape;
use crate::ops::Activation;

pub use params::Params;
pub use program::{Mode, Program};

/// A tensor of the graph.
pub type TensorId = usize;

/// What a node computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// y = act(W x + b); x is flattened (an image in PyTorch's (c, h, w) order, as a
    /// checkpoint sees it), y may be an image (PyTorch's `.view(-1, c, h, w)`).
    Linear { act: Activation },
    /// Conv2d with a square kernel.
    Conv {
        k: usize,
        stride: usize,
        pad: usize,
        act: Activation,
    },
    /// ConvTranspose2d (no output padding).
    ConvT {
        k: usize,
        stride: usize,
        pad: usize,
        act: Activation,
    },
    /// GroupNorm with affine parameters, then an activation (fused).
    GroupNorm { groups: usize, act: Activation },
    /// An activation on its own (one the compiler could not fold into its producer).
    Act(Activation),
    /// y = a + b (a residual connection).
    Add,
    /// Channels (or features) of the inputs side by side.
    Concat,
    /// Nearest-neighbour upsampling by 2.
    Upsample,
    /// The same values in another shape, in vae-gpu's (h, w, c) order; no launch.
    Reshape,
    /// z = mu + exp(logvar / 2) eps from mu | logvar.
    Sample,
    /// Each token id's row of a learned table of `vocab` rows (nn.Embedding); the input
    /// holds the ids. Nodes of one name share the table.
    Embed { vocab: usize },
    /// A GRU layer over a sequence, layer `layer` of a PyTorch nn.GRU (gates r, z, n), from
    /// the state its second input gives (zeros without one). Its output is every step's
    /// state, or with `last` each record's state after its last token.
    Gru { layer: usize, last: bool },
}

impl Op {
    /// The activation fused into the node's output.
    pub fn act(&self) -> Activation {
        match *self {
            Op::Linear { act }
            | Op::Conv { act, .. }
            | Op::ConvT { act, .. }
            | Op::GroupNorm { act, .. } => act,
            Op::Act(act) => act,
            _ => Activation::Identity,
        }
    }

    /// Parameters: a weight and a bias (gamma and beta for GroupNorm).
    pub fn has_params(&self) -> bool {
        matches!(
            self,
            Op::Linear { .. }
                | Op::Conv { .. }
                | Op::ConvT { .. }
                | Op::GroupNorm { .. }
                | Op::Embed { .. }
                | Op::Gru { .. }
        )
    }

    /// What the op is called in messages and in architecture files.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Linear { .. } => "linear",
            Op::Conv { .. } => "conv",
            Op::ConvT { .. } => "deconv",
            Op::GroupNorm { .. } => "groupnorm",
            Op::Act(_) => "act",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Upsample => "upsample",
            Op::Reshape => "reshape",
            Op::Sample => "sample",
            Op::Embed { .. } => "embed",
            Op::Gru { .. } => "gru",
        }
    }
}

/// A sequence tensor's time axis: the encoder reads the whole sequence, the decoder one
/// step fewer (it predicts each next token). The steps are set per program
/// (`Program::sequence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Time {
    Encoder,
    Decoder,
}

/// One op applied to its input tensors.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
    /// The checkpoint names of the node's parameters: `name.weight`, `name.bias`.
    pub name: String,
    /// A Linear stored as several PyTorch layers (the MLP's mu and logvar heads `fc21`,
    /// `fc22`): (name, rows of the weight) in order; empty for one.
    pub parts: Vec<(String, usize)>,
    /// Where the node comes from, for messages ("encoder[3] (conv 'enc.1')").
    pub label: String,
}

/// A VAE as a graph: nodes in a valid order (every input produced before use). A
/// classifier (see `Builder::finish_classifier`) is one too, without a code: its mulv and
/// z are its class logits, so the compiler's one loss slot and kept tensors serve both.
#[derive(Clone, Debug)]
pub struct Graph {
    pub shapes: Vec<Shape>,
    pub nodes: Vec<Node>,
    /// The batch, mu | logvar, the sampled code and the logits.
    pub x: TensorId,
    pub mulv: TensorId,
    pub z: TensorId,
    pub logits: TensorId,
    /// A conditional model's condition: each record's class, one-hot (K values).
    pub y: Option<TensorId>,
    /// A classifier's features (the layer before its logits), kept readable after a pass.
    pub features: Option<TensorId>,
    /// The VampPrior's pseudo-inputs, which the encoder also runs on (see `Pseudo`).
    pub pseudo: Option<Pseudo>,
    /// The stochastic layers below the code, bottom first (empty for one layer).
    pub levels: Vec<Level>,
    /// Per tensor: a sequence tensor's time axis (None for one value per record).
    pub time: Vec<Option<Time>>,
    /// A sequence model's decoder input ids (x holds the encoder's).
    pub tokens: Option<TensorId>,
}

/// A stochastic layer below the code (Burda et al. 2016's stacked latents): its posterior
/// q(z | the layer below) gives `mulv`, from which `z` is sampled in training and
/// evaluation; the layer above gives its prior p(z | above) as `prior`, from which `z` is
/// drawn when decoding top-down. The loss writes the first gradient of all three (see
/// `ops::level`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub mulv: TensorId,
    pub z: TensorId,
    pub prior: TensorId,
}

/// The VampPrior (Tomczak & Welling 2018): the prior is the mixture of the encoder's
/// posteriors at `count` learned pseudo-inputs. They are parameters (after the layers' in
/// the flat buffer), stored raw and seen by the encoder through `act`: a sigmoid keeps them
/// in the pixels' (0, 1) for a Bernoulli model, the identity leaves them free otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pseudo {
    pub count: usize,
    pub act: Activation,
}

/// The most pseudo-inputs a VampPrior may have.
pub const MAX_PSEUDO: usize = 4096;

/// A shape or wiring error: what the node is and why it does not fit.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GraphError(pub String);

/// A flat tensor of `n` values (per record, or per step of a sequence).
pub fn flat(n: usize) -> Shape {
    Shape { h: 1, w: 1, c: n }
}

/// How a batch of one tensor is held: `rows` matrix rows per sample, `cols` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
}

impl Layout {
    /// [B * h * w, c] for channels in multiples of 4 (and flat tensors), else [B, h*w*c].
    pub fn of(s: Shape) -> Layout {
        if s.c.is_multiple_of(4) || s.h * s.w == 1 {
            Layout {
                rows: s.h * s.w,
                cols: s.c,
            }
        } else {
            Layout {
                rows: 1,
                cols: s.numel(),
            }
        }
    }

    /// Whether rows hold no padding (their length is a multiple of 4).
    pub fn dense(&self) -> bool {
        self.cols.is_multiple_of(4)
    }

    /// (batch stride, pixel stride) in floats of a batch of `s` held this way (see
    /// `ops::conv::image_strides_of`).
    pub fn strides(&self, s: Shape) -> (usize, usize) {
        let ld = crate::gpu::round_up4(self.cols);
        if self.rows == 1 && s.h * s.w > 1 {
            (ld, s.c)
        } else {
            (self.rows * ld, ld)
        }
    }
}

/// Builds a graph node by node, checking shapes as it goes.
pub struct Builder {
    graph: Graph,
    /// Stochastic layers below the current code whose prior the decoder has not given yet
    /// (mu | logvar, z), bottom first.
    open: Vec<(TensorId, TensorId)>,
}

impl Builder {
    /// The tensor of the graph's input x.
    pub const INPUT: TensorId = 0;

    /// A graph whose input x has shape `data`; with `classes`, a conditional model's
    /// second input y, each record's class one-hot.
    pub fn new(data: Shape, classes: Option<usize>) -> Builder {
        let mut shapes = vec![data];
        shapes.extend(classes.map(flat));
        Builder {
            graph: Graph {
                shapes,
                nodes: Vec::new(),
                x: Self::INPUT,
                mulv: 0,
                z: 0,
                logits: 0,
                y: classes.map(|_| 1),
                features: None,
                pseudo: None,
                levels: Vec::new(),
                time: vec![None; 1 + usize::from(classes.is_some())],
                tokens: None,
            },
            open: Vec::new(),
        }
    }

    /// A sequence model's graph: its input x holds the encoder's token ids, `tokens` the
    /// decoder's (see `Time`).
    pub fn sequence() -> Builder {
        let mut b = Builder::new(flat(1), None);
        b.graph.time[Self::INPUT] = Some(Time::Encoder);
        b.graph.shapes.push(flat(1));
        b.graph.time.push(Some(Time::Decoder));
        b.graph.tokens = Some(Self::INPUT + 1);
        b
    }

    /// The decoder's input ids of a sequence model.
    pub fn tokens(&self) -> Option<TensorId> {
        self.graph.tokens
    }

    /// `t` with the condition beside it (its channels on every pixel of an image, or more
    /// features), for a conditional model; `t` itself for another.
    pub fn condition(&mut self, t: TensorId, label: &str) -> Result<TensorId, GraphError> {
        match self.graph.y {
            Some(y) => self.concat(t, y, label),
            None => Ok(t),
        }
    }

    pub fn shape(&self, t: TensorId) -> Shape {
        self.graph.shapes[t]
    }

    fn push(
        &mut self,
        op: Op,
        inputs: Vec<TensorId>,
        out: Shape,
        name: &str,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let values = out.h.checked_mul(out.w).and_then(|v| v.checked_mul(out.c));
        if !values.is_some_and(|v| (1..=MAX_VALUES).contains(&v)) {
            return Err(Self::err(
                label,
                format!(
                    "an output of {}x{}x{} is outside what vae-gpu holds (1 to 2^28 values per sample)",
                    out.h, out.w, out.c
                ),
            ));
        }
        if self.graph.nodes.len() >= MAX_NODES {
            return Err(Self::err(label, format!("more than {MAX_NODES} layers")));
        }
        let time = self.graph.time[inputs[0]];
        let per_step = matches!(
            op,
            Op::Linear { .. }
                | Op::Act(_)
                | Op::Add
                | Op::Concat
                | Op::Embed { .. }
                | Op::Gru { .. }
        );
        if time.is_some() && !per_step {
            return Err(Self::err(
                label,
                format!("{} works on records, not on a sequence's steps", op.kind()),
            ));
        }
        let output = self.graph.shapes.len();
        self.graph.shapes.push(out);
        self.graph.time.push(match op {
            Op::Gru { last: true, .. } => None,
            _ => time,
        });
        self.graph.nodes.push(Node {
            op,
            inputs,
            output,
            name: name.to_string(),
            parts: Vec::new(),
            label: label.to_string(),
        });
        let n = self.graph.nodes.last().expect("just pushed");
        let params: usize = ops::param_dims(&self.graph, n)
            .iter()
            .map(|(r, c)| r.saturating_mul(*c))
            .fold(0, usize::saturating_add);
        if params > MAX_VALUES {
            return Err(Self::err(
                label,
                format!("{params} parameters in one layer, over the 2^28 vae-gpu holds"),
            ));
        }
        Ok(output)
    }

    fn err(label: &str, msg: String) -> GraphError {
        GraphError(format!("{label}: {msg}"))
    }

    /// A Linear layer to `out` (flat, or an image).
    pub fn linear(
        &mut self,
        x: TensorId,
        out: Shape,
        name: &str,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        if out.numel() == 0 {
            return Err(Self::err(label, "a linear layer needs outputs".into()));
        }
        self.push(
            Op::Linear {
                act: Activation::Identity,
            },
            vec![x],
            out,
            name,
            label,
        )
    }

    /// A convolution (or, `transposed`, a transposed one) to `cout` channels.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: TensorId,
        cout: usize,
        (k, stride, pad): (usize, usize, usize),
        transposed: bool,
        name: &str,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let s = self.shape(x);
        let what = if transposed { "deconv" } else { "conv" };
        if k == 0 || stride == 0 || cout == 0 {
            return Err(Self::err(
                label,
                format!("{what} needs a kernel, a stride and channels of at least 1"),
            ));
        }
        if k > 255 || stride > 255 || pad > 255 {
            return Err(Self::err(
                label,
                format!("{what} with kernel {k}, stride {stride}, padding {pad}: each must be at most 255"),
            ));
        }
        let (h, w) = if transposed {
            crate::ops::conv::ConvGeom::transposed_output(s.h, s.w, k, stride, pad)
                .ok_or_else(|| {
                    Self::err(
                        label,
                        format!(
                            "kernel {k}, stride {stride}, padding {pad} leaves no output of a {}x{}x{} input",
                            s.h, s.w, s.c
                        ),
                    )
                })?
        } else {
            let out = |n: usize| (n + 2 * pad).checked_sub(k).map(|v| v / stride + 1);
            out(s.h).zip(out(s.w)).ok_or_else(|| {
                Self::err(
                    label,
                    format!(
                        "kernel {k}, stride {stride}, padding {pad} does not fit a {}x{}x{} input",
                        s.h, s.w, s.c
                    ),
                )
            })?
        };
        let out = Shape { h, w, c: cout };
        let flipped = !transposed && stride == 1 && !cout.is_multiple_of(4);
        // Transposed convolutions (and stride-1 ones with few output channels, which run
        // as their transposed twin) multiply the input as [B*h*w, Cin]; strided ones write
        // [B*h*w, Cout] from their GEMM.
        if (transposed || flipped) && !s.c.is_multiple_of(4) {
            return Err(Self::err(
                label,
                format!(
                    "{what} of a {}x{}x{} input: its input channels must be a multiple of 4",
                    s.h, s.w, s.c
                ),
            ));
        }
        // col2im's bias gradient sums the output as one run of [B*h*w, C] rows.
        if (transposed || flipped) && !Layout::of(out).dense() {
            return Err(Self::err(
                label,
                format!(
                    "{what} to a {}x{}x{} output: its values per image must be a multiple of 4 (resize the data with --size)",
                    out.h, out.w, out.c
                ),
            ));
        }
        if !transposed && !flipped && !cout.is_multiple_of(4) {
            return Err(Self::err(
                label,
                format!("conv to {cout} channels with stride {stride}: output channels must be a multiple of 4 (only a stride-1 conv or a deconv may give 1 or 3, e.g. the last layer)"),
            ));
        }
        let op = if transposed {
            Op::ConvT {
                k,
                stride,
                pad,
                act: Activation::Identity,
            }
        } else {
            Op::Conv {
                k,
                stride,
                pad,
                act: Activation::Identity,
            }
        };
        self.push(op, vec![x], out, name, label)
    }

    pub fn group_norm(
        &mut self,
        x: TensorId,
        groups: usize,
        name: &str,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let s = self.shape(x);
        if groups == 0 || !s.c.is_multiple_of(groups) || !s.c.is_multiple_of(4) {
            return Err(Self::err(
                label,
                format!(
                    "groupnorm of {} channels in {groups} groups: the channels must divide by the groups and by 4",
                    s.c
                ),
            ));
        }
        self.push(
            Op::GroupNorm {
                groups,
                act: Activation::Identity,
            },
            vec![x],
            s,
            name,
            label,
        )
    }

    pub fn act(
        &mut self,
        x: TensorId,
        act: Activation,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        act.check().map_err(|e| Self::err(label, e.to_string()))?;
        if act == Activation::Identity {
            return Ok(x);
        }
        let s = self.shape(x);
        self.push(Op::Act(act), vec![x], s, "", label)
    }

    pub fn add(&mut self, a: TensorId, b: TensorId, label: &str) -> Result<TensorId, GraphError> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa != sb || self.graph.time[a] != self.graph.time[b] {
            return Err(Self::err(
                label,
                format!(
                    "add of a {}x{}x{} and a {}x{}x{} tensor: the shapes must be equal",
                    sa.h, sa.w, sa.c, sb.h, sb.w, sb.c
                ),
            ));
        }
        self.push(Op::Add, vec![a, b], sa, "", label)
    }

    /// The channels of `a` then those of `b` (images of one size, or flat features).
    pub fn concat(
        &mut self,
        a: TensorId,
        b: TensorId,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let (ta, tb) = (self.graph.time[a], self.graph.time[b]);
        // A per-record tensor beside a sequence goes to every step (the code z beside
        // the decoder's embeddings).
        if ta.is_some() && ta != tb && (tb.is_some() || sb.h * sb.w > 1) {
            return Err(Self::err(
                label,
                "concat of a sequence with a sequence of other steps, or with an image".into(),
            ));
        }
        if tb.is_some() && ta.is_none() {
            return Err(Self::err(
                label,
                "concat of a sequence to a per-record tensor: put the sequence first".into(),
            ));
        }
        // A graph input (the condition) may be flat: its values go to every pixel.
        let broadcast = (sb.h, sb.w) == (1, 1) && (self.graph.is_input(b) || ta.is_some());
        if (sa.h, sa.w) != (sb.h, sb.w) && !broadcast {
            return Err(Self::err(
                label,
                format!(
                    "concat of a {}x{}x{} and a {}x{}x{} tensor: the heights and widths must be equal",
                    sa.h, sa.w, sa.c, sb.h, sb.w, sb.c
                ),
            ));
        }
        let out = Shape {
            c: sa.c + sb.c,
            ..sa
        };
        self.push(Op::Concat, vec![a, b], out, "", label)
    }

    pub fn upsample(&mut self, x: TensorId, label: &str) -> Result<TensorId, GraphError> {
        let s = self.shape(x);
        if !s.c.is_multiple_of(4) {
            return Err(Self::err(
                label,
                format!(
                    "upsample of {} channels: the channels must be a multiple of 4",
                    s.c
                ),
            ));
        }
        let out = Shape {
            h: 2 * s.h,
            w: 2 * s.w,
            c: s.c,
        };
        self.push(Op::Upsample, vec![x], out, "", label)
    }

    /// The values of `x` as `to` (same count, vae-gpu's (h, w, c) order).
    pub fn reshape(&mut self, x: TensorId, to: Shape, label: &str) -> Result<TensorId, GraphError> {
        let s = self.shape(x);
        let values = to.h.checked_mul(to.w).and_then(|v| v.checked_mul(to.c));
        if values != Some(s.numel()) {
            return Err(Self::err(
                label,
                format!(
                    "reshape of {}x{}x{} to {}x{}x{}: the sizes differ",
                    s.h, s.w, s.c, to.h, to.w, to.c
                ),
            ));
        }
        let (from, into) = (Layout::of(s), Layout::of(to));
        let same_memory = from == into || (from.dense() && into.dense());
        if s.numel() != to.numel() || !same_memory {
            return Err(Self::err(
                label,
                format!(
                    "reshape of {}x{}x{} to {}x{}x{}: {}",
                    s.h,
                    s.w,
                    s.c,
                    to.h,
                    to.w,
                    to.c,
                    if s.numel() != to.numel() {
                        "the sizes differ"
                    } else {
                        "the two are held differently (pick channels in multiples of 4)"
                    }
                ),
            ));
        }
        if s == to {
            return Ok(x);
        }
        self.push(Op::Reshape, vec![x], to, "", label)
    }

    /// Token ids embedded as rows of a table of `vocab` x `width` (named `name`, shared by
    /// every embedding of that name).
    pub fn embed(
        &mut self,
        tokens: TensorId,
        (vocab, width): (usize, usize),
        name: &str,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let r = self.graph.root(tokens);
        if r != self.graph.x && Some(r) != self.graph.tokens || self.graph.tokens.is_none() {
            return Err(Self::err(
                label,
                "embed reads a sequence model's token ids".into(),
            ));
        }
        if vocab == 0 || width == 0 {
            return Err(Self::err(
                label,
                "an embedding needs ids and a width".into(),
            ));
        }
        self.push(Op::Embed { vocab }, vec![tokens], flat(width), name, label)
    }

    /// A GRU layer of `hidden` units over the sequence `x` (PyTorch's nn.GRU `name`, its
    /// layer `layer`), from the per-record state `h0` or zeros: every step's state, or with
    /// `last` each record's last.
    pub fn gru(
        &mut self,
        (x, h0): (TensorId, Option<TensorId>),
        hidden: usize,
        (layer, last): (usize, bool),
        name: &str,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        if self.graph.time[x].is_none() {
            return Err(Self::err(label, "a GRU runs over a sequence".into()));
        }
        if hidden == 0 {
            return Err(Self::err(label, "a GRU needs units".into()));
        }
        if let Some(h) = h0 {
            if self.graph.time[h].is_some() || self.shape(h) != flat(hidden) {
                let s = self.shape(h);
                return Err(Self::err(
                    label,
                    format!(
                        "its initial state must be one {hidden}-wide vector per record, not {}x{}x{}",
                        s.h, s.w, s.c
                    ),
                ));
            }
        }
        let inputs = std::iter::once(x).chain(h0).collect();
        self.push(Op::Gru { layer, last }, inputs, flat(hidden), name, label)
    }

    /// The encoder's heads: a Linear to mu | logvar of `latent` each, then the sampled z.
    /// `parts` names the checkpoint layers the weight is split into (rows). Called again
    /// on a later z, it stacks another stochastic layer above: the last heads give the
    /// code, the earlier ones layers below it, whose priors `prior` gives.
    pub fn heads(
        &mut self,
        x: TensorId,
        latent: usize,
        name: &str,
        parts: Vec<(String, usize)>,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let below = self.graph.nodes.iter().any(|n| n.op == Op::Sample);
        if below {
            self.open.push((self.graph.mulv, self.graph.z));
        }
        let mulv = self.linear(x, flat(2 * latent), name, label)?;
        self.graph.nodes.last_mut().expect("just pushed").parts = parts;
        self.graph.mulv = mulv;
        let z = self.push(Op::Sample, vec![mulv], flat(latent), "", "sample")?;
        self.graph.z = z;
        Ok(z)
    }

    /// The prior of the highest stochastic layer below the code still without one: a
    /// Linear from `x` (the decoder's features of the layer above) to its mu | logvar.
    /// Returns that layer's code, from which the decoder goes on down.
    pub fn prior(
        &mut self,
        x: TensorId,
        name: &str,
        parts: Vec<(String, usize)>,
        label: &str,
    ) -> Result<TensorId, GraphError> {
        let Some((mulv, z)) = self.open.pop() else {
            return Err(Self::err(
                label,
                "a prior needs a stochastic layer below the code to belong to".into(),
            ));
        };
        let prior = self.linear(x, self.shape(mulv), name, label)?;
        self.graph.nodes.last_mut().expect("just pushed").parts = parts;
        self.graph.levels.insert(0, Level { mulv, z, prior });
        Ok(z)
    }

    /// Finishes the graph with `logits`, which must hold the decoder's `outputs` values (one
    /// per data value, or a table's per-column parameters): flat, or an image of the data's
    /// shape. Then applies the compiler's rewrites (see `fuse`).
    pub fn finish(
        mut self,
        logits: TensorId,
        outputs: usize,
        label: &str,
    ) -> Result<Graph, GraphError> {
        let (got, want) = (self.shape(logits), self.graph.shapes[self.graph.x]);
        if got.numel() != outputs || (got.h * got.w > 1 && got != want) {
            let want = if outputs == want.numel() {
                format!("the data is {}x{}x{}", want.h, want.w, want.c)
            } else {
                format!("the model needs {outputs} outputs (the table's columns)")
            };
            return Err(Self::err(
                label,
                format!("the decoder ends at {}x{}x{}, {want}", got.h, got.w, got.c),
            ));
        }
        if self.graph.nodes.iter().all(|n| n.op != Op::Sample) {
            return Err(GraphError("the model has no latent code (heads)".into()));
        }
        if !self.open.is_empty() {
            return Err(Self::err(
                label,
                format!(
                    "{} stochastic layer(s) below the code have no prior from the decoder",
                    self.open.len()
                ),
            ));
        }
        self.graph.logits = logits;
        let mut g = self.graph;
        g.fuse();
        g.check_used()?;
        g.check_logits(label)?;
        g.check_names()?;
        Ok(g)
    }

    /// Finishes a classifier: `logits` (flat, from a layer without an activation) are its
    /// class scores, which the loss reads; `features` is kept for reading after a pass.
    pub fn finish_classifier(
        mut self,
        logits: TensorId,
        features: TensorId,
    ) -> Result<Graph, GraphError> {
        let s = self.shape(logits);
        if s.h * s.w != 1 {
            return Err(GraphError("a classifier's logits must be flat".into()));
        }
        let g = &mut self.graph;
        (g.logits, g.mulv, g.z, g.features) = (logits, logits, logits, Some(features));
        let mut g = self.graph;
        g.fuse();
        g.check_used()?;
        g.check_names()?;
        Ok(g)
    }
}

/// The most values one sample's tensor may hold, and the most parameters one layer may
/// have: far beyond any model a GPU trains, small enough that no size overflows.
pub const MAX_VALUES: usize = 1 << 28;

/// The most nodes a graph may have (a `repeat` of thousands is a mistake, not a model).
pub const MAX_NODES: usize = 4096;

impl Graph {
    /// The tensors the loss of a `mode` program reads and writes the first gradient of: the
    /// logits and a VAE's mu | logvar (for the pseudo-inputs, mu | logvar alone; none for
    /// decoding).
    pub fn loss_inputs(&self, mode: Mode) -> Vec<TensorId> {
        let mut t = match mode {
            Mode::Train | Mode::Infer | Mode::Posterior | Mode::PosteriorTrain => {
                vec![self.logits, self.mulv]
            }
            Mode::Pseudo => vec![self.mulv],
            Mode::Encoder => vec![self.posterior()],
            Mode::Decode => Vec::new(),
        };
        if matches!(
            mode,
            Mode::Train | Mode::Infer | Mode::Posterior | Mode::PosteriorTrain
        ) {
            t.extend(self.levels.iter().flat_map(|l| [l.z, l.mulv, l.prior]));
        }
        t.dedup();
        t
    }

    /// The graph with a VampPrior of `count` pseudo-inputs seen through `act`.
    pub fn with_pseudo_inputs(
        mut self,
        count: usize,
        act: Activation,
    ) -> Result<Graph, GraphError> {
        if self.y.is_some() {
            return Err(GraphError(
                "the VampPrior needs an unconditional model: its pseudo-inputs have no class"
                    .into(),
            ));
        }
        if !(1..=MAX_PSEUDO).contains(&count) {
            return Err(GraphError(format!(
                "vamp:{count}: the pseudo-inputs must be 1 to {MAX_PSEUDO}"
            )));
        }
        self.pseudo = Some(Pseudo { count, act });
        Ok(self)
    }

    /// Whether `t` is (a view of) one of the graph's inputs, the batch or the condition,
    /// which take no gradient.
    pub fn is_input(&self, t: TensorId) -> bool {
        let r = self.root(t);
        r == self.x || Some(r) == self.y || Some(r) == self.tokens
    }

    /// Per tensor, whether its value depends on no parameter (the inputs, and what is
    /// computed from them alone, such as the batch beside its condition): such tensors
    /// take no gradient. With `input_grad` the batch x takes one (the VampPrior's
    /// pseudo-inputs are parameters). Nodes are in dependency order, so one pass settles all.
    pub fn constants(&self, input_grad: bool) -> Vec<bool> {
        let mut constant: Vec<bool> = (0..self.shapes.len())
            .map(|t| self.is_input(t) && !(input_grad && self.root(t) == self.x))
            .collect();
        for n in &self.nodes {
            let parameterized = !ops::param_dims(self, n).is_empty();
            constant[n.output] =
                !parameterized && n.op != Op::Sample && n.inputs.iter().all(|&t| constant[t]);
        }
        constant
    }

    /// The node that produces `t` (None for the input).
    pub fn producer(&self, t: TensorId) -> Option<usize> {
        self.nodes.iter().position(|n| n.output == t)
    }

    /// The nodes that read `t`.
    pub fn consumers(&self, t: TensorId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].inputs.contains(&t))
            .collect()
    }

    /// The fusion rewrites: an activation whose input is produced by a Linear, a
    /// convolution or a GroupNorm, and read by nothing else, becomes that node's epilogue
    /// (bias and activation in the GEMM or col2im store; GroupNorm takes any activation,
    /// the others those whose derivative follows from the output, which is all the
    /// backward keeps). The derivative is then fused into the gradient launches that
    /// feed the tensor (see `program`).
    fn fuse(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            let Op::Act(act) = self.nodes[i].op else {
                i += 1;
                continue;
            };
            let input = self.nodes[i].inputs[0];
            let foldable = self.producer(input).filter(|&p| {
                let op = self.nodes[p].op;
                let takes = match op {
                    Op::Linear { .. } | Op::Conv { .. } | Op::ConvT { .. } => act.from_output(),
                    Op::GroupNorm { .. } => true,
                    _ => false,
                };
                takes
                    && op.act() == Activation::Identity
                    && self.consumers(input).len() == 1
                    && !self.loss_inputs(Mode::Train).contains(&input)
            });
            let Some(p) = foldable else {
                i += 1;
                continue;
            };
            let out = self.nodes[i].output;
            let node = &mut self.nodes[p];
            node.op = match node.op {
                Op::Linear { .. } => Op::Linear { act },
                Op::Conv { k, stride, pad, .. } => Op::Conv {
                    k,
                    stride,
                    pad,
                    act,
                },
                Op::ConvT { k, stride, pad, .. } => Op::ConvT {
                    k,
                    stride,
                    pad,
                    act,
                },
                Op::GroupNorm { groups, .. } => Op::GroupNorm { groups, act },
                other => other,
            };
            // The producer writes the activation's output; its own output tensor goes.
            node.output = out;
            self.nodes.remove(i);
        }
    }

    /// The logits come from a layer of the decoder without an activation (a linear layer
    /// or a convolution, maybe reshaped): the loss reads them as logits or Gaussian means.
    fn check_logits(&self, label: &str) -> Result<(), GraphError> {
        let p = self.producer(self.root(self.logits));
        let last = p.map(|p| &self.nodes[p]);
        match last {
            Some(n)
                if matches!(n.op, Op::Linear { .. } | Op::Conv { .. } | Op::ConvT { .. })
                    && n.op.act() == Activation::Identity =>
            {
                Ok(())
            }
            Some(n) if n.op != Op::Sample => Err(GraphError(format!(
                "{label}: the decoder must end with a linear, conv or deconv layer without an activation (its outputs are logits or Gaussian means), not {}{}",
                n.label,
                match n.op.act() {
                    Activation::Identity => String::new(),
                    act => format!(" with {act:?}"),
                }
            ))),
            _ => Err(GraphError(format!(
                "{label}: the decoder has no layers; it must turn z into the data's values"
            ))),
        }
    }

    /// Every parameter's checkpoint name is its own, but for embeddings of one name and
    /// shape, which share their table.
    /// The names checked are the checkpoint's (a Linear stored as several layers has its
    /// parts') and the flat buffer's slots' (which `Params` shares by name).
    fn check_names(&self) -> Result<(), GraphError> {
        let mut seen: std::collections::BTreeMap<String, &Node> = Default::default();
        for n in self.nodes.iter().filter(|n| n.op.has_params()) {
            let slots = ops::param_names(n);
            let checkpoint: Vec<String> = match n.parts.is_empty() {
                true => slots.clone(),
                false => n
                    .parts
                    .iter()
                    .flat_map(|(p, _)| [format!("{p}.weight"), format!("{p}.bias")])
                    .collect(),
            };
            let own_slots = slots.into_iter().filter(|s| !checkpoint.contains(s));
            for name in checkpoint.clone().into_iter().chain(own_slots) {
                let Some(other) = seen.insert(name.clone(), n) else {
                    continue;
                };
                let shared = matches!(n.op, Op::Embed { .. })
                    && n.op == other.op
                    && ops::param_dims(self, n) == ops::param_dims(self, other);
                if !shared {
                    return Err(GraphError(format!(
                        "{}: its parameter {name} has the name of one of {}'s; give the layers distinct names",
                        n.label, other.label
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every node's output must be read (or be the logits): a layer the loss never sees
    /// would get no gradient.
    fn check_used(&self) -> Result<(), GraphError> {
        for n in &self.nodes {
            if n.output != self.logits
                && n.output != self.mulv
                && self.levels.iter().all(|l| l.prior != n.output)
                && self.consumers(n.output).is_empty()
            {
                return Err(GraphError(format!("{}: its output is never used", n.label)));
            }
        }
        Ok(())
    }

    /// The lowest stochastic layer's mu | logvar (the code's, for one layer): where the
    /// encoder ends and sampling begins.
    pub fn posterior(&self) -> TensorId {
        self.levels.first().map_or(self.mulv, |l| l.mulv)
    }

    /// The inputs of node `i` in a program of `mode`: a lower stochastic layer's sampling
    /// reads its posterior, but when decoding its prior (generation runs top-down).
    pub fn inputs_of(&self, i: usize, mode: Mode) -> Vec<TensorId> {
        let n = &self.nodes[i];
        match self.levels.iter().find(|l| l.z == n.output) {
            Some(l) if mode == Mode::Decode => vec![l.prior],
            _ => n.inputs.clone(),
        }
    }

    /// The nodes a program of `mode` runs, in order: all of them, for decoding the decoder
    /// (those downstream of z, each lower layer's sampling right after its prior), from the
    /// posterior those downstream of the lowest mu | logvar, for the pseudo-inputs the
    /// encoder (those mu | logvar needs).
    pub fn nodes_for(&self, mode: Mode) -> Vec<usize> {
        if matches!(mode, Mode::Pseudo | Mode::Encoder) {
            let mut needed = vec![false; self.shapes.len()];
            needed[match mode {
                Mode::Pseudo => self.mulv,
                _ => self.posterior(),
            }] = true;
            let mut run: Vec<usize> = Vec::new();
            for i in (0..self.nodes.len()).rev() {
                let n = &self.nodes[i];
                if needed[n.output] {
                    n.inputs.iter().for_each(|&t| needed[t] = true);
                    run.push(i);
                }
            }
            run.reverse();
            return run;
        }
        if matches!(mode, Mode::Posterior | Mode::PosteriorTrain) {
            let mut after = vec![false; self.shapes.len()];
            after[self.posterior()] = true;
            return (0..self.nodes.len())
                .filter(|&i| {
                    let n = &self.nodes[i];
                    let downstream = n.inputs.iter().any(|&t| after[t]);
                    after[n.output] |= downstream;
                    downstream
                })
                .collect();
        }
        if mode != Mode::Decode {
            return (0..self.nodes.len()).collect();
        }
        let mut after_z = vec![false; self.shapes.len()];
        after_z[self.z] = true;
        let mut run = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.op == Op::Sample || !n.inputs.iter().any(|&t| after_z[t]) {
                continue;
            }
            after_z[n.output] = true;
            run.push(i);
            if let Some(l) = self.levels.iter().find(|l| l.prior == n.output) {
                run.extend(self.producer(l.z));
                after_z[l.z] = true;
            }
        }
        run
    }

    /// The activation on a tensor that the gradients flowing into it must be multiplied
    /// by before its producer's backward: a Linear's or convolution's fused activation (a
    /// GroupNorm applies its own, from its input).
    pub fn act_for_gradients(&self, t: TensorId) -> Option<Activation> {
        let p = self.producer(self.root(t))?;
        match self.nodes[p].op {
            Op::Linear { act } | Op::Conv { act, .. } | Op::ConvT { act, .. }
                if act != Activation::Identity =>
            {
                Some(act)
            }
            _ => None,
        }
    }

    /// Rows per record of tensor `t` in a batch whose sequences have `steps` (the
    /// encoder's, the decoder's): its steps for a sequence tensor, else 1.
    pub fn steps_of(&self, t: TensorId, steps: [usize; 2]) -> usize {
        match self.time[t] {
            Some(Time::Encoder) => steps[0],
            Some(Time::Decoder) => steps[1],
            None => 1,
        }
    }

    /// The tensor whose storage `t` shares (a reshape's output shares its input's).
    pub fn root(&self, mut t: TensorId) -> TensorId {
        while let Some(p) = self.producer(t) {
            match self.nodes[p].op {
                Op::Reshape => t = self.nodes[p].inputs[0],
                _ => break,
            }
        }
        t
    }

    /// Parameter count (a shared table once).
    pub fn parameter_count(&self) -> usize {
        let mut seen = std::collections::BTreeSet::new();
        self.nodes
            .iter()
            .filter(|n| seen.insert(ops::param_names(n).concat()))
            .map(|n| {
                ops::param_dims(self, n)
                    .iter()
                    .map(|(r, c)| r * c)
                    .sum::<usize>()
            })
            .sum()
    }
}
