//! Many hosts on one machine: `tests/testbed/netns.sh` makes four network namespaces (euclid,
//! pythagoras, leibniz, newton) on a bridge of their own, each with its own address in
//! 10.77.0.0/24 and its own sshd. herzog runs on euclid, a kinski on every host, each started
//! in its namespace with `ip netns exec`, so every connection crosses a real (virtual) link that
//! a test can cut.
//!
//! The bed needs root, iproute2 and openssh-server (sshd) plus openssh-client (ssh, sftp,
//! ssh-keygen), so every test here is `#[ignore]`d and runs when asked for (CI, which runs as
//! root and installs them, does); a bed that cannot be made fails the test with the reason,
//! never passes it.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test hosts -- --ignored --nocapture
//! ```
//!
//! The two tests that run projects take turns (a lock): the link-cut test measures how long
//! herzog takes to declare a silent host lost, which a loaded 2-core machine would blur.
//!
//! The harness (herzog on euclid, a kinski per host: [`Hosted`]) is `tests/src/hosted.rs`; the
//! tests are here by topic. [`Bed`] is meant to be built on (SSH staging): it knows each host's namespace, address and
//! scratch directory, the test key (authorised for root on every host), a key no host accepts,
//! the hosts' keys (`known_hosts`) and an `ssh_config` naming every host.

use common::wire::ProjectProgress;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::bed::{Bed, HOSTS, Host};
use tests::by_path::{assert_each_fragment_succeeded_once, clean_command, db_fragments};
use tests::hosted::{Files, Hosted, accepted_logs, files, hosts_toml, serial, varied_inputs};
use tests::{HZ_LIMIT, bin, eventually, make_inputs, output_within, write_script};

mod crashes;
mod projects;
mod services;
mod staging;
