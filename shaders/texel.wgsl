// Read-only textures that mirror a buffer (src/gpu/texture.rs): texel t holds floats
// 4t..4t+3, folded into texture rows of 1024 texels, so that any buffer is copied in with
// one or two copy_buffer_to_texture commands whatever its matrix's shape.

const TEX_SHIFT: u32 = 10u;

fn texel(t: u32) -> vec2<u32> {
    return vec2<u32>(t & ((1u << TEX_SHIFT) - 1u), t >> TEX_SHIFT);
}
