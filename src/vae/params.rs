//! The model's parameters in one flat GPU buffer (so one Adam launch updates them all),
//! with gradients and Adam moments in parallel flat buffers at the same offsets.
//! Each weight is stored as its PyTorch layout flattened to a matrix (see `arch`) and
//! starts at a 256-byte boundary (the storage binding alignment); the gaps stay zero.

use crate::gpu::{round_up4, Gpu, GpuError, Matrix};
use crate::rng::Rng;

use super::arch::{Arch, LayerDef};
use super::config::ModelConfig;

/// Where one tensor lives in the flat buffers.
#[derive(Clone, Debug)]
pub struct Slot {
    pub name: String,
    /// Float offset into the flat buffers.
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Slot {
    pub fn ld(&self) -> usize {
        round_up4(self.cols)
    }
}

/// One layer's definition and where its weight and bias live.
pub struct Layer {
    pub def: LayerDef,
    pub weight: Slot,
    pub bias: Slot,
}

pub struct Params {
    pub layers: Vec<Layer>,
    /// Index of the layer whose output is mu | logvar.
    pub heads: usize,
    /// Total floats (a multiple of 64).
    pub len: usize,
    pub values: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

/// 64 floats = 256 bytes, the largest storage offset alignment wgpu allows.
const ALIGN: usize = 64;

impl Params {
    /// Allocates the buffers and initialises like PyTorch's layers: weights and biases
    /// uniform in +-1/sqrt(fan_in), drawn from the seed.
    pub fn new(gpu: &Gpu, c: &ModelConfig, seed: u64) -> Result<Params, GpuError> {
        let arch = Arch::new(c).map_err(GpuError::Config)?;
        let mut offset = 0;
        let mut slot = |name: String, rows: usize, cols: usize| {
            let s = Slot {
                name,
                offset,
                rows,
                cols,
            };
            offset += (rows * round_up4(cols)).div_ceil(ALIGN) * ALIGN;
            s
        };
        let layers: Vec<Layer> = arch
            .layers
            .into_iter()
            .map(|def| {
                let (rows, cols) = def.weight_dims();
                let name = def.parts[0].0.clone();
                Layer {
                    weight: slot(format!("{name}.weight"), rows, cols),
                    bias: slot(format!("{name}.bias"), 1, def.bias_len()),
                    def,
                }
            })
            .collect();
        let len = offset;
        let make = |label: &str| {
            let size = (len * 4) as u64;
            if size > gpu.limits.max_storage_buffer_binding_size {
                return Err(GpuError::Limit(format!(
                    "{len} parameters exceed the adapter's binding limit"
                )));
            }
            Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: Matrix::USAGE,
                mapped_at_creation: false,
            }))
        };
        let params = Params {
            values: make("params")?,
            grads: make("grads")?,
            m: make("adam m")?,
            v: make("adam v")?,
            layers,
            heads: arch.heads,
            len,
        };
        let mut rng = Rng::new(seed);
        let mut host = vec![0f32; len];
        for layer in &params.layers {
            // PyTorch's fan_in is the weight's flattened column count for all three kinds.
            let bound = 1.0 / (layer.weight.cols as f64).sqrt();
            for s in [&layer.weight, &layer.bias] {
                for r in 0..s.rows {
                    for col in 0..s.cols {
                        host[s.offset + r * s.ld() + col] = rng.uniform(-bound, bound) as f32;
                    }
                }
            }
        }
        gpu.queue
            .write_buffer(&params.values, 0, bytemuck::cast_slice(&host));
        Ok(params)
    }

    pub fn view(&self, buffer: &wgpu::Buffer, s: &Slot) -> Matrix {
        Matrix {
            buffer: buffer.clone(),
            offset: (s.offset * 4) as u64,
            rows: s.rows,
            cols: s.cols,
            ld: s.ld(),
        }
    }
}
