//! One session with herzog: dial, serve the Worker service, register, then heartbeat and
//! report completions until the connection breaks. The caller reconnects with backoff; the
//! attempts keep running meanwhile.

use crate::service::WorkerService;
use crate::supervisor::Supervisor;
use common::ApiError;
use common::service::{RegistryClient, Worker};
use common::transport::{ConnectError, Hello, context_with, dial, json_transport, registry_client};
use common::wire::Resources;
use futures::StreamExt;
use std::time::Duration;
use tarpc::server::{BaseChannel, Channel};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("failed to call herzog: {0}")]
    Rpc(#[from] tarpc::client::RpcError),
    #[error("herzog refused: {0}")]
    Refused(#[from] ApiError),
    #[error("herzog closed the worker connection")]
    Closed,
}

pub(crate) struct Session<'a> {
    pub(crate) addr: &'a str,
    pub(crate) connector: &'a common::transport::Connector,
    pub(crate) name: &'a str,
    pub(crate) supervisor: &'a Supervisor,
    pub(crate) resources: &'a Resources,
}

async fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

impl Session<'_> {
    /// Runs until the session breaks; `Ok` never happens, so the result is the reason.
    pub(crate) async fn run(&self, on_registered: impl FnOnce(Duration)) -> SessionError {
        match self.run_inner(on_registered).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn run_inner(&self, on_registered: impl FnOnce(Duration)) -> Result<std::convert::Infallible, SessionError> {
        let registry = registry_client(self.addr, self.connector).await?;
        let stream = dial(
            self.addr,
            &Hello::Worker {
                name: self.name.to_string(),
            },
            self.connector,
        )
        .await?;
        let service = WorkerService {
            supervisor: self.supervisor.clone(),
            resources: self.resources.clone(),
        };
        let mut serving = tokio::spawn(
            BaseChannel::with_defaults(json_transport(stream))
                .execute(service.serve())
                .for_each(spawn),
        );
        let _abort_serving = AbortOnDrop(serving.abort_handle());

        let registered = registry
            .resources_register(
                context_with(CALL_TIMEOUT),
                self.name.to_string(),
                self.resources.clone(),
                self.supervisor.held(),
            )
            .await??;
        tracing::info!(herzog = %self.addr, heartbeat_ms = registered.heartbeat_ms, "registered with herzog");
        on_registered(Duration::from_millis(registered.heartbeat_ms));
        let mut beat = tokio::time::interval(Duration::from_millis(registered.heartbeat_ms.max(50)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            self.report(&registry).await?;
            tokio::select! {
                _ = &mut serving => return Err(SessionError::Closed),
                _ = beat.tick() => {
                    registry.heartbeat(context_with(CALL_TIMEOUT), self.name.to_string(), self.supervisor.held()).await??;
                }
                _ = self.supervisor.finished.notified() => {}
            }
        }
    }

    /// Sends every unacknowledged completion at once; forgets each one herzog stored.
    async fn report(&self, registry: &RegistryClient) -> Result<(), SessionError> {
        let sends = self.supervisor.unacked().into_iter().map(|completion| async move {
            let attempt = completion.attempt;
            let reply = registry
                .fragment_complete(context_with(CALL_TIMEOUT), self.name.to_string(), completion)
                .await;
            (attempt, reply)
        });
        let mut failure = None;
        for (attempt, reply) in futures::future::join_all(sends).await {
            match reply {
                Ok(Ok(())) => self.supervisor.acked(attempt),
                Ok(Err(ApiError::UnknownAttempt { .. })) => {
                    // herzog will never accept it (not its attempt): resending cannot help.
                    tracing::warn!(%attempt, "herzog does not know this attempt; dropping its completion");
                    self.supervisor.acked(attempt);
                }
                Ok(Err(e)) => failure = Some(SessionError::Refused(e)),
                Err(e) => failure = Some(SessionError::Rpc(e)),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
