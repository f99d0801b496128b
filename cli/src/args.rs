//! The command line, as clap derive types.

use crate::error::EXIT_CODES_HELP;
use clap::{Args, Parser, Subcommand, ValueEnum};
use common::wire::FragmentStateKind;
use std::path::PathBuf;
use std::time::Duration;

/// hz: run a program on every file of a directory, across every host herzog knows.
#[derive(Debug, Parser)]
#[command(name = "hz", version, after_help = EXIT_CODES_HELP, max_term_width = 100)]
pub struct Cli {
    /// herzog's address, host:port [default: the config's herzog.address, else 127.0.0.1:7373]
    #[arg(long, global = true, env = "HERZOG_ADDR", value_name = "ADDR")]
    pub herzog: Option<String>,
    /// The cluster config file (cluster.example.toml documents it); only read when given
    #[arg(long, global = true, env = "HERZOG_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Your admin certificate bundle (from `herzog certs init` or `herzog certs issue NAME --role
    /// admin`) [default: ~/.config/herzog/admin.pem]
    #[arg(long, global = true, env = "HERZOG_TLS", value_name = "PATH")]
    pub tls: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a project: run PROGRAM once on every file of DIR. Prints the project's name
    Action(ActionArgs),
    /// List the projects
    List(JsonArgs),
    /// Show how far projects are
    Progress(ProgressArgs),
    /// Set the scheduling policy (`fair` or a project to prioritise), or show it
    Schedule(ScheduleArgs),
    /// Remove a project and stop its running fragments
    Remove(RemoveArgs),
    /// Put a project's failed fragments back in the queue
    Retry(RetryArgs),
    /// List the running attempts
    Active(JsonArgs),
    /// List the workers
    Workers(JsonArgs),
    /// List a project's fragments with their last attempt (like sacct)
    Fragments(FragmentsArgs),
    /// Print the output of a fragment's latest attempt
    Logs(LogsArgs),
    /// Run a project on this machine alone: starts herzog and one worker, then waits for it
    Local(LocalArgs),
    /// Show the services' instances: where each runs, its state, pid, uptime or reason
    Status(StatusArgs),
    /// Start services (NAME, NAME:N for one instance, or all); a FATAL one starts afresh
    Start(ServicesArgs),
    /// Stop services (NAME, NAME:N, or all): they stay down until started
    Stop(ServicesArgs),
    /// Restart services (NAME, NAME:N, or all)
    Restart(ServicesArgs),
    /// Send a signal (HUP, TERM, INT, QUIT, KILL, USR1, USR2) to services' instances
    Signal(SignalArgs),
    /// Read the services file again and apply what changed
    Reload,
    /// The services' event log: started, exited, backoff, fatal, stopped, placed, reloads
    Events(EventsArgs),
    /// Print the last output of a service instance; -f: and what it prints from then on
    Tail(TailArgs),
    /// Print a shell completion script: `hz completions bash > ~/.local/share/bash-completion/completions/hz`
    Completions(CompletionsArgs),
    /// Print hz's man page (roff): `hz man | man -l -`, or save it as hz.1 in your MANPATH
    Man,
}

/// `hz completions`.
#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells `hz completions` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `hz tail`.
#[derive(Debug, Args, Clone)]
pub struct TailArgs {
    /// The instance: NAME for its instance 0, NAME:N, or NAME@HOST:N on every host
    pub name: String,
    /// Keep printing what it writes, across restarts, until Ctrl-C
    #[arg(long, short)]
    pub follow: bool,
    /// Its stderr instead of its stdout
    #[arg(long)]
    pub stderr: bool,
    /// How much to print first: the last BYTES written (units allowed: 64KiB, 1MiB)
    #[arg(long = "bytes", short = 'c', default_value = "10KiB", value_name = "BYTES")]
    pub bytes: String,
}

/// `hz events`.
#[derive(Debug, Args, Clone)]
pub struct EventsArgs {
    /// Only this service's events
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Keep printing events as they come
    #[arg(long, short)]
    pub follow: bool,
    /// How many of the latest events to print first
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub last: u32,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// `hz status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// One service, or one instance (NAME:N) [default: every service]
    pub name: Option<String>,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// `hz signal`.
#[derive(Debug, Args, Clone)]
pub struct SignalArgs {
    /// HUP, TERM, INT, QUIT, KILL, USR1 or USR2 (with or without SIG)
    pub signal: String,
    /// Services (NAME), instances (NAME:N), or `all`
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `hz start`, `hz stop`, `hz restart`.
#[derive(Debug, Args, Clone)]
pub struct ServicesArgs {
    /// Services (NAME), instances (NAME:N), or `all`
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `--json` for the commands that read.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct JsonArgs {
    /// Print JSON (herzog's wire types) instead of a table
    #[arg(long)]
    pub json: bool,
}

/// What a project runs: shared by `action` and `local`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The directory whose regular, non-hidden files are the inputs
    pub dir: PathBuf,
    /// What to run on each file, quoted as one argument: `{}` is the file's path (also `{/}`,
    /// `{.}`, `{/.}`, `{//}` as in GNU parallel); without a placeholder the path is appended
    pub program: String,
    /// The project's name [default: derived from DIR]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Attempts per fragment before it counts as failed
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// An environment variable for every run, KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Time between the stop signal and SIGKILL, e.g. 30s [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<Duration>,
}

/// `hz action`.
#[derive(Debug, Args, Clone)]
pub struct ActionArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// `hz progress`.
#[derive(Debug, Args, Clone)]
pub struct ProgressArgs {
    /// Only this project
    pub project: Option<String>,
    /// Follow with progress bars until the projects finish; exits 1 if a fragment failed
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// `hz schedule`.
#[derive(Debug, Args, Clone)]
pub struct ScheduleArgs {
    /// `fair`, or the project that gets every slot it can use; omit to show the policy
    #[arg(value_name = "fair|PROJECT")]
    pub policy: Option<String>,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// `hz remove`.
#[derive(Debug, Args, Clone)]
pub struct RemoveArgs {
    /// The project to remove
    pub project: String,
}

/// `hz retry`.
#[derive(Debug, Args, Clone)]
pub struct RetryArgs {
    /// The project whose failed fragments run again
    pub project: String,
}

/// A fragment state, for `--state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl From<StateFilter> for FragmentStateKind {
    fn from(s: StateFilter) -> Self {
        match s {
            StateFilter::Pending => FragmentStateKind::Pending,
            StateFilter::Running => FragmentStateKind::Running,
            StateFilter::Succeeded => FragmentStateKind::Succeeded,
            StateFilter::Failed => FragmentStateKind::Failed,
        }
    }
}

/// `hz fragments`.
#[derive(Debug, Args, Clone)]
pub struct FragmentsArgs {
    /// The project
    pub project: String,
    /// Only fragments in this state
    #[arg(long, value_enum)]
    pub state: Option<StateFilter>,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// `hz logs`.
#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    /// The project
    pub project: String,
    /// The fragment: its file name or its index
    pub fragment: String,
    /// Print only stderr (to stdout)
    #[arg(long, conflicts_with = "stdout")]
    pub stderr: bool,
    /// Print only stdout
    #[arg(long)]
    pub stdout: bool,
    #[command(flatten)]
    pub output: JsonArgs,
}

/// `hz local`.
#[derive(Debug, Args, Clone)]
pub struct LocalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// How many fragments run at once [default: this host's available parallelism]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: Option<u32>,
    /// Where the database, logs and results go [default: ./NAME.hz]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 30s, 2m or 500ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn env_pairs_and_durations_parse() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".to_string(), "b=c".to_string()));
        assert_eq!(parse_env("A=").unwrap(), ("A".to_string(), String::new()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn action_takes_its_options() {
        let cli = Cli::try_parse_from([
            "hz",
            "action",
            "in",
            "wc -l",
            "--name",
            "n",
            "--env",
            "K=V",
            "--grace",
            "2s",
            "--max-attempts",
            "5",
        ])
        .unwrap();
        let Command::Action(a) = cli.command else {
            panic!("not action")
        };
        assert_eq!(a.run.program, "wc -l");
        assert_eq!(a.run.name.as_deref(), Some("n"));
        assert_eq!(a.run.env, [("K".to_string(), "V".to_string())]);
        assert_eq!(a.run.grace, Some(Duration::from_secs(2)));
        assert_eq!(a.run.max_attempts, Some(5));
        assert!(Cli::try_parse_from(["hz", "action", "in", "x", "--max-attempts", "0"]).is_err());
        assert!(Cli::try_parse_from(["hz", "progress", "--watch", "--json"]).is_err());
    }
}
