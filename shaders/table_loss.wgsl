// Reconstruction loss of table records (src/data/table.rs), in nats, one invocation per
// row: x holds [values | mask] (2E floats), the decoder's outputs are read per column block
// (kind, first value, first output, width):
//   numeric:     Gaussian with learned variance: outputs mean m and log-variance s,
//                0.5 (log 2 pi + s + (x - m)^2 e^-s)
//   binary:      Bernoulli on a logit l: max(l, 0) - l x + log(1 + e^-|l|)
//   categorical: softmax over the block's logits: logsumexp(l) - sum_k x_k l_k
// Each column counts only where its mask is 1 (a missing cell adds nothing and gets no
// gradient). Writes d(grad_scale * recon)/d(outputs) and the row's reconstruction into
// `partial` [rows, 1], which loss.wgsl's loss_rows_main adds to the KL, as for images.
// Rows at or past `valid` get zero loss and zero gradient.

const NUMERIC: u32 = 0u;
const BINARY: u32 = 1u;
const LOG_2PI: f32 = 1.8378770664093453;
// The learned log-variance is clamped to keep exp finite; outside it has no gradient.
const LOGVAR_MIN: f32 = -20.0;
const LOGVAR_MAX: f32 = 20.0;

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> outputs: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> blocks: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> doutputs: array<f32>;
@group(0) @binding(8) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64)
fn table_loss_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (row >= p.rows) { return; }
    let live = select(0.0, 1.0, row < p.valid);
    let scale = p.grad_scale * live;
    let o = row * p.ld_logits;
    let v = row * p.ld_x;
    var recon = 0.0;
    for (var b = 0u; b < p.table_blocks; b++) {
        let blk = blocks[b];
        let at = blk.y;
        let out = blk.z;
        let seen = x[v + p.table_e + at];
        if (blk.x == NUMERIC) {
            let t = x[v + at];
            let m = outputs[o + out];
            let raw = outputs[o + out + 1u];
            let s = clamp(raw, LOGVAR_MIN, LOGVAR_MAX);
            let prec = exp(-s);
            let r = t - m;
            recon += seen * 0.5 * (LOG_2PI + s + r * r * prec);
            doutputs[o + out] = scale * seen * (-r * prec);
            let inside = select(0.0, 1.0, raw == s);
            doutputs[o + out + 1u] = scale * seen * inside * 0.5 * (1.0 - r * r * prec);
        } else if (blk.x == BINARY) {
            let t = x[v + at];
            let l = outputs[o + out];
            recon += seen * (max(l, 0.0) - l * t + log(1.0 + exp(-abs(l))));
            doutputs[o + out] = scale * seen * (1.0 / (1.0 + exp(-l)) - t);
        } else {
            var top = outputs[o + out];
            for (var k = 1u; k < blk.w; k++) {
                top = max(top, outputs[o + out + k]);
            }
            var sum = 0.0;
            var picked = 0.0;
            for (var k = 0u; k < blk.w; k++) {
                let l = outputs[o + out + k];
                sum += exp(l - top);
                picked += x[v + at + k] * l;
            }
            recon += seen * (top + log(sum) - picked);
            for (var k = 0u; k < blk.w; k++) {
                let q = exp(outputs[o + out + k] - top) / sum;
                doutputs[o + out + k] = scale * seen * (q - x[v + at + k]);
            }
        }
    }
    partial[row] = recon * live;
}
