//! Host launchers, one module per kernel family. Each checks shapes before it builds a
//! `Dispatch`; the CPU twin of every kernel lives in the `cpu` module.

pub mod adam;
pub mod clip;
pub mod conv;
pub mod elementwise;
pub mod gather;
pub mod gemm;
pub mod gru;
pub mod iwae;
pub mod level;
pub mod loss;
pub mod moments;
pub mod norm;
pub mod sample;
pub mod sequence;
pub mod softmax;
pub mod tensor;
pub mod vamp;

use crate::gpu::{GpuError, Matrix};
use gemm::InputActivation;

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
    /// x * sigmoid(x); its derivative needs the input, so it is never fused into a GEMM or
    /// col2im epilogue (see `from_output`).
    Silu,
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
            Activation::Silu => (5, 0.0),
        }
    }

    /// Whether the derivative follows from the activation's output alone, so that a
    /// kernel keeping only the output can apply it.
    pub fn from_output(self) -> bool {
        self != Activation::Silu
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

/// A gradient epilogue's override constants (IN_ACT, IN_ACT_GRAD, ACCUMULATE).
pub(crate) type EpilogueConstants = [(&'static str, u32); 3];

/// What a gradient launch does with the value it computes: add it to what the target holds
/// (a tensor feeding several ops sums their gradients), and multiply the total by the
/// derivative of the activation that produced the tensor (the last contribution does).
#[derive(Clone, Copy, Debug, Default)]
pub struct GradEpilogue<'a> {
    pub accumulate: bool,
    pub act: Option<InputActivation<'a>>,
}

impl GradEpilogue<'_> {
    /// Override constants IN_ACT, IN_ACT_GRAD, ACCUMULATE and the activation's slope;
    /// the activation output must be shaped like `target`.
    pub(crate) fn constants(&self, target: &Matrix) -> Result<(EpilogueConstants, f32), GpuError> {
        let act = self.act.map_or(Activation::Identity, |a| a.act);
        if let Some(a) = self.act {
            if !act.from_output() {
                return Err(shape_err(
                    "gradient epilogue",
                    format!("{act:?}'s derivative needs its input, not its output"),
                ));
            }
            if (a.output.rows, a.output.cols, a.output.ld) != (target.rows, target.cols, target.ld)
            {
                return Err(shape_err(
                    "gradient epilogue",
                    "the activation output must be shaped like the gradient".into(),
                ));
            }
        }
        act.check()?;
        Ok((
            [
                ("IN_ACT", act.code().0),
                ("IN_ACT_GRAD", u32::from(self.act.is_some())),
                ("ACCUMULATE", u32::from(self.accumulate)),
            ],
            act.code().1,
        ))
    }
}

fn shape_err(op: &str, msg: String) -> GpuError {
    GpuError::Shape(format!("{op}: {msg}"))
}
