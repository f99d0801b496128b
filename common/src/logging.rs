//! Logging for the daemons: to stderr and to a daily-rolling file in the state directory;
//! and the shutdown signal they share.

use std::path::Path;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the file writer flushing; hold it in `main` until exit.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global subscriber: `<state_dir>/logs/<prefix>.log.YYYY-MM-DD`, plus stderr when
/// `to_stderr`. `filter` is an EnvFilter directive; RUST_LOG overrides it. The newest
/// `retention` daily files are kept (`log_retention`); older ones are removed at start-up and
/// after each day's rollover (UTC, as the file names).
pub fn init(
    state_dir: &Path,
    prefix: &str,
    filter: &str,
    to_stderr: bool,
    retention: u32,
) -> std::io::Result<LogGuard> {
    let dir = state_dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let appender = tracing_appender::rolling::daily(&dir, format!("{prefix}.log"));
    // Not the appender's max_log_files: it orders files by creation time, which a copied or
    // restored log directory (or a coarse clock) gets wrong; the date in the name does not lie.
    let stem = format!("{prefix}.log.");
    prune(&dir, &stem, retention);
    std::thread::Builder::new()
        .name("log-retention".into())
        .spawn(move || {
            loop {
                std::thread::sleep(until_after_midnight());
                prune(&dir, &stem, retention);
            }
        })?;
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

/// Removes `<stem>YYYY-MM-DD` files in `dir` but today's (UTC) and the `retention - 1` newest
/// before it, by the date in their names; anything else in `dir` is left alone. Failures are
/// printed, not fatal: a log that cannot be pruned is no reason to stop a daemon.
fn prune(dir: &Path, stem: &str, retention: u32) {
    let today = today();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut older: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let date = name.strip_prefix(stem).filter(|d| is_date(d))?.to_string();
            (date < today && e.file_type().ok()?.is_file()).then(|| (date, e.path()))
        })
        .collect();
    // Newest first; ISO dates sort as text.
    older.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, path) in older.iter().skip(retention.saturating_sub(1) as usize) {
        if let Err(e) = std::fs::remove_file(path) {
            eprintln!("failed to remove the old log file {}: {e}", path.display());
        }
    }
}

/// True for `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// Today's date in UTC as the appender names its files.
fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// How long until a few seconds past the next UTC midnight, when the appender has rolled over.
fn until_after_midnight() -> std::time::Duration {
    let now = time::OffsetDateTime::now_utc();
    let since_midnight = u64::from(now.hour()) * 3600 + u64::from(now.minute()) * 60 + u64::from(now.second());
    std::time::Duration::from_secs(86_400 - since_midnight + 5)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_today_and_the_newest_days_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let today = today();
        let mut names = vec![
            format!("kinski.log.{today}"),
            "kinski.log.2020-13-xx".into(),
            "other.txt".into(),
        ];
        names.extend((1..=9).map(|d| format!("kinski.log.2020-01-0{d}")));
        names.push("hz-local.log.2020-01-01".into());
        for n in &names {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        prune(dir.path(), "kinski.log.", 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![
            "hz-local.log.2020-01-01".to_string(),
            "kinski.log.2020-01-08".into(),
            "kinski.log.2020-01-09".into(),
            "kinski.log.2020-13-xx".into(),
            format!("kinski.log.{today}"),
            "other.txt".into(),
        ];
        expected.sort();
        assert_eq!(left, expected);
    }
}
