//! kinski's Worker service, served to herzog over the connection kinski dialed.

use crate::supervisor::Supervisor;
use common::AttemptId;
use common::instances::{InstanceRun, RunId, WatchSpec};
use common::output::{OutputChunk, OutputTarget, Position};
use common::service::{Worker, WorkerError};
use common::wire::{Resources, StartAttempt};
use std::time::Duration;
use tarpc::context::Context;

/// How long kinski, asked to shut down, waits for its answer to leave before it stops.
const REPLY_FIRST: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub(crate) struct WorkerService {
    pub(crate) supervisor: Supervisor,
    pub(crate) instances: crate::services::Instances,
    pub(crate) resources: Resources,
    /// `hz shutdown WORKER`: kinski's loop stops as on SIGTERM when this is notified.
    pub(crate) stop: std::sync::Arc<tokio::sync::Notify>,
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

    async fn fragment_signal(self, _: Context, attempt: AttemptId, signal: i32) -> Result<(), WorkerError> {
        self.supervisor.signal(attempt, signal)
    }

    async fn fragment_input(
        self,
        _: Context,
        attempt: AttemptId,
        offset: u64,
        bytes: Vec<u8>,
        eof: bool,
    ) -> Result<(), WorkerError> {
        self.supervisor.input(attempt, offset, bytes, eof).await
    }

    async fn fragment_resize(
        self,
        _: Context,
        attempt: AttemptId,
        size: common::job::TtySize,
    ) -> Result<(), WorkerError> {
        self.supervisor.resize(attempt, size)
    }

    async fn fragment_list(self, _: Context) -> Vec<AttemptId> {
        self.supervisor.running()
    }

    async fn fragment_unqueue(self, _: Context, attempts: Vec<AttemptId>) -> Vec<AttemptId> {
        self.supervisor.unqueue(&attempts)
    }

    async fn resources_list(self, _: Context) -> Resources {
        self.resources
    }

    async fn instance_run(self, _: Context, run: Box<InstanceRun>) -> Result<(), WorkerError> {
        self.instances.run(*run)
    }

    async fn instance_prep(self, _: Context, run: RunId, uploader_uid: u32) -> Result<(), WorkerError> {
        self.instances.prepare(run, uploader_uid).await
    }

    async fn instance_stop(self, _: Context, run: RunId) -> Result<(), WorkerError> {
        self.instances.stop(run)
    }

    async fn instance_retune(self, _: Context, run: RunId, watch: WatchSpec) -> Result<(), WorkerError> {
        self.instances.retune(run, watch)
    }

    async fn instance_signal(self, _: Context, run: RunId, signal: i32) -> Result<(), WorkerError> {
        self.instances.signal(run, signal)
    }

    async fn output_read(
        self,
        ctx: Context,
        target: OutputTarget,
        position: Position,
        max: u32,
        wait_ms: u64,
    ) -> Result<OutputChunk, WorkerError> {
        // Answer before the caller's deadline, or tarpc drops the reply and the caller sees an
        // error instead of an empty chunk.
        let left = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(WAIT_MARGIN);
        let wait = Duration::from_millis(wait_ms).min(left);
        match target {
            OutputTarget::Instance { run, stream } => self.instances.output(run, stream, position, max, wait).await,
            OutputTarget::Attempt { attempt, stream } => {
                self.supervisor.output(attempt, stream, position, max, wait).await
            }
        }
    }

    async fn shutdown(self, _: Context) -> Result<(), WorkerError> {
        tracing::info!("herzog asked this worker to shut down (hz shutdown)");
        // Stopping drops the connection this answer goes out on: give the answer a moment.
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REPLY_FIRST).await;
            stop.notify_one();
        });
        Ok(())
    }
}

/// How long before the caller's deadline a read that waits answers anyway.
const WAIT_MARGIN: Duration = Duration::from_millis(500);
