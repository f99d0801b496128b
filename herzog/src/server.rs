//! herzog's server: opens the store, restores the machine, runs the loop and accepts
//! connections. Over TCP each is mutual TLS with the cluster's CA; its hello says what it is
//! for, and the peer certificate's role decides whether that is allowed. In-process
//! connections (`hz local`) come with what they are for and skip TLS and JSON; past that,
//! both are served by the same functions.

use crate::api::{Api, ClientApi, WorkerApi};
use crate::dispatch::{Connections, Dispatcher};
use crate::engine;
use crate::inbox::Handle;
use crate::machine::{Event, Machine, Timing};
use crate::store::Store;
use crate::{Config, HerzogError};
use common::link::Accepted;
use common::service::{
    Coordinator, CoordinatorRequest, CoordinatorResponse, Registry, RegistryRequest, RegistryResponse, WorkerClient,
    WorkerRequest, WorkerResponse,
};
use common::tls::Role;
use common::transport::{HELLO_TIMEOUT, Hello, HelloReply, describe_tls, json_transport, read_frame, write_frame};
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::{ClientMessage, Response, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Requests one hz connection may have in flight: hz makes one call at a time; the rest are
/// refused rather than each holding a task and memory while herzog is slow.
const CLIENT_REQUESTS: usize = 64;
/// Requests one worker's registry connection may have in flight: kinski sends a heartbeat
/// beside one report at a time.
const REGISTRY_REQUESTS: usize = 16;

async fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Where herzog takes its connections from.
pub enum Listener {
    /// A TCP port; every connection is mutual TLS with herzog's certificate bundle (role
    /// coordinator, see `herzog certs`).
    Tls {
        tcp: TcpListener,
        identity: common::tls::Identity,
    },
    /// Only the hz and kinski of this process (`hz local`): no port at all.
    InProcess(common::link::Listener),
}

/// A listener ready to accept.
enum Incoming {
    Tls { tcp: TcpListener, acceptor: TlsAcceptor },
    InProcess(common::link::Listener),
}

/// What one accept gave.
enum Next {
    Tcp(TcpStream, std::net::SocketAddr, TlsAcceptor),
    InProcess(Accepted),
    Failed(std::io::Error),
}

impl Incoming {
    async fn next(&mut self) -> Next {
        match self {
            Incoming::Tls { tcp, acceptor } => match tcp.accept().await {
                Ok((stream, peer)) => Next::Tcp(stream, peer, acceptor.clone()),
                Err(e) => Next::Failed(e),
            },
            Incoming::InProcess(listener) => match listener.accept().await {
                Some(connection) => Next::InProcess(connection),
                // Nobody can connect any more: wait for the shutdown.
                None => std::future::pending().await,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Incoming::Tls { tcp, .. } => tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Incoming::InProcess(_) => "this process only".to_string(),
        }
    }
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), HerzogError> {
    // SIGHUP re-reads the services file, as `hz reload` does (supervisord's users send it).
    // Only a daemon: `hz local` keeps the terminal's hangup. Taken first, so a SIGHUP while
    // the state loads does not kill herzog by its default action.
    let mut hangups = match listener {
        Listener::Tls { .. } => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        Listener::InProcess(_) => None,
    };
    let mut config = config;
    // Absolute from here on: every path herzog sends a worker is checked to be absolute, and
    // one relative to herzog's working directory means nothing on a worker.
    config.state_dir = common::paths::made_dir(&config.state_dir).map_err(|source| HerzogError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let db = config.state_dir.join("herzog.db");
    let store = Store::open(&db)?;
    let timing = Timing {
        worker_timeout_ms: config.worker_timeout.as_millis() as i64,
        start_grace_ms: (config.heartbeat_interval.as_millis() as i64 * 2).max(2_000),
        probe_retry_ms: config.worker_timeout.as_millis() as i64,
    };
    let started = std::time::Instant::now();
    let snapshot = store.load()?;
    let clock = engine::Clock::new();
    let results_root = config.state_dir.join("results");
    let cluster = config.alerts.name.clone().unwrap_or_else(|| match &listener {
        Listener::Tls { tcp, .. } => tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        Listener::InProcess(_) => "hz local".to_string(),
    });
    let machine = Machine::restore(timing, results_root.clone(), snapshot, clock.now())
        .with_max_log_bytes(config.max_log_bytes)
        .with_fair_half_life(
            config
                .fair_half_life
                .map(|d| d.as_millis().min(i64::MAX as u128) as i64),
        )
        .with_alerts(crate::machine::AlertRules::new(&config.alerts, cluster))
        .with_staged_hosts(|worker| config.hosts.iter().any(|h| h.name == worker && !h.shared_fs));
    tracing::info!(db = %store.path().display(), elapsed_ms = started.elapsed().as_millis() as u64, "state restored");

    let mut incoming = match listener {
        Listener::Tls { tcp, identity } => {
            if identity.role != Role::Coordinator {
                return Err(HerzogError::NotCoordinator { role: identity.role });
            }
            let acceptor = TlsAcceptor::from(identity.server_config()?);
            Incoming::Tls { tcp, acceptor }
        }
        Listener::InProcess(listener) => Incoming::InProcess(listener),
    };
    let (handle, rx) = Handle::new();
    let stager = std::sync::Arc::new(
        crate::staging::Stager::new(&config.hosts, &config.state_dir)
            .await
            .map_err(|source| HerzogError::ControlDir { source })?,
    );
    // A worker's connection is its own while it heartbeats; silent for two beats, a new
    // kinski of its name may take it over (a host that rebooted leaves a half-open one).
    let stale_after = config.heartbeat_interval * 2 + std::time::Duration::from_secs(1);
    let connections = Connections::new(handle.clone(), stager.clone(), stale_after);
    let outbox = crate::alerts::Outbox::default();
    let dispatcher = Dispatcher {
        connections: connections.clone(),
        handle: handle.clone(),
        stager: stager.clone(),
        alerts: outbox.clone(),
    };
    // `hz shutdown`: the loop stops as on SIGTERM, then lets the reply reach the asker.
    let (asked_tx, mut asked) = tokio::sync::mpsc::channel::<tokio::sync::watch::Receiver<()>>(1);
    crate::alerts::spawn(&config.alerts, db.clone(), handle.clone(), connections.clone(), outbox)?;
    let api = Api {
        handle: handle.clone(),
        db,
        heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
        worker_timeout_ms: config.worker_timeout.as_millis() as u64,
        max_log_bytes: config.max_log_bytes,
        stager,
        services: config.services.clone(),
        connections: connections.clone(),
        results_root,
        shutdown: asked_tx,
        defaults: config.defaults,
    };
    let tick =
        (config.worker_timeout / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut engine = tokio::spawn(engine::run(clock, machine, store, rx, dispatcher, tick, async move {
        let _ = stop_rx.await;
    }));
    tokio::spawn(crate::space::watch(
        config.state_dir.clone(),
        config.min_free_space,
        handle.clone(),
    ));
    if let Some(path) = config.services.clone() {
        apply_services_file(&handle, path).await;
    }
    tracing::info!(address = %incoming.describe(), "herzog listening");
    common::logging::notify_ready();

    tokio::pin!(shutdown);
    let mut asker = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(connection) = asked.recv() => {
                asker = Some(connection);
                break;
            }
            // The loop stopped on its own (a failed commit, a panic): herzog can no longer do
            // its job, so it exits non-zero with the reason and systemd restarts it.
            ended = &mut engine => return Err(engine_stopped(ended)),
            Some(()) = async { hangups.as_mut().expect("guarded").recv().await }, if hangups.is_some() => {
                match config.services.clone() {
                    Some(path) => {
                        tracing::info!(file = %path.display(), "SIGHUP: reloading the services file");
                        // Off the accept loop: a commit that waits must not stop accepting.
                        let handle = handle.clone();
                        tokio::spawn(async move { apply_services_file(&handle, path).await });
                    }
                    None => tracing::info!("SIGHUP: herzog has no services file to reload (herzog.services)"),
                }
            }
            next = incoming.next() => match next {
                Next::Tcp(stream, peer, acceptor) => {
                    tokio::spawn(serve_connection(stream, peer, acceptor, api.clone(), connections.clone()));
                }
                Next::InProcess(connection) => {
                    tokio::spawn(serve_in_process(connection, api.clone(), connections.clone()));
                }
                Next::Failed(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("herzog shutting down");
    common::logging::notify_stopping();
    let _ = stop_tx.send(());
    let stopped = match engine.await {
        Ok(result) => result.map_err(HerzogError::from),
        Err(e) => Err(engine_stopped(Err(e))),
    };
    // The reply to `hz shutdown` is on its way: hz closes the connection once it has it.
    if let Some(mut connection) = asker {
        let _ = tokio::time::timeout(ASKER_CLOSE, connection.changed()).await;
    }
    stopped
}

/// In the daemon, the loop's effects go to the workers over their connections.
impl engine::Effects for Dispatcher {
    fn run(&mut self, effects: Vec<crate::machine::Effect>) {
        self.execute(effects);
    }
}

/// How long herzog, stopped by `hz shutdown`, waits for the asking connection to close.
const ASKER_CLOSE: std::time::Duration = std::time::Duration::from_secs(2);

/// Applies the services file at start-up; one with an error changes nothing (the services in
/// force, as recorded, keep running) and says why.
async fn apply_services_file(handle: &Handle, path: std::path::PathBuf) {
    let shown = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || crate::services::rpc::read(&path)).await;
    let applied = match read {
        Ok(Ok(file)) => handle.event(Event::ServicesReload { file }).await.map(|_| ()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(common::ApiError::Storage { reason: e.to_string() }),
    };
    if let Err(e) = applied {
        tracing::error!(file = %shown, error = %e, "the services file was not applied: the services in force keep running");
    }
}

/// What herzog says when its event loop stopped without being asked to.
fn engine_stopped(ended: Result<Result<(), crate::StoreError>, tokio::task::JoinError>) -> HerzogError {
    match ended {
        Ok(Err(e)) => HerzogError::Store(e),
        Ok(Ok(())) => HerzogError::Task {
            reason: "it stopped without being asked to".to_string(),
        },
        Err(e) => HerzogError::Task { reason: e.to_string() },
    }
}

/// Closes a refused connection gently: the alert saying why was sent, and a client that
/// writes before reading (TLS 1.3 finishes the client's handshake before the server has
/// checked its certificate) would otherwise get a reset that discards it.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 1024];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

/// Whether a certificate of `role` named `name` may open a connection for `hello`.
fn authorize(hello: &Hello, name: &str, role: Role) -> Result<(), String> {
    match (hello, role) {
        (Hello::Client, Role::Admin) | (Hello::Registry, Role::Worker) => Ok(()),
        (Hello::Worker { name: claimed, .. }, Role::Worker) if claimed == name => Ok(()),
        (Hello::Worker { name: claimed, .. }, Role::Worker) => {
            Err(format!("this certificate is for worker '{name}', not '{claimed}'"))
        }
        (Hello::Client, _) => Err(format!(
            "{} certificate cannot use hz's service: use an admin certificate",
            role.with_article()
        )),
        (_, _) => Err(format!(
            "{} certificate cannot act as a worker: use a worker certificate",
            role.with_article()
        )),
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    api: Api,
    connections: Connections,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = match tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(stream).into_fallible()).await {
        Ok(Ok(s)) => s,
        Ok(Err((e, tcp))) => {
            tracing::warn!(%peer, reason = %describe_tls(&e), "TLS handshake failed; closing");
            linger(tcp).await;
            return;
        }
        Err(_) => return tracing::warn!(%peer, "no TLS handshake in time; closing"),
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(common::tls::name_and_role);
    let (name, role) = match identity {
        Some(Ok((name, role, _))) => (name, role),
        Some(Err(e)) => return tracing::warn!(%peer, error = %e, "peer certificate without a role; closing"),
        None => return tracing::warn!(%peer, "peer presented no certificate; closing"),
    };
    let hello: Hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "bad hello; closing"),
        Err(_) => return tracing::warn!(%peer, "no hello in time; closing"),
    };
    if let Err(reason) = authorize(&hello, &name, role) {
        tracing::warn!(%peer, %name, %role, ?hello, %reason, "connection refused");
        let _ = write_frame(&mut stream, &HelloReply::Refused { reason }).await;
        return;
    }
    if let Hello::Worker { name, incarnation } = &hello
        && let Err(reason) = connections.claim(name, *incarnation)
    {
        // A second kinski under a name in use: it is told why and exits; the first goes on.
        tracing::info!(%peer, worker = %name, %reason, "worker connection refused");
        let _ = write_frame(&mut stream, &HelloReply::NameInUse { reason }).await;
        return;
    }
    if write_frame(&mut stream, &HelloReply::Ok).await.is_err() {
        return;
    }
    match hello {
        Hello::Client => serve_client(api, json_transport(stream)).await,
        Hello::Registry => serve_registry(api, name, json_transport(stream)).await,
        Hello::Worker { name, incarnation } => {
            if let Err(e) = common::name::check_name(&name) {
                return tracing::warn!(%peer, error = %e, "worker connection with a bad name; closing");
            }
            let peer = peer.to_string();
            call_worker(api, connections, name, incarnation, &peer, json_transport(stream)).await
        }
    }
}

/// Serves a connection from this process: its roles are given, not read from a certificate.
async fn serve_in_process(connection: Accepted, api: Api, connections: Connections) {
    match connection {
        Accepted::Client(transport) => serve_client(api, transport).await,
        Accepted::Registry { worker, transport } => serve_registry(api, worker, transport).await,
        Accepted::Worker { worker, transport } => {
            call_worker(api, connections, worker, 0, "this process", transport).await
        }
    }
}

/// Serves hz's Coordinator service until the connection closes.
async fn serve_client<T>(api: Api, transport: T)
where
    T: Transport<Response<CoordinatorResponse>, ClientMessage<CoordinatorRequest>> + Send + 'static,
{
    // Dropped when the connection ends: what `hz shutdown` waits for.
    let (_open, connection) = tokio::sync::watch::channel(());
    BaseChannel::with_defaults(transport)
        .max_concurrent_requests(CLIENT_REQUESTS)
        .execute(ClientApi(api, connection).serve())
        .for_each(spawn)
        .await;
}

/// Serves the Registry service to `worker` until the connection closes.
async fn serve_registry<T>(api: Api, worker: String, transport: T)
where
    T: Transport<Response<RegistryResponse>, ClientMessage<RegistryRequest>> + Send + 'static,
{
    BaseChannel::with_defaults(transport)
        .max_concurrent_requests(REGISTRY_REQUESTS)
        .execute(WorkerApi { api, worker }.serve())
        .for_each(spawn)
        .await;
}

/// Makes `worker`'s Worker service callable by the dispatcher until the connection closes.
async fn call_worker<T>(api: Api, connections: Connections, name: String, incarnation: u64, peer: &str, transport: T)
where
    T: Transport<ClientMessage<WorkerRequest>, Response<WorkerResponse>> + Send + 'static,
{
    let tarpc::client::NewClient { client, dispatch } = WorkerClient::new(tarpc::client::Config::default(), transport);
    let generation = connections.attach(&name, client, peer, incarnation);
    tracing::info!(worker = %name, %peer, "worker connected");
    let _ = dispatch.await;
    if connections.detach(&name, generation) {
        tracing::info!(worker = %name, "worker connection closed");
        api.handle.notify(Event::Disconnected { worker: name });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_open_only_their_own_services() {
        let w = |n: &str| Hello::Worker {
            name: n.into(),
            incarnation: 1,
        };
        assert!(authorize(&Hello::Client, "ada", Role::Admin).is_ok());
        assert!(authorize(&Hello::Registry, "euclid", Role::Worker).is_ok());
        assert!(authorize(&w("euclid"), "euclid", Role::Worker).is_ok());
        assert!(
            authorize(&w("newton"), "euclid", Role::Worker)
                .unwrap_err()
                .contains("euclid")
        );
        assert!(
            authorize(&Hello::Client, "euclid", Role::Worker)
                .unwrap_err()
                .contains("admin certificate")
        );
        assert!(
            authorize(&Hello::Registry, "ada", Role::Admin)
                .unwrap_err()
                .contains("worker certificate")
        );
        assert!(authorize(&w("ada"), "ada", Role::Admin).is_err());
        assert!(authorize(&Hello::Client, "herzog", Role::Coordinator).is_err());
    }
}
