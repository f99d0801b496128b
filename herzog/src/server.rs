//! herzog's server: opens the store, restores the machine, runs the loop and accepts
//! connections. Each is mutual TLS with the cluster's CA; its hello says what it is for, and
//! the peer certificate's role decides whether that is allowed.

use crate::api::{Api, ClientApi, WorkerApi};
use crate::dispatch::{Connections, Dispatcher};
use crate::engine::{self, Handle};
use crate::machine::{Event, Machine, Timing};
use crate::store::Store;
use crate::{Config, HerzogError};
use common::service::{Coordinator, Registry, WorkerClient};
use common::tls::Role;
use common::transport::{HELLO_TIMEOUT, Hello, HelloReply, describe_tls, json_transport, read_frame, write_frame};
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

async fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), HerzogError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| HerzogError::StateDir {
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
    let machine = Machine::restore(timing, config.state_dir.join("results"), snapshot, common::now_millis());
    tracing::info!(db = %store.path().display(), elapsed_ms = started.elapsed().as_millis() as u64, "state restored");

    if config.identity.role != Role::Coordinator {
        return Err(HerzogError::NotCoordinator {
            role: config.identity.role,
        });
    }
    let acceptor = TlsAcceptor::from(config.identity.server_config()?);
    let (handle, rx) = Handle::new();
    let stager = std::sync::Arc::new(
        crate::staging::Stager::new(&config.hosts, config.state_dir.join("incoming"))
            .map_err(|source| HerzogError::ControlDir { source })?,
    );
    let connections = Connections::new(handle.clone(), stager.clone());
    let dispatcher = Dispatcher {
        connections: connections.clone(),
        handle: handle.clone(),
        stager: stager.clone(),
    };
    let api = Api {
        handle: handle.clone(),
        db,
        heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
        stager,
    };
    let tick =
        (config.worker_timeout / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(engine::run(machine, store, rx, dispatcher, tick, async move {
        let _ = stop_rx.await;
    }));
    tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "herzog listening");
    common::logging::notify_ready();

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, acceptor.clone(), api.clone(), connections.clone()));
                }
                Err(e) => {
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
    engine
        .await
        .map_err(|e| HerzogError::Task { reason: e.to_string() })??;
    Ok(())
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
        (Hello::Worker { name: claimed }, Role::Worker) if claimed == name => Ok(()),
        (Hello::Worker { name: claimed }, Role::Worker) => {
            Err(format!("this certificate is for worker '{name}', not '{claimed}'"))
        }
        (Hello::Client, _) => Err(format!(
            "a {role} certificate cannot use hz's service: use an admin certificate"
        )),
        (_, _) => Err(format!(
            "a {role} certificate cannot act as a worker: use a worker certificate"
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
    if write_frame(&mut stream, &HelloReply::Ok).await.is_err() {
        return;
    }
    match hello {
        Hello::Client => {
            BaseChannel::with_defaults(json_transport(stream))
                .execute(ClientApi(api).serve())
                .for_each(spawn)
                .await;
        }
        Hello::Registry => {
            let service = WorkerApi { api, worker: name };
            BaseChannel::with_defaults(json_transport(stream))
                .execute(service.serve())
                .for_each(spawn)
                .await;
        }
        Hello::Worker { name } => {
            if let Err(e) = common::name::check_name(&name) {
                return tracing::warn!(%peer, error = %e, "worker connection with a bad name; closing");
            }
            let tarpc::client::NewClient { client, dispatch } =
                WorkerClient::new(tarpc::client::Config::default(), json_transport(stream));
            let generation = connections.attach(&name, client);
            tracing::info!(worker = %name, %peer, "worker connected");
            let _ = dispatch.await;
            if connections.detach(&name, generation) {
                tracing::info!(worker = %name, "worker connection closed");
                api.handle.notify(Event::Disconnected { worker: name });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_open_only_their_own_services() {
        let w = |n: &str| Hello::Worker { name: n.into() };
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
