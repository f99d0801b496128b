//! A whole batch on a real cluster: herzog and two workers run 200 fragments; every fragment
//! runs exactly once (counted by the program itself), and what herzog recorded matches.

use common::wire::{ActiveAttempt, Exit, FragmentInfo, FragmentStateKind, ProjectProgress, WorkerInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use tests::{Cluster, alive, eventually, sizes};

const FRAGMENTS: usize = 200;

#[test]
fn two_workers_run_every_fragment_exactly_once() {
    let cluster = Cluster::start(&[("euclid", 2), ("pythagoras", 2)]);
    let input = cluster.inputs("batch", FRAGMENTS);
    let expected = sizes(&input);
    assert_eq!(expected.len(), FRAGMENTS);
    let program = cluster.marker_program();

    // `hz action` prints the name alone on stdout and the results directory on stderr.
    let out = cluster.hz(&["action", "batch", &program]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "batch\n");
    let results_dir = PathBuf::from(
        stderr
            .split("results in ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_else(|| panic!("hz action did not name the results directory: {stderr}")),
    );
    assert!(stderr.contains(&format!("{FRAGMENTS} fragments")), "{stderr}");

    // Returns when the project is finished; 0 because nothing failed.
    cluster.hz_ok(&["progress", "batch", "--watch"]);

    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "batch"]);
    assert_eq!(progress.len(), 1, "{progress:?}");
    let p = &progress[0];
    assert_eq!(p.name, "batch");
    assert_eq!(p.dir, input.canonicalize().unwrap());
    assert_eq!(p.program, program);
    assert_eq!(
        (p.total, p.pending, p.running, p.succeeded, p.failed),
        (FRAGMENTS as u64, 0, 0, FRAGMENTS as u64, 0),
        "{p:?}"
    );
    assert_eq!(p.percent, 100.0);
    assert_eq!(p.results_dir, results_dir);

    // What really ran: one marker per fragment, each from one of the two workers.
    let markers = cluster.markers();
    assert_eq!(markers.len(), FRAGMENTS, "executions recorded by the program");
    let mut ran: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for m in &markers {
        assert_eq!(m.project, "batch");
        let worker = cluster
            .worker_by_pid(m.ppid)
            .unwrap_or_else(|| panic!("{m:?} was not started by a worker of the cluster"))
            .to_string();
        let before = ran.insert(m.fragment.clone(), (m.attempt, worker));
        assert!(before.is_none(), "fragment {} ran twice", m.fragment);
    }
    assert_eq!(
        ran.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "the fragments that ran are not the input files"
    );
    for name in ["euclid", "pythagoras"] {
        let n = ran.values().filter(|(_, w)| w == name).count();
        assert!(n > 0, "{name} ran no fragment");
    }

    // What herzog recorded agrees with what ran.
    let fragments: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "batch"]);
    assert_eq!(fragments.len(), FRAGMENTS);
    for (i, f) in fragments.iter().enumerate() {
        assert_eq!(f.index, i as u64, "{f:?}");
        assert_eq!(f.state, FragmentStateKind::Succeeded, "{f:?}");
        assert_eq!(f.attempts, 1, "{f:?}");
        assert_eq!(f.exit, Some(Exit::Code(0)), "{f:?}");
        assert!(f.wall_ms.is_some(), "no wall time: {f:?}");
        // A small program's peak is not known (kinski's own is folded into it): never shown as 0.
        assert!(f.peak_rss_kb.is_none_or(|kb| kb > 0), "a peak RSS of 0: {f:?}");
        assert_eq!(f.reason, None, "{f:?}");
        let (attempt, worker) = &ran[&f.name];
        assert_eq!(f.attempt.map(|a| a.0), Some(*attempt), "{f:?}");
        assert_eq!(f.worker.as_ref(), Some(worker), "{f:?}");

        // The program's stdout is kept under the results directory.
        let stdout = results_dir.join("logs").join(format!("{}.{attempt}.stdout", f.name));
        let text = std::fs::read_to_string(&stdout).unwrap_or_else(|e| panic!("{}: {e}", stdout.display()));
        assert_eq!(text.trim(), expected[&f.name].to_string(), "{}", stdout.display());
    }

    // `hz logs` prints what the program printed, by name and by index.
    for (i, name) in [(0, "f0000"), (117, "f0117"), (FRAGMENTS - 1, "f0199")] {
        let by_name = cluster.hz_ok(&["logs", "batch", name]);
        assert_eq!(by_name.trim(), expected[name].to_string(), "hz logs batch {name}");
        let by_index = cluster.hz_ok(&["logs", "batch", &i.to_string(), "--stdout"]);
        assert_eq!(by_index, by_name, "hz logs batch {i}");
    }

    let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
    assert!(active.is_empty(), "{active:?}");
    let workers: Vec<WorkerInfo> = cluster.hz_json(&["workers"]);
    let mut seen: Vec<(&str, &str, u32, u32)> = workers
        .iter()
        .map(|w| (w.name.as_str(), w.state.as_str(), w.resources.slots, w.running))
        .collect();
    seen.sort();
    assert_eq!(seen, [("euclid", "connected", 2, 0), ("pythagoras", "connected", 2, 0)]);

    // A clean shutdown: every daemon exits 0 on SIGTERM.
    for (name, status) in cluster.stop() {
        assert_eq!(status.code(), Some(0), "{name} ended with {status}");
    }
}

/// Fast heartbeats so that a silent worker is declared lost within seconds.
const FAST: &str = "[herzog]\nheartbeat_interval = \"250ms\"\nworker_timeout = \"3s\"\n";

#[test]
fn a_crashed_workers_fragments_run_again_elsewhere() {
    let mut cluster = Cluster::start_with_config(Some(FAST), &[("euclid", 2), ("pythagoras", 2)]);
    cluster.inputs("crash", 6);
    let program = cluster.marker_program();
    cluster.hz_ok(&["action", "crash", &program, "--env", "SLEEP=2"]);

    // Wait until pythagoras runs two programs, then crash it.
    let victim = cluster.worker("pythagoras").pid();
    let lost = eventually("pythagoras to start two fragments", Duration::from_secs(10), || {
        let mine: Vec<_> = cluster.markers().into_iter().filter(|m| m.ppid == victim).collect();
        (mine.len() == 2).then_some(mine)
    });
    cluster.kill_worker("pythagoras");
    for m in &lost {
        eventually("the crashed worker's programs to die", Duration::from_secs(10), || {
            (!alive(m.pid)).then_some(())
        });
    }

    cluster.hz_ok(&["progress", "crash", "--watch"]);
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "crash"]);
    assert_eq!((progress[0].succeeded, progress[0].failed), (6, 0), "{progress:?}");

    let euclid = cluster.worker("euclid").pid();
    let markers = cluster.markers();
    let fragments: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "crash"]);
    assert_eq!(fragments.len(), 6);
    for f in &fragments {
        let runs: Vec<_> = markers.iter().filter(|m| m.fragment == f.name).collect();
        let was_lost = lost.iter().find(|m| m.fragment == f.name);
        assert_eq!(f.state, FragmentStateKind::Succeeded, "{f:?}");
        assert_eq!(f.worker.as_deref(), Some("euclid"), "{f:?}");
        assert_eq!(f.exit, Some(Exit::Code(0)), "{f:?}");
        let last = runs
            .iter()
            .find(|m| Some(m.attempt) == f.attempt.map(|a| a.0))
            .unwrap_or_else(|| panic!("the recorded attempt of {f:?} never ran: {runs:?}"));
        assert_eq!(last.ppid, euclid, "{f:?}");
        match was_lost {
            Some(first) => {
                assert_eq!(runs.len(), 2, "{} ran {runs:?}", f.name);
                assert_eq!(f.attempts, 2, "{f:?}");
                assert_ne!(first.attempt, last.attempt);
            }
            None => {
                assert_eq!(runs.len(), 1, "{} ran {runs:?}", f.name);
                // 2 when its first attempt sat in the crashed worker's queue and never ran.
                assert!(matches!(f.attempts, 1 | 2), "{f:?}");
            }
        }
    }
    let workers: Vec<WorkerInfo> = cluster.hz_json(&["workers"]);
    let state = |name: &str| workers.iter().find(|w| w.name == name).map(|w| w.state.clone());
    assert_eq!(state("pythagoras").as_deref(), Some("lost"), "{workers:?}");
    assert_eq!(state("euclid").as_deref(), Some("connected"), "{workers:?}");
}
