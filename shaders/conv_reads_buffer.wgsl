// The vec4 conv kernels read their source from the storage buffer.
fn src_vec4(i: u32) -> vec4<f32> {
    return src4[i];
}
