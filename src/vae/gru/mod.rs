//! The sequence VAE of MOSES (`moses/vae/model.py`; Gómez-Bombarelli et al. 2018 in its
//! common form): token embeddings, a GRU encoder whose last state gives mu and logvar, and a
//! GRU decoder fed [embedding ; z] at every step, its initial state a Linear of z in every
//! layer, then a Linear to the vocabulary. Its parameters live in one flat buffer (one Adam
//! launch, one clipping) under MOSES's state_dict names; `step` compiles a training or
//! evaluation step into one launch list, `decode` generates.
//!
//! The model is compiled by its own builder rather than the image graph: that graph holds
//! one row (or one row per pixel) per record, while a recurrent layer runs over time-major
//! rows, one block of rows per step, which every op here assumes. The ops are the shared
//! ones (GEMM, sampling, the KL launches, Adam) plus the recurrent ones in `ops::gru` and
//! `ops::sequence`.

pub mod decode;
pub mod step;
pub mod train;

use crate::gpu::{round_up4, Gpu, GpuError, Matrix};
use crate::io::safetensors::Tensor;
use crate::rng::Rng;

/// The model's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GruSpec {
    /// Token ids (the tokens and begin, end, padding).
    pub vocab: usize,
    /// Embedding width; the vocabulary size gives MOSES's one-hot start.
    pub embed: usize,
    pub enc_hidden: usize,
    pub latent: usize,
    pub dec_hidden: usize,
    pub dec_layers: usize,
}

impl GruSpec {
    /// MOSES's defaults for a vocabulary: one-hot embeddings, a 256-unit encoder, a 128-wide
    /// code, three decoder layers of 512.
    pub fn moses(vocab: usize) -> GruSpec {
        GruSpec {
            vocab,
            embed: vocab,
            enc_hidden: 256,
            latent: 128,
            dec_hidden: 512,
            dec_layers: 3,
        }
    }

    /// Every size in range (a width of 1 to 2^14, 1 to 8 decoder layers, 3 to 2^16 ids).
    pub fn check(&self) -> Result<(), String> {
        let w = 1..=1 << 14;
        for (name, v) in [
            ("--embed", self.embed),
            ("--hidden", self.enc_hidden),
            ("--latent", self.latent),
            ("--hidden (decoder)", self.dec_hidden),
        ] {
            if !w.contains(&v) {
                return Err(format!("{name} {v} is outside 1..=16384"));
            }
        }
        if !(1..=8).contains(&self.dec_layers) {
            return Err(format!(
                "--decoder-layers {} is outside 1..=8",
                self.dec_layers
            ));
        }
        if !(4..=1 << 16).contains(&self.vocab) {
            return Err(format!(
                "a vocabulary of {} ids is outside 4..=65536",
                self.vocab
            ));
        }
        Ok(())
    }

    /// The decoder's input width: an embedding and z.
    pub fn dec_input(&self) -> usize {
        self.embed + self.latent
    }
}

/// How a tensor starts.
#[derive(Clone, Copy, Debug)]
enum Init {
    /// Uniform in +-bound (PyTorch's Linear and GRU).
    Uniform(f64),
    /// The identity where the shape allows (MOSES's one-hot embeddings), else N(0, 1)
    /// (nn.Embedding's own).
    Embedding,
}

/// One matrix of the flat buffer and the checkpoint tensors it holds: consecutive runs of
/// its dense values, each under its name and shape (the heads q_mu and q_logvar are one
/// matrix, so that one GEMM makes mu | logvar).
#[derive(Clone, Debug)]
pub struct Slot {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<(String, Vec<usize>)>,
    init: Init,
}

/// Slots start at 256-byte boundaries, the storage binding alignment.
const ALIGN: usize = 64;

/// PyTorch's Linear and GRU start: uniform in +-1/sqrt(fan_in).
fn uniform(fan_in: usize) -> Init {
    Init::Uniform(1.0 / (fan_in as f64).sqrt())
}

/// Lays slots out one after the other.
#[derive(Default)]
struct SlotBuilder {
    slots: Vec<Slot>,
    offset: usize,
}

impl SlotBuilder {
    fn add(&mut self, rows: usize, cols: usize, init: Init, parts: Vec<(String, Vec<usize>)>) {
        self.slots.push(Slot {
            offset: self.offset,
            rows,
            cols,
            parts,
            init,
        });
        self.offset += (rows * round_up4(cols)).div_ceil(ALIGN) * ALIGN;
    }

    /// nn.GRU's layer `l` of `name`: weight_ih, weight_hh, bias_ih, bias_hh (fan_in: h).
    fn gru(&mut self, name: &str, l: usize, input: usize, h: usize) {
        let init = uniform(h);
        for (what, rows, cols) in [("weight_ih", 3 * h, input), ("weight_hh", 3 * h, h)] {
            self.add(
                rows,
                cols,
                init,
                vec![(format!("{name}.{what}_l{l}"), vec![rows, cols])],
            );
        }
        for what in ["bias_ih", "bias_hh"] {
            self.add(
                1,
                3 * h,
                init,
                vec![(format!("{name}.{what}_l{l}"), vec![3 * h])],
            );
        }
    }
}

/// Indices into `GruParams::slots`, by role.
#[derive(Clone, Copy, Debug)]
pub struct GruLayerSlots {
    pub w_ih: usize,
    pub w_hh: usize,
    pub b_ih: usize,
    pub b_hh: usize,
}

/// The parameters, their gradients and Adam's moments, in four flat buffers laid out alike.
pub struct GruParams {
    pub spec: GruSpec,
    pub slots: Vec<Slot>,
    pub len: usize,
    pub values: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

/// Slot indices of the model's tensors (see `GruParams::new` for the order).
pub const EMBED: usize = 0;
pub const ENCODER: GruLayerSlots = GruLayerSlots {
    w_ih: 1,
    w_hh: 2,
    b_ih: 3,
    b_hh: 4,
};
pub const HEADS_W: usize = 5;
pub const HEADS_B: usize = 6;
pub const LAT_W: usize = 7;
pub const LAT_B: usize = 8;
pub const FC_W: usize = 9;
pub const FC_B: usize = 10;

/// The slots of decoder layer `l`.
pub fn decoder(l: usize) -> GruLayerSlots {
    let base = 11 + 4 * l;
    GruLayerSlots {
        w_ih: base,
        w_hh: base + 1,
        b_ih: base + 2,
        b_hh: base + 3,
    }
}

impl GruParams {
    /// The buffers, initialised from `seed` like PyTorch's layers: GRU and Linear weights
    /// and biases uniform in +-1/sqrt(fan_in) (a GRU's fan_in is its hidden size), the
    /// embedding one-hot when it is as wide as the vocabulary (MOSES), else N(0, 1).
    pub fn new(gpu: &Gpu, spec: GruSpec, seed: u64) -> Result<GruParams, GpuError> {
        spec.check().map_err(GpuError::Shape)?;
        let s = spec;
        let mut b = SlotBuilder::default();
        let one = |name: &str, shape: Vec<usize>| vec![(name.to_string(), shape)];
        b.add(
            s.vocab,
            s.embed,
            Init::Embedding,
            one("x_emb.weight", vec![s.vocab, s.embed]),
        );
        b.gru("encoder_rnn", 0, s.embed, s.enc_hidden);
        let (z, he, hd) = (s.latent, s.enc_hidden, s.dec_hidden);
        b.add(
            2 * z,
            he,
            uniform(he),
            vec![
                ("q_mu.weight".into(), vec![z, he]),
                ("q_logvar.weight".into(), vec![z, he]),
            ],
        );
        b.add(
            1,
            2 * z,
            uniform(he),
            vec![
                ("q_mu.bias".into(), vec![z]),
                ("q_logvar.bias".into(), vec![z]),
            ],
        );
        b.add(hd, z, uniform(z), one("decoder_lat.weight", vec![hd, z]));
        b.add(1, hd, uniform(z), one("decoder_lat.bias", vec![hd]));
        b.add(
            s.vocab,
            hd,
            uniform(hd),
            one("decoder_fc.weight", vec![s.vocab, hd]),
        );
        b.add(
            1,
            s.vocab,
            uniform(hd),
            one("decoder_fc.bias", vec![s.vocab]),
        );
        for l in 0..s.dec_layers {
            b.gru(
                "decoder_rnn",
                l,
                if l == 0 { s.dec_input() } else { hd },
                hd,
            );
        }
        let (slots, offset) = (b.slots, b.offset);
        let len = offset.max(ALIGN);
        if (len * 4) as u64 > gpu.binding_limit() {
            return Err(GpuError::Limit(format!(
                "the model's {:.1} M parameters take {} MiB, over the {} MiB the adapter binds at once",
                len as f64 / 1e6,
                (len * 4) >> 20,
                gpu.binding_limit() >> 20
            )));
        }
        let [values, grads, m, v] = crate::graph::params::flat_buffers(gpu, len);
        let params = GruParams {
            spec,
            values,
            grads,
            m,
            v,
            slots,
            len,
        };
        let mut rng = Rng::new(seed);
        let mut host = vec![0f32; len];
        for slot in &params.slots {
            for r in 0..slot.rows {
                for c in 0..slot.cols {
                    host[slot.offset + r * round_up4(slot.cols) + c] = match slot.init {
                        Init::Uniform(b) => rng.uniform(-b, b) as f32,
                        Init::Embedding if slot.rows == slot.cols => f32::from(u8::from(r == c)),
                        Init::Embedding => rng.normal() as f32,
                    };
                }
            }
        }
        gpu.queue
            .write_buffer(&params.values, 0, bytemuck::cast_slice(&host));
        Ok(params)
    }

    /// Slot `i` as a matrix of `buffer` (values, grads, m, v).
    pub fn view(&self, buffer: &wgpu::Buffer, i: usize) -> Matrix {
        let s = &self.slots[i];
        Matrix {
            buffer: buffer.clone(),
            offset: (s.offset * 4) as u64,
            rows: s.rows,
            cols: s.cols,
            ld: round_up4(s.cols),
        }
    }

    /// The whole buffer as one matrix.
    pub fn flat(&self, buffer: &wgpu::Buffer) -> Matrix {
        Matrix {
            buffer: buffer.clone(),
            offset: 0,
            rows: 1,
            cols: self.len,
            ld: self.len,
        }
    }

    /// Parameters in all.
    pub fn parameter_count(&self) -> usize {
        self.slots.iter().map(|s| s.rows * s.cols).sum()
    }

    /// Every checkpoint tensor's (name, shape, flat indices), in slot order.
    pub fn layout(&self) -> Vec<(String, Vec<usize>, Vec<usize>)> {
        let mut out = Vec::new();
        for s in &self.slots {
            let ld = round_up4(s.cols);
            let mut dense =
                (0..s.rows).flat_map(|r| (0..s.cols).map(move |c| s.offset + r * ld + c));
            for (name, shape) in &s.parts {
                let n = shape.iter().product();
                out.push((
                    name.clone(),
                    shape.clone(),
                    dense.by_ref().take(n).collect(),
                ));
            }
        }
        out
    }

    /// The tensors of `buffer` (values, or another laid out alike) under their names.
    pub fn tensors_of(&self, gpu: &Gpu, buffer: &wgpu::Buffer) -> Result<Vec<Tensor>, GpuError> {
        let flat = self.flat(buffer).read(gpu)?;
        Ok(self
            .layout()
            .into_iter()
            .map(|(name, shape, idx)| Tensor {
                name,
                shape,
                data: idx.iter().map(|&i| flat[i]).collect(),
            })
            .collect())
    }

    /// Writes `tensors` (by name) into `buffer`: every tensor of the model, with its shape,
    /// and nothing else; the error names the first that differs.
    pub fn set_tensors(
        &self,
        gpu: &Gpu,
        buffer: &wgpu::Buffer,
        mut tensors: std::collections::BTreeMap<String, Tensor>,
    ) -> Result<(), String> {
        let mut flat = vec![0f32; self.len];
        for (name, shape, idx) in self.layout() {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| format!("tensor {name} is missing (expected shape {shape:?})"))?;
            if t.shape != shape {
                return Err(format!(
                    "tensor {name} has shape {:?}, the model needs {shape:?}",
                    t.shape
                ));
            }
            for (&i, &v) in idx.iter().zip(&t.data) {
                flat[i] = v;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(format!("tensor {extra} is not one of the sequence model's"));
        }
        gpu.queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(&flat));
        Ok(())
    }
}
