// GEMM for CPU drivers with 8-wide subgroups (lavapipe), A and B read from textures
// (gemm_textures.wgsl). The scheme of gemm_subgroup.wgsl: each value of A is loaded by one
// lane and handed to the other seven with subgroupBroadcast; here each lane keeps 32 rows x
// 8 columns of C (columns 4l..4l+3 and 32+4l..32+4l+3), so a workgroup (one subgroup)
// covers 32 x 64. Every array index is a constant after inlining, which keeps the
// accumulators in registers. Without WIDE a lane keeps only the low 4 columns (32 x 32 per
// workgroup): less reuse of A, but half the wasted work where N is just over a multiple
// of 64 (the narrow convolutions' 16 and 32 channels).

override WIDE: bool = true;

// acc[2 r] and acc[2 r + 1]: row r, the low and the high four columns.
alias Acc = array<vec4<f32>, 64>;
// Rows k0..k0+3 of op(B) at four columns.
alias BBlock = array<vec4<f32>, 4>;

// Zero the lanes of a vec4 over k0..k0+3 that lie past K.
fn mask_k(v: vec4<f32>, k0: u32) -> vec4<f32> {
    let kk = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
}

// Rows k0..k0+3 of op(B), columns n0..n0+3 (reads past K or N are clamped to valid memory;
// A is zeroed past K and columns past N are never stored).
fn b_block(n0: u32, k0: u32) -> BBlock {
    var bk: BBlock;
    if (TRANS_B) {
        let nmax = p.n - 1u;
        let t0 = ldb4(min(n0, nmax), k0 >> 2u);
        let t1 = ldb4(min(n0 + 1u, nmax), k0 >> 2u);
        let t2 = ldb4(min(n0 + 2u, nmax), k0 >> 2u);
        let t3 = ldb4(min(n0 + 3u, nmax), k0 >> 2u);
        bk[0] = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
        bk[1] = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
        bk[2] = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
        bk[3] = vec4<f32>(t0.w, t1.w, t2.w, t3.w);
    } else {
        let kmax = p.k - 1u;
        let nc = min(n0, p.ldb - 4u) >> 2u;
        bk[0] = ldb4(k0, nc);
        bk[1] = ldb4(min(k0 + 1u, kmax), nc);
        bk[2] = ldb4(min(k0 + 2u, kmax), nc);
        bk[3] = ldb4(min(k0 + 3u, kmax), nc);
    }
    return bk;
}

// Row r of C += av . op(B): av holds row r of op(A) over four k.
fn row_update(acc: ptr<function, Acc>, r: u32, av: vec4<f32>, lo: BBlock, hi: BBlock) {
    (*acc)[2u * r] += av.x * lo[0] + av.y * lo[1] + av.z * lo[2] + av.w * lo[3];
    if (WIDE) {
        (*acc)[2u * r + 1u] += av.x * hi[0] + av.y * hi[1] + av.z * hi[2] + av.w * hi[3];
    }
}

// Lane l holds row base + l of op(A) over four k.
fn rows_normal(acc: ptr<function, Acc>, base: u32, av: vec4<f32>, lo: BBlock, hi: BBlock) {
    row_update(acc, base + 0u, subgroupBroadcast(av, 0u), lo, hi);
    row_update(acc, base + 1u, subgroupBroadcast(av, 1u), lo, hi);
    row_update(acc, base + 2u, subgroupBroadcast(av, 2u), lo, hi);
    row_update(acc, base + 3u, subgroupBroadcast(av, 3u), lo, hi);
    row_update(acc, base + 4u, subgroupBroadcast(av, 4u), lo, hi);
    row_update(acc, base + 5u, subgroupBroadcast(av, 5u), lo, hi);
    row_update(acc, base + 6u, subgroupBroadcast(av, 6u), lo, hi);
    row_update(acc, base + 7u, subgroupBroadcast(av, 7u), lo, hi);
}

// Lane l holds rows base + (l / 4) * 4 .. +3 of op(A) at k0 + l % 4: each accumulator takes
// its four k terms at once.
fn rows_trans(acc: ptr<function, Acc>, base: u32, av: vec4<f32>, lo: BBlock, hi: BBlock) {
    let k0 = subgroupBroadcast(av, 0u);
    let k1 = subgroupBroadcast(av, 1u);
    let k2 = subgroupBroadcast(av, 2u);
    let k3 = subgroupBroadcast(av, 3u);
    row_update(acc, base + 0u, vec4<f32>(k0.x, k1.x, k2.x, k3.x), lo, hi);
    row_update(acc, base + 1u, vec4<f32>(k0.y, k1.y, k2.y, k3.y), lo, hi);
    row_update(acc, base + 2u, vec4<f32>(k0.z, k1.z, k2.z, k3.z), lo, hi);
    row_update(acc, base + 3u, vec4<f32>(k0.w, k1.w, k2.w, k3.w), lo, hi);
    let k4 = subgroupBroadcast(av, 4u);
    let k5 = subgroupBroadcast(av, 5u);
    let k6 = subgroupBroadcast(av, 6u);
    let k7 = subgroupBroadcast(av, 7u);
    row_update(acc, base + 4u, vec4<f32>(k4.x, k5.x, k6.x, k7.x), lo, hi);
    row_update(acc, base + 5u, vec4<f32>(k4.y, k5.y, k6.y, k7.y), lo, hi);
    row_update(acc, base + 6u, vec4<f32>(k4.z, k5.z, k6.z, k7.z), lo, hi);
    row_update(acc, base + 7u, vec4<f32>(k4.w, k5.w, k6.w, k7.w), lo, hi);
}

// Stores rows base..base+7 of the lane's block; blo and bhi are the bias of its two column
// blocks.
fn store8(acc: ptr<function, Acc>, m0: u32, base: u32, n0: u32, blo: vec4<f32>, bhi: vec4<f32>) {
    store4(m0 + base + 0u, n0, (*acc)[2u * base + 0u], blo);
    if (WIDE) { store4(m0 + base + 0u, n0 + 32u, (*acc)[2u * base + 1u], bhi); }
    store4(m0 + base + 1u, n0, (*acc)[2u * base + 2u], blo);
    if (WIDE) { store4(m0 + base + 1u, n0 + 32u, (*acc)[2u * base + 3u], bhi); }
    store4(m0 + base + 2u, n0, (*acc)[2u * base + 4u], blo);
    if (WIDE) { store4(m0 + base + 2u, n0 + 32u, (*acc)[2u * base + 5u], bhi); }
    store4(m0 + base + 3u, n0, (*acc)[2u * base + 6u], blo);
    if (WIDE) { store4(m0 + base + 3u, n0 + 32u, (*acc)[2u * base + 7u], bhi); }
    store4(m0 + base + 4u, n0, (*acc)[2u * base + 8u], blo);
    if (WIDE) { store4(m0 + base + 4u, n0 + 32u, (*acc)[2u * base + 9u], bhi); }
    store4(m0 + base + 5u, n0, (*acc)[2u * base + 10u], blo);
    if (WIDE) { store4(m0 + base + 5u, n0 + 32u, (*acc)[2u * base + 11u], bhi); }
    store4(m0 + base + 6u, n0, (*acc)[2u * base + 12u], blo);
    if (WIDE) { store4(m0 + base + 6u, n0 + 32u, (*acc)[2u * base + 13u], bhi); }
    store4(m0 + base + 7u, n0, (*acc)[2u * base + 14u], blo);
    if (WIDE) { store4(m0 + base + 7u, n0 + 32u, (*acc)[2u * base + 15u], bhi); }
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = wg.y * 32u;
    let n0 = wg.x * select(32u, 64u, WIDE) + lane * 4u;
    let kmax = p.k - 1u;
    // Split-K: workgroup z sums its slice of K (a multiple of 4 long) into its own C.
    let k_begin = wg.z * p.kchunk;
    let k_end = min(p.k, k_begin + p.kchunk);
    c_offset = wg.z * p.m * (p.ldc >> 2u);
    var acc: Acc;
    for (var k0 = k_begin; k0 < k_end; k0 += 4u) {
        let lo = b_block(n0, k0);
        var hi: BBlock;
        if (WIDE) { hi = b_block(n0 + 32u, k0); }
        if (TRANS_A) {
            let kl = k0 + (lane & 3u);
            let keep = kl < p.k;
            let row = min(kl, kmax);
            let mc = m0 + (lane >> 2u) * 4u;
            let lim = p.lda - 4u;
            let a0 = select(vec4<f32>(0.0), lda4(row, min(mc, lim) >> 2u), keep);
            let a1 = select(vec4<f32>(0.0), lda4(row, min(mc + 8u, lim) >> 2u), keep);
            let a2 = select(vec4<f32>(0.0), lda4(row, min(mc + 16u, lim) >> 2u), keep);
            let a3 = select(vec4<f32>(0.0), lda4(row, min(mc + 24u, lim) >> 2u), keep);
            rows_trans(&acc, 0u, a0, lo, hi);
            rows_trans(&acc, 8u, a1, lo, hi);
            rows_trans(&acc, 16u, a2, lo, hi);
            rows_trans(&acc, 24u, a3, lo, hi);
        } else {
            let r = m0 + lane;
            let mmax = p.m - 1u;
            let a0 = mask_k(lda4(min(r, mmax), k0 >> 2u), k0);
            let a1 = mask_k(lda4(min(r + 8u, mmax), k0 >> 2u), k0);
            let a2 = mask_k(lda4(min(r + 16u, mmax), k0 >> 2u), k0);
            let a3 = mask_k(lda4(min(r + 24u, mmax), k0 >> 2u), k0);
            rows_normal(&acc, 0u, a0, lo, hi);
            rows_normal(&acc, 8u, a1, lo, hi);
            rows_normal(&acc, 16u, a2, lo, hi);
            rows_normal(&acc, 24u, a3, lo, hi);
        }
    }
    let blo = bias4(n0);
    let bhi = select(vec4<f32>(0.0), bias4(n0 + 32u), WIDE);
    store8(&acc, m0, 0u, n0, blo, bhi);
    store8(&acc, m0, 8u, n0, blo, bhi);
    store8(&acc, m0, 16u, n0, blo, bhi);
    store8(&acc, m0, 24u, n0, blo, bhi);
}
