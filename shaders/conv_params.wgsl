// A convolution's geometry and image strides, shared by im2col/col2im (shaders/conv.wgsl)
// and the implicit-GEMM convolution (shaders/gemm_subgroup.wgsl); the host fills one
// ConvParams for both (src/ops/conv.rs).
struct ConvParams {
    batch: u32,
    // the image side (the conv's input, the transposed conv's output)
    h: u32,
    w: u32,
    c: u32,
    // the column side (the conv's output positions, the transposed conv's input)
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    pad: u32,
    ld_b: u32,
    ld_p: u32,
    ld_cols: u32,
    // LeakyReLU's slope (col2im; the activation itself is the ACT constant)
    slope: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
