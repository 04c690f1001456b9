// GEMM for drivers without 8-wide subgroups (GL on llvmpipe, SwiftShader), A and B read
// through lda4/ldb4 from buffers (gemm_buffers.wgsl) or textures (gemm_textures.wgsl): each
// invocation keeps an 8 x 8 block of C and reads A and B as whole vec4s in every transpose
// case; transposed operands are read as 4 x 4 blocks and transposed in registers, so a
// k-step of 4 costs 8 vec4 loads of A and 8 of B. 8 x 8 invocations cover a 64 x 64 tile.

alias Block = array<vec4<f32>, 16>;
alias Four = array<vec4<f32>, 4>;

fn mask_k(v: vec4<f32>, k0: u32) -> vec4<f32> {
    let kk = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
}

fn zero_k(v: vec4<f32>, kk: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), v, kk < p.k);
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
    let kmax = p.k - 1u;
    let mmax = p.m - 1u;
    let nmax = p.n - 1u;
    var acc: Block;
    for (var k0 = 0u; k0 < p.k; k0 += 4u) {
        let kt = k0 >> 2u;
        var lo: Four;
        var hi: Four;
        if (TRANS_B) {
            // B stored [N, ldb]: the texel at k0 of column n holds op(B)[k0..k0+3, n].
            let t0 = ldb4(min(n0, nmax), kt);
            let t1 = ldb4(min(n0 + 1u, nmax), kt);
            let t2 = ldb4(min(n0 + 2u, nmax), kt);
            let t3 = ldb4(min(n0 + 3u, nmax), kt);
            let t4 = ldb4(min(n0 + 4u, nmax), kt);
            let t5 = ldb4(min(n0 + 5u, nmax), kt);
            let t6 = ldb4(min(n0 + 6u, nmax), kt);
            let t7 = ldb4(min(n0 + 7u, nmax), kt);
            lo[0] = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
            lo[1] = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
            lo[2] = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
            lo[3] = vec4<f32>(t0.w, t1.w, t2.w, t3.w);
            hi[0] = vec4<f32>(t4.x, t5.x, t6.x, t7.x);
            hi[1] = vec4<f32>(t4.y, t5.y, t6.y, t7.y);
            hi[2] = vec4<f32>(t4.z, t5.z, t6.z, t7.z);
            hi[3] = vec4<f32>(t4.w, t5.w, t6.w, t7.w);
        } else {
            let c0 = min(n0, p.ldb - 4u) >> 2u;
            let c1 = min(n0 + 4u, p.ldb - 4u) >> 2u;
            lo[0] = ldb4(k0, c0);
            lo[1] = ldb4(min(k0 + 1u, kmax), c0);
            lo[2] = ldb4(min(k0 + 2u, kmax), c0);
            lo[3] = ldb4(min(k0 + 3u, kmax), c0);
            hi[0] = ldb4(k0, c1);
            hi[1] = ldb4(min(k0 + 1u, kmax), c1);
            hi[2] = ldb4(min(k0 + 2u, kmax), c1);
            hi[3] = ldb4(min(k0 + 3u, kmax), c1);
        }
        if (TRANS_A) {
            // A stored [K, lda]: texels (k, m0..m0+3) and (k, m0+4..m0+7), zero past K.
            let c0 = min(m0, p.lda - 4u) >> 2u;
            let c1 = min(m0 + 4u, p.lda - 4u) >> 2u;
            let l0 = lda4(k0, c0);
            let l1 = zero_k(lda4(min(k0 + 1u, kmax), c0), k0 + 1u);
            let l2 = zero_k(lda4(min(k0 + 2u, kmax), c0), k0 + 2u);
            let l3 = zero_k(lda4(min(k0 + 3u, kmax), c0), k0 + 3u);
            let h0 = lda4(k0, c1);
            let h1 = zero_k(lda4(min(k0 + 1u, kmax), c1), k0 + 1u);
            let h2 = zero_k(lda4(min(k0 + 2u, kmax), c1), k0 + 2u);
            let h3 = zero_k(lda4(min(k0 + 3u, kmax), c1), k0 + 3u);
            update(&acc, 0u, vec4<f32>(l0.x, l1.x, l2.x, l3.x), lo, hi);
            update(&acc, 1u, vec4<f32>(l0.y, l1.y, l2.y, l3.y), lo, hi);
            update(&acc, 2u, vec4<f32>(l0.z, l1.z, l2.z, l3.z), lo, hi);
            update(&acc, 3u, vec4<f32>(l0.w, l1.w, l2.w, l3.w), lo, hi);
            update(&acc, 4u, vec4<f32>(h0.x, h1.x, h2.x, h3.x), lo, hi);
            update(&acc, 5u, vec4<f32>(h0.y, h1.y, h2.y, h3.y), lo, hi);
            update(&acc, 6u, vec4<f32>(h0.z, h1.z, h2.z, h3.z), lo, hi);
            update(&acc, 7u, vec4<f32>(h0.w, h1.w, h2.w, h3.w), lo, hi);
        } else {
            update(&acc, 0u, mask_k(lda4(min(m0, mmax), kt), k0), lo, hi);
            update(&acc, 1u, mask_k(lda4(min(m0 + 1u, mmax), kt), k0), lo, hi);
            update(&acc, 2u, mask_k(lda4(min(m0 + 2u, mmax), kt), k0), lo, hi);
            update(&acc, 3u, mask_k(lda4(min(m0 + 3u, mmax), kt), k0), lo, hi);
            update(&acc, 4u, mask_k(lda4(min(m0 + 4u, mmax), kt), k0), lo, hi);
            update(&acc, 5u, mask_k(lda4(min(m0 + 5u, mmax), kt), k0), lo, hi);
            update(&acc, 6u, mask_k(lda4(min(m0 + 6u, mmax), kt), k0), lo, hi);
            update(&acc, 7u, mask_k(lda4(min(m0 + 7u, mmax), kt), k0), lo, hi);
        }
    }
    let b0 = bias4(n0);
    let b1 = bias4(n0 + 4u);
    store4(m0, n0, acc[0], b0); store4(m0, n0 + 4u, acc[1], b1);
    store4(m0 + 1u, n0, acc[2], b0); store4(m0 + 1u, n0 + 4u, acc[3], b1);
    store4(m0 + 2u, n0, acc[4], b0); store4(m0 + 2u, n0 + 4u, acc[5], b1);
    store4(m0 + 3u, n0, acc[6], b0); store4(m0 + 3u, n0 + 4u, acc[7], b1);
    store4(m0 + 4u, n0, acc[8], b0); store4(m0 + 4u, n0 + 4u, acc[9], b1);
    store4(m0 + 5u, n0, acc[10], b0); store4(m0 + 5u, n0 + 4u, acc[11], b1);
    store4(m0 + 6u, n0, acc[12], b0); store4(m0 + 6u, n0 + 4u, acc[13], b1);
    store4(m0 + 7u, n0, acc[14], b0); store4(m0 + 7u, n0 + 4u, acc[15], b1);
}
