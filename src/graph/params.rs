//! The model's parameters in one flat GPU buffer (so one Adam launch updates them all),
//! with gradients and Adam moments in parallel flat buffers at the same offsets. Each
//! parameter node has its slots (a weight and a bias; a GRU four, an embedding one), in
//! node order, each starting at a 256-byte boundary (the storage binding alignment); the
//! gaps stay zero. Embeddings of one name share their slot. The layout, and so the
//! optimizer files of earlier runs, is the same as before the graph: every slot keeps its
//! offset.

use super::ops::{self, ParamInit};
use super::{Graph, Layout, Node, Op};
use crate::gpu::{round_up4, Gpu, GpuError, Matrix};
use crate::ops::conv::{gpu_col, Shape};
use crate::rng::Rng;

/// Where one tensor lives in the flat buffers.
#[derive(Clone, Debug)]
pub struct Slot {
    pub name: String,
    /// Float offset into the flat buffers.
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Slot {
    pub fn ld(&self) -> usize {
        round_up4(self.cols)
    }
}

pub struct Params {
    /// The model the parameters belong to.
    pub graph: Graph,
    /// Per node: its parameters' slots, as `ops::param_dims` orders them (none for nodes
    /// without parameters).
    pub slots: Vec<Vec<Slot>>,
    /// The VampPrior's raw pseudo-inputs, after the layers': [K * rows, cols] where one
    /// input is held as the batch is (see `Layout`). Zero until the trainer sets them.
    pub pseudo: Option<Slot>,
    /// Total floats (a multiple of 64).
    pub len: usize,
    pub values: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

/// 64 floats = 256 bytes, the largest storage offset alignment wgpu allows.
const ALIGN: usize = 64;

/// The four buffers of `len` floats a model's parameters live in, laid out alike: the
/// values, their gradients and Adam's two moments (one Adam launch updates them all).
pub fn flat_buffers(gpu: &Gpu, len: usize) -> [wgpu::Buffer; 4] {
    ["params", "grads", "adam m", "adam v"].map(|label| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len * 4) as u64,
            usage: Matrix::USAGE,
            mapped_at_creation: false,
        })
    })
}

/// One checkpoint tensor: its PyTorch name and shape, and the flat index of each of its
/// elements in PyTorch's order.
pub struct TorchTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub indices: Vec<usize>,
}

impl Params {
    /// Allocates the buffers and initialises like PyTorch's layers: weights and biases
    /// uniform in +-1/sqrt(fan_in), drawn from the seed in node order (weight, then bias,
    /// row by row), GroupNorm's scale 1 and shift 0.
    pub fn new(gpu: &Gpu, graph: &Graph, seed: u64) -> Result<Params, GpuError> {
        let mut offset = 0;
        let mut slot = |name: String, (rows, cols): (usize, usize)| {
            let s = Slot {
                name,
                offset,
                rows,
                cols,
            };
            offset += (rows * round_up4(cols)).div_ceil(ALIGN) * ALIGN;
            s
        };
        let mut named: std::collections::BTreeMap<String, Slot> = Default::default();
        let slots: Vec<Vec<Slot>> = graph
            .nodes
            .iter()
            .map(|n| {
                let dims = ops::param_dims(graph, n);
                ops::param_names(n)
                    .into_iter()
                    .zip(dims)
                    .map(|(name, d)| {
                        named
                            .entry(name.clone())
                            .or_insert_with(|| slot(name, d))
                            .clone()
                    })
                    .collect()
            })
            .collect();
        let pseudo = graph.pseudo.map(|p| {
            let l = Layout::of(graph.shapes[graph.x]);
            slot("pseudo_inputs".into(), (p.count * l.rows, l.cols))
        });
        let len = offset.max(ALIGN);
        let limit = gpu.limits.max_storage_buffer_binding_size;
        if (len * 4) as u64 > limit {
            // All parameters are one binding; the largest layer is the one to shrink.
            let largest = slots.iter().flatten().max_by_key(|w| w.rows * w.cols);
            return Err(GpuError::Limit(format!(
                "the model's {:.1} M parameters take {} MiB, over the {} MiB the adapter binds at once{}",
                len as f64 / 1e6,
                (len * 4) >> 20,
                limit >> 20,
                largest.map_or(String::new(), |w| format!(
                    "; the largest is {} ({}x{})",
                    w.name,
                    w.rows,
                    w.cols
                ))
            )));
        }
        let [values, grads, m, v] = flat_buffers(gpu, len);
        let params = Params {
            values,
            grads,
            m,
            v,
            graph: graph.clone(),
            slots,
            pseudo,
            len,
        };
        let mut rng = Rng::new(seed);
        let mut host = vec![0f32; len];
        let mut done = std::collections::BTreeSet::new();
        for (n, slots) in graph.nodes.iter().zip(&params.slots) {
            for (s, init) in slots.iter().zip(ops::init(graph, n)) {
                // A shared table starts once.
                if !done.insert(s.offset) {
                    continue;
                }
                for r in 0..s.rows {
                    for col in 0..s.cols {
                        host[s.offset + r * s.ld() + col] = match init {
                            ParamInit::Uniform(bound) => rng.uniform(-bound, bound) as f32,
                            ParamInit::Const(v) => v,
                            ParamInit::Embedding if s.rows == s.cols => {
                                f32::from(u8::from(r == col))
                            }
                            ParamInit::Embedding => rng.normal() as f32,
                        };
                    }
                }
            }
        }
        gpu.queue
            .write_buffer(&params.values, 0, bytemuck::cast_slice(&host));
        Ok(params)
    }

    pub fn view(&self, buffer: &wgpu::Buffer, s: &Slot) -> Matrix {
        Matrix {
            buffer: buffer.clone(),
            offset: (s.offset * 4) as u64,
            rows: s.rows,
            cols: s.cols,
            ld: s.ld(),
        }
    }

    /// Node `i`'s (weight, bias) in `buffer` (values, grads).
    pub fn of(&self, buffer: &wgpu::Buffer, i: usize) -> Option<(Matrix, Matrix)> {
        match &self.slots[i][..] {
            [w, b] => Some((self.view(buffer, w), self.view(buffer, b))),
            _ => None,
        }
    }

    /// All of node `i`'s parameters in `buffer`, as `ops::param_dims` orders them.
    pub fn all_of(&self, buffer: &wgpu::Buffer, i: usize) -> Vec<Matrix> {
        self.slots[i].iter().map(|s| self.view(buffer, s)).collect()
    }

    /// A VampPrior model's pseudo-inputs: how the encoder sees them, and their slot.
    pub fn pseudo_inputs(&self) -> Option<(super::Pseudo, &Slot)> {
        self.graph.pseudo.zip(self.pseudo.as_ref())
    }

    /// The same parameters with their gradients in `grads` (a buffer of `len` floats): the
    /// VampPrior's encoder pass over its pseudo-inputs writes its weight gradients apart,
    /// to be added to the batch's.
    pub fn with_grads(&self, grads: wgpu::Buffer) -> Params {
        Params {
            graph: self.graph.clone(),
            slots: self.slots.clone(),
            pseudo: self.pseudo.clone(),
            len: self.len,
            values: self.values.clone(),
            grads,
            m: self.m.clone(),
            v: self.v.clone(),
        }
    }

    /// The whole of `buffer` (values, grads) as one [1, len] matrix.
    pub fn flat(&self, buffer: &wgpu::Buffer) -> Matrix {
        Matrix {
            buffer: buffer.clone(),
            offset: 0,
            rows: 1,
            cols: self.len,
            ld: self.len,
        }
    }

    /// Every checkpoint tensor of the model, in node order, then the pseudo-inputs:
    /// PyTorch's names, shapes and element order (see `torch_tensors`).
    pub fn torch_layout(&self) -> Vec<TorchTensor> {
        let g = &self.graph;
        let mut seen = std::collections::BTreeSet::new();
        let mut all: Vec<TorchTensor> = g
            .nodes
            .iter()
            .zip(&self.slots)
            .filter(|(_, s)| !s.is_empty() && seen.insert(s[0].offset))
            .flat_map(|(n, s)| torch_tensors(g, n, s))
            .collect();
        all.extend(self.pseudo.as_ref().map(|s| pseudo_tensor(g, s)));
        all
    }
}

/// The pseudo-inputs as PyTorch holds a batch: [K, C, H, W] for images, else [K, D].
fn pseudo_tensor(g: &Graph, s: &Slot) -> TorchTensor {
    let shape = g.shapes[g.x];
    let l = Layout::of(shape);
    let (d, per) = (shape.numel(), l.rows * s.ld());
    let k = s.rows / l.rows;
    let image = shape.h * shape.w > 1;
    let indices = (0..k)
        .flat_map(|i| {
            (0..d).map(move |t| {
                let j = if image { chw(shape, t) } else { t };
                s.offset + i * per + (j / l.cols) * s.ld() + j % l.cols
            })
        })
        .collect();
    let dims = if image {
        vec![k, shape.c, shape.h, shape.w]
    } else {
        vec![k, d]
    };
    TorchTensor {
        name: s.name.clone(),
        shape: dims,
        indices,
    }
}

/// PyTorch's (c, h, w) flat index `t` of an image of shape `s`, as an index in vae-gpu's
/// (h, w, c) order.
fn chw(s: Shape, t: usize) -> usize {
    (t % (s.h * s.w)) * s.c + t / (s.h * s.w)
}

/// The checkpoint tensors of one node: weight and bias (several of each for a Linear stored
/// as several PyTorch layers), with the flat index of every element in PyTorch's order.
/// Linear layers next to images flatten them (h, w, c) here and (c, h, w) in PyTorch, which
/// permutes their columns (an image input) or rows and bias (an image output); conv weights
/// order a kernel's taps channel-fastest here (see `ops::conv`); a stride-1 convolution to
/// fewer than 4 channels runs as its transposed twin, with its taps flipped. An embedding's
/// and a GRU's are plain matrices (a bias a vector).
fn torch_tensors(g: &Graph, n: &Node, slots: &[Slot]) -> Vec<TorchTensor> {
    if matches!(n.op, Op::Embed { .. } | Op::Gru { .. }) {
        return slots
            .iter()
            .map(|s| TorchTensor {
                name: s.name.clone(),
                shape: match s.name.contains(".bias") {
                    true => vec![s.cols],
                    false => vec![s.rows, s.cols],
                },
                indices: (0..s.rows)
                    .flat_map(|r| (0..s.cols).map(move |c| s.offset + r * s.ld() + c))
                    .collect(),
            })
            .collect();
    }
    let (w, b) = (&slots[0], &slots[1]);
    let (ld, wo, bo) = (w.ld(), w.offset, b.offset);
    let at = |row: usize, col: usize| wo + row * ld + col;
    let tensor = |name: String, shape: Vec<usize>, indices: Vec<usize>| TorchTensor {
        name,
        shape,
        indices,
    };
    let (input, output) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
    match n.op {
        Op::Linear { .. } => {
            let image = |s: Shape| s.h * s.w > 1;
            let row_of = |r: usize| if image(output) { chw(output, r) } else { r };
            let col_of = |j: usize| if image(input) { chw(input, j) } else { j };
            let parts = if n.parts.is_empty() {
                vec![(n.name.clone(), w.rows)]
            } else {
                n.parts.clone()
            };
            let mut row0 = 0;
            let mut out = Vec::new();
            for (name, rows) in parts {
                let idx = (row0..row0 + rows)
                    .flat_map(|r| (0..w.cols).map(move |j| at(row_of(r), col_of(j))))
                    .collect();
                out.push(tensor(format!("{name}.weight"), vec![rows, w.cols], idx));
                let bias = (row0..row0 + rows).map(|r| bo + row_of(r)).collect();
                out.push(tensor(format!("{name}.bias"), vec![rows], bias));
                row0 += rows;
            }
            out
        }
        Op::Conv { k, .. } | Op::ConvT { k, .. } => {
            let (cin, cout, taps) = (input.c, output.c, k * k);
            let flipped = ops::flipped(g, n);
            let idx: Vec<usize> = match n.op {
                // [Cout, Cin, k, k] as [Cout, k*k*Cin]
                Op::Conv { .. } if !flipped => (0..cout)
                    .flat_map(|co| (0..cin * taps).map(move |j| at(co, gpu_col(j, cin, taps))))
                    .collect(),
                // [Cout, Cin, k, k] as the transposed twin's [Cin, k*k*Cout], taps flipped
                Op::Conv { .. } => (0..cout)
                    .flat_map(|co| {
                        (0..cin * taps).map(move |j| {
                            let (ci, tap) = (j / taps, j % taps);
                            at(ci, (taps - 1 - tap) * cout + co)
                        })
                    })
                    .collect(),
                // [Cin, Cout, k, k] as [Cin, k*k*Cout]
                _ => (0..cin)
                    .flat_map(|ci| (0..cout * taps).map(move |j| at(ci, gpu_col(j, cout, taps))))
                    .collect(),
            };
            let shape = match n.op {
                Op::Conv { .. } => vec![cout, cin, k, k],
                _ => vec![cin, cout, k, k],
            };
            vec![
                tensor(format!("{}.weight", n.name), shape, idx),
                tensor(
                    format!("{}.bias", n.name),
                    vec![cout],
                    (bo..bo + cout).collect(),
                ),
            ]
        }
        Op::GroupNorm { .. } => {
            let c = output.c;
            vec![
                tensor(
                    format!("{}.weight", n.name),
                    vec![c],
                    (wo..wo + c).collect(),
                ),
                tensor(format!("{}.bias", n.name), vec![c], (bo..bo + c).collect()),
            ]
        }
        _ => Vec::new(),
    }
}
