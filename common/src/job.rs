//! `hz run`: one command run once on a worker, its output streamed back and its exit status
//! returned to the caller (srun, `ssh host cmd`). herzog calls it a job: a project of one
//! fragment, hidden from `hz list`, shown by `hz active` as `run:N`.

use crate::wire::Exit;
use crate::{ApiError, AttemptId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The prefix of a job's name (`run:17`): no project name can contain ':'.
pub const JOB_PREFIX: &str = "run:";

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobCommand {
    /// This program and its arguments, executed as given (no shell).
    Argv(Vec<String>),
    /// A named command of the services file (`[commands.NAME]`, or one of its aliases), with
    /// arguments appended.
    Named { name: String, args: Vec<String> },
}

/// A request to run a command once (`hz run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    pub command: JobCommand,
    /// Run it on this worker (it waits for a slot there); `None`: the next free slot anywhere
    /// (among the named command's `hosts`).
    #[serde(default)]
    pub host: Option<String>,
    /// Added to the environment (after a named command's `env`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory (`--cwd`), absolute; `None`: the named command's `cwd`, else
    /// `from`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The caller's working directory.
    pub from: PathBuf,
    /// How it talks to the caller.
    #[serde(default)]
    pub interactive: Interactive,
    /// If its worker is lost, run it again elsewhere (`--requeue`); else it ends `lost`.
    #[serde(default)]
    pub requeue: bool,
}

/// How a job's process is connected: stdin forwarded, a pseudo-terminal. Batch attempts have
/// none; a start that carries one goes ahead of the starts queued on its worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    /// Its stdin is a pipe the caller writes through `job_input` (`-i`); else /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// It runs on a pseudo-terminal of this size (`-t`): stdin, stdout and stderr are the
    /// terminal, so its output is one stream (stdout).
    #[serde(default)]
    pub tty: Option<TtySize>,
}

/// A terminal's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// The reply to a [`JobRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStarted {
    /// `run:N`: what `hz active` shows and the other job calls take.
    pub name: String,
    /// The command line it runs.
    pub argv: Vec<String>,
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a free slot (or for its host).
    Waiting,
    /// Dispatched: running on `worker`, or queued there for the next free slot.
    Running {
        attempt: AttemptId,
        worker: String,
        started: bool,
    },
    /// Its program ended so.
    Exited { worker: String, exit: Exit },
    /// It ended without an exit status of its own: its worker was lost, it was cancelled.
    Ended { reason: String },
}

impl JobState {
    /// The exit code `hz run` ends with: the program's, 128+N for signal N, 127 when it could
    /// not be started, 255 when it ended without an exit status (like ssh).
    pub fn exit_code(&self) -> Option<u8> {
        match self {
            JobState::Waiting | JobState::Running { .. } => None,
            JobState::Exited { exit, .. } => Some(match exit {
                Exit::Code(c) => u8::try_from(*c).unwrap_or(255),
                Exit::Signal(s) => u8::try_from(128 + *s).unwrap_or(255),
                Exit::StartFailed(_) => 127,
            }),
            JobState::Ended { .. } => Some(255),
        }
    }
}

/// A named command (`[commands.NAME]` in the services file), as `hz commands` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub name: String,
    pub command: String,
    pub aliases: Vec<String>,
    pub hosts: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Whether `name` is a job's (`run:N`).
pub fn is_job(name: &str) -> bool {
    name.strip_prefix(JOB_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks a name that may be a project's or a job's (`hz remove run:N`).
pub fn check_project_or_job(name: &str) -> Result<(), ApiError> {
    if is_job(name) {
        return Ok(());
    }
    crate::name::check_name(name)
}

/// Checks a request's parts that need no herzog state.
pub fn check(request: &JobRequest) -> Result<(), ApiError> {
    if let JobCommand::Argv(argv) = &request.command
        && argv.first().is_none_or(|p| p.is_empty())
    {
        return Err(ApiError::InvalidValue {
            what: "the command".into(),
            reason: "it is empty: say what to run after `--`".into(),
        });
    }
    for dir in request.cwd.iter().chain([&request.from]) {
        if crate::paths::clean_absolute(dir).is_err() {
            return Err(ApiError::InvalidValue {
                what: "--cwd".into(),
                reason: format!("{} is not an absolute path without '..'", dir.display()),
            });
        }
    }
    if let Some(key) = request.env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err(ApiError::InvalidValue {
            what: "--env".into(),
            reason: format!("'{key}' is not a variable name: give NAME=VALUE"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        let exited = |exit| JobState::Exited {
            worker: "w".into(),
            exit,
        };
        assert_eq!(exited(Exit::Code(3)).exit_code(), Some(3));
        assert_eq!(exited(Exit::Signal(9)).exit_code(), Some(137));
        assert_eq!(exited(Exit::StartFailed("no".into())).exit_code(), Some(127));
        assert_eq!(JobState::Ended { reason: "lost".into() }.exit_code(), Some(255));
        assert_eq!(JobState::Waiting.exit_code(), None);
    }

    #[test]
    fn a_request_needs_a_program_and_an_absolute_directory() {
        let mut r = JobRequest {
            command: JobCommand::Argv(vec!["true".into()]),
            host: None,
            env: BTreeMap::new(),
            cwd: None,
            from: "/tmp".into(),
            interactive: Interactive::default(),
            requeue: false,
        };
        assert!(check(&r).is_ok());
        r.cwd = Some("tmp".into());
        assert!(check(&r).is_err());
        r.cwd = None;
        r.command = JobCommand::Argv(vec![String::new()]);
        assert!(matches!(check(&r), Err(ApiError::InvalidValue { .. })));
        r.command = JobCommand::Argv(vec!["true".into()]);
        r.env.insert("A=B".into(), "c".into());
        assert!(check(&r).is_err());
    }
}
