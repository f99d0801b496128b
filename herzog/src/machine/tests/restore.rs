//! Restoring a machine from what the store holds, mid-run.

use super::*;

pub(super) fn fragment(id: i64, attempts: u32, state: FragmentState) -> Fragment {
    Fragment {
        id: FragmentId(id),
        attempts,
        failures: 0,
        state,
    }
}

/// A machine mid-run, as the store would hand it back: `a` succeeded by attempt 1, `b`
/// running as attempt 2 on w1 since 1000, `c` pending. Queue and counts are deliberately
/// wrong: restore rebuilds them.
pub(super) fn snapshot(policy: Option<Policy>) -> Snapshot {
    let mut project = Project::new(
        ProjectId(4),
        "p".into(),
        PathBuf::from("/data"),
        spec("wc -l", 2),
        PathBuf::from("/results/p"),
        0,
        Arc::new(["a", "b", "c"].into_iter().collect()),
        vec![
            fragment(10, 1, FragmentState::Succeeded { attempt: AttemptId(1) }),
            fragment(
                11,
                1,
                FragmentState::Running {
                    attempt: AttemptId(2),
                    worker: "w1".into(),
                    since: 1_000,
                },
            ),
            fragment(12, 0, FragmentState::Pending),
        ],
    );
    project.queue = VecDeque::from([0, 1, 2, 2]);
    project.counts = Counts {
        pending: 9,
        ..Counts::default()
    };
    project.recent_wall_ms = Some(123);
    Snapshot {
        projects: vec![project],
        workers: vec![StoredWorker {
            name: "w1".into(),
            resources: slots(2),
            last_seen: 900,
            drained: false,
            stopped: false,
        }],
        policy,
        max_project: 4,
        max_fragment: 12,
        max_attempt: 2,
        ..Snapshot::default()
    }
}

pub(super) const RESTART: Millis = 5_000;

#[test]
fn restore_rebuilds_a_machine_mid_run() {
    let mut m = Machine::restore(TIMING, root(), snapshot(None), at(RESTART));
    assert_eq!(m.live_count(), 1);
    assert_eq!(
        m.live.get(&AttemptId(2)),
        // Dispatched at 1000 by the record: that long before the restart.
        Some(&Live::new(ProjectId(4), 1, Mono(1_000)))
    );
    assert_eq!(counts(&m, "p"), (1, 1, 1, 0));
    assert_eq!(m.project("p").expect("p").queue, VecDeque::from([2]));
    assert_eq!(m.policy(), Policy::Fair);
    let w = &m.workers["w1"];
    assert_eq!(w.connection, ConnectionState::Disconnected { since: RESTART });
    assert_eq!(w.last_seen, 900, "shown as the record has it");
    assert_eq!(w.heard, Mono(RESTART), "a fresh timeout after the restart");
    assert_eq!(w.running, BTreeSet::from([AttemptId(2)]));
    assert_eq!(w.resources, slots(2));
    assert_eq!(m.workers()[0].state, "disconnected");
    assert_eq!(m.active(0, u32::MAX).items.len(), 1);
    // Disconnected: nothing goes to it, though it has a free slot.
    let (w, e) = sched(&mut m, RESTART);
    assert!(w.is_empty() && e.is_empty());
    // New ids continue after the stored ones.
    let out = ok(&mut m, RESTART, add_event("q", &["x"]));
    assert!(matches!(
        out.writes[..],
        [Write::AddProject {
            id: ProjectId(5),
            first_fragment: FragmentId(13),
            ..
        }]
    ));
    let out = step(&mut m, RESTART, complete_event("w1", 3, Exit::Code(0), RESTART));
    assert_eq!(out.reply, Err(Rejected::UnknownAttempt { attempt: AttemptId(3) }));
    let out = ok(&mut m, RESTART, complete_event("w1", 1, Exit::Code(0), RESTART));
    assert_only_late(&out.writes, AttemptId(1));
}

#[test]
fn restore_keeps_the_policy() {
    let m = Machine::restore(
        TIMING,
        root(),
        snapshot(Some(Policy::Priority { project: "p".into() })),
        at(RESTART),
    );
    assert_eq!(m.policy(), Policy::Priority { project: "p".into() });
}

#[test]
fn after_restore_a_worker_that_still_runs_its_attempt_keeps_it() {
    let mut m = Machine::restore(TIMING, root(), snapshot(None), at(RESTART));
    let out = ok(&mut m, RESTART + 100, register_event("w1", 2, &[2]));
    assert!(ended(&out.writes).is_empty());
    assert!(out.effects.is_empty());
    assert_eq!(
        state(&m, "p", "b"),
        FragmentState::Running {
            attempt: AttemptId(2),
            worker: "w1".into(),
            since: 1_000
        }
    );
    assert_eq!(m.workers["w1"].connection, ConnectionState::Connected);
    // Its other slot goes to c, with the next attempt id.
    let (_, e) = sched(&mut m, RESTART + 100);
    let s = starts(&e);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].0.as_str(), s[0].1.fragment.as_str(), s[0].1.attempt),
        ("w1", "c", AttemptId(3))
    );
    // And its completion counts.
    ok(
        &mut m,
        RESTART + 200,
        complete_event("w1", 2, Exit::Code(0), RESTART + 200),
    );
    assert_eq!(state(&m, "p", "b"), FragmentState::Succeeded { attempt: AttemptId(2) });
}

#[test]
fn after_restore_a_worker_without_its_attempt_gets_it_requeued() {
    let mut m = Machine::restore(TIMING, root(), snapshot(None), at(RESTART));
    // Started at 1000, well past the start grace by now.
    let out = ok(&mut m, RESTART + 100, register_event("w1", 2, &[]));
    assert_eq!(
        ended(&out.writes),
        [(AttemptId(2), AttemptEnd::Lost, Some("w1 no longer runs it".into()))]
    );
    assert_eq!(state(&m, "p", "b"), FragmentState::Pending);
    assert_eq!(fragment_of(&m, "p", "b").attempts, 1);
    assert_eq!(m.live_count(), 0);
    let (_, e) = sched(&mut m, RESTART + 100);
    let mut got: Vec<(String, AttemptId)> = starts(&e).into_iter().map(|(_, s)| (s.fragment, s.attempt)).collect();
    got.sort();
    assert_eq!(got, [("b".to_string(), AttemptId(4)), ("c".to_string(), AttemptId(3))]);
    // The old attempt's completion, should it come, is late.
    let out = ok(
        &mut m,
        RESTART + 200,
        complete_event("w1", 2, Exit::Code(0), RESTART + 200),
    );
    assert_only_late(&out.writes, AttemptId(2));
}

#[test]
fn after_restore_a_worker_that_never_returns_is_lost() {
    let mut m = Machine::restore(TIMING, root(), snapshot(None), at(RESTART));
    let out = ok(&mut m, RESTART + TIMEOUT - 1, Event::Tick);
    assert!(out.writes.is_empty());
    let out = ok(&mut m, RESTART + TIMEOUT, Event::Tick);
    assert_eq!(
        ended(&out.writes),
        [(AttemptId(2), AttemptEnd::Lost, Some("worker w1 lost".into()))]
    );
    assert_eq!(state(&m, "p", "b"), FragmentState::Pending);
    assert_eq!(
        m.workers["w1"].connection,
        ConnectionState::Lost {
            since: RESTART + TIMEOUT
        }
    );
}

#[test]
fn restore_creates_a_worker_only_a_running_fragment_names() {
    let mut snap = snapshot(None);
    snap.workers.clear();
    let mut m = Machine::restore(TIMING, root(), snap, at(RESTART));
    let w = &m.workers["w1"];
    assert_eq!(w.connection, ConnectionState::Disconnected { since: RESTART });
    assert_eq!(w.running, BTreeSet::from([AttemptId(2)]));
    ok(&mut m, RESTART + 1, register_event("w1", 1, &[2]));
    assert_eq!(m.live_count(), 1);
}

#[test]
fn after_a_restart_a_staged_host_shows_staging_and_its_recorded_last_contact() {
    let mut snap = snapshot(None);
    snap.workers[0].resources.scratch_dir = Some(PathBuf::from("/scratch"));
    snap.workers.push(StoredWorker {
        name: "gone".into(),
        resources: slots(1),
        last_seen: 100,
        drained: true,
        stopped: false,
    });
    let m = Machine::restore(TIMING, root(), snap, at(100 + TIMEOUT)).with_staged_hosts(|w| w == "w1");
    let workers = m.workers();
    let (gone, w1) = (&workers[0], &workers[1]);
    assert_eq!(w1.staging, "ssh checking", "{w1:?}");
    assert_eq!(w1.last_seen, 900);
    // Silent past the timeout before the restart, with nothing on it: lost then, quietly.
    assert_eq!((gone.state.as_str(), gone.last_seen, gone.drained), ("lost", 100, true));
}
