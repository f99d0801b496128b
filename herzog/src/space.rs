//! Watches the free space on herzog's state filesystem and tells the loop, which starts no
//! attempt while it is below `herzog.min_free_space`: attempts write their logs there, and a
//! full disk would fail the next commit.

use crate::inbox::Handle;
use crate::machine::Event;
use std::path::PathBuf;
use std::time::Duration;

/// How often the space is measured: a program writes a lot in this time, but starts are held
/// well before the filesystem is full, and a log is capped (`herzog.max_log_bytes`).
const EVERY: Duration = Duration::from_secs(1);

/// Measures `dir`'s filesystem every [`EVERY`] until the loop is gone. A measurement that
/// fails (the filesystem went away) is logged and tells the loop nothing.
pub(crate) async fn watch(dir: PathBuf, min_bytes: u64, handle: Handle) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let at = dir.clone();
        // statvfs can block on a network filesystem.
        let measured = tokio::task::spawn_blocking(move || free_bytes(&at)).await;
        match measured {
            Ok(Ok(free_bytes)) => {
                failing = false;
                if !handle.offer(Event::StateSpace { free_bytes, min_bytes }).await {
                    return;
                }
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::error!(dir = %dir.display(), error = %e, "failed to measure the free space of herzog's state directory");
            }
            _ => {}
        }
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
// The block counts are 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &std::path::Path) -> nix::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
}
