//! Packing by requests through the real daemons, measured from the programs' own start and
//! end times: a worker of 2 CPUs runs two `--cpus 1` fragments at once and a `--cpus 2`
//! fragment alone; a `--cpus 2` project is not starved by a stream of `--cpus 1` fragments
//! (its reservation keeps the stream off the worker until it fits); a request no worker can
//! fit is refused at `hz action`, or held with the reason while no worker has registered.

use common::wire::{ProjectProgress, WorkerInfo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tests::timed::{Run, runs, timed_program};
use tests::{Cluster, eventually};

fn submit(cluster: &Cluster, program: &str, name: &str, fragments: usize, seconds: &str, cpus: &str) {
    let dir = cluster.inputs(name, fragments);
    let program = format!("{program} {seconds}");
    cluster.hz_ok(&[
        "action",
        dir.to_str().expect("UTF-8"),
        &program,
        "--name",
        name,
        "--cpus",
        cpus,
    ]);
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// A cluster of one worker, euclid, of 2 slots that offers 2 CPUs.
fn two_cpus() -> Cluster {
    let cluster = Cluster::start(&[("euclid", 2)]);
    let workers: Vec<WorkerInfo> = cluster.hz_json(&["workers"]);
    assert_eq!(
        workers[0].resources.offered_cpus(),
        2,
        "the test needs a worker of 2 CPUs (the harness registers a CPU a slot)"
    );
    cluster
}

/// The CPUs the runs asked for at the busiest instant: `cpus` of each project.
fn most_cpus_at_once(runs: &[Run], cpus: impl Fn(&str) -> u32) -> u32 {
    let mut events: Vec<(u128, i64)> = Vec::new();
    for (p, s, e) in runs {
        events.push((*s, i64::from(cpus(p))));
        events.push((*e, -i64::from(cpus(p))));
    }
    // Ends before starts at the same instant.
    events.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as u32
}

fn overlaps(a: &Run, b: &Run) -> bool {
    a.1 < b.2 && b.1 < a.2
}

#[test]
fn two_one_cpu_fragments_run_at_once_and_a_two_cpu_fragment_alone() {
    let cluster = two_cpus();
    let program = timed_program(&cluster, "\"$1\"");
    // Submitted while drained, so both start in the same round.
    cluster.hz_ok(&["drain", "euclid"]);
    submit(&cluster, &program, "ones", 6, "0.4", "1");
    submit(&cluster, &program, "twos", 3, "0.4", "2");
    cluster.hz_ok(&["undrain", "euclid"]);
    let out = cluster.hz(&["progress", "--watch"]);
    assert!(out.status.success(), "{out:?}");
    let runs = runs(cluster.dir());
    assert_eq!(runs.len(), 9, "{runs:?}");
    let cpus = |p: &str| if p == "twos" { 2 } else { 1 };
    assert_eq!(
        most_cpus_at_once(&runs, cpus),
        2,
        "never more than the worker's 2 CPUs: {runs:?}"
    );
    let ones: Vec<&Run> = runs.iter().filter(|r| r.0 == "ones").collect();
    let together = ones
        .iter()
        .enumerate()
        .any(|(i, a)| ones[i + 1..].iter().any(|b| overlaps(a, b)));
    assert!(together, "two --cpus 1 fragments ran at once: {ones:?}");
    for two in runs.iter().filter(|r| r.0 == "twos") {
        let beside: Vec<&Run> = runs.iter().filter(|r| *r != two && overlaps(r, two)).collect();
        assert!(
            beside.is_empty(),
            "a --cpus 2 fragment ran alone: {two:?} beside {beside:?}"
        );
    }
}

#[test]
fn a_two_cpu_project_is_not_starved_by_a_stream_of_one_cpu_fragments() {
    let cluster = two_cpus();
    let program = timed_program(&cluster, "\"$1\"");
    // 40 × 0.3 s on two CPUs: a stream of about 6 s, always with a fragment waiting.
    submit(&cluster, &program, "stream", 40, "0.3", "1");
    eventually("the stream running on both CPUs", Duration::from_secs(30), || {
        let p: Vec<ProjectProgress> = cluster.hz_json(&["progress", "stream"]);
        (p[0].running == 2).then_some(())
    });
    let submitted = now_ns();
    submit(&cluster, &program, "big", 2, "0.3", "2");
    let out = cluster.hz(&["progress", "--watch"]);
    assert!(out.status.success(), "{out:?}");
    let runs = runs(cluster.dir());
    let big: Vec<&Run> = runs.iter().filter(|r| r.0 == "big").collect();
    assert_eq!(big.len(), 2, "{runs:?}");
    let first = big.iter().map(|r| r.1).min().expect("runs");
    let last_end = big.iter().map(|r| r.2).max().expect("runs");
    // It waits for what the worker holds to drain (two running and two queued 0.3 s
    // fragments), not for the stream to end.
    let waited = (first.saturating_sub(submitted)) as f64 / 1e9;
    assert!(
        waited < 3.0,
        "the --cpus 2 project waited {waited:.2} s for its first start"
    );
    let stream_after = runs.iter().filter(|r| r.0 == "stream" && r.1 > last_end).count();
    assert!(
        stream_after > 0,
        "the stream still had fragments to run after the big project's: it was not starved but served in turn ({runs:?})"
    );
    let cpus = |p: &str| if p == "big" { 2 } else { 1 };
    assert_eq!(most_cpus_at_once(&runs, cpus), 2, "{runs:?}");
}

#[test]
fn a_request_no_worker_can_fit_is_refused_with_the_largest_worker() {
    let cluster = two_cpus();
    let dir = cluster.inputs("huge", 1);
    let err = cluster.hz_fails(&["action", dir.to_str().expect("UTF-8"), "true", "--cpus", "8"], 2);
    assert!(
        err.contains("no worker can fit 8 CPUs: the largest offers 2 CPUs / ") && err.contains("(euclid)"),
        "{err}"
    );
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress"]);
    assert!(progress.is_empty(), "nothing was added: {progress:?}");
}

#[test]
fn with_no_worker_yet_a_big_request_is_held_with_the_reason() {
    let cluster = Cluster::start(&[]);
    let dir = cluster.inputs("huge", 1);
    cluster.hz_ok(&[
        "action",
        dir.to_str().expect("UTF-8"),
        "true",
        "--cpus",
        "8",
        "--mem",
        "64G",
    ]);
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", "huge"]);
    let held = progress[0].held.as_deref().unwrap_or_default();
    assert!(held.starts_with("waiting: no worker can fit 8 CPUs / 64 GiB"), "{held}");
    let list = cluster.hz_ok(&["list"]);
    assert!(list.contains("held"), "{list}");
}
