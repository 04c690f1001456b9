//! `vae-gpu completions SHELL`: a completion script for the shell, generated from the same
//! definitions as the parser.

use clap::{Args, CommandFactory};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(a: &CompletionsArgs) -> anyhow::Result<()> {
    if super::output().json {
        anyhow::bail!("--json does not apply to completions (they are a shell script)");
    }
    let mut command = super::Cli::command();
    // Generated in memory, so a closed pipe or a full disk is handled, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut command, "vae-gpu", &mut script);
    super::write_stdout(&script);
    Ok(())
}
