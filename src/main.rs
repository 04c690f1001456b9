use clap::Parser;

/// Exit codes: 0 success, 1 an error (bad input, I/O, GPU), 2 a usage error (clap), 3 a
/// training run that diverged.
fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = vae_gpu::cli::Cli::parse();
    if let Err(e) = vae_gpu::cli::run(cli) {
        eprintln!("error: {e:#}");
        let diverged = e.is::<vae_gpu::vae::train::Diverged>();
        std::process::exit(if diverged { 3 } else { 1 });
    }
}
