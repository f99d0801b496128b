//! The tarpc services: what hz asks herzog, what kinski tells herzog, what herzog asks kinski.

use crate::history::{FragmentQuery, LogsQuery, ProjectRemoved};
use crate::instances::{
    InstanceEvent, InstanceReport, InstanceRun, InstanceStatus, ReloadSummary, RunId, ServiceAction, ServiceEvent,
    WatchSpec,
};
use crate::job::{CommandInfo, JobRequest, JobStarted, JobState, TtySize};
use crate::output::{FragmentOutput, FragmentRead, OutputChunk, OutputTarget, Position, ServiceOutput, ServiceRead};
use crate::wire::*;
use crate::{ApiError, AttemptId};

/// herzog's service for users (hz).
#[tarpc::service]
pub trait Coordinator {
    /// Adds a project; its fragments are the regular, non-hidden files of the directory.
    async fn project_add(project: NewProject) -> Result<ProjectAdded, ApiError>;
    /// Removes a project and stops its running attempts.
    async fn project_remove(name: String) -> Result<(), ApiError>;
    /// Removes a project and stops its running attempts, and says where its results folder
    /// is. With `purge`, deletes that folder once the removal is stored; also the folder an
    /// earlier, removed project of that name left.
    async fn project_remove_with(name: String, purge: bool) -> Result<ProjectRemoved, ApiError>;
    /// Progress of one project, or of every project.
    async fn project_progress(name: Option<String>) -> Result<Vec<ProjectProgress>, ApiError>;
    /// Progress of one project, or of every project, answered as soon as none of them has a
    /// fragment pending or running, or after `timeout_ms` (capped at 60 s and below the call's
    /// deadline) with the progress at that moment. What `hz local` and `hz progress --watch`
    /// follow a project with, so they see its end when it happens rather than at a poll.
    async fn project_wait(name: Option<String>, timeout_ms: u64) -> Result<Vec<ProjectProgress>, ApiError>;
    /// Puts a project's failed fragments back in the queue; returns how many.
    async fn project_retry(name: String) -> Result<u64, ApiError>;
    /// Sets the scheduling policy (persisted).
    async fn project_schedule(policy: Policy) -> Result<Policy, ApiError>;
    /// The current policy.
    async fn policy() -> Result<Policy, ApiError>;
    /// A page of the attempts dispatched (running, or queued on their worker), in attempt
    /// order: at most `limit` (capped at 10,000) from `offset`.
    async fn project_active(offset: u64, limit: u32) -> Result<Page<ActiveAttempt>, ApiError>;
    /// Every worker herzog knows.
    async fn workers() -> Result<Vec<WorkerInfo>, ApiError>;
    /// A page of a project's fragments.
    async fn fragments(project: String, offset: u64, limit: u32) -> Result<Page<FragmentInfo>, ApiError>;
    /// The output of a fragment's latest attempt; `fragment` is a file name or an index.
    async fn logs(project: String, fragment: String, max_bytes: u64) -> Result<Logs, ApiError>;
    /// A page of a project's fragments, filtered (one fragment, a worker, a time) and with
    /// their attempts when asked, read from herzog's record.
    async fn fragments_query(project: String, query: FragmentQuery) -> Result<Page<FragmentInfo>, ApiError>;
    /// The output of one attempt of a fragment (its latest when none is named).
    async fn fragment_logs(query: LogsQuery) -> Result<Logs, ApiError>;
    /// Every service instance (those of `name`, a service or `name:N`, when given) and where
    /// each is.
    async fn services_status(name: Option<String>) -> Result<Vec<InstanceStatus>, ApiError>;
    /// Starts, stops or restarts the instances `names` select (services, `name:N`, or `all`);
    /// answers every instance as it is then.
    async fn services_control(action: ServiceAction, names: Vec<String>) -> Result<Vec<InstanceStatus>, ApiError>;
    /// Reads the services file again and applies what changed; a file with an error changes
    /// nothing and the error says what is wrong.
    async fn services_reload() -> Result<ReloadSummary, ApiError>;
    /// The event log of the services (of `service` when given): the last `limit` events when
    /// `after` is `None`, else the first `limit` after that id, waiting up to `wait_ms` (at
    /// most 60 s) for one to come (`hz events --follow`).
    async fn services_events(
        service: Option<String>,
        after: Option<i64>,
        limit: u32,
        wait_ms: u64,
    ) -> Result<Vec<ServiceEvent>, ApiError>;
    /// A chunk of a service instance's output: at most `read.max` bytes of its stream from
    /// `read.position`, read from the placement `read.follow` names on its worker, waiting up
    /// to `read.wait_ms` for bytes to come (`hz tail -f`).
    async fn service_output(read: ServiceRead) -> Result<ServiceOutput, ApiError>;
    /// A chunk of a fragment's running attempt's output (`hz logs -f`): at most `read.max`
    /// bytes of its stream from `read.position`, read from its worker, waiting up to
    /// `read.wait_ms` for bytes to come; with where the fragment is after the read, so a
    /// follower knows when the attempt has ended and how.
    async fn fragment_output(read: FragmentRead) -> Result<FragmentOutput, ApiError>;
    /// A run-time control of projects or workers (`hz pause`, `hz cancel`, `hz limit`,
    /// `hz drain`, ...); answers what it did, in a line.
    async fn control(control: Control) -> Result<String, ApiError>;
    /// Runs a command once on a worker (`hz run`), ahead of queued batch work: answers its
    /// name once the job is recorded; `fragment_output` on that name (fragment 0) streams its
    /// output, `job_state` says how it ended.
    async fn job_start(request: JobRequest) -> Result<JobStarted, ApiError>;
    /// Where a job is; with `wait_ms`, answers as soon as it has ended, or after that long (at
    /// most 60 s and below the call's deadline).
    async fn job_state(name: String, wait_ms: u64) -> Result<JobState, ApiError>;
    /// Sends a signal (its number) to a job's process group; a job not started yet is
    /// cancelled.
    async fn job_signal(name: String, signal: i32) -> Result<(), ApiError>;
    /// Writes to a job's stdin (`hz run -i`) from stream offset `offset` (bytes already
    /// written are skipped, so a call sent again writes nothing twice); `eof` closes it.
    /// Answers once the bytes are in the program's pipe: the caller's flow control.
    async fn job_input(name: String, offset: u64, bytes: Vec<u8>, eof: bool) -> Result<(), ApiError>;
    /// Sets a job's terminal size (`hz run -t`, when the caller's window changes).
    async fn job_resize(name: String, size: TtySize) -> Result<(), ApiError>;
    /// The named commands of the services file (`hz commands`).
    async fn commands() -> Result<Vec<CommandInfo>, ApiError>;
    /// Shuts down cleanly (`hz shutdown`): herzog itself when `worker` is `None`, as SIGTERM
    /// would (the services keep running on their workers); else that worker's kinski, which
    /// herzog asks over its connection and which stops as SIGTERM would stop it. Answers what
    /// happens, in a line, before herzog stops.
    async fn shutdown(worker: Option<String>) -> Result<String, ApiError>;
    /// Each project's standing in the fair share (`hz shares`).
    async fn shares() -> Result<Vec<ShareInfo>, ApiError>;
    /// What a project's attempts used (`hz report`): wall and CPU time, efficiency and peak
    /// memory as min / median / p95 / max, the slowest and largest fragments, failures by
    /// reason, attempts per host. Of the live project of that name, else the latest removed.
    async fn project_report(name: String) -> Result<crate::report::Report, ApiError>;
}

/// The most starts or completions one call carries: a batch of herzog's loop is 8,192
/// commands, and a frame stays far below the transport's limit.
pub const MAX_BATCH: usize = 1024;

/// herzog's service for workers (kinski).
#[tarpc::service]
pub trait Registry {
    /// A worker announces itself and what it is running (after a restart of either side).
    async fn resources_register(
        name: String,
        resources: Resources,
        running: Vec<AttemptId>,
    ) -> Result<Registered, ApiError>;
    /// Liveness plus the set of attempts the worker runs.
    async fn heartbeat(name: String, running: Vec<AttemptId>) -> Result<(), ApiError>;
    /// These attempts' programs started (each may have waited in the worker's queue).
    async fn fragment_started(name: String, started: Vec<StartNotice>) -> Result<(), ApiError>;
    /// The worker is shutting down cleanly: it stopped its attempts, which herzog requeues
    /// at once without counting them against their fragments, and shows it `stopped`.
    /// `held`: attempts that finished there and are not acknowledged yet (reported when it is
    /// back).
    async fn worker_stopping(name: String, held: Vec<AttemptId>) -> Result<(), ApiError>;
    /// Attempts ended (at most [`MAX_BATCH`]). One result per completion, in order: `Ok` means
    /// herzog has stored it and the worker may forget it. Outputs of attempts on a host
    /// without the shared filesystem are fetched before the reply, so the call may take as
    /// long as that.
    async fn fragment_complete(
        name: String,
        completions: Vec<Completion>,
    ) -> Result<Vec<Result<(), ApiError>>, ApiError>;
    /// Every service instance the worker holds and where each is; sent beside each heartbeat
    /// and whenever one changes state.
    async fn instances_report(name: String, reports: Vec<InstanceReport>) -> Result<(), ApiError>;
    /// What happened to the worker's instances, in order; `Ok`: stored (one sent again is
    /// kept once), the worker may forget them.
    async fn instance_events(name: String, events: Vec<InstanceEvent>) -> Result<(), ApiError>;
}

/// kinski's service, called by herzog.
#[tarpc::service]
pub trait Worker {
    /// Prepares for an attempt (scratch directory, staging). Idempotent. Boxed (the same on
    /// the wire): requests wait in per-connection channels whose blocks hold 32 of them
    /// inline, and a start is the largest by far.
    async fn fragment_prep(start: Box<StartAttempt>) -> Result<(), WorkerError>;
    /// Starts attempts (at most [`MAX_BATCH`]), one result per start, in order. Starting an
    /// attempt that already runs is a no-op.
    async fn fragment_start(starts: Vec<StartAttempt>) -> Vec<Result<(), WorkerError>>;
    /// Stops an attempt: the stop signal to its process group, then SIGKILL after the grace.
    async fn fragment_stop(attempt: AttemptId) -> Result<(), WorkerError>;
    /// The attempts running now.
    async fn fragment_list() -> Vec<AttemptId>;
    /// Takes back starts still waiting in the queue for a slot (pause, cancel, drain): answers
    /// those it dropped; the others have started (or ended) and are left as they are.
    async fn fragment_unqueue(attempts: Vec<AttemptId>) -> Vec<AttemptId>;
    /// What this host offers.
    async fn resources_list() -> Resources;
    /// Keeps a service instance's placement up (restarting it by its policy) until it is
    /// stopped. Idempotent: a placement already held is left as it is.
    async fn instance_run(run: Box<InstanceRun>) -> Result<(), WorkerError>;
    /// Makes a staged placement's directory, `<scratch>/services/<run>`, and gives it to
    /// herzog's login there (`uploader_uid`) for the service's `stage` files, until the
    /// placement's `instance_run`.
    async fn instance_prep(run: RunId, uploader_uid: u32) -> Result<(), WorkerError>;
    /// Stops a placement (stop signal, SIGKILL after its grace) and forgets it.
    async fn instance_stop(run: RunId) -> Result<(), WorkerError>;
    /// Watches a placement so from now on, without restarting it.
    async fn instance_retune(run: RunId, watch: WatchSpec) -> Result<(), WorkerError>;
    /// Sends a signal (its number) to a placement's process group, if it has a process.
    async fn instance_signal(run: RunId, signal: i32) -> Result<(), WorkerError>;
    /// At most `max` bytes (capped at [`MAX_READ`](crate::output::MAX_READ)) of `target`'s
    /// output from `position`; when none are there yet, waits up to `wait_ms` (at most
    /// [`MAX_WAIT_MS`](crate::output::MAX_WAIT_MS)) for some to be written. The read that
    /// follows a chunk is the caller's flow control: nothing is sent unasked.
    async fn output_read(
        target: OutputTarget,
        position: Position,
        max: u32,
        wait_ms: u64,
    ) -> Result<OutputChunk, WorkerError>;
    /// Sends a signal (its number) to a running attempt's process group.
    async fn fragment_signal(attempt: AttemptId, signal: i32) -> Result<(), WorkerError>;
    /// Writes to a job's stdin from stream offset `offset` (what was written already is
    /// skipped); `eof` closes it. Answers once the bytes are in the pipe.
    async fn fragment_input(attempt: AttemptId, offset: u64, bytes: Vec<u8>, eof: bool) -> Result<(), WorkerError>;
    /// Sets a job's terminal size.
    async fn fragment_resize(attempt: AttemptId, size: TtySize) -> Result<(), WorkerError>;
    /// Shuts kinski down cleanly, as SIGTERM would (`hz shutdown WORKER`): it answers first,
    /// then stops its attempts and instances and tells herzog it stops.
    async fn shutdown() -> Result<(), WorkerError>;
}

/// Why kinski refused a call.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum WorkerError {
    #[error("every slot is busy (slots: {slots})")]
    NoFreeSlot { slots: u32 },
    #[error("failed to prepare {path}: {reason}")]
    Prepare { path: String, reason: String },
    #[error("this worker is shutting down")]
    ShuttingDown,
    #[error("attempt {attempt} is not running here")]
    UnknownAttempt { attempt: AttemptId },
    #[error("service instance placement {run} is not held here")]
    UnknownRun { run: RunId },
    #[error("attempt {attempt} takes no input: it was not started with -i")]
    NoInput { attempt: AttemptId },
    #[error("failed to write to the stdin of attempt {attempt}: {reason}")]
    Input { attempt: AttemptId, reason: String },
    #[error("attempt {attempt} has no terminal: it was not started with -t")]
    NoTty { attempt: AttemptId },
    #[error("service instance placement {run} keeps no {stream}: it is discarded or goes to a file the service names")]
    NotKept { run: RunId, stream: String },
}
