// Activation functions shared by the GEMM epilogues and the elementwise kernels.
// Codes: 0 identity, 1 ReLU, 2 LeakyReLU(slope), 3 sigmoid, 4 tanh.
// Backward is expressed through the forward output y, so layers only keep y.

fn act_forward(x: f32, kind: u32, slope: f32) -> f32 {
    switch kind {
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(x * slope, x, x > 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        case 4u: {
            // exp of a non-positive argument never overflows, unlike the builtin on some back ends
            let e = exp(-2.0 * abs(x));
            return sign(x) * (1.0 - e) / (1.0 + e);
        }
        default: { return x; }
    }
}

fn act_grad_from_output(y: f32, kind: u32, slope: f32) -> f32 {
    switch kind {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return select(slope, 1.0, y > 0.0); }
        case 3u: { return y * (1.0 - y); }
        case 4u: { return 1.0 - y * y; }
        default: { return 1.0; }
    }
}
