// Portable GEMM: 64x64 output tile per workgroup staged through workgroup memory,
// 16x16 invocations each holding a 4x4 register block. Used on real GPUs and on GL.

const TILE: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> tile_a: array<array<f32, 64>, 16>;
var<workgroup> tile_b: array<array<f32, 64>, 16>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 1024 elements of each tile, 4 per invocation; the contiguous dimension varies fastest.
        for (var i = 0u; i < 4u; i++) {
            let e = li + i * 256u;
            if (TRANS_A) {
                tile_a[e / 64u][e % 64u] = a_at(row0 + e % 64u, k0 + e / 64u);
            } else {
                tile_a[e % 16u][e / 16u] = a_at(row0 + e / 16u, k0 + e % 16u);
            }
            if (TRANS_B) {
                tile_b[e % 16u][e / 16u] = b_at(k0 + e % 16u, col0 + e / 16u);
            } else {
                tile_b[e / 64u][e % 64u] = b_at(k0 + e / 64u, col0 + e % 64u);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let bv = vec4<f32>(
                tile_b[kk][lid.x * 4u],
                tile_b[kk][lid.x * 4u + 1u],
                tile_b[kk][lid.x * 4u + 2u],
                tile_b[kk][lid.x * 4u + 3u],
            );
            for (var r = 0u; r < 4u; r++) {
                acc[r] += tile_a[kk][lid.y * 4u + r] * bv;
            }
        }
        workgroupBarrier();
    }
    let b = bias4(col0 + lid.x * 4u);
    for (var r = 0u; r < 4u; r++) {
        store4(row0 + lid.y * 4u + r, col0 + lid.x * 4u, acc[r], b);
    }
}
