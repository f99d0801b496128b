//! Control of running work through the real `hz`: running apart from queued, pause and resume,
//! cancel, a project's limit, dependencies, draining and forgetting workers, and a project
//! whose fragments fail ending as failed.

use common::wire::{ActiveAttempt, ProjectProgress, WorkerInfo};
use std::time::Duration;
use tests::{Cluster, HZ_LIMIT, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn progress(cluster: &Cluster, project: &str) -> ProjectProgress {
    let mut all: Vec<ProjectProgress> = cluster.hz_json(&["progress", project]);
    all.remove(0)
}

fn worker(cluster: &Cluster, name: &str) -> WorkerInfo {
    let all: Vec<WorkerInfo> = cluster.hz_json(&["workers"]);
    all.into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no worker {name}"))
}

/// A project of `n` marker fragments that each sleep `sleep` seconds.
fn sleepers(cluster: &Cluster, name: &str, n: usize, sleep: &str, extra: &[&str]) {
    let dir = cluster.inputs(name, n);
    let program = cluster.marker_program();
    let env = format!("SLEEP={sleep}");
    let mut args = vec!["action", dir.to_str().unwrap(), &program, "--name", name, "--env", &env];
    args.extend_from_slice(extra);
    cluster.hz_ok(&args);
}

#[test]
fn running_is_what_runs_and_queued_starts_are_shown_apart() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    sleepers(&cluster, "p", 3, "30", &[]);
    // One slot: one program runs, a start waits on the worker, one fragment is pending.
    let p = eventually("one running, one queued", WAIT, || {
        let p = progress(&cluster, "p");
        (p.running == 1 && p.queued == 1).then_some(p)
    });
    assert_eq!(p.pending, 1, "{p:?}");
    let w = worker(&cluster, "euclid");
    assert_eq!((w.running, w.queued), (1, 1), "{w:?}");
    let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
    assert_eq!(active.len(), 2, "{active:?}");
    assert_eq!(active.iter().filter(|a| a.started.is_some()).count(), 1, "{active:?}");
    let table = cluster.hz_ok(&["active"]);
    assert!(table.contains("running") && table.contains("queued"), "{table}");
    let table = cluster.hz_ok(&["progress"]);
    assert!(table.contains("QUEUED"), "{table}");
    // The filters.
    let none: Vec<ActiveAttempt> = cluster.hz_json(&["active", "--worker", "newton"]);
    assert!(none.is_empty(), "{none:?}");
    let mine: Vec<ActiveAttempt> = cluster.hz_json(&["active", "--project", "p"]);
    assert_eq!(mine.len(), 2);
}

#[test]
fn pause_takes_back_queued_starts_and_resume_carries_on() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    sleepers(&cluster, "p", 3, "2", &[]);
    eventually("one running, one queued", WAIT, || {
        let p = progress(&cluster, "p");
        (p.running == 1 && p.queued == 1).then_some(())
    });
    let said = String::from_utf8(cluster.hz(&["pause", "p"]).stderr).unwrap();
    assert!(
        said.contains("paused p") && said.contains("1 queued start taken back"),
        "{said}"
    );
    // The queued start came back at once; the running one finishes; nothing new starts.
    let p = progress(&cluster, "p");
    assert!(p.paused, "{p:?}");
    let p = eventually("the running attempt finishes", WAIT, || {
        let p = progress(&cluster, "p");
        (p.succeeded == 1 && p.running == 0 && p.queued == 0).then_some(p)
    });
    assert_eq!(p.pending, 2, "{p:?}");
    assert!(p.held.as_deref().is_some_and(|h| h.contains("paused")), "{p:?}");
    assert!(cluster.hz_ok(&["list"]).contains("paused"));
    // The fragment taken back cost no attempt: every fragment runs exactly once.
    cluster.hz_ok(&["resume", "p"]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
    let markers = cluster.markers();
    assert_eq!(markers.len(), 3, "{markers:?}");
    assert!(markers.iter().all(|m| m.attempt >= 1));
    let fragments: Vec<common::wire::FragmentInfo> = cluster.hz_json(&["fragments", "p"]);
    assert!(fragments.iter().all(|f| f.attempts == 1), "{fragments:?}");
}

#[test]
fn cancel_stops_a_running_fragment_and_drops_a_pending_one() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    sleepers(&cluster, "p", 3, "60", &[]);
    eventually("f0000 runs", WAIT, || {
        let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
        active
            .iter()
            .any(|a| a.fragment == "f0000" && a.started.is_some())
            .then_some(())
    });
    let said = String::from_utf8(cluster.hz(&["cancel", "p", "f0000", "2"]).stderr).unwrap();
    assert!(said.contains("cancelled 2 fragments of p"), "{said}");
    let fragments: Vec<common::wire::FragmentInfo> = cluster.hz_json(&["fragments", "p", "--state", "failed"]);
    let names: Vec<&str> = fragments.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["f0000", "f0002"]);
    assert!(
        fragments.iter().all(|f| f.reason.as_deref() == Some("cancelled")),
        "{fragments:?}"
    );
    // Its program was stopped (the marker recorded its pid): its process group is gone.
    let pid = cluster
        .markers()
        .into_iter()
        .find(|m| m.fragment == "f0000")
        .expect("f0000 ran")
        .pid;
    eventually("the cancelled program is stopped", WAIT, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .is_err()
            .then_some(())
    });
    // The one left runs; the project ends failed, saying why.
    eventually("f0001 runs", WAIT, || {
        (progress(&cluster, "p").running == 1).then_some(())
    });
    cluster.hz_ok(&["cancel", "p", "f0001"]);
    let out = cluster.hz(&["progress", "p", "--watch"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p: 3 failed: cancelled (3)"), "{text}");
    let unknown = cluster.hz_fails(&["cancel", "p", "nope"], 2);
    assert!(unknown.contains("nope"), "{unknown}");
}

#[test]
fn a_limit_caps_the_attempts_of_a_project_and_can_be_raised() {
    let cluster = Cluster::start(&[("euclid", 4)]);
    sleepers(&cluster, "p", 6, "30", &["--max-running", "1"]);
    eventually("one running", WAIT, || {
        (progress(&cluster, "p").running == 1).then_some(())
    });
    let p = progress(&cluster, "p");
    assert_eq!((p.running, p.queued, p.pending), (1, 0, 5), "{p:?}");
    assert_eq!(p.max_running, Some(1));
    cluster.hz_ok(&["limit", "p", "3"]);
    eventually("three running", WAIT, || {
        (progress(&cluster, "p").running == 3).then_some(())
    });
    let p = progress(&cluster, "p");
    assert_eq!(p.running + p.queued, 3, "{p:?}");
    cluster.hz_fails(&["limit", "p", "0"], 2);
    cluster.hz_ok(&["limit", "p", "none"]);
    eventually("every slot used", WAIT, || {
        (progress(&cluster, "p").running == 4).then_some(())
    });
}

#[test]
fn a_project_after_another_starts_once_it_succeeded_and_is_blocked_if_it_failed() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    sleepers(&cluster, "first", 2, "1", &[]);
    let then = cluster.inputs("then", 2);
    cluster.hz_ok(&[
        "action",
        then.to_str().unwrap(),
        "true",
        "--name",
        "then",
        "--after",
        "first",
    ]);
    let p = progress(&cluster, "then");
    assert_eq!((p.running, p.queued, p.succeeded), (0, 0, 0));
    assert!(
        p.held.as_deref().is_some_and(|h| h.contains("waits for first")),
        "{p:?}"
    );
    cluster.hz_ok(&["progress", "then", "--watch"]);
    assert_eq!(progress(&cluster, "then").succeeded, 2);

    let bad = cluster.inputs("bad", 1);
    cluster.hz_ok(&["action", bad.to_str().unwrap(), "false", "--name", "bad"]);
    let next = cluster.inputs("next", 1);
    cluster.hz_ok(&[
        "action",
        next.to_str().unwrap(),
        "true",
        "--name",
        "next",
        "--after",
        "bad",
    ]);
    let p = eventually("next is blocked", WAIT, || {
        let p = progress(&cluster, "next");
        p.held
            .as_deref()
            .is_some_and(|h| h.contains("blocked: bad failed"))
            .then_some(p)
    });
    assert_eq!(p.succeeded, 0);
    let unknown = cluster.hz_fails(
        &[
            "action",
            next.to_str().unwrap(),
            "true",
            "--name",
            "n2",
            "--after",
            "nope",
        ],
        2,
    );
    assert!(unknown.contains("nope"), "{unknown}");
}

#[test]
fn a_drained_worker_takes_nothing_new_and_a_stopped_one_can_be_forgotten() {
    let mut cluster = Cluster::start(&[("euclid", 1), ("newton", 1)]);
    cluster.hz_ok(&["drain", "newton"]);
    assert!(worker(&cluster, "newton").drained);
    assert!(cluster.hz_ok(&["workers"]).contains("connected drained"));
    sleepers(&cluster, "p", 3, "0", &[]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
    assert!(
        cluster
            .markers()
            .iter()
            .all(|m| cluster.worker_by_pid(m.ppid) == Some("euclid")),
        "nothing ran on the drained worker"
    );
    cluster.hz_ok(&["undrain", "newton"]);
    assert!(!worker(&cluster, "newton").drained);

    // A clean stop shows as such, not as a loss; a connected worker cannot be forgotten.
    cluster.hz_fails(&["forget", "euclid"], 2);
    cluster.stop_worker("newton");
    let w = worker(&cluster, "newton");
    assert_eq!(w.state, "stopped", "{w:?}");
    // After a restart herzog still knows: stopped, last seen when it said goodbye.
    cluster.restart_herzog();
    let again = worker(&cluster, "newton");
    assert_eq!(
        (again.state.as_str(), again.last_seen),
        ("stopped", w.last_seen),
        "{again:?}"
    );
    assert!(cluster.hz_ok(&["workers"]).contains("ago"));
    assert!(
        !cluster.herzog_log().contains("worker lost"),
        "{}",
        cluster.herzog_log()
    );
    cluster.hz_ok(&["forget", "newton"]);
    let all: Vec<WorkerInfo> = cluster.hz_json(&["workers"]);
    assert_eq!(all.len(), 1, "{all:?}");
}

#[test]
fn a_project_with_failures_ends_failed_and_says_why() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    let dir = cluster.inputs("p", 4);
    // Two of four fail.
    let script = cluster.dir().join("half.sh");
    tests::write_script(&script, "#!/bin/sh\ncase \"$1\" in *f0000|*f0001) exit 3;; esac\n");
    cluster.hz_ok(&["action", dir.to_str().unwrap(), script.to_str().unwrap(), "--name", "p"]);
    let out = cluster.hz(&["progress", "p", "--watch"]);
    assert_eq!(out.status.code(), Some(1), "a project with failures fails the watch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("50.0%"), "percent means succeeded: {text}");
    assert!(text.contains("p: 2 failed: exited with 3 (2)"), "{text}");
    let p = progress(&cluster, "p");
    assert_eq!(p.percent, 50.0);
    assert_eq!(p.failures.len(), 1, "{p:?}");
    assert!(cluster.hz_ok(&["list"]).contains("failed"));
    // herzog logs each failure with its project, fragment and reason.
    let log = cluster.herzog_log();
    assert!(
        log.lines()
            .any(|l| l.contains("fragment failed") && l.contains("project=p") && l.contains("f0001")),
        "{log}"
    );
}

#[test]
fn a_watch_on_a_project_removed_meanwhile_ends_with_its_own_code() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    sleepers(&cluster, "p", 2, "60", &[]);
    let mut watch = cluster.hz_spawn(&["progress", "p", "--watch"]);
    eventually("p runs", WAIT, || (progress(&cluster, "p").running == 1).then_some(()));
    cluster.hz_ok(&["remove", "p"]);
    let status = watch.wait_exit(HZ_LIMIT);
    assert_eq!(status.code(), Some(6), "{}", watch.stderr());
    assert!(watch.stderr().contains("removed while watched"), "{}", watch.stderr());
}

#[test]
fn a_second_kinski_with_a_name_in_use_is_refused_and_the_first_keeps_working() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let mut second = cluster.spawn_extra_kinski("euclid", "kinski-euclid-2");
    let status = second.wait_exit(Duration::from_secs(20), "the second kinski");
    assert_eq!(status.code(), Some(2), "{}", second.log());
    let log = second.log();
    assert!(
        log.contains("another kinski named 'euclid' is connected from") && log.contains("--name"),
        "{log}"
    );
    let w = worker(&cluster, "euclid");
    assert_eq!(w.state, "connected");
    sleepers(&cluster, "p", 2, "0", &[]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
}

#[test]
fn herzog_with_a_relative_state_dir_runs_the_project() {
    let cluster = Cluster::start_relative(&[("euclid", 2)]);
    let dir = cluster.inputs("p", 5);
    cluster.hz_ok(&["action", dir.to_str().unwrap(), "true", "--name", "p"]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
    let p = progress(&cluster, "p");
    assert_eq!(p.succeeded, 5, "{p:?}");
    assert!(p.results_dir.is_absolute(), "{p:?}");
    assert!(!cluster.herzog_log().contains("refused the start"));
}

#[test]
fn a_program_gets_hangups_at_their_default_action_though_kinski_ignores_them() {
    let mut cluster = Cluster::start(&[]);
    cluster.add_worker_ignoring_hangups("euclid", 1);
    let dir = cluster.inputs("p", 1);
    // The signals the program ignores, as a hexadecimal mask (bit 0: SIGHUP).
    cluster.hz_ok(&[
        "action",
        dir.to_str().unwrap(),
        "sh -c 'grep SigIgn /proc/$$/status' {}",
        "--name",
        "p",
    ]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
    let logs = cluster.hz_ok(&["logs", "p", "f0000", "--stdout"]);
    let mask = logs
        .split_whitespace()
        .nth(1)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn line: {logs}"));
    assert_eq!(
        mask & 1,
        0,
        "the program ignores SIGHUP (mask {mask:x}): `hz remove` could not stop a shell by it"
    );
}
