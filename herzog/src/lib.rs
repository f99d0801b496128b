//! herzog, the coordinator: one event loop owns the state, commits each batch of transitions
//! to SQLite, then acts. See docs/architecture.md.

mod alerts;
mod api;
mod dispatch;
mod engine;
mod fair;
mod fragment_output;
mod inbox;
mod machine;
mod scheduler;
mod server;
mod services;
#[doc(hidden)]
pub mod sim_api;
mod space;
mod staging;
mod store;

pub use alerts::{SmtpSetupError, check as check_alerts};
pub use common::logging;
pub use server::{Listener, run};
pub use store::StoreError;

use std::path::PathBuf;
use std::time::Duration;

/// What herzog needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds herzog.db, logs/ and results/.
    pub state_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub worker_timeout: Duration,
    /// cluster.toml's `[[hosts]]`: which hosts lack the shared filesystem, and how to log in.
    pub hosts: Vec<common::config::HostConfig>,
    /// Below this much free space on the state filesystem, no attempt starts.
    pub min_free_space: u64,
    /// The services file: read at start-up and by `hz reload`; `None`: no services.
    pub services: Option<PathBuf>,
    /// `herzog.max_log_bytes`: the most kept of each attempt's stdout and stderr.
    pub max_log_bytes: u64,
    /// `herzog.fair_half_life`: how fast past usage is forgiven in the fair share (`None`:
    /// never).
    pub fair_half_life: Option<Duration>,
    /// `[alerts]`: who gets mail and webhooks, for which events; none by default.
    pub alerts: common::alerts::AlertsSection,
    /// `[herzog.defaults]`: what a project's attempts ask for when `hz action` does not say.
    pub defaults: common::requests::Requests,
}

impl Config {
    /// The config for a state directory with the default timings.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            heartbeat_interval: Duration::from_secs(2),
            worker_timeout: Duration::from_secs(10),
            hosts: Vec::new(),
            min_free_space: common::config::HerzogSection::default().min_free_space.as_u64(),
            services: None,
            max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
            fair_half_life: None,
            alerts: common::alerts::AlertsSection::default(),
            defaults: common::requests::Requests::default(),
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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    #[error("herzog's certificate has the role {role}, not coordinator: make it with `herzog certs init`")]
    NotCoordinator { role: common::tls::Role },
    #[error(
        "failed to make the staging directories in the state directory (ssh/ for SSH control sockets, incoming/ for fetched files): {source}"
    )]
    ControlDir {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Alerts(#[from] SmtpSetupError),
    #[error("herzog's event loop failed: {reason}")]
    Task { reason: String },
}
