//! Matrices mirrored into textures for the texture GEMM kernels (shaders/gemm_textures.wgsl).
//! A texture operand holds a matrix's stored floats texel by texel, folded into rows of
//! `TEX_WIDTH` texels whatever the matrix's shape, so one or two `copy_buffer_to_texture`
//! commands refresh it from the buffer (copies need rows of a multiple of 256 bytes, which a
//! matrix's own rows rarely are). The copy runs before the launch that reads it, in the same
//! command buffer: on lavapipe it costs about 0.03 ms per MB, against GEMM savings of
//! several times that.

use super::{Gpu, GpuError, Matrix};

/// Texels per texture row; shaders/texel.wgsl folds indices with TEX_SHIFT = 10.
pub const TEX_WIDTH: u32 = 1024;

/// Where a kernel reads its read-only inputs: storage buffers, or textures copied from them
/// before the launch. Chosen per device by measurement (`Gpu::choose`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    Buffers,
    Textures,
}

impl Reads {
    /// The ways a kernel can read an input of `floats` floats: textures only where it fits.
    pub fn candidates(gpu: &Gpu, floats: usize) -> &'static [Reads] {
        if TextureOperand::fits(gpu, floats) {
            &[Reads::Buffers, Reads::Textures]
        } else {
            &[Reads::Buffers]
        }
    }
}

/// Bytes of one rgba32float texel.
const TEXEL: u64 = 16;

/// A read-only texture copy of one matrix, refreshed by `record_copy`.
pub struct TextureOperand {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    buffer: wgpu::Buffer,
    offset: u64,
    texels: u32,
}

/// Texture rows for `floats` stored floats, never a power of two: at least 3, and one
/// more where the rows needed are a power of two. llvmpipe and lavapipe compile a kernel
/// once per combination of "is this bound texture's width / height a power of two"
/// (`pot_width`, `pot_height` in their texture variant key), about a second of LLVM each.
/// Heights that followed the matrices' sizes made one GEMM pipeline up to four compiles in
/// every process (README, Speed, has the start-up times before and after). The width,
/// 1024, always is a power of two, so every texture falls in the same combination.
fn texture_rows(floats: usize) -> usize {
    let rows = (floats / 4).div_ceil(TEX_WIDTH as usize).max(3);
    if rows.is_power_of_two() {
        rows + 1
    } else {
        rows
    }
}

impl TextureOperand {
    /// Whether a matrix of `floats` stored floats fits the adapter's texture size.
    pub fn fits(gpu: &Gpu, floats: usize) -> bool {
        texture_rows(floats) <= gpu.limits.max_texture_dimension_2d as usize
    }

    /// A texture for the first `len` floats of `buffer`.
    pub fn for_buffer(
        gpu: &Gpu,
        buffer: &wgpu::Buffer,
        len: usize,
        label: &str,
    ) -> Result<TextureOperand, GpuError> {
        let m = Matrix {
            buffer: buffer.clone(),
            offset: 0,
            rows: 1,
            cols: len,
            ld: len,
        };
        TextureOperand::new(gpu, &m, label)
    }

    /// A texture for `m`'s stored floats (rows x ld, from its offset).
    pub fn new(gpu: &Gpu, m: &Matrix, label: &str) -> Result<TextureOperand, GpuError> {
        let floats = m.rows * m.ld;
        if !TextureOperand::fits(gpu, floats) || !m.offset.is_multiple_of(TEXEL) {
            return Err(GpuError::Limit(format!(
                "{label} [{}, {}] does not fit a texture of {} rows",
                m.rows, m.cols, gpu.limits.max_texture_dimension_2d
            )));
        }
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: TEX_WIDTH,
                height: texture_rows(floats) as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Ok(TextureOperand {
            texture,
            view,
            buffer: m.buffer.clone(),
            offset: m.offset,
            texels: (floats / 4) as u32,
        })
    }

    /// Records the copy of the matrix into the texture: the whole texture rows, then the
    /// rest of the last one.
    pub fn record_copy(&self, encoder: &mut wgpu::CommandEncoder) {
        let full = self.texels / TEX_WIDTH;
        let rest = self.texels % TEX_WIDTH;
        let part = |encoder: &mut wgpu::CommandEncoder, row: u32, width: u32, height: u32| {
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: self.offset + u64::from(row * TEX_WIDTH) * TEXEL,
                        bytes_per_row: Some(TEX_WIDTH * TEXEL as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
            );
        };
        if full > 0 {
            part(encoder, 0, TEX_WIDTH, full);
        }
        if rest > 0 {
            part(encoder, full, rest, 1);
        }
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::TextureView(&self.view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texture_heights_hold_the_floats_and_are_never_powers_of_two() {
        let row = 4 * TEX_WIDTH as usize;
        for floats in (0..40 * row)
            .step_by(509)
            .chain([row, 2 * row, 4 * row, 64 * row])
        {
            let rows = texture_rows(floats);
            assert!(rows * row >= floats, "{floats} floats in {rows} rows");
            assert!(!rows.is_power_of_two(), "{floats} floats: {rows} rows");
        }
    }
}
