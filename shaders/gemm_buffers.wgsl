// A and B of the GEMM kernels as storage buffers (row-major, row strides lda and ldb).

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;

// One scalar of op(A) or op(B), zero outside the matrix (used by the tiled kernel).
fn a_at(row: u32, kk: u32) -> f32 {
    if (row >= p.m || kk >= p.k) { return 0.0; }
    var idx: u32;
    if (TRANS_A) { idx = kk * p.lda + row; } else { idx = row * p.lda + kk; }
    return a[idx >> 2u][idx & 3u];
}

fn b_at(kk: u32, col: u32) -> f32 {
    if (kk >= p.k || col >= p.n) { return 0.0; }
    var idx: u32;
    if (TRANS_B) { idx = col * p.ldb + kk; } else { idx = kk * p.ldb + col; }
    return b[idx >> 2u][idx & 3u];
}

// Floats 4 c4 .. 4 c4 + 3 of stored row `row` of A, and of B.
fn lda4(row: u32, c4: u32) -> vec4<f32> {
    return a[row * (p.lda >> 2u) + c4];
}

fn ldb4(row: u32, c4: u32) -> vec4<f32> {
    return b[row * (p.ldb >> 2u) + c4];
}
