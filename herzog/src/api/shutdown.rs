//! `hz shutdown [WORKER]`: herzog stops as SIGTERM would stop it, or it asks a worker's kinski
//! to stop as SIGTERM would stop that.

use super::Api;
use common::ApiError;
use common::service::WorkerError;
use common::transport::context_with;
use std::time::Duration;

/// How long a worker gets to answer that it stops (it answers before it stops anything).
const WORKER_ANSWER: Duration = Duration::from_secs(10);

/// How a shutdown asked over the API reaches the server's loop: the asking connection's
/// watch, whose sender goes when that connection closes, so the loop can let the reply
/// reach hz before herzog exits.
pub(crate) type Asked = tokio::sync::mpsc::Sender<tokio::sync::watch::Receiver<()>>;

/// Asks the server's loop to stop herzog; answers what happens.
pub(crate) fn herzog(api: &Api, connection: &tokio::sync::watch::Receiver<()>) -> Result<String, ApiError> {
    // A second ask while one is on its way changes nothing.
    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) = api.shutdown.try_send(connection.clone()) {
        return Err(ApiError::ShuttingDown);
    }
    tracing::info!("shutdown asked by an admin (hz shutdown)");
    Ok("herzog is shutting down; the services and attempts keep running on their workers".to_string())
}

/// Asks worker `name`'s kinski to shut down.
pub(crate) async fn worker(api: &Api, name: String) -> Result<String, ApiError> {
    let Some(client) = api.connections.client(&name) else {
        let n = name.clone();
        let known = api.handle.query(move |m| m.workers()).await?;
        return Err(match known.into_iter().find(|w| w.name == n) {
            Some(w) => ApiError::WorkerNotConnected { name, state: w.state },
            None => ApiError::NoSuchWorker { name },
        });
    };
    let unreachable = |reason: String| ApiError::WorkerUnreachable {
        name: name.clone(),
        reason,
    };
    match client.shutdown(context_with(WORKER_ANSWER)).await {
        Ok(Ok(())) => {
            tracing::info!(worker = %name, "asked the worker to shut down (hz shutdown)");
            Ok(format!(
                "worker '{name}' is shutting down: it stops its attempts (herzog runs them again elsewhere) and its service instances"
            ))
        }
        Ok(Err(WorkerError::ShuttingDown)) => Ok(format!("worker '{name}' is already shutting down")),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(e) => Err(unreachable(format!("the call failed: {e}"))),
    }
}
