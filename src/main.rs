use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use vae_gpu::cli::Cli;

fn main() {
    // A negative number is a value (that the flag then rejects by name), not an unknown flag.
    let command = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    let level = match cli.output.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|f, r| {
            let level = match r.level() {
                log::Level::Warn => "warning".to_string(),
                l => l.as_str().to_lowercase(),
            };
            writeln!(f, "{level}: {}", r.args())
        })
        .init();
    vae_gpu::quiet_headless_probes();
    if let Err(e) = vae_gpu::cli::run(cli) {
        // Exit codes by kind (listed in --help): 1 input, 3 diverged, 4 GPU; clap's is 2.
        let e = vae_gpu::Error::from(e);
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
