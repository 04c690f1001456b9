// Softmax cross-entropy of a linear classifier's logits [rows, classes] against integer
// labels: per-row loss -log softmax(l)[label] and its gradient (softmax - onehot) * scale.
// Rows at or past `valid`, and rows whose label is not a class (a sequence's padding), get zero
// loss and gradient.

struct SoftmaxParams {
    rows: u32,
    valid: u32,
    classes: u32,
    ld: u32,
    scale: f32,
    offset: u32,
    // above 1: rows are time-major steps of sequences, and row t * records + b's loss goes to
    // b * steps + t
    steps: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

// The row's largest logit m and sum of exp(logit - m): its softmax without overflow.
fn max_and_sum(base: u32) -> vec2<f32> {
    var m = logits[base];
    for (var k = 1u; k < p.classes; k++) {
        m = max(m, logits[base + k]);
    }
    var s = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        s += exp(logits[base + k] - m);
    }
    return vec2<f32>(m, s);
}

@compute @workgroup_size(256)
fn softmax_xent_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = flat_index(wg, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.ld;
    let label = labels[p.offset + r];
    let live = r < p.valid && label < p.classes;
    let ms = max_and_sum(base);
    let m = ms.x;
    let s = ms.y;
    for (var k = 0u; k < p.classes; k++) {
        let prob = exp(logits[base + k] - m) / s;
        let g = (prob - select(0.0, 1.0, k == label)) * p.scale;
        grad[base + k] = select(0.0, g, live);
    }
    var at = r;
    if (p.steps > 1u) {
        let records = p.rows / p.steps;
        let t = udiv(r, records);
        at = (r - t * records) * p.steps + t;
    }
    loss[at] = select(0.0, m + log(s) - logits[base + min(label, p.classes - 1u)], live);
}

// Each row's softmax (into `grad`) and its log-sum-exp (into `loss`): the responsibilities
// and log-likelihoods of a mixture's E-step, whose logits are log pi_k + log N(x | k).
@compute @workgroup_size(256)
fn softmax_rows_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = flat_index(wg, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.ld;
    let ms = max_and_sum(base);
    let m = ms.x;
    let s = ms.y;
    for (var k = 0u; k < p.classes; k++) {
        grad[base + k] = exp(logits[base + k] - m) / s;
    }
    loss[r] = m + log(s);
}
