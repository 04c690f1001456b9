// GEMM for CPU Vulkan drivers with 8-wide subgroups (lavapipe). Loads, not FMAs, bound speed
// there, so each lane keeps a 32 x 4 block of C in registers and each value of A is loaded by
// one lane and handed to the other seven with subgroupBroadcast. A workgroup is one subgroup
// and covers 32 rows x 32 columns. Every array index is a constant after inlining, which keeps
// the accumulators in registers (hence the unrolled helpers instead of loops).

alias Acc = array<vec4<f32>, 32>;
alias BBlock = array<vec4<f32>, 4>;

// Zero the lanes of a vec4 over k0..k0+3 that lie past K.
fn mask_k(v: vec4<f32>, k0: u32) -> vec4<f32> {
    let kk = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, kk < vec4<u32>(p.k));
}

// acc[r] += sum_kk av[kk] * bk[kk]; av holds row r of op(A) over four k.
fn row_update(acc: ptr<function, Acc>, r: u32, av: vec4<f32>, bk: BBlock) {
    (*acc)[r] += av.x * bk[0] + av.y * bk[1] + av.z * bk[2] + av.w * bk[3];
}

// Lane l holds row base + l of op(A) over four k.
fn rows_normal(acc: ptr<function, Acc>, base: u32, av: vec4<f32>, bk: BBlock) {
    row_update(acc, base + 0u, subgroupBroadcast(av, 0u), bk);
    row_update(acc, base + 1u, subgroupBroadcast(av, 1u), bk);
    row_update(acc, base + 2u, subgroupBroadcast(av, 2u), bk);
    row_update(acc, base + 3u, subgroupBroadcast(av, 3u), bk);
    row_update(acc, base + 4u, subgroupBroadcast(av, 4u), bk);
    row_update(acc, base + 5u, subgroupBroadcast(av, 5u), bk);
    row_update(acc, base + 6u, subgroupBroadcast(av, 6u), bk);
    row_update(acc, base + 7u, subgroupBroadcast(av, 7u), bk);
}

// acc[r + i] += av[i] * bv; av holds rows r..r+3 of op(A) at one k.
fn rank1(acc: ptr<function, Acc>, r: u32, av: vec4<f32>, bv: vec4<f32>) {
    (*acc)[r] += av.x * bv;
    (*acc)[r + 1u] += av.y * bv;
    (*acc)[r + 2u] += av.z * bv;
    (*acc)[r + 3u] += av.w * bv;
}

// Lane l holds rows base + (l / 4) * 4 .. +3 of op(A) at k0 + l % 4.
fn rows_trans(acc: ptr<function, Acc>, base: u32, av: vec4<f32>, bk: BBlock) {
    rank1(acc, base, subgroupBroadcast(av, 0u), bk[0]);
    rank1(acc, base, subgroupBroadcast(av, 1u), bk[1]);
    rank1(acc, base, subgroupBroadcast(av, 2u), bk[2]);
    rank1(acc, base, subgroupBroadcast(av, 3u), bk[3]);
    rank1(acc, base + 4u, subgroupBroadcast(av, 4u), bk[0]);
    rank1(acc, base + 4u, subgroupBroadcast(av, 5u), bk[1]);
    rank1(acc, base + 4u, subgroupBroadcast(av, 6u), bk[2]);
    rank1(acc, base + 4u, subgroupBroadcast(av, 7u), bk[3]);
}

override IMPLICIT_A: bool = false;

@group(0) @binding(6) var<uniform> cp: ConvParams;

// (image offset of the batch, top row, left column, 1 if the row exists) of output row r.
fn row_base(r: u32) -> vec4<i32> {
    let b = r / (cp.oh * cp.ow);
    let pos = r % (cp.oh * cp.ow);
    let y0 = i32((pos / cp.ow) * cp.stride) - i32(cp.pad);
    let x0 = i32((pos % cp.ow) * cp.stride) - i32(cp.pad);
    return vec4<i32>(i32(b * cp.ld_b), y0, x0, select(0, 1, r < p.m));
}

fn implicit_row(base: vec4<i32>, ky: i32, kx: i32, ch: u32) -> vec4<f32> {
    let y = base.y + ky;
    let x = base.z + kx;
    let inside = base.w == 1 && y >= 0 && y < i32(cp.h) && x >= 0 && x < i32(cp.w);
    let at = u32(base.x) + (u32(max(y, 0)) * cp.w + u32(max(x, 0))) * cp.ld_p + ch;
    return select(vec4<f32>(0.0), a[at >> 2u], inside);
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = wg.y * 32u;
    let n0 = wg.x * 32u + lane * 4u;
    let kmax = p.k - 1u;
    var acc: Acc;
    // Implicit im2col: where each of this lane's four rows reads the image.
    let rb0 = row_base(m0 + lane);
    let rb1 = row_base(m0 + lane + 8u);
    let rb2 = row_base(m0 + lane + 16u);
    let rb3 = row_base(m0 + lane + 24u);
    for (var k0 = 0u; k0 < p.k; k0 += 4u) {
        // B block: rows k0..k0+3 of op(B), columns n0..n0+3. Reads past K or N are clamped
        // to valid memory; A is zeroed past K and columns past N are never stored.
        var bk: BBlock;
        if (TRANS_B) {
            let c0 = b[(min(n0, p.n - 1u) * p.ldb + k0) >> 2u];
            let c1 = b[(min(n0 + 1u, p.n - 1u) * p.ldb + k0) >> 2u];
            let c2 = b[(min(n0 + 2u, p.n - 1u) * p.ldb + k0) >> 2u];
            let c3 = b[(min(n0 + 3u, p.n - 1u) * p.ldb + k0) >> 2u];
            bk[0] = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
            bk[1] = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
            bk[2] = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
            bk[3] = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
        } else {
            let nc = min(n0, p.ldb - 4u);
            bk[0] = b[(k0 * p.ldb + nc) >> 2u];
            bk[1] = b[(min(k0 + 1u, kmax) * p.ldb + nc) >> 2u];
            bk[2] = b[(min(k0 + 2u, kmax) * p.ldb + nc) >> 2u];
            bk[3] = b[(min(k0 + 3u, kmax) * p.ldb + nc) >> 2u];
        }
        if (TRANS_A) {
            let kl = k0 + (lane & 3u);
            let keep = kl < p.k;
            let row = min(kl, kmax) * p.lda;
            let mc = m0 + (lane >> 2u) * 4u;
            let lim = p.lda - 4u;
            let a0 = select(vec4<f32>(0.0), a[(row + min(mc, lim)) >> 2u], keep);
            let a1 = select(vec4<f32>(0.0), a[(row + min(mc + 8u, lim)) >> 2u], keep);
            let a2 = select(vec4<f32>(0.0), a[(row + min(mc + 16u, lim)) >> 2u], keep);
            let a3 = select(vec4<f32>(0.0), a[(row + min(mc + 24u, lim)) >> 2u], keep);
            rows_trans(&acc, 0u, a0, bk);
            rows_trans(&acc, 8u, a1, bk);
            rows_trans(&acc, 16u, a2, bk);
            rows_trans(&acc, 24u, a3, bk);
        } else if (IMPLICIT_A) {
            // op(A) = im2col(image) read in place: the 4 columns k0.. are 4 channels of one tap.
            let tap = k0 / cp.c;
            let ch = k0 % cp.c;
            let ky = i32(tap / cp.k);
            let kx = i32(tap % cp.k);
            let a0 = implicit_row(rb0, ky, kx, ch);
            let a1 = implicit_row(rb1, ky, kx, ch);
            let a2 = implicit_row(rb2, ky, kx, ch);
            let a3 = implicit_row(rb3, ky, kx, ch);
            rows_normal(&acc, 0u, a0, bk);
            rows_normal(&acc, 8u, a1, bk);
            rows_normal(&acc, 16u, a2, bk);
            rows_normal(&acc, 24u, a3, bk);
        } else {
            let r = m0 + lane;
            let mmax = p.m - 1u;
            let a0 = mask_k(a[(min(r, mmax) * p.lda + k0) >> 2u], k0);
            let a1 = mask_k(a[(min(r + 8u, mmax) * p.lda + k0) >> 2u], k0);
            let a2 = mask_k(a[(min(r + 16u, mmax) * p.lda + k0) >> 2u], k0);
            let a3 = mask_k(a[(min(r + 24u, mmax) * p.lda + k0) >> 2u], k0);
            rows_normal(&acc, 0u, a0, bk);
            rows_normal(&acc, 8u, a1, bk);
            rows_normal(&acc, 16u, a2, bk);
            rows_normal(&acc, 24u, a3, bk);
        }
    }
    let b = bias4(n0);
    store4(m0 + 0u, n0, acc[0], b); store4(m0 + 1u, n0, acc[1], b); store4(m0 + 2u, n0, acc[2], b); store4(m0 + 3u, n0, acc[3], b);
    store4(m0 + 4u, n0, acc[4], b); store4(m0 + 5u, n0, acc[5], b); store4(m0 + 6u, n0, acc[6], b); store4(m0 + 7u, n0, acc[7], b);
    store4(m0 + 8u, n0, acc[8], b); store4(m0 + 9u, n0, acc[9], b); store4(m0 + 10u, n0, acc[10], b); store4(m0 + 11u, n0, acc[11], b);
    store4(m0 + 12u, n0, acc[12], b); store4(m0 + 13u, n0, acc[13], b); store4(m0 + 14u, n0, acc[14], b); store4(m0 + 15u, n0, acc[15], b);
    store4(m0 + 16u, n0, acc[16], b); store4(m0 + 17u, n0, acc[17], b); store4(m0 + 18u, n0, acc[18], b); store4(m0 + 19u, n0, acc[19], b);
    store4(m0 + 20u, n0, acc[20], b); store4(m0 + 21u, n0, acc[21], b); store4(m0 + 22u, n0, acc[22], b); store4(m0 + 23u, n0, acc[23], b);
    store4(m0 + 24u, n0, acc[24], b); store4(m0 + 25u, n0, acc[25], b); store4(m0 + 26u, n0, acc[26], b); store4(m0 + 27u, n0, acc[27], b);
    store4(m0 + 28u, n0, acc[28], b); store4(m0 + 29u, n0, acc[29], b); store4(m0 + 30u, n0, acc[30], b); store4(m0 + 31u, n0, acc[31], b);
}
