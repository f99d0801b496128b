//! herzog's server: opens the store, restores the machine, runs the loop and accepts
//! connections, each of which says in its hello what it is for.

use crate::api::{Api, ClientApi, WorkerApi};
use crate::dispatch::{Connections, Dispatcher};
use crate::engine::{self, Handle};
use crate::machine::{Event, Machine, Timing};
use crate::store::Store;
use crate::{Config, HerzogError};
use common::service::{Coordinator, Registry, WorkerClient};
use common::transport::{HELLO_TIMEOUT, Hello, json_transport, read_hello};
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::{TcpListener, TcpStream};

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
    };
    let started = std::time::Instant::now();
    let snapshot = store.load()?;
    let machine = Machine::restore(timing, config.state_dir.join("results"), snapshot, common::now_millis());
    tracing::info!(db = %store.path().display(), elapsed_ms = started.elapsed().as_millis() as u64, "state restored");

    let (handle, rx) = Handle::new();
    let connections = Connections::default();
    let dispatcher = Dispatcher {
        connections: connections.clone(),
        handle: handle.clone(),
    };
    let api = Api {
        handle: handle.clone(),
        db,
        heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
    };
    let tick =
        (config.worker_timeout / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(engine::run(machine, store, rx, dispatcher, tick, async move {
        let _ = stop_rx.await;
    }));
    tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "herzog listening");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, api.clone(), connections.clone()));
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
    let _ = stop_tx.send(());
    engine
        .await
        .map_err(|e| HerzogError::Task { reason: e.to_string() })??;
    Ok(())
}

async fn serve_connection(mut stream: TcpStream, peer: std::net::SocketAddr, api: Api, connections: Connections) {
    let _ = stream.set_nodelay(true);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut stream)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "bad hello; closing"),
        Err(_) => return tracing::warn!(%peer, "no hello in time; closing"),
    };
    match hello {
        Hello::Client => {
            BaseChannel::with_defaults(json_transport(stream))
                .execute(ClientApi(api).serve())
                .for_each(spawn)
                .await;
        }
        Hello::Registry => {
            BaseChannel::with_defaults(json_transport(stream))
                .execute(WorkerApi(api).serve())
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
