//! The model's parameters in one flat GPU buffer (so one Adam launch updates them all),
//! with gradients and Adam moments in parallel flat buffers at the same offsets.
//! Each weight is [out, in] like PyTorch's nn.Linear and starts at a 256-byte boundary
//! (the storage binding alignment); the gaps stay zero.

use crate::gpu::{round_up4, Gpu, GpuError, Matrix};
use crate::rng::Rng;

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
    pub fn shape(&self) -> Vec<usize> {
        if self.rows == 1 {
            vec![self.cols]
        } else {
            vec![self.rows, self.cols]
        }
    }
}

/// A fully connected layer: weight [out, in] and bias [out] as views into the buffers.
pub struct Linear {
    pub weight: Slot,
    pub bias: Slot,
    /// PyTorch names of the checkpoint tensors this layer is stored as: usually one
    /// (weight, bias) pair; the fused mu/logvar heads split into two by rows.
    pub parts: Parts,
}

pub struct Params {
    pub layers: Vec<Linear>,
    /// Total floats (a multiple of 64).
    pub len: usize,
    pub values: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

/// 64 floats = 256 bytes, the largest storage offset alignment wgpu allows.
const ALIGN: usize = 64;

/// Checkpoint names of a layer's tensors with the rows each takes.
type Parts = Vec<(String, usize)>;

/// Layer list of the MLP: encoder hidden layers, the fused (mu, logvar) heads, decoder
/// hidden layers, output. Returns (in, out, checkpoint parts) per layer.
fn mlp_layers(c: &ModelConfig) -> Vec<(usize, usize, Parts)> {
    let name = |base: &str, i: usize| {
        if i == 0 {
            base.to_string()
        } else {
            format!("{base}_{i}")
        }
    };
    let mut layers = Vec::new();
    let mut width = c.input_dim();
    for (i, &h) in c.hidden.iter().enumerate() {
        layers.push((width, h, vec![(name("fc1", i), h)]));
        width = h;
    }
    layers.push((
        width,
        2 * c.latent,
        vec![
            ("fc21".to_string(), c.latent),
            ("fc22".to_string(), c.latent),
        ],
    ));
    width = c.latent;
    for (i, &h) in c.hidden.iter().rev().enumerate() {
        layers.push((width, h, vec![(name("fc3", i), h)]));
        width = h;
    }
    layers.push((
        width,
        c.input_dim(),
        vec![("fc4".to_string(), c.input_dim())],
    ));
    layers
}

impl Params {
    /// Allocates the buffers and initialises like PyTorch's nn.Linear: weights and biases
    /// uniform in +-1/sqrt(fan_in), drawn from the seed.
    pub fn new(gpu: &Gpu, c: &ModelConfig, seed: u64) -> Result<Params, GpuError> {
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
        let layers: Vec<Linear> = mlp_layers(c)
            .into_iter()
            .map(|(fan_in, out, parts)| Linear {
                weight: slot(format!("{}.weight", parts[0].0), out, fan_in),
                bias: slot(format!("{}.bias", parts[0].0), 1, out),
                parts,
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
                usage: crate::gpu::Matrix::USAGE,
                mapped_at_creation: false,
            }))
        };
        let params = Params {
            values: make("params")?,
            grads: make("grads")?,
            m: make("adam m")?,
            v: make("adam v")?,
            layers,
            len,
        };
        let mut rng = Rng::new(seed);
        let mut host = vec![0f32; len];
        for layer in &params.layers {
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

    /// Every weight and bias slot, in layer order.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.layers.iter().flat_map(|l| [&l.weight, &l.bias])
    }
}
