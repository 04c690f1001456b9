//! Command-line front end: one module per subcommand.

pub mod info;

use clap::{Args, Parser, Subcommand};

use crate::gpu::{BackendChoice, GpuOptions};

#[derive(Parser, Debug)]
#[command(
    name = "vae-gpu",
    version,
    about = "Variational Autoencoders trained and used entirely on the GPU (WGSL compute shaders via wgpu)",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Which GPU to use; shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Graphics API back end: auto prefers a real GPU, then a CPU Vulkan driver, then GL.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WGPU_BACKEND",
        default_value = "auto"
    )]
    pub backend: BackendChoice,
    /// Use the adapter whose name contains this text (case-insensitive); see `vae-gpu info`.
    #[arg(long, global = true, env = "WGPU_ADAPTER_NAME")]
    pub adapter: Option<String>,
    /// Turn on wgpu validation (and the Vulkan validation layers when installed).
    #[arg(long, global = true)]
    pub validation: bool,
}

impl DeviceArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend,
            adapter: self.adapter.clone(),
            validation: self.validation,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every GPU adapter with its back end, type, driver, limits and features, marking
    /// the one that would be used.
    Info,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info => info::run(&cli.device),
    }
}
