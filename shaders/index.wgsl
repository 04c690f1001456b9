// Flat element index of a 1-D launch folded into a 2-D grid of 256-wide workgroups
// (the grid is folded so that large launches stay under 65535 workgroups per dimension).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid;
}
