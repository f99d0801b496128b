//! The errors herzog's RPCs return: serializable, each naming the problem and what to do.

use serde::{Deserialize, Serialize};

/// An error returned over the wire. The message is what the CLI prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    #[error("no project named '{name}': `hz list` shows the projects")]
    UnknownProject { name: String },
    #[error("no service or instance named '{name}': `hz status` shows them")]
    UnknownService { name: String },
    #[error("{reason}; nothing was changed")]
    BadServicesFile { reason: String },
    #[error("a project named '{name}' already exists: choose another with --name, or `hz remove {name}` first")]
    DuplicateProject { name: String },
    #[error(
        "the results folder {path} of an earlier project '{name}' is still there: choose another --name, or delete it with `hz remove --purge {name}`"
    )]
    ResultsExist { name: String, path: String },
    #[error(
        "project '{name}' was removed, but its results folder {path} could not be deleted: {reason}; delete it by hand"
    )]
    PurgeFailed { name: String, path: String, reason: String },
    #[error(
        "fragment '{fragment}' of project '{project}' has no attempt {attempt}: its attempts are {known} (`hz fragments {project} {fragment}`)"
    )]
    NoSuchAttempt {
        project: String,
        fragment: String,
        attempt: crate::AttemptId,
        known: String,
    },
    #[error("'{name}' is not a valid name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("directory {dir} cannot be read: {reason}; give an existing directory")]
    DirectoryUnreadable { dir: String, reason: String },
    #[error("directory {dir} has no input files (hidden files are skipped): put the inputs there first")]
    EmptyDirectory { dir: String },
    #[error("program '{program}' was not found{where_}: give a path or a command on PATH")]
    ProgramNotFound { program: String, where_: String },
    #[error("program '{program}' is not executable: chmod +x it")]
    ProgramNotExecutable { program: String },
    #[error("the program is empty: say what to run on each file")]
    EmptyProgram,
    #[error("project '{project}' has no fragment '{fragment}': `hz fragments {project}` lists them")]
    UnknownFragment { project: String, fragment: String },
    #[error("worker '{name}' is not registered: it must call register first")]
    UnknownWorker { name: String },
    #[error("attempt {attempt} is not known to herzog (or not this worker's); drop it")]
    UnknownAttempt { attempt: crate::AttemptId },
    #[error("this connection's certificate is for '{certificate}', not '{claimed}'")]
    NotYourName { certificate: String, claimed: String },
    #[error("invalid value for {what}: {reason}")]
    InvalidValue { what: String, reason: String },
    #[error("herzog failed to store the change: {reason}; see herzog's log")]
    Storage { reason: String },
    #[error("herzog is shutting down: try again when it is back")]
    ShuttingDown,
    #[error("'{name}' names {instances} instances: name one of them")]
    AmbiguousInstance { name: String, instances: String },
    #[error("{instance} is not placed on any worker: {reason}")]
    NotPlaced { instance: String, reason: String },
    #[error("{instance} runs on worker '{worker}', which herzog cannot reach now: {reason}")]
    HostUnreachable {
        instance: String,
        worker: String,
        reason: String,
    },
    #[error("{instance}'s {stream} is not kept by its worker: {reason}")]
    OutputNotKept {
        instance: String,
        stream: String,
        reason: String,
    },
    #[error("no worker named '{name}': `hz workers` lists them")]
    NoSuchWorker { name: String },
    #[error("worker '{name}' is not connected to herzog (it is {state}): there is no kinski to ask")]
    WorkerNotConnected { name: String, state: String },
    #[error("failed to ask worker '{name}' to shut down: {reason}")]
    WorkerUnreachable { name: String, reason: String },
    #[error("no job named '{name}': `hz active` shows the running ones")]
    UnknownJob { name: String },
    #[error("job {name}: {reason}")]
    Job { name: String, reason: String },
    #[error(
        "no worker can fit {request}: the largest offers {largest} ({worker}); ask for less (--cpus, --mem) or add a larger worker"
    )]
    NoWorkerFits {
        request: String,
        largest: String,
        worker: String,
    },
}
