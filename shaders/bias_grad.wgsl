// The bias gradient db[n] = sum over rows of dy[r, n] ([rows, cols], row stride ld, a
// multiple of 4 with zero padding), in two launches without workgroup barriers (on CPU
// drivers a barrier switches between coroutines, one per 8 invocations):
//   bias_partial_main: one invocation per ROWS rows and 4 columns sums them into `partial`
//     [chunks, cols4], reading dy through read_a (reads_buffer.wgsl or reads_texture.wgsl);
//   bias_sum_main: one invocation per 4 columns adds the chunks and writes db.

struct BiasParams {
    rows: u32,
    cols: u32,
    ld: u32,
    chunks: u32,
}

// Rows per invocation of bias_partial_main.
const ROWS: u32 = 64u;

@group(0) @binding(0) var<uniform> p: BiasParams;
@group(0) @binding(1) var<storage, read_write> partial: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(256)
fn bias_partial_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    let cols4 = p.ld >> 2u;
    if (i >= p.chunks * cols4) { return; }
    let c4 = i % cols4;
    let r0 = (i / cols4) * ROWS;
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
    let c4 = flat_index(wg, nwg, lid);
    let cols4 = p.ld >> 2u;
    if (c4 >= cols4) { return; }
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < p.chunks; c++) {
        s += partial[c * cols4 + c4];
    }
    let n = c4 * 4u;
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.cols) { db[n + j] = s[j]; }
    }
}
