// The vec4 conv kernels read their source from a texture copy of it (texel.wgsl): on
// lavapipe a texture read is straight-line code, a storage-buffer read a per-lane loop.
@group(0) @binding(7) var src_t: texture_storage_2d<rgba32float, read>;

fn src_vec4(i: u32) -> vec4<f32> {
    return textureLoad(src_t, texel(i));
}
