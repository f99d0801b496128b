//! Logging for the daemons: to stderr and to a daily-rolling file in the state directory.

use std::path::Path;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the file writer flushing; hold it in `main` until exit.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global subscriber: `<state_dir>/logs/<prefix>.log.YYYY-MM-DD`, plus stderr when
/// `to_stderr`. `filter` is an EnvFilter directive; RUST_LOG overrides it.
pub fn init(state_dir: &Path, prefix: &str, filter: &str, to_stderr: bool) -> std::io::Result<LogGuard> {
    let dir = state_dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let appender = tracing_appender::rolling::daily(&dir, format!("{prefix}.log"));
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let file_layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer);
    let stderr_layer = to_stderr.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    // A second init (tests, hz local starting both daemons) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Ok(guard)
}
