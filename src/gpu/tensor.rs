//! Matrices on the GPU: row-major f32 with a row stride (`ld`) rounded up to 4 floats so
//! kernels can read rows as vec4. The padding is kept at zero: kernels write only real
//! elements, and uploads write zeros there.

use super::{read_buffer, Gpu, GpuError};

pub fn round_up4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// A [rows, cols] view into a buffer, at a byte offset that meets the storage alignment.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl Matrix {
    /// Usage of every buffer that holds matrices: bound as storage, copied both ways.
    pub const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
        .union(wgpu::BufferUsages::COPY_SRC)
        .union(wgpu::BufferUsages::COPY_DST);

    /// A new zeroed matrix in its own buffer.
    pub fn zeros(gpu: &Gpu, rows: usize, cols: usize, label: &str) -> Result<Matrix, GpuError> {
        let ld = round_up4(cols);
        let size = (rows * ld * 4).max(16) as u64;
        if size > gpu.limits.max_storage_buffer_binding_size || size > gpu.limits.max_buffer_size {
            return Err(GpuError::Limit(format!(
                "{label} [{rows}, {cols}] needs {size} bytes, the adapter binds at most {}",
                gpu.limits.max_storage_buffer_binding_size
            )));
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: Matrix::USAGE,
            mapped_at_creation: false,
        });
        Ok(Matrix {
            buffer,
            offset: 0,
            rows,
            cols,
            ld,
        })
    }

    /// A new matrix holding `data` (dense row-major, rows * cols values).
    pub fn from_slice(
        gpu: &Gpu,
        rows: usize,
        cols: usize,
        data: &[f32],
        label: &str,
    ) -> Result<Matrix, GpuError> {
        let m = Matrix::zeros(gpu, rows, cols, label)?;
        m.write(gpu, data)?;
        Ok(m)
    }

    /// Bytes the view spans, padding included.
    pub fn byte_len(&self) -> u64 {
        (self.rows * self.ld * 4).max(16) as u64
    }

    /// Overwrites the matrix with dense row-major `data`.
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<(), GpuError> {
        if data.len() != self.rows * self.cols {
            return Err(GpuError::Shape(format!(
                "upload of {} values into a [{}, {}] matrix",
                data.len(),
                self.rows,
                self.cols
            )));
        }
        let mut padded = vec![0f32; (self.byte_len() / 4) as usize];
        for (r, row) in data.chunks(self.cols.max(1)).enumerate() {
            padded[r * self.ld..r * self.ld + self.cols].copy_from_slice(row);
        }
        gpu.queue
            .write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(&padded));
        Ok(())
    }

    /// Reads the matrix back as dense row-major values (blocks until the GPU is done).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        let bytes = read_buffer(gpu, &self.buffer, self.offset, self.byte_len())?;
        let all: &[f32] = bytemuck::cast_slice(&bytes);
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            out.extend_from_slice(&all[r * self.ld..r * self.ld + self.cols]);
        }
        Ok(out)
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.byte_len()),
        })
    }

    /// The same contiguous data as [rows, cols] (e.g. [B*H*W, C] as [B, H*W*C]); needs a
    /// matrix without row padding and a `cols` that is a multiple of 4.
    pub fn reshaped(&self, rows: usize, cols: usize) -> Result<Matrix, GpuError> {
        if self.ld != self.cols || rows * cols != self.rows * self.cols || !cols.is_multiple_of(4) {
            return Err(GpuError::Shape(format!(
                "cannot view [{}, {}] (row stride {}) as [{rows}, {cols}]",
                self.rows, self.cols, self.ld
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            ld: cols,
            ..self.clone()
        })
    }

    /// Rows `start .. start + count` of the matrix, as a view of the same buffer. A kernel can
    /// bind it only where its byte offset is a multiple of the adapter's storage offset
    /// alignment (see `ops::gru::step_rows`).
    pub fn rows_view(&self, start: usize, count: usize) -> Result<Matrix, GpuError> {
        if start + count > self.rows || count == 0 {
            return Err(GpuError::Shape(format!(
                "rows {start}..{} of a [{}, {}] matrix",
                start + count,
                self.rows,
                self.cols
            )));
        }
        Ok(Matrix {
            offset: self.offset + (start * self.ld * 4) as u64,
            rows: count,
            ..self.clone()
        })
    }

    /// Whether `other` is the same shape.
    pub fn same_shape(&self, other: &Matrix) -> bool {
        self.rows == other.rows && self.cols == other.cols
    }
}
