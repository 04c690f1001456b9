//! The library's one error type.

use crate::gpu::GpuError;
use crate::vae::train::{Diverged, Interrupted};

/// Why a call failed. Each variant holds the whole message: what failed, and where (the
/// file, the flag or the setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: data, a checkpoint or codes file, a setting out of range, an I/O failure.
    #[error("{0}")]
    Input(String),
    /// Training stopped because a loss became NaN/Inf or blew up (see
    /// [`Trainer::max_loss_ratio`](crate::Trainer::max_loss_ratio)).
    #[error("{0}")]
    Diverged(String),
    /// No GPU adapter was found, or the device or its driver failed.
    #[error("{0}")]
    Gpu(String),
    /// Training was stopped from outside (Ctrl-C in the CLI) between two steps.
    #[error("{0}")]
    Interrupted(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<anyhow::Error> for Error {
    /// Classifies an internal error by the causes in its chain, keeping every message.
    fn from(e: anyhow::Error) -> Error {
        let message = format!("{e:#}");
        for cause in e.chain() {
            if cause.is::<Diverged>() {
                return Error::Diverged(message);
            }
            if cause.is::<Interrupted>() {
                return Error::Interrupted(message);
            }
            if cause
                .downcast_ref::<GpuError>()
                .is_some_and(GpuError::is_device_failure)
            {
                return Error::Gpu(message);
            }
        }
        Error::Input(message)
    }
}

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Error {
        Error::from(anyhow::Error::from(e))
    }
}

impl Error {
    /// The CLI's exit code for this error: 1 bad input, 3 diverged, 4 GPU, 130 interrupted
    /// (as a shell reports Ctrl-C; 2 is a usage error, which the argument parser reports
    /// before any of these).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 1,
            Error::Diverged(_) => 3,
            Error::Gpu(_) => 4,
            Error::Interrupted(_) => 130,
        }
    }
}
