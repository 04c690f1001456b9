use clap::{CommandFactory, FromArgMatches};

/// Exit codes: 0 success, 1 an error (bad input, I/O, GPU), 2 a usage error (clap), 3 a
/// training run that diverged.
fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // A negative number is a value (that the flag then rejects by name), not an unknown flag.
    let command = vae_gpu::cli::Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli =
        vae_gpu::cli::Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    if let Err(e) = vae_gpu::cli::run(cli) {
        eprintln!("error: {e:#}");
        let diverged = e.is::<vae_gpu::vae::train::Diverged>();
        std::process::exit(if diverged { 3 } else { 1 });
    }
}
