//! `hz run`: a job is added through the loop like a project; its signals, stdin and terminal
//! size are relayed to the worker that runs it, over the connection that worker opened.

use super::{Api, MAX_WAIT, WAIT_MARGIN, unexpected};
use crate::machine::{Event, Reply};
use common::ApiError;
use common::job::{CommandInfo, JobRequest, JobStarted, JobState, TtySize};
use common::service::{WorkerClient, WorkerError};
use common::transport::context_with;
use common::wire::Control;
use std::time::{Duration, Instant};

/// Deadline for a call relayed to a worker.
const RELAY_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) async fn start(api: &Api, request: JobRequest) -> Result<JobStarted, ApiError> {
    common::job::check(&request)?;
    match api.handle.event(Event::AddJob(Box::new(request))).await? {
        Reply::Job(started) => Ok(started),
        other => Err(unexpected(other)),
    }
}

/// Where the job is; with a wait, once its attempt's end is committed (or the wait is over).
pub(super) async fn state(api: &Api, name: String, wait_ms: u64, left: Duration) -> Result<JobState, ApiError> {
    let n = name.clone();
    let now = api.handle.query(move |m| m.job_state(&n)).await??;
    let JobState::Running { attempt, .. } = now else {
        return Ok(now);
    };
    let wait = Duration::from_millis(wait_ms).min(MAX_WAIT).min(left);
    if wait.is_zero() {
        return Ok(now);
    }
    api.handle.wait_attempt(attempt, wait).await?;
    api.handle.query(move |m| m.job_state(&name)).await?
}

/// A signal to the job's group; a job without a process yet is cancelled instead.
pub(super) async fn signal(api: &Api, name: String, signal: i32) -> Result<(), ApiError> {
    let n = name.clone();
    let state = api.handle.query(move |m| m.job_state(&n)).await??;
    match state {
        JobState::Running { attempt, worker, .. } => {
            // Its worker may have started it before herzog heard so: ask the worker first.
            let client = worker_client(api, &name, &worker)?;
            let answer = client
                .fragment_signal(context_with(RELAY_TIMEOUT), attempt, signal)
                .await;
            match answer {
                Ok(Err(WorkerError::UnknownAttempt { .. })) => cancel(api, name).await,
                answer => relayed(&name, &worker, answer),
            }
        }
        JobState::Waiting => cancel(api, name).await,
        JobState::Exited { .. } | JobState::Ended { .. } => Err(ApiError::Job {
            name,
            reason: "it has ended: there is nothing to signal".into(),
        }),
    }
}

/// Relays stdin bytes; the worker answers once they are in the pipe, which takes as long as
/// the program takes to read what came before: the caller's deadline bounds it (`left`).
/// Cancels a job whose program has not started: it ends failed, "cancelled".
async fn cancel(api: &Api, name: String) -> Result<(), ApiError> {
    let cancel = Control::Cancel {
        project: name,
        fragments: vec!["0".to_string()],
    };
    match api.handle.event(Event::Control(cancel)).await? {
        Reply::Controlled(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn input(
    api: &Api,
    name: String,
    offset: u64,
    bytes: Vec<u8>,
    eof: bool,
    left: Duration,
) -> Result<(), ApiError> {
    let (attempt, worker, client) = running(api, &name).await?;
    let answer = client
        .fragment_input(context_with(left), attempt, offset, bytes, eof)
        .await;
    relayed(&name, &worker, answer)
}

pub(super) async fn resize(api: &Api, name: String, size: TtySize) -> Result<(), ApiError> {
    let (attempt, worker, client) = running(api, &name).await?;
    let answer = client.fragment_resize(context_with(RELAY_TIMEOUT), attempt, size).await;
    relayed(&name, &worker, answer)
}

pub(super) async fn commands(api: &Api) -> Result<Vec<CommandInfo>, ApiError> {
    api.handle.query(|m| m.commands()).await
}

/// The job's attempt whose program runs, its worker and a client for it.
async fn running(api: &Api, name: &str) -> Result<(common::AttemptId, String, WorkerClient), ApiError> {
    let n = name.to_string();
    let (attempt, worker, started) = api.handle.query(move |m| m.job_attempt(&n)).await??;
    if !started {
        return Err(ApiError::Job {
            name: name.to_string(),
            reason: "its program has not started yet: it waits for a slot on its worker".into(),
        });
    }
    let client = worker_client(api, name, &worker)?;
    Ok((attempt, worker, client))
}

fn worker_client(api: &Api, name: &str, worker: &str) -> Result<WorkerClient, ApiError> {
    api.connections.client(worker).ok_or_else(|| ApiError::HostUnreachable {
        instance: format!("job {name}"),
        worker: worker.to_string(),
        reason: "it is not connected".into(),
    })
}

fn relayed(
    name: &str,
    worker: &str,
    answer: Result<Result<(), WorkerError>, tarpc::client::RpcError>,
) -> Result<(), ApiError> {
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::Job {
            name: name.to_string(),
            reason: e.to_string(),
        }),
        Err(e) => Err(ApiError::HostUnreachable {
            instance: format!("job {name}"),
            worker: worker.to_string(),
            reason: format!("the call failed: {e}"),
        }),
    }
}

/// How long a handler may take: the caller's deadline less a margin.
pub(super) fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(WAIT_MARGIN)
}
