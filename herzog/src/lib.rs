//! herzog, the coordinator: one event loop owns the state, commits each batch of transitions
//! to SQLite, then acts. See docs/architecture.md.

pub mod logging;

use std::path::PathBuf;
use std::time::Duration;

/// What herzog needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds herzog.db, logs/ and results/.
    pub state_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub worker_timeout: Duration,
}

impl Config {
    /// The config for a state directory with the default timings.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            heartbeat_interval: Duration::from_secs(2),
            worker_timeout: Duration::from_secs(10),
        }
    }
}

/// Why herzog stopped.
#[derive(Debug, thiserror::Error)]
pub enum HerzogError {
    #[error("failed to open the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), HerzogError> {
    let _ = (config, listener);
    shutdown.await;
    Ok(())
}
