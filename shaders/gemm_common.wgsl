// Bindings and epilogue shared by the GEMM kernels.
// C[m, n] = act(sum_k op(A)[m, k] * op(B)[k, n] + bias[n] (+ C[m, n] when accumulating)),
// or with ACT_GRAD, C[m, n] = (op(A) op(B))[m, n] * act'(Y[m, n]): the backward of an
// activation fused into the product that makes its output gradient (Y, the activation's
// output, is bound where the bias goes and shares C's shape and stride).
// Matrices are row-major with a leading dimension (row stride) that is a multiple of 4 floats,
// so rows can be read as vec4. op(A) = A when TRANS_A is false (A is [M, lda]), else A is
// stored [K, lda] and read transposed; likewise B is [K, ldb] or, transposed, [N, ldb].
// A and B are bound at 1 and 2 as storage buffers (gemm_buffers.wgsl) or textures
// (gemm_textures.wgsl); C, the bias and the epilogue are the same for every kernel.

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    // LeakyReLU's slope (the activation itself is the ACT constant)
    slope: f32,
    // K summed by each workgroup along z: K itself, or a slice of it for a split-K partial
    // product (SubgroupTex only; see c_offset)
    kchunk: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// The epilogue is fixed per pipeline so that plain products compile to plain stores.
override ACT: u32 = 0u;
override ADD_BIAS: bool = false;
override ACCUMULATE: bool = false;
override ACT_GRAD: bool = false;

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;
// The bias row (zero-padded to a multiple of 4 like every matrix), or Y with ACT_GRAD.
@group(0) @binding(4) var<storage, read> bias: array<vec4<f32>>;

// The bias of columns col..col+3 (zero without ADD_BIAS). Kernels read it once per column
// block, not per stored row: on CPU drivers every storage-buffer read is a per-lane loop.
fn bias4(col: u32) -> vec4<f32> {
    if (!ADD_BIAS) { return vec4<f32>(0.0); }
    return bias[min(col, p.n - 1u) >> 2u];
}

// Where this workgroup's C starts, in vec4s: zero, except in a split-K partial product,
// whose workgroup z writes its own copy of C below the z before it (C is [splits * M, N];
// plain products only, so the epilogue never reads C or Y there).
var<private> c_offset: u32 = 0u;

// Writes outputs (row, col..col+3), col a multiple of 4, as one vec4; `b` is bias4(col).
// Columns past N are row padding: they get zero, which keeps the padding invariant.
fn store4(row: u32, col: u32, v: vec4<f32>, b: vec4<f32>) {
    if (row >= p.m || col >= p.n) { return; }
    let idx = ((row * p.ldc + col) >> 2u) + c_offset;
    var x = v + b;
    if (ACCUMULATE) { x += c[idx]; }
    var y = x;
    if (ACT_GRAD) {
        y = x * act_grad_from_output(bias[idx], ACT, p.slope);
    } else if (ACT != 0u) {
        y = act_forward(x, ACT, p.slope);
    }
    let live = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
    c[idx] = select(vec4<f32>(0.0), y, live);
}
