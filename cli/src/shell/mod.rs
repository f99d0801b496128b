//! `hz shell`: a prompt for every hz command (supervisorctl's), with line editing, history
//! kept across sessions and Tab completion. Each line is parsed by hz's own command line
//! ([`line`]) and run by the same dispatch as `hz COMMAND`, over one connection kept for the
//! whole session and dialled again when herzog restarted. Ctrl-C stops a running command, and
//! cancels a line being typed; never the shell.

mod completion;
mod history;
mod line;
mod names;
mod prompt;

pub(crate) use line::not_here;

use crate::args::Command;
use crate::client::Endpoint;
use crate::error::CliError;
use crate::{Outcome, commands};
use line::Line;
use prompt::{Prompt, Read};
use std::io::{IsTerminal as _, Write};
use tarpc::client::RpcError;

const PROMPT: &str = "hz> ";

/// Whether `hz` without a command opens the shell: on a terminal, instead of the usage.
pub(crate) fn opens_on(kind: clap::error::ErrorKind) -> bool {
    use clap::error::ErrorKind;
    matches!(
        kind,
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) && std::io::stdin().is_terminal()
}

/// Reads lines and runs them until `quit`, `exit`, Ctrl-D or the end of the input.
pub(crate) async fn run(endpoint: Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    // SIGINT is handled from now on, so a Ctrl-C while a command runs never ends hz; each
    // command races its own listener.
    let _interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::Output(std::io::Error::other(format!("failed to handle Ctrl-C: {e}"))))?;
    let names = names::Names::new(endpoint.clone(), tokio::runtime::Handle::current());
    let interactive = std::io::stdin().is_terminal();
    // Lines read from a file or a pipe are a script's, not what someone typed: not kept.
    let history = history::path().filter(|_| interactive);
    let prompt = Prompt::start(history, completion::Helper::new(names))?;
    if interactive {
        note!(
            "hz shell: herzog at {}; `help` lists the commands, Tab completes, Ctrl-D quits",
            endpoint.addr
        );
    }
    loop {
        let text = match prompt.read(PROMPT, true).await? {
            Read::Line(text) => text,
            Read::Interrupted => continue,
            Read::Eof => break,
        };
        match line::parse(&text) {
            Line::Empty => {}
            Line::Quit => break,
            Line::Help(help) => out.write_all(help.as_bytes())?,
            Line::Clap(e) => {
                let _ = e.print();
            }
            Line::Refused(why) => note!("hz: {why}"),
            Line::Run(command) => {
                let Some(command) = confirmed(*command, &prompt, &endpoint).await? else {
                    continue;
                };
                match run_line(&text, command, &endpoint, out).await {
                    // The terminal echoed ^C without a newline.
                    Ok(Outcome::Interrupted) => note!(""),
                    Ok(_) => {}
                    Err(e) if e.is_broken_pipe() => return Err(e),
                    Err(e) => note!("hz: {e}"),
                }
            }
        }
        out.flush()?;
    }
    endpoint.close().await;
    Ok(Outcome::Ok)
}

/// The command once the user said yes, if it asks first (`shutdown` without `--yes` on a
/// terminal): asked at the prompt, which owns the terminal.
async fn confirmed(command: Command, prompt: &Prompt, endpoint: &Endpoint) -> Result<Option<Command>, CliError> {
    let Command::Shutdown(mut args) = command else {
        return Ok(Some(command));
    };
    // Without a terminal the command itself refuses, as `hz shutdown` does without --yes.
    if !args.yes && std::io::stdin().is_terminal() {
        let question = commands::shutdown::question(&args, &endpoint.addr);
        match prompt.read(&question, false).await? {
            Read::Line(answer) if commands::shutdown::confirmed(&answer) => args.yes = true,
            _ => {
                note!("hz: nothing was shut down");
                return Ok(None);
            }
        }
    }
    Ok(Some(Command::Shutdown(args)))
}

/// Runs a line's command; when its call found the kept connection broken (herzog restarted
/// since), dials again and runs it once more.
async fn run_line(text: &str, command: Command, endpoint: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    if let Command::Run(_) = command {
        // `run` handles Ctrl-C itself (SIGINT, then SIGKILL, to the remote group) and is never
        // run again: a second try would start the command a second time.
        return crate::dispatch(command, endpoint, out).await;
    }
    let first = interruptible(command, endpoint, out).await;
    if !matches!(
        &first,
        Err(CliError::Rpc {
            source: RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_),
            ..
        })
    ) {
        return first;
    }
    endpoint.forget();
    // The same line again: it was confirmed already, if it asks.
    let Line::Run(again) = line::parse(text) else {
        return first;
    };
    let again = match *again {
        Command::Shutdown(mut args) => {
            args.yes = true;
            Command::Shutdown(args)
        }
        command => command,
    };
    note!("hz: the connection to herzog broke (did it restart?): dialling again");
    interruptible(again, endpoint, out).await
}

/// Runs a command until it ends or Ctrl-C, which drops it.
async fn interruptible(command: Command, endpoint: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    tokio::select! {
        done = crate::dispatch(command, endpoint, out) => done,
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Interrupted),
    }
}
