//! The daemons' logs through the real binaries: daily files are pruned to `log_retention`, a
//! healthy cluster under normal use (typos included) writes no WARN, and SIGHUP is logged and
//! survived.

use std::collections::BTreeSet;
use std::path::Path;
use tests::{Cluster, STARTUP};

/// Writes `<logs>/<prefix>.log.2020-01-01` ... `-<n>` oldest first (the appender orders files
/// by creation time) and a file that is not a log of the daemon's.
fn old_logs(logs: &Path, prefix: &str, n: u32) {
    std::fs::create_dir_all(logs).unwrap();
    for day in 1..=n {
        std::fs::write(logs.join(format!("{prefix}.log.2020-01-{day:02}")), "old\n").unwrap();
    }
    std::fs::write(logs.join("notes.txt"), "mine\n").unwrap();
}

/// The file names in `logs`.
fn names(logs: &Path) -> BTreeSet<String> {
    std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Asserts `logs` holds `kept` of the old files, one file of today, and the foreign file.
#[track_caller]
fn assert_pruned(logs: &Path, prefix: &str, kept: &[&str]) {
    let names = names(logs);
    let old: BTreeSet<String> = names.iter().filter(|n| n.contains(".2020-")).cloned().collect();
    let expected: BTreeSet<String> = kept.iter().map(|day| format!("{prefix}.log.{day}")).collect();
    assert_eq!(old, expected, "{prefix}'s old logs in {}: {names:?}", logs.display());
    let today: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{prefix}.log.")) && !n.contains(".2020-"))
        .collect();
    assert_eq!(today.len(), 1, "{prefix}'s current log in {names:?}");
    assert!(
        names.contains("notes.txt"),
        "a file that is no log was removed: {names:?}"
    );
}

#[test]
fn daily_logs_beyond_the_retention_are_removed_at_start_up() {
    let config = "[herzog]\nlog_retention = 3\n[kinski]\nlog_retention = 2\n";
    let mut cluster = Cluster::start_with_config(Some(config), &[("euclid", 1)]);

    // herzog: stopped, its logs replaced by 20 old days, started again.
    cluster.stop_herzog();
    let logs = cluster.herzog_state().join("logs");
    std::fs::remove_dir_all(&logs).unwrap();
    old_logs(&logs, "herzog", 20);
    cluster.start_herzog();
    assert_pruned(&logs, "herzog", &["2020-01-19", "2020-01-20"]);

    // kinski likewise, with its own retention.
    cluster.kill_kinski("euclid");
    let logs = cluster.kinski_state("euclid").join("logs");
    std::fs::remove_dir_all(&logs).unwrap();
    old_logs(&logs, "kinski", 20);
    cluster.restart_worker("euclid");
    assert_pruned(&logs, "kinski", &["2020-01-20"]);
}

#[test]
fn the_default_retention_is_fourteen_days() {
    let mut cluster = Cluster::start(&[]);
    cluster.stop_herzog();
    let logs = cluster.herzog_state().join("logs");
    std::fs::remove_dir_all(&logs).unwrap();
    old_logs(&logs, "herzog", 20);
    cluster.start_herzog();
    let kept: Vec<String> = (8..=20).map(|day| format!("2020-01-{day:02}")).collect();
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    assert_pruned(&logs, "herzog", &kept);
}

/// The lines of `log` at WARN or ERROR, but kinski's start-up note that programs run as root:
/// the harness runs them as the test's user, root under CI, and that warning is meant.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains("programs run as root, as configured"))
        .collect()
}

#[test]
fn a_healthy_cluster_under_normal_use_and_typos_writes_no_warning() {
    let mut cluster = Cluster::start(&[("euclid", 2)]);
    cluster.inputs("data", 4);
    assert_eq!(cluster.hz_ok(&["action", "data", "wc -c"]), "data\n");
    cluster.hz_ok(&["progress", "data", "--watch"]);
    for args in [
        &["list"][..],
        &["progress"],
        &["fragments", "data"],
        &["logs", "data", "f0000"],
        &["workers"],
        &["active"],
        &["schedule"],
        &["status"],
    ] {
        cluster.hz_ok(args);
    }
    // Typos: refused with exit 2, and no more than that to herzog.
    for args in [
        &["progress", "nosuch"][..],
        &["fragments", "nosuch"],
        &["logs", "data", "nosuch"],
        &["remove", "nosuch"],
        &["retry", "nosuch"],
        &["schedule", "nosuch"],
        &["status", "nosuch"],
    ] {
        cluster.hz_fails(args, 2);
    }
    let kinski = cluster.worker("euclid").log();
    assert!(warnings(&kinski).is_empty(), "kinski warned:\n{kinski}");
    // herzog's whole log, once it has stopped: what it logged as each hz went away is in it.
    cluster.signal_herzog(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = cluster.herzog_exit(STARTUP, "after SIGTERM");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(warnings(&log).is_empty(), "herzog warned:\n{log}");
}

#[test]
fn herzog_logs_a_sighup_and_keeps_running() {
    let mut cluster = Cluster::start(&[]);
    cluster.signal_herzog(nix::sys::signal::Signal::SIGHUP);
    let line = cluster.herzog_wait_for("SIGHUP", STARTUP);
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("hz reload") || line.contains("services"), "{line}");
    cluster.hz_ok(&["list"]);
}
