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
// One invocation per (row, ch) writes its K*K columns: integer division is slow on CPU
// drivers, so it is done once per invocation rather than per element.
@compute @workgroup_size(256)
fn im2col_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.oh * p.ow * p.c) { return; }
    let ch = i % p.c;
    let row = i / p.c;
    let b = row / (p.oh * p.ow);
    let pos = row % (p.oh * p.ow);
    let y0 = i32((pos / p.ow) * p.stride) - i32(p.pad);
    let x0 = i32((pos % p.ow) * p.stride) - i32(p.pad);
    let src_base = b * p.ld_b + ch;
    var out = row * p.ld_cols + ch * p.k * p.k;
    for (var ky = 0u; ky < p.k; ky++) {
        let y = y0 + i32(ky);
        let row_ok = y >= 0 && y < i32(p.h);
        for (var kx = 0u; kx < p.k; kx++) {
            let x = x0 + i32(kx);
            var v = 0.0;
            if (row_ok && x >= 0 && x < i32(p.w)) {
                v = src[src_base + (u32(y) * p.w + u32(x)) * p.ld_p];
            }
            dst[out] = v;
            out += 1u;
        }
    }
}

// image(b, y, x, ch) = act(sum of every column entry that im2col would read from it
// (+ bias[ch])): the adjoint of im2col, computed as a gather so it needs no atomics.
// The kernel taps that reach (y, x) are ky = (y + pad) mod s, + s, ...; walking them
// steps oy down by one, so the loops need no division.
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
    let ky0 = (y + p.pad) % p.stride;
    let kx0 = (x + p.pad) % p.stride;
    // oy for ky0 (may be past the end; such taps are skipped)
    let oy0 = i32((y + p.pad - ky0) / p.stride);
    let ox0 = i32((x + p.pad - kx0) / p.stride);
    let kk = p.k * p.k;
    var v = 0.0;
    var oy = oy0;
    for (var ky = ky0; ky < p.k; ky += p.stride) {
        if (oy >= 0 && oy < i32(p.oh)) {
            var ox = ox0;
            for (var kx = kx0; kx < p.k; kx += p.stride) {
                if (ox >= 0 && ox < i32(p.ow)) {
                    let row = (b * p.oh + u32(oy)) * p.ow + u32(ox);
                    v += src[row * p.ld_cols + ch * kk + ky * p.k + kx];
                }
                ox -= 1;
            }
        }
        oy -= 1;
    }
    if ((p.flags & 2u) != 0u) { v += bias[ch]; }
    dst[b * p.ld_b + (y * p.w + x) * p.ld_p + ch] = act_forward(v, p.act, p.slope);
}
