use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use vae_gpu::cli::{write_stderr, Cli};

fn main() {
    // A negative number is a value (that the flag then rejects by name), not an unknown flag.
    let command = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| {
            // clap ignores a failed write of --help or --version; a stdout that cannot take
            // them (a full disk) is an error, as for every other result.
            if !e.use_stderr() {
                match e.print().and_then(|()| std::io::stdout().flush()) {
                    // A reader that has read enough (`--help | head`) is no failure.
                    Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                        write_stderr(format_args!("error: writing to stdout: {err}"));
                        std::process::exit(1);
                    }
                    _ => std::process::exit(e.exit_code()),
                }
            }
            e.exit()
        });
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
        write_stderr(format_args!("error: {e}"));
        std::process::exit(e.exit_code());
    }
}
