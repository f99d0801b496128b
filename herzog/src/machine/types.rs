//! The state machine's vocabulary: states that carry their data, events in, effects and
//! writes out.

use common::wire::{Completion, Policy, Resources, RunSpec, StartAttempt};
use common::{ApiError, AttemptId, FragmentId, Millis, ProjectId};
use std::path::PathBuf;

/// A reading of the monotonic clock, in milliseconds from an origin of the reader's choosing
/// (herzog's start). It never jumps, so every timeout is measured on it; wall time, which an
/// NTP step can move either way, is only recorded and shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mono(pub(crate) i64);

impl Mono {
    /// Milliseconds from `earlier` to this reading.
    pub(crate) fn since(self, earlier: Mono) -> i64 {
        self.0 - earlier.0
    }
}

/// The moment an event is applied, on both clocks: `wall` for what is recorded and shown,
/// `mono` for deciding timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Now {
    pub(crate) wall: Millis,
    pub(crate) mono: Mono,
}

impl Now {
    /// Both clocks at `ms` (tests).
    #[cfg(test)]
    pub(crate) fn at(ms: i64) -> Now {
        Now {
            wall: ms,
            mono: Mono(ms),
        }
    }
}

/// Room on herzog's state filesystem, as last measured: while it is low, no attempt starts
/// (each writes logs there), and running ones go on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Space {
    #[default]
    Enough,
    Low {
        free_bytes: u64,
        min_bytes: u64,
    },
}

impl Space {
    /// Why nothing starts, when nothing does.
    pub(crate) fn held(&self) -> Option<String> {
        match self {
            Space::Enough => None,
            Space::Low { free_bytes, min_bytes } => Some(format!(
                "herzog starts no attempt: its state filesystem has {} free, less than herzog.min_free_space ({}); free some space there (old projects' results: `hz remove`) and starts resume",
                bytesize::ByteSize(*free_bytes),
                bytesize::ByteSize(*min_bytes)
            )),
        }
    }
}

/// Where one fragment is. Only the transitions in [`FragmentState::may_become`] happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FragmentState {
    Pending,
    Running {
        attempt: AttemptId,
        worker: String,
        since: Millis,
    },
    Succeeded {
        attempt: AttemptId,
    },
    Failed {
        attempt: Option<AttemptId>,
        reason: String,
    },
}

impl FragmentState {
    /// Every legal fragment transition.
    pub(crate) fn may_become(&self, next: &FragmentState) -> bool {
        use FragmentState::*;
        matches!(
            (self, next),
            (Pending, Running { .. })
                | (Pending, Failed { .. })
                | (Running { .. }, Succeeded { .. })
                | (Running { .. }, Pending)
                | (Running { .. }, Failed { .. })
                | (Failed { .. }, Pending)
        )
    }
}

/// A worker's connection state: whether herzog can reach it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionState {
    /// Registered, with a live connection: attempts may be dispatched to it.
    Connected,
    /// Its connection dropped (or herzog restarted); its attempts keep their fragments until
    /// it re-registers or the watchdog declares it lost.
    Disconnected { since: Millis },
    /// Silent past the timeout; its attempts were lost and requeued.
    Lost { since: Millis },
    /// Its kinski said it was shutting down (a clean stop, not a loss).
    Stopped { since: Millis },
}

impl ConnectionState {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected { .. } => "disconnected",
            ConnectionState::Lost { .. } => "lost",
            ConnectionState::Stopped { .. } => "stopped",
        }
    }
}

/// A worker that refuses starts for a reason that does not go away by itself (a path it
/// rejects, a directory it cannot make): it gets none until `until`, and the wait doubles
/// with each refusal, so herzog does not retry in a hot loop. A start it runs ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusing {
    pub(crate) reason: String,
    pub(crate) count: u64,
    pub(crate) wait_ms: i64,
    pub(crate) until: Mono,
}

/// How a worker gets its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Staging {
    /// Its host has the shared filesystem: programs read inputs where they are.
    Shared,
    /// Over SSH into its scratch directory; herzog is checking that it can log in.
    Checking { scratch: PathBuf },
    /// Over SSH; the last check or transfer worked.
    Ready { scratch: PathBuf },
    /// Over SSH, which failed: no work goes there until a new check succeeds.
    Broken {
        scratch: Option<PathBuf>,
        reason: String,
        since: Mono,
    },
}

impl Staging {
    /// The scratch directory of a worker that stages, whatever its health.
    pub(crate) fn scratch(&self) -> Option<&PathBuf> {
        match self {
            Staging::Shared => None,
            Staging::Checking { scratch } | Staging::Ready { scratch } => Some(scratch),
            Staging::Broken { scratch, .. } => scratch.as_ref(),
        }
    }
}

/// A file herzog copies to a worker's host before its attempt starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upload {
    pub(crate) from: PathBuf,
    pub(crate) to: PathBuf,
}

/// What herzog copies back from a staged attempt's directory when it completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fetch {
    /// The program's `HERZOG_OUTPUT_DIR` on the host, and the project's output folder.
    pub(crate) outputs: (PathBuf, PathBuf),
    /// stdout and stderr on the host, and where they go in the results folder.
    pub(crate) logs: Vec<(PathBuf, PathBuf)>,
}

/// How an attempt ended, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    /// The accepted result of its fragment.
    Succeeded,
    /// It ran and failed.
    Failed,
    /// Its worker was lost or it never started; its fragment went back to the queue.
    Lost,
    /// herzog stopped it (project removed, or a worker ran it unexpectedly).
    Stopped,
    /// Its files could not be copied to or from its host: recorded as failed, and its
    /// fragment goes back to the queue while it has attempts left.
    StagingFailed,
    /// Taken back before it ran (pause, drain, a lower limit), or stopped by its worker's
    /// clean shutdown: it costs its fragment no attempt, which goes back to the queue.
    TakenBack,
    /// Stopped or taken back by `hz cancel`: its fragment ends failed, "cancelled".
    Cancelled,
}

impl AttemptEnd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AttemptEnd::Succeeded => "succeeded",
            AttemptEnd::Failed | AttemptEnd::StagingFailed => "failed",
            AttemptEnd::Lost => "lost",
            AttemptEnd::Stopped | AttemptEnd::TakenBack | AttemptEnd::Cancelled => "stopped",
        }
    }
}

/// Something that happened, with the time it is applied at.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    /// Boxed: the largest event by far, and events wait in channels by the thousand.
    AddProject(Box<NewProjectEvent>),
    RemoveProject {
        name: String,
    },
    /// Failed fragments of a project go back to the queue.
    Retry {
        name: String,
    },
    SetPolicy(Policy),
    Register {
        worker: String,
        resources: Resources,
        running: Vec<AttemptId>,
        /// Its host lacks the shared filesystem: files go over SSH.
        staged: bool,
    },
    Heartbeat {
        worker: String,
        running: Vec<AttemptId>,
    },
    /// These attempts' programs started on `worker`.
    Started {
        worker: String,
        notices: Vec<common::wire::StartNotice>,
    },
    /// The worker's kinski is shutting down cleanly, having stopped its attempts.
    WorkerStopping {
        worker: String,
        /// Attempts it still holds finished, to report when it is back.
        held: Vec<AttemptId>,
    },
    /// A run-time control from hz.
    Control(common::wire::Control),
    /// The worker dropped these starts from its queue, as asked: they never ran.
    TakenBack {
        worker: String,
        attempts: Vec<AttemptId>,
    },
    Complete {
        worker: String,
        completion: Completion,
        /// Why its outputs could not be fetched from its host, if they could not.
        staging_error: Option<String>,
    },
    /// The free space on herzog's state filesystem, measured now, and the least it must keep.
    StateSpace {
        free_bytes: u64,
        min_bytes: u64,
    },
    /// What a worker says of the service instances it holds.
    InstancesReport {
        worker: String,
        reports: Vec<common::instances::InstanceReport>,
    },
    /// What happened to a worker's instances.
    InstanceEvents {
        worker: String,
        events: Vec<common::instances::InstanceEvent>,
    },
    /// A worker refused to run a placement (a user it may not switch to, ...).
    InstanceRefused {
        worker: String,
        run: common::instances::RunId,
        reason: String,
    },
    /// A services file to apply (read at start-up, or by `hz reload`).
    ServicesReload {
        file: common::services::ServicesFile,
    },
    /// `hz start`, `hz stop` or `hz restart` of the instances `names` select.
    ServicesControl {
        action: common::instances::ServiceAction,
        names: Vec<String>,
    },
    /// The outcome of a login check on a staged worker's host.
    Probed {
        worker: String,
        result: Result<(), String>,
    },
    /// An attempt's input could not be copied to its host.
    StagingFailed {
        attempt: AttemptId,
        reason: String,
    },
    /// The worker's connection closed.
    Disconnected {
        worker: String,
    },
    /// The worker refused a start: the program never ran. `lasting`: for a reason that does
    /// not go away by itself (not a full queue or a shutdown), so the worker is given a rest.
    StartRefused {
        attempt: AttemptId,
        reason: String,
        lasting: bool,
    },
    /// A start could not be delivered, or it is unknown whether it was.
    DispatchFailed {
        attempt: AttemptId,
        reason: String,
    },
    /// Time passed: the watchdog looks at every worker.
    Tick,
    /// `hz run`: a command to run once.
    AddJob(Box<common::job::JobRequest>),
    /// The alert sender delivered these outbox rows.
    AlertsDelivered {
        ids: Vec<i64>,
    },
}

/// A project to add.
#[derive(Clone, Debug)]
pub(crate) struct NewProjectEvent {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) spec: RunSpec,
    pub(crate) files: Vec<String>,
    pub(crate) after: Vec<String>,
    pub(crate) max_running: Option<u32>,
    /// Its weight in the fair share (`hz action --share`).
    pub(crate) share: u32,
}

/// The answer to an event, sent to its caller after the batch is committed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    Added(common::wire::ProjectAdded),
    Done,
    Retried(u64),
    Policy(Policy),
    Registered,
    /// What a control did, in a line.
    Controlled(String),
    Reloaded(common::instances::ReloadSummary),
    Instances(Vec<common::instances::InstanceStatus>),
    Job(common::job::JobStarted),
}

/// IO to do once the batch is durable.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Effect {
    /// Starts an attempt; on a staged worker, `upload` is copied first.
    Start {
        worker: String,
        start: Box<StartAttempt>,
        upload: Vec<Upload>,
    },
    Stop {
        worker: String,
        attempt: AttemptId,
    },
    /// Takes back starts waiting in a worker's queue; what it dropped comes back as
    /// [`Event::TakenBack`].
    Unqueue {
        worker: String,
        attempts: Vec<AttemptId>,
    },
    /// Checks that herzog can log in to a staged worker's host and reach its scratch directory.
    Probe {
        worker: String,
        scratch: PathBuf,
    },
    /// Asks a worker to run, stop or retune a service instance's placement.
    Instance(crate::services::Order),
    /// Runs a placement on a worker without the shared filesystem: kinski makes its
    /// directory (`run.staged`), herzog copies `upload` (the service's `stage` files) there,
    /// then the placement runs.
    StageInstance {
        worker: String,
        run: Box<common::instances::InstanceRun>,
        upload: Vec<Upload>,
    },
    /// The alert outbox has new rows: wakes the sender.
    Alerts,
}

/// A change to the database, committed with the rest of its batch.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Write {
    AddProject {
        id: ProjectId,
        name: String,
        dir: PathBuf,
        spec: Box<RunSpec>,
        results_dir: PathBuf,
        created_at: Millis,
        first_fragment: FragmentId,
        /// Shared with the machine's project: not a copy of a million names.
        names: std::sync::Arc<super::Names>,
        after: Vec<String>,
        max_running: Option<u32>,
    },
    /// A project's run-time controls as they are now.
    ProjectControls {
        id: ProjectId,
        paused: bool,
        max_running: Option<u32>,
        after: Vec<String>,
    },
    RemoveProject {
        id: ProjectId,
        at: Millis,
    },
    /// A project's fair-share weight (`hz share`, `hz action --share`).
    ProjectShare {
        id: ProjectId,
        share: u32,
    },
    Fragment {
        id: FragmentId,
        attempts: u32,
        /// How many of its attempts failed.
        failures: u32,
        state: FragmentState,
    },
    AttemptStarted {
        id: AttemptId,
        fragment: FragmentId,
        worker: String,
        at: Millis,
    },
    /// An attempt ended; `completion` is there when the worker reported one.
    AttemptEnded {
        id: AttemptId,
        end: AttemptEnd,
        at: Millis,
        completion: Option<Completion>,
        note: Option<String>,
    },
    /// A completion for an attempt that had already ended (lost, stopped, or reported
    /// before): kept on the attempt's record if `worker` is the one it ran on, changes nothing.
    Late {
        id: AttemptId,
        worker: String,
        completion: Completion,
    },
    Worker {
        name: String,
        resources: Resources,
        seen: Millis,
    },
    /// When a worker was last heard from, and whether it stopped cleanly.
    WorkerSeen {
        name: String,
        seen: Millis,
        stopped: bool,
    },
    WorkerDrained {
        name: String,
        drained: bool,
    },
    ForgetWorker {
        name: String,
    },
    /// kinski started the attempt's program at `at`.
    AttemptRan {
        id: AttemptId,
        at: Millis,
    },
    Policy(Policy),
    /// The services file in force.
    ServicesFile(common::services::ServicesFile),
    /// An instance as it is now, or gone.
    Instance {
        id: common::instances::InstanceId,
        recorded: Option<crate::services::Recorded>,
    },
    /// The highest run id issued.
    MaxRun(i64),
    /// Entries of the services' event log; one a worker sent before (its run and number) is
    /// kept once.
    ServiceEvents(Vec<StoredEvent>),
    /// A job's own part, as it is now (its project is written by `AddProject`).
    Job {
        id: ProjectId,
        job: Box<super::Job>,
    },
    /// Alerts to deliver, one row per recipient; one whose origin and recipient are stored
    /// already is kept once.
    Alerts(Vec<super::OutboxRow>),
    /// Outbox rows the sender delivered.
    AlertsDelivered {
        ids: Vec<i64>,
        at: Millis,
    },
}

/// An entry of the services' event log, as the record keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredEvent {
    pub(crate) id: i64,
    pub(crate) at: Millis,
    pub(crate) service: String,
    /// Empty for an event of the whole service.
    pub(crate) instance: String,
    pub(crate) worker: Option<String>,
    /// The worker's name for it (run and number), when a worker reported it.
    pub(crate) origin: Option<(common::instances::RunId, u32)>,
    pub(crate) kind: common::instances::EventKind,
}

/// An event that does not fit the state: rejected, logged, and nothing changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejected {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("worker {worker} reported attempt {attempt}, which runs on {runs_on}")]
    NotItsAttempt {
        worker: String,
        attempt: AttemptId,
        runs_on: String,
    },
    #[error("attempt {attempt} was never issued")]
    UnknownAttempt { attempt: AttemptId },
}

impl From<Rejected> for ApiError {
    fn from(r: Rejected) -> ApiError {
        match r {
            Rejected::Api(e) => e,
            Rejected::NotItsAttempt { attempt, .. } | Rejected::UnknownAttempt { attempt } => {
                ApiError::UnknownAttempt { attempt }
            }
        }
    }
}
