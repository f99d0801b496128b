//! What the services tests share: a services file written beside the cluster's config, the
//! instances as `hz status --json` shows them, and a wait until named instances run.

use crate::{Cluster, eventually};
use common::instances::{InstanceState, InstanceStatus, ServiceEvent};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a services test waits for one thing to happen.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Writes the services file `hz reload` reads (`services.toml` beside the cluster's config).
pub fn services(cluster: &Cluster, text: &str) {
    std::fs::write(cluster.dir().join("services.toml"), text).expect("write services.toml");
}

/// Every instance as `hz status --json` shows it, by name (`web:0`).
pub fn status(cluster: &Cluster) -> BTreeMap<String, InstanceStatus> {
    let all: Vec<InstanceStatus> = cluster.hz_json(&["status"]);
    all.into_iter().map(|i| (i.instance.clone(), i)).collect()
}

/// Waits until every instance named is RUNNING with a pid; returns their pids.
pub fn running(cluster: &Cluster, names: &[&str]) -> BTreeMap<String, i32> {
    eventually(&format!("{names:?} to run"), LIMIT, || {
        let now = status(cluster);
        names
            .iter()
            .map(|n| match now.get(*n).map(|i| &i.state) {
                Some(InstanceState::Running { pid, .. }) => Some((n.to_string(), *pid)),
                _ => None,
            })
            .collect::<Option<BTreeMap<_, _>>>()
    })
}

/// The event log, as `hz events --json` prints it (one object a line), oldest first.
pub fn events(cluster: &Cluster) -> Vec<ServiceEvent> {
    cluster
        .hz_ok(&["events", "--json", "--last", "1000"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .collect()
}

/// An event's word as the log names it (`started`, `exited`, `backoff`, ...).
pub fn word(event: &ServiceEvent) -> String {
    let json = serde_json::to_value(&event.kind).expect("an event kind is JSON");
    json["event"].as_str().expect("events are tagged").to_string()
}
