// A and B of the texture GEMM kernels: read-only rgba32float storage textures holding the
// matrices' buffer contents texel by texel (texel t = floats 4t..4t+3 of the stored rows),
// folded into rows of texels (texel.wgsl). On lavapipe a texture read is straight-line
// code, while a storage-buffer read inside a loop is a per-lane scalar loop that is 5x
// slower on CPUs without AVX-512.

@group(0) @binding(1) var at: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var bt: texture_storage_2d<rgba32float, read>;

// Floats 4 c4 .. 4 c4 + 3 of stored row `row` of A, and of B.
fn lda4(row: u32, c4: u32) -> vec4<f32> {
    return textureLoad(at, texel(row * (p.lda >> 2u) + c4));
}

fn ldb4(row: u32, c4: u32) -> vec4<f32> {
    return textureLoad(bt, texel(row * (p.ldb >> 2u) + c4));
}
