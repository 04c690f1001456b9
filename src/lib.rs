//! vae-gpu: Variational Autoencoders trained and used entirely on the GPU, every tensor
//! operation a WGSL compute shader run through wgpu.

pub mod cli;
pub mod cpu;
pub mod data;
pub mod gpu;
pub mod io;
pub mod ops;
pub mod rng;
pub mod vae;
