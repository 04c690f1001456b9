// Activation functions shared by the GEMM epilogues and the elementwise kernels, on four
// values at once (scalar callers take `.x`). Codes: 0 identity, 1 ReLU, 2 LeakyReLU(slope),
// 3 sigmoid, 4 tanh, 5 SiLU.
// Backward is expressed through the forward output y where it can be, so layers only keep
// y; SiLU's derivative needs its input (act_grad_from_input), so it is never fused into a
// GEMM or col2im epilogue.
// Vector-wide on purpose: a GEMM epilogue inlines its store for every register-block row,
// and CPU drivers inline every call before folding the `kind` switch away, so one call per
// four values keeps pipeline creation on lavapipe 4x shorter than one call per value.

fn act_forward(x: vec4<f32>, kind: u32, slope: f32) -> vec4<f32> {
    switch kind {
        case 1u: { return max(x, vec4<f32>(0.0)); }
        case 2u: { return select(x * slope, x, x > vec4<f32>(0.0)); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        case 4u: {
            // exp of a non-positive argument never overflows, unlike the builtin on some back ends
            let e = exp(-2.0 * abs(x));
            return sign(x) * (1.0 - e) / (1.0 + e);
        }
        case 5u: { return x / (1.0 + exp(-x)); }
        default: { return x; }
    }
}

// act'(x) from the activation's input.
fn act_grad_from_input(x: vec4<f32>, kind: u32, slope: f32) -> vec4<f32> {
    switch kind {
        case 1u, 2u: { return act_grad_from_output(x, kind, slope); }
        case 3u: {
            let s = 1.0 / (1.0 + exp(-x));
            return s * (1.0 - s);
        }
        case 4u: {
            let t = act_forward(x, 4u, slope);
            return 1.0 - t * t;
        }
        case 5u: {
            let s = 1.0 / (1.0 + exp(-x));
            return s * (1.0 + x * (1.0 - s));
        }
        default: { return vec4<f32>(1.0); }
    }
}

fn act_grad_from_output(y: vec4<f32>, kind: u32, slope: f32) -> vec4<f32> {
    let pos = y > vec4<f32>(0.0);
    switch kind {
        case 1u: { return select(vec4<f32>(0.0), vec4<f32>(1.0), pos); }
        case 2u: { return select(vec4<f32>(slope), vec4<f32>(1.0), pos); }
        case 3u: { return y * (1.0 - y); }
        case 4u: { return 1.0 - y * y; }
        default: { return vec4<f32>(1.0); }
    }
}
