//! What the services tests share: a two-worker cluster with a short heartbeat, the services
//! file, `hz status` as a map, and waits on instances' states.

use crate::{Cluster, alive, eventually, write_script};
use common::instances::{InstanceState, InstanceStatus, ServiceEvent};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long an instance gets to reach a state.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A cluster of two workers (euclid and newton), a 200 ms heartbeat, a 2 s worker timeout,
/// and two programs for services: `serve.sh` (stays up) and `fail.sh` (exits 1 at once).
pub fn cluster() -> Cluster {
    let cluster = Cluster::start_with_config(
        Some("[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n"),
        &[("euclid", 1), ("newton", 1)],
    );
    write_script(
        &cluster.dir().join("serve.sh"),
        "#!/bin/sh\necho \"up $HERZOG_INSTANCE\"\nexec sleep 1000\n",
    );
    write_script(
        &cluster.dir().join("fail.sh"),
        "#!/bin/sh\necho 'no config' >&2\nexit 1\n",
    );
    cluster
}

/// A services file beside the cluster's config, read by `hz reload`.
pub fn services(cluster: &Cluster, text: &str) {
    std::fs::write(cluster.dir().join("services.toml"), text).expect("write services.toml");
}

/// `hz status --json`, by instance.
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

/// The processes of this cluster's `instance` (each test's services carry `CLUSTER=<dir>`).
pub fn processes_of(dir: &str, instance: &str) -> Vec<i32> {
    let ours = format!("CLUSTER={dir}");
    let named = format!("HERZOG_INSTANCE={instance}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
            (vars.contains(&named.as_bytes()) && vars.contains(&ours.as_bytes()) && alive(pid)).then_some(pid)
        })
        .collect()
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

/// Writes `hup.sh` beside the cluster's config and returns its path: a program that says
/// when its HUP trap is set (its pid in `trapped`: a HUP before that would kill the shell)
/// and appends `hup` to `hups` on each SIGHUP (short sleeps, so the trap runs soon).
pub fn hup_program(cluster: &Cluster) -> String {
    let dir = cluster.dir().display().to_string();
    let path = cluster.dir().join("hup.sh");
    write_script(
        &path,
        &format!(
            "#!/bin/sh\ntrap 'echo hup >> {dir}/hups' HUP\necho $$ > {dir}/trapped\nwhile :; do sleep 0.05; done\n"
        ),
    );
    path.display().to_string()
}

/// Waits until the [`hup_program`] running as `pid` has set its trap.
pub fn trapped(cluster: &Cluster, pid: i32) {
    eventually("the instance to set its trap", LIMIT, || {
        let text = std::fs::read_to_string(cluster.dir().join("trapped")).ok()?;
        (text.trim() == pid.to_string()).then_some(())
    });
}

/// Waits until the [`hup_program`] has had a SIGHUP.
pub fn got_hup(cluster: &Cluster) {
    let hups = cluster.dir().join("hups");
    eventually("the instance to get SIGHUP", LIMIT, || {
        std::fs::read_to_string(&hups)
            .ok()
            .filter(|t| t.contains("hup"))
            .map(|_| ())
    });
}

/// Waits until `instance` runs with a pid other than `old`; returns it.
pub fn restarted(cluster: &Cluster, instance: &str, old: i32) -> i32 {
    eventually(
        &format!("{instance} to run again after {old}"),
        LIMIT,
        || match status(cluster).get(instance).map(|i| &i.state) {
            Some(InstanceState::Running { pid, .. }) if *pid != old => Some(*pid),
            _ => None,
        },
    )
}
