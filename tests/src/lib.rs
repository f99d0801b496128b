//! The harness of the integration tests: real herzog, kinski and hz processes talking real TCP
//! on loopback, with herzog's real SQLite file in a temporary directory.
//!
//! The binaries are the ones cargo built next to the test executable (`target/debug/`);
//! `cargo test --workspace` builds them (herzog's and kinski's own `tests/cli.rs` make cargo
//! build their binaries, cli's tests build `hz`), otherwise run `cargo build --workspace` first.
//!
//! Nothing here sleeps to wait for an event: a daemon is ready when it logs so (its stderr is
//! read line by line), a project is finished when `hz progress <p> --watch` returns. What can
//! only be polled is polled by [`eventually`], with a deadline and a message.
//!
//! Every process started here is killed (SIGKILL, then reaped) when its guard is dropped, also
//! when a test panics; so are the programs the workers still run (their process groups).

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod bed;
pub mod by_path;
mod cluster;
mod daemon;
mod db;
mod follower;
pub mod hosted;
mod markers;
mod process;
pub mod services;
pub mod sinks;
pub mod timed;
pub use cluster::{Cluster, Frozen, bundle};
pub use daemon::Daemon;
pub use db::{DbAttempt, DbFragment};
pub use follower::Follower;
use markers::{MARKER_SCRIPT, read_markers};
pub use markers::{Marker, executions, make_inputs, sizes};
use process::command;
pub use process::{
    alive, bin, environ, eventually, expect_success, now_ns, output_within, parent_of, running, strip_ansi,
    write_script,
};

pub use common::wire;

/// How long a daemon gets to say it is ready (or to stop when asked).
pub const STARTUP: Duration = Duration::from_secs(15);
/// The longest any one `hz` call may take, `progress --watch` included.
pub const HZ_LIMIT: Duration = Duration::from_secs(60);
