//! How connections are made: one TCP port on herzog, mutual TLS with the cluster's CA, a
//! hello frame that says what the connection is for (answered with ok or a refusal that says
//! why), then tarpc's JSON codec over length-delimited frames.
//!
//! kinski dials herzog twice: once as a client of the [`Registry`](crate::service::Registry)
//! service and once to *serve* its [`Worker`](crate::service::Worker) service to herzog. So only
//! herzog's port must be reachable and kinski listens on nothing (docs/architecture.md).

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Json;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest frame either side accepts; big listings are paged below this.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const MAX_HELLO_BYTES: usize = 4096;
/// How long a new connection may take to say hello before it is dropped.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The first frame on every connection to herzog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "hello", rename_all = "snake_case")]
pub enum Hello {
    /// A user's client: herzog serves the Coordinator service.
    Client,
    /// A worker's client: herzog serves the Registry service.
    Registry,
    /// A worker serves its Worker service; herzog is the client. `incarnation` tells one
    /// kinski process from another of the same name: a kinski reconnecting replaces its own
    /// connection, a second kinski is refused while the first is alive.
    Worker {
        name: String,
        #[serde(default)]
        incarnation: u64,
    },
}

/// What herzog answers to a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum HelloReply {
    Ok,
    /// The certificate does not allow what the hello asks.
    Refused {
        reason: String,
    },
    /// Another kinski of this name is connected and heartbeating.
    NameInUse {
        reason: String,
    },
}

/// Why a connection could not be made or understood.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "failed to connect to herzog at {addr}: {source}; is herzog running there? (set --herzog, HERZOG_ADDR or the config's `herzog.address`)"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to say hello to {addr}: {source}")]
    Hello {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection timed out while connecting to herzog at {addr}; is the address right and reachable?")]
    Timeout { addr: String },
    #[error(
        "herzog at {addr} closed the connection before it was set up ({source}): is it restarting or shutting down? try again"
    )]
    Closed {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with herzog at {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("herzog at {addr} refused this connection: {reason}")]
    Refused { addr: String, reason: String },
    #[error("herzog at {addr} refused this worker: {reason}")]
    NameInUse { addr: String, reason: String },
    #[error("herzog in this process has stopped")]
    Stopped,
}

/// Says in words why a TLS handshake or the first read after it failed.
pub fn describe_tls(e: &std::io::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let Some(r) = e.get_ref().and_then(|inner| inner.downcast_ref::<R>()) else {
        return e.to_string();
    };
    match r {
        R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the peer's certificate has expired: issue a new one with `herzog certs issue`".into()
        }
        R::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the peer's certificate is not valid yet: check the clocks".into()
        }
        R::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the peer's certificate is not from this cluster's CA (a bundle from another cluster?)".into()
        }
        R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the peer is not herzog: its certificate does not name herzog".into()
        }
        R::AlertReceived(A::CertificateExpired) => {
            "herzog refused our certificate: it has expired; issue a new one with `herzog certs issue`".into()
        }
        R::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError) => {
            "herzog refused our certificate: it is not from this cluster's CA".into()
        }
        R::AlertReceived(A::CertificateRequired) => "herzog requires a client certificate: give one with --tls".into(),
        R::NoCertificatesPresented => "the peer presented no certificate".into(),
        other => other.to_string(),
    }
}

/// What a failed handshake (or the hello after it) means: a TLS error (a certificate refused
/// either way, a protocol fault), or the connection cut off under it (end of file, a reset),
/// as by a herzog that is going down: that is herzog unreachable, not a refusal.
pub fn handshake_error(addr: &str, e: std::io::Error) -> ConnectError {
    use std::io::ErrorKind as K;
    let is_tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    let cut = matches!(
        e.kind(),
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
    );
    if cut && !is_tls {
        ConnectError::Closed {
            addr: addr.to_string(),
            source: e,
        }
    } else {
        ConnectError::Tls {
            addr: addr.to_string(),
            reason: describe_tls(&e),
        }
    }
}

/// Makes the client side of TLS connections with one identity.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    pub fn new(identity: &crate::tls::Identity) -> Result<Connector, crate::tls::TlsError> {
        Ok(Connector {
            tls: tokio_rustls::TlsConnector::from(identity.client_config()?),
        })
    }
}

/// A connection to herzog.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Writes a small JSON frame: a big-endian u32 length and the JSON.
pub async fn write_frame<S: AsyncWrite + Unpin, T: Serialize>(stream: &mut S, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    stream.write_u32(body.len() as u32).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

/// Reads a small JSON frame, refusing oversized or malformed ones.
pub async fn read_frame<S: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(stream: &mut S) -> std::io::Result<T> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_HELLO_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("hello frame of {len} bytes is over the {MAX_HELLO_BYTES} byte limit"),
        ));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Wraps a stream as a tarpc JSON transport with the shared frame limit.
pub fn json_transport<S, Item, SinkItem>(stream: S) -> Transport<S, Item, SinkItem, Json<Item, SinkItem>>
where
    S: AsyncRead + AsyncWrite,
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_framed(stream);
    tarpc::serde_transport::new(framed, Json::default())
}

/// Dials herzog, makes TLS, says hello and waits for the answer; the stream is then ready
/// for [`json_transport`].
pub async fn dial(addr: &str, hello: &Hello, connector: &Connector) -> Result<ClientStream, ConnectError> {
    let connect = TcpStream::connect(addr);
    let tcp = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Err(_) => return Err(ConnectError::Timeout { addr: addr.to_string() }),
        Ok(Err(source)) => {
            return Err(ConnectError::Connect {
                addr: addr.to_string(),
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let tls_error = |e: std::io::Error| handshake_error(addr, e);
    let handshake = connector.tls.connect(crate::tls::server_name(), tcp);
    let mut stream = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Err(_) => return Err(ConnectError::Timeout { addr: addr.to_string() }),
        Ok(result) => result.map_err(tls_error)?,
    };
    // With TLS 1.3 a server that rejects our certificate says so only after the handshake,
    // in an alert that the read below receives, even when the write already failed.
    let written = write_frame(&mut stream, hello).await;
    match tokio::time::timeout(HELLO_TIMEOUT, read_frame::<_, HelloReply>(&mut stream)).await {
        Err(_) => Err(ConnectError::Timeout { addr: addr.to_string() }),
        Ok(Err(read)) => Err(tls_error(match written {
            Err(write) if read.get_ref().is_none_or(|e| !e.is::<rustls::Error>()) => write,
            _ => read,
        })),
        Ok(Ok(HelloReply::Refused { reason })) => Err(ConnectError::Refused {
            addr: addr.to_string(),
            reason,
        }),
        Ok(Ok(HelloReply::NameInUse { reason })) => Err(ConnectError::NameInUse {
            addr: addr.to_string(),
            reason,
        }),
        Ok(Ok(HelloReply::Ok)) => Ok(stream),
    }
}

/// A connected Coordinator client.
pub async fn coordinator_client(
    addr: &str,
    connector: &Connector,
) -> Result<crate::service::CoordinatorClient, ConnectError> {
    Ok(coordinator_session(addr, connector).await?.0)
}

/// A connected Coordinator client (what hz uses) and the task that carries its calls. Once
/// every clone of the client is dropped, the task closes the connection cleanly (TLS
/// close_notify, then the TCP close) and ends: await it before the process exits, or herzog
/// sees the connection cut off mid-stream and says so in its log.
pub async fn coordinator_session(
    addr: &str,
    connector: &Connector,
) -> Result<(crate::service::CoordinatorClient, tokio::task::JoinHandle<()>), ConnectError> {
    let stream = dial(addr, &Hello::Client, connector).await?;
    let tarpc::client::NewClient { client, dispatch } =
        crate::service::CoordinatorClient::new(tarpc::client::Config::default(), json_transport(stream));
    // A broken connection shows in the calls' own errors; the task has nothing to add.
    let task = tokio::spawn(async move {
        let _ = dispatch.await;
    });
    Ok((client, task))
}

/// A connected Registry client (what kinski uses to report).
pub async fn registry_client(
    addr: &str,
    connector: &Connector,
) -> Result<crate::service::RegistryClient, ConnectError> {
    let stream = dial(addr, &Hello::Registry, connector).await?;
    Ok(crate::service::RegistryClient::new(tarpc::client::Config::default(), json_transport(stream)).spawn())
}

/// A connected Registry client and the task that carries its calls, which closes the
/// connection cleanly once every clone of the client is dropped (as [`coordinator_session`]):
/// what kinski says its last words on before it exits.
pub async fn registry_session(
    addr: &str,
    connector: &Connector,
) -> Result<(crate::service::RegistryClient, tokio::task::JoinHandle<()>), ConnectError> {
    let stream = dial(addr, &Hello::Registry, connector).await?;
    let tarpc::client::NewClient { client, dispatch } =
        crate::service::RegistryClient::new(tarpc::client::Config::default(), json_transport(stream));
    let task = tokio::spawn(async move {
        let _ = dispatch.await;
    });
    Ok((client, task))
}

/// A tarpc context whose deadline is `timeout` from now.
pub fn context_with(timeout: Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_cut_during_the_handshake_is_closed_not_refused() {
        use std::io::{Error, ErrorKind};
        for kind in [
            ErrorKind::UnexpectedEof,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
            ErrorKind::BrokenPipe,
        ] {
            let e = handshake_error("h:1", Error::new(kind, "cut"));
            assert!(matches!(e, ConnectError::Closed { .. }), "{kind:?}: {e:?}");
            assert!(e.to_string().contains("h:1"), "{e}");
        }
        let refused = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired),
        );
        let e = handshake_error("h:1", refused);
        assert!(
            matches!(&e, ConnectError::Tls { reason, .. } if reason.contains("expired")),
            "{e:?}"
        );
        // An alert that arrives as the connection ends is still the refusal it says.
        let alert_at_eof = Error::new(
            ErrorKind::UnexpectedEof,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        assert!(matches!(handshake_error("h:1", alert_at_eof), ConnectError::Tls { .. }));
    }

    #[tokio::test]
    async fn hello_round_trips_and_rejects_oversized_frames() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let hello = Hello::Worker {
            name: "euclid".into(),
            incarnation: 7,
        };
        write_frame(&mut a, &hello).await.unwrap();
        assert_eq!(read_frame::<_, Hello>(&mut b).await.unwrap(), hello);

        a.write_u32(1_000_000).await.unwrap();
        let err = read_frame::<_, Hello>(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
