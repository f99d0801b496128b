//! Faults on a real cluster: a worker host crashing, a kinski frozen past its timeout, herzog
//! killed mid-project, a kinski killed and restarted on its journal, and herzog down while
//! fragments finish. Every test ends with the promise checked in herzog's database (each
//! fragment has exactly one accepted success) and in what really ran (the marker files: every
//! fragment ran at least once; duplicate executions are counted and printed).
//!
//! The tests run one at a time (a lock): they measure timings that a loaded 2-core machine
//! would blur. `--nocapture` shows the measurements:
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test faults -- --nocapture
//! ```
//!
//! The recovery-time measurement with 100,000 fragments is `#[ignore]`d (about 15 s):
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test faults -- --ignored --nocapture recovery_time_with_100k_fragments
//! ```
//!

use common::wire::ProjectProgress;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tests::{Cluster, DbFragment, Marker, eventually, executions, now_ns};

/// Fast heartbeats: a silent worker is lost within 1.5 s.
const HEARTBEAT_MS: u64 = 200;
const TIMEOUT_MS: u64 = 1500;

/// The config of the tests where only workers fail.
fn fast() -> String {
    format!("[herzog]\nheartbeat_interval = \"{HEARTBEAT_MS}ms\"\nworker_timeout = \"{TIMEOUT_MS}ms\"\n")
}

/// The config of the tests that restart herzog. A restarted herzog gives every worker
/// `worker_timeout` to register again before it declares it lost. A kinski that has
/// registered once redials at most a heartbeat interval apart (here 200 ms, jitter
/// included), so it is back within a beat of herzog listening; 6 s is margin for a loaded
/// machine (a worker declared lost would re-run its fragments). Even 1.5 s is enough: see
/// `a_restarted_herzog_waits_for_redialling_workers`.
const PATIENT: &str = "[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"6s\"\n";

/// Three workers of two slots.
const WORKERS: [(&str, u32); 3] = [("euclid", 2), ("gauss", 2), ("noether", 2)];

/// Lost attempts count toward `max_attempts`; faults may cost a fragment a few.
const MAX_ATTEMPTS: &str = "10";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds project `name` of `n` fragments running the marker program for `sleep` seconds each.
fn add_project(cluster: &Cluster, name: &str, n: usize, sleep: &str) {
    cluster.inputs(name, n);
    let program = cluster.marker_program();
    cluster.hz_ok(&[
        "action",
        name,
        &program,
        "--env",
        &format!("SLEEP={sleep}"),
        "--max-attempts",
        MAX_ATTEMPTS,
    ]);
}

/// The executions of `project` that run now.
fn running_markers(cluster: &Cluster, project: &str) -> Vec<Marker> {
    cluster
        .markers()
        .into_iter()
        .filter(|m| m.project == project && cluster.marker_running(m))
        .collect()
}

/// Waits until at least `started` executions of `project` were recorded and the kinski with
/// pid `worker` runs at least one; returns what that kinski runs.
fn wait_mid_project(cluster: &Cluster, project: &str, started: usize, worker: u32) -> Vec<Marker> {
    eventually(
        &format!("{started} executions of {project}, one running on pid {worker}"),
        Duration::from_secs(30),
        || {
            let markers = cluster.markers();
            let mine: Vec<Marker> = markers
                .iter()
                .filter(|m| m.project == project && m.ppid == worker && cluster.marker_running(m))
                .cloned()
                .collect();
            (markers.iter().filter(|m| m.project == project).count() >= started && !mine.is_empty()).then_some(mine)
        },
    )
}

/// Waits until `project` is finished, then checks the promise: the database shows each of the
/// `n` fragments succeeded by exactly one attempt, every fragment ran, and the accepted attempt
/// of each is one that really ran. Prints and returns the fragments and the duplicate count.
fn finish_and_check(cluster: &Cluster, test: &str, project: &str, n: usize) -> (Vec<DbFragment>, usize) {
    cluster.hz_ok(&["progress", project, "--watch"]);
    let progress: Vec<ProjectProgress> = cluster.hz_json(&["progress", project]);
    assert_eq!(
        (progress[0].succeeded, progress[0].failed),
        (n as u64, 0),
        "{progress:?}"
    );
    let fragments = cluster.assert_each_fragment_succeeded_once(project, n);
    let markers: Vec<Marker> = cluster.markers().into_iter().filter(|m| m.project == project).collect();
    let runs = executions(&markers, project);
    for f in &fragments {
        assert!(runs.contains_key(&f.name), "fragment {} never ran", f.name);
        let accepted = f.attempt_id.expect("checked: succeeded by an attempt");
        assert!(
            markers.iter().any(|m| m.fragment == f.name && m.attempt == accepted),
            "the accepted attempt {accepted} of {} never ran: {:?}",
            f.name,
            markers.iter().filter(|m| m.fragment == f.name).collect::<Vec<_>>()
        );
    }
    let duplicates = markers.len() - n;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut late = 0;
    for a in fragments.iter().flat_map(|f| &f.attempts) {
        *outcomes.entry(a.outcome.as_str()).or_default() += 1;
        late += usize::from(a.late_exit.is_some());
    }
    println!(
        "{test}: fragments={n} executions={} duplicates={duplicates} attempts={outcomes:?} late_completions={late}",
        markers.len()
    );
    for f in &fragments {
        for a in f.attempts.iter().filter(|a| a.outcome != "succeeded") {
            let ran = markers.iter().any(|m| m.attempt == a.id);
            println!(
                "  {} attempt {} on {}: {} ({}), late exit {:?}, {}",
                f.name,
                a.id,
                a.worker,
                a.outcome,
                a.note.as_deref().unwrap_or("-"),
                a.late_exit,
                if ran { "ran" } else { "never ran" }
            );
        }
    }
    (fragments, duplicates)
}

/// The attempt of `f` with id `id`.
fn attempt(f: &DbFragment, id: i64) -> &tests::DbAttempt {
    f.attempts
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("{f:?} has no attempt {id}"))
}

/// A worker host crashes (kinski and its programs killed with SIGKILL): herzog declares it
/// lost after about `worker_timeout` and its fragments finish on the other workers.
#[test]
fn a_killed_worker_is_lost_and_its_fragments_finish_elsewhere() {
    let _serial = serial();
    const N: usize = 48;
    let mut cluster = Cluster::start_with_config(Some(&fast()), &WORKERS);
    add_project(&cluster, "crash", N, "0.3");

    let victim = cluster.worker("noether").pid();
    let in_flight = wait_mid_project(&cluster, "crash", 12, victim);
    let killed_at = Instant::now();
    cluster.kill_worker("noether");

    let detected = eventually("noether to be lost", Duration::from_secs(15), || {
        (cluster.worker_state("noether").as_deref() == Some("lost")).then(|| killed_at.elapsed())
    });
    println!(
        "lost worker detected in {} ms (worker_timeout {TIMEOUT_MS} ms, heartbeat {HEARTBEAT_MS} ms)",
        detected.as_millis()
    );
    // The last heartbeat came at most one interval before the kill; the watchdog ticks every
    // quarter timeout; an hz call takes some ms.
    let low = Duration::from_millis(TIMEOUT_MS - HEARTBEAT_MS - 100);
    let high = Duration::from_millis(TIMEOUT_MS + TIMEOUT_MS / 4 + 1500);
    assert!(
        (low..=high).contains(&detected),
        "lost after {detected:?}, expected about {TIMEOUT_MS} ms"
    );

    let (fragments, _) = finish_and_check(&cluster, "worker killed", "crash", N);
    let by_name: BTreeMap<&str, &DbFragment> = fragments.iter().map(|f| (f.name.as_str(), f)).collect();
    for m in &in_flight {
        let f = by_name[m.fragment.as_str()];
        assert_eq!(
            attempt(f, m.attempt).outcome,
            "lost",
            "the killed worker's attempt: {f:?}"
        );
        let won = attempt(f, f.attempt_id.unwrap());
        assert_ne!(won.worker, "noether", "{f:?}");
    }
    let workers = cluster.try_workers().expect("herzog answers");
    let states: BTreeMap<&str, &str> = workers.iter().map(|w| (w.name.as_str(), w.state.as_str())).collect();
    assert_eq!(
        states,
        BTreeMap::from([("euclid", "connected"), ("gauss", "connected"), ("noether", "lost")])
    );
}

/// A kinski frozen (SIGSTOP) past its timeout is lost; its programs finish meanwhile. Thawed
/// (SIGCONT), it reports their completions, which herzog records as late and which change
/// nothing, and it comes back as connected.
#[test]
fn a_frozen_worker_comes_back_and_its_stale_results_change_nothing() {
    let _serial = serial();
    const N: usize = 48;
    let cluster = Cluster::start_with_config(Some(&fast()), &WORKERS);
    add_project(&cluster, "frozen", N, "0.3");

    let victim = cluster.worker("noether").pid();
    let in_flight = wait_mid_project(&cluster, "frozen", 12, victim);
    let stopped_at = Instant::now();
    let thaw = cluster.freeze("noether");

    let lost_after = eventually("the frozen noether to be lost", Duration::from_secs(15), || {
        (cluster.worker_state("noether").as_deref() == Some("lost")).then(|| stopped_at.elapsed())
    });
    // Its programs go on without it (their own process groups) and end: finished, unreaped.
    for m in &in_flight {
        eventually("the frozen worker's programs to end", Duration::from_secs(10), || {
            (!cluster.marker_running(m)).then_some(())
        });
    }
    // Past the timeout by a margin, then thaw.
    std::thread::sleep(Duration::from_millis(500));
    let frozen_for = stopped_at.elapsed();
    drop(thaw);
    let back = Instant::now();
    eventually("noether to be connected again", Duration::from_secs(20), || {
        (cluster.worker_state("noether").as_deref() == Some("connected")).then_some(())
    });
    println!(
        "frozen worker lost after {} ms, thawed after {} ms, connected again {} ms later",
        lost_after.as_millis(),
        frozen_for.as_millis(),
        back.elapsed().as_millis()
    );

    // The stale attempts' completions reach herzog as late ones.
    let stale: BTreeSet<i64> = in_flight.iter().map(|m| m.attempt).collect();
    eventually(
        "the stale completions to be recorded late",
        Duration::from_secs(10),
        || {
            let fragments = cluster.db_fragments("frozen");
            let attempts: Vec<_> = fragments
                .iter()
                .flat_map(|f| &f.attempts)
                .filter(|a| stale.contains(&a.id))
                .collect();
            (attempts.len() == stale.len() && attempts.iter().all(|a| a.late_exit.is_some())).then_some(())
        },
    );

    let (fragments, _) = finish_and_check(&cluster, "worker frozen", "frozen", N);
    for m in &in_flight {
        let f = fragments.iter().find(|f| f.name == m.fragment).unwrap();
        let a = attempt(f, m.attempt);
        assert!(
            a.outcome == "lost" || a.outcome == "stopped",
            "a stale attempt is {}: {f:?}",
            a.outcome
        );
        assert_ne!(f.attempt_id, Some(m.attempt), "a stale attempt was accepted: {f:?}");
    }
    assert_eq!(cluster.worker_state("noether").as_deref(), Some("connected"));
}

/// herzog killed (SIGKILL) mid-project and restarted on its database: what had succeeded
/// before the kill does not run again, and the project completes.
#[test]
fn a_killed_herzog_restarts_from_its_database_without_rerunning_successes() {
    let _serial = serial();
    const N: usize = 48;
    let mut cluster = Cluster::start_with_config(Some(PATIENT), &WORKERS);
    add_project(&cluster, "coord", N, "0.3");

    let victim = cluster.worker("euclid").pid();
    wait_mid_project(&cluster, "coord", 15, victim);
    cluster.kill_herzog();
    let killed_ns = now_ns();
    // What herzog had made durable when it died.
    let before: BTreeMap<String, i64> = cluster
        .db_fragments("coord")
        .into_iter()
        .filter(|f| f.state == "succeeded")
        .map(|f| (f.name, f.attempt_id.expect("succeeded by an attempt")))
        .collect();
    assert!(!before.is_empty(), "nothing had succeeded before the kill");

    let restarted = Instant::now();
    cluster.start_herzog();
    let restored = restored_line(&cluster);
    cluster.wait_workers_connected(Duration::from_secs(15));
    println!(
        "herzog killed with {} of {N} fragments succeeded; workers back {} ms after the restart; {restored}",
        before.len(),
        restarted.elapsed().as_millis()
    );

    let (fragments, _) = finish_and_check(&cluster, "herzog killed", "coord", N);
    let markers = cluster.markers();
    for (name, accepted) in &before {
        let again: Vec<&Marker> = markers
            .iter()
            .filter(|m| &m.fragment == name && m.start_ns > killed_ns)
            .collect();
        assert!(
            again.is_empty(),
            "{name} had succeeded before the kill and ran again: {again:?}"
        );
        let f = fragments.iter().find(|f| &f.name == name).unwrap();
        assert_eq!(f.attempt_id, Some(*accepted), "the accepted attempt changed: {f:?}");
    }
}

/// A kinski killed (SIGKILL; its programs survive it) and restarted on the same state
/// directory kills what its predecessor left running, and the project completes.
#[test]
fn a_restarted_kinski_kills_its_predecessors_programs() {
    let _serial = serial();
    const N: usize = 48;
    let mut cluster = Cluster::start_with_config(Some(&fast()), &WORKERS);
    add_project(&cluster, "phoenix", N, "0.5");

    let old = cluster.worker("gauss").pid();
    wait_mid_project(&cluster, "phoenix", 12, old);
    let pid = cluster.kill_kinski("gauss");
    assert_eq!(pid, old);
    let left: Vec<Marker> = cluster
        .markers()
        .into_iter()
        .filter(|m| m.ppid == old && cluster.marker_running(m))
        .collect();
    cluster.restart_worker("gauss");
    let recovered = cluster
        .worker("gauss")
        .log()
        .lines()
        .find(|l| l.contains("recovered the journal"))
        .map(str::to_string);
    println!(
        "kinski killed with {} programs still running; its successor logged: {}",
        left.len(),
        recovered.as_deref().unwrap_or("(no recovery line)")
    );
    // The successor killed them before it registered (or they had ended on their own).
    for m in &left {
        eventually("the dead kinski's programs to be gone", Duration::from_secs(5), || {
            (!cluster.marker_running(m)).then_some(())
        });
    }

    finish_and_check(&cluster, "kinski restarted", "phoenix", N);
    let markers = cluster.markers();
    let alive: Vec<&Marker> = markers.iter().filter(|m| cluster.marker_running(m)).collect();
    assert!(
        alive.is_empty(),
        "programs still run after the project ended: {alive:?}"
    );
    assert!(
        cluster.programs_running().is_empty(),
        "programs of this cluster still run: {:?}",
        cluster.programs_running()
    );
}

/// herzog killed while fragments of about a second run; they end while it is down, kinski
/// keeps their completions in its journal, and reports them when herzog is back: they are
/// accepted, not run again.
#[test]
fn completions_made_while_herzog_is_down_are_not_lost() {
    let _serial = serial();
    const N: usize = 40;
    let mut cluster = Cluster::start_with_config(Some(PATIENT), &WORKERS);
    add_project(&cluster, "downtime", N, "1");

    // The second wave has started on every slot.
    eventually("a full second wave", Duration::from_secs(30), || {
        let markers: Vec<Marker> = cluster
            .markers()
            .into_iter()
            .filter(|m| m.project == "downtime")
            .collect();
        (markers.len() >= 8 && running_markers(&cluster, "downtime").len() >= 4).then_some(())
    });
    cluster.kill_herzog();
    let down = Instant::now();
    let in_flight = running_markers(&cluster, "downtime");
    assert!(in_flight.len() >= 3, "too few programs ran at the kill: {in_flight:?}");
    for m in &in_flight {
        eventually(
            "the programs to end while herzog is down",
            Duration::from_secs(10),
            || (!cluster.marker_running(m)).then_some(()),
        );
    }
    // Each one's completion waits in its worker's journal.
    let workers: BTreeMap<u32, String> = cluster
        .worker_names()
        .into_iter()
        .map(|n| (cluster.worker(&n).pid(), n))
        .collect();
    eventually("the completions to be journaled", Duration::from_secs(5), || {
        in_flight
            .iter()
            .all(|m| journaled_done(&cluster.kinski_state(&workers[&m.ppid]), m.attempt))
            .then_some(())
    });
    let restarted_ms = now_ns() / 1_000_000;
    cluster.start_herzog();
    cluster.wait_workers_connected(Duration::from_secs(15));
    println!(
        "herzog down for {} ms while {} programs ended",
        down.elapsed().as_millis(),
        in_flight.len()
    );

    let (fragments, _) = finish_and_check(&cluster, "herzog down", "downtime", N);
    let markers = cluster.markers();
    for m in &in_flight {
        let runs: Vec<&Marker> = markers.iter().filter(|x| x.fragment == m.fragment).collect();
        assert_eq!(runs.len(), 1, "{} ran again: {runs:?}", m.fragment);
        let f = fragments.iter().find(|f| f.name == m.fragment).unwrap();
        assert_eq!(f.attempt_id, Some(m.attempt), "{f:?}");
        let a = attempt(f, m.attempt);
        assert!(
            a.ended_at.is_some_and(|t| t as u128 >= restarted_ms),
            "the completion was recorded before herzog came back: {a:?}"
        );
    }
}

/// herzog's "state restored" line (logged before it listens, so already read at its start).
fn restored_line(cluster: &Cluster) -> String {
    cluster
        .herzog_log()
        .lines()
        .find(|l| l.contains("state restored"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("herzog did not log \"state restored\":\n{}", cluster.herzog_log()))
}

/// Waits until every fragment of `project` is finished (succeeded or failed); returns progress.
fn wait_finished(cluster: &Cluster, project: &str, limit: Duration) -> ProjectProgress {
    eventually(&format!("{project} to finish"), limit, || {
        let p: Vec<ProjectProgress> = cluster.hz_json(&["progress", project]);
        p.into_iter().next().filter(ProjectProgress::is_finished)
    })
}

/// A worker frozen past its timeout comes back while the programs herzog has given up on
/// still hold its slots (they ignore SIGTERM, so stopping them takes the grace). The attempts
/// it reports and herzog no longer expects hold their slots until they are gone from its
/// heartbeats, so herzog sends it no start it would refuse; and a start refused anyway never
/// ran, so it is requeued without spending an attempt. With `--max-attempts 2`, no fragment
/// whose program never failed ends `failed`.
#[test]
fn a_thawed_worker_costs_no_fragment_an_attempt() {
    let _serial = serial();
    const N: usize = 12;
    let cluster = Cluster::start_with_config(Some(&fast()), &WORKERS);
    cluster.inputs("thaw", N);
    // The marker program, deaf to SIGTERM (an ignored signal stays ignored across exec).
    let marker = cluster.marker_program();
    let stubborn = cluster.dir().join("stubborn.sh");
    tests::write_script(&stubborn, &format!("#!/bin/sh\ntrap '' TERM\nexec {marker} \"$@\"\n"));
    // 12 fragments fill every slot and queue place (3 workers × (2 slots + 2 queued)).
    cluster.hz_ok(&[
        "action",
        "thaw",
        stubborn.to_str().unwrap(),
        "--env",
        "SLEEP=4",
        "--grace",
        "3s",
        "--max-attempts",
        "2",
    ]);
    let victim = cluster.worker("noether").pid();
    wait_mid_project(&cluster, "thaw", 6, victim);
    let thaw = cluster.freeze("noether");
    eventually("the frozen noether to be lost", Duration::from_secs(15), || {
        (cluster.worker_state("noether").as_deref() == Some("lost")).then_some(())
    });
    // Its four fragments wait: the other workers are full. Thawed, it gets them back.
    drop(thaw);
    let progress = wait_finished(&cluster, "thaw", Duration::from_secs(60));
    let wrong: Vec<DbFragment> = cluster
        .db_fragments("thaw")
        .into_iter()
        .filter(|f| f.state != "succeeded")
        .collect();
    assert!(
        progress.failed == 0 && wrong.is_empty(),
        "fragments failed though no program failed:\n{}",
        wrong.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join("\n")
    );
}

/// herzog killed and back after 6 s, with a short `worker_timeout` (1.5 s): the workers are
/// alive and redialling, at most a heartbeat interval apart once they have registered
/// (200 ms here), so every one is back well within the timeout: none is declared lost and
/// nothing runs again.
#[test]
fn a_restarted_herzog_waits_for_redialling_workers() {
    let _serial = serial();
    const N: usize = 6;
    let mut cluster = Cluster::start_with_config(Some(&fast()), &WORKERS);
    add_project(&cluster, "redial", N, "15");
    eventually("every fragment to run", Duration::from_secs(20), || {
        (running_markers(&cluster, "redial").len() == N).then_some(())
    });
    cluster.kill_herzog();
    std::thread::sleep(Duration::from_secs(6));
    let restarted = Instant::now();
    cluster.start_herzog();
    let mut lost = BTreeSet::new();
    while restarted.elapsed() < Duration::from_millis(3 * TIMEOUT_MS) {
        for w in cluster.try_workers().unwrap_or_default() {
            if w.state == "lost" {
                lost.insert(w.name);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("workers declared lost after herzog's restart: {lost:?}");
    assert!(
        lost.is_empty(),
        "herzog declared live workers lost after its restart: {lost:?}; its log:\n{}",
        cluster.herzog_log()
    );
    cluster.wait_workers_connected(Duration::from_secs(15));
    let (_, duplicates) = finish_and_check(&cluster, "herzog back late", "redial", N);
    assert_eq!(duplicates, 0, "fragments ran again");
}

/// True if a journal file in `dir` (`journal.<generation>.jsonl`) holds a completion for
/// `attempt`.
fn journaled_done(dir: &std::path::Path, attempt: i64) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal."))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| v["done"]["attempt"].as_i64() == Some(attempt))
        })
}

/// Measurement: how long herzog takes from its start to the first dispatch with 100,000
/// fragments in its database (a worker already dialling). Prints the time and herzog's own
/// "state restored" line.
#[test]
#[ignore = "measurement (about 15 s): see the command at the top of this file"]
fn recovery_time_with_100k_fragments() {
    let _serial = serial();
    const N: usize = 100_000;
    let mut cluster = Cluster::start_with_config(Some(PATIENT), &[]);
    let dir = cluster.dir().join("big");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..N {
        std::fs::File::create(dir.join(format!("f{i:06}"))).unwrap();
    }
    let added = Instant::now();
    cluster.hz_ok(&["action", "big", "true"]);
    println!("adding {N} fragments took {} ms", added.elapsed().as_millis());
    cluster.stop_herzog();

    // A worker dialling before herzog is back: its first failed attempt tells it has begun.
    cluster.add_worker_unregistered("euclid", 2);
    cluster
        .worker_mut("euclid")
        .wait_for("session with herzog ended", Duration::from_secs(10));
    let start = Instant::now();
    cluster.start_herzog();
    let listening = start.elapsed();
    let restored = restored_line(&cluster);
    let registered = {
        cluster
            .worker_mut("euclid")
            .wait_for("registered with herzog", Duration::from_secs(60));
        start.elapsed()
    };
    cluster
        .worker_mut("euclid")
        .wait_for("attempt started", Duration::from_secs(60));
    let first = start.elapsed();
    println!(
        "restart to first dispatch: {} ms with {N} fragments (listening after {} ms, worker registered after {} ms)",
        first.as_millis(),
        listening.as_millis(),
        registered.as_millis()
    );
    println!("herzog: {restored}");
    let db_first: i64 = cluster
        .db()
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert!(db_first >= 1, "no attempt recorded");
}
