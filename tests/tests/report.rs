//! `hz report P` through the real daemons: a project of known runtimes (20 fragments that
//! sleep 0.1 s .. 2.0 s, three of which then exit 3) on two workers gives the known
//! percentiles of wall time, the 10 slowest in order, failures by reason and attempts per
//! host; `--json` parses into common's `Report`, and an `hz run` job is reported too.

use common::report::Report;
use common::wire::FragmentInfo;
use std::collections::BTreeMap;
use tests::{Cluster, write_script};

/// Sleeps the seconds its input names, then exits 3 when the input says `fail`.
const SLEEPER: &str = r#"#!/bin/sh
read seconds verdict < "$1"
sleep "$seconds"
if [ "$verdict" = fail ]; then exit 3; fi
"#;

/// What a fragment's wall time may exceed its sleep by: starting `sh` and `sleep` and
/// reaping them takes milliseconds on an idle host, but this machine's two cores are shared
/// with builds, where a start has taken a few hundred.
const START_COST_MS: u64 = 600;

/// The fragments that fail, by their sleep in tenths of a second.
const FAILING: [u64; 3] = [3, 8, 14];

#[test]
fn a_project_of_known_runtimes_gives_its_known_report() {
    let cluster = Cluster::start(&[("euclid", 2), ("newton", 2)]);
    let dir = cluster.dir().join("sleepy");
    std::fs::create_dir_all(&dir).unwrap();
    // s01 sleeps 0.1 s, ..., s20 sleeps 2.0 s.
    for tenths in 1..=20u64 {
        let verdict = if FAILING.contains(&tenths) { " fail" } else { "" };
        let text = format!("{}.{}{verdict}\n", tenths / 10, tenths % 10);
        std::fs::write(dir.join(format!("s{tenths:02}")), text).unwrap();
    }
    let program = cluster.dir().join("sleeper.sh");
    write_script(&program, SLEEPER);
    cluster.hz_ok(&["action", "sleepy", program.to_str().unwrap()]);
    // Three fragments failed: --watch says so by its exit status, once all have ended.
    assert_eq!(cluster.hz(&["progress", "sleepy", "--watch"]).status.code(), Some(1));

    let r: Report = cluster.hz_json(&["report", "sleepy"]);
    assert_eq!(r.project, "sleepy");
    assert!(!r.job && r.removed_at.is_none() && r.requests.is_empty(), "{r:?}");
    assert_eq!(
        (r.fragments.total, r.fragments.succeeded, r.fragments.failed),
        (20, 17, 3)
    );
    assert_eq!(r.counted, 20, "failed fragments ran too and count");

    // Nearest rank of 20: the median is the 10th (1.0 s), the 95th percentile the 19th
    // (1.9 s). The k-th smallest wall lies within [k-th sleep, k-th sleep + start cost]
    // whatever order the jitter puts them in.
    let wall = r.wall_ms.expect("wall times");
    for (what, got, sleep_ms) in [
        ("min", wall.min, 100),
        ("median", wall.median, 1000),
        ("p95", wall.p95, 1900),
        ("max", wall.max, 2000),
    ] {
        assert!(
            (sleep_ms..sleep_ms + START_COST_MS).contains(&got),
            "{what} wall {got} ms, expected {sleep_ms} ms + up to {START_COST_MS} ms: {wall:?}"
        );
    }
    // Sleeping uses next to no CPU; efficiency is against 1 CPU, none being requested.
    let cpu = r.cpu_efficiency.expect("CPU efficiency");
    assert!(cpu.min >= 0.0 && cpu.max < 0.5, "{cpu:?}");
    assert!(r.total.cpu_efficiency.is_some_and(|e| e < 0.25), "{:?}", r.total);
    let sleeps: u64 = (1..=20).map(|t| t * 100).sum();
    assert!(
        (sleeps..sleeps + 20 * START_COST_MS).contains(&r.total.wall_ms),
        "{:?}",
        r.total
    );
    assert!(r.memory_efficiency.is_none(), "no memory was requested");
    // `sh` and `sleep` are smaller than kinski, whose own size the kernel folds into a
    // child's peak RSS at exec, and no memory cgroup counted them: no peak is known, and
    // none is made up (kinski's size, or 0, would be).
    assert_eq!(r.peak_memory_bytes, None, "{r:?}");
    assert!(r.largest.is_empty(), "{:?}", r.largest);

    // The 10 slowest: s20 down to s11, each with its own wall time, and where it ran.
    let slowest: Vec<&str> = r.slowest.iter().map(|f| f.fragment.as_str()).collect();
    let expected: Vec<String> = (11..=20).rev().map(|t| format!("s{t:02}")).collect();
    assert_eq!(slowest, expected, "{:?}", r.slowest);
    let listed: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "sleepy"]);
    let worker_of: BTreeMap<&str, &str> = listed
        .iter()
        .map(|f| (f.name.as_str(), f.worker.as_deref().expect("a worker")))
        .collect();
    for f in &r.slowest {
        let sleep_ms: u64 = f.fragment[1..].parse::<u64>().unwrap() * 100;
        assert!((sleep_ms..sleep_ms + START_COST_MS).contains(&f.wall_ms), "{f:?}");
        assert_eq!(worker_of[f.fragment.as_str()], f.worker, "{f:?}");
    }

    // Failures by reason: the three exits of 3, the first of them named.
    let failures: Vec<(&str, u64, &str)> = r
        .failures
        .iter()
        .map(|f| (f.reason.as_str(), f.fragments, f.example.as_str()))
        .collect();
    assert_eq!(failures, [("exited with 3", 3, "s03")]);

    // Attempts per host: both workers took some, as `hz fragments` says they did.
    let mut per_worker: BTreeMap<&str, u64> = BTreeMap::new();
    for w in worker_of.values() {
        *per_worker.entry(w).or_default() += 1;
    }
    let hosts: BTreeMap<&str, u64> = r.hosts.iter().map(|h| (h.worker.as_str(), h.attempts)).collect();
    assert_eq!(hosts, per_worker);
    assert_eq!(hosts.keys().copied().collect::<Vec<_>>(), ["euclid", "newton"]);
    assert_eq!(r.hosts.iter().map(|h| h.succeeded).sum::<u64>(), 17);
    assert_eq!(r.hosts.iter().map(|h| h.failed).sum::<u64>(), 3);
    assert!(
        r.hosts.iter().all(|h| h.lost + h.stopped + h.running == 0),
        "{:?}",
        r.hosts
    );

    // The table says the same for people.
    let text = cluster.hz_ok(&["report", "sleepy"]);
    for needle in [
        "Project:   sleepy",
        "Fragments: 20: 17 succeeded, 3 failed",
        "Counted:   20 attempts",
        "Wall time",
        "CPU efficiency (1 CPU)",
        "Slowest fragments:",
        "exited with 3  s03",
        "Attempts per host:",
        "euclid",
        "newton",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(
        text.find("s20").unwrap() < text.find("s19").unwrap(),
        "slowest first:\n{text}"
    );

    // An `hz run` job is a project of one fragment, named by its project id (sleepy is 1).
    cluster.hz_ok(&["run", "--", "sleep", "0.2"]);
    let job: Report = cluster.hz_json(&["report", "run:2"]);
    assert!(job.job, "{job:?}");
    assert_eq!((job.fragments.total, job.fragments.succeeded, job.counted), (1, 1, 1));
    assert!(job.wall_ms.is_some_and(|w| w.min >= 200), "{job:?}");

    // A removed project is still reported from the record; a name never used is bad input.
    cluster.hz_ok(&["remove", "sleepy"]);
    let removed: Report = cluster.hz_json(&["report", "sleepy"]);
    assert!(removed.removed_at.is_some(), "{removed:?}");
    assert_eq!(removed.counted, 20);
    let err = cluster.hz_fails(&["report", "nope"], 2);
    assert!(err.contains("no project named 'nope'"), "{err}");
}
