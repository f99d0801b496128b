//! The messages that cross the wire between hz, herzog and kinski.
//!
//! New fields get `#[serde(default)]` so that a mixed-version cluster keeps talking during an
//! upgrade (the JSON codec is self-describing; see docs/architecture.md).

use crate::{AttemptId, Millis, ProjectId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a project's programs are run; stored with the project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The program template: `{}` and friends are replaced by the fragment's path, else the
    /// path is appended as the last argument.
    pub program: String,
    /// Extra environment variables for every attempt.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of every attempt; default: the project directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// How many attempts a fragment gets before it is failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Exit codes that count as success.
    #[serde(default = "default_success_codes")]
    pub success_codes: Vec<i32>,
    /// Whether a failed exit is retried (up to `max_attempts`); off: it fails the fragment.
    #[serde(default)]
    pub retry_failed: bool,
    /// Milliseconds between the stop signal and SIGKILL.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_success_codes() -> Vec<i32> {
    vec![0]
}
fn default_grace_ms() -> u64 {
    10_000
}

impl RunSpec {
    /// A spec with the defaults for everything but the program.
    pub fn new(program: impl Into<String>) -> Self {
        RunSpec {
            program: program.into(),
            env: BTreeMap::new(),
            cwd: None,
            max_attempts: default_max_attempts(),
            success_codes: default_success_codes(),
            retry_failed: false,
            grace_ms: default_grace_ms(),
        }
    }
}

/// A request to add a project (`hz action`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewProject {
    /// The name; herzog derives one from the directory when absent.
    pub name: Option<String>,
    /// Absolute path of the input directory, as seen by herzog.
    pub dir: PathBuf,
    pub spec: RunSpec,
}

/// The reply to [`NewProject`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProjectAdded {
    pub id: ProjectId,
    pub name: String,
    pub fragments: u64,
    /// Where each attempt's stdout, stderr and outputs are kept.
    pub results_dir: PathBuf,
}

/// The scheduling policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Slots are shared equally between active projects.
    Fair,
    /// This project takes every slot it can use; the rest share what is left.
    Priority { project: String },
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Fair => write!(f, "fair"),
            Policy::Priority { project } => write!(f, "priority {project}"),
        }
    }
}

/// How far a project is (`hz progress`, `hz list`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectProgress {
    pub id: ProjectId,
    pub name: String,
    pub dir: PathBuf,
    pub program: String,
    pub total: u64,
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Finished (succeeded or failed) as a percentage of the total.
    pub percent: f64,
    pub created_at: Millis,
    pub results_dir: PathBuf,
    /// Why its pending fragments do not start, when herzog holds them (its state filesystem
    /// is nearly full).
    #[serde(default)]
    pub held: Option<String>,
}

impl ProjectProgress {
    /// True once no fragment is pending or running.
    pub fn is_finished(&self) -> bool {
        self.pending == 0 && self.running == 0
    }
}

/// One running attempt (`hz active`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAttempt {
    pub worker: String,
    pub project: String,
    pub fragment: String,
    pub attempt: AttemptId,
    pub since: Millis,
}

/// What a host offers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub disk_free_bytes: u64,
    /// Attempts run at once.
    pub slots: u32,
    /// Attempts the worker accepts beyond its slots and starts the moment a slot frees, so a
    /// slot never waits for a round trip to herzog. herzog fills as much of it as the pending
    /// attempts' length calls for (herzog's `Worker::capacity`).
    #[serde(default)]
    pub queue: u32,
    /// Where the worker makes staged attempts' directories (hosts without the shared
    /// filesystem); herzog uploads into it over SSH.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
}

/// One worker as herzog sees it (`hz workers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    pub resources: Resources,
    pub running: u32,
    /// The service instances it keeps up (starting, running, backing off or stopping), which
    /// use no batch slot.
    #[serde(default)]
    pub instances: u32,
    /// `connected`, `disconnected` or `lost`.
    pub state: String,
    pub last_seen: Millis,
    /// How the worker gets its files: `shared` (the shared filesystem), or over SSH:
    /// `ssh checking`, `ssh ready`, `ssh failed` (then `problem` says why).
    #[serde(default)]
    pub staging: String,
    /// What keeps the worker from getting work, named with its host and the error.
    #[serde(default)]
    pub problem: Option<String>,
}

/// A fragment's state for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentStateKind {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl std::fmt::Display for FragmentStateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FragmentStateKind::Pending => "pending",
            FragmentStateKind::Running => "running",
            FragmentStateKind::Succeeded => "succeeded",
            FragmentStateKind::Failed => "failed",
        })
    }
}

/// One fragment with its last attempt (`hz fragments`, like Slurm's sacct).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentInfo {
    pub index: u64,
    pub name: String,
    pub state: FragmentStateKind,
    pub attempts: u32,
    /// The attempt that decided the state, or the running one.
    pub attempt: Option<AttemptId>,
    pub worker: Option<String>,
    pub exit: Option<Exit>,
    pub wall_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// Why a fragment failed.
    pub reason: Option<String>,
}

/// A page of a long listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The offset of the next page, if there is one.
    pub next: Option<u64>,
    pub total: u64,
}

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It could not be started (not found, not executable, ...).
    StartFailed(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "{c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::StartFailed(why) => write!(f, "start failed: {why}"),
        }
    }
}

/// What kinski reports when an attempt ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub attempt: AttemptId,
    pub exit: Exit,
    pub wall_ms: u64,
    /// User plus system CPU time.
    pub cpu_ms: u64,
    pub peak_rss_kb: u64,
    pub finished_at: Millis,
}

/// Everything kinski needs to run one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartAttempt {
    pub attempt: AttemptId,
    pub project: String,
    pub fragment: String,
    /// Absolute path of the input file.
    pub input: PathBuf,
    /// The command line, already expanded.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Given to the program as `HERZOG_OUTPUT_DIR`.
    pub output_dir: PathBuf,
    pub grace_ms: u64,
    /// The attempt's own directory on a host without the shared filesystem
    /// (`<scratch_dir>/<attempt>`): `fragment_prep` makes it, herzog uploads the input into
    /// it, and every path above except `cwd` lies inside it.
    #[serde(default)]
    pub scratch: Option<PathBuf>,
    /// The most bytes kept of each of stdout and stderr (`herzog.max_log_bytes`): the first
    /// half and the last half, with a line between them that says how much was cut.
    #[serde(default = "default_max_log_bytes")]
    pub max_log_bytes: u64,
    /// On a host without the shared filesystem, the uid herzog's SSH login has there. The
    /// attempt's `in/` belongs to it while herzog uploads (so no program can plant anything
    /// there meanwhile) and to the user programs run as once the attempt starts. Unknown: `in/`
    /// stays kinski's until the start.
    #[serde(default)]
    pub uploader_uid: Option<u32>,
}

/// `herzog.max_log_bytes` when cluster.toml does not set it (and what kinski applies to a start
/// from a herzog that does not send it): 64 MiB per stream.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

fn default_max_log_bytes() -> u64 {
    DEFAULT_MAX_LOG_BYTES
}

/// The reply to a worker's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// How often herzog expects a heartbeat.
    pub heartbeat_ms: u64,
    /// Silence after which herzog counts the worker lost: a worker cut off from herzog that
    /// long stops its movable service instances, which herzog then places elsewhere. 0: an
    /// older herzog that does not say.
    #[serde(default)]
    pub worker_timeout_ms: u64,
}

/// The tail of an attempt's output (`hz logs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    pub attempt: Option<AttemptId>,
    pub stdout_path: Option<PathBuf>,
    pub stderr_path: Option<PathBuf>,
    pub stdout: String,
    pub stderr: String,
    /// True when only the tail of a longer file is shown.
    pub truncated: bool,
    /// The lines kinski wrote where it cut a stream longer than `herzog.max_log_bytes`
    /// (`[herzog: N bytes of stdout cut here: ...]`), when they are not in what is shown.
    #[serde(default)]
    pub cut: Vec<String>,
    /// Why the attempt's program never ran (it could not be started), when so: then there is
    /// no output to show.
    #[serde(default)]
    pub never_ran: Option<String>,
}
