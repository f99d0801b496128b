//! Logging for the daemons: to stderr and to a daily-rolling file in the state directory;
//! and the shutdown signal they share.

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
    // Colours only for a person at a terminal, not for journald or a pipe.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
    });
    // A second init (tests, hz local starting both daemons) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Ok(guard)
}

/// Resolves on SIGINT or SIGTERM: how the daemons learn to shut down.
///
/// The handlers are installed when this is called, not when the future is first polled:
/// a daemon says it is ready before its accept loop polls the future, and a SIGTERM in
/// between would otherwise meet the default disposition and kill it without a clean stop.
/// Must be called inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            // Registration only fails when signals cannot be handled at all; never resolve
            // rather than shut down at once.
            _ => std::future::pending::<()>().await,
        }
    }
}

/// Tells systemd (Type=notify) the daemon is ready; a no-op outside systemd.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the daemon is stopping; a no-op outside systemd.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// systemd's watchdog interval (`WatchdogSec=` in the unit), when it watches this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}

/// Tells systemd's watchdog the daemon is alive; a no-op outside systemd.
pub fn notify_watchdog() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

/// Makes a panic on any thread end the process, after the usual message: a tokio task that
/// panics would otherwise die alone and leave a daemon up that can no longer do its job.
/// The daemon exits (SIGABRT) and systemd restarts it. For the daemons' `main` only.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
