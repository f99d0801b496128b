//! A fragment's attempt history on the wire: `hz fragments P FRAG`, `hz fragments P --json`,
//! the filters `--worker` and `--since`, `hz logs --attempt`, `hz local --joblog`, and what
//! `hz remove` says it left.

use crate::wire::Exit;
use crate::{AttemptId, Millis};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One attempt of a fragment, as herzog's record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptInfo {
    pub attempt: AttemptId,
    /// The worker (host) it was sent to.
    pub worker: String,
    /// When its program started, as its worker said (ms since the epoch); for an attempt that
    /// never started, when herzog dispatched it.
    pub started_at: Millis,
    /// When it ended, as herzog recorded it; `None` while it runs.
    pub ended_at: Option<Millis>,
    /// `running`, `succeeded`, `failed`, `lost` or `stopped`.
    pub outcome: String,
    pub exit: Option<Exit>,
    pub wall_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// Its cgroup's peak memory, where it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// The limit that ended it (`--mem`, `--time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<crate::requests::LimitHit>,
    /// Why it ended as it did, when herzog noted it (lost with its worker, project removed).
    pub note: Option<String>,
    /// How a completion that came after it had ended said it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_exit: Option<String>,
    /// The command line, as the program ran on a host with the shared filesystem (each
    /// word quoted for `sh` where needed).
    pub command: String,
}

/// Which fragments `Coordinator::fragments_query` lists, and what with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentQuery {
    /// From this fragment index on.
    pub offset: u64,
    /// At most this many fragments (capped by herzog).
    pub limit: u32,
    /// With each fragment's attempts (`FragmentInfo::history`).
    #[serde(default)]
    pub attempts: bool,
    /// Only this fragment: its file name, or its index.
    #[serde(default)]
    pub fragment: Option<String>,
    /// Only fragments with an attempt on this worker; the history keeps only those attempts.
    #[serde(default)]
    pub worker: Option<String>,
    /// Only fragments with an attempt started, ended or still running at or after this time;
    /// the history keeps only those attempts.
    #[serde(default)]
    pub since: Option<Millis>,
}

/// `Coordinator::fragment_logs`: the output of one attempt of a fragment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    pub project: String,
    /// Its file name or its index.
    pub fragment: String,
    /// One of its attempts; `None`: the latest.
    pub attempt: Option<AttemptId>,
    /// The most bytes of each stream (the tail of a longer one).
    pub max_bytes: u64,
}

/// What `hz remove` did, and what it left on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRemoved {
    pub name: String,
    /// Whether a live project was removed (`false`: only an earlier project's results
    /// folder was purged).
    pub removed: bool,
    /// The project's results folder (`logs/` and `output/`).
    pub results_dir: PathBuf,
    /// Whether that folder was deleted (`--purge`); `false`: it is left as it is.
    pub purged: bool,
    /// Whether the folder exists now.
    pub left: bool,
}
