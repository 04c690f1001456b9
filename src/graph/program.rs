//! The graph compiled for a batch size: buffers assigned by liveness, the forward launches
//! in node order and, for training, the backward launches derived from the graph in
//! reverse, still one command buffer per step.
//!
//! Gradients: a tensor read by several ops gets one gradient buffer that their backward
//! launches write in turn, the first overwriting and the others adding (every gradient
//! launch can accumulate). When the tensor's producer fused an activation into its output
//! (a Linear's or convolution's epilogue), the last of those launches multiplies the total
//! by the activation's derivative at the output, in the same launch, so the producer's own
//! backward starts from a finished gradient. mu | logvar and the logits take their first
//! gradient from the fused loss, which runs between the two passes.
//!
//! Buffers: every value, gradient and scratch matrix is live from the step that writes it
//! first to the step that reads it last (forward node i at step i, the loss at F, node i's
//! backward at 2F - i); matrices whose lives do not overlap share a buffer. Kept apart: the
//! tensors other code reads (x, mu | logvar, z, the logits, the noise), rows with padding,
//! whose padding must stay zero for the vec4 kernels, and a GRU's states (its output is a
//! view of them; a layer without an initial state keeps their first rows zero).

use super::{ops, Graph, Layout, Op, Params, TensorId, Time};
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};
use crate::ops::gemm::InputActivation;
use crate::ops::sample::{set_noise_from, Noise};
use crate::ops::GradEpilogue;

/// What a program computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward with the columns the backward needs, then the backward.
    Train,
    /// Forward only (convolutions may read their columns in place).
    Infer,
    /// As Infer, from the lowest stochastic layer's mu | logvar, given (see
    /// `Graph::posterior`): its sampling and everything after it, the encoder below
    /// skipped (an image's importance samples share its posterior).
    Posterior,
    /// As Train from the lowest stochastic layer's mu | logvar, given: the backward ends
    /// at its gradient (the records' importance samples share the encoder, see `Encoder`).
    PosteriorTrain,
    /// The encoder up to the lowest stochastic layer's mu | logvar, forward and backward
    /// from that tensor's gradient, which the caller writes (its samples' summed).
    Encoder,
    /// The decoder only: logits from codes written into z.
    Decode,
    /// The encoder only, forward and backward, from mu | logvar's gradient back to its
    /// input's (the VampPrior's pseudo-inputs).
    Pseudo,
}

/// Per-node scratch matrices, by what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// A convolution's columns (forward; a plain one's weight gradient reads them too).
    Cols,
    /// A convolution's column gradients (backward).
    Dcols,
    /// A GroupNorm's per-group statistics (forward, read by its backward).
    Stats,
    /// The sampling noise.
    Eps,
    /// A convolution's weight with its taps reversed, when its input gradient is a
    /// convolution (see `ops::implicit_input_grad`).
    Flipped,
    /// A GRU's input and state projections (chunks of whole steps, see `ops::gru`), kept
    /// for its backward.
    Gi,
    Gh,
    /// A GRU's states: h0, then every step's (its output is a view of them).
    States,
    /// A GRU's projection gradients and the gradient carried back through its steps.
    Dgi,
    Dgh,
    Carry,
}

/// Scratch slots in all.
const SLOTS: usize = 11;

impl Slot {
    fn what(self) -> &'static str {
        match self {
            Slot::Cols => "columns",
            Slot::Dcols => "column gradients",
            Slot::Stats => "statistics",
            Slot::Eps => "noise",
            Slot::Flipped => "flipped weight",
            Slot::Gi => "input projections",
            Slot::Gh => "state projections",
            Slot::States => "states",
            Slot::Dgi => "input projection gradients",
            Slot::Dgh => "state projection gradients",
            Slot::Carry => "carried state gradient",
        }
    }
}

/// One node's scratch matrices, indexed by `Slot` (a convolution run in chunks has one
/// column matrix per chunk where its backward reads them, else one it reuses), and the
/// images per chunk of a convolution (see `ops::conv_chunk`).
#[derive(Clone, Default)]
struct Scratch {
    slots: [Vec<Matrix>; SLOTS],
    chunk: usize,
}

/// What an op's launches are built with (see `ops`).
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub graph: &'a Graph,
    pub params: &'a Params,
    pub batch: usize,
    /// Images per chunk of a convolution run in chunks (the batch for the others).
    pub chunk: usize,
    pub inference: bool,
    /// What the program computes (a Decode program's lower stochastic layers draw from
    /// their priors, see `Graph::inputs_of`).
    pub mode: Mode,
    /// A sequence batch's steps (encoder, decoder; see `Graph::steps_of`).
    pub steps: [usize; 2],
    /// Whether the node's parameter gradients add to what a later node sharing them wrote
    /// (backward runs in reverse).
    pub accumulate_params: bool,
    values: &'a [Option<Matrix>],
    grads: &'a [Option<Matrix>],
    scratch: &'a Scratch,
    lengths: &'a [Matrix],
}

impl Ctx<'_> {
    pub fn value(&self, t: TensorId) -> &Matrix {
        self.values[t]
            .as_ref()
            .expect("every tensor of the program has a value")
    }

    pub fn grad(&self, t: TensorId) -> Result<&Matrix, GpuError> {
        self.grads[t]
            .as_ref()
            .ok_or_else(|| GpuError::Shape(format!("tensor {t} has no gradient buffer")))
    }

    fn need(&self, slot: Slot) -> Result<&Matrix, GpuError> {
        self.scratch.slots[slot as usize]
            .first()
            .ok_or_else(|| GpuError::Shape(format!("no {} scratch", slot.what())))
    }

    pub fn cols(&self) -> Result<&Matrix, GpuError> {
        self.need(Slot::Cols)
    }

    /// Matrix rows of tensor `t` in this batch (a sequence's steps times the batch).
    pub fn rows(&self, t: TensorId) -> usize {
        self.batch * self.graph.steps_of(t, self.steps)
    }

    /// Each record's length in steps along `time` (u32 per record).
    pub fn lengths(&self, time: Time) -> &Matrix {
        &self.lengths[time as usize]
    }

    /// A GRU's (gi, gh) and states.
    pub fn gru(&self) -> Result<(&[Matrix], &[Matrix], &Matrix), GpuError> {
        let s = &self.scratch.slots;
        Ok((
            &s[Slot::Gi as usize],
            &s[Slot::Gh as usize],
            self.need(Slot::States)?,
        ))
    }

    /// A GRU's backward scratch: (d gi, d gh) and the carried gradient (none for a layer
    /// whose output is its last state: that gradient's buffer carries it).
    pub fn gru_grads(&self) -> (&[Matrix], &[Matrix], Option<&Matrix>) {
        let s = &self.scratch.slots;
        (
            &s[Slot::Dgi as usize],
            &s[Slot::Dgh as usize],
            s[Slot::Carry as usize].first(),
        )
    }

    /// The columns of chunk `j` of a convolution run in chunks (the one matrix all chunks
    /// reuse, where the backward does not read them).
    pub fn cols_of(&self, j: usize) -> Result<&Matrix, GpuError> {
        let cols = &self.scratch.slots[Slot::Cols as usize];
        cols.get(j)
            .or(cols.first())
            .ok_or_else(|| GpuError::Shape("no column scratch".into()))
    }

    pub fn dcols(&self) -> Result<&Matrix, GpuError> {
        self.need(Slot::Dcols)
    }

    pub fn stats(&self) -> Result<&Matrix, GpuError> {
        self.need(Slot::Stats)
    }

    pub fn eps(&self) -> Result<&Matrix, GpuError> {
        self.need(Slot::Eps)
    }

    /// The flipped weight of a convolution whose input gradient is a convolution (see
    /// `ops::implicit_input_grad`); None for the columns route.
    pub fn flipped_weight(&self) -> Option<&Matrix> {
        self.scratch.slots[Slot::Flipped as usize].first()
    }
}

/// A compiled graph.
pub struct Program {
    pub mode: Mode,
    pub batch: usize,
    values: Vec<Option<Matrix>>,
    grads: Vec<Option<Matrix>>,
    pub forward: Vec<Dispatch>,
    pub backward: Vec<Dispatch>,
    sample_backward: SampleBackwards,
    /// The sampling launches: index into `forward`, the code they write and its noise.
    samples: Vec<(usize, TensorId, Matrix)>,
    /// Bytes of every buffer the program allocated (values, gradients, scratch).
    pub workspace_bytes: u64,
    /// A sequence batch's lengths per record, along each `Time` (see `lengths`).
    lengths: Vec<Matrix>,
}

/// A matrix a program needs, and the steps it is live.
#[derive(Clone, Copy)]
struct Request {
    rows: usize,
    cols: usize,
    start: usize,
    end: usize,
    /// Its own buffer: read from outside the program, or padded.
    alone: bool,
    /// What it holds, for messages: (node, what).
    of: (usize, &'static str),
}

/// Buffers for `requests`: each matrix shares a buffer with others whose lives do not
/// overlap (first fit, the buffer grown to the largest). Returns the matrices and the bytes.
fn allocate(gpu: &Gpu, requests: &[Request], label: &str) -> Result<(Vec<Matrix>, u64), GpuError> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| (requests[i].start, requests[i].end));
    // Per buffer: (floats, busy until step).
    let mut buffers: Vec<(usize, usize, bool)> = Vec::new();
    let mut home = vec![0; requests.len()];
    for i in order {
        let r = requests[i];
        let floats = (r.rows * crate::gpu::round_up4(r.cols)).max(4);
        let free = (0..buffers.len())
            .filter(|&b| !r.alone && !buffers[b].2 && buffers[b].1 < r.start)
            .min_by_key(|&b| (buffers[b].0 < floats, buffers[b].0.abs_diff(floats)));
        let b = match free {
            Some(b) => b,
            None => {
                buffers.push((0, 0, r.alone));
                buffers.len() - 1
            }
        };
        buffers[b].0 = buffers[b].0.max(floats);
        buffers[b].1 = r.end;
        home[i] = b;
    }
    let created: Vec<Matrix> = buffers
        .iter()
        .enumerate()
        .map(|(b, &(floats, _, _))| Matrix::zeros(gpu, 1, floats, &format!("{label} buffer {b}")))
        .collect::<Result<_, _>>()?;
    let bytes = created.iter().map(Matrix::byte_len).sum();
    let views = requests
        .iter()
        .zip(&home)
        .map(|(r, &b)| Matrix {
            rows: r.rows,
            cols: r.cols,
            ld: crate::gpu::round_up4(r.cols),
            ..created[b].clone()
        })
        .collect();
    Ok((views, bytes))
}

impl Program {
    /// Compiles `params.graph` for batches of `batch` in `mode`. The program's inputs are
    /// the batch x (z in Decode programs) and a conditional model's condition y: `given`
    /// holds the matrices the caller fills (the batch, the one-hot classes); any other
    /// input is a matrix of the program's own that the caller writes (see `value`).
    pub fn new(
        gpu: &Gpu,
        params: &Params,
        batch: usize,
        mode: Mode,
        given: &[(TensorId, &Matrix)],
    ) -> Result<Program, GpuError> {
        if params.graph.tokens.is_some() {
            return Err(GpuError::Shape(
                "a sequence model compiles per width (Program::sequence)".into(),
            ));
        }
        Self::compile(gpu, params, (batch, [1, 1]), mode, given)
    }

    /// Compiles a sequence model's graph (`Mode::Train` or `Mode::Infer`) for batches of
    /// `batch` rows per step (records rounded up, see `ops::gru::step_rows`) whose
    /// sequences have `steps` (the encoder's, the decoder's). The caller writes the token ids (`value` of x and of the graph's
    /// `tokens`, u32, time-major) and each record's `lengths`.
    pub fn sequence(
        gpu: &Gpu,
        params: &Params,
        (batch, steps): (usize, [usize; 2]),
        mode: Mode,
    ) -> Result<Program, GpuError> {
        if params.graph.tokens.is_none() || steps.contains(&0) {
            return Err(GpuError::Shape(format!(
                "a sequence program of {steps:?} steps for a model without sequences or steps"
            )));
        }
        if !matches!(mode, Mode::Train | Mode::Infer) {
            return Err(GpuError::Shape(format!(
                "a sequence model compiles for training or inference, not {mode:?}"
            )));
        }
        Self::compile(gpu, params, (batch, steps), mode, &[])
    }

    fn compile(
        gpu: &Gpu,
        params: &Params,
        (batch, steps): (usize, [usize; 2]),
        mode: Mode,
        given: &[(TensorId, &Matrix)],
    ) -> Result<Program, GpuError> {
        let g = &params.graph;
        let run = g.nodes_for(mode);
        let f = run.len();
        let train = matches!(
            mode,
            Mode::Train | Mode::Pseudo | Mode::PosteriorTrain | Mode::Encoder
        );
        let constant = g.constants(mode == Mode::Pseudo);
        let loss_inputs = g.loss_inputs(mode);
        let fwd_at = |i: usize| {
            run.iter()
                .position(|&r| r == i)
                .expect("a node of the program")
        };
        let bwd_at = |i: usize| 2 * f - fwd_at(i);
        let n_t = g.shapes.len();
        // Which tensors this program holds: inputs and outputs of its nodes.
        let mut present = vec![false; n_t];
        for &i in &run {
            present[g.nodes[i].output] = true;
            g.inputs_of(i, mode).iter().for_each(|&t| present[t] = true);
        }
        let inputs: Vec<TensorId> = match mode {
            Mode::Decode => std::iter::once(g.z).chain(g.y).collect(),
            Mode::Posterior | Mode::PosteriorTrain => {
                std::iter::once(g.posterior()).chain(g.y).collect()
            }
            _ => std::iter::once(g.x).chain(g.y).chain(g.tokens).collect(),
        };
        // A GRU's output is a view of its states (see `Slot::States`).
        let held_by_gru = |t: TensorId| {
            g.producer(t)
                .is_some_and(|p| matches!(g.nodes[p].op, Op::Gru { .. }))
        };
        let kept = |t: TensorId| {
            [g.x, g.mulv, g.z, g.logits]
                .iter()
                .chain(&g.features)
                .chain(&loss_inputs)
                .any(|&k| g.root(k) == t)
        };
        // Liveness per storage root: (start, end) of the value and of the gradient.
        let mut value_life: Vec<Option<(usize, usize)>> = vec![None; n_t];
        let mut grad_life: Vec<Option<(usize, usize)>> = vec![None; n_t];
        let widen = |life: &mut Option<(usize, usize)>, t: usize| {
            *life = Some(life.map_or((t, t), |(s, e)| (s.min(t), e.max(t))));
        };
        for &i in &run {
            let n = &g.nodes[i];
            widen(&mut value_life[g.root(n.output)], fwd_at(i));
            for &t in &g.inputs_of(i, mode) {
                let r = g.root(t);
                widen(&mut value_life[r], fwd_at(i));
                if train {
                    // Backward rules read their inputs (weight gradients, derivatives).
                    widen(&mut value_life[r], bwd_at(i));
                    if !constant[r] && n.op != Op::Reshape {
                        widen(&mut grad_life[r], bwd_at(i));
                    }
                }
            }
            if train && n.op != Op::Reshape && !constant[n.output] {
                widen(&mut grad_life[g.root(n.output)], bwd_at(i));
            }
        }
        // The loss reads the logits and mu | logvar and writes their gradients.
        for &t in &loss_inputs {
            widen(&mut value_life[g.root(t)], f);
            widen(&mut grad_life[g.root(t)], f);
        }
        // Requests: values and gradients of roots, then scratch.
        let mut requests = Vec::new();
        let mut value_req = vec![None; n_t];
        let mut grad_req = vec![None; n_t];
        let layout = |t: TensorId| {
            let l = Layout::of(g.shapes[t]);
            (batch * g.steps_of(t, steps) * l.rows, l.cols, !l.dense())
        };
        for t in 0..n_t {
            if !present[t] || g.root(t) != t {
                continue;
            }
            let (rows, cols, padded) = layout(t);
            let node = g.producer(t).unwrap_or(0);
            // An input's value is the caller's; the pseudo-inputs' gradient is the program's.
            let input = inputs.contains(&t);
            if let Some((start, end)) = value_life[t].filter(|_| !input && !held_by_gru(t)) {
                value_req[t] = Some(requests.len());
                requests.push(Request {
                    rows,
                    cols,
                    start,
                    end,
                    alone: padded || kept(t),
                    of: (node, "output"),
                });
            }
            if let Some((start, end)) = grad_life[t] {
                grad_req[t] = Some(requests.len());
                requests.push(Request {
                    rows,
                    cols,
                    start,
                    end,
                    alone: padded || input || loss_inputs.iter().any(|&k| g.root(k) == t),
                    of: (node, "output gradient"),
                });
            }
        }
        // Scratch per node: request indices by slot, and the images per chunk.
        let mut scratch_req: Vec<[Vec<usize>; SLOTS]> = vec![Default::default(); g.nodes.len()];
        let mut chunk = vec![batch; g.nodes.len()];
        for &i in &run {
            let n = &g.nodes[i];
            let (fwd, bwd) = (fwd_at(i), bwd_at(i));
            let mut ask = |slot: Slot, (rows, cols): (usize, usize), start, end, alone: bool| {
                scratch_req[i][slot as usize].push(requests.len());
                requests.push(Request {
                    rows,
                    cols,
                    start,
                    end,
                    alone: alone || !cols.is_multiple_of(4),
                    of: (i, slot.what()),
                });
            };
            match n.op {
                Op::Conv { .. } | Op::ConvT { .. } => {
                    chunk[i] = ops::conv_chunk(gpu, g, n, batch)?;
                    let dims = ops::cols_dims(g, n, chunk[i])?;
                    let plain = matches!(n.op, Op::Conv { .. }) && !ops::flipped(g, n);
                    let implicit = plain
                        && !train
                        && crate::ops::conv::implicit_fits(
                            gpu,
                            &ops::conv_geom(g, n, batch)?,
                            Layout::of(g.shapes[n.inputs[0]]).strides(g.shapes[n.inputs[0]]),
                        );
                    if !implicit {
                        // A plain convolution's weight gradient reads its columns: one
                        // matrix per chunk then, else one the chunks reuse.
                        let kept = plain && train;
                        let end = if kept { bwd } else { fwd };
                        let parts: Vec<(usize, usize)> = match kept {
                            true => ops::chunks(batch, chunk[i]).collect(),
                            false => vec![(0, chunk[i])],
                        };
                        for (_, images) in parts {
                            let rows = dims.0 / chunk[i] * images;
                            ask(Slot::Cols, (rows, dims.1), fwd, end, false);
                        }
                    }
                    let wants_dx = !constant[n.inputs[0]];
                    if train && wants_dx && plain && ops::implicit_input_grad(gpu, g, n, batch) {
                        let (cin, cout) = (g.shapes[n.inputs[0]].c, g.shapes[n.output].c);
                        ask(Slot::Flipped, (cin, dims.1 / cin * cout), bwd, bwd, false);
                    } else if train && (!plain || wants_dx) {
                        ask(Slot::Dcols, dims, bwd, bwd, false);
                    }
                }
                Op::GroupNorm { groups, .. } => {
                    let end = if train { bwd } else { fwd };
                    ask(Slot::Stats, (batch, 2 * groups), fwd, end, false);
                }
                Op::Gru { last, .. } => {
                    let (hidden, t) = (g.shapes[n.output].c, g.steps_of(n.inputs[0], steps));
                    let per = crate::ops::gru::projection_steps(gpu, batch, hidden, &n.label)?;
                    let end = if train { bwd } else { fwd };
                    for first in (0..t).step_by(per) {
                        let dims = (per.min(t - first) * batch, 3 * hidden);
                        ask(Slot::Gi, dims, fwd, end, false);
                        ask(Slot::Gh, dims, fwd, end, false);
                        if train {
                            ask(Slot::Dgi, dims, bwd, bwd, false);
                            ask(Slot::Dgh, dims, bwd, bwd, false);
                        }
                    }
                    // The states hold the output, live as long as it; alone, so that a
                    // layer without an initial state keeps its first rows zero.
                    let life =
                        value_life[n.output].map_or((fwd, end), |(s, e)| (s.min(fwd), e.max(end)));
                    ask(
                        Slot::States,
                        ((t + 1) * batch, hidden),
                        life.0,
                        life.1,
                        true,
                    );
                    // A last state's gradient is carried back in its own buffer.
                    if train && !last {
                        ask(Slot::Carry, (batch, hidden), bwd, bwd, false);
                    }
                }
                Op::Sample => {
                    let latent = g.shapes[n.output].c;
                    // Read after the step (the IWAE estimate), so never shared.
                    ask(
                        Slot::Eps,
                        (batch, latent),
                        fwd,
                        if train { bwd } else { fwd },
                        true,
                    );
                }
                _ => {}
            }
        }
        // Every matrix must fit one binding; they all grow with the batch.
        let limit = gpu.binding_limit();
        let bytes = |r: &Request| (r.rows * crate::gpu::round_up4(r.cols) * 4) as u64;
        if let Some(r) = requests
            .iter()
            .filter(|r| bytes(r) > limit)
            .max_by_key(|r| bytes(r))
        {
            let fit = (batch as u64 * limit / bytes(r)).max(1);
            return Err(GpuError::Limit(format!(
                "{}: its {} at batch {batch} take {} MiB, over the {} MiB the adapter binds at once; use --batch-size {fit} or smaller",
                g.nodes[r.of.0].label,
                r.of.1,
                bytes(r) >> 20,
                limit >> 20
            )));
        }
        let (views, workspace_bytes) = allocate(gpu, &requests, "graph")?;
        let view = |r: Option<usize>| r.map(|k| views[k].clone());
        // The inputs: the caller's matrices, or the program's own that the caller writes.
        let mut input_matrices = Vec::new();
        for &t in &inputs {
            let m = match given.iter().find(|(i, _)| *i == t) {
                Some((_, m)) => (*m).clone(),
                // Token ids: one u32 per row, packed.
                None if g.time[t].is_some() => {
                    let (rows, _, _) = layout(t);
                    Matrix {
                        rows,
                        cols: 1,
                        ld: 1,
                        ..Matrix::zeros(gpu, 1, rows, "token ids")?
                    }
                }
                None => {
                    let (rows, cols, _) = layout(t);
                    Matrix::zeros(gpu, rows, cols, "program input")?
                }
            };
            input_matrices.push((t, m));
        }
        let mut values: Vec<Option<Matrix>> = vec![None; n_t];
        let mut grads: Vec<Option<Matrix>> = vec![None; n_t];
        for t in 0..n_t {
            if !present[t] {
                continue;
            }
            let r = g.root(t);
            let (rows, cols, _) = layout(t);
            // A reshape's output is its root's storage seen in its own shape.
            let reshaped = |m: Matrix| Matrix {
                rows,
                cols,
                ld: crate::gpu::round_up4(cols),
                ..m
            };
            values[t] = match input_matrices.iter().find(|(i, _)| *i == r) {
                // Token ids stay packed, one u32 per row.
                Some((_, m)) if g.time[t].is_some() => Some(m.clone()),
                Some((_, m)) => Some(reshaped(m.clone())),
                None => view(value_req[r]).map(reshaped),
            };
            grads[t] = view(grad_req[r]).map(reshaped);
        }
        let scratch: Vec<Scratch> = scratch_req
            .iter()
            .zip(&chunk)
            .map(|(s, &chunk)| Scratch {
                slots: s
                    .clone()
                    .map(|r| r.into_iter().map(|k| views[k].clone()).collect()),
                chunk,
            })
            .collect();
        // A GRU's output (and what reshapes it): its states after h0, or their last
        // step's rows.
        for &i in &run {
            let n = &g.nodes[i];
            if let Op::Gru { last, .. } = n.op {
                let states = scratch[i].slots[Slot::States as usize][0].clone();
                let t = g.steps_of(n.inputs[0], steps);
                let out = match last {
                    true => states.rows_view(t * batch, batch)?,
                    false => states.rows_view(batch, t * batch)?,
                };
                for v in (0..n_t).filter(|&v| present[v] && g.root(v) == n.output) {
                    let (rows, cols, _) = layout(v);
                    values[v] = Some(Matrix {
                        rows,
                        cols,
                        ld: crate::gpu::round_up4(cols),
                        ..out.clone()
                    });
                }
            }
        }
        let lengths = match g.tokens {
            Some(_) => (0..2)
                .map(|_| Matrix::zeros(gpu, 1, batch, "lengths"))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let shares_later = |i: usize| {
            let n = &g.nodes[i];
            matches!(n.op, Op::Embed { .. })
                && run
                    .iter()
                    .any(|&j| j > i && g.nodes[j].op == n.op && g.nodes[j].name == n.name)
        };
        let cx = |i: usize| Ctx {
            gpu,
            graph: g,
            params,
            batch,
            chunk: scratch[i].chunk,
            inference: !train,
            mode,
            steps,
            accumulate_params: shares_later(i),
            values: &values,
            grads: &grads,
            scratch: &scratch[i],
            lengths: &lengths,
        };
        let mut forward = Vec::new();
        let mut samples = Vec::new();
        for &i in &run {
            if g.nodes[i].op == Op::Sample {
                let eps = scratch[i].slots[Slot::Eps as usize][0].clone();
                samples.push((forward.len(), g.nodes[i].output, eps));
            }
            forward.extend(ops::forward(&cx(i), i)?);
        }
        let (backward, sample_backward) = if train {
            backward_launches(g, &run, (&constant, &loss_inputs), (&values, &grads), &cx)?
        } else {
            Default::default()
        };
        log::debug!(
            "graph program {mode:?} at batch {batch}: {} forward and {} backward launches, {workspace_bytes} workspace bytes",
            forward.len(),
            backward.len()
        );
        Ok(Program {
            mode,
            batch,
            values,
            grads,
            forward,
            backward,
            sample_backward,
            samples,
            workspace_bytes,
            lengths,
        })
    }

    /// Each record's length along `time` (u32 per record, written by the caller before a
    /// step; rows past the batch's records stay 0).
    pub fn lengths(&self, time: Time) -> &Matrix {
        &self.lengths[time as usize]
    }

    /// The matrix holding tensor `t` for the batch.
    pub fn value(&self, t: TensorId) -> &Matrix {
        self.values[t].as_ref().expect("a tensor of the program")
    }

    /// The gradient of tensor `t` (training and evaluation programs hold those the loss
    /// writes, mu | logvar and the logits).
    pub fn grad(&self, t: TensorId) -> &Matrix {
        self.grads[t].as_ref().expect("a tensor with a gradient")
    }

    /// Where the backward of the code `z`'s sampling starts in `backward`: its gradient is
    /// complete there (every consumer's backward has added to it).
    pub fn sample_backward_at(&self, z: TensorId) -> Option<usize> {
        self.sample_backward.iter().find(|s| s.1 == z).map(|s| s.0)
    }

    /// The noise the code `z` was last sampled with.
    pub fn eps_of(&self, z: TensorId) -> &Matrix {
        self.samples
            .iter()
            .find(|s| s.1 == z)
            .map(|s| &s.2)
            .expect("a program that samples that code")
    }

    /// Sets the sampling launches' noise position and temperature. The code's noise is
    /// drawn at `noise`, row r as row `first` + r; each lower stochastic layer's from a
    /// stream of its own, so no two layers share draws.
    pub fn set_noise(
        &self,
        gpu: &Gpu,
        g: &Graph,
        (noise, first): (Noise, usize),
        temperature: f32,
    ) {
        for (at, z, _) in &self.samples {
            let level = g.levels.iter().position(|l| l.z == *z);
            let noise = Noise {
                stream: noise.stream + level.map_or(0, |l| (l as u32 + 1) << 16),
                ..noise
            };
            let node = g.producer(*z).expect("a sampled code");
            let mulv = self.value(g.inputs_of(node, self.mode)[0]);
            set_noise_from(
                gpu,
                &self.forward[*at],
                (mulv.ld, self.value(*z)),
                noise,
                temperature,
                first,
            );
        }
    }
}

/// Where each code's sampling backward starts among the backward launches, and the code.
type SampleBackwards = Vec<(usize, TensorId)>;

/// The backward launches (and where each sampling's backward starts): nodes in reverse,
/// each input's gradient written through the epilogue its place among the tensor's
/// contributions calls for.
fn backward_launches<'a>(
    g: &Graph,
    run: &[usize],
    (constant, loss_inputs): (&[bool], &[TensorId]),
    (values, grads): (&[Option<Matrix>], &[Option<Matrix>]),
    cx: &dyn Fn(usize) -> Ctx<'a>,
) -> Result<(Vec<Dispatch>, SampleBackwards), GpuError> {
    // Contributions to each root's gradient in the order they run: the loss first, then
    // every (node, input) edge in reverse node order.
    let n_t = g.shapes.len();
    let mut contributions: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_t];
    const LOSS: usize = usize::MAX;
    for &t in loss_inputs {
        contributions[g.root(t)].push((LOSS, 0));
    }
    for &i in run.iter().rev() {
        let n = &g.nodes[i];
        if n.op == Op::Reshape {
            continue;
        }
        for (k, &t) in n.inputs.iter().enumerate() {
            if !constant[t] {
                contributions[g.root(t)].push((i, k));
            }
        }
    }
    for &t in loss_inputs {
        if g.act_for_gradients(t).is_some() {
            return Err(GpuError::Shape(
                "the logits and mu | logvar must come from layers without an activation".into(),
            ));
        }
    }
    let (mut out, mut samples) = (Vec::new(), Vec::new());
    for &i in run.iter().rev() {
        let n = &g.nodes[i];
        if constant[n.output] {
            continue;
        }
        let mut targets = Vec::new();
        for (k, &t) in n.inputs.iter().enumerate() {
            let r = g.root(t);
            let list = &contributions[r];
            let Some(place) = list.iter().position(|&e| e == (i, k)) else {
                targets.push(None);
                continue;
            };
            let dx = grads[t]
                .clone()
                .expect("a gradient buffer for every contributed tensor");
            let last = place + 1 == list.len();
            let act = g.act_for_gradients(t).filter(|_| last);
            let epilogue = GradEpilogue {
                accumulate: place > 0,
                act: act.map(|act| InputActivation {
                    act,
                    output: values[t].as_ref().expect("a value for every tensor"),
                }),
            };
            targets.push(Some((dx, epilogue)));
        }
        if n.op == Op::Sample && targets[0].as_ref().is_some_and(|t| !t.1.accumulate) {
            return Err(GpuError::Shape(
                "sampling adds to mu | logvar's gradient, which the loss must write first".into(),
            ));
        }
        if n.op == Op::Sample {
            samples.push((out.len(), n.output));
        }
        out.extend(ops::backward(&cx(i), i, &targets)?);
    }
    Ok((out, samples))
}
