//! Host launchers, one module per kernel family. Each checks shapes before it builds a
//! `Dispatch`; the CPU twin of every kernel lives in `crate::cpu`.

pub mod adam;
pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod gemm;
pub mod iwae;
pub mod loss;
pub mod sample;
pub mod softmax;

use crate::gpu::GpuError;

/// Activation applied by a GEMM epilogue or the elementwise kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    #[default]
    Identity,
    Relu,
    /// LeakyReLU with a positive slope for negative inputs.
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
}

impl Activation {
    /// (kernel code, slope) as the shaders expect them.
    pub(crate) fn code(self) -> (u32, f32) {
        match self {
            Activation::Identity => (0, 0.0),
            Activation::Relu => (1, 0.0),
            Activation::LeakyRelu(s) => (2, s),
            Activation::Sigmoid => (3, 0.0),
            Activation::Tanh => (4, 0.0),
        }
    }

    pub(crate) fn check(self) -> Result<(), GpuError> {
        match self {
            // The backward reads the sign of the output, which needs a positive slope.
            Activation::LeakyRelu(s) if !(s > 0.0 && s.is_finite()) => Err(GpuError::Shape(
                format!("LeakyReLU slope must be positive, got {s}"),
            )),
            _ => Ok(()),
        }
    }
}

fn shape_err(op: &str, msg: String) -> GpuError {
    GpuError::Shape(format!("{op}: {msg}"))
}
