//! vae-gpu: Variational Autoencoders trained and used entirely on the GPU, every tensor
//! operation a WGSL compute shader run through wgpu.

pub mod cli;
pub mod cpu;
pub mod gpu;
pub mod ops;
