//! GRU layer twin (PyTorch's nn.GRU, gate order r, z, n), time-major: step t of record b is
//! row t * batch + b. A record whose length is reached keeps its state.

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A layer's weights, dense row-major: w_ih [3H, I], w_hh [3H, H], b_ih and b_hh [3H].
pub struct GruWeights<'a> {
    pub w_ih: &'a [f64],
    pub w_hh: &'a [f64],
    pub b_ih: &'a [f64],
    pub b_hh: &'a [f64],
}

/// The states [(steps + 1) * batch, H]: h0, then h_1 .. h_T, from inputs x [steps * batch, I].
pub fn gru_forward(
    w: &GruWeights,
    x: &[f64],
    h0: &[f64],
    lengths: &[usize],
    hidden: usize,
) -> Vec<f64> {
    let batch = lengths.len();
    let input = w.w_ih.len() / (3 * hidden);
    let steps = x.len() / (batch * input);
    let mut states = h0.to_vec();
    let project = |m: &[f64], bias: &[f64], v: &[f64], k: usize| -> f64 {
        bias[k]
            + m[k * v.len()..(k + 1) * v.len()]
                .iter()
                .zip(v)
                .map(|(a, b)| a * b)
                .sum::<f64>()
    };
    for t in 0..steps {
        for b in 0..batch {
            let xr = &x[(t * batch + b) * input..][..input];
            let hp = states[(t * batch + b) * hidden..][..hidden].to_vec();
            for j in 0..hidden {
                let h = if t < lengths[b] {
                    let gate = |g: usize| {
                        (
                            project(w.w_ih, w.b_ih, xr, g * hidden + j),
                            project(w.w_hh, w.b_hh, &hp, g * hidden + j),
                        )
                    };
                    let (ir, hr) = gate(0);
                    let (iz, hz) = gate(1);
                    let (inn, hn) = gate(2);
                    let r = sigmoid(ir + hr);
                    let z = sigmoid(iz + hz);
                    let n = (inn + r * hn).tanh();
                    (1.0 - z) * n + z * hp[j]
                } else {
                    hp[j]
                };
                states.push(h);
            }
        }
    }
    states
}
