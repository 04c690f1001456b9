//! The library's API: [`Vae`], [`Trainer`], what they take ([`Input`]) and their [`Error`].

mod error;
mod input;
mod trainer;
mod vae;

pub use error::{Error, Result};
pub use input::Input;
pub use trainer::Trainer;
pub use vae::{Codes, Vae};
