//! The messages that cross the wire between hz, herzog and kinski.
//!
//! New fields get `#[serde(default)]` so that a mixed-version cluster keeps talking during an
//! upgrade (the JSON codec is self-describing; see docs/architecture.md).

use crate::run_settings::Settings;
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
    /// How many failed attempts of a fragment are retried (`hz action --retries N`): a budget
    /// of its own, apart from `max_attempts`, which covers lost workers. A stop herzog sent
    /// (remove, cancel) is not a failure.
    #[serde(default)]
    pub retries: u32,
    /// Milliseconds between the stop signal and SIGKILL.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// Stop signal, umask, and whether stdout and stderr are kept: flat in the JSON.
    #[serde(flatten)]
    pub settings: Settings,
    /// Its own alert recipients (`hz action --notify/--webhook`), kept with the project.
    #[serde(default, skip_serializing_if = "crate::alerts::ProjectAlerts::is_empty")]
    pub alerts: crate::alerts::ProjectAlerts,
    /// What each attempt asks of its worker (`--cpus`, `--mem`, `--time`): packs, and what
    /// was given is enforced.
    #[serde(default, skip_serializing_if = "crate::requests::Requests::is_empty")]
    pub requests: crate::requests::Requests,
    /// The limits whose end is retried like a failure (`--retry-on oom,time`); by default an
    /// attempt ended by a limit fails its fragment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<crate::requests::RetryOn>,
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
            retries: 0,
            grace_ms: default_grace_ms(),
            settings: Settings::default(),
            alerts: crate::alerts::ProjectAlerts::default(),
            requests: crate::requests::Requests::default(),
            retry_on: Vec::new(),
        }
    }

    /// Refuses what no worker could apply, naming the setting and what to give instead.
    pub fn check(&self) -> Result<(), crate::ApiError> {
        let invalid = |what: &str, reason: String| crate::ApiError::InvalidValue {
            what: what.into(),
            reason,
        };
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1".into()));
        }
        if self.success_codes.is_empty() {
            return Err(invalid(
                "success codes",
                "give at least one exit code (0 to 255) that counts as success".into(),
            ));
        }
        if let Some(code) = self.success_codes.iter().find(|c| !(0..=255).contains(*c)) {
            return Err(invalid(
                "success codes",
                format!("{code} is not an exit code: exit codes go from 0 to 255"),
            ));
        }
        if let Some(mask) = self.settings.umask
            && mask > 0o777
        {
            return Err(invalid("umask", format!("{mask:o} is above 777")));
        }
        if let Some(cwd) = &self.cwd
            && crate::paths::clean_absolute(cwd).is_err()
        {
            return Err(invalid(
                "cwd",
                format!("{} is not an absolute path without '..'", cwd.display()),
            ));
        }
        self.alerts.check()
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
    /// Projects that must all succeed before this one starts (Slurm's afterok).
    #[serde(default)]
    pub after: Vec<String>,
    /// At most this many of its attempts at once.
    #[serde(default)]
    pub max_running: Option<u32>,
    /// Its weight in the fair share (`hz action --share N`; default 1).
    #[serde(default)]
    pub share: Option<u32>,
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

/// A project's standing in the fair share (`hz shares`). Shares are parts of the CPU-time
/// (running programs × time) used by every project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareInfo {
    pub project: String,
    /// Its weight (`hz share`).
    pub share: u32,
    /// It has work the scheduler may start (else it only finishes what runs).
    pub active: bool,
    /// Its weight over the active projects' weights.
    pub target: f64,
    /// Its part of the CPU-time of the last minute (or since it became active, if later).
    pub last_minute: Option<f64>,
    /// Its part of the CPU-time since it became active.
    pub since_active: Option<f64>,
    /// Its CPU-time since it became active, ms.
    pub used_ms: u64,
    /// How long it has been active, ms.
    pub active_ms: u64,
    /// CPU-time its share entitles it to beyond what it used, ms (negative: it used more).
    pub deficit_ms: i64,
    /// The `priority` project (outside the fair share).
    pub priority: bool,
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
    /// Attempts whose program runs now (kinski said it started).
    pub running: u64,
    /// Attempts dispatched to a worker that wait there for a free slot.
    #[serde(default)]
    pub queued: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Succeeded as a percentage of the total.
    pub percent: f64,
    /// Fragments finished per second lately, scaled to the slots the project holds now;
    /// `None` until there is enough to go by (a few completions since it last ran).
    #[serde(default)]
    pub rate: Option<f64>,
    /// The first reasons its fragments failed, with how many failed for each (at most three).
    #[serde(default)]
    pub failures: Vec<FailureCount>,
    pub created_at: Millis,
    pub results_dir: PathBuf,
    /// Why its pending fragments do not start, when herzog holds them (its state filesystem
    /// is nearly full, it is paused, it waits for or is blocked by a project it comes after,
    /// no worker takes starts).
    #[serde(default)]
    pub held: Option<String>,
    /// Paused (`hz pause`): nothing new starts.
    #[serde(default)]
    pub paused: bool,
    /// The most attempts it runs at once (`hz limit`).
    #[serde(default)]
    pub max_running: Option<u32>,
    /// The projects it comes after.
    #[serde(default)]
    pub after: Vec<String>,
    /// How its programs run (what `hz action` was given); absent from an older herzog.
    #[serde(default)]
    pub spec: Option<Box<RunSpec>>,
    /// What the user should know about how it runs: its requests are not enforced on a
    /// worker that runs its attempts without limits (`limits: none`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ProjectProgress {
    /// True once no fragment is pending, queued or running.
    pub fn is_finished(&self) -> bool {
        self.pending == 0 && self.running == 0 && self.queued == 0
    }

    /// Seconds until the rest is done at the recent rate, when there is one.
    pub fn eta_secs(&self) -> Option<f64> {
        let left = self.pending + self.running + self.queued;
        self.rate.filter(|r| *r > 0.0).map(|r| left as f64 / r)
    }
}

/// How many fragments of a project failed for one reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCount {
    pub reason: String,
    pub count: u64,
}

/// kinski's word that an attempt's program started (it may have waited in the worker's
/// queue since herzog dispatched it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartNotice {
    pub attempt: AttemptId,
    /// When its process was spawned, by the worker's clock.
    pub at: Millis,
}

/// One running attempt (`hz active`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAttempt {
    pub worker: String,
    pub project: String,
    pub fragment: String,
    pub attempt: AttemptId,
    /// When herzog dispatched it.
    pub since: Millis,
    /// When its program started; `None`: it waits in the worker's queue for a free slot.
    #[serde(default)]
    pub started: Option<Millis>,
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
    /// CPUs and memory kept for the system (`kinski.reserve_cpus`, `kinski.reserve_mem`):
    /// attempts are packed into what is left.
    #[serde(default)]
    pub reserved_cpus: u32,
    #[serde(default)]
    pub reserved_memory_bytes: u64,
    /// Which limits the worker enforces.
    #[serde(default)]
    pub limits: crate::requests::LimitSupport,
    /// The CPU's model name and speed (MHz), as the host reports them.
    #[serde(default)]
    pub cpu_model: String,
    #[serde(default)]
    pub cpu_mhz: u64,
}

impl Resources {
    /// The CPUs attempts are packed into.
    pub fn offered_cpus(&self) -> u32 {
        self.cpus.saturating_sub(self.reserved_cpus)
    }

    /// The memory attempts are packed into.
    pub fn offered_memory(&self) -> u64 {
        self.memory_bytes.saturating_sub(self.reserved_memory_bytes)
    }
}

/// One worker as herzog sees it (`hz workers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    pub resources: Resources,
    /// Attempts whose program runs there now.
    pub running: u32,
    /// Attempts dispatched there that wait for a free slot.
    #[serde(default)]
    pub queued: u32,
    /// The service instances it keeps up (starting, running, backing off or stopping), which
    /// use no batch slot.
    #[serde(default)]
    pub instances: u32,
    /// `connected`, `disconnected`, `lost` (silent past the timeout) or `stopped` (its kinski
    /// shut down cleanly).
    pub state: String,
    /// Drained (`hz drain`): it finishes what it runs and takes nothing new.
    #[serde(default)]
    pub drained: bool,
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
    /// Dispatched to a worker, waiting there for a free slot.
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl std::fmt::Display for FragmentStateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FragmentStateKind::Pending => "pending",
            FragmentStateKind::Queued => "queued",
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
    /// The attempt's cgroup's peak memory, where it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Why a fragment failed.
    pub reason: Option<String>,
    /// Every attempt, oldest first, when asked for (`FragmentQuery::attempts`); else empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::history::AttemptInfo>,
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
    /// wait4's peak RSS of the program; 0 when that figure was not the program's own (kinski's
    /// peak, folded in by the kernel at exec, was larger), or nothing ran.
    pub peak_rss_kb: u64,
    pub finished_at: Millis,
    /// The limit that ended it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<crate::requests::LimitHit>,
    /// Its cgroup's peak memory (page cache included), where it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
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
    /// Stop signal, umask, and whether stdout and stderr are kept (the project's).
    #[serde(default)]
    pub settings: Settings,
    /// An `hz run` job's: how its process talks to the caller. Such a start goes ahead of
    /// the batch starts queued on the worker, and the worker reads its output no further
    /// ahead of its follower than [`crate::output::JOB_WINDOW`] (flow control).
    #[serde(default)]
    pub interactive: Option<crate::job::Interactive>,
    /// What it asked for: enforced on the worker as far as its limits allow.
    #[serde(default, skip_serializing_if = "crate::requests::Requests::is_empty")]
    pub requests: crate::requests::Requests,
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

/// A run-time control (`hz pause`, `hz cancel`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "control")]
pub enum Control {
    /// Nothing new of the project starts; what runs finishes; starts queued on workers are
    /// taken back.
    Pause {
        project: String,
    },
    Resume {
        project: String,
    },
    /// Stops these fragments (names or indexes) for good: running attempts are stopped,
    /// queued ones taken back, and each ends failed with the reason "cancelled".
    Cancel {
        project: String,
        fragments: Vec<String>,
    },
    /// At most `max_running` of the project's attempts at once (`None`: no limit).
    Limit {
        project: String,
        max_running: Option<u32>,
    },
    /// The project's weight in the fair share (`hz share P N`): it gets N times the
    /// CPU-time of a weight-1 project while both have work.
    Share {
        project: String,
        share: u32,
    },
    /// The worker finishes what it runs and takes nothing new.
    Drain {
        worker: String,
    },
    Undrain {
        worker: String,
    },
    /// Drops a worker that is not connected from the list.
    Forget {
        worker: String,
    },
}
