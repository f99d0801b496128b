//! hz, the user's command line for herzog: every command, its output and its exit code.
//! The binary only calls [`main`]; tests call [`run`] with their own output.

/// Writes one line to stderr, ignoring a closed stderr (never panics, unlike `eprintln!`).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod args;
mod client;
mod commands;
pub mod error;
mod shell;
mod table;
#[cfg(test)]
mod test_cluster;

use args::{Cli, Command};
use clap::Parser;
use common::config::ClusterConfig;
use common::instances::ServiceAction;
use common::wire::Control;
use error::{CliError, code};
use std::io::Write;
use std::process::ExitCode;

/// How a command ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Ok,
    /// The command worked but some of the work failed (a fragment failed).
    WorkFailed,
    /// Ctrl-C (or SIGTERM) stopped the command.
    Interrupted,
    /// A project watched was removed meanwhile.
    ProjectRemoved,
    /// `hz run`: the command's own exit status (128+N for a signal, 255 when it has none).
    Exit(u8),
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => code::OK,
            Outcome::WorkFailed => code::WORK_FAILED,
            Outcome::Interrupted => code::INTERRUPTED,
            Outcome::ProjectRemoved => code::PROJECT_REMOVED,
            Outcome::Exit(code) => code,
        }
    }
}

/// Runs one parsed command line, writing its results to `out` (messages go to stderr).
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    // These need neither herzog nor a config.
    match &cli.command {
        Command::Completions(a) => return commands::docs::completions(a.shell, out),
        Command::Man => return commands::docs::man(out),
        _ => {}
    }
    let config = cli.config.as_deref().map(ClusterConfig::load).transpose()?;
    if let Command::Local(a) = &cli.command {
        return commands::local::run(a, out).await;
    }
    let addr = client::resolve_address(cli.herzog.as_deref(), config.as_ref());
    common::config::check_address(&addr).map_err(CliError::Usage)?;
    let addr = client::Endpoint::from_flag(addr, cli.tls);
    if let Command::Shell = cli.command {
        return shell::run(addr.keeping(), out).await;
    }
    let result = dispatch(cli.command, &addr, out).await;
    addr.close().await;
    result
}

/// Runs a command that talks to herzog through `addr` (a shell's line too: `hz shell` keeps
/// one connection for all of them).
pub(crate) async fn dispatch(
    command: Command,
    endpoint: &client::Endpoint,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    // A clone shares the endpoint's connections (the shell's kept one too).
    let addr = endpoint.clone();
    match command {
        Command::Action(a) => commands::action::run(&a, &addr, out).await,
        Command::List(a) => commands::list::run(a, &addr, out).await,
        Command::Progress(a) => commands::progress::run(&a, &addr, out).await,
        Command::Schedule(a) => commands::schedule::run(&a, &addr, out).await,
        Command::Remove(a) => commands::remove::run(&a, &addr).await,
        Command::Retry(a) => commands::retry::run(&a, &addr).await,
        Command::Active(a) => commands::active::run(&a, &addr, out).await,
        Command::Workers(a) => commands::workers::run(a, &addr, out).await,
        Command::Fragments(a) => commands::fragments::run(&a, &addr, out).await,
        Command::Logs(a) => commands::logs::run(&a, &addr, out).await,
        Command::Status(a) => commands::status::run(&a, &addr, out).await,
        Command::Start(a) => commands::control::run(ServiceAction::Start, &a, &addr, out).await,
        Command::Stop(a) => commands::control::run(ServiceAction::Stop, &a, &addr, out).await,
        Command::Restart(a) => commands::control::run(ServiceAction::Restart, &a, &addr, out).await,
        Command::Signal(a) => {
            let signal = common::services::StopSignal::try_from(a.signal.clone()).map_err(CliError::Usage)?;
            let names = args::ServicesArgs { names: a.names.clone() };
            commands::control::run(ServiceAction::Signal(signal), &names, &addr, out).await
        }
        Command::Reload => commands::reload::run(&addr, out).await,
        Command::Events(a) => commands::events::run(&a, &addr, out).await,
        Command::Tail(a) => commands::tail::run(&a, &addr, out).await,
        Command::Pause(a) => commands::controls::run(Control::Pause { project: a.project }, &addr).await,
        Command::Resume(a) => commands::controls::run(Control::Resume { project: a.project }, &addr).await,
        Command::Cancel(a) => {
            let control = Control::Cancel {
                project: a.project,
                fragments: a.fragments,
            };
            commands::controls::run(control, &addr).await
        }
        Command::Limit(a) => {
            let control = Control::Limit {
                project: a.project,
                max_running: a.max_running.0,
            };
            commands::controls::run(control, &addr).await
        }
        Command::Drain(a) => commands::controls::run(Control::Drain { worker: a.worker }, &addr).await,
        Command::Undrain(a) => commands::controls::run(Control::Undrain { worker: a.worker }, &addr).await,
        Command::Forget(a) => commands::controls::run(Control::Forget { worker: a.worker }, &addr).await,
        Command::Run(a) => commands::run::run(&a, &addr, out).await,
        Command::Commands(a) => commands::named::run(a, &addr, out).await,
        Command::Shutdown(a) => commands::shutdown::run(&a, &addr).await,
        Command::Share(a) => {
            let control = Control::Share {
                project: a.project,
                share: a.share,
            };
            commands::controls::run(control, &addr).await
        }
        Command::Shares(a) => commands::shares::run(a, &addr, out).await,
        Command::Report(a) => commands::report::run(&a, &addr, out).await,
        // `run` handles these before it dials; a shell line never gets here with them.
        command @ (Command::Local(_) | Command::Completions(_) | Command::Man | Command::Shell) => Err(
            CliError::Usage(shell::not_here(&command).unwrap_or_default().to_string()),
        ),
    }
}

/// The whole program: parses the arguments, runs the command, prints an error as
/// `hz: <message>` and turns the result into the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `hz` alone (or with global flags alone) on a terminal opens the shell.
        Err(e) if shell::opens_on(e.kind()) => match Cli::try_parse_from(std::env::args_os().chain(["shell".into()])) {
            Ok(cli) => cli,
            Err(_) => {
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(code::BAD_INPUT));
            }
        },
        Err(e) => {
            // Help and version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(code::BAD_INPUT));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            note!("hz: failed to start the async runtime: {e}");
            return ExitCode::from(code::WORK_FAILED);
        }
    };
    let mut stdout = std::io::stdout();
    let result = runtime
        .block_on(run(cli, &mut stdout))
        .and_then(|outcome| match stdout.flush() {
            // `hz run`'s own status stands when its reader went away (it says how the job ended).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && matches!(outcome, Outcome::Exit(_)) => Ok(outcome),
            flushed => flushed.map(|()| outcome).map_err(CliError::from),
        });
    // Do not wait for blocked tasks (a stuck daemon in `hz local`) once the answer is known.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) if e.is_broken_pipe() => ExitCode::from(code::OK),
        Err(e) => {
            note!("hz: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
