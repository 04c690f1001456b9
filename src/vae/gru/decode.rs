//! Generation with the sequence VAE: codes z (from the prior, or an encoder's means) decoded
//! token by token on the GPU, every step of a batch in one submit: at step t the decoder
//! reads [embedding of token t ; z], runs each layer one step, and `next_token` picks token
//! t + 1 (a draw at a temperature, or the likeliest), padding after an end.

use super::GruParams;
use crate::data::sequence::Vocab;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};
use crate::ops::gemm::{gemm, GemmSpec};
use crate::ops::gru::{gru_forward, step_rows, GruLayer};
use crate::ops::sample::Noise;
use crate::ops::sequence::{embed, next_token, repeat, Ends, TokenDispatch};

/// A compiled generation for `records` sequences of up to `max_tokens` tokens.
pub struct GruDecoder {
    pub records: usize,
    pub rows: usize,
    /// The codes [rows, Z], written by the caller before `run`.
    pub z: Matrix,
    /// Time-major ids [(max_tokens + 2) * rows]: begin, then each step's pick.
    tokens: Matrix,
    /// The codes' spread into the input, each layer's initial state.
    start: Vec<Dispatch>,
    /// Per step: its launches, then the pick of its next token.
    steps: Vec<(Vec<Dispatch>, TokenDispatch)>,
}

impl GruDecoder {
    /// Generation of `records` sequences, each up to `max_tokens` tokens and its end, drawn at
    /// `temperature` (0: the likeliest token each step) with `noise`.
    pub fn new(
        gpu: &Gpu,
        p: &GruParams,
        vocab: &Vocab,
        records: usize,
        max_tokens: usize,
        temperature: f32,
        noise: Noise,
    ) -> Result<GruDecoder, GpuError> {
        let s = p.spec;
        let rows = step_rows(gpu, records);
        let steps = max_tokens + 1;
        let w = |i| p.of(&p.params.values, i);
        let (table, lat, fc) = (&w(p.nodes.embed)[0], w(p.nodes.latent), w(p.nodes.output));
        let trans_b = GemmSpec {
            trans_b: true,
            ..GemmSpec::default()
        };
        let z = Matrix::zeros(gpu, rows, s.latent, "codes")?;
        let mut begin = vec![vocab.bos(); rows];
        begin.resize((steps + 1) * rows, vocab.pad());
        let tokens = Matrix::from_slice(
            gpu,
            1,
            begin.len(),
            bytemuck::cast_slice(&begin),
            "generated tokens",
        )?;
        let lengths = Matrix::from_slice(
            gpu,
            1,
            rows,
            bytemuck::cast_slice(&vec![u32::MAX; rows]),
            "lengths",
        )?;
        let x = Matrix::zeros(gpu, rows, s.dec_input(), "decoder input")?;
        let gi = Matrix::zeros(gpu, rows, 3 * s.dec_hidden, "gi")?;
        let gh = Matrix::zeros(gpu, rows, 3 * s.dec_hidden, "gh")?;
        let states: Vec<Matrix> = (0..s.dec_layers)
            .map(|_| Matrix::zeros(gpu, (steps + 1) * rows, s.dec_hidden, "decoder states"))
            .collect::<Result<_, _>>()?;
        let logits = Matrix::zeros(gpu, rows, s.vocab, "logits")?;
        let mut start = vec![repeat(gpu, &z, &x, s.embed)?];
        for st in &states {
            start.push(gemm(
                gpu,
                &z,
                &lat[0],
                &st.rows_view(0, rows)?,
                Some(&lat[1]),
                trans_b,
            )?);
        }
        let ends = Ends {
            eos: vocab.eos(),
            pad: vocab.pad(),
        };
        let mut per_step = Vec::new();
        for t in 0..steps {
            let mut launches = vec![embed(gpu, &tokens.buffer, t * rows, table, &x, 0)?];
            for (l, st) in states.iter().enumerate() {
                let input = if l == 0 {
                    x.clone()
                } else {
                    states[l - 1].rows_view((t + 1) * rows, rows)?
                };
                let layer = w(p.nodes.decoder[l]);
                let view = st.rows_view(t * rows, 2 * rows)?;
                launches.extend(gru_forward(
                    gpu,
                    &GruLayer {
                        steps: 1,
                        batch: rows,
                        x: &input,
                        w_ih: &layer[0],
                        w_hh: &layer[1],
                        b_ih: &layer[2],
                        b_hh: &layer[3],
                        gi: std::slice::from_ref(&gi),
                        gh: std::slice::from_ref(&gh),
                        states: &view,
                        lengths: &lengths.buffer,
                    },
                )?);
            }
            let top = states[s.dec_layers - 1].rows_view((t + 1) * rows, rows)?;
            launches.push(gemm(gpu, &top, &fc[0], &logits, Some(&fc[1]), trans_b)?);
            let pick = next_token(gpu, &logits, &tokens.buffer, t, ends, noise, temperature)?;
            per_step.push((launches, pick));
        }
        Ok(GruDecoder {
            records,
            rows,
            z,
            tokens,
            start,
            steps: per_step,
        })
    }

    /// Runs the generation from the codes in `z` and returns each record's token ids after
    /// the begin token (up to its end, which is included when drawn).
    pub fn run(&self, gpu: &Gpu) -> Result<Vec<Vec<u32>>, GpuError> {
        let mut all: Vec<&Dispatch> = self.start.iter().collect();
        for (launches, pick) in &self.steps {
            all.extend(launches);
            all.push(&pick.dispatch);
        }
        gpu.run(&all)?;
        let values = self.tokens.read(gpu)?;
        let ids: &[u32] = bytemuck::cast_slice(&values);
        Ok((0..self.records)
            .map(|b| {
                (1..=self.steps.len())
                    .map(|t| ids[t * self.rows + b])
                    .collect()
            })
            .collect())
    }

    /// Draws with `noise` from here on (a new batch).
    pub fn set_noise(&mut self, gpu: &Gpu, noise: Noise) {
        self.steps
            .iter_mut()
            .for_each(|(_, p)| p.set_noise(gpu, noise));
    }
}
