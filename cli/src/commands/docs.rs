//! `hz completions SHELL` and `hz man`: generated from the same clap definition the parser uses,
//! so they never fall behind the commands.

use crate::Outcome;
use crate::args::{Cli, CompletionShell};
use crate::error::CliError;
use clap::CommandFactory;
use std::io::Write;

/// Writes the completion script for `shell`.
pub(crate) fn completions(shell: CompletionShell, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: clap_complete panics on a failed write (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hz", &mut script);
    out.write_all(&script)?;
    Ok(Outcome::Ok)
}

/// Writes hz's man page, section 1, in roff.
pub(crate) fn man(out: &mut dyn Write) -> Result<Outcome, CliError> {
    clap_mangen::Man::new(Cli::command()).render(out)?;
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [CompletionShell::Bash, CompletionShell::Zsh, CompletionShell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            for word in ["action", "progress", "fragments", "completions", "herzog"] {
                assert!(script.contains(word), "{shell:?} script lacks {word}");
            }
        }
    }
}
