//! The graph evaluated in f64 on the CPU from the kernels' twins and the checkpoint's
//! tensors (PyTorch's layouts), so that it checks the parameter layout too: the oracle of
//! the whole-model gradient checks. Images are [B, H, W, C] here as on the GPU.

use std::collections::BTreeMap;

use super::{Graph, Op, TensorId};
use crate::cpu;
use crate::ops::conv::Shape;
use crate::ops::gemm::GemmSpec;

/// (c, h, w) order of one sample from (h, w, c), or back (`to_chw` false).
fn permute(v: &[f64], s: Shape, to_chw: bool) -> Vec<f64> {
    let n = s.numel();
    let mut out = vec![0.0; v.len()];
    for b in 0..v.len() / n {
        for c in 0..s.c {
            for p in 0..s.h * s.w {
                let (hwc, chw) = (b * n + p * s.c + c, b * n + c * s.h * s.w + p);
                if to_chw {
                    out[chw] = v[hwc];
                } else {
                    out[hwc] = v[chw];
                }
            }
        }
    }
    out
}

/// Every tensor's value for a batch of `rows`: `x` [rows, numel], a conditional model's
/// `y` [rows, classes] (one-hot), `eps` the sampling noise of each sampled code [rows,
/// its size] (the code `g.z`'s, and with stacked layers theirs), `tensors` the parameters
/// by checkpoint name.
pub fn forward(
    g: &Graph,
    tensors: &BTreeMap<String, Vec<f64>>,
    (x, y): (&[f64], Option<&[f64]>),
    eps: &BTreeMap<TensorId, Vec<f64>>,
    rows: usize,
) -> Vec<Vec<f64>> {
    evaluate(g, tensors, (x, y), eps, rows, None)
}

/// A batch of sequences, time-major (step t of record b at row t * rows + b): the
/// encoder's ids `x`, the decoder's `tokens`, each record's length along each `Time` and
/// the steps.
pub struct SeqBatch<'a> {
    pub x: &'a [u32],
    pub tokens: &'a [u32],
    pub lengths: [&'a [usize]; 2],
    pub steps: [usize; 2],
}

/// `forward` for a sequence model over `rows` records per step.
pub fn forward_sequence(
    g: &Graph,
    tensors: &BTreeMap<String, Vec<f64>>,
    batch: &SeqBatch,
    eps: &BTreeMap<TensorId, Vec<f64>>,
    rows: usize,
) -> Vec<Vec<f64>> {
    let ids = |t: &[u32]| t.iter().map(|&i| f64::from(i)).collect::<Vec<f64>>();
    evaluate(g, tensors, (&ids(batch.x), None), eps, rows, Some(batch))
}

fn evaluate(
    g: &Graph,
    tensors: &BTreeMap<String, Vec<f64>>,
    (x, y): (&[f64], Option<&[f64]>),
    eps: &BTreeMap<TensorId, Vec<f64>>,
    rows: usize,
    seq: Option<&SeqBatch>,
) -> Vec<Vec<f64>> {
    let mut v: Vec<Vec<f64>> = vec![Vec::new(); g.shapes.len()];
    v[g.x] = x.to_vec();
    if let (Some(t), Some(y)) = (g.y, y) {
        v[t] = y.to_vec();
    }
    if let (Some(t), Some(s)) = (g.tokens, seq) {
        v[t] = s.tokens.iter().map(|&i| f64::from(i)).collect();
    }
    let steps = seq.map_or([1, 1], |s| s.steps);
    let get = |name: &str| {
        tensors
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .clone()
    };
    for n in &g.nodes {
        let input = |k: usize| -> &Vec<f64> { &v[n.inputs[k]] };
        let (si, so) = (g.shapes[n.inputs[0]], g.shapes[n.output]);
        // A sequence's rows are its steps.
        let rows_out = rows * g.steps_of(n.output, steps);
        let image = |s: Shape| s.h * s.w > 1;
        let out = match n.op {
            Op::Linear { act } => {
                let names: Vec<String> = if n.parts.is_empty() {
                    vec![n.name.clone()]
                } else {
                    n.parts.iter().map(|(p, _)| p.clone()).collect()
                };
                let w: Vec<f64> = names
                    .iter()
                    .flat_map(|p| get(&format!("{p}.weight")))
                    .collect();
                let b: Vec<f64> = names
                    .iter()
                    .flat_map(|p| get(&format!("{p}.bias")))
                    .collect();
                let xin = if image(si) {
                    permute(input(0), si, true)
                } else {
                    input(0).clone()
                };
                let mut y = vec![0.0; rows_out * so.numel()];
                let spec = GemmSpec {
                    trans_b: true,
                    act,
                    ..Default::default()
                };
                cpu::gemm::gemm(
                    &xin,
                    &w,
                    &mut y,
                    Some(&b),
                    rows_out,
                    so.numel(),
                    si.numel(),
                    &spec,
                );
                if image(so) {
                    permute(&y, so, false)
                } else {
                    y
                }
            }
            Op::Conv {
                k,
                stride,
                pad,
                act,
            }
            | Op::ConvT {
                k,
                stride,
                pad,
                act,
            } => {
                let w = get(&format!("{}.weight", n.name));
                let b = get(&format!("{}.bias", n.name));
                let conv = match n.op {
                    Op::Conv { .. } => cpu::conv::conv2d,
                    _ => cpu::conv::conv_transpose2d,
                };
                conv(input(0), si, rows, &w, &b, so.c, k, stride, pad, act).0
            }
            Op::GroupNorm { groups, act } => cpu::norm::group_norm(
                input(0),
                rows,
                si.h * si.w,
                si.c,
                groups,
                &get(&format!("{}.weight", n.name)),
                &get(&format!("{}.bias", n.name)),
                act,
            ),
            Op::Act(act) => input(0).iter().map(|&t| cpu::act_forward(t, act)).collect(),
            Op::Add => input(0).iter().zip(input(1)).map(|(a, b)| a + b).collect(),
            Op::Concat if g.time[n.inputs[1]] != g.time[n.inputs[0]] => {
                let c = g.shapes[n.inputs[1]].c;
                let repeated = cpu::sequence::repeat(input(1), c, rows_out);
                cpu::tensor::concat(input(0), si.c, &repeated, c)
            }
            Op::Concat => cpu::tensor::concat(input(0), si.c, input(1), g.shapes[n.inputs[1]].c),
            Op::Embed { .. } => {
                let ids: Vec<u32> = input(0).iter().map(|&i| i as u32).collect();
                cpu::sequence::embed(&ids, &get(&format!("{}.weight", n.name)), so.c)
            }
            Op::Gru { layer, last } => {
                let s = seq.expect("a sequence batch for a GRU");
                let time = g.time[n.inputs[0]].expect("a GRU over a sequence");
                let w: Vec<Vec<f64>> = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
                    .iter()
                    .map(|what| get(&format!("{}.{what}_l{layer}", n.name)))
                    .collect();
                let weights = cpu::gru::GruWeights {
                    w_ih: &w[0],
                    w_hh: &w[1],
                    b_ih: &w[2],
                    b_hh: &w[3],
                };
                let h = so.c;
                let h0 = match n.inputs.get(1) {
                    Some(&t) => v[t].clone(),
                    None => vec![0.0; rows * h],
                };
                let states =
                    cpu::gru::gru_forward(&weights, input(0), &h0, s.lengths[time as usize], h);
                let t = g.steps_of(n.inputs[0], steps);
                match last {
                    true => states[t * rows * h..].to_vec(),
                    false => states[rows * h..].to_vec(),
                }
            }
            Op::Upsample => cpu::tensor::upsample(input(0), rows, si.h, si.w, si.c),
            Op::Reshape => input(0).clone(),
            Op::Sample => {
                let z = so.c;
                let mulv = input(0);
                let eps = eps
                    .get(&n.output)
                    .unwrap_or_else(|| panic!("no noise for tensor {}", n.output));
                let mut zs = vec![0.0; rows * z];
                for r in 0..rows {
                    for j in 0..z {
                        let lv = mulv[r * 2 * z + z + j]
                            .clamp(cpu::sample::LOGVAR_MIN, cpu::sample::LOGVAR_MAX);
                        zs[r * z + j] = mulv[r * 2 * z + j] + (0.5 * lv).exp() * eps[r * z + j];
                    }
                }
                zs
            }
        };
        v[n.output] = out;
    }
    v
}

/// mu | logvar and the logits (tensors `g.mulv`, `g.logits`) of `forward`.
pub fn outputs(g: &Graph, values: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let pick = |t: TensorId| values[t].clone();
    (pick(g.mulv), pick(g.logits))
}
