//! kinski's Worker service, served to herzog over the connection kinski dialed.

use crate::supervisor::Supervisor;
use common::AttemptId;
use common::service::{Worker, WorkerError};
use common::wire::{Resources, StartAttempt};
use tarpc::context::Context;

#[derive(Clone)]
pub(crate) struct WorkerService {
    pub(crate) supervisor: Supervisor,
    pub(crate) resources: Resources,
}

impl Worker for WorkerService {
    async fn fragment_prep(self, _: Context, start: StartAttempt) -> Result<(), WorkerError> {
        // On a shared filesystem there is nothing to stage; make sure the output folders exist.
        for dir in [start.stdout.parent(), Some(start.output_dir.as_path())]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir).map_err(|e| WorkerError::Prepare {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    async fn fragment_start(self, _: Context, start: StartAttempt) -> Result<(), WorkerError> {
        self.supervisor.start(start)
    }

    async fn fragment_stop(self, _: Context, attempt: AttemptId) -> Result<(), WorkerError> {
        self.supervisor.stop(attempt)
    }

    async fn fragment_list(self, _: Context) -> Vec<AttemptId> {
        self.supervisor.running()
    }

    async fn resources_list(self, _: Context) -> Resources {
        self.resources
    }
}
