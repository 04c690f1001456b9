// A GRU layer's cell, one time step of a batch, as PyTorch's nn.GRU computes it (gate order
// r, z, n):
//   r = sigmoid(gi_r + gh_r)   z = sigmoid(gi_z + gh_z)   n = tanh(gi_n + r * gh_n)
//   h = (1 - z) * n + z * h_prev
// where gi = x W_ih^T + b_ih (all steps in one GEMM before the loop) and gh = h_prev W_hh^T
// + b_hh (one GEMM per step, before this kernel). One invocation per (record, unit) handles
// that unit's three gates. Time-major matrices: step t's rows are t * batch .. (t + 1) * batch.
//
// A record whose sequence has ended (t >= its length) carries its state unchanged, so the
// last step's state is each record's state at its own last token (as a packed sequence gives)
// and its gradient passes through the padded steps untouched.
//
// The backward recomputes the gates from gi and gh (nothing else is stored per step), adds the
// gradient arriving from the layer's output at step t (dy) to the one carried back from step
// t + 1 (carry), writes d gi and d gh for the step, and leaves in carry the part of d h_prev
// that does not go through W_hh: dh * z. The GEMM after it adds d gh W_hh.

struct GruParams {
    batch: u32,
    hidden: u32,
    // row strides of gi / gh (and their gradients), of the states, of dy
    ld3: u32,
    ldh: u32,
    lddy: u32,
    step: u32,
    // element offsets of step t's rows in gi / gh, of h_prev and h in `states`, of dy
    off3: u32,
    prev: u32,
    out: u32,
    offdy: u32,
    // whether carry holds a gradient yet (0 on the first backward step without a final-state
    // gradient), whether dy is bound
    carry_in: u32,
    has_dy: u32,
}

@group(0) @binding(0) var<uniform> p: GruParams;
@group(0) @binding(1) var<storage, read> gi: array<f32>;
@group(0) @binding(2) var<storage, read> gh: array<f32>;
@group(0) @binding(3) var<storage, read_write> states: array<f32>;
@group(0) @binding(4) var<storage, read> lengths: array<u32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> carry: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgi: array<f32>;
@group(0) @binding(8) var<storage, read_write> dgh: array<f32>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// tanh without overflow: exp of a large argument is inf in f32.
fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

@compute @workgroup_size(256)
fn gru_cell_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.hidden) { return; }
    let b = udiv(i, p.hidden);
    let j = i - b * p.hidden;
    let hp = states[p.prev + b * p.ldh + j];
    var h = hp;
    if (p.step < lengths[b]) {
        let g = p.off3 + b * p.ld3 + j;
        let r = sigmoid(gi[g] + gh[g]);
        let z = sigmoid(gi[g + p.hidden] + gh[g + p.hidden]);
        let n = tanh_safe(gi[g + 2u * p.hidden] + r * gh[g + 2u * p.hidden]);
        h = (1.0 - z) * n + z * hp;
    }
    states[p.out + b * p.ldh + j] = h;
}

@compute @workgroup_size(256)
fn gru_cell_backward_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.hidden) { return; }
    let b = udiv(i, p.hidden);
    let j = i - b * p.hidden;
    let c = b * p.ldh + j;
    var dh = 0.0;
    if (p.carry_in != 0u) { dh = carry[c]; }
    if (p.has_dy != 0u) { dh += dy[p.offdy + b * p.lddy + j]; }
    let g = p.off3 + b * p.ld3 + j;
    if (p.step >= lengths[b]) {
        carry[c] = dh;
        for (var k = 0u; k < 3u; k++) {
            dgi[g + k * p.hidden] = 0.0;
            dgh[g + k * p.hidden] = 0.0;
        }
        return;
    }
    let hp = states[p.prev + c];
    let r = sigmoid(gi[g] + gh[g]);
    let z = sigmoid(gi[g + p.hidden] + gh[g + p.hidden]);
    let ghn = gh[g + 2u * p.hidden];
    let n = tanh_safe(gi[g + 2u * p.hidden] + r * ghn);
    let da_n = dh * (1.0 - z) * (1.0 - n * n);
    let da_z = dh * (hp - n) * z * (1.0 - z);
    let da_r = da_n * ghn * r * (1.0 - r);
    dgi[g] = da_r;
    dgi[g + p.hidden] = da_z;
    dgi[g + 2u * p.hidden] = da_n;
    dgh[g] = da_r;
    dgh[g + p.hidden] = da_z;
    dgh[g + 2u * p.hidden] = da_n * r;
    carry[c] = dh * z;
}
