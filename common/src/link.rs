//! How hz and kinski reach herzog: over TCP with mutual TLS ([`crate::transport`]), or from
//! inside herzog's own process (`hz local`) over in-memory channels: the same tarpc services
//! and the same handlers, without a socket, TLS or JSON.
//!
//! Nothing listens for in-process connections: only code holding a herzog's [`Dialer`] can
//! connect, so the process boundary is the authentication, and each connection carries the
//! role the TCP path would read from a certificate (hz as an admin, kinski as the worker it
//! names).

use crate::service::{
    CoordinatorClient, CoordinatorRequest, CoordinatorResponse, RegistryClient, RegistryRequest, RegistryResponse,
    WorkerRequest, WorkerResponse,
};
use crate::transport::{ConnectError, Connector};
use tarpc::transport::channel::{UnboundedChannel, unbounded};
use tarpc::{ClientMessage, Response};
use tokio::sync::mpsc;

/// What messages call an in-process herzog where they would give an address.
pub const IN_PROCESS: &str = "herzog in this process";

/// The serving end of an in-process connection.
pub type Served<Req, Resp> = UnboundedChannel<ClientMessage<Req>, Response<Resp>>;
/// The calling end of an in-process connection.
pub type Calling<Req, Resp> = UnboundedChannel<Response<Resp>, ClientMessage<Req>>;

/// An in-process connection as herzog receives it: what it is for (as a
/// [`Hello`](crate::transport::Hello) says on TCP), and herzog's end.
pub enum Accepted {
    /// hz: herzog serves the Coordinator service, to an admin.
    Client(Served<CoordinatorRequest, CoordinatorResponse>),
    /// A worker's client: herzog serves the Registry service to `worker`.
    Registry {
        worker: String,
        transport: Served<RegistryRequest, RegistryResponse>,
    },
    /// `worker` serves its Worker service; herzog calls it.
    Worker {
        worker: String,
        transport: Calling<WorkerRequest, WorkerResponse>,
    },
}

/// herzog's end: the in-process connections, in the order they were made.
pub struct Listener {
    rx: mpsc::UnboundedReceiver<Accepted>,
}

impl Listener {
    /// The next connection; `None` once every [`Dialer`] is gone.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.rx.recv().await
    }
}

/// Makes in-process connections to the herzog that holds the paired [`Listener`].
#[derive(Clone, Debug)]
pub struct Dialer {
    tx: mpsc::UnboundedSender<Accepted>,
}

/// A connected pair: give the listener to herzog, the dialer to hz and kinski.
pub fn in_process() -> (Dialer, Listener) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Dialer { tx }, Listener { rx })
}

impl Dialer {
    fn send(&self, connection: Accepted) -> Result<(), ConnectError> {
        self.tx.send(connection).map_err(|_| ConnectError::Stopped)
    }

    /// A Coordinator client, as hz uses.
    pub fn coordinator_client(&self) -> Result<CoordinatorClient, ConnectError> {
        let (calling, served) = unbounded();
        self.send(Accepted::Client(served))?;
        Ok(CoordinatorClient::new(tarpc::client::Config::default(), calling).spawn())
    }

    /// A Registry client for `worker`, as kinski uses.
    pub fn registry_client(&self, worker: &str) -> Result<RegistryClient, ConnectError> {
        let (calling, served) = unbounded();
        self.send(Accepted::Registry {
            worker: worker.to_string(),
            transport: served,
        })?;
        Ok(RegistryClient::new(tarpc::client::Config::default(), calling).spawn())
    }

    /// The connection on which `worker` serves its Worker service to herzog.
    pub fn worker_connection(&self, worker: &str) -> Result<Served<WorkerRequest, WorkerResponse>, ConnectError> {
        let (calling, served) = unbounded();
        self.send(Accepted::Worker {
            worker: worker.to_string(),
            transport: calling,
        })?;
        Ok(served)
    }
}

/// How to reach herzog, for whoever dials it: its address over TLS, or this process.
#[derive(Clone)]
pub enum Route {
    /// herzog's address (host:port) and our certificate.
    Tls { addr: String, connector: Connector },
    /// herzog runs in this process.
    InProcess(Dialer),
}

impl Route {
    /// herzog's address, for messages.
    pub fn describe(&self) -> String {
        match self {
            Route::Tls { addr, .. } => addr.clone(),
            Route::InProcess(_) => IN_PROCESS.to_string(),
        }
    }

    /// A connected Coordinator client.
    pub async fn coordinator_client(&self) -> Result<CoordinatorClient, ConnectError> {
        match self {
            Route::Tls { addr, connector } => crate::transport::coordinator_client(addr, connector).await,
            Route::InProcess(dialer) => dialer.coordinator_client(),
        }
    }

    /// A connected Registry client for `worker`.
    pub async fn registry_client(&self, worker: &str) -> Result<RegistryClient, ConnectError> {
        match self {
            Route::Tls { addr, connector } => crate::transport::registry_client(addr, connector).await,
            Route::InProcess(dialer) => dialer.registry_client(worker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_arrive_with_what_they_are_for_and_fail_once_herzog_is_gone() {
        let (dialer, mut listener) = in_process();
        let _client = dialer.coordinator_client().unwrap();
        let _registry = dialer.registry_client("local").unwrap();
        let _serving = dialer.worker_connection("local").unwrap();
        assert!(matches!(listener.accept().await, Some(Accepted::Client(_))));
        assert!(matches!(listener.accept().await, Some(Accepted::Registry { worker, .. }) if worker == "local"));
        assert!(matches!(listener.accept().await, Some(Accepted::Worker { worker, .. }) if worker == "local"));
        drop(listener);
        assert!(matches!(dialer.coordinator_client(), Err(ConnectError::Stopped)));
    }
}
