//! kinski's Worker service, served to herzog over the connection kinski dialed.

use crate::supervisor::Supervisor;
use common::AttemptId;
use common::instances::{InstanceRun, RunId, WatchSpec};
use common::service::{Worker, WorkerError};
use common::wire::{Resources, StartAttempt};
use tarpc::context::Context;

#[derive(Clone)]
pub(crate) struct WorkerService {
    pub(crate) supervisor: Supervisor,
    pub(crate) resources: Resources,
}

impl Worker for WorkerService {
    async fn fragment_prep(self, _: Context, start: Box<StartAttempt>) -> Result<(), WorkerError> {
        self.supervisor.prepare(&start).await
    }

    async fn fragment_start(self, _: Context, starts: Vec<StartAttempt>) -> Vec<Result<(), WorkerError>> {
        starts.into_iter().map(|start| self.supervisor.start(start)).collect()
    }

    async fn fragment_stop(self, _: Context, attempt: AttemptId) -> Result<(), WorkerError> {
        self.supervisor.stop(attempt).await
    }

    async fn fragment_list(self, _: Context) -> Vec<AttemptId> {
        self.supervisor.running()
    }

    async fn resources_list(self, _: Context) -> Resources {
        self.resources
    }

    // Services are placed by herzog but not yet run by kinski: the runner comes next (issue 11).
    async fn instance_run(self, _: Context, run: Box<InstanceRun>) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run: run.run })
    }

    async fn instance_stop(self, _: Context, run: RunId) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run })
    }

    async fn instance_retune(self, _: Context, run: RunId, _: WatchSpec) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run })
    }
}
