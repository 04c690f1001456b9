//! GRU layer twin (PyTorch's nn.GRU, gate order r, z, n), time-major: step t of record b is
//! row t * batch + b. A record whose length is reached keeps its state.

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Row k of the row-major matrix `m` (as wide as `v`) times `v`, plus `bias[k]`.
fn project(m: &[f64], bias: &[f64], v: &[f64], k: usize) -> f64 {
    bias[k]
        + m[k * v.len()..(k + 1) * v.len()]
            .iter()
            .zip(v)
            .map(|(a, b)| a * b)
            .sum::<f64>()
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

/// The layer's gradients (`gru_backward`), shaped as its inputs and weights.
pub struct GruGradients {
    pub dx: Vec<f64>,
    pub dh0: Vec<f64>,
    pub dw_ih: Vec<f64>,
    pub dw_hh: Vec<f64>,
    pub db_ih: Vec<f64>,
    pub db_hh: Vec<f64>,
}

/// Backpropagation through time of `gru_forward`: the gradients of a loss whose gradient
/// is `dy` [steps * batch, H] with respect to h_1 .. h_T and `dfinal` [batch, H] with respect
/// to the last state (either may be absent), given the forward's `states`. A record past its
/// length passes its state's gradient back unchanged.
pub fn gru_backward(
    w: &GruWeights,
    (x, states, lengths): (&[f64], &[f64], &[usize]),
    hidden: usize,
    (dy, dfinal): (Option<&[f64]>, Option<&[f64]>),
) -> GruGradients {
    let (batch, h) = (lengths.len(), hidden);
    let input = w.w_ih.len() / (3 * h);
    let steps = x.len() / (batch * input);
    let mut g = GruGradients {
        dx: vec![0.0; x.len()],
        dh0: vec![0.0; batch * h],
        dw_ih: vec![0.0; w.w_ih.len()],
        dw_hh: vec![0.0; w.w_hh.len()],
        db_ih: vec![0.0; 3 * h],
        db_hh: vec![0.0; 3 * h],
    };
    // The gradient reaching each record's current state, from the last step down.
    let mut carry = dfinal.map_or(vec![0.0; batch * h], <[f64]>::to_vec);
    for t in (0..steps).rev() {
        for b in 0..batch {
            let at = t * batch + b;
            let mut dh = carry[b * h..(b + 1) * h].to_vec();
            if let Some(dy) = dy {
                dh.iter_mut().zip(&dy[at * h..]).for_each(|(d, g)| *d += g);
            }
            if t >= lengths[b] {
                carry[b * h..(b + 1) * h].copy_from_slice(&dh);
                continue;
            }
            let xr = &x[at * input..][..input];
            let hp = &states[at * h..][..h];
            // Gate pre-activations' gradients: d gi (r, z, n) and d gh (r, z, r * d n).
            let (mut dgi, mut dgh) = (vec![0.0; 3 * h], vec![0.0; 3 * h]);
            let mut dhp = vec![0.0; h];
            for j in 0..h {
                let gate = |g: usize| {
                    (
                        project(w.w_ih, w.b_ih, xr, g * h + j),
                        project(w.w_hh, w.b_hh, hp, g * h + j),
                    )
                };
                let ((ir, hr), (iz, hz), (inn, hn)) = (gate(0), gate(1), gate(2));
                let (r, z) = (sigmoid(ir + hr), sigmoid(iz + hz));
                let n = (inn + r * hn).tanh();
                let dn = dh[j] * (1.0 - z) * (1.0 - n * n);
                let dz = dh[j] * (hp[j] - n) * z * (1.0 - z);
                let dr = dn * hn * r * (1.0 - r);
                dhp[j] = dh[j] * z;
                dgi[j] = dr;
                dgi[h + j] = dz;
                dgi[2 * h + j] = dn;
                dgh[j] = dr;
                dgh[h + j] = dz;
                dgh[2 * h + j] = dn * r;
            }
            // dx += W_ih^T dgi, dhp += W_hh^T dgh; the weights gather the outer products.
            let dx = &mut g.dx[at * input..(at + 1) * input];
            for k in 0..3 * h {
                let (wi, dwi) = (&w.w_ih[k * input..], &mut g.dw_ih[k * input..]);
                for (i, (d, &v)) in dx.iter_mut().zip(xr).enumerate() {
                    *d += wi[i] * dgi[k];
                    dwi[i] += dgi[k] * v;
                }
                let (wh, dwh) = (&w.w_hh[k * h..], &mut g.dw_hh[k * h..]);
                for (i, (d, &v)) in dhp.iter_mut().zip(hp).enumerate() {
                    *d += wh[i] * dgh[k];
                    dwh[i] += dgh[k] * v;
                }
                g.db_ih[k] += dgi[k];
                g.db_hh[k] += dgh[k];
            }
            carry[b * h..(b + 1) * h].copy_from_slice(&dhp);
        }
    }
    g.dh0 = carry;
    g
}
