// Running mean and variance of columns over batches of rows: each launch merges the first
// `rows` rows of x's columns col0 .. col0 + cols into state [cols] of (count, mean, M2),
// M2 the summed squared deviations (Chan et al.'s pairwise update, exact for any split of
// the rows into batches, and free of the cancellation of sum(x^2) - n mean^2). One
// invocation per column, looping over the rows twice (the batch's mean, then its M2);
// a batch has at most 32768 rows (under llvmpipe's loop limit of 65535 iterations).

struct MomentParams {
    rows: u32,
    cols: u32,
    ld: u32,
    col0: u32,
}

@group(0) @binding(0) var<uniform> p: MomentParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<vec4<f32>>;

@compute @workgroup_size(64)
fn moments_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (j >= p.cols || p.rows == 0u) { return; }
    var sum = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        sum += x[r * p.ld + p.col0 + j];
    }
    let nb = f32(p.rows);
    let mb = sum / nb;
    var m2b = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        let d = x[r * p.ld + p.col0 + j] - mb;
        m2b += d * d;
    }
    let s = state[j];
    let n = s.x + nb;
    let delta = mb - s.y;
    state[j] = vec4<f32>(n, s.y + delta * nb / n, s.z + m2b + delta * delta * s.x * nb / n, 0.0);
}
