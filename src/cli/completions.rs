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
    let mut command = super::Cli::command();
    clap_complete::generate(a.shell, &mut command, "vae-gpu", &mut std::io::stdout());
    Ok(())
}
