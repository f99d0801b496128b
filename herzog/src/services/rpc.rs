//! The services' RPC handlers (hz's status, start, stop, restart, reload and tail; a worker's
//! report of its instances): each reads the file, sends an event to the loop, or (tail) asks
//! the loop where to read and relays the read to the worker.

use crate::api::Api;
use crate::machine::{Event, Reply};
use common::ApiError;
use common::instances::{InstanceEvent, InstanceReport, InstanceStatus, ReloadSummary, ServiceAction, ServiceEvent};
use common::output::{Follow, MAX_READ, MAX_WAIT_MS, OutputChunk, OutputTarget, Position, ServiceOutput, ServiceRead};
use common::service::WorkerError;
use common::services::ServicesFile;
use common::transport::context_with;
use std::path::Path;
use std::time::Duration;

pub(crate) async fn status(api: &Api, name: Option<String>) -> Result<Vec<InstanceStatus>, ApiError> {
    let known = api.handle.query(move |m| {
        let all = m.services_status(name.as_deref());
        match name {
            Some(n) if all.is_empty() => Err(ApiError::UnknownService { name: n }),
            _ => Ok(all),
        }
    });
    known.await?
}

pub(crate) async fn control(
    api: &Api,
    action: ServiceAction,
    names: Vec<String>,
) -> Result<Vec<InstanceStatus>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::InvalidValue {
            what: "services".into(),
            reason: "name at least one service, NAME:N for one instance, or all".into(),
        });
    }
    match api.handle.event(Event::ServicesControl { action, names }).await? {
        Reply::Instances(all) => Ok(all),
        other => Err(crate::api::unexpected(other)),
    }
}

pub(crate) async fn reload(api: &Api) -> Result<ReloadSummary, ApiError> {
    let Some(path) = api.services.clone() else {
        return Err(ApiError::BadServicesFile {
            reason: "herzog has no services file: set herzog.services in cluster.toml (or put services.toml beside it) and restart herzog".into(),
        });
    };
    let file = tokio::task::spawn_blocking(move || read(&path))
        .await
        .map_err(|e| ApiError::Storage { reason: e.to_string() })??;
    match api.handle.event(Event::ServicesReload { file }).await? {
        Reply::Reloaded(summary) => Ok(summary),
        other => Err(crate::api::unexpected(other)),
    }
}

/// The longest `hz events --follow` waits in one call.
const MAX_EVENTS_WAIT: Duration = Duration::from_secs(60);

pub(crate) async fn events(
    api: &Api,
    service: Option<String>,
    after: Option<i64>,
    limit: u32,
    wait_ms: u64,
) -> Result<Vec<ServiceEvent>, ApiError> {
    let limit = limit.clamp(1, 10_000);
    let read = |service: Option<String>| {
        let db = api.db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                crate::store::Reader::open(&db)
                    .and_then(|r| r.events(service.as_deref(), after, limit))
                    .map_err(|e| ApiError::Storage { reason: e.to_string() })
            })
            .await
            .map_err(|e| ApiError::Storage { reason: e.to_string() })?
        }
    };
    let found = read(service.clone()).await?;
    match after {
        Some(after) if found.is_empty() && wait_ms > 0 => {
            let timeout = Duration::from_millis(wait_ms).min(MAX_EVENTS_WAIT);
            api.handle.wait_events(after, timeout).await?;
            read(service).await
        }
        _ => Ok(found),
    }
}

pub(crate) async fn store_events(api: &Api, worker: String, events: Vec<InstanceEvent>) -> Result<(), ApiError> {
    api.handle
        .event(Event::InstanceEvents { worker, events })
        .await
        .map(|_| ())
}

pub(crate) async fn report(api: &Api, worker: String, reports: Vec<InstanceReport>) -> Result<(), ApiError> {
    api.handle
        .event(Event::InstancesReport { worker, reports })
        .await
        .map(|_| ())
}

/// What a worker's call may take beyond the read's wait before it counts as unreachable.
const READ_MARGIN: Duration = Duration::from_secs(5);
/// How much earlier than herzog's own answer is due the worker is asked to answer.
pub(crate) const RELAY_MARGIN: Duration = Duration::from_millis(500);

/// Reads an instance's output from the worker that holds it, over the connection the worker
/// opened, and relays it: one chunk per call, so a slow reader holds nothing here. `left` is
/// how long herzog may take to answer.
pub(crate) async fn output(api: &Api, read: ServiceRead, left: Duration) -> Result<ServiceOutput, ApiError> {
    let ServiceRead {
        instance,
        follow,
        stream,
        position,
        max,
        wait_ms,
    } = read;
    let asked = follow.clone();
    let route = api
        .handle
        .query(move |m| m.output_route(&instance, &asked, stream))
        .await??;
    let unreachable = |reason: String| ApiError::HostUnreachable {
        instance: route.instance.clone(),
        worker: route.worker.clone(),
        reason,
    };
    let client = api
        .connections
        .client(&route.worker)
        .ok_or_else(|| unreachable("it is not connected".to_string()))?;
    let target = OutputTarget::Instance { run: route.run, stream };
    let answer = relay_read(&client, target, position, max, wait_ms, left).await;
    let chunk = match answer {
        Ok(Ok(chunk)) => chunk,
        // A placement a follower read before that its worker no longer has: its stream ended
        // (and the follower moves on to the current one).
        Ok(Err(WorkerError::UnknownRun { .. })) if matches!(follow, Follow::Run { .. }) => {
            OutputChunk::ended(match position {
                Position::At(offset) => offset,
                Position::Last(_) => 0,
            })
        }
        Ok(Err(WorkerError::UnknownRun { .. })) => {
            return Err(ApiError::NotPlaced {
                instance: route.instance,
                reason: format!("worker '{}' has not started it yet", route.worker),
            });
        }
        Ok(Err(e @ WorkerError::NotKept { .. })) => {
            return Err(ApiError::OutputNotKept {
                instance: route.instance,
                stream: stream.name().to_string(),
                reason: e.to_string(),
            });
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(e) => return Err(unreachable(format!("the read failed: {e}"))),
    };
    Ok(ServiceOutput {
        instance: route.instance,
        run: route.run,
        worker: route.worker,
        chunk,
    })
}

/// Asks a worker for a chunk of `target`'s output: at most `max` bytes from `position`,
/// waiting up to `wait_ms` for some to come, answered within `left` (how long herzog may take
/// to answer its own caller) with room to relay it. Used by `hz tail` and `hz logs -f`.
pub(crate) async fn relay_read(
    client: &common::service::WorkerClient,
    target: OutputTarget,
    position: Position,
    max: u32,
    wait_ms: u64,
    left: Duration,
) -> Result<Result<OutputChunk, WorkerError>, tarpc::client::RpcError> {
    let wait = Duration::from_millis(wait_ms);
    let deadline = (wait.min(Duration::from_millis(MAX_WAIT_MS)) + READ_MARGIN).min(left);
    let wait = wait.min(deadline.saturating_sub(RELAY_MARGIN * 2));
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    client
        .output_read(context_with(deadline), target, position, max.min(MAX_READ), wait_ms)
        .await
}

/// Reads and checks the services file; a missing file is one without services.
pub(crate) fn read(path: &Path) -> Result<ServicesFile, ApiError> {
    if !path.exists() {
        return Ok(ServicesFile::default());
    }
    ServicesFile::load(path).map_err(|e| ApiError::BadServicesFile { reason: e.to_string() })
}
