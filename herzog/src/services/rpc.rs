//! The services' RPC handlers (hz's status, start, stop, restart and reload; a worker's
//! report of its instances): each reads the file or sends an event to the loop.

use crate::api::Api;
use crate::machine::{Event, Reply};
use common::ApiError;
use common::instances::{InstanceReport, InstanceStatus, ReloadSummary, ServiceAction};
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
