//! herzog's shared vocabulary: ids, wire types, the tarpc services, the transports, config and
//! the program template. Everything here is used by more than one daemon.

pub mod alerts;
pub mod config;
pub mod dirfd;
pub mod error;
pub mod history;
pub mod ids;
pub mod instances;
pub mod job;
pub mod link;
pub mod logging;
pub mod name;
pub mod output;
pub mod paths;
pub mod report;
pub mod requests;
pub mod run_settings;
pub mod service;
pub mod services;
pub mod template;
pub mod tls;
pub mod transport;
pub mod wire;

pub use error::ApiError;
pub use ids::{AttemptId, FragmentId, ProjectId};

/// Milliseconds since the Unix epoch: the one clock every record and message uses.
pub type Millis = i64;

/// The current wall-clock time in [`Millis`]: for what is recorded and shown, never to decide
/// a timeout (an NTP step moves it either way; timeouts use a monotonic clock).
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A count with its noun in the right number: `1 fragment`, `2 fragments` (plural by -s).
pub fn count(n: impl Into<u128>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(super::count(1u32, "fragment"), "1 fragment");
        assert_eq!(super::count(0u64, "fragment"), "0 fragments");
        assert_eq!(super::count(12u8, "slot"), "12 slots");
    }
}
