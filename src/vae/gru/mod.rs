//! The sequence VAE of MOSES (`moses/vae/model.py`; Gómez-Bombarelli et al. 2018 in its
//! common form): token embeddings, a GRU encoder whose last state gives mu and logvar, and a
//! GRU decoder fed [embedding ; z] at every step, its initial state a Linear of z in every
//! layer, then a Linear to the vocabulary. Its parameters live in one flat buffer (one Adam
//! launch, one clipping) under MOSES's state_dict names; `step` compiles a training or
//! evaluation step into one launch list, `decode` generates.
//!
//! The model is a graph (`GruSpec::graph`) of sequence tensors, time-major as the
//! recurrent kernels read them (see `graph::Time`); `step` compiles it with the loss,
//! clipping and Adam. Generation runs the decoder's nodes one token at a time with their
//! own launches (`decode`): each step's state feeds the next, which a graph pass does not.

pub mod decode;
pub mod step;
pub mod train;

use crate::gpu::{Gpu, GpuError, Matrix};
use crate::graph::{flat, Builder, Graph, GraphError, Op, Params};

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

/// The model's nodes by role (indices into its graph's nodes).
#[derive(Clone, Debug)]
pub struct GruNodes {
    pub embed: usize,
    pub latent: usize,
    pub decoder: Vec<usize>,
    pub output: usize,
}

/// The model's graph (see the module's doc) and its parameters, under MOSES's state_dict
/// names, in the graph's flat buffers.
pub struct GruParams {
    pub spec: GruSpec,
    pub params: Params,
    pub nodes: GruNodes,
}

impl GruSpec {
    /// The model as a graph: x holds the encoder's ids, `tokens` the decoder's.
    pub fn graph(&self) -> Result<Graph, GraphError> {
        let s = self;
        let mut b = Builder::sequence();
        let x = b.embed(Builder::INPUT, (s.vocab, s.embed), "x_emb", "embedding")?;
        let last = b.gru((x, None), s.enc_hidden, (0, true), "encoder_rnn", "encoder")?;
        let heads = vec![("q_mu".into(), s.latent), ("q_logvar".into(), s.latent)];
        let z = b.heads(last, s.latent, "q", heads, "heads q_mu | q_logvar")?;
        let h0 = b.linear(z, flat(s.dec_hidden), "decoder_lat", "decoder_lat")?;
        let tokens = b.tokens().expect("a sequence graph");
        let e = b.embed(tokens, (s.vocab, s.embed), "x_emb", "decoder embedding")?;
        let mut y = b.concat(e, z, "decoder input [embedding ; z]")?;
        for l in 0..s.dec_layers {
            let label = format!("decoder layer {l}");
            y = b.gru(
                (y, Some(h0)),
                s.dec_hidden,
                (l, false),
                "decoder_rnn",
                &label,
            )?;
        }
        let logits = b.linear(y, flat(s.vocab), "decoder_fc", "decoder_fc")?;
        b.finish(logits, s.vocab, "decoder")
    }
}

impl GruParams {
    /// The buffers, initialised from `seed` like PyTorch's layers: GRU and Linear weights
    /// and biases uniform in +-1/sqrt(fan_in) (a GRU's fan_in is its hidden size), the
    /// embedding one-hot when it is as wide as the vocabulary (MOSES), else N(0, 1).
    pub fn new(gpu: &Gpu, spec: GruSpec, seed: u64) -> Result<GruParams, GpuError> {
        spec.check().map_err(GpuError::Shape)?;
        let graph = spec.graph().map_err(|e| GpuError::Shape(e.to_string()))?;
        let find = |want: &dyn Fn(&crate::graph::Node) -> bool| {
            graph
                .nodes
                .iter()
                .position(want)
                .expect("a node of the model")
        };
        let nodes = GruNodes {
            embed: find(&|n| matches!(n.op, Op::Embed { .. })),
            latent: find(&|n| n.name == "decoder_lat"),
            decoder: (0..spec.dec_layers)
                .map(|l| {
                    find(&|n| {
                        n.op == Op::Gru {
                            layer: l,
                            last: false,
                        }
                    })
                })
                .collect(),
            output: graph.producer(graph.logits).expect("the logits' layer"),
        };
        let params = Params::new(gpu, &graph, seed)?;
        Ok(GruParams {
            spec,
            params,
            nodes,
        })
    }

    /// Node `i`'s parameters in `buffer` (values, grads), as `graph::ops::param_dims`
    /// orders them.
    pub fn of(&self, buffer: &wgpu::Buffer, i: usize) -> Vec<Matrix> {
        self.params.all_of(buffer, i)
    }

    /// Parameters in all.
    pub fn parameter_count(&self) -> usize {
        self.params.graph.parameter_count()
    }

    /// Each parameter's float offset in the flat buffers of runs saved before the model was
    /// a graph (`LAUNCH_LIST_LAYOUT`): the embedding, the encoder, the heads, decoder_lat,
    /// decoder_fc, then the decoder's layers, each at the next 64-float boundary.
    pub fn launch_list_offsets(&self) -> Vec<(String, usize)> {
        let gru = |name: &str, l: usize| {
            ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|w| format!("{name}.{w}_l{l}"))
        };
        let mut names = vec!["x_emb.weight".to_string()];
        names.extend(gru("encoder_rnn", 0));
        for layer in ["q", "decoder_lat", "decoder_fc"] {
            names.extend(["weight", "bias"].map(|w| format!("{layer}.{w}")));
        }
        (0..self.spec.dec_layers).for_each(|l| names.extend(gru("decoder_rnn", l)));
        let mut offset = 0;
        names
            .into_iter()
            .map(|name| {
                let s = self.slot(&name);
                let at = offset;
                offset += (s.rows * s.ld()).div_ceil(64) * 64;
                (name, at)
            })
            .collect()
    }

    fn slot(&self, name: &str) -> &crate::graph::params::Slot {
        self.params
            .slots
            .iter()
            .flatten()
            .find(|s| s.name == name)
            .expect("a parameter of the model")
    }

    /// Moves Adam's moments, loaded as a run saved in the launch list's order holds them
    /// (see `launch_list_offsets`), to where the graph keeps them.
    pub fn moments_from_launch_list(&self, gpu: &Gpu) -> Result<(), GpuError> {
        for buffer in [&self.params.m, &self.params.v] {
            let old = self.params.flat(buffer).read(gpu)?;
            let mut new = vec![0f32; self.params.len];
            for (name, at) in self.launch_list_offsets() {
                let s = self.slot(&name);
                let n = s.rows * s.ld();
                new[s.offset..s.offset + n].copy_from_slice(&old[at..at + n]);
            }
            gpu.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(&new));
        }
        Ok(())
    }
}
