//! What a line typed at the shell's prompt asks for: split as a shell splits it, then parsed
//! by hz's own command line, so every command works here as after `hz`.

use crate::args::{Cli, Command};
use clap::{CommandFactory as _, Parser as _};

/// One line, understood.
#[derive(Debug)]
pub(crate) enum Line {
    /// Nothing typed.
    Empty,
    /// `quit` or `exit`.
    Quit,
    /// `help` alone: the list of commands.
    Help(String),
    /// A command to run.
    Run(Box<Command>),
    /// What clap says: help (`status --help`, `help status`) or a usage error.
    Clap(clap::Error),
    /// A line the shell does not run, and why.
    Refused(String),
}

/// The global flags, which the shell takes once, when it starts.
const GLOBALS: [&str; 3] = ["--herzog", "--tls", "--config"];

/// Understands one line.
pub(crate) fn parse(text: &str) -> Line {
    let Some(words) = shlex::split(text) else {
        return Line::Refused("a quote is not closed: close it, or escape it with \\".to_string());
    };
    let Some(first) = words.first() else {
        return Line::Empty;
    };
    match first.as_str() {
        "quit" | "exit" => return Line::Quit,
        "help" if words.len() == 1 => return Line::Help(help()),
        "help" => {
            if let Some(why) = not_here_word(&words[1]) {
                return Line::Refused(why.to_string());
            }
        }
        word => {
            if let Some(why) = not_here_word(word) {
                return Line::Refused(why.to_string());
            }
            if Cli::command().find_subcommand(word).is_none() {
                return Line::Refused(format!("unknown command '{word}': `help` lists the commands"));
            }
        }
    }
    if let Some(flag) = words.iter().find(|w| GLOBALS.iter().any(|g| is_flag(w, g))) {
        return Line::Refused(format!(
            "{flag} is set for the whole shell: give --herzog, --tls and --config to `hz shell` (or set HERZOG_ADDR, HERZOG_TLS, HERZOG_CONFIG)"
        ));
    }
    match Cli::try_parse_from(std::iter::once("hz".to_string()).chain(words)) {
        Ok(cli) => Line::Run(Box::new(cli.command)),
        Err(e) => Line::Clap(e),
    }
}

fn is_flag(word: &str, flag: &str) -> bool {
    word == flag || word.strip_prefix(flag).is_some_and(|rest| rest.starts_with('='))
}

/// Why a command does not run in the shell, if it does not.
pub(crate) fn not_here(command: &Command) -> Option<&'static str> {
    match command {
        Command::Local(_) => not_here_word("local"),
        Command::Shell => not_here_word("shell"),
        Command::Completions(_) => not_here_word("completions"),
        Command::Man => not_here_word("man"),
        _ => None,
    }
}

pub(crate) fn not_here_word(word: &str) -> Option<&'static str> {
    Some(match word {
        "local" => "`local` runs its own herzog and worker: run `hz local ...` outside the shell",
        "shell" => "this is the shell already",
        "completions" => {
            "`completions` writes a script for bash, zsh or fish: run `hz completions SHELL` outside the shell; here Tab completes"
        }
        "man" => {
            "`man` prints hz's man page: run `hz man | man -l -` outside the shell; here `help COMMAND` says what one does"
        }
        _ => return None,
    })
}

/// The commands that run in the shell, with what each does, and the shell's own.
fn help() -> String {
    let tree = Cli::command();
    let mut rows: Vec<(String, String)> = tree
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && not_here_word(c.get_name()).is_none())
        .map(|c| {
            (
                c.get_name().to_string(),
                c.get_about().map(|a| a.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    rows.push((
        "help [COMMAND]".into(),
        "This list, or what COMMAND does and takes".into(),
    ));
    rows.push(("quit, exit".into(), "Leave the shell (Ctrl-D too)".into()));
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut text = String::from(
        "Every hz command, typed without `hz` (`COMMAND --help` for its options); Tab completes commands,\n\
         flags, services, projects and workers; Ctrl-C stops a running command, not the shell.\n\n",
    );
    for (name, about) in rows {
        text.push_str(&format!("  {name:width$}  {about}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_as_a_shell_does_and_parsed_as_hz_parses() {
        assert!(matches!(parse("   "), Line::Empty));
        assert!(matches!(parse("exit"), Line::Quit));
        let Line::Run(command) = parse("restart 'web:1' all") else {
            panic!("a command")
        };
        let Command::Restart(a) = *command else {
            panic!("restart")
        };
        assert_eq!(a.names, ["web:1", "all"]);
        let Line::Run(command) = parse(r#"action in "wc -l" --name n"#) else {
            panic!("a command")
        };
        let Command::Action(a) = *command else { panic!("action") };
        assert_eq!(a.run.program, "wc -l");
        assert!(matches!(parse("tail web -f"), Line::Run(c) if matches!(*c, Command::Tail(ref t) if t.follow)));
    }

    #[test]
    fn what_the_shell_does_not_run_is_said() {
        let refused = |line: &str| match parse(line) {
            Line::Refused(why) => why,
            other => panic!("{line}: {other:?}"),
        };
        assert!(refused("frobnicate x").contains("unknown command 'frobnicate'"));
        assert!(refused("status 'web").contains("quote"));
        assert!(refused("local dir prog").contains("outside the shell"));
        assert!(refused("help man").contains("hz man"));
        assert!(refused("status --herzog h:1").contains("whole shell"));
        assert!(refused("status --tls=x").contains("whole shell"));
        // A usage error and a help request are clap's to say.
        assert!(matches!(parse("start"), Line::Clap(e) if e.use_stderr()));
        assert!(matches!(parse("status --help"), Line::Clap(e) if !e.use_stderr()));
        assert!(matches!(parse("help status"), Line::Clap(e) if !e.use_stderr()));
        let Line::Help(text) = parse("help") else {
            panic!("help")
        };
        assert!(
            text.contains("shutdown") && text.contains("quit") && !text.contains("completions"),
            "{text}"
        );
    }
}
