// im2col and col2im: the two data movements that turn 2-D convolutions and transposed
// convolutions into the GEMM kernels. Images are NHWC: element (b, y, x, ch) sits at
// b * ld_b + (y * w + x) * ld_p + ch, which covers both a [B, H*W*C] matrix and a
// [B*H*W, C] one. A column matrix has one row per output position (b, oy, ox) of the
// convolution and one column per (ky, kx, ch), channel fastest, so that both sides move
// runs of channels: contiguous, and vec4 wide when C is a multiple of 4 (the *_vec4
// entry points). Every entry point reads the source through `read_a` (`read_a1` one float
// at a time) and col2im's bias or activation output through `read_b` / `read_b1`: from the
// buffers, or from texture copies, reads_*.wgsl.
// Weights are stored to match ([Cout, K, K, Cin] and [Cin, K, K, Cout]); checkpoints
// convert from and to PyTorch's [Cout, Cin, K, K] / [Cin, Cout, K, K].
//   conv forward:      cols = im2col(x);  y = cols W^T          (W [Cout, C*K*K])
//   conv backward:     dx = col2im(dY W) (* act'(x) when x is an activation's output)
//   transposed conv:   y = col2im(x W) + bias                    (W [Cin, Cout*K*K])
//   its backward:      dcols = im2col(dy); dx = dcols W^T

// col2im's epilogue, fixed per pipeline (a runtime choice would run every branch on CPU
// drivers, which execute both sides of an if under a mask): the activation, whether to add
// the bias, or whether to multiply by act'(Y) instead, Y (laid out like the image) bound in
// the bias slot.
override ACT: u32 = 0u;
override ADD_BIAS: bool = false;
override ACT_GRAD: bool = false;
// col2im adds its sums to what the image holds (a gradient with several contributions);
// with ACT_GRAD the derivative multiplies the total.
override ACCUMULATE: bool = false;
// The kernel size and the taps per axis that reach one image pixel, ceil(k / stride), also
// fixed per pipeline: the tap loops then have constant trip counts and unroll, where a loop
// whose count varies by lane (or is read at run time) runs every iteration under masks.
override KSIZE: u32 = 1u;
override TAPS: u32 = 1u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst4: array<vec4<f32>>;

// Position of the invocation handling channel group `g` (of `groups`) of one row or pixel:
// (row or pixel, g).
fn split(i: u32, groups: u32) -> vec2<u32> {
    let q = udiv(i, groups);
    return vec2<u32>(q, i - q * groups);
}

// Top-left image corner read by column row `row`.
fn corner(row: u32) -> vec3<i32> {
    let by = udiv(row, p.ow);
    let b = udiv(by, p.oh);
    let oy = by - b * p.oh;
    let ox = row - by * p.ow;
    return vec3<i32>(i32(b), i32(oy * p.stride) - i32(p.pad), i32(ox * p.stride) - i32(p.pad));
}

// The im2col element offset of image pixel (y, x) of batch b, or -1 outside the image.
// (`&` rather than `&&` and a select rather than an early return: no branches to mask.)
fn pixel_offset(b: u32, y: i32, x: i32) -> i32 {
    let inside = (y >= 0) & (y < i32(p.h)) & (x >= 0) & (x < i32(p.w));
    return select(-1, i32(b * p.ld_b + (u32(y) * p.w + u32(x)) * p.ld_p), inside);
}

// cols[(b, oy, ox), (ky, kx, ch)] = image(b, oy*s - pad + ky, ox*s - pad + kx, ch), 0 outside.
@compute @workgroup_size(256)
fn im2col_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.oh * p.ow * p.c) { return; }
    let rc = split(i, p.c);
    let at = corner(rc.x);
    var out = rc.x * p.ld_cols + rc.y;
    for (var ky = 0; ky < i32(KSIZE); ky++) {
        for (var kx = 0; kx < i32(KSIZE); kx++) {
            let o = pixel_offset(u32(at.x), at.y + ky, at.z + kx);
            dst[out] = select(0.0, read_a1(u32(max(o, 0)) + rc.y), o >= 0);
            out += p.c;
        }
    }
}

@compute @workgroup_size(256)
fn im2col_vec4_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c4 = p.c / 4u;
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.oh * p.ow * c4) { return; }
    let rc = split(i, c4);
    let at = corner(rc.x);
    var out = (rc.x * p.ld_cols) / 4u + rc.y;
    for (var ky = 0; ky < i32(KSIZE); ky++) {
        for (var kx = 0; kx < i32(KSIZE); kx++) {
            let o = pixel_offset(u32(at.x), at.y + ky, at.z + kx);
            dst4[out] = select(vec4<f32>(0.0), read_a(u32(max(o, 0)) / 4u + rc.y), o >= 0);
            out += c4;
        }
    }
}

// The taps (ky, kx) of the columns that read image pixel (y, x): ky = (y + pad) mod s,
// + s, ... with output row oy stepping down by one, so the loops need no division.
// Returns (ky0, kx0, oy0, ox0).
fn first_tap(y: u32, x: u32) -> vec4<i32> {
    let oy = udiv(y + p.pad, p.stride);
    let ox = udiv(x + p.pad, p.stride);
    let ky0 = y + p.pad - oy * p.stride;
    let kx0 = x + p.pad - ox * p.stride;
    return vec4<i32>(i32(ky0), i32(kx0), i32(oy), i32(ox));
}

// Tap (jy, jx) of those of first_tap `t` in batch b: its column-matrix row, its tap
// (ky * k + kx), both clamped into range, and whether it exists.
struct Tap {
    row: u32,
    tap: u32,
    ok: bool,
}

fn tap_at(b: u32, t: vec4<i32>, jy: u32, jx: u32) -> Tap {
    let k = i32(KSIZE);
    let ky = t.x + i32(jy * p.stride);
    let kx = t.y + i32(jx * p.stride);
    let oy = t.z - i32(jy);
    let ox = t.w - i32(jx);
    let ok = (ky < k) & (kx < k) & (oy >= 0) & (oy < i32(p.oh)) & (ox >= 0) & (ox < i32(p.ow));
    let row = (b * p.oh + u32(clamp(oy, 0, i32(p.oh) - 1))) * p.ow + u32(clamp(ox, 0, i32(p.ow) - 1));
    return Tap(row, u32(min(ky, k - 1) * k + min(kx, k - 1)), ok);
}

// (b, y, x) of an image pixel index.
fn pixel_at(pix: u32) -> vec3<u32> {
    let by = udiv(pix, p.w);
    let b = udiv(by, p.h);
    return vec3<u32>(b, by - b * p.h, pix - by * p.w);
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
    let pc = split(i, p.c);
    let at = pixel_at(pc.x);
    let t = first_tap(at.y, at.z);
    var v = 0.0;
    for (var jy = 0u; jy < TAPS; jy++) {
        for (var jx = 0u; jx < TAPS; jx++) {
            let tap = tap_at(at.x, t, jy, jx);
            v += select(0.0, read_a1(tap.row * p.ld_cols + tap.tap * p.c + pc.y), tap.ok);
        }
    }
    let out = at.x * p.ld_b + (at.y * p.w + at.z) * p.ld_p + pc.y;
    if (ACCUMULATE) { v += dst[out]; }
    if (ACT_GRAD) {
        dst[out] = v * act_grad_from_output(vec4<f32>(read_b1(out)), ACT, p.slope).x;
        return;
    }
    if (ADD_BIAS) { v += read_b1(pc.y); }
    dst[out] = act_forward(vec4<f32>(v), ACT, p.slope).x;
}

@compute @workgroup_size(256)
fn col2im_vec4_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c4 = p.c / 4u;
    let i = flat_index(wg, nwg, lid);
    if (i >= p.batch * p.h * p.w * c4) { return; }
    let pc = split(i, c4);
    let at = pixel_at(pc.x);
    let t = first_tap(at.y, at.z);
    var v = vec4<f32>(0.0);
    for (var jy = 0u; jy < TAPS; jy++) {
        for (var jx = 0u; jx < TAPS; jx++) {
            let tap = tap_at(at.x, t, jy, jx);
            let x = read_a((tap.row * p.ld_cols + tap.tap * p.c) / 4u + pc.y);
            v += select(vec4<f32>(0.0), x, tap.ok);
        }
    }
    let out = (at.x * p.ld_b + (at.y * p.w + at.z) * p.ld_p) / 4u + pc.y;
    if (ACCUMULATE) { v += dst4[out]; }
    if (ACT_GRAD) {
        let y = read_b(out);
        dst4[out] = v * act_grad_from_output(y, ACT, p.slope);
        return;
    }
    if (ADD_BIAS) { v += read_b(pc.y); }
    dst4[out] = act_forward(v, ACT, p.slope);
}
