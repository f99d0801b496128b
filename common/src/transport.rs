//! How connections are made: one TCP port on herzog, a hello frame that says what the
//! connection is for, then tarpc's JSON codec over length-delimited frames.
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
    /// A worker serves its Worker service; herzog is the client.
    Worker { name: String },
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
}

/// Writes the hello frame: a big-endian u32 length and the JSON.
pub async fn write_hello<S: AsyncWrite + Unpin>(stream: &mut S, hello: &Hello) -> std::io::Result<()> {
    let body = serde_json::to_vec(hello).map_err(std::io::Error::other)?;
    stream.write_u32(body.len() as u32).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

/// Reads the hello frame, refusing oversized or malformed ones.
pub async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Hello> {
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

/// Dials herzog and says hello; the stream is ready for [`json_transport`].
pub async fn dial(addr: &str, hello: &Hello) -> Result<TcpStream, ConnectError> {
    let connect = TcpStream::connect(addr);
    let mut stream = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Err(_) => return Err(ConnectError::Timeout { addr: addr.to_string() }),
        Ok(Err(source)) => {
            return Err(ConnectError::Connect {
                addr: addr.to_string(),
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    write_hello(&mut stream, hello)
        .await
        .map_err(|source| ConnectError::Hello {
            addr: addr.to_string(),
            source,
        })?;
    Ok(stream)
}

/// A connected Coordinator client (what hz uses).
pub async fn coordinator_client(addr: &str) -> Result<crate::service::CoordinatorClient, ConnectError> {
    let stream = dial(addr, &Hello::Client).await?;
    Ok(crate::service::CoordinatorClient::new(tarpc::client::Config::default(), json_transport(stream)).spawn())
}

/// A connected Registry client (what kinski uses to report).
pub async fn registry_client(addr: &str) -> Result<crate::service::RegistryClient, ConnectError> {
    let stream = dial(addr, &Hello::Registry).await?;
    Ok(crate::service::RegistryClient::new(tarpc::client::Config::default(), json_transport(stream)).spawn())
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

    #[tokio::test]
    async fn hello_round_trips_and_rejects_oversized_frames() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let hello = Hello::Worker { name: "euclid".into() };
        write_hello(&mut a, &hello).await.unwrap();
        assert_eq!(read_hello(&mut b).await.unwrap(), hello);

        a.write_u32(1_000_000).await.unwrap();
        let err = read_hello(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
