// The model graph's structural and elementwise ops: residual add, a standalone activation,
// gradient copies that sum several contributions, channel copies (concat) and nearest x2
// upsampling, forward and backward.
//
// Every kernel that writes a gradient ends with the same epilogue: the value, plus what dst
// holds when ACCUMULATE (a tensor that feeds several ops sums their gradients), times
// act'(side) when IN_ACT_GRAD, side being the output of the activation that produced the
// tensor (applied by the last contribution, on the total).
//
// Flat kernels (add_main, act_main, grad_main) run over whole vec4 rows of matrices of one
// layout, padding included: padding holds zeros and stays zero (act_main masks it, since
// sigmoid(0) is not 0). Image kernels address (b, pixel, channel) through a batch and a
// pixel stride, covering [B, H*W*C] and [B*H*W, C] matrices alike.

struct TensorParams {
    // invocations
    n: u32,
    // floats per matrix row (ld) and real columns, for the padding mask
    ld: u32,
    cols: u32,
    // pixels per image, and the output image's width (upsampling)
    hw: u32,
    w: u32,
    // channels moved per pixel (copy_channels_main), or vec4s of channels
    c: u32,
    src_b: u32,
    src_p: u32,
    src_off: u32,
    dst_b: u32,
    dst_p: u32,
    dst_off: u32,
    slope: f32,
    in_slope: f32,
    pad0: u32,
    pad1: u32,
}

// The op's own activation (act_main, grad_main) and the gradient epilogue, fixed per
// pipeline.
override ACT: u32 = 0u;
override IN_ACT: u32 = 0u;
override IN_ACT_GRAD: bool = false;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<uniform> p: TensorParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> side: array<f32>;
@group(0) @binding(5) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> side4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> other4: array<vec4<f32>>;

// The gradient epilogue on four values stored at dst4[i] (side4[i] shaped like dst).
fn finish4(i: u32, v: vec4<f32>) -> vec4<f32> {
    var out = v;
    if (ACCUMULATE) { out += dst4[i]; }
    if (IN_ACT_GRAD) { out *= act_grad_from_output(side4[i], IN_ACT, p.in_slope); }
    return out;
}

// y = a + b
@compute @workgroup_size(256)
fn add_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    dst4[i] = src4[i] + other4[i];
}

// y = act(x), the padding kept at zero.
@compute @workgroup_size(256)
fn act_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let ld4 = p.ld / 4u;
    let col = (i - udiv(i, ld4) * ld4) * 4u;
    let live = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols);
    dst4[i] = select(vec4<f32>(0.0), act_forward(src4[i], ACT, p.slope), live);
}

// dx = dy * act'(x) (ACT the op's activation, x its input in `other`; identity for a copy),
// then the epilogue.
@compute @workgroup_size(256)
fn grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    var v = src4[i];
    if (ACT != 0u) { v *= act_grad_from_input(other4[i], ACT, p.slope); }
    dst4[i] = finish4(i, v);
}

// dst(b, pixel, dst_off + j) = src(b, pixel, src_off + j) for j < c, then the epilogue:
// a concat's input copied into its channel range, or that range's gradient copied back.
@compute @workgroup_size(256)
fn copy_channels_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let r = udiv(i, p.c);
    let j = i - r * p.c;
    let b = udiv(r, p.hw);
    let pix = r - b * p.hw;
    let s = b * p.src_b + pix * p.src_p + p.src_off + j;
    let d = b * p.dst_b + pix * p.dst_p + p.dst_off + j;
    var v = src[s];
    if (ACCUMULATE) { v += dst[d]; }
    if (IN_ACT_GRAD) { v *= act_grad_from_output(vec4<f32>(side[d]), IN_ACT, p.in_slope).x; }
    dst[d] = v;
}

// y(b, oy, ox, q) = x(b, oy / 2, ox / 2, q): vec4 of channels (c4 = p.c) of dense
// [B * H * W, C] images, p.w the output width.
@compute @workgroup_size(256)
fn upsample_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let pix = udiv(i, p.c);
    let q = i - pix * p.c;
    let row = udiv(pix, p.w);
    let ox = pix - row * p.w;
    // row = b * H + oy with H even, so row / 2 = b * H / 2 + oy / 2.
    let s = ((row >> 1u) * (p.w >> 1u) + (ox >> 1u)) * p.c + q;
    dst4[i] = src4[s];
}

// dx(b, y, x, q) = sum of dy over the four output pixels it was copied to, then the
// epilogue; p.w is the input width.
@compute @workgroup_size(256)
fn upsample_grad_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let pix = udiv(i, p.c);
    let q = i - pix * p.c;
    let row = udiv(pix, p.w);
    let x = pix - row * p.w;
    let w2 = 2u * p.w;
    let top = ((2u * row) * w2 + 2u * x) * p.c + q;
    let v = src4[top] + src4[top + p.c] + src4[top + w2 * p.c] + src4[top + (w2 + 1u) * p.c];
    dst4[i] = finish4(i, v);
}

// A convolution's weight [Cout, K*K*Cin] (columns tap-major, channel fastest) as the weight
// of the convolution that computes its input gradient: [Cin, K*K*Cout], the taps reversed
// (p.c = Cin, p.hw = K*K taps, p.w = Cout; p.src_b and p.dst_b the row strides).
@compute @workgroup_size(256)
fn flip_taps_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.n) { return; }
    let row = udiv(i, p.hw * p.c);
    let rest = i - row * p.hw * p.c;
    let tap = udiv(rest, p.c);
    let ch = rest - tap * p.c;
    dst[ch * p.dst_b + (p.hw - 1u - tap) * p.w + row] = src[row * p.src_b + rest];
}
