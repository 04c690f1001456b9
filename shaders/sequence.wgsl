// Rows repeated, and their gradients summed back:
//   embed:  out[p, col + j] = table[token[start + p], j]  (a token past the table gives zeros)
//   repeat: out[p, col + j] = src[start + (p / group) mod batch, j]: a per-record vector at
//           every step of time-major rows (group 1; row t * batch + b is record b's step t:
//           the decoder's z beside each token's embedding), over each record's `group`
//           consecutive rows (batch = the records: an importance-weighted step's samples
//           sharing the encoder's output), or with batch 1 one row of src everywhere (an
//           image's posterior for each of its importance samples)
// The gradients sum over the rows that read each value: over the positions holding a token
// (an embedding's scatter-add, written as a gather per table entry so that no two
// invocations write one value and the sum's order is fixed), and over a record's rows,
// row t of record b being t * stride + b * group (stride = batch for time-major rows, 1 for
// consecutive ones). A gradient loop covers `count` rows from `start` (the launcher splits
// long sums into launches that accumulate, since llvmpipe stops loops of more than 65535
// iterations).

struct SeqParams {
    // invocations
    n: u32,
    // values per row moved (embedding width, or the repeated vector's width)
    width: u32,
    // the wide matrix's row stride and first column
    ld: u32,
    col: u32,
    // the table's (or the repeated matrix's) row stride
    lds: u32,
    batch: u32,
    // rows a gradient sums over: from start, count of them (embed: the first token read;
    // repeat: the first source row)
    start: u32,
    count: u32,
    // table rows
    vocab: u32,
    accumulate: u32,
    // repeat: rows of one record side by side, and the distance between its rows
    group: u32,
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: SeqParams;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn embed_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let r = udiv(i, p.width);
    let j = i - r * p.width;
    let t = tokens[p.start + r];
    var v = 0.0;
    if (t < p.vocab) { v = src[t * p.lds + j]; }
    dst[r * p.ld + p.col + j] = v;
}

@compute @workgroup_size(256)
fn embed_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let v = udiv(i, p.width);
    let j = i - v * p.width;
    var s = 0.0;
    for (var r = p.start; r < p.start + p.count; r++) {
        if (tokens[r] == v) { s += src[r * p.ld + p.col + j]; }
    }
    let o = v * p.lds + j;
    if (p.accumulate != 0u) { s += dst[o]; }
    dst[o] = s;
}

@compute @workgroup_size(256)
fn repeat_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let r = udiv(i, p.width);
    let j = i - r * p.width;
    let q = udiv(r, p.group);
    let b = q - udiv(q, p.batch) * p.batch;
    dst[r * p.ld + p.col + j] = src[(p.start + b) * p.lds + j];
}

@compute @workgroup_size(256)
fn repeat_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let b = udiv(i, p.width);
    let j = i - b * p.width;
    var s = 0.0;
    for (var t = p.start; t < p.start + p.count; t++) {
        s += src[(t * p.stride + b * p.group) * p.ld + p.col + j];
    }
    let o = b * p.lds + j;
    if (p.accumulate != 0u) { s += dst[o]; }
    dst[o] = s;
}
