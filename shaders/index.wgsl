// Flat element index of a 1-D launch folded into a 2-D grid of 256-wide workgroups
// (the grid is folded so that large launches stay under 65535 workgroups per dimension).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid;
}

// a / b without integer division, which CPU drivers run one lane at a time: a float
// quotient, refined by the float quotient of its remainder, then corrected by one in
// integers. Exact for a < 2^29 (any element index of a bindable buffer) and 0 < b < 2^23,
// even where float division is only within the 2.5 ulp Vulkan allows: the first estimate
// is within (a / b) 2^-21 + 1 of a / b, so the remainder is exact in f32 and the second estimate
// within 1 of the quotient.
fn udiv(a: u32, b: u32) -> u32 {
    let fb = f32(b);
    var q = i32(f32(a) / fb);
    q += i32(floor(f32(i32(a) - q * i32(b)) / fb));
    let r = i32(a) - q * i32(b);
    return u32(q + select(0, -1, r < 0) + select(0, 1, r >= i32(b)));
}
