//! The services' RPC handlers (hz's status, start, stop, restart and reload; a worker's
//! report of its instances): each reads the file or sends an event to the loop.

use crate::api::Api;
use crate::machine::{Event, Reply};
use common::ApiError;
use common::instances::{InstanceEvent, InstanceReport, InstanceStatus, ReloadSummary, ServiceAction, ServiceEvent};
use common::services::ServicesFile;
use std::path::Path;

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
const MAX_EVENTS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
            let timeout = std::time::Duration::from_millis(wait_ms).min(MAX_EVENTS_WAIT);
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

/// Reads and checks the services file; a missing file is one without services.
pub(crate) fn read(path: &Path) -> Result<ServicesFile, ApiError> {
    if !path.exists() {
        return Ok(ServicesFile::default());
    }
    ServicesFile::load(path).map_err(|e| ApiError::BadServicesFile { reason: e.to_string() })
}
