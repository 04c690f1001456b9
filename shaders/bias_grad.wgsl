// The bias gradient db[n] = sum over rows of dy[r, n], in two launches without workgroup
// barriers (on CPU drivers a barrier switches between coroutines, one per 8 invocations).
// dy is read as `rows` rows of `width` floats (a multiple of 4): its own rows with their
// zero padding, or, for unpadded rows of fewer columns (a conv layer's 1 or 3 channels),
// runs of whole rows, so that column n of dy is every column n + k cols of the view.
//   bias_partial_main: one invocation per ROWS rows and 4 columns of the view sums them into
//     `partial` [chunks, width], reading through read_a (reads_buffer.wgsl or
//     reads_texture.wgsl);
//   bias_sum_main: one invocation per column of dy adds its chunks and view columns.

struct BiasParams {
    rows: u32,
    // dy's columns
    cols: u32,
    width: u32,
    chunks: u32,
}

// Rows per invocation of bias_partial_main.
const ROWS: u32 = 64u;

@group(0) @binding(0) var<uniform> p: BiasParams;
// [chunks, width], written as vec4 by the first launch and read as floats by the second
@group(0) @binding(1) var<storage, read_write> partial: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;
@group(0) @binding(3) var<storage, read> partial_sums: array<f32>;

@compute @workgroup_size(256)
fn bias_partial_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    let cols4 = p.width >> 2u;
    if (i >= p.chunks * cols4) { return; }
    let chunk = udiv(i, cols4);
    let c4 = i - chunk * cols4;
    let r0 = chunk * ROWS;
    let r1 = min(r0 + ROWS, p.rows);
    var s = vec4<f32>(0.0);
    for (var r = r0; r < r1; r++) {
        s += read_a(r * cols4 + c4);
    }
    partial[i] = s;
}

@compute @workgroup_size(256)
fn bias_sum_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = flat_index(wg, nwg, lid);
    if (n >= p.cols) { return; }
    var s = 0.0;
    for (var c = 0u; c < p.chunks; c++) {
        for (var col = n; col < p.width; col += p.cols) {
            s += partial_sums[c * p.width + col];
        }
    }
    db[n] = s;
}
