// Gathers a batch x[r, j] = pixel / 255 from a dataset held on the GPU as u8 (packed four
// to a u32), or x[r, j] = value from one held as f32, picking image indices[offset + r]
// (with `repeat` R > 1, indices[offset + r / R]: each image R times in a row, the samples
// of an importance-weighted step). Rows past the end of `indices` repeat its last entry;
// the loss masks them out. With `binarize`, each value becomes a binary draw, 1 with the
// value as probability (dynamic binarization), keyed by (value, image, step, stream): the
// same image at the same step draws the same, whatever row it lands in. A dataset
// larger than one storage binding is split into up to four chunks of `per_chunk` whole
// images each.

struct GatherParams {
    rows: u32,
    d: u32,
    ld_x: u32,
    offset: u32,
    count: u32,
    per_chunk: u32,
    repeat: u32,
    binarize: u32,
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    stream: u32,
}

@group(0) @binding(0) var<uniform> p: GatherParams;
@group(0) @binding(1) var<storage, read> pixels0: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> pixels1: array<u32>;
@group(0) @binding(5) var<storage, read> pixels2: array<u32>;
@group(0) @binding(6) var<storage, read> pixels3: array<u32>;
@group(0) @binding(7) var<storage, read_write> x4: array<vec4<f32>>;

// Value j of image `image` as the batch holds it: itself, or a binary draw of it.
fn value_of(v: f32, j: u32, image: u32) -> f32 {
    if (p.binarize == 0u) {
        return v;
    }
    let r = philox4x32_10(vec4<u32>(j, image, p.step, p.stream), vec2<u32>(p.seed_lo, p.seed_hi));
    return select(0.0, 1.0, f32(r.x >> 8u) * (1.0 / 16777216.0) < v);
}

// The image (or label) index of batch row r.
fn image_of(r: u32) -> u32 {
    var k = r;
    if (p.repeat > 1u) {
        k = udiv(r, p.repeat);
    }
    return indices[min(p.offset + k, p.count - 1u)];
}

fn pixel_word(chunk: u32, w: u32) -> u32 {
    switch chunk {
        case 0u: { return pixels0[w]; }
        case 1u: { return pixels1[w]; }
        case 2u: { return pixels2[w]; }
        default: { return pixels3[w]; }
    }
}

// Where element i of the batch comes from: its row and column in x, its image's chunk,
// and its value's index within that chunk.
fn locate(i: u32) -> vec4<u32> {
    let r = udiv(i, p.d);
    let j = i - r * p.d;
    let image = image_of(r);
    let chunk = udiv(image, p.per_chunk);
    return vec4<u32>(r, j, chunk, (image - chunk * p.per_chunk) * p.d + j);
}

// The image of element `at` (from `locate`).
fn image_at(at: vec4<u32>) -> u32 {
    return at.z * p.per_chunk + udiv(at.w - at.y, p.d);
}

@compute @workgroup_size(256)
fn gather_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.d) { return; }
    let at = locate(i);
    let v = (pixel_word(at.z, at.w >> 2u) >> ((at.w & 3u) * 8u)) & 0xffu;
    x[at.x * p.ld_x + at.y] = value_of(f32(v) * (1.0 / 255.0), at.y, image_at(at));
}

// The same, one packed word (four pixels) per invocation, when images are a multiple of
// 4 pixels long (so words never straddle images).
@compute @workgroup_size(256)
fn gather_vec4_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let words = p.d / 4u;
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * words) { return; }
    let r = udiv(i, words);
    let w = i - r * words;
    let image = image_of(r);
    let chunk = udiv(image, p.per_chunk);
    let v = pixel_word(chunk, (image - chunk * p.per_chunk) * words + w);
    let bytes = vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u);
    let y = vec4<f32>(bytes) * (1.0 / 255.0);
    let j = w * 4u;
    x4[r * (p.ld_x / 4u) + w] = vec4<f32>(
        value_of(y.x, j, image),
        value_of(y.y, j + 1u, image),
        value_of(y.z, j + 2u, image),
        value_of(y.w, j + 3u, image),
    );
}

// The same for f32 data: one value per word, taken as it is.
@compute @workgroup_size(256)
fn gather_f32_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.d) { return; }
    let at = locate(i);
    x[at.x * p.ld_x + at.y] = value_of(bitcast<f32>(pixel_word(at.z, at.w)), at.y, image_at(at));
}

// A conditional model's classes: y[r, c] = 1 where c is the label of image
// indices[offset + r] (u32 labels in pixels0), else 0; `d` is the number of classes.
@compute @workgroup_size(256)
fn one_hot_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wg, nwg, lid);
    if (i >= p.rows * p.d) { return; }
    let r = udiv(i, p.d);
    let c = i - r * p.d;
    let label = pixels0[image_of(r)];
    x[r * p.ld_x + c] = select(0.0, 1.0, label == c);
}
