//! The command line, as clap derive types.

use crate::error::EXIT_CODES_HELP;
use clap::{Args, Parser, Subcommand, ValueEnum};
use common::run_settings::{Signal, Sink, parse_umask};
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
    /// List the dispatched attempts: running, or queued on their worker for a slot
    Active(ActiveArgs),
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
    /// Pause a project: what runs finishes, nothing new starts, queued starts are taken back
    Pause(ProjectArg),
    /// Resume a paused project
    Resume(ProjectArg),
    /// Cancel fragments (names or indexes): running ones are stopped, each ends failed, "cancelled"
    Cancel(CancelArgs),
    /// Set how many of a project's attempts run at once (`none`: no limit)
    Limit(LimitArgs),
    /// Drain a worker: what runs there finishes, it takes nothing new
    Drain(WorkerArg),
    /// Let a drained worker take work again
    Undrain(WorkerArg),
    /// Drop a worker that is not connected (lost or stopped) from the list
    Forget(WorkerArg),
    /// Print a shell completion script: `hz completions bash > ~/.local/share/bash-completion/completions/hz`
    Completions(CompletionsArgs),
    /// Print hz's man page (roff): `hz man | man -l -`, or save it as hz.1 in your MANPATH
    Man,
    /// Run a command once on a worker, its output here, and exit with its exit status (srun):
    /// `hz run -- COMMAND ARGS...`, or `hz run NAME ARGS...` for a named command
    Run(JobArgs),
    /// List the named commands of the services file (`hz run NAME` runs one)
    Commands(JsonArgs),
    /// An interactive prompt for every command (supervisorctl's): history, Tab completion
    /// [default when hz is run with no command on a terminal]
    Shell,
    /// Stop herzog cleanly, as SIGTERM would (services keep running on the workers), or with
    /// WORKER that worker's kinski (its attempts and services stop)
    Shutdown(ShutdownArgs),
    /// Set a project's weight in the fair share: share N gets N times the CPU-time of share 1
    Share(ShareArgs),
    /// Show each project's fair share: weight, target, its part of the last minute and since
    /// it became active, its CPU-time
    Shares(JsonArgs),
    /// What a project's attempts used (seff and sacct in one): wall and CPU time, CPU and
    /// memory efficiency, peak memory, the slowest and largest fragments, failures, hosts
    Report(ReportArgs),
}

/// `hz report`.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// The project (or `hz run` job, `run:N`); a removed one is reported while herzog keeps
    /// its record
    pub project: String,
    /// Print JSON (common::report::Report) instead of tables
    #[arg(long)]
    pub json: bool,
}

/// `hz share`.
#[derive(Debug, Args, Clone)]
pub struct ShareArgs {
    /// The project
    pub project: String,
    /// Its weight: while they both have work, it gets N times the CPU-time of a share-1 project
    #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub share: u32,
}

/// `hz run`.
#[derive(Debug, Args, Clone)]
pub struct JobArgs {
    /// Run it on this worker (it waits for a free slot there) [default: the next free slot]
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// An environment variable for the command, KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The directory it runs in [default: the named command's, else this one]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Forward this stdin to the command (else it reads /dev/null)
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal (for an interactive program); implies -i
    #[arg(short = 't', long)]
    pub tty: bool,
    /// If its worker is lost, run it again elsewhere (else hz run exits 255)
    #[arg(long)]
    pub requeue: bool,
    /// A named command (`hz commands` lists them) and its arguments
    #[arg(value_name = "NAME [ARGS]", allow_hyphen_values = true)]
    pub named: Vec<String>,
    /// The command and its arguments, after `--`, run as given (no shell)
    #[arg(last = true, value_name = "COMMAND")]
    pub argv: Vec<String>,
}

/// `hz shutdown`.
#[derive(Debug, Args, Clone)]
pub struct ShutdownArgs {
    /// The worker whose kinski stops [default: herzog itself]
    pub worker: Option<String>,
    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(long, short)]
    pub yes: bool,
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

/// A command on one project.
#[derive(Debug, Args, Clone)]
pub struct ProjectArg {
    /// The project
    pub project: String,
}

/// A command on one worker.
#[derive(Debug, Args, Clone)]
pub struct WorkerArg {
    /// The worker's name (`hz workers` lists them)
    pub worker: String,
}

/// `hz cancel`.
#[derive(Debug, Args, Clone)]
pub struct CancelArgs {
    /// The project
    pub project: String,
    /// Its fragments: file names or indexes
    #[arg(required = true, value_name = "FRAGMENT")]
    pub fragments: Vec<String>,
}

/// `hz limit`.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// The project
    pub project: String,
    /// The most attempts at once, or `none`
    #[arg(value_parser = parse_limit, value_name = "N|none")]
    pub max_running: Limit,
}

/// A limit on attempts at once: a number, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u32>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    match s {
        "none" | "unlimited" => Ok(Limit(None)),
        n => match n.parse::<u32>() {
            Ok(0) => Err("a limit of 0 would hold the project: use `hz pause`".into()),
            Ok(n) => Ok(Limit(Some(n))),
            Err(_) => Err(format!("expected a number of attempts or `none`, got '{s}'")),
        },
    }
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

/// `hz active`.
#[derive(Debug, Args, Clone)]
pub struct ActiveArgs {
    /// Only this project's attempts
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    /// Only the attempts on this worker
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<String>,
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
    /// Run a fragment again after a failed attempt, up to N times (a stop herzog sent is not a
    /// failure; --max-attempts covers lost workers) [default: 0]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Exit codes that count as success, e.g. 0,1 [default: 0]
    #[arg(long, value_name = "CODES", value_delimiter = ',', value_parser = parse_exit_code)]
    pub success_codes: Vec<i32>,
    /// The signal a stop (hz remove) sends first, by name or number, e.g. INT or 2 [default: TERM]
    #[arg(long, value_name = "SIGNAL", value_parser = Signal::parse)]
    pub stop_signal: Option<Signal>,
    /// The directory each program runs in [default: the input directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// The programs' file mode creation mask, in octal, e.g. 027 [default: 022]
    #[arg(long, value_name = "MASK", value_parser = parse_umask)]
    pub umask: Option<u32>,
    /// keep each program's stdout in its log file, or discard it (no file)
    #[arg(long, value_name = "keep|discard", value_parser = Sink::parse)]
    pub stdout: Option<Sink>,
    /// keep each program's stderr in its log file, or discard it (no file)
    #[arg(long, value_name = "keep|discard", value_parser = Sink::parse)]
    pub stderr: Option<Sink>,
    /// CPUs each attempt needs: packs, and throttles it to N CPUs' time [default: 1, packing
    /// only, or [herzog.defaults] cpus]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Memory each attempt needs, e.g. 512M or 4G: packs, and past it the attempt ends "out of
    /// memory" [default: none, or [herzog.defaults] mem]
    #[arg(long, value_name = "SIZE", value_parser = common::requests::parse_size)]
    pub mem: Option<u64>,
    /// Wall-clock limit of each attempt, e.g. 90s or 2h: past it, the stop signal, then SIGKILL
    /// after the grace [default: none, or [herzog.defaults] time]
    #[arg(long, value_name = "DURATION", value_parser = common::requests::parse_duration_ms)]
    pub time: Option<u64>,
    /// Run a fragment again when a limit ended its attempt: oom, time, or both (oom,time)
    /// [default: neither: the same input would fail the same way]
    #[arg(long, value_name = "LIMITS", value_delimiter = ',')]
    pub retry_on: Vec<common::requests::RetryOn>,
}

/// `hz action`.
#[derive(Debug, Args, Clone)]
pub struct ActionArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Start only once these projects have all succeeded (comma-separated, like Slurm's afterok)
    #[arg(long, value_name = "PROJECT,...", value_delimiter = ',')]
    pub after: Vec<String>,
    /// Run at most N of its attempts at once (`hz limit` changes it later)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_running: Option<u32>,
    /// Its weight in the fair share: N times the CPU-time of a share-1 project while both
    /// have work (`hz share` changes it later) [default: 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub share: Option<u32>,
    /// Mail ADDR when the project finishes or a fragment fails for good (repeatable; needs
    /// [alerts.smtp] in herzog's cluster.toml)
    #[arg(long, value_name = "ADDR")]
    pub notify: Vec<String>,
    /// POST a JSON alert to URL when the project finishes or a fragment fails for good
    /// (repeatable)
    #[arg(long, value_name = "URL")]
    pub webhook: Vec<String>,
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
    /// Also delete its results folder (logs/ and output/); also the folder an earlier,
    /// already removed project of that name left
    #[arg(long)]
    pub purge: bool,
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
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl From<StateFilter> for FragmentStateKind {
    fn from(s: StateFilter) -> Self {
        match s {
            StateFilter::Pending => FragmentStateKind::Pending,
            StateFilter::Queued => FragmentStateKind::Queued,
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
    /// One fragment (its file name or index): every attempt it had
    pub fragment: Option<String>,
    /// Only fragments in this state
    #[arg(long, value_enum)]
    pub state: Option<StateFilter>,
    /// Only attempts on this worker (one line per attempt)
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// Only attempts started, ended or still running within this long, e.g. 10m, 2h
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
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
    /// One of its attempts, by id (`hz fragments PROJECT FRAGMENT` lists them) [default: the latest]
    #[arg(long, value_name = "ID")]
    pub attempt: Option<i64>,
    #[command(flatten)]
    pub output: JsonArgs,
    /// Follow the running attempt's output (stdout, or --stderr) as it is written, until the
    /// attempt ends: exit 0 if it succeeded, 1 if it failed
    #[arg(long, short, conflicts_with_all = ["json", "attempt"])]
    pub follow: bool,
    /// With -f: print first only the last BYTES written so far, not all (units allowed: 64KiB)
    #[arg(long = "bytes", short = 'c', value_name = "BYTES", requires = "follow")]
    pub bytes: Option<String>,
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
    /// When resuming, run the fragments that failed again (GNU parallel's --resume-failed)
    #[arg(long)]
    pub retry_failed: bool,
    /// Write a job log in GNU parallel's --joblog format: one line per attempt, when the run ends
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn parse_exit_code(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(code) if (0..=255).contains(&code) => Ok(code),
        _ => Err(format!(
            "{s:?} is not an exit code: give numbers from 0 to 255, e.g. 0,1"
        )),
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
        let cli = Cli::try_parse_from([
            "hz",
            "action",
            "in",
            "x",
            "--success-codes",
            "0,1",
            "--stop-signal",
            "sigint",
            "--umask",
            "027",
            "--stdout",
            "discard",
            "--cwd",
            "/tmp",
        ])
        .unwrap();
        let Command::Action(a) = cli.command else {
            panic!("not action")
        };
        assert_eq!(a.run.success_codes, [0, 1]);
        assert_eq!(a.run.stop_signal.map(|s| s.name()), Some("INT"));
        assert_eq!(
            (a.run.umask, a.run.stdout, a.run.stderr),
            (Some(0o27), Some(Sink::Discard), None)
        );
        for bad in [
            &["--success-codes", "0,x"][..],
            &["--success-codes", "256"],
            &["--stop-signal", "TERMINATE"],
            &["--umask", "999"],
            &["--stdout", "file"],
        ] {
            let err = Cli::try_parse_from(["hz", "action", "in", "x"].iter().chain(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        assert!(Cli::try_parse_from(["hz", "progress", "--watch", "--json"]).is_err());
    }
}
