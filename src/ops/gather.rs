//! Batch gather from a u8 dataset resident on the GPU (see shaders/gather.wgsl).

use super::shape_err;
use crate::data::Dtype;
use crate::gpu::shaders::Shader;
use crate::gpu::{Dispatch, Gpu, GpuError, Matrix};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
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

impl GatherParams {
    /// Rows of `out` (its columns the values per image) from `count` indices, at offset 0,
    /// each image once, as it is.
    fn new(out: &Matrix, count: usize, per_chunk: u32) -> GatherParams {
        GatherParams {
            rows: out.rows as u32,
            d: out.cols as u32,
            ld_x: out.ld as u32,
            offset: 0,
            count: count as u32,
            per_chunk,
            repeat: 1,
            binarize: 0,
            seed_lo: 0,
            seed_hi: 0,
            step: 0,
            stream: 0,
        }
    }
}

/// Most chunks a dataset may be split into (the gather kernel's pixel bindings).
const MAX_CHUNKS: usize = 4;

/// Images on the GPU, `d` values per image: u8 pixels packed four to a u32, or f32 values,
/// in up to four buffers of `per_chunk` whole images each when the dataset exceeds one
/// storage binding.
pub struct GpuImages {
    pub chunks: Vec<wgpu::Buffer>,
    pub per_chunk: usize,
    pub count: usize,
    pub d: usize,
    pub dtype: Dtype,
}

impl GpuImages {
    pub fn upload(gpu: &Gpu, pixels: &[u8], d: usize, dtype: Dtype) -> Result<GpuImages, GpuError> {
        let limit = gpu
            .limits
            .max_storage_buffer_binding_size
            .min(gpu.limits.max_buffer_size);
        GpuImages::upload_chunked(gpu, pixels, d, dtype, limit as usize)
    }

    /// As `upload`, with chunks of at most `limit` bytes (tests use small limits).
    pub fn upload_chunked(
        gpu: &Gpu,
        pixels: &[u8],
        d: usize,
        dtype: Dtype,
        limit: usize,
    ) -> Result<GpuImages, GpuError> {
        let image = d * dtype.size();
        if d == 0 || !pixels.len().is_multiple_of(image) {
            return Err(shape_err(
                "dataset upload",
                format!(
                    "{} bytes is not a whole number of {d}-value {dtype:?} images",
                    pixels.len()
                ),
            ));
        }
        let count = pixels.len() / image;
        // Whole images per chunk, each indexable in u32 words.
        let per_chunk = (limit / image).min(u32::MAX as usize / d).max(1);
        let chunks = count.div_ceil(per_chunk).max(1);
        if chunks > MAX_CHUNKS || image > limit {
            return Err(GpuError::Limit(format!(
                "dataset of {} bytes needs {chunks} buffers of at most {limit} bytes; this adapter takes {MAX_CHUNKS} (use fewer or smaller images)",
                pixels.len()
            )));
        }
        let chunks = pixels
            .chunks(per_chunk * image)
            .map(|part| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("dataset"),
                    size: (part.len().div_ceil(4) * 4).max(4) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let images = GpuImages {
            chunks,
            per_chunk,
            count,
            d,
            dtype,
        };
        images.write(gpu, pixels);
        Ok(images)
    }

    /// Replaces the images' pixels (as many bytes as were uploaded); the copy runs before
    /// the next submitted command buffer.
    pub fn write(&self, gpu: &Gpu, pixels: &[u8]) {
        let per_chunk = self.per_chunk * self.d * self.dtype.size();
        for (buffer, part) in self.chunks.iter().zip(pixels.chunks(per_chunk)) {
            // Buffer copies move whole words: the tail is padded.
            let whole = part.len() / 4 * 4;
            if whole > 0 {
                gpu.queue.write_buffer(buffer, 0, &part[..whole]);
            }
            if whole < part.len() {
                let mut tail = [0u8; 4];
                tail[..part.len() - whole].copy_from_slice(&part[whole..]);
                gpu.queue.write_buffer(buffer, whole as u64, &tail);
            }
        }
    }
}

/// x[r] = images[indices[offset + r]] / 255 for the rows of x.
pub struct GatherDispatch {
    pub dispatch: Dispatch,
    params: GatherParams,
}

impl GatherDispatch {
    /// Moves the batch window to `offset` within the index buffer.
    pub fn set_offset(&mut self, gpu: &Gpu, offset: usize) {
        self.params.offset = offset as u32;
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
    }

    /// Takes each image `repeat` times in a row (row r is image `offset + r / repeat`).
    pub fn set_repeat(&mut self, gpu: &Gpu, repeat: usize) {
        self.params.repeat = repeat.max(1) as u32;
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
    }

    /// Makes every value a binary draw (1 with the value as probability) from `noise`,
    /// keyed by (value, image, noise.step, noise.stream).
    pub fn set_binarize(&mut self, gpu: &Gpu, noise: crate::ops::sample::Noise) {
        self.params.binarize = 1;
        (self.params.seed_lo, self.params.seed_hi) = (noise.seed as u32, (noise.seed >> 32) as u32);
        (self.params.step, self.params.stream) = (noise.step, noise.stream);
        gpu.queue
            .write_buffer(&self.dispatch.params, 0, bytemuck::bytes_of(&self.params));
    }
}

/// `indices` holds `count` u32 image indices (all < images.count; the caller checks).
pub fn gather(
    gpu: &Gpu,
    images: &GpuImages,
    indices: &wgpu::Buffer,
    count: usize,
    x: &Matrix,
) -> Result<GatherDispatch, GpuError> {
    if x.cols != images.d || count == 0 || indices.size() < (count * 4) as u64 {
        return Err(shape_err(
            "gather",
            format!(
                "x has {} columns for {}-pixel images, {count} indices",
                x.cols, images.d
            ),
        ));
    }
    let params = GatherParams::new(x, count, images.per_chunk as u32);
    let chunk = |i: usize| {
        images
            .chunks
            .get(i)
            .unwrap_or(&gpu.dummy)
            .as_entire_binding()
    };
    // Whole packed words per invocation when images are a multiple of 4 pixels.
    let (entry, out, threads) = match images.dtype {
        Dtype::F32 => ("gather_f32_main", 3, x.rows * x.cols),
        Dtype::U8 if images.d.is_multiple_of(4) => ("gather_vec4_main", 7, x.rows * x.cols / 4),
        Dtype::U8 => ("gather_main", 3, x.rows * x.cols),
    };
    let dispatch = gpu.dispatch(
        "gather".into(),
        gpu.pipeline(Shader::Gather, entry, &[])?,
        gpu.uniform("gather params", &params),
        &[
            (1, chunk(0)),
            (2, indices.as_entire_binding()),
            (out, x.binding()),
            (4, chunk(1)),
            (5, chunk(2)),
            (6, chunk(3)),
        ],
        gpu.grid(threads.div_ceil(256) as u64)?,
    );
    Ok(GatherDispatch { dispatch, params })
}

/// y[r] = one_hot(labels[indices[offset + r]]) over `y.cols` classes: a conditional
/// model's classes for the batch `gather` picks (the same indices and offset).
pub fn one_hot(
    gpu: &Gpu,
    labels: &wgpu::Buffer,
    indices: &wgpu::Buffer,
    count: usize,
    y: &Matrix,
) -> Result<GatherDispatch, GpuError> {
    if y.cols == 0 || count == 0 || indices.size() < (count * 4) as u64 {
        return Err(shape_err(
            "one-hot",
            format!("{} classes, {count} indices", y.cols),
        ));
    }
    let params = GatherParams::new(y, count, u32::MAX);
    let dispatch = gpu.dispatch(
        "one-hot".into(),
        gpu.pipeline(Shader::Gather, "one_hot_main", &[])?,
        gpu.uniform("one-hot params", &params),
        &[
            (1, labels.as_entire_binding()),
            (2, indices.as_entire_binding()),
            (3, y.binding()),
        ],
        gpu.grid((y.rows * y.cols).div_ceil(256) as u64)?,
    );
    Ok(GatherDispatch { dispatch, params })
}
