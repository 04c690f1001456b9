// GEMM for CPU drivers without subgroups (GL on llvmpipe, SwiftShader): each invocation
// keeps an 8 x 8 block of C in registers and reads A and B straight from global memory as
// vec4 (workgroup memory only adds loads and barriers on a CPU). 8 x 8 invocations cover a
// 64 x 64 tile. Every array index is a constant after inlining, which keeps the
// accumulators in registers (hence the unrolled helpers).

alias Block = array<vec4<f32>, 16>;
alias Four = array<vec4<f32>, 4>;

// Zero the lanes of a vec4 over k0..k0+3 that lie past K.
fn mask_k(v: vec4<f32>, k0: u32) -> vec4<f32> {
    let kk = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
}

// Rows of op(A) as vec4 over k0..k0+3, for block rows r.
fn a_row(r: u32, k0: u32) -> vec4<f32> {
    if (TRANS_A) {
        // A stored [K, lda]: gather one column element per k.
        let m = min(r, p.m - 1u);
        let kmax = p.k - 1u;
        return mask_k(vec4<f32>(
            a[(k0 * p.lda + m) >> 2u][m & 3u],
            a[(min(k0 + 1u, kmax) * p.lda + m) >> 2u][m & 3u],
            a[(min(k0 + 2u, kmax) * p.lda + m) >> 2u][m & 3u],
            a[(min(k0 + 3u, kmax) * p.lda + m) >> 2u][m & 3u],
        ), k0);
    }
    return mask_k(a[(min(r, p.m - 1u) * p.lda + k0) >> 2u], k0);
}

// Row k of op(B) over columns n..n+3 (n a multiple of 4).
fn b_row(kk: u32, n: u32) -> vec4<f32> {
    let k = min(kk, p.k - 1u);
    if (TRANS_B) {
        let last = p.n - 1u;
        return vec4<f32>(
            b[(min(n, last) * p.ldb + k) >> 2u][k & 3u],
            b[(min(n + 1u, last) * p.ldb + k) >> 2u][k & 3u],
            b[(min(n + 2u, last) * p.ldb + k) >> 2u][k & 3u],
            b[(min(n + 3u, last) * p.ldb + k) >> 2u][k & 3u],
        );
    }
    return b[(k * p.ldb + min(n, p.ldb - 4u)) >> 2u];
}

// acc row i (two vec4 halves at 2i, 2i+1) += av . (b rows of the left and right halves)
fn update(acc: ptr<function, Block>, i: u32, av: vec4<f32>, lo: Four, hi: Four) {
    (*acc)[2u * i] += av.x * lo[0] + av.y * lo[1] + av.z * lo[2] + av.w * lo[3];
    (*acc)[2u * i + 1u] += av.x * hi[0] + av.y * hi[1] + av.z * hi[2] + av.w * hi[3];
}

@compute @workgroup_size(8, 8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 64u + lid.y * 8u;
    let n0 = wg.x * 64u + lid.x * 8u;
    var acc: Block;
    for (var k0 = 0u; k0 < p.k; k0 += 4u) {
        var lo: Four;
        var hi: Four;
        lo[0] = b_row(k0, n0);
        lo[1] = b_row(k0 + 1u, n0);
        lo[2] = b_row(k0 + 2u, n0);
        lo[3] = b_row(k0 + 3u, n0);
        hi[0] = b_row(k0, n0 + 4u);
        hi[1] = b_row(k0 + 1u, n0 + 4u);
        hi[2] = b_row(k0 + 2u, n0 + 4u);
        hi[3] = b_row(k0 + 3u, n0 + 4u);
        update(&acc, 0u, a_row(m0, k0), lo, hi);
        update(&acc, 1u, a_row(m0 + 1u, k0), lo, hi);
        update(&acc, 2u, a_row(m0 + 2u, k0), lo, hi);
        update(&acc, 3u, a_row(m0 + 3u, k0), lo, hi);
        update(&acc, 4u, a_row(m0 + 4u, k0), lo, hi);
        update(&acc, 5u, a_row(m0 + 5u, k0), lo, hi);
        update(&acc, 6u, a_row(m0 + 6u, k0), lo, hi);
        update(&acc, 7u, a_row(m0 + 7u, k0), lo, hi);
    }
    store4(m0, n0, acc[0]); store4(m0, n0 + 4u, acc[1]);
    store4(m0 + 1u, n0, acc[2]); store4(m0 + 1u, n0 + 4u, acc[3]);
    store4(m0 + 2u, n0, acc[4]); store4(m0 + 2u, n0 + 4u, acc[5]);
    store4(m0 + 3u, n0, acc[6]); store4(m0 + 3u, n0 + 4u, acc[7]);
    store4(m0 + 4u, n0, acc[8]); store4(m0 + 4u, n0 + 4u, acc[9]);
    store4(m0 + 5u, n0, acc[10]); store4(m0 + 5u, n0 + 4u, acc[11]);
    store4(m0 + 6u, n0, acc[12]); store4(m0 + 6u, n0 + 4u, acc[13]);
    store4(m0 + 7u, n0, acc[14]); store4(m0 + 7u, n0 + 4u, acc[15]);
}
