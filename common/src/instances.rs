//! Service instances on the wire: which instance, which placement of it, where it is, and
//! what herzog asks a worker to run. States are enums carrying their data, as for fragments.

use crate::Millis;
use crate::services::{AutoRestart, Output, Retries, StopSignal};
use crate::wire::Exit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One instance of a service: `web:0`, or for a service on every host `web@euclid:0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId {
    pub service: String,
    /// The worker of a service on every host; `None` for one placed anywhere or pinned.
    #[serde(default)]
    pub host: Option<String>,
    pub index: u32,
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{}@{host}:{}", self.service, self.index),
            None => write!(f, "{}:{}", self.service, self.index),
        }
    }
}

/// One placement of an instance on a worker: a new id each time herzog places it (or
/// restarts it to take a new spec), never reused, so a report about an earlier placement is
/// told apart from the current one, as attempts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub i64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an instance is, as supervisord names it. Times are wall times, for showing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Not running, on purpose.
    Stopped,
    /// Spawned (`pid` once known), not yet up for `startsecs`; `retries` failed starts before.
    Starting {
        pid: Option<i32>,
        since: Millis,
        retries: u32,
    },
    /// Up for `startsecs` or longer.
    Running { pid: i32, since: Millis },
    /// Waiting to start again after `retries` failed starts in a row; the last ended so.
    Backoff { retries: u32, exit: Exit },
    /// Stop signal sent; SIGKILL after the grace.
    Stopping { pid: Option<i32> },
    /// Ended and not restarted (autorestart said no).
    Exited { exit: Exit, expected: bool },
    /// Too many failed starts in a row: down until started by hand.
    Fatal { exit: Exit, retries: u32 },
    /// Its host cannot be reached (herzog's view only).
    Unknown { since: Millis },
}

impl InstanceState {
    /// The state's name for tables: `RUNNING`, `BACKOFF`, ...
    pub fn name(&self) -> &'static str {
        match self {
            InstanceState::Stopped => "STOPPED",
            InstanceState::Starting { .. } => "STARTING",
            InstanceState::Running { .. } => "RUNNING",
            InstanceState::Backoff { .. } => "BACKOFF",
            InstanceState::Stopping { .. } => "STOPPING",
            InstanceState::Exited { .. } => "EXITED",
            InstanceState::Fatal { .. } => "FATAL",
            InstanceState::Unknown { .. } => "UNKNOWN",
        }
    }

    /// Its process, while it has one.
    pub fn pid(&self) -> Option<i32> {
        match self {
            InstanceState::Starting { pid, .. } | InstanceState::Stopping { pid } => *pid,
            InstanceState::Running { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// How kinski runs an instance: what the services file says, resolved for one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub umask: Option<u32>,
    /// Whom it runs as; `None`: kinski's `run_as`.
    pub user: Option<String>,
    pub stdout: Output,
    pub stderr: Output,
    pub stdout_maxbytes: u64,
    pub stdout_backups: u32,
    pub stderr_maxbytes: u64,
    pub stderr_backups: u32,
    pub watch: WatchSpec,
    /// The CPUs and memory its cgroup holds it to (the service's `cpus` and `mem`).
    #[serde(default, skip_serializing_if = "crate::requests::Requests::is_empty")]
    pub requests: crate::requests::Requests,
}

/// How an instance is watched: what decides restarts and stops, changeable while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSpec {
    pub autorestart: AutoRestart,
    pub exitcodes: Vec<i32>,
    pub startsecs_ms: u64,
    pub startretries: Retries,
    /// The stop signal's number.
    pub stopsignal: i32,
    pub stopwait_ms: u64,
    /// Files or directories on the host whose change restarts the instance (kinski watches
    /// them with inotify).
    #[serde(default)]
    pub restart_on_change: Vec<PathBuf>,
    /// Sent to the instance's process group on such a change instead of a restart.
    #[serde(default)]
    pub change_signal: Option<StopSignal>,
}

/// A placement herzog asks a worker to keep up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRun {
    pub run: RunId,
    pub instance: InstanceId,
    pub spec: InstanceSpec,
    /// It may run on another worker: one cut off from herzog for its timeout stops it, so it
    /// never runs twice. A pinned one (`hosts`, `every_host`) keeps running.
    #[serde(default)]
    pub movable: bool,
    /// On a host without the shared filesystem, the directory herzog copied the service's
    /// `stage` files into (`<scratch>/services/<run>`, made by `instance_prep`): kinski hands
    /// it to the instance's user before the first start and removes it when the placement ends.
    #[serde(default)]
    pub staged: Option<PathBuf>,
}

/// What a worker tells herzog of one placement it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub run: RunId,
    pub instance: InstanceId,
    pub state: InstanceState,
    /// Restarts after a crash since it was placed.
    pub restarts: u32,
}

impl From<&crate::services::ServiceSpec> for WatchSpec {
    fn from(s: &crate::services::ServiceSpec) -> WatchSpec {
        WatchSpec {
            autorestart: s.autorestart,
            exitcodes: s.exitcodes.clone(),
            startsecs_ms: u64::try_from(s.startsecs.as_millis()).unwrap_or(u64::MAX),
            startretries: s.startretries,
            stopsignal: s.stopsignal.number(),
            stopwait_ms: u64::try_from(s.stopwaitsecs.as_millis()).unwrap_or(u64::MAX),
            restart_on_change: s.restart_on_change.clone(),
            change_signal: s.change_signal,
        }
    }
}

impl From<&crate::services::ServiceSpec> for InstanceSpec {
    /// A command with shell syntax runs under `/bin/sh -c`; anything else is split on
    /// whitespace and executed directly, as for projects (without placeholders).
    fn from(s: &crate::services::ServiceSpec) -> InstanceSpec {
        let argv = if crate::template::needs_shell(&s.command) {
            vec!["/bin/sh".into(), "-c".into(), s.command.clone()]
        } else {
            s.command.split_whitespace().map(str::to_string).collect()
        };
        InstanceSpec {
            argv,
            env: s.env.clone(),
            cwd: s.cwd.clone(),
            umask: s.umask,
            user: s.user.clone(),
            stdout: s.stdout.clone(),
            stderr: s.stderr.clone(),
            stdout_maxbytes: s.stdout_maxbytes.as_u64(),
            stdout_backups: s.stdout_backups,
            stderr_maxbytes: s.stderr_maxbytes.as_u64(),
            stderr_backups: s.stderr_backups,
            watch: WatchSpec::from(s),
            requests: s.requests(),
        }
    }
}

/// One instance as `hz status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub service: String,
    /// `web:0`, or `web@euclid:0` for a service on every host.
    pub instance: String,
    /// The worker it is placed on.
    pub host: Option<String>,
    pub state: InstanceState,
    /// Restarts after a crash since it was placed.
    pub restarts: u32,
    #[serde(default)]
    pub description: Option<String>,
}

/// What `hz reload` changed, service by service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// How they run changed: restarted.
    pub restarted: Vec<String>,
    /// Only how they are watched changed: applied without a restart.
    pub retuned: Vec<String>,
    /// (service, from, to) instances.
    pub scaled: Vec<(String, u32, u32)>,
    pub unchanged: Vec<String>,
}

/// What `hz start`, `hz stop`, `hz restart` and `hz signal` ask of instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
    /// Send this signal to each instance's process group (a program that reloads on HUP).
    Signal(crate::services::StopSignal),
}

/// What happened to an instance, as the event log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EventKind {
    /// Its process was spawned.
    Started { pid: i32 },
    /// Up for `startsecs`.
    Running { pid: i32 },
    /// Its process ended; restarted or not by its policy.
    Exited { exit: Exit, expected: bool },
    /// A failed start; the next try after the delay.
    Backoff { retries: u32, delay_ms: u64 },
    /// Too many failed starts in a row: down until `hz start`.
    Fatal { retries: u32 },
    /// Stopped, as asked.
    Stopped,
    /// herzog placed it on a worker.
    Placed,
    /// Its worker was lost: it is placed elsewhere once its lease runs out, unless pinned.
    Lost,
    /// Its worker refused to run it.
    Refused { reason: String },
    /// A reload changed its service: `added`, `removed`, `restarted`, `retuned`, `scaled`.
    Reloaded { change: String },
    /// Files it watches (`restart_on_change`) changed: restarted, or sent `signal`
    /// (`change_signal`). `files` are the first few that changed in the burst, `more` the
    /// number of others.
    FileChanged {
        files: Vec<PathBuf>,
        #[serde(default)]
        more: u32,
        signal: Option<StopSignal>,
    },
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventKind::Started { pid } => write!(f, "started (pid {pid})"),
            EventKind::Running { pid } => write!(f, "running (pid {pid})"),
            EventKind::Exited { exit, expected: true } => write!(f, "exited as expected ({exit})"),
            EventKind::Exited { exit, .. } => write!(f, "exited unexpectedly ({exit})"),
            EventKind::Backoff { retries, delay_ms } => {
                write!(f, "failed to start ({retries} in a row); next try in {delay_ms} ms")
            }
            EventKind::Fatal { retries } => write!(f, "FATAL after {retries} failed starts: `hz start` to try again"),
            EventKind::Stopped => write!(f, "stopped"),
            EventKind::Placed => write!(f, "placed"),
            EventKind::Lost => write!(f, "its worker was lost"),
            EventKind::Refused { reason } => write!(f, "refused by its worker: {reason}"),
            EventKind::Reloaded { change } => write!(f, "reload: {change}"),
            EventKind::FileChanged { files, more, signal } => {
                match signal {
                    Some(signal) => write!(f, "sent {signal} on a change of ")?,
                    None => write!(f, "restarted on a change of ")?,
                }
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                write!(f, "{}", names.join(", "))?;
                match more {
                    0 => Ok(()),
                    n => write!(f, " and {n} more"),
                }
            }
        }
    }
}

/// An event as a worker reports it: `(run, n)` names it for ever, so one sent twice is kept
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    pub run: RunId,
    /// Its number among the events of `run`, from 1.
    pub n: u32,
    pub at: Millis,
    pub instance: InstanceId,
    pub kind: EventKind,
}

/// One event of the log, as `hz events` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// Increasing: `hz events --follow` asks for those after the last it saw.
    pub id: i64,
    pub at: Millis,
    pub service: String,
    /// `web:0`; empty for an event of the whole service (a reload).
    pub instance: String,
    pub worker: Option<String>,
    pub kind: EventKind,
}
