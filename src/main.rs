use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use vae_gpu::cli::Cli;

fn main() {
    // A negative number is a value (that the flag then rejects by name), not an unknown flag.
    let command = Cli::command().mut_subcommands(|c| c.allow_negative_numbers(true));
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    let level = match cli.output.verbose {
        _ if cli.output.quiet => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|f, r| writeln!(f, "{}: {}", r.level().as_str().to_lowercase(), r.args()))
        .init();
    quiet_display_probes();
    if let Err(e) = vae_gpu::cli::run(cli) {
        // Exit codes by kind (listed in --help): 1 input, 3 diverged, 4 GPU; clap's is 2.
        let e = vae_gpu::Error::from(e);
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

/// Mesa's Vulkan device-select layer and its EGL connect to a display server while listing
/// adapters, and print "XDG_RUNTIME_DIR is invalid or not set" on headless machines.
/// vae-gpu picks the adapter itself and never draws, so without a runtime directory both are
/// told not to look (unless the user has set these variables).
fn quiet_display_probes() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    for (var, value) in [("NODEVICE_SELECT", "1"), ("EGL_PLATFORM", "surfaceless")] {
        if std::env::var_os(var).is_none() {
            // Single-threaded here: no other thread reads the environment yet.
            std::env::set_var(var, value);
        }
    }
}
