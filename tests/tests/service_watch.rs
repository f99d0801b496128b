//! `restart_on_change` and `change_signal` on real daemons: kinski watches the files a service
//! names (inotify) and restarts exactly the instances that depend on them, once per burst of
//! changes, or sends them `change_signal` instead; the event log names the file; a reload that
//! changes only what is watched restarts nothing.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test service_watch -- --nocapture
//! ```

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tests::services::{LIMIT, got_hup, hup_program, restarted, running, services, status, trapped};
use tests::{Cluster, eventually, write_script};

/// Longer than kinski's debounce (500 ms of quiet, at most 5 s after the first change).
const SETTLE: Duration = Duration::from_millis(1500);

/// The file-change events of the log, as JSON objects with their instance.
fn file_changes(cluster: &Cluster) -> Vec<(String, Value)> {
    cluster
        .hz_ok(&["events", "--json", "--last", "1000"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
        .filter(|e| e["kind"]["event"] == "file_changed")
        .map(|e| {
            (
                e["instance"].as_str().unwrap_or_default().to_string(),
                e["kind"].clone(),
            )
        })
        .collect()
}

/// The files an event names.
fn files(kind: &Value) -> Vec<String> {
    kind["files"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Waits until the log holds `n` file-change events.
fn changes(cluster: &Cluster, n: usize) -> Vec<(String, Value)> {
    eventually(&format!("{n} file changes in the event log"), LIMIT, || {
        let all = file_changes(cluster);
        (all.len() >= n).then_some(all)
    })
}

fn cluster() -> Cluster {
    let cluster = Cluster::start_with_config(
        Some("[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n"),
        &[("euclid", 1), ("newton", 1)],
    );
    write_script(&cluster.dir().join("serve.sh"), "#!/bin/sh\nexec sleep 1000\n");
    cluster
}

fn touch(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .unwrap_or_else(|e| panic!("failed to touch {}: {e}", path.display()));
}

#[test]
fn a_changed_file_restarts_exactly_the_instances_that_watch_it_and_the_log_names_it() {
    let cluster = cluster();
    let dir = cluster.dir().display().to_string();
    let conf = cluster.dir().join("etc");
    std::fs::create_dir(&conf).unwrap();
    let file = conf.join("app.conf");
    std::fs::write(&file, "a = 1\n").unwrap();
    services(
        &cluster,
        &format!(
            r#"
[services.app]
command = "{dir}/serve.sh"
numprocs = 2
startsecs = 0
restart_on_change = ["{}"]
[services.other]
command = "{dir}/serve.sh"
startsecs = 0
"#,
            file.display()
        ),
    );
    cluster.hz_ok(&["reload"]);
    let mut pids = running(&cluster, &["app:0", "app:1", "other:0"]);
    let other = pids["other:0"];

    // Rewritten in place, replaced by a rename (as editors save), touched: each restarts both
    // instances of app, on both workers, and nothing else.
    let tmp = conf.join(".app.conf.swp");
    for (n, how) in ["rewrite", "rename", "touch"].into_iter().enumerate() {
        match how {
            "rewrite" => std::fs::write(&file, "a = 2\n").unwrap(),
            "rename" => {
                std::fs::write(&tmp, "a = 3\n").unwrap();
                std::fs::rename(&tmp, &file).unwrap();
            }
            _ => touch(&file),
        }
        for instance in ["app:0", "app:1"] {
            let new = restarted(&cluster, instance, pids[instance]);
            pids.insert(instance.to_string(), new);
        }
        let log = changes(&cluster, 2 * (n + 1));
        assert_eq!(
            log.len(),
            2 * (n + 1),
            "after the {how}: one event per instance: {log:?}"
        );
        for (instance, kind) in &log {
            assert!(
                instance.starts_with("app:"),
                "{instance} restarted on a change: {log:?}"
            );
            assert_eq!(files(kind), [file.display().to_string()], "{kind}");
            assert!(kind["signal"].is_null(), "{kind}");
        }
        assert_eq!(
            running(&cluster, &["other:0"])["other:0"],
            other,
            "other was restarted by the {how}"
        );
    }
    let text = cluster.hz_ok(&["events", "--service", "app"]);
    assert!(
        text.contains(&format!("restarted on a change of {}", file.display())),
        "{text}"
    );
    // A file beside it in the same directory is not watched.
    std::fs::write(conf.join("unrelated.conf"), "x").unwrap();
    std::thread::sleep(SETTLE);
    assert_eq!(file_changes(&cluster).len(), 6);
    // A restart for a change is routine: no warning in the workers' logs.
    for worker in ["euclid", "newton"] {
        let log = cluster.worker(worker).log();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") && !l.contains("programs run as root"))
            .collect();
        assert!(warned.is_empty(), "{worker} warned: {warned:#?}");
    }
}

#[test]
fn with_change_signal_the_instance_gets_the_signal_and_keeps_its_pid() {
    let cluster = cluster();
    let file = cluster.dir().join("app.conf");
    std::fs::write(&file, "a = 1\n").unwrap();
    let hup = hup_program(&cluster);
    services(
        &cluster,
        &format!(
            "[services.app]\ncommand = \"{hup}\"\nstartsecs = 0\nrestart_on_change = [\"{}\"]\nchange_signal = \"HUP\"\n",
            file.display()
        ),
    );
    cluster.hz_ok(&["reload"]);
    let before = running(&cluster, &["app:0"]);
    trapped(&cluster, before["app:0"]);
    std::fs::write(&file, "a = 2\n").unwrap();
    got_hup(&cluster);
    let log = changes(&cluster, 1);
    assert_eq!(log[0].1["signal"], "HUP", "{log:?}");
    assert_eq!(files(&log[0].1), [file.display().to_string()]);
    assert_eq!(running(&cluster, &["app:0"]), before, "a signal is not a restart");
    assert_eq!(status(&cluster)["app:0"].restarts, 0);
    let text = cluster.hz_ok(&["events", "--service", "app"]);
    assert!(
        text.contains(&format!("sent HUP on a change of {}", file.display())),
        "{text}"
    );
}

#[test]
fn a_burst_of_twenty_writes_restarts_once() {
    let cluster = cluster();
    let dir = cluster.dir().display().to_string();
    let file = cluster.dir().join("app.conf");
    std::fs::write(&file, "0\n").unwrap();
    services(
        &cluster,
        &format!(
            "[services.app]\ncommand = \"{dir}/serve.sh\"\nstartsecs = 0\nrestart_on_change = [\"{}\"]\n",
            file.display()
        ),
    );
    cluster.hz_ok(&["reload"]);
    let before = running(&cluster, &["app:0"]);
    for n in 1..=20 {
        std::fs::write(&file, format!("{n}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    restarted(&cluster, "app:0", before["app:0"]);
    // Nothing more comes once the burst has settled: one restart for the twenty writes.
    std::thread::sleep(SETTLE);
    assert_eq!(file_changes(&cluster).len(), 1, "{:?}", file_changes(&cluster));
    let started = cluster
        .hz_ok(&["events", "--json", "--service", "app"])
        .lines()
        .filter(|l| l.contains("\"event\":\"started\""))
        .count();
    assert_eq!(started, 2, "the first start and one restart");
}

#[test]
fn a_reload_that_changes_only_the_watched_paths_restarts_nothing_and_watches_the_new_ones() {
    let cluster = cluster();
    let dir = cluster.dir().display().to_string();
    let old = cluster.dir().join("old.conf");
    std::fs::write(&old, "a\n").unwrap();
    let conf_d = cluster.dir().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    // Not there yet: watched from its nearest existing directory until it appears.
    let later = cluster.dir().join("later").join("app.conf");
    let file = |watched: &str| {
        format!("[services.app]\ncommand = \"{dir}/serve.sh\"\nstartsecs = 0\nrestart_on_change = [{watched}]\n")
    };
    services(&cluster, &file(&format!("\"{}\"", old.display())));
    cluster.hz_ok(&["reload"]);
    let before = running(&cluster, &["app:0"]);

    services(
        &cluster,
        &file(&format!("\"{}\", \"{}\"", conf_d.display(), later.display())),
    );
    let said = cluster.hz_ok(&["reload"]);
    assert!(said.contains("changed without a restart: app"), "{said}");

    // The old file no longer restarts it; a file in a new subdirectory of the watched
    // directory does.
    std::fs::write(&old, "b\n").unwrap();
    std::fs::create_dir(conf_d.join("sub")).unwrap();
    let inner = conf_d.join("sub").join("x.conf");
    std::fs::write(&inner, "x\n").unwrap();
    let pid = restarted(&cluster, "app:0", before["app:0"]);
    let log = changes(&cluster, 1);
    let named: Vec<String> = log.iter().flat_map(|(_, k)| files(k)).collect();
    assert!(!named.contains(&old.display().to_string()), "{named:?}");
    assert!(
        named.iter().any(|f| f.starts_with(&conf_d.display().to_string())),
        "{named:?}"
    );

    // The path that did not exist is watched once it does.
    std::thread::sleep(SETTLE);
    let seen = file_changes(&cluster).len();
    std::fs::create_dir(later.parent().unwrap()).unwrap();
    std::fs::write(&later, "y\n").unwrap();
    restarted(&cluster, "app:0", pid);
    let log = changes(&cluster, seen + 1);
    assert!(
        files(&log[log.len() - 1].1).contains(&later.display().to_string()),
        "{log:?}"
    );
}
