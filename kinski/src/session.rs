//! One session with herzog: dial, serve the Worker service, register, then heartbeat and
//! report completions until the connection breaks. The caller reconnects with backoff; the
//! attempts keep running meanwhile.

use crate::service::WorkerService;
use crate::supervisor::Supervisor;
use common::ApiError;
use common::link::Route;
use common::service::{RegistryClient, Worker, WorkerRequest, WorkerResponse};
use common::transport::{ConnectError, Hello, context_with, dial, json_transport};
use common::wire::Resources;
use futures::StreamExt;
use std::time::Duration;
use tarpc::server::{BaseChannel, Channel};
use tarpc::{ClientMessage, Response, Transport};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a start herzog is told of it.
const NOTICE_DELAY: Duration = Duration::from_millis(50);

/// This kinski process, as herzog tells it from another of its name.
fn incarnation() -> u64 {
    static ONE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ONE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (u64::from(std::process::id()) << 32) ^ nanos
    })
}

/// Tells herzog this worker stops, with the completions it still holds: a short call of its
/// own, after the attempts were stopped.
pub(crate) async fn goodbye(route: &Route, name: &str, supervisor: &Supervisor) -> Result<(), SessionError> {
    let call = async {
        // Over TLS, the connection is closed cleanly before kinski exits: herzog would log a
        // connection cut without TLS close_notify.
        let (registry, carrier) = match route {
            Route::Tls { addr, connector } => {
                let (client, task) = common::transport::registry_session(addr, connector).await?;
                (client, Some(task))
            }
            Route::InProcess(_) => (route.registry_client(name).await?, None),
        };
        let said = registry
            .worker_stopping(
                context_with(Duration::from_secs(5)),
                name.to_string(),
                supervisor.held(),
            )
            .await;
        drop(registry);
        if let Some(carrier) = carrier {
            let _ = carrier.await;
        }
        said??;
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(result) => result,
        Err(_) => Err(SessionError::Closed),
    }
}
/// A report's deadline: herzog fetches a staged attempt's outputs before it answers, which
/// takes as long as the outputs are large. A herzog that hangs is noticed by the heartbeats,
/// which run beside the reports, and the session ends.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3600);

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
    pub(crate) route: &'a Route,
    pub(crate) name: &'a str,
    pub(crate) supervisor: &'a Supervisor,
    pub(crate) instances: &'a crate::services::Instances,
    pub(crate) resources: &'a Resources,
    /// Notified by the Worker service's `shutdown` (`hz shutdown WORKER`).
    pub(crate) stop: &'a std::sync::Arc<tokio::sync::Notify>,
}

/// herzog's calls in flight at once on this worker: one start call, a prep and a start per
/// staged attempt, a stop per attempt (a removed project stops them all at once). Far more
/// than a worker's queue needs; a bound on what a connection can make kinski hold.
const HERZOG_REQUESTS: usize = 4096;

async fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Serves the Worker service on `transport` until herzog closes it.
fn serve<T>(transport: T, service: WorkerService) -> tokio::task::JoinHandle<()>
where
    T: Transport<Response<WorkerResponse>, ClientMessage<WorkerRequest>> + Send + 'static,
{
    tokio::spawn(
        BaseChannel::with_defaults(transport)
            .max_concurrent_requests(HERZOG_REQUESTS)
            .execute(service.serve())
            .for_each(spawn),
    )
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
        let registry = self.route.registry_client(self.name).await?;
        let asked = std::time::Instant::now();
        let service = WorkerService {
            supervisor: self.supervisor.clone(),
            instances: self.instances.clone(),
            resources: self.resources.clone(),
            stop: self.stop.clone(),
        };
        let mut serving = match self.route {
            Route::Tls { addr, connector } => {
                let hello = Hello::Worker {
                    name: self.name.to_string(),
                    incarnation: incarnation(),
                };
                serve(json_transport(dial(addr, &hello, connector).await?), service)
            }
            Route::InProcess(dialer) => serve(dialer.worker_connection(self.name)?, service),
        };
        let _abort_serving = AbortOnDrop(serving.abort_handle());

        let registered = registry
            .resources_register(
                context_with(CALL_TIMEOUT),
                self.name.to_string(),
                self.resources.clone(),
                self.supervisor.held(),
            )
            .await??;
        tracing::info!(herzog = %self.route.describe(), heartbeat_ms = registered.heartbeat_ms, "registered with herzog");
        on_registered(Duration::from_millis(registered.heartbeat_ms));
        let timeout = Duration::from_millis(registered.worker_timeout_ms);
        self.instances.heard_from_herzog(asked, timeout);
        let mut beat = tokio::time::interval(Duration::from_millis(registered.heartbeat_ms.max(50)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        // Heartbeats do not wait for reports: a report may wait for herzog to fetch outputs
        // for longer than herzog's timeout for a silent worker. They list unacknowledged
        // completions as held, so an attempt herzog is still storing is never taken for lost.
        let heartbeats = async {
            loop {
                beat.tick().await;
                let asked = std::time::Instant::now();
                registry
                    .heartbeat(
                        context_with(CALL_TIMEOUT),
                        self.name.to_string(),
                        self.supervisor.held(),
                    )
                    .await??;
                self.instances.heard_from_herzog(asked, timeout);
            }
        };
        let reports = async {
            loop {
                self.report(&registry).await?;
                self.supervisor.finished.notified().await;
            }
        };
        // herzog hears of each start, a moment late: starts whose programs end meanwhile are
        // told by their completions, so short attempts cost no extra call.
        self.supervisor.notice_all_again();
        self.supervisor.ran.notify_one();
        let notices = async {
            loop {
                if self.supervisor.all_noticed() {
                    self.supervisor.ran.notified().await;
                }
                tokio::time::sleep(NOTICE_DELAY).await;
                let unnoticed = self.supervisor.unnoticed();
                for batch in unnoticed.chunks(common::service::MAX_BATCH) {
                    registry
                        .fragment_started(context_with(CALL_TIMEOUT), self.name.to_string(), batch.to_vec())
                        .await??;
                    self.supervisor.noticed(batch);
                }
            }
        };
        // What the service instances do: on every change, and beside each heartbeat.
        let mut every = tokio::time::interval(Duration::from_millis(registered.heartbeat_ms.max(50)));
        let instances = async {
            loop {
                let changed = self.instances.changed.notified();
                registry
                    .instances_report(
                        context_with(CALL_TIMEOUT),
                        self.name.to_string(),
                        self.instances.reports(),
                    )
                    .await??;
                let events = self.instances.pending_events();
                if !events.is_empty() {
                    registry
                        .instance_events(context_with(CALL_TIMEOUT), self.name.to_string(), events.clone())
                        .await??;
                    self.instances.events_stored(&events);
                }
                tokio::select! {
                    () = changed => {}
                    _ = every.tick() => {}
                }
            }
        };
        tokio::select! {
            _ = &mut serving => Err(SessionError::Closed),
            e = heartbeats => e,
            e = reports => e,
            e = notices => e,
            e = instances => e,
        }
    }

    /// Sends every unacknowledged completion, in calls of up to `MAX_BATCH` (all at once);
    /// forgets each one herzog stored.
    async fn report(&self, registry: &RegistryClient) -> Result<(), SessionError> {
        let unacked = self.supervisor.unacked();
        let sends = unacked.chunks(common::service::MAX_BATCH).map(|batch| async move {
            let attempts: Vec<_> = batch.iter().map(|c| c.attempt).collect();
            let reply = registry
                .fragment_complete(context_with(REPORT_TIMEOUT), self.name.to_string(), batch.to_vec())
                .await;
            (attempts, reply)
        });
        let mut failure = None;
        for (attempts, reply) in futures::future::join_all(sends).await {
            let results = match reply {
                Ok(Ok(results)) => results,
                Ok(Err(e)) => {
                    failure = Some(SessionError::Refused(e));
                    continue;
                }
                Err(e) => {
                    failure = Some(SessionError::Rpc(e));
                    continue;
                }
            };
            for (attempt, result) in attempts.into_iter().zip(results) {
                match result {
                    Ok(()) => drop(self.supervisor.acked(attempt)),
                    Err(ApiError::UnknownAttempt { .. }) => {
                        // herzog will never accept it (not its attempt): resending cannot help.
                        tracing::warn!(%attempt, "herzog does not know this attempt; dropping its completion");
                        drop(self.supervisor.acked(attempt));
                    }
                    Err(e) => failure = Some(SessionError::Refused(e)),
                }
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
