// im2col and col2im: the two data movements that turn 2-D convolutions and transposed
// convolutions into the GEMM kernels. Images are NHWC: element (b, y, x, ch) sits at
// b * ld_b + (y * w + x) * ld_p + ch, which covers both a [B, H*W*C] matrix and a
// [B*H*W, C] one. A column matrix has one row per output position (b, oy, ox) of the
// convolution and one column per (ch, ky, kx), PyTorch's weight flattening.
//   conv forward:      cols = im2col(x);  y = cols W^T          (W [Cout, C*K*K])
//   conv backward:     dx = col2im(dY W)
//   transposed conv:   y = col2im(x W) + bias                    (W [Cin, Cout*K*K])
//   its backward:      dcols = im2col(dy); dx = dcols W^T

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
    act: u32,
    // bit 1: add bias (col2im)
    flags: u32,
    slope: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

// cols[(b, oy, ox), (ch, ky, kx)] = image(b, oy*s - pad + ky, ox*s - pad + kx, ch), 0 outside.
@compute @workgroup_size(256)
fn im2col_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let kk = p.k * p.k;
    let ncols = p.c * kk;
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.oh * p.ow * ncols) { return; }
    let row = i / ncols;
    let col = i % ncols;
    let b = row / (p.oh * p.ow);
    let pos = row % (p.oh * p.ow);
    let ch = col / kk;
    let ky = (col % kk) / p.k;
    let kx = col % p.k;
    let y = i32((pos / p.ow) * p.stride + ky) - i32(p.pad);
    let x = i32((pos % p.ow) * p.stride + kx) - i32(p.pad);
    var v = 0.0;
    if (y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w)) {
        v = src[b * p.ld_b + (u32(y) * p.w + u32(x)) * p.ld_p + ch];
    }
    dst[row * p.ld_cols + col] = v;
}

// image(b, y, x, ch) = act(sum of every column entry that im2col would read from it
// (+ bias[ch])): the adjoint of im2col, computed as a gather so it needs no atomics.
@compute @workgroup_size(256)
fn col2im_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.h * p.w * p.c) { return; }
    let ch = i % p.c;
    let pix = i / p.c;
    let b = pix / (p.h * p.w);
    let y = (pix % (p.h * p.w)) / p.w;
    let x = pix % p.w;
    var v = 0.0;
    for (var ky = 0u; ky < p.k; ky++) {
        let ny = i32(y + p.pad) - i32(ky);
        if (ny < 0 || u32(ny) % p.stride != 0u || u32(ny) / p.stride >= p.oh) { continue; }
        let oy = u32(ny) / p.stride;
        for (var kx = 0u; kx < p.k; kx++) {
            let nx = i32(x + p.pad) - i32(kx);
            if (nx < 0 || u32(nx) % p.stride != 0u || u32(nx) / p.stride >= p.ow) { continue; }
            let ox = u32(nx) / p.stride;
            let row = (b * p.oh + oy) * p.ow + ox;
            v += src[row * p.ld_cols + (ch * p.k + ky) * p.k + kx];
        }
    }
    if ((p.flags & 2u) != 0u) { v += bias[ch]; }
    dst[b * p.ld_b + (y * p.w + x) * p.ld_p + ch] = act_forward(v, p.act, p.slope);
}
