// A record's values over its K consecutive rows (an importance-weighted training step's
// samples of a record share the encoder's output) and the gradient's way back:
//   repeat_records_main: dst[r, j] = src[r / K, j]
//   sum_records_main:    dst[b, j] = sum over i < K of src[b K + i, j]
// K is at most 5000 (`--iwae-k`), inside llvmpipe's loop limit of 65535 iterations.

struct RecordParams {
    // invocations: dst's rows x cols
    n: u32,
    k: u32,
    cols: u32,
    ld_src: u32,
    ld_dst: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: RecordParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn repeat_records_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let r = udiv(i, p.cols);
    let j = i - r * p.cols;
    dst[r * p.ld_dst + j] = src[udiv(r, p.k) * p.ld_src + j];
}

@compute @workgroup_size(256)
fn sum_records_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let b = udiv(i, p.cols);
    let j = i - b * p.cols;
    var s = 0.0;
    for (var t = 0u; t < p.k; t++) {
        s += src[(b * p.k + t) * p.ld_src + j];
    }
    dst[b * p.ld_dst + j] = s;
}
