// The next token of each sequence being generated, from its logits [rows, vocab]: a draw
// from softmax(logits / temperature) (Philox uniform for (record, step, stream, draw) under
// the seed, `draw` telling batches apart), or the likeliest token at temperature 0. A sequence whose previous token was its
// end (or padding) gets padding. Tokens are time-major: step t's are t * rows .. + rows.

struct TokenParams {
    rows: u32,
    vocab: u32,
    ld: u32,
    step: u32,
    eos: u32,
    pad: u32,
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    temperature: f32,
    draw: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: TokenParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;

@compute @workgroup_size(256)
fn next_token_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = flat_index(wg, nwg, lid);
    if (b >= p.rows) { return; }
    let prev = tokens[p.step * p.rows + b];
    let out = (p.step + 1u) * p.rows + b;
    if (prev == p.eos || prev == p.pad) {
        tokens[out] = p.pad;
        return;
    }
    let base = b * p.ld;
    var best = 0u;
    var m = logits[base];
    for (var k = 1u; k < p.vocab; k++) {
        if (logits[base + k] > m) {
            m = logits[base + k];
            best = k;
        }
    }
    if (p.temperature <= 0.0) {
        tokens[out] = best;
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.vocab; k++) {
        s += exp((logits[base + k] - m) / p.temperature);
    }
    let r = philox4x32_10(vec4<u32>(b, p.step, p.stream, p.draw), vec2<u32>(p.seed_lo, p.seed_hi));
    let u = f32(r.x >> 8u) * (1.0 / 16777216.0) * s;
    // The first token whose cumulative weight passes u; the last if rounding leaves none.
    var c = 0.0;
    var pick = p.vocab - 1u;
    for (var k = 0u; k < p.vocab; k++) {
        c += exp((logits[base + k] - m) / p.temperature);
        if (c > u) {
            pick = k;
            break;
        }
    }
    tokens[out] = pick;
}
