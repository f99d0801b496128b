//! Unit tests of the state machine: no runtime, no IO but the property test's in-memory store,
//! time as plain numbers (both clocks agree unless a test makes them differ).
//!
//! Every step goes through [`step`] or [`sched`], which also check the bookkeeping that must
//! hold after any call: a rejected event changes nothing and queues nothing, and every fragment
//! whose state changed got exactly one `Write::Fragment` carrying its new state.

use super::*;
use common::wire::{Completion, Exit, Policy, ProjectAdded, Resources, RunSpec, StartAttempt};
use common::{ApiError, AttemptId, FragmentId, Millis, ProjectId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

const TIMEOUT: i64 = 10_000;
const GRACE: i64 = 2_000;
const TIMING: Timing = Timing {
    worker_timeout_ms: TIMEOUT,
    start_grace_ms: GRACE,
    probe_retry_ms: TIMEOUT,
};

fn root() -> PathBuf {
    PathBuf::from("/results")
}

fn machine() -> Machine {
    Machine::new(TIMING, root())
}

fn spec(program: &str, max_attempts: u32) -> RunSpec {
    RunSpec {
        max_attempts,
        ..RunSpec::new(program)
    }
}

/// A worker of `n` slots, with a CPU for each and memory to spare.
fn slots(n: u32) -> Resources {
    Resources {
        slots: n,
        cpus: n,
        memory_bytes: 64 << 30,
        ..Resources::default()
    }
}

fn add_event(name: &str, files: &[&str]) -> Event {
    add_event_with(name, files, spec("wc -l", 2))
}

fn add_event_with(name: &str, files: &[&str], spec: RunSpec) -> Event {
    Event::AddProject(Box::new(NewProjectEvent {
        name: name.to_string(),
        dir: PathBuf::from("/data"),
        spec,
        files: files.iter().map(|f| f.to_string()).collect(),
        after: Vec::new(),
        max_running: None,
        share: 1,
    }))
}

fn register_event(worker: &str, n: u32, running: &[i64]) -> Event {
    Event::Register {
        worker: worker.to_string(),
        resources: slots(n),
        running: ids(running),
        staged: false,
    }
}

fn heartbeat_event(worker: &str, running: &[i64]) -> Event {
    Event::Heartbeat {
        worker: worker.to_string(),
        running: ids(running),
    }
}

/// A completion event (the machine's other test modules use it too).
pub(super) fn complete_event(worker: &str, attempt: i64, exit: Exit, now: Millis) -> Event {
    Event::Complete {
        worker: worker.to_string(),
        completion: completion(attempt, exit, now),
        staging_error: None,
    }
}

fn completion(attempt: i64, exit: Exit, now: Millis) -> Completion {
    Completion {
        limit: None,
        peak_memory_bytes: None,
        attempt: AttemptId(attempt),
        exit,
        wall_ms: 5,
        cpu_ms: 3,
        peak_rss_kb: 1024,
        finished_at: now,
    }
}

fn ids(v: &[i64]) -> Vec<AttemptId> {
    v.iter().copied().map(AttemptId).collect()
}

/// The whole state, in a deterministic rendering, to show that something changed nothing.
fn digest(m: &Machine) -> String {
    let live: BTreeMap<_, _> = m.live.iter().collect();
    let by_name: BTreeMap<_, _> = m.by_name.iter().collect();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{}|{}",
        m.projects,
        by_name,
        m.workers,
        live,
        m.policy,
        m.next_project,
        m.next_fragment,
        m.next_attempt,
        m.writes.len(),
        m.effects.len()
    )
}

fn fragment_states(m: &Machine) -> BTreeMap<FragmentId, (u32, FragmentState)> {
    m.projects
        .values()
        .flat_map(|p| p.fragments.iter().map(|f| (f.id, (f.attempts, f.state.clone()))))
        .collect()
}

/// Every fragment whose state changed has exactly one `Write::Fragment` with its new state
/// (and attempt count), the change is a legal one, and no other fragment is written.
fn assert_fragment_writes(
    before: &BTreeMap<FragmentId, (u32, FragmentState)>,
    after: &BTreeMap<FragmentId, (u32, FragmentState)>,
    writes: &[Write],
) {
    let mut written: BTreeMap<FragmentId, usize> = BTreeMap::new();
    for w in writes {
        if let Write::Fragment {
            id, attempts, state, ..
        } = w
        {
            *written.entry(*id).or_default() += 1;
            let now = after
                .get(id)
                .unwrap_or_else(|| panic!("write for fragment {id}, which does not exist: {w:?}"));
            assert_eq!(
                (attempts, state),
                (&now.0, &now.1),
                "fragment {id} written with a state it does not have"
            );
        }
    }
    for (id, (_, state)) in after {
        let Some((_, old)) = before.get(id) else { continue };
        if old != state {
            assert!(old.may_become(state), "fragment {id}: illegal {old:?} -> {state:?}");
            assert_eq!(
                written.get(id),
                Some(&1),
                "fragment {id} changed {old:?} -> {state:?}: one write expected"
            );
        } else {
            assert_eq!(written.get(id), None, "fragment {id} did not change but was written");
        }
    }
    for (id, n) in &written {
        assert_eq!(*n, 1, "fragment {id} written {n} times");
        assert!(
            before.contains_key(id),
            "fragment {id} is new: AddProject writes it, not Write::Fragment"
        );
    }
}

/// A moment when neither clock has jumped: wall and monotonic readings agree.
fn at(t: Millis) -> Now {
    Now { wall: t, mono: Mono(t) }
}

struct Out {
    reply: Result<Reply, Rejected>,
    writes: Vec<Write>,
    effects: Vec<Effect>,
}

/// Applies one event and drains what it queued, checking the universal rules.
fn step(m: &mut Machine, now: Millis, event: Event) -> Out {
    step_at(m, at(now), event)
}

/// [`step`] at a moment when the clocks may disagree.
fn step_at(m: &mut Machine, now: Now, event: Event) -> Out {
    let (w, e) = m.take();
    assert!(w.is_empty() && e.is_empty(), "a test left writes or effects behind");
    let before_digest = digest(m);
    let before_progress = m.progress(None).expect("all projects");
    let before = fragment_states(m);
    let reply = m.handle(now, event);
    let (writes, effects) = m.take();
    if reply.is_err() {
        assert!(writes.is_empty(), "a rejected event queued writes: {writes:?}");
        assert!(effects.is_empty(), "a rejected event queued effects: {effects:?}");
        assert_eq!(digest(m), before_digest, "a rejected event changed the state");
        assert_eq!(m.progress(None).expect("all projects"), before_progress);
    }
    assert_fragment_writes(&before, &fragment_states(m), &writes);
    Out { reply, writes, effects }
}

fn ok(m: &mut Machine, now: Millis, event: Event) -> Out {
    let label = format!("{event:?}");
    let out = step(m, now, event);
    if let Err(e) = &out.reply {
        panic!("{label} was rejected: {e}");
    }
    out
}

fn sched(m: &mut Machine, now: Millis) -> (Vec<Write>, Vec<Effect>) {
    sched_at(m, at(now))
}

/// [`sched`] at a moment when the clocks may disagree.
fn sched_at(m: &mut Machine, now: Now) -> (Vec<Write>, Vec<Effect>) {
    let (w, e) = m.take();
    assert!(w.is_empty() && e.is_empty(), "a test left writes or effects behind");
    let before = fragment_states(m);
    m.schedule(now);
    let (writes, effects) = m.take();
    assert_fragment_writes(&before, &fragment_states(m), &writes);
    (writes, effects)
}

fn starts(effects: &[Effect]) -> Vec<(String, StartAttempt)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start { worker, start, .. } => Some((worker.clone(), (**start).clone())),
            Effect::Stop { .. }
            | Effect::Unqueue { .. }
            | Effect::Probe { .. }
            | Effect::Instance(_)
            | Effect::StageInstance { .. }
            | Effect::Alerts => None,
        })
        .collect()
}

fn state(m: &Machine, project: &str, fragment: &str) -> FragmentState {
    fragment_of(m, project, fragment).state.clone()
}

fn fragment_of<'m>(m: &'m Machine, project: &str, fragment: &str) -> &'m Fragment {
    let p = m.project(project).unwrap_or_else(|| panic!("no project {project}"));
    let i = p
        .names
        .position(fragment)
        .unwrap_or_else(|| panic!("no fragment {fragment}"));
    &p.fragments[i]
}

fn counts(m: &Machine, project: &str) -> (u64, u64, u64, u64) {
    // Dispatched: running, or queued on the worker (no start notices in these tests).
    let p = &m.progress(Some(project)).expect("project exists")[0];
    (p.pending, p.running + p.queued, p.succeeded, p.failed)
}

fn ended(writes: &[Write]) -> Vec<(AttemptId, AttemptEnd, Option<String>)> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::AttemptEnded { id, end, note, .. } => Some((*id, *end, note.clone())),
            _ => None,
        })
        .collect()
}

/// The batch only recorded a late completion for `attempt`, from the worker that reported it.
fn assert_only_late(writes: &[Write], attempt: AttemptId) {
    assert_eq!(ended(writes), []);
    let late: Vec<AttemptId> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Late { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(late, [attempt]);
}

fn kind(s: &FragmentState) -> &'static str {
    match s {
        FragmentState::Pending => "pending",
        FragmentState::Running { .. } => "running",
        FragmentState::Succeeded { .. } => "succeeded",
        FragmentState::Failed { .. } => "failed",
    }
}

// ----- 1. every legal transition, through events -----

#[test]
fn every_legal_transition_happens_through_events() {
    let mut m = machine();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut track = |m: &mut Machine, now: Millis, ev: Option<Event>| -> Out {
        let before = fragment_states(m);
        let out = match ev {
            Some(ev) => ok(m, now, ev),
            None => {
                let (writes, effects) = sched(m, now);
                Out {
                    reply: Ok(Reply::Done),
                    writes,
                    effects,
                }
            }
        };
        for (id, (_, s)) in fragment_states(m) {
            if let Some((_, old)) = before.get(&id)
                && *old != s
            {
                seen.insert((kind(old), kind(&s)));
            }
        }
        out
    };

    let out = track(&mut m, 0, Some(add_event("p", &["a", "b", "c"])));
    assert_eq!(
        out.reply,
        Ok(Reply::Added(ProjectAdded {
            id: ProjectId(1),
            name: "p".into(),
            fragments: 3,
            results_dir: PathBuf::from("/results/p")
        }))
    );
    assert_eq!(counts(&m, "p"), (3, 0, 0, 0));
    track(&mut m, 0, Some(register_event("w1", 2, &[])));

    // Pending -> Running: two slots, two starts, argv expanded from the template.
    let out = track(&mut m, 100, None);
    let s = starts(&out.effects);
    assert_eq!(s.len(), 2, "{:?}", out.effects);
    assert_eq!(
        s[0],
        (
            "w1".to_string(),
            StartAttempt {
                requests: Default::default(),
                attempt: AttemptId(1),
                project: "p".into(),
                fragment: "a".into(),
                input: PathBuf::from("/data/a"),
                argv: vec!["wc".into(), "-l".into(), "/data/a".into()],
                cwd: PathBuf::from("/data"),
                env: BTreeMap::new(),
                stdout: PathBuf::from("/results/p/logs/a.1.stdout"),
                stderr: PathBuf::from("/results/p/logs/a.1.stderr"),
                output_dir: PathBuf::from("/results/p/output"),
                grace_ms: 10_000,
                scratch: None,
                max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
                uploader_uid: None,
                settings: Default::default(),
                interactive: None,
            }
        )
    );
    assert_eq!(s[1].0, "w1");
    assert_eq!(s[1].1.attempt, AttemptId(2));
    assert_eq!(s[1].1.argv, ["wc", "-l", "/data/b"]);
    assert_eq!(s[1].1.stdout, PathBuf::from("/results/p/logs/b.2.stdout"));
    assert!(out.writes.contains(&Write::AttemptStarted {
        id: AttemptId(1),
        fragment: FragmentId(1),
        worker: "w1".into(),
        at: 100
    }));
    assert_eq!(
        state(&m, "p", "a"),
        FragmentState::Running {
            attempt: AttemptId(1),
            worker: "w1".into(),
            since: 100
        }
    );
    assert_eq!(fragment_of(&m, "p", "a").attempts, 1);
    assert_eq!(counts(&m, "p"), (1, 2, 0, 0));
    assert_eq!(m.live_count(), 2);

    // Running -> Succeeded.
    let out = track(&mut m, 200, Some(complete_event("w1", 1, Exit::Code(0), 200)));
    assert_eq!(out.reply, Ok(Reply::Done));
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(1) });
    assert_eq!(ended(&out.writes), [(AttemptId(1), AttemptEnd::Succeeded, None)]);
    match &out.writes[0] {
        Write::AttemptEnded {
            completion: Some(c),
            at: 200,
            ..
        } => assert_eq!(c.exit, Exit::Code(0)),
        w => panic!("expected the completion to be recorded first, got {w:?}"),
    }

    // Running -> Failed.
    track(&mut m, 300, Some(complete_event("w1", 2, Exit::Code(1), 300)));
    assert_eq!(
        state(&m, "p", "b"),
        FragmentState::Failed {
            attempt: Some(AttemptId(2)),
            reason: "exited with 1".into()
        }
    );
    assert_eq!(counts(&m, "p"), (1, 0, 1, 1));
    assert_eq!(m.live_count(), 0);

    // c starts, then its worker goes silent.
    let out = track(&mut m, 300, None);
    assert_eq!(starts(&out.effects).len(), 1);
    assert_eq!(starts(&out.effects)[0].1.attempt, AttemptId(3));
    track(&mut m, 400, Some(Event::Disconnected { worker: "w1".into() }));
    assert_eq!(m.workers["w1"].link, Link::Disconnected { since: 400 });
    // Not yet: last seen at 300 (its completion).
    let out = track(&mut m, 300 + TIMEOUT - 1, Some(Event::Tick));
    assert!(out.writes.is_empty());
    assert!(matches!(state(&m, "p", "c"), FragmentState::Running { .. }));

    // Running -> Pending: the worker is lost, the attempt count is kept.
    let out = track(&mut m, 300 + TIMEOUT, Some(Event::Tick));
    assert_eq!(state(&m, "p", "c"), FragmentState::Pending);
    assert_eq!(fragment_of(&m, "p", "c").attempts, 1);
    assert_eq!(
        ended(&out.writes),
        [(AttemptId(3), AttemptEnd::Lost, Some("worker w1 lost".into()))]
    );
    assert_eq!(m.workers["w1"].link, Link::Lost { since: 300 + TIMEOUT });
    assert!(m.workers["w1"].running.is_empty());
    // A lost worker gets nothing.
    let (w, e) = sched(&mut m, 300 + TIMEOUT);
    assert!(w.is_empty() && e.is_empty());

    // It comes back, gets c again, and is lost again: max_attempts = 2 losses -> Failed.
    let t = 20_000;
    let out = track(&mut m, t, Some(register_event("w1", 2, &[])));
    assert_eq!(out.reply, Ok(Reply::Registered));
    assert_eq!(
        out.writes,
        [Write::Worker {
            name: "w1".into(),
            resources: slots(2),
            seen: t
        }]
    );
    let out = track(&mut m, t, None);
    assert_eq!(starts(&out.effects)[0].1.attempt, AttemptId(4));
    assert_eq!(fragment_of(&m, "p", "c").attempts, 2);
    track(&mut m, t + 1, Some(Event::Disconnected { worker: "w1".into() }));
    track(&mut m, t + TIMEOUT, Some(Event::Tick));
    match state(&m, "p", "c") {
        FragmentState::Failed {
            attempt: Some(AttemptId(4)),
            reason,
        } => {
            assert!(reason.contains("lost"), "{reason}");
            assert!(reason.contains('2'), "{reason}");
        }
        s => panic!("expected failed after two losses, got {s:?}"),
    }
    assert_eq!(counts(&m, "p"), (0, 0, 1, 2));

    // Failed -> Pending.
    let out = track(&mut m, t + TIMEOUT + 1, Some(Event::Retry { name: "p".into() }));
    assert_eq!(out.reply, Ok(Reply::Retried(2)));
    assert_eq!(state(&m, "p", "b"), FragmentState::Pending);
    assert_eq!(state(&m, "p", "c"), FragmentState::Pending);
    // A retry grants a fresh set of attempts.
    assert_eq!(fragment_of(&m, "p", "c").attempts, 0);
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(1) });
    assert_eq!(counts(&m, "p"), (2, 0, 1, 0));
    // Retrying again finds nothing to do.
    let out = track(&mut m, t + TIMEOUT + 2, Some(Event::Retry { name: "p".into() }));
    assert_eq!(out.reply, Ok(Reply::Retried(0)));
    assert!(out.writes.is_empty());

    // Pending -> Failed: `hz cancel` of a fragment that never ran.
    let cancel = Event::Control(Control::Cancel {
        project: "p".into(),
        fragments: vec!["b".into()],
    });
    let out = track(&mut m, t + TIMEOUT + 3, Some(cancel));
    assert!(matches!(out.reply, Ok(Reply::Controlled(_))), "{:?}", out.reply);
    assert_eq!(
        state(&m, "p", "b"),
        FragmentState::Failed {
            attempt: None,
            reason: "cancelled".into()
        }
    );
    assert_eq!(counts(&m, "p"), (1, 0, 1, 1));

    let legal: BTreeSet<(&str, &str)> = [
        ("pending", "running"),
        ("pending", "failed"),
        ("running", "succeeded"),
        ("running", "pending"),
        ("running", "failed"),
        ("failed", "pending"),
    ]
    .into();
    assert_eq!(seen, legal);
}

#[test]
fn failure_reasons_and_success_codes() {
    let mut m = machine();
    let spec = RunSpec {
        success_codes: vec![0, 3],
        ..spec("wc -l", 2)
    };
    ok(&mut m, 0, add_event_with("p", &["a", "b", "c", "d"], spec));
    ok(&mut m, 0, register_event("w1", 4, &[]));
    assert_eq!(starts(&sched(&mut m, 0).1).len(), 4);
    ok(&mut m, 1, complete_event("w1", 1, Exit::Code(3), 1));
    ok(&mut m, 1, complete_event("w1", 2, Exit::Code(0), 1));
    ok(&mut m, 1, complete_event("w1", 3, Exit::Signal(9), 1));
    ok(
        &mut m,
        1,
        complete_event("w1", 4, Exit::StartFailed("no such file".into()), 1),
    );
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(1) });
    assert_eq!(state(&m, "p", "b"), FragmentState::Succeeded { attempt: AttemptId(2) });
    assert_eq!(
        state(&m, "p", "c"),
        FragmentState::Failed {
            attempt: Some(AttemptId(3)),
            reason: "killed by signal 9".into()
        }
    );
    assert_eq!(
        state(&m, "p", "d"),
        FragmentState::Failed {
            attempt: Some(AttemptId(4)),
            reason: "could not start: no such file".into()
        }
    );
}

#[test]
fn failed_exits_are_retried_up_to_max_attempts_when_asked() {
    let mut m = machine();
    let spec = RunSpec {
        retry_failed: true,
        ..spec("wc -l", 2)
    };
    ok(&mut m, 0, add_event_with("p", &["a", "b"], spec));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    sched(&mut m, 0);
    // Running -> Pending: the first failure is retried, the count kept.
    let out = ok(&mut m, 1, complete_event("w1", 1, Exit::Code(1), 1));
    assert_eq!(ended(&out.writes), [(AttemptId(1), AttemptEnd::Failed, None)]);
    assert_eq!(state(&m, "p", "a"), FragmentState::Pending);
    assert_eq!(fragment_of(&m, "p", "a").attempts, 1);
    // Queued behind b.
    let (_, e) = sched(&mut m, 2);
    assert_eq!(starts(&e)[0].1.fragment, "b");
    ok(&mut m, 3, complete_event("w1", 2, Exit::Code(0), 3));
    let (_, e) = sched(&mut m, 4);
    assert_eq!(
        (starts(&e)[0].1.fragment.as_str(), starts(&e)[0].1.attempt),
        ("a", AttemptId(3))
    );
    // The second failure is the last allowed: Failed, with the exit as the reason.
    ok(&mut m, 5, complete_event("w1", 3, Exit::Signal(15), 5));
    assert_eq!(
        state(&m, "p", "a"),
        FragmentState::Failed {
            attempt: Some(AttemptId(3)),
            reason: "killed by signal 15".into()
        }
    );
    assert_eq!(counts(&m, "p"), (0, 0, 1, 1));
    // The first failure's report again: late, nothing changes.
    let out = ok(&mut m, 6, complete_event("w1", 1, Exit::Code(1), 6));
    assert_only_late(&out.writes, AttemptId(1));
    assert_eq!(counts(&m, "p"), (0, 0, 1, 1));
}

#[test]
fn dispatch_failure_requeues_then_fails_after_max_attempts() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    sched(&mut m, 0);
    let out = ok(
        &mut m,
        1,
        Event::DispatchFailed {
            attempt: AttemptId(1),
            reason: "connection refused".into(),
        },
    );
    assert_eq!(
        ended(&out.writes),
        [(AttemptId(1), AttemptEnd::Lost, Some("connection refused".into()))]
    );
    assert_eq!(state(&m, "p", "a"), FragmentState::Pending);
    assert_eq!(fragment_of(&m, "p", "a").attempts, 1);
    assert!(m.workers["w1"].running.is_empty());
    // The same failure reported again is harmless.
    let out = ok(
        &mut m,
        2,
        Event::DispatchFailed {
            attempt: AttemptId(1),
            reason: "connection refused".into(),
        },
    );
    assert!(out.writes.is_empty() && out.effects.is_empty());

    let (_, e) = sched(&mut m, 3);
    assert_eq!(starts(&e)[0].1.attempt, AttemptId(2));
    ok(
        &mut m,
        4,
        Event::DispatchFailed {
            attempt: AttemptId(2),
            reason: "connection refused".into(),
        },
    );
    assert_eq!(
        state(&m, "p", "a"),
        FragmentState::Failed {
            attempt: Some(AttemptId(2)),
            reason: "2 attempts, the last lost: connection refused".into()
        }
    );
}

#[test]
fn a_refused_start_costs_no_attempt_and_reported_strangers_hold_slots() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b"]));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    sched(&mut m, 0);
    for round in 0..5 {
        // The worker says no (its slot is still held by a program being stopped): the
        // fragment goes back without spending an attempt, however often it happens.
        let attempt = AttemptId(round + 1);
        let out = ok(
            &mut m,
            1,
            Event::StartRefused {
                attempt,
                reason: "every slot is busy".into(),
                lasting: false,
            },
        );
        assert_eq!(
            ended(&out.writes),
            [(attempt, AttemptEnd::Lost, Some("every slot is busy".into()))]
        );
        assert_eq!(fragment_of(&m, "p", "a").attempts, 0);
        assert_eq!(state(&m, "p", "a"), FragmentState::Pending);
        let (_, e) = sched(&mut m, 2);
        assert_eq!(starts(&e).len(), 1);
    }
    // A heartbeat naming an attempt herzog does not expect: it is stopped, and until it is
    // gone it holds the slot, so nothing new is sent there.
    let running = AttemptId(6);
    ok(
        &mut m,
        3,
        Event::Heartbeat {
            worker: "w1".into(),
            running: vec![running, AttemptId(99)],
        },
    );
    let w = &m.workers["w1"];
    assert_eq!((w.running.len(), w.foreign), (1, 1));
    ok(&mut m, 4, complete_event("w1", 6, Exit::Code(0), 4));
    let (_, e) = sched(&mut m, 4);
    assert!(starts(&e).is_empty(), "a stranger still holds the only slot");
    ok(
        &mut m,
        5,
        Event::Heartbeat {
            worker: "w1".into(),
            running: vec![],
        },
    );
    let (_, e) = sched(&mut m, 5);
    assert_eq!(starts(&e).len(), 1);
}

// ----- 2. illegal transitions -----

#[test]
fn may_become_allows_exactly_the_listed_transitions() {
    let states = [
        FragmentState::Pending,
        FragmentState::Running {
            attempt: AttemptId(1),
            worker: "w1".into(),
            since: 5,
        },
        FragmentState::Running {
            attempt: AttemptId(2),
            worker: "w2".into(),
            since: 6,
        },
        FragmentState::Succeeded { attempt: AttemptId(1) },
        FragmentState::Succeeded { attempt: AttemptId(2) },
        FragmentState::Failed {
            attempt: Some(AttemptId(1)),
            reason: "exited with 1".into(),
        },
        FragmentState::Failed {
            attempt: None,
            reason: "lost".into(),
        },
    ];
    let legal: BTreeSet<(&str, &str)> = [
        ("pending", "running"),
        // `hz cancel` of a fragment that never ran.
        ("pending", "failed"),
        ("running", "succeeded"),
        ("running", "pending"),
        ("running", "failed"),
        ("failed", "pending"),
    ]
    .into();
    for from in &states {
        for to in &states {
            let expected = legal.contains(&(kind(from), kind(to)));
            assert_eq!(from.may_become(to), expected, "{from:?} -> {to:?}");
        }
    }
    // In particular: a success is final, and nothing skips Running.
    for to in &states {
        assert!(
            !FragmentState::Succeeded { attempt: AttemptId(1) }.may_become(to),
            "succeeded -> {to:?}"
        );
    }
    assert!(!FragmentState::Pending.may_become(&FragmentState::Succeeded { attempt: AttemptId(1) }));
    assert!(
        !FragmentState::Failed {
            attempt: None,
            reason: "x".into()
        }
        .may_become(&states[1])
    );
}

#[test]
#[should_panic(expected = "illegal fragment transition")]
fn set_state_refuses_an_illegal_transition() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    let id = m.project("p").expect("added").id;
    m.set_state(id, 0, FragmentState::Succeeded { attempt: AttemptId(1) });
}

// ----- 3. rejections change nothing -----

#[test]
fn rejected_events_change_nothing() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, 0, register_event("w2", 1, &[]));
    ok(&mut m, 0, Event::SetPolicy(Policy::Priority { project: "p".into() }));
    let (_, e) = sched(&mut m, 10);
    let s = starts(&e);
    assert_eq!(s.len(), 2);
    let on_w1 = s.iter().find(|(w, _)| w == "w1").expect("one start on w1").1.attempt;
    let api = |e: ApiError| Err(Rejected::Api(e));

    let cases: Vec<(Event, Result<Reply, Rejected>)> = vec![
        (
            add_event("p", &["x"]),
            api(ApiError::DuplicateProject { name: "p".into() }),
        ),
        (
            add_event("q", &[]),
            api(ApiError::EmptyDirectory { dir: "/data".into() }),
        ),
        (
            Event::RemoveProject { name: "nope".into() },
            api(ApiError::UnknownProject { name: "nope".into() }),
        ),
        (
            Event::Retry { name: "nope".into() },
            api(ApiError::UnknownProject { name: "nope".into() }),
        ),
        (
            Event::SetPolicy(Policy::Priority { project: "nope".into() }),
            api(ApiError::UnknownProject { name: "nope".into() }),
        ),
        (
            heartbeat_event("ghost", &[]),
            api(ApiError::UnknownWorker { name: "ghost".into() }),
        ),
        (
            heartbeat_event("ghost", &[on_w1.0]),
            api(ApiError::UnknownWorker { name: "ghost".into() }),
        ),
        (
            complete_event("w1", 99, Exit::Code(0), 20),
            Err(Rejected::UnknownAttempt { attempt: AttemptId(99) }),
        ),
        (
            complete_event("w1", 3, Exit::Code(0), 20),
            Err(Rejected::UnknownAttempt { attempt: AttemptId(3) }),
        ),
        (
            complete_event("w1", 0, Exit::Code(0), 20),
            Err(Rejected::UnknownAttempt { attempt: AttemptId(0) }),
        ),
        (
            complete_event("w1", -1, Exit::Code(0), 20),
            Err(Rejected::UnknownAttempt { attempt: AttemptId(-1) }),
        ),
        (
            complete_event("w2", on_w1.0, Exit::Code(0), 20),
            Err(Rejected::NotItsAttempt {
                worker: "w2".into(),
                attempt: on_w1,
                runs_on: "w1".into(),
            }),
        ),
        (
            complete_event("ghost", on_w1.0, Exit::Code(0), 20),
            Err(Rejected::NotItsAttempt {
                worker: "ghost".into(),
                attempt: on_w1,
                runs_on: "w1".into(),
            }),
        ),
    ];
    for (event, expected) in cases {
        let label = format!("{event:?}");
        let out = step(&mut m, 20, event);
        assert_eq!(out.reply, expected, "{label}");
    }
    // Invalid names, for projects and workers alike.
    for bad in ["", "bad name", ".hidden", "a/b", "../up", &"x".repeat(65)] {
        let out = step(&mut m, 20, add_event(bad, &["x"]));
        assert!(
            matches!(out.reply, Err(Rejected::Api(ApiError::InvalidName { .. }))),
            "{bad:?}: {:?}",
            out.reply
        );
        let out = step(&mut m, 20, register_event(bad, 4, &[]));
        assert!(
            matches!(out.reply, Err(Rejected::Api(ApiError::InvalidName { .. }))),
            "{bad:?}: {:?}",
            out.reply
        );
    }
    // Still as it was: both attempts running, policy unchanged, nothing new to schedule.
    assert_eq!(m.live_count(), 2);
    assert_eq!(m.policy(), Policy::Priority { project: "p".into() });
    assert_eq!(counts(&m, "p"), (1, 2, 0, 0));
    let (w, e) = sched(&mut m, 30);
    assert!(w.is_empty() && e.is_empty());
    // The wrong worker's report did not fence out the right one.
    ok(&mut m, 40, complete_event("w1", on_w1.0, Exit::Code(0), 40));
    assert_eq!(counts(&m, "p"), (1, 1, 1, 0));
    // What the caller is told.
    assert_eq!(
        ApiError::from(Rejected::NotItsAttempt {
            worker: "w2".into(),
            attempt: AttemptId(7),
            runs_on: "w1".into()
        }),
        ApiError::UnknownAttempt { attempt: AttemptId(7) }
    );
}

#[test]
fn a_lost_worker_must_register_again() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, TIMEOUT, Event::Tick);
    assert_eq!(m.workers["w1"].link, Link::Lost { since: TIMEOUT });
    let out = step(&mut m, TIMEOUT + 1, heartbeat_event("w1", &[]));
    assert_eq!(
        out.reply,
        Err(Rejected::Api(ApiError::UnknownWorker { name: "w1".into() }))
    );
    ok(&mut m, TIMEOUT + 2, register_event("w1", 1, &[]));
    ok(&mut m, TIMEOUT + 3, heartbeat_event("w1", &[]));
    assert_eq!(m.workers["w1"].link, Link::Connected);
}

/// An NTP step of the wall clock, forward or back, decides no timeout: a step forward past the
/// worker timeout loses no healthy worker, a step back does not keep a silent one alive.
#[test]
fn timeouts_run_on_the_monotonic_clock_whatever_the_wall_clock_does() {
    let mut m = machine();
    for w in ["w1", "w2", "w3"] {
        ok(&mut m, 0, register_event(w, 1, &[]));
    }
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    let (_, effects) = sched(&mut m, 0);
    let running: BTreeMap<String, i64> = starts(&effects).into_iter().map(|(w, s)| (w, s.attempt.0)).collect();
    assert_eq!(running.len(), 3);
    let beat = |m: &mut Machine, now: Now, worker: &str| {
        let out = step_at(m, now, heartbeat_event(worker, &[running[worker]]));
        assert!(out.reply.is_ok(), "{:?}", out.reply);
        assert_eq!(ended(&out.writes), [], "a heartbeat ended an attempt");
    };

    // One second passes, and the wall clock jumps a minute ahead: the watchdog's tick comes
    // before the workers' next beats.
    let ahead = Now {
        wall: 61_000,
        mono: Mono(1_000),
    };
    let out = step_at(&mut m, ahead, Event::Tick);
    assert_eq!(ended(&out.writes), [], "healthy workers were declared lost");
    assert!(m.workers.values().all(|w| w.link == Link::Connected));
    for w in ["w1", "w2", "w3"] {
        beat(&mut m, ahead, w);
    }

    // The wall clock jumps two minutes back; w3 falls silent and is lost once the timeout has
    // passed on the monotonic clock, while w1 and w2 keep beating.
    let back = |mono: i64| Now {
        wall: mono - 120_000,
        mono: Mono(mono),
    };
    for t in (2_000..=1_000 + TIMEOUT).step_by(1_000) {
        beat(&mut m, back(t), "w1");
        beat(&mut m, back(t), "w2");
        let out = step_at(&mut m, back(t), Event::Tick);
        if t < 1_000 + TIMEOUT {
            assert_eq!(ended(&out.writes), [], "at {t}");
        } else {
            assert_eq!(
                ended(&out.writes),
                [(
                    AttemptId(running["w3"]),
                    AttemptEnd::Lost,
                    Some("worker w3 lost".into())
                )]
            );
        }
    }
    assert!(matches!(m.workers["w3"].link, Link::Lost { .. }));
    assert_eq!(m.workers["w1"].link, Link::Connected);
}

#[test]
fn active_attempts_come_in_pages_in_attempt_order() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 3, &[]));
    ok(&mut m, 0, register_event("w2", 4, &[]));
    ok(&mut m, 0, add_event("p", &["a", "b", "c", "d", "e", "f", "g", "h"]));
    sched(&mut m, 0);
    let all = m.active(0, u32::MAX);
    assert_eq!((all.items.len(), all.total, all.next), (7, 7, None));
    let mut seen = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = m.active(at, 3);
        assert_eq!(page.total, 7);
        assert!(page.items.len() <= 3);
        seen.extend(page.items);
        offset = page.next;
    }
    assert_eq!(seen, all.items);
    let attempts: Vec<i64> = seen.iter().map(|a| a.attempt.0).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(m.active(7, 3).items, []);
}

#[test]
fn nothing_starts_while_the_state_filesystem_is_low() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 2, &[]));
    ok(&mut m, 0, add_event("p", &["a", "b", "c", "d"]));
    let low = Event::StateSpace {
        free_bytes: 10,
        min_bytes: 100,
    };
    let out = ok(&mut m, 1, low);
    assert!(out.writes.is_empty() && out.effects.is_empty());
    let (writes, effects) = sched(&mut m, 1);
    assert!(writes.is_empty() && effects.is_empty(), "{effects:?}");
    let held = m.progress(Some("p")).unwrap()[0].held.clone().expect("held");
    assert!(held.contains("min_free_space"), "{held}");
    assert_eq!(m.workers()[0].problem.as_deref(), Some(held.as_str()));

    ok(
        &mut m,
        2,
        Event::StateSpace {
            free_bytes: 100,
            min_bytes: 100,
        },
    );
    let (_, effects) = sched(&mut m, 2);
    assert_eq!(starts(&effects).len(), 2, "one start per slot");
    assert_eq!(m.progress(Some("p")).unwrap()[0].held, None);
    assert_eq!(m.workers()[0].problem, None);
}

#[test]
fn harmless_events_for_unknown_things_change_nothing() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    sched(&mut m, 0);
    let before = digest(&m);
    let out = ok(&mut m, 1, Event::Disconnected { worker: "ghost".into() });
    assert!(out.writes.is_empty() && out.effects.is_empty());
    let out = ok(
        &mut m,
        1,
        Event::DispatchFailed {
            attempt: AttemptId(42),
            reason: "x".into(),
        },
    );
    assert!(out.writes.is_empty() && out.effects.is_empty());
    assert_eq!(digest(&m), before);
}

// ----- 4. fencing -----

#[test]
fn a_completion_for_a_lost_attempt_is_late_and_changes_nothing() {
    let mut m = machine();
    ok(&mut m, 0, add_event_with("p", &["a"], spec("wc -l", 3)));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    assert_eq!(starts(&sched(&mut m, 0).1)[0].1.attempt, AttemptId(1));
    // w1 goes silent; its attempt is lost and a goes to w2.
    ok(&mut m, TIMEOUT, Event::Tick);
    assert_eq!(state(&m, "p", "a"), FragmentState::Pending);
    ok(&mut m, TIMEOUT, register_event("w2", 1, &[]));
    let (_, e) = sched(&mut m, TIMEOUT);
    assert_eq!(starts(&e)[0].0, "w2");
    assert_eq!(starts(&e)[0].1.attempt, AttemptId(2));
    let running = FragmentState::Running {
        attempt: AttemptId(2),
        worker: "w2".into(),
        since: TIMEOUT,
    };
    assert_eq!(state(&m, "p", "a"), running);

    // w1 was only slow: its success arrives late and is kept, but counts for nothing.
    let t = TIMEOUT + 100;
    let out = ok(&mut m, t, complete_event("w1", 1, Exit::Code(0), t));
    assert_eq!(
        out.writes,
        [Write::Late {
            id: AttemptId(1),
            worker: "w1".into(),
            completion: completion(1, Exit::Code(0), t),
        }]
    );
    assert!(out.effects.is_empty());
    assert_eq!(state(&m, "p", "a"), running);
    assert_eq!(counts(&m, "p"), (0, 1, 0, 0));

    // The new attempt's result is the one that counts.
    let out = ok(&mut m, t + 1, complete_event("w2", 2, Exit::Code(0), t + 1));
    assert_eq!(ended(&out.writes), [(AttemptId(2), AttemptEnd::Succeeded, None)]);
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(2) });

    // The same completions again: late, harmless, from whichever worker.
    for (worker, attempt, exit) in [
        ("w2", 2, Exit::Code(0)),
        ("w1", 1, Exit::Code(0)),
        ("w2", 2, Exit::Code(1)),
    ] {
        let out = ok(&mut m, t + 2, complete_event(worker, attempt, exit, t + 2));
        assert_only_late(&out.writes, AttemptId(attempt));
        assert!(out.effects.is_empty());
        assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(2) });
    }
    assert_eq!(counts(&m, "p"), (0, 0, 1, 0));
    assert_eq!(m.live_count(), 0);
}

#[test]
fn the_same_completion_twice_first_success_wins() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b"]));
    ok(&mut m, 0, register_event("w1", 2, &[]));
    sched(&mut m, 0);
    let mut successes = 0;
    for _ in 0..2 {
        let out = ok(&mut m, 5, complete_event("w1", 1, Exit::Code(0), 5));
        successes += ended(&out.writes)
            .iter()
            .filter(|(_, e, _)| *e == AttemptEnd::Succeeded)
            .count();
    }
    assert_eq!(successes, 1);
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(1) });
    // A failure reported for the same attempt afterwards does not undo the success.
    let out = ok(&mut m, 6, complete_event("w1", 1, Exit::Code(1), 6));
    assert_only_late(&out.writes, AttemptId(1));
    assert_eq!(state(&m, "p", "a"), FragmentState::Succeeded { attempt: AttemptId(1) });
    // A failure delivered twice: the second is late.
    ok(&mut m, 7, complete_event("w1", 2, Exit::Code(1), 7));
    let out = ok(&mut m, 8, complete_event("w1", 2, Exit::Code(1), 8));
    assert_only_late(&out.writes, AttemptId(2));
    assert_eq!(counts(&m, "p"), (0, 0, 1, 1));
}

// ----- 5. reconciliation -----

#[test]
fn heartbeats_reconcile_what_runs_with_what_should() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    ok(&mut m, 0, register_event("w1", 2, &[]));
    ok(&mut m, 0, register_event("w2", 1, &[]));
    let (_, e) = sched(&mut m, 0);
    let s = starts(&e);
    assert_eq!(s.len(), 3);
    let on = |w: &str| -> Vec<AttemptId> { s.iter().filter(|(x, _)| x == w).map(|(_, st)| st.attempt).collect() };
    let (w1a, w1b) = (on("w1")[0], on("w1")[1]);
    let w2a = on("w2")[0];

    // Young attempts the worker does not report yet are kept (their start may be on its way).
    let out = ok(&mut m, GRACE - 1, heartbeat_event("w1", &[]));
    assert!(out.writes.is_empty() && out.effects.is_empty());
    assert_eq!(m.live_count(), 3);
    assert_eq!(m.workers["w1"].last_seen, GRACE - 1);

    // An attempt herzog does not expect there is stopped, whether unknown or another's.
    let out = ok(&mut m, GRACE - 1, heartbeat_event("w1", &[w1a.0, w1b.0, 77, w2a.0]));
    assert!(out.writes.is_empty());
    assert_eq!(
        out.effects,
        [
            Effect::Stop {
                worker: "w1".into(),
                attempt: w2a,
            },
            Effect::Stop {
                worker: "w1".into(),
                attempt: AttemptId(77),
            },
        ]
    );
    assert_eq!(m.live_count(), 3);
    assert!(m.workers["w2"].running.contains(&w2a));

    // An attempt missing past the grace is lost and requeued; the reported one is kept.
    let out = ok(&mut m, GRACE, heartbeat_event("w1", &[w1a.0]));
    assert_eq!(
        ended(&out.writes),
        [(w1b, AttemptEnd::Lost, Some("w1 no longer runs it".into()))]
    );
    assert!(out.effects.is_empty());
    let p = m.projects.values().next().expect("p");
    let lost_fragment = p.fragments.iter().position(|f| f.state == FragmentState::Pending);
    let lost_fragment = p
        .names
        .get(lost_fragment.expect("the lost attempt's fragment is pending"))
        .to_string();
    assert_eq!(fragment_of(&m, "p", &lost_fragment).attempts, 1);
    assert_eq!(m.workers["w1"].running, BTreeSet::from([w1a]));
    assert_eq!(counts(&m, "p"), (1, 2, 0, 0));

    // Requeued, it goes out again: a fresh attempt, young, so a report without it keeps it.
    let t = GRACE + 10;
    let (_, e) = sched(&mut m, t);
    let again = starts(&e);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.fragment, lost_fragment);
    assert_eq!(fragment_of(&m, "p", &lost_fragment).attempts, 2);
    let fresh = again[0].1.attempt;
    let out = ok(&mut m, t + GRACE - 1, heartbeat_event(&again[0].0, &[]));
    assert!(
        out.writes
            .iter()
            .all(|w| !matches!(w, Write::AttemptEnded { id, .. } if *id == fresh)),
        "{:?}",
        out.writes
    );
    assert!(m.live.contains_key(&fresh));
}

#[test]
fn a_disconnected_worker_is_not_reconciled_until_it_registers() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    ok(&mut m, 0, register_event("w1", 1, &[]));
    sched(&mut m, 0);
    ok(&mut m, 10, Event::Disconnected { worker: "w1".into() });
    // Its heartbeat keeps it from the watchdog, but it says nothing about its attempts.
    let out = ok(&mut m, GRACE * 2, heartbeat_event("w1", &[]));
    assert!(out.writes.is_empty() && out.effects.is_empty());
    assert_eq!(m.live_count(), 1);
    assert_eq!(m.workers["w1"].last_seen, GRACE * 2);
    // Registering reconciles: the attempt it no longer runs is requeued.
    let out = ok(&mut m, GRACE * 2 + 1, register_event("w1", 1, &[]));
    assert_eq!(
        ended(&out.writes),
        [(AttemptId(1), AttemptEnd::Lost, Some("w1 no longer runs it".into()))]
    );
    assert_eq!(state(&m, "p", "a"), FragmentState::Pending);
}

// ----- 6. removing a project -----

#[test]
fn removing_a_project_stops_its_attempts_and_resets_its_priority() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    ok(&mut m, 0, add_event("q", &["x", "y"]));
    ok(&mut m, 0, register_event("w1", 2, &[]));
    ok(&mut m, 0, register_event("w2", 2, &[]));
    ok(&mut m, 0, Event::SetPolicy(Policy::Priority { project: "p".into() }));
    let (_, e) = sched(&mut m, 0);
    let s = starts(&e);
    assert_eq!(s.iter().filter(|(_, st)| st.project == "p").count(), 3);
    assert_eq!(s.iter().filter(|(_, st)| st.project == "q").count(), 1);
    let p_on = |w: &str| -> Vec<AttemptId> {
        s.iter()
            .filter(|(x, st)| x == w && st.project == "p")
            .map(|(_, st)| st.attempt)
            .collect()
    };
    let (p_w1, p_w2) = (p_on("w1"), p_on("w2"));
    assert!(
        !p_w1.is_empty() && !p_w2.is_empty(),
        "p spreads across both workers: {s:?}"
    );
    let q_attempt = s.iter().find(|(_, st)| st.project == "q").expect("q runs").1.attempt;

    // w2 is unreachable when p goes.
    ok(&mut m, 5, Event::Disconnected { worker: "w2".into() });
    let p_id = m.project("p").expect("p").id;
    let out = ok(&mut m, 10, Event::RemoveProject { name: "p".into() });
    assert_eq!(out.reply, Ok(Reply::Done));
    let mut stops: Vec<(String, AttemptId)> = out
        .effects
        .iter()
        .map(|e| match e {
            Effect::Stop { worker, attempt } => (worker.clone(), *attempt),
            Effect::Start { .. }
            | Effect::Unqueue { .. }
            | Effect::Probe { .. }
            | Effect::Instance(_)
            | Effect::StageInstance { .. }
            | Effect::Alerts => {
                panic!("removal starts nothing")
            }
        })
        .collect();
    stops.sort();
    let expected: Vec<(String, AttemptId)> = p_w1.iter().map(|a| ("w1".to_string(), *a)).collect();
    assert_eq!(stops, expected, "stops go to connected workers only");
    let mut stopped: Vec<AttemptId> = ended(&out.writes)
        .into_iter()
        .filter(|(_, e, _)| *e == AttemptEnd::Stopped)
        .map(|(a, _, _)| a)
        .collect();
    stopped.sort();
    let mut all_p: Vec<AttemptId> = p_w1.iter().chain(&p_w2).copied().collect();
    all_p.sort();
    assert_eq!(stopped, all_p);
    assert!(out.writes.contains(&Write::Policy(Policy::Fair)));
    assert!(out.writes.contains(&Write::RemoveProject { id: p_id, at: 10 }));

    assert_eq!(m.policy(), Policy::Fair);
    assert!(m.project("p").is_none());
    assert_eq!(
        m.progress(Some("p")),
        Err(ApiError::UnknownProject { name: "p".into() })
    );
    let names: Vec<String> = m.progress(None).expect("all").into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["q"]);
    assert_eq!(m.live_count(), 1);
    assert!(m.live.contains_key(&q_attempt));
    assert!(m.active(0, u32::MAX).items.iter().all(|a| a.project == "q"));
    let running_anywhere: BTreeSet<AttemptId> = m.workers.values().flat_map(|w| w.running.iter().copied()).collect();
    assert_eq!(running_anywhere, BTreeSet::from([q_attempt]));

    // When w2 comes back still running p's attempts, reconciliation stops them.
    let mut report: Vec<i64> = p_w2.iter().map(|a| a.0).collect();
    if m.workers["w2"].running.contains(&q_attempt) {
        report.push(q_attempt.0);
    }
    let out = ok(&mut m, 20, register_event("w2", 2, &report));
    let stops: Vec<AttemptId> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Stop { worker, attempt, .. } if worker == "w2" => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(stops, p_w2);
    // A late completion of a removed project's attempt is recorded, nothing else.
    let out = ok(&mut m, 21, complete_event("w1", p_w1[0].0, Exit::Code(0), 21));
    assert_only_late(&out.writes, p_w1[0]);
    // The name is free again.
    let out = ok(&mut m, 22, add_event("p", &["a"]));
    assert!(matches!(
        out.reply,
        Ok(Reply::Added(ProjectAdded { id: ProjectId(3), .. }))
    ));
}

#[test]
fn removing_another_project_keeps_the_priority() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    ok(&mut m, 0, add_event("q", &["a"]));
    ok(&mut m, 0, Event::SetPolicy(Policy::Priority { project: "p".into() }));
    let out = ok(&mut m, 1, Event::RemoveProject { name: "q".into() });
    assert!(!out.writes.iter().any(|w| matches!(w, Write::Policy(_))));
    assert_eq!(m.policy(), Policy::Priority { project: "p".into() });
}

// ----- 7. scheduling through the machine -----

fn three_projects(m: &mut Machine) {
    let files: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    for name in ["p", "q", "r"] {
        ok(m, 0, add_event(name, &files));
    }
    ok(m, 0, register_event("w1", 6, &[]));
}

fn starts_per_project(effects: &[Effect]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, s) in starts(effects) {
        *out.entry(s.project).or_default() += 1;
    }
    out
}

#[test]
fn fair_shares_a_worker_between_projects() {
    let mut m = machine();
    three_projects(&mut m);
    assert_eq!(m.policy(), Policy::Fair);
    let (_, e) = sched(&mut m, 1);
    assert_eq!(
        starts_per_project(&e),
        BTreeMap::from([("p".into(), 2), ("q".into(), 2), ("r".into(), 2)])
    );
    assert!(starts(&e).iter().all(|(w, _)| w == "w1"));
    // Full: nothing more until a slot frees, and then it goes to the one below its share.
    assert!(sched(&mut m, 2).1.is_empty());
    let q_attempt = starts(&e).iter().find(|(_, s)| s.project == "q").expect("q").1.attempt;
    ok(&mut m, 3, complete_event("w1", q_attempt.0, Exit::Code(0), 3));
    let (_, e) = sched(&mut m, 4);
    assert_eq!(starts_per_project(&e), BTreeMap::from([("q".into(), 1)]));
}

#[test]
fn queues_fill_deep_only_while_every_pending_attempt_is_short() {
    let mut m = machine();
    let files: Vec<String> = (0..200).map(|i| format!("f{i:03}")).collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    ok(&mut m, 0, add_event("short", &files));
    // Two slots and up to 32 queued starts, as kinski offers.
    let register = Event::Register {
        worker: "w1".into(),
        resources: Resources { queue: 32, ..slots(2) },
        running: Vec::new(),
        staged: false,
    };
    ok(&mut m, 0, register);
    // Nothing has ended yet: as many queued as slots.
    let (_, e) = sched(&mut m, 1);
    let first = starts(&e);
    assert_eq!(first.len(), 4);
    // Attempts of 5 ms: enough queued for 50 ms on two slots, 20, within the 32 offered.
    let done = |m: &mut Machine, attempt: AttemptId, wall_ms, now| {
        let completion = Completion {
            wall_ms,
            ..completion(attempt.0, Exit::Code(0), now)
        };
        let event = Event::Complete {
            worker: "w1".into(),
            completion,
            staging_error: None,
        };
        ok(m, now, event);
    };
    done(&mut m, first[0].1.attempt, 5, 2);
    let (_, e) = sched(&mut m, 3);
    assert_eq!(starts(&e).len(), 20 + 2 - 3);
    assert_eq!(m.workers["w1"].running.len(), 22);
    // Attempts of a millisecond would take all 32; never more.
    for (i, attempt) in m.workers["w1"].running.clone().into_iter().take(8).enumerate() {
        done(&mut m, attempt, 0, 4 + i as i64);
    }
    sched(&mut m, 20);
    assert_eq!(m.workers["w1"].running.len(), 34);

    // A project whose attempts are not known to be short keeps queues as deep as the slots:
    // with it pending, nothing more is sent until the worker is below 2 + 2.
    ok(&mut m, 21, add_event("long", &["x", "y", "z", "w"]));
    let running = m.workers["w1"].running.clone();
    for (i, attempt) in running.iter().take(31).enumerate() {
        done(&mut m, *attempt, 0, 22 + i as i64);
    }
    let (_, e) = sched(&mut m, 60);
    assert_eq!(m.workers["w1"].running.len(), 4, "{:?}", starts_per_project(&e));
    // Once its attempts are known to take 10 s, it stays that way even as it shares the worker.
    let long = starts(&e)
        .into_iter()
        .find(|(_, s)| s.project == "long")
        .expect("long got a slot");
    done(&mut m, long.1.attempt, 10_000, 61);
    sched(&mut m, 62);
    assert_eq!(m.workers["w1"].running.len(), 4);
}

#[test]
fn priority_takes_every_slot_and_is_written() {
    let mut m = machine();
    three_projects(&mut m);
    let out = ok(&mut m, 1, Event::SetPolicy(Policy::Priority { project: "q".into() }));
    assert_eq!(out.reply, Ok(Reply::Policy(Policy::Priority { project: "q".into() })));
    assert_eq!(out.writes, [Write::Policy(Policy::Priority { project: "q".into() })]);
    assert!(out.effects.is_empty());
    assert_eq!(m.policy(), Policy::Priority { project: "q".into() });
    let (_, e) = sched(&mut m, 2);
    assert_eq!(starts_per_project(&e), BTreeMap::from([("q".into(), 6)]));

    let out = ok(&mut m, 3, Event::SetPolicy(Policy::Fair));
    assert_eq!(out.writes, [Write::Policy(Policy::Fair)]);
    assert_eq!(m.policy(), Policy::Fair);
}

#[test]
fn nothing_is_scheduled_without_connected_slots() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    assert!(sched(&mut m, 0).1.is_empty());
    ok(&mut m, 0, register_event("w0", 0, &[]));
    assert!(sched(&mut m, 0).1.is_empty());
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, 0, Event::Disconnected { worker: "w1".into() });
    assert!(sched(&mut m, 0).1.is_empty());
    assert_eq!(counts(&m, "p"), (1, 0, 0, 0));
}

// ----- 8. writes -----

#[test]
fn adding_a_project_writes_it_with_every_name() {
    let mut m = machine();
    let s = spec("sort {} -o {.}.sorted", 2);
    let out = ok(&mut m, 7, add_event_with("p", &["a.txt", "b.txt", "c.txt"], s.clone()));
    assert_eq!(
        out.writes,
        [Write::AddProject {
            id: ProjectId(1),
            name: "p".into(),
            dir: PathBuf::from("/data"),
            spec: Box::new(s.clone()),
            results_dir: PathBuf::from("/results/p"),
            created_at: 7,
            first_fragment: FragmentId(1),
            names: Arc::new(["a.txt", "b.txt", "c.txt"].into_iter().collect()),
            after: Vec::new(),
            max_running: None,
        }]
    );
    assert!(out.effects.is_empty());
    // Ids continue across projects.
    let out = ok(&mut m, 8, add_event("q", &["x", "y"]));
    match &out.writes[..] {
        [
            Write::AddProject {
                id,
                first_fragment,
                names,
                ..
            },
        ] => {
            assert_eq!((*id, *first_fragment), (ProjectId(2), FragmentId(4)));
            assert_eq!(names.iter().collect::<Vec<_>>(), ["x", "y"]);
        }
        w => panic!("{w:?}"),
    }
    let p = m.project("q").expect("q");
    assert_eq!(
        p.fragments.iter().map(|f| f.id).collect::<Vec<_>>(),
        [FragmentId(4), FragmentId(5)]
    );
    // The template is expanded per fragment.
    ok(&mut m, 9, register_event("w1", 1, &[]));
    ok(&mut m, 9, Event::SetPolicy(Policy::Priority { project: "p".into() }));
    let (_, e) = sched(&mut m, 10);
    assert_eq!(starts(&e)[0].1.argv, ["sort", "/data/a.txt", "-o", "/data/a.sorted"]);
}

#[test]
fn every_fragment_change_is_written_once() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b"]));
    ok(&mut m, 0, register_event("w1", 2, &[]));
    let (w, _) = sched(&mut m, 1);
    let fragment_writes: Vec<&Write> = w.iter().filter(|w| matches!(w, Write::Fragment { .. })).collect();
    assert_eq!(
        fragment_writes,
        [
            &Write::Fragment {
                id: FragmentId(1),
                attempts: 1,
                failures: 0,
                state: FragmentState::Running {
                    attempt: AttemptId(1),
                    worker: "w1".into(),
                    since: 1
                }
            },
            &Write::Fragment {
                id: FragmentId(2),
                attempts: 1,
                failures: 0,
                state: FragmentState::Running {
                    attempt: AttemptId(2),
                    worker: "w1".into(),
                    since: 1
                }
            },
        ]
    );
    // Each start is recorded before its fragment's new state.
    assert!(matches!(w[0], Write::AttemptStarted { id: AttemptId(1), .. }));
    let out = ok(&mut m, 2, complete_event("w1", 1, Exit::Code(0), 2));
    assert_eq!(
        out.writes
            .iter()
            .filter(|w| matches!(w, Write::Fragment { .. }))
            .collect::<Vec<_>>(),
        [&Write::Fragment {
            id: FragmentId(1),
            attempts: 1,
            failures: 0,
            state: FragmentState::Succeeded { attempt: AttemptId(1) }
        }]
    );
    // Events that change no fragment write none.
    for ev in [heartbeat_event("w1", &[2]), Event::Tick, Event::SetPolicy(Policy::Fair)] {
        let out = ok(&mut m, 3, ev);
        assert!(
            !out.writes.iter().any(|w| matches!(w, Write::Fragment { .. })),
            "{:?}",
            out.writes
        );
    }
}

// ----- 9. restore -----

fn fragment(id: i64, attempts: u32, state: FragmentState) -> Fragment {
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
fn snapshot(policy: Option<Policy>) -> Snapshot {
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

const RESTART: Millis = 5_000;

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
    assert_eq!(w.link, Link::Disconnected { since: RESTART });
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
    assert_eq!(m.workers["w1"].link, Link::Connected);
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
        m.workers["w1"].link,
        Link::Lost {
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
    assert_eq!(w.link, Link::Disconnected { since: RESTART });
    assert_eq!(w.running, BTreeSet::from([AttemptId(2)]));
    ok(&mut m, RESTART + 1, register_event("w1", 1, &[2]));
    assert_eq!(m.live_count(), 1);
}

// ----- 9b. staging over SSH -----

fn staged_register(worker: &str, n: u32) -> Event {
    Event::Register {
        worker: worker.to_string(),
        resources: Resources {
            scratch_dir: Some(PathBuf::from("/scratch")),
            ..slots(n)
        },
        running: vec![],
        staged: true,
    }
}

#[test]
fn a_start_that_never_ran_on_a_staged_host_has_its_prepared_directory_dropped() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a", "b"]));
    ok(&mut m, 0, staged_register("w1", 2));
    let probed = Event::Probed {
        worker: "w1".into(),
        result: Ok(()),
    };
    ok(&mut m, 1, probed);
    let (_, effects) = sched(&mut m, 2);
    let attempts: Vec<AttemptId> = starts(&effects).iter().map(|(_, s)| s.attempt).collect();
    assert_eq!(attempts.len(), 2);
    let stop = |attempt| Effect::Stop {
        worker: "w1".into(),
        attempt,
    };
    let refused = Event::StartRefused {
        attempt: attempts[0],
        reason: "refused".into(),
        lasting: false,
    };
    assert_eq!(ok(&mut m, 3, refused).effects, [stop(attempts[0])]);
    let failed = Event::StagingFailed {
        attempt: attempts[1],
        reason: "no space left".into(),
    };
    assert_eq!(ok(&mut m, 4, failed).effects, [stop(attempts[1])]);
}

#[test]
fn a_staged_host_gets_work_only_after_a_login_check_and_its_files_live_in_scratch() {
    let mut m = machine();
    // The program lives inside the project directory: it travels with the input.
    ok(
        &mut m,
        0,
        add_event_with("p", &["a", "b"], spec("/data/bin/run.sh -q {}", 2)),
    );
    let out = ok(&mut m, 0, staged_register("w1", 1));
    assert_eq!(
        out.effects,
        vec![Effect::Probe {
            worker: "w1".into(),
            scratch: PathBuf::from("/scratch")
        }]
    );
    let (_, effects) = sched(&mut m, 10);
    assert!(effects.is_empty(), "work before the login check: {effects:?}");
    assert_eq!(m.workers()[0].staging, "ssh checking");

    ok(
        &mut m,
        20,
        Event::Probed {
            worker: "w1".into(),
            result: Ok(()),
        },
    );
    let (_, effects) = sched(&mut m, 30);
    let [Effect::Start { worker, start, upload }] = effects.as_slice() else {
        panic!("one start: {effects:?}");
    };
    assert_eq!(worker, "w1");
    assert_eq!(start.scratch, Some(PathBuf::from("/scratch/1")));
    assert_eq!(start.input, PathBuf::from("/scratch/1/in/a"));
    assert_eq!(start.argv, vec!["/scratch/1/in/bin/run.sh", "-q", "/scratch/1/in/a"]);
    assert_eq!(start.cwd, PathBuf::from("/scratch/1/in"));
    assert_eq!(start.output_dir, PathBuf::from("/scratch/1/out"));
    assert_eq!(start.stdout, PathBuf::from("/scratch/1/stdout"));
    assert_eq!(
        upload,
        &vec![
            Upload {
                from: "/data/a".into(),
                to: "/scratch/1/in/a".into()
            },
            Upload {
                from: "/data/bin/run.sh".into(),
                to: "/scratch/1/in/bin/run.sh".into()
            },
        ]
    );
    // What comes back, and where it goes: the results folder, as on a shared filesystem.
    assert_eq!(
        m.fetch_plan("w1", AttemptId(1)),
        Some(Fetch {
            outputs: ("/scratch/1/out".into(), "/results/p/output".into()),
            logs: vec![
                ("/scratch/1/stdout".into(), "/results/p/logs/a.1.stdout".into()),
                ("/scratch/1/stderr".into(), "/results/p/logs/a.1.stderr".into()),
            ],
        })
    );
    assert_eq!(m.fetch_plan("w2", AttemptId(1)), None, "another worker's attempt");

    // A failed upload fails the attempt, not the fragment; the host gets no more work.
    let out = ok(
        &mut m,
        40,
        Event::StagingFailed {
            attempt: AttemptId(1),
            reason: "disk full".into(),
        },
    );
    assert_eq!(
        ended(&out.writes),
        vec![(AttemptId(1), AttemptEnd::StagingFailed, Some("disk full".into()))]
    );
    assert_eq!(m.project("p").unwrap().fragments[0].state, FragmentState::Pending);
    let w = &m.workers()[0];
    assert_eq!(
        (w.staging.as_str(), w.problem.as_deref()),
        ("ssh failed", Some("disk full"))
    );
    let (_, effects) = sched(&mut m, 50);
    assert!(effects.is_empty(), "work for a broken host: {effects:?}");

    // Checked again after a pause (while it keeps heartbeating); a good answer puts it back
    // to work.
    ok(&mut m, 40 + TIMEOUT, heartbeat_event("w1", &[]));
    let out = ok(&mut m, 50 + TIMEOUT, Event::Tick);
    assert!(
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::Probe { worker, .. } if worker == "w1")),
        "{:?}",
        out.effects
    );
    ok(
        &mut m,
        60 + TIMEOUT,
        Event::Probed {
            worker: "w1".into(),
            result: Ok(()),
        },
    );
    let (_, effects) = sched(&mut m, 70 + TIMEOUT);
    assert_eq!(starts(&effects).len(), 1);

    // A fetch that fails after the program succeeded fails the attempt, not the fragment
    // (it has attempts left); the record keeps the completion and the reason.
    let (_, start) = starts(&effects).remove(0);
    assert_eq!(start.fragment, "b", "a went to the back of the queue");
    let out = ok(
        &mut m,
        80 + TIMEOUT,
        Event::Complete {
            worker: "w1".into(),
            completion: completion(start.attempt.0, Exit::Code(0), 80 + TIMEOUT),
            staging_error: Some("connection closed".into()),
        },
    );
    assert_eq!(
        ended(&out.writes),
        vec![(
            start.attempt,
            AttemptEnd::StagingFailed,
            Some("connection closed".into())
        )]
    );
    let b = &m.project("p").unwrap().fragments[1];
    assert_eq!((b.attempts, &b.state), (1, &FragmentState::Pending));
}

#[test]
fn a_staging_failure_on_the_last_attempt_fails_the_fragment_with_the_reason() {
    let mut m = machine();
    ok(&mut m, 0, add_event_with("p", &["a"], spec("wc -l", 1)));
    ok(&mut m, 0, staged_register("w1", 1));
    ok(
        &mut m,
        1,
        Event::Probed {
            worker: "w1".into(),
            result: Ok(()),
        },
    );
    let (_, effects) = sched(&mut m, 2);
    let attempt = starts(&effects)[0].1.attempt;
    ok(
        &mut m,
        3,
        Event::StagingFailed {
            attempt,
            reason: "No space left on device".into(),
        },
    );
    let FragmentState::Failed { reason, .. } = &m.project("p").unwrap().fragments[0].state else {
        panic!("the fragment ran out of attempts");
    };
    assert!(reason.contains("No space left on device"), "{reason}");
}

#[test]
fn a_failed_login_check_keeps_the_host_idle_and_names_the_error() {
    let mut m = machine();
    ok(&mut m, 0, add_event("p", &["a"]));
    ok(&mut m, 0, staged_register("w1", 2));
    ok(&mut m, 0, register_event("w2", 1, &[]));
    ok(
        &mut m,
        5,
        Event::Probed {
            worker: "w1".into(),
            result: Err("failed to log in to host w1: Permission denied (publickey)".into()),
        },
    );
    let (_, effects) = sched(&mut m, 10);
    assert_eq!(
        starts(&effects).iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        vec!["w2"]
    );
    let w1 = m.workers().into_iter().find(|w| w.name == "w1").unwrap();
    assert!(w1.problem.unwrap().contains("Permission denied"));
    // An answer nobody waits for (the host was re-registered as shared) changes nothing.
    ok(&mut m, 20, register_event("w1", 2, &[]));
    ok(
        &mut m,
        21,
        Event::Probed {
            worker: "w1".into(),
            result: Err("late".into()),
        },
    );
    assert_eq!(
        m.workers().into_iter().find(|w| w.name == "w1").unwrap().staging,
        "shared"
    );
    // A staged worker whose kinski reports no scratch directory is told what to do.
    let mut old = staged_register("w3", 1);
    if let Event::Register { resources, .. } = &mut old {
        resources.scratch_dir = None;
    }
    let out = ok(&mut m, 30, old);
    assert!(out.effects.is_empty());
    let w3 = m.workers().into_iter().find(|w| w.name == "w3").unwrap();
    assert!(w3.problem.unwrap().contains("upgrade kinski"));
}

// ----- 10. random event sequences -----

const PROJECT_NAMES: [&str; 4] = ["p", "q", "r", "bad name"];
const WORKER_NAMES: [&str; 4] = ["w1", "w2", "w3", "ghost"];
const PROP_TIMING: Timing = Timing {
    worker_timeout_ms: 5_000,
    start_grace_ms: 1_000,
    probe_retry_ms: 3_000,
};

/// An attempt id, chosen when the step runs from what has happened so far.
#[derive(Clone, Debug)]
enum Pick {
    /// Any attempt issued so far (often ended: stale).
    Issued(usize),
    /// One live now.
    Live(usize),
    /// One live on the worker concerned.
    Mine(usize),
    /// Whatever number, often never issued.
    Raw(i64),
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        name: usize,
        files: usize,
        max_attempts: u32,
        retry_failed: bool,
    },
    Remove(usize),
    Retry(usize),
    Policy(Option<usize>),
    Register {
        worker: usize,
        slots: u32,
        /// Starts it accepts beyond its slots.
        queue: u32,
        running: Vec<Pick>,
        /// Its host has no shared filesystem (and a scratch directory unless `slots` is 3).
        staged: bool,
    },
    /// The answer of a login check to a host.
    Probed {
        worker: usize,
        ok: bool,
    },
    /// An attempt's upload failed.
    StagingFailed(Pick),
    /// Reports exactly what herzog expects there, as a healthy worker does.
    HeartbeatExact(usize),
    Heartbeat {
        worker: usize,
        running: Vec<Pick>,
    },
    Disconnect(usize),
    /// `worker: None`: the one the attempt runs on, when it is live.
    Complete {
        attempt: Pick,
        worker: Option<usize>,
        exit: u8,
        /// How long it ran: short ones deepen the workers' queues.
        wall_ms: u64,
        /// Its outputs could not be fetched.
        fetch_failed: bool,
    },
    DispatchFailed(Pick),
    Tick(i64),
    /// The wall clock steps by this much (NTP); the monotonic one does not.
    WallStep(i64),
    /// herzog restarts from what the store holds.
    Restart,
    /// A worker says an attempt started (`worker: None`: the one it runs on).
    Started {
        attempt: Pick,
        worker: Option<usize>,
    },
    /// `hz pause`, `resume`, `limit`, `cancel`, `drain`, `undrain` (by `kind`), on a
    /// project or worker `name`, with `n` (a limit, a fragment index).
    Control {
        kind: u8,
        name: usize,
        n: u32,
    },
    /// A worker answers a take-back with these attempts.
    TakenBack {
        worker: usize,
        attempts: Vec<Pick>,
    },
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        3 => any::<usize>().prop_map(Pick::Issued),
        3 => any::<usize>().prop_map(Pick::Live),
        4 => any::<usize>().prop_map(Pick::Mine),
        1 => (-1i64..60).prop_map(Pick::Raw),
    ]
}

/// Completions mostly name a live attempt; the rest are stale or never issued.
fn completed_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<usize>().prop_map(Pick::Live),
        2 => any::<usize>().prop_map(Pick::Issued),
        1 => (-1i64..60).prop_map(Pick::Raw),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let picks = || proptest::collection::vec(pick(), 0..4);
    prop_oneof![
        3 => (0..4usize, 0..5usize, 1..4u32, any::<bool>())
            .prop_map(|(name, files, max_attempts, retry_failed)| Op::Add { name, files, max_attempts, retry_failed }),
        1 => (0..4usize).prop_map(Op::Remove),
        1 => (0..4usize).prop_map(Op::Retry),
        1 => proptest::option::of(0..4usize).prop_map(Op::Policy),
        2 => (0..3usize, 0..=3u32, 0..=8u32, picks(), proptest::bool::weighted(0.4))
            .prop_map(|(worker, slots, queue, running, staged)| Op::Register { worker, slots, queue, running, staged }),
        2 => (0..4usize, proptest::bool::weighted(0.7)).prop_map(|(worker, ok)| Op::Probed { worker, ok }),
        1 => pick().prop_map(Op::StagingFailed),
        4 => (0..3usize).prop_map(Op::HeartbeatExact),
        2 => (0..4usize, picks()).prop_map(|(worker, running)| Op::Heartbeat { worker, running }),
        1 => (0..4usize).prop_map(Op::Disconnect),
        6 => (completed_pick(), proptest::option::weighted(0.2, 0..4usize), 0..6u8, 0..40u64, proptest::bool::weighted(0.1))
            .prop_map(|(attempt, worker, exit, wall_ms, fetch_failed)| Op::Complete { attempt, worker, exit, wall_ms, fetch_failed }),
        1 => pick().prop_map(Op::DispatchFailed),
        2 => (0i64..7_000).prop_map(Op::Tick),
        1 => (-120_000i64..120_000).prop_map(Op::WallStep),
        1 => Just(Op::Restart),
        3 => (completed_pick(), proptest::option::weighted(0.1, 0..4usize))
            .prop_map(|(attempt, worker)| Op::Started { attempt, worker }),
        2 => (0..6u8, 0..4usize, 0..4u32).prop_map(|(kind, name, n)| Op::Control { kind, name, n }),
        1 => (0..3usize, picks()).prop_map(|(worker, attempts)| Op::TakenBack { worker, attempts }),
    ]
}

/// What the run has seen so far, across every step.
#[derive(Default)]
struct Model {
    /// Every attempt started, with its fragment, in order.
    started: BTreeMap<AttemptId, FragmentId>,
    /// Attempts that ended (other than late), so none ends twice.
    ended: BTreeSet<AttemptId>,
    /// Accepted successes per fragment.
    successes: BTreeMap<FragmentId, usize>,
    /// Succeeded fragments and their attempt: never change again while they exist.
    succeeded: BTreeMap<FragmentId, AttemptId>,
}

impl Model {
    fn resolve(&self, m: &Machine, p: &Pick, worker: &str) -> AttemptId {
        let from = |v: Vec<AttemptId>, i: usize| if v.is_empty() { AttemptId(1) } else { v[i % v.len()] };
        match p {
            Pick::Issued(i) => from(self.started.keys().copied().collect(), *i),
            Pick::Live(i) => {
                let mut live: Vec<AttemptId> = m.live.keys().copied().collect();
                live.sort();
                from(live, *i)
            }
            Pick::Mine(i) => from(
                m.workers
                    .get(worker)
                    .map(|w| w.running.iter().copied().collect())
                    .unwrap_or_default(),
                *i,
            ),
            Pick::Raw(n) => AttemptId(*n),
        }
    }

    /// Applies what a batch of writes says to the model, checking it as it goes.
    fn record(&mut self, writes: &[Write], live_before: &BTreeSet<AttemptId>) {
        for w in writes {
            match w {
                Write::AttemptStarted { id, fragment, .. } => {
                    if let Some((last, _)) = self.started.last_key_value() {
                        assert!(id > last, "attempt ids increase: {id} after {last}");
                    }
                    assert!(
                        self.started.insert(*id, *fragment).is_none(),
                        "attempt {id} issued twice"
                    );
                }
                Write::Late { id, .. } => {
                    assert!(self.ended.contains(id), "attempt {id} is late but had not ended");
                }
                Write::AttemptEnded { id, end, .. } => {
                    assert!(
                        self.started.contains_key(id),
                        "attempt {id} ended but was never started"
                    );
                    assert!(
                        live_before.contains(id),
                        "attempt {id} ended ({end:?}) but was not live"
                    );
                    assert!(self.ended.insert(*id), "attempt {id} ended twice");
                    if *end == AttemptEnd::Succeeded {
                        let n = self.successes.entry(self.started[id]).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "fragment {} succeeded twice", self.started[id]);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Everything that must hold between events.
fn check_invariants(m: &Machine, model: &mut Model) {
    let mut running_fragments: BTreeMap<AttemptId, (ProjectId, u32, String)> = BTreeMap::new();
    for (id, p) in &m.projects {
        assert_eq!(*id, p.id);
        assert_eq!(m.by_name.get(&p.name), Some(id), "by_name names project {}", p.name);
        let mut recount = Counts::default();
        let mut pending = BTreeSet::new();
        for (i, f) in p.fragments.iter().enumerate() {
            *recount.slot(&f.state) += 1;
            match &f.state {
                FragmentState::Pending => {
                    pending.insert(i as u32);
                }
                FragmentState::Running { attempt, worker, .. } => {
                    let prev = running_fragments.insert(*attempt, (p.id, i as u32, worker.clone()));
                    assert!(prev.is_none(), "attempt {attempt} runs two fragments");
                    assert_eq!(
                        model.started.get(attempt),
                        Some(&f.id),
                        "running attempt {attempt} was started for it"
                    );
                }
                FragmentState::Succeeded { attempt } => {
                    assert_eq!(
                        model.started.get(attempt),
                        Some(&f.id),
                        "success by an attempt of another fragment"
                    );
                    let prev = model.succeeded.insert(f.id, *attempt);
                    assert!(
                        prev.is_none() || prev == Some(*attempt),
                        "fragment {} succeeded by two attempts",
                        f.id
                    );
                }
                FragmentState::Failed { .. } => {}
            }
        }
        assert_eq!(p.counts, recount, "project {} counts", p.name);
        let c = &p.counts;
        assert_eq!(c.pending + c.running + c.succeeded + c.failed, p.fragments.len() as u64);
        let queued: BTreeSet<u32> = p.queue.iter().copied().collect();
        assert_eq!(
            queued.len(),
            p.queue.len(),
            "project {}: a fragment queued twice",
            p.name
        );
        assert_eq!(
            queued, pending,
            "project {}: the queue holds exactly the pending fragments",
            p.name
        );
        let view = &m.progress(Some(&p.name)).expect("exists")[0];
        assert_eq!(
            (
                view.total,
                view.pending,
                view.running + view.queued,
                view.succeeded,
                view.failed
            ),
            (p.fragments.len() as u64, c.pending, c.running, c.succeeded, c.failed)
        );
    }
    assert_eq!(m.by_name.len(), m.projects.len());

    // A success is final while its project exists.
    let existing: BTreeMap<FragmentId, &FragmentState> = m
        .projects
        .values()
        .flat_map(|p| p.fragments.iter().map(|f| (f.id, &f.state)))
        .collect();
    for (fid, attempt) in &model.succeeded {
        if let Some(s) = existing.get(fid) {
            assert_eq!(
                *s,
                &FragmentState::Succeeded { attempt: *attempt },
                "fragment {fid} left Succeeded"
            );
        }
    }

    // `live` is exactly the running fragments.
    assert_eq!(m.live.len(), running_fragments.len());
    for (attempt, (project, index, _)) in &running_fragments {
        assert_eq!(
            m.live.get(attempt).map(|l| (l.project, l.index)),
            Some((*project, *index)),
            "attempt {attempt}"
        );
    }
    assert_eq!(m.active(0, u32::MAX).items.len(), m.live.len());

    // Each worker's set is exactly the live attempts that name it.
    for w in m.workers.values() {
        let expected: BTreeSet<AttemptId> = running_fragments
            .iter()
            .filter(|(_, (_, _, on))| *on == w.name)
            .map(|(a, _)| *a)
            .collect();
        assert_eq!(w.running, expected, "worker {} running set", w.name);
        if matches!(w.link, Link::Lost { .. }) {
            assert!(w.running.is_empty(), "lost worker {} still has attempts", w.name);
        }
    }
    for (attempt, (_, _, on)) in &running_fragments {
        assert!(
            m.workers.contains_key(on),
            "attempt {attempt} runs on unknown worker {on}"
        );
    }
    if let Policy::Priority { project } = &m.policy {
        assert!(m.by_name.contains_key(project), "the priority project {project} exists");
    }
}

fn run_op(m: &Machine, model: &Model, now: Millis, op: &Op) -> Event {
    let files = |n: usize| (0..n).map(|i| format!("f{i}")).collect::<Vec<_>>();
    let resolve_all = |picks: &[Pick], worker: &str| -> Vec<AttemptId> {
        picks.iter().map(|p| model.resolve(m, p, worker)).collect()
    };
    match op {
        Op::Add {
            name,
            files: n,
            max_attempts,
            retry_failed,
        } => Event::AddProject(Box::new(NewProjectEvent {
            name: PROJECT_NAMES[*name].into(),
            dir: PathBuf::from("/data"),
            spec: RunSpec {
                retry_failed: *retry_failed,
                retries: *max_attempts % 2,
                ..spec("wc -l", *max_attempts)
            },
            files: files(*n),
            after: Vec::new(),
            max_running: None,
            share: 1,
        })),
        Op::Remove(n) => Event::RemoveProject {
            name: PROJECT_NAMES[*n].into(),
        },
        Op::Retry(n) => Event::Retry {
            name: PROJECT_NAMES[*n].into(),
        },
        Op::Policy(None) => Event::SetPolicy(Policy::Fair),
        Op::Policy(Some(n)) => Event::SetPolicy(Policy::Priority {
            project: PROJECT_NAMES[*n].into(),
        }),
        Op::Register {
            worker,
            slots: s,
            queue,
            running,
            staged,
        } => {
            let name = WORKER_NAMES[*worker];
            let mut resources = slots(*s);
            resources.queue = *queue;
            if *s != 3 {
                resources.scratch_dir = Some(PathBuf::from(format!("/scratch/{name}")));
            }
            Event::Register {
                worker: name.into(),
                resources,
                running: resolve_all(running, name),
                staged: *staged,
            }
        }
        Op::Probed { worker, ok } => Event::Probed {
            worker: WORKER_NAMES[*worker].into(),
            result: if *ok {
                Ok(())
            } else {
                Err("Permission denied (publickey)".into())
            },
        },
        Op::StagingFailed(p) => Event::StagingFailed {
            attempt: model.resolve(m, p, "w1"),
            reason: "disk full".into(),
        },
        Op::HeartbeatExact(worker) => {
            let name = WORKER_NAMES[*worker];
            let running = m
                .workers
                .get(name)
                .map(|w| w.running.iter().copied().collect())
                .unwrap_or_default();
            Event::Heartbeat {
                worker: name.into(),
                running,
            }
        }
        Op::Heartbeat { worker, running } => {
            let name = WORKER_NAMES[*worker];
            Event::Heartbeat {
                worker: name.into(),
                running: resolve_all(running, name),
            }
        }
        Op::Disconnect(worker) => Event::Disconnected {
            worker: WORKER_NAMES[*worker].into(),
        },
        Op::Complete {
            attempt,
            worker,
            exit,
            wall_ms,
            fetch_failed,
        } => {
            let attempt = model.resolve(m, attempt, "w1");
            let worker = match worker {
                Some(w) => WORKER_NAMES[*w].to_string(),
                None => m
                    .live
                    .get(&attempt)
                    .and_then(|l| match &m.projects[&l.project].fragments[l.index as usize].state {
                        FragmentState::Running { worker, .. } => Some(worker.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "w1".to_string()),
            };
            let exit = match exit {
                0..=2 => Exit::Code(0),
                3 => Exit::Code(1),
                4 => Exit::Signal(9),
                _ => Exit::StartFailed("not found".into()),
            };
            Event::Complete {
                worker,
                completion: Completion {
                    wall_ms: *wall_ms,
                    ..completion(attempt.0, exit, now)
                },
                staging_error: fetch_failed.then(|| "connection closed".to_string()),
            }
        }
        Op::DispatchFailed(p) => Event::DispatchFailed {
            attempt: model.resolve(m, p, "w1"),
            reason: "refused".into(),
        },
        Op::Tick(_) | Op::WallStep(_) | Op::Restart => Event::Tick,
        Op::Started { attempt, worker } => {
            let attempt = model.resolve(m, attempt, "w1");
            let worker = match worker {
                Some(w) => WORKER_NAMES[*w].to_string(),
                None => runs_on(m, attempt).unwrap_or_else(|| "w1".to_string()),
            };
            Event::Started {
                worker,
                notices: vec![common::wire::StartNotice { attempt, at: now }],
            }
        }
        Op::Control { kind, name, n } => {
            let project = PROJECT_NAMES[*name].to_string();
            let worker = WORKER_NAMES[*name % WORKER_NAMES.len()].to_string();
            Event::Control(match kind {
                0 => Control::Pause { project },
                1 => Control::Resume { project },
                2 => Control::Limit {
                    project,
                    max_running: (*n > 0).then_some(*n),
                },
                3 => Control::Cancel {
                    project,
                    fragments: vec![n.to_string()],
                },
                4 => Control::Drain { worker },
                _ => Control::Undrain { worker },
            })
        }
        Op::TakenBack { worker, attempts } => Event::TakenBack {
            worker: WORKER_NAMES[*worker].to_string(),
            attempts: attempts
                .iter()
                .map(|p| model.resolve(m, p, WORKER_NAMES[*worker]))
                .collect(),
        },
    }
}

/// The worker a live attempt runs on.
fn runs_on(m: &Machine, attempt: AttemptId) -> Option<String> {
    let l = m.live.get(&attempt)?;
    match &m.projects[&l.project].fragments[l.index as usize].state {
        FragmentState::Running { worker, .. } => Some(worker.clone()),
        _ => None,
    }
}

fn live_set(m: &Machine) -> BTreeSet<AttemptId> {
    m.live.keys().copied().collect()
}

/// A restart from what `store` holds, which must give back the machine's picture: a wrong
/// write or row mapping shows here.
fn restart(m: &Machine, store: &crate::store::Store, now: Now) -> Result<Machine, TestCaseError> {
    let snapshot = store.load().map_err(|e| TestCaseError::fail(format!("load: {e}")))?;
    let restored = Machine::restore(PROP_TIMING, root(), snapshot, now);
    // The recent pace is not kept across a restart (a fresh window): all else is.
    let paceless = |m: &Machine| {
        let mut all = m.progress(None).expect("every project");
        all.iter_mut().for_each(|p| p.rate = None);
        all
    };
    prop_assert_eq!(paceless(&restored), paceless(m));
    prop_assert_eq!(restored.active(0, u32::MAX).items, m.active(0, u32::MAX).items);
    prop_assert_eq!(restored.policy(), m.policy());
    prop_assert_eq!(restored.next_attempt, m.next_attempt);
    for (id, p) in &m.projects {
        let r = &restored.projects[id];
        prop_assert_eq!(
            (&r.name, &r.dir, &r.spec, &r.results_dir),
            (&p.name, &p.dir, &p.spec, &p.results_dir)
        );
        prop_assert_eq!(&r.names, &p.names);
        for (a, b) in r.fragments.iter().zip(&p.fragments) {
            prop_assert_eq!(
                (a.id, a.attempts, a.failures, &a.state),
                (b.id, b.attempts, b.failures, &b.state)
            );
        }
    }
    for w in restored.workers.values() {
        // Silent past the timeout before the restart with nothing on it: lost then, not again.
        let gone = w.running.is_empty() && now.wall - w.last_seen >= PROP_TIMING.worker_timeout_ms;
        let expected = if gone {
            Link::Lost { since: w.last_seen }
        } else {
            Link::Disconnected { since: now.wall }
        };
        prop_assert_eq!(&w.link, &expected);
        prop_assert_eq!(&w.running, &m.workers[&w.name].running);
    }
    Ok(restored)
}

/// Commits what a step wrote, as the engine does: a write the schema refuses fails the test.
fn commit(store: &mut crate::store::Store, writes: &[Write]) -> Result<(), TestCaseError> {
    store
        .commit(writes)
        .map_err(|e| TestCaseError::fail(format!("commit of {writes:?}: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_every_invariant(
        steps in proptest::collection::vec((0i64..600, op()), 1..200)
    ) {
        let mut m = Machine::new(PROP_TIMING, root());
        let mut store = crate::store::Store::open(std::path::Path::new(":memory:")).expect("an in-memory store");
        let mut model = Model::default();
        let mut starts_seen: BTreeSet<AttemptId> = BTreeSet::new();
        // The monotonic clock, and how far the wall clock has stepped away from it.
        let mut mono: Millis = 0;
        let mut wall_offset: Millis = 0;
        for (dt, op) in &steps {
            mono += dt;
            match op {
                Op::Tick(advance) => mono += advance,
                Op::WallStep(step) => wall_offset += step,
                _ => {}
            }
            let now = Now { wall: mono + wall_offset, mono: Mono(mono) };
            if let Op::Restart = op {
                m = restart(&m, &store, now)?;
                let mut fresh = Model { started: model.started.clone(), ended: model.ended.clone(), ..Model::default() };
                check_invariants(&m, &mut fresh);
            }
            let event = run_op(&m, &model, now.wall, op);
            let live_before = live_set(&m);
            let out = step_at(&mut m, now, event);
            model.record(&out.writes, &live_before);
            commit(&mut store, &out.writes)?;
            for e in &out.effects {
                match e {
                    Effect::Start { .. } => panic!("only schedule starts attempts: {e:?}"),
                    Effect::Stop { worker, .. } => {
                        prop_assert!(m.workers.contains_key(worker), "stop for unknown worker {}", worker);
                    }
                    Effect::Probe { worker, scratch } => {
                        // A check only for a host that stages, about its own scratch directory,
                        // and only while its answer is awaited.
                        let w = &m.workers[worker];
                        prop_assert_eq!(&w.staging, &Staging::Checking { scratch: scratch.clone() });
                    }
                    Effect::Unqueue { worker, attempts } => {
                        // Only starts that wait on a connected worker, each asked for once.
                        prop_assert_eq!(&m.workers[worker].link, &Link::Connected);
                        for a in attempts {
                            let l = m.live.get(a).expect("a take-back of a live attempt");
                            prop_assert!(l.ran.is_none() && l.unqueue_asked, "{:?}", l);
                        }
                    }
                    Effect::Instance(_) | Effect::StageInstance { .. } => {
                        panic!("no services in this test: {e:?}")
                    }
                    Effect::Alerts => panic!("no alerts configured in this test: {e:?}"),
                }
            }
            check_invariants(&m, &mut model);

            // Schedule: only connected workers, only free slots, each attempt id once.
            let held_before: BTreeMap<String, u32> = m
                .workers
                .values()
                .filter(|w| w.link == Link::Connected)
                .map(|w| (w.name.clone(), w.running.len() as u32 + w.foreign))
                .collect();
            let live_before = live_set(&m);
            let (writes, effects) = sched_at(&mut m, now);
            model.record(&writes, &live_before);
            commit(&mut store, &writes)?;
            let mut per_worker: BTreeMap<String, u32> = BTreeMap::new();
            for e in &effects {
                let Effect::Start { worker, start, upload } = e else {
                    panic!("schedule only starts: {e:?}");
                };
                prop_assert_eq!(&m.workers[worker].link, &Link::Connected, "start on {} which is not connected", worker);
                // Staged hosts get work only once herzog could log in, and every file of the
                // attempt lies in its own scratch directory.
                match &m.workers[worker].staging {
                    Staging::Shared => prop_assert!(start.scratch.is_none() && upload.is_empty()),
                    Staging::Ready { scratch } => {
                        let root = scratch.join(start.attempt.0.to_string());
                        prop_assert_eq!(start.scratch.as_ref(), Some(&root));
                        for path in [&start.input, &start.stdout, &start.stderr, &start.output_dir] {
                            prop_assert!(path.starts_with(&root), "{} outside {}", path.display(), root.display());
                        }
                        prop_assert!(upload.iter().all(|u| u.to.starts_with(&root)) && !upload.is_empty());
                    }
                    other => prop_assert!(false, "start on {} whose staging is {:?}", worker, other),
                }
                prop_assert!(starts_seen.insert(start.attempt), "attempt {} started twice", start.attempt);
                *per_worker.entry(worker.clone()).or_default() += 1;
                let l = m.live[&start.attempt];
                let p = &m.projects[&l.project];
                let f = &p.fragments[l.index as usize];
                prop_assert_eq!(p.names.get(l.index as usize), start.fragment.as_str());
                prop_assert_eq!(
                    &f.state,
                    &FragmentState::Running { attempt: start.attempt, worker: worker.clone(), since: now.wall }
                );
            }
            for (w, n) in &per_worker {
                // What is left pending decides how deep queues may be (deeper as projects whose
                // attempts are not known to be short run out of pending fragments).
                let free = m.workers[w].capacity(m.pending_attempt_ms()).saturating_sub(held_before[w]);
                prop_assert!(*n <= free, "{} starts on {} with {} free", n, w, free);
            }
            // Work-conserving: nothing that may start waits while a worker that takes starts
            // has a free slot (paused, blocked or limited projects and drained workers aside).
            let may_start = |p: &Project| {
                !p.queue.is_empty()
                    && !p.paused
                    && p.after.is_empty()
                    && p.max_running.is_none_or(|max| p.counts.running < u64::from(max))
            };
            if m.projects.values().any(may_start) {
                for w in m.workers.values().filter(|w| w.takes_starts(now)) {
                    let held = w.running.len() as u32 + w.foreign;
                    prop_assert!(held >= w.capacity(m.pending_attempt_ms()), "{} idles while work waits", w.name);
                }
            }
            check_invariants(&m, &mut model);
        }

        // A restart from what the store holds gives back the same picture.
        let now = Now { wall: mono + wall_offset, mono: Mono(mono) };
        let restored = restart(&m, &store, now)?;
        let mut fresh = Model { started: model.started.clone(), ended: model.ended.clone(), ..Model::default() };
        check_invariants(&restored, &mut fresh);
    }
}

#[test]
fn an_attempt_requeued_from_a_staged_host_is_stopped_there_so_its_directory_goes() {
    // herzog was killed after preparing attempt 2 on w1, a host that stages; restarted, it
    // finds w1 without it and requeues it. kinski has its directory (and the uploaded input)
    // but no start: the stop tells it to remove them.
    let mut m = Machine::restore(TIMING, root(), snapshot(None), at(RESTART));
    let out = ok(&mut m, RESTART + 100, staged_register("w1", 2));
    assert_eq!(
        ended(&out.writes),
        [(AttemptId(2), AttemptEnd::Lost, Some("w1 no longer runs it".into()))]
    );
    assert!(
        out.effects.contains(&Effect::Stop {
            worker: "w1".into(),
            attempt: AttemptId(2)
        }),
        "{:?}",
        out.effects
    );
    // On the shared filesystem there is nothing to remove, and nothing is sent.
    let mut m = Machine::restore(TIMING, root(), snapshot(None), at(RESTART));
    let out = ok(&mut m, RESTART + 100, register_event("w1", 2, &[]));
    assert_eq!(ended(&out.writes).len(), 1);
    assert!(out.effects.is_empty(), "{:?}", out.effects);
}

/// w1 with one slot and room for a queued start.
fn queueing_worker() -> Event {
    Event::Register {
        worker: "w1".into(),
        resources: Resources { queue: 1, ..slots(1) },
        running: Vec::new(),
        staged: false,
    }
}

fn notice(attempt: i64, at: Millis) -> common::wire::StartNotice {
    common::wire::StartNotice {
        attempt: AttemptId(attempt),
        at,
    }
}

#[test]
fn a_worker_that_refuses_starts_for_a_lasting_reason_rests_longer_each_time_and_says_why() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, 0, add_event("p", &["a", "b"]));
    let mut rests = Vec::new();
    let mut t = 0;
    for next in 1..=4 {
        // It gets a start, refuses it for a reason that will not change...
        let (_, effects) = sched(&mut m, t);
        assert_eq!(starts(&effects).len(), 1, "at {t}");
        let refused = Event::StartRefused {
            attempt: AttemptId(next),
            reason: "worker w1 refused the start: '/rel' must be an absolute path without '..'".into(),
            lasting: true,
        };
        ok(&mut m, t, refused);
        // ...and gets none until its rest is over, which doubles each time.
        let (_, effects) = sched(&mut m, t + 1);
        assert!(starts(&effects).is_empty(), "no hot loop");
        let rest = m.workers["w1"].refusing.as_ref().expect("resting").wait_ms;
        rests.push(rest);
        let (_, effects) = sched(&mut m, t + rest - 1);
        assert!(starts(&effects).is_empty());
        t += rest;
    }
    assert_eq!(rests, [1_000, 2_000, 4_000, 8_000]);
    // No attempt was spent, and `hz progress` and `hz workers` say why nothing starts.
    assert_eq!(fragment_of(&m, "p", "a").attempts, 0);
    let held = m.progress(Some("p")).unwrap()[0].held.clone().expect("held");
    assert!(
        held.contains("w1 refuses starts (4 refused)") && held.contains("absolute"),
        "{held}"
    );
    let problem = m.workers()[0].problem.clone().expect("a problem");
    assert!(problem.contains("refuses starts"), "{problem}");
    // A start it runs ends the rest.
    let (_, effects) = sched(&mut m, t);
    let attempt = starts(&effects)[0].1.attempt;
    ok(
        &mut m,
        t,
        Event::Started {
            worker: "w1".into(),
            notices: vec![notice(attempt.0, t)],
        },
    );
    assert!(m.workers["w1"].refusing.is_none());
    assert_eq!(m.progress(Some("p")).unwrap()[0].held, None);
}

#[test]
fn start_notices_tell_running_from_queued_and_a_clean_stop_requeues_at_no_cost() {
    let mut m = machine();
    ok(&mut m, 0, queueing_worker());
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    let (_, effects) = sched(&mut m, 10);
    let attempts: Vec<AttemptId> = starts(&effects).iter().map(|(_, s)| s.attempt).collect();
    assert_eq!(attempts.len(), 2, "one slot and one queued start");
    let p = &m.progress(Some("p")).unwrap()[0];
    assert_eq!((p.running, p.queued, p.pending), (0, 2, 1));
    // The worker says the first started; a notice from another worker counts for nothing.
    let out = ok(
        &mut m,
        20,
        Event::Started {
            worker: "w1".into(),
            notices: vec![notice(attempts[0].0, 15)],
        },
    );
    assert_eq!(
        out.writes,
        [Write::AttemptRan {
            id: attempts[0],
            at: 15
        }]
    );
    ok(
        &mut m,
        20,
        Event::Started {
            worker: "w2".into(),
            notices: vec![notice(attempts[1].0, 15)],
        },
    );
    let p = &m.progress(Some("p")).unwrap()[0];
    assert_eq!((p.running, p.queued), (1, 1));
    let w = &m.workers()[0];
    assert_eq!((w.running, w.queued), (1, 1));
    let active = m.active(0, 10).items;
    assert_eq!(active[0].started, Some(15));
    assert_eq!(active[1].started, None);
    // kinski stops cleanly holding nothing unreported: both go back, costing no attempt.
    let out = ok(
        &mut m,
        30,
        Event::WorkerStopping {
            worker: "w1".into(),
            held: Vec::new(),
        },
    );
    assert!(out.writes.contains(&Write::WorkerSeen {
        name: "w1".into(),
        seen: 30,
        stopped: true
    }));
    let p = &m.progress(Some("p")).unwrap()[0];
    assert_eq!((p.running, p.queued, p.pending), (0, 0, 3));
    for f in ["a", "b"] {
        assert_eq!(fragment_of(&m, "p", f).attempts, 0, "{f}");
    }
    assert_eq!(m.workers()[0].state, "stopped");
    // Not declared lost later (nothing to requeue, no warning).
    let out = step(&mut m, 30 + TIMEOUT * 2, Event::Tick);
    assert!(out.writes.is_empty(), "{:?}", out.writes);
    assert_eq!(m.workers()[0].state, "stopped");
}

#[test]
fn pause_takes_queued_starts_back_and_they_cost_no_attempt() {
    let mut m = machine();
    ok(&mut m, 0, queueing_worker());
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    let (_, effects) = sched(&mut m, 10);
    let attempts: Vec<AttemptId> = starts(&effects).iter().map(|(_, s)| s.attempt).collect();
    ok(
        &mut m,
        20,
        Event::Started {
            worker: "w1".into(),
            notices: vec![notice(attempts[0].0, 15)],
        },
    );
    let out = ok(&mut m, 30, Event::Control(Control::Pause { project: "p".into() }));
    assert_eq!(
        out.effects,
        [Effect::Unqueue {
            worker: "w1".into(),
            attempts: vec![attempts[1]],
        }]
    );
    ok(
        &mut m,
        40,
        Event::TakenBack {
            worker: "w1".into(),
            attempts: vec![attempts[1]],
        },
    );
    let p = &m.progress(Some("p")).unwrap()[0];
    assert_eq!((p.running, p.queued, p.pending), (1, 0, 2));
    assert!(p.paused);
    assert_eq!(fragment_of(&m, "p", "b").attempts, 0);
    // Paused: a free slot gets nothing.
    ok(&mut m, 50, complete_event("w1", attempts[0].0, Exit::Code(0), 50));
    let (_, effects) = sched(&mut m, 60);
    assert!(starts(&effects).is_empty());
    ok(&mut m, 70, Event::Control(Control::Resume { project: "p".into() }));
    let (_, effects) = sched(&mut m, 80);
    assert_eq!(starts(&effects).len(), 2);
}

#[test]
fn retries_are_a_budget_for_failures_of_their_own() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 1, &[]));
    let s = RunSpec {
        retries: 2,
        ..spec("wc -l", 1)
    };
    ok(&mut m, 0, add_event_with("p", &["a"], s));
    // Two failures are retried (max_attempts = 1 does not stop them: it is for losses)...
    for (attempt, t) in [(1, 10), (2, 20)] {
        let (_, effects) = sched(&mut m, t);
        assert_eq!(starts(&effects)[0].1.attempt, AttemptId(attempt));
        ok(&mut m, t + 1, complete_event("w1", attempt, Exit::Code(1), t + 1));
        assert_eq!(
            state(&m, "p", "a"),
            FragmentState::Pending,
            "failure {attempt} is retried"
        );
    }
    // ...the third fails the fragment, with every attempt kept.
    let (_, effects) = sched(&mut m, 30);
    assert_eq!(starts(&effects)[0].1.attempt, AttemptId(3));
    ok(&mut m, 31, complete_event("w1", 3, Exit::Code(1), 31));
    assert_eq!(
        state(&m, "p", "a"),
        FragmentState::Failed {
            attempt: Some(AttemptId(3)),
            reason: "exited with 1".into()
        }
    );
    assert_eq!(
        (fragment_of(&m, "p", "a").attempts, fragment_of(&m, "p", "a").failures),
        (3, 3)
    );
    // `hz retry` grants a fresh budget.
    ok(&mut m, 40, Event::Retry { name: "p".into() });
    assert_eq!(fragment_of(&m, "p", "a").failures, 0);
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

#[test]
fn slot_time_counts_from_the_real_start_and_steers_the_next_slot() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 2, &[]));
    ok(&mut m, 0, add_event("p", &["a", "b", "c"]));
    ok(&mut m, 0, add_event("q", &["a", "b", "c"]));
    let (_, e) = sched(&mut m, 0);
    let started = starts(&e);
    assert_eq!(
        starts_per_project(&e),
        BTreeMap::from([("p".into(), 1), ("q".into(), 1)])
    );
    let of = |name: &str| {
        started
            .iter()
            .find(|(_, s)| s.project == name)
            .expect("started")
            .1
            .attempt
    };
    let (p1, q1) = (of("p"), of("q"));
    // Both heard at 1 s; p's program started at 0, q's at 1 s (by the worker's clock).
    let notices = vec![notice(p1.0, 0), notice(q1.0, 1_000)];
    ok(
        &mut m,
        1_000,
        Event::Started {
            worker: "w1".into(),
            notices,
        },
    );
    // p ran 4 s, q 3 s so far: q is 0.5 s below its half.
    let shares = m.shares();
    assert_eq!(
        shares.iter().map(|s| s.used_ms).collect::<Vec<_>>(),
        [1_000, 0],
        "p counts from its real start, before herzog heard of it"
    );
    let mut done = completion(p1.0, Exit::Code(0), 4_000);
    done.wall_ms = 4_000;
    ok(
        &mut m,
        4_000,
        Event::Complete {
            worker: "w1".into(),
            completion: done,
            staging_error: None,
        },
    );
    let (_, e) = sched(&mut m, 4_000);
    assert_eq!(
        starts_per_project(&e),
        BTreeMap::from([("q".into(), 1)]),
        "the slot goes to the one below its share"
    );
    let shares = m.shares();
    assert_eq!(shares.len(), 2);
    assert_eq!(
        (shares[0].project.as_str(), shares[0].share, shares[0].target),
        ("p", 1, 0.5)
    );
    // A weight changes the target, is written, and 0 is refused.
    let out = ok(
        &mut m,
        4_000,
        Event::Control(Control::Share {
            project: "p".into(),
            share: 3,
        }),
    );
    assert_eq!(
        out.writes,
        [Write::ProjectShare {
            id: ProjectId(1),
            share: 3
        }]
    );
    assert!(
        step(
            &mut m,
            4_000,
            Event::Control(Control::Share {
                project: "p".into(),
                share: 0
            })
        )
        .reply
        .is_err()
    );
    sched(&mut m, 4_001);
    assert_eq!(m.shares()[0].target, 0.75);
}
mod alerts;
mod limits;
mod packing;

#[test]
fn a_worker_that_stops_cleanly_has_its_movable_service_placed_elsewhere_at_once() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, 0, register_event("w2", 1, &[]));
    let file = common::services::ServicesFile::parse(
        "[services.web]\ncommand = \"web\"\nstopwaitsecs = 30\n",
        std::path::Path::new("services.toml"),
    )
    .expect("parses");
    ok(&mut m, 0, Event::ServicesReload { file });
    let placed_on = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Instance(crate::services::Order::Run { worker, .. }) => Some(worker.clone()),
                _ => None,
            })
            .collect()
    };
    let (_, e) = sched(&mut m, 0);
    let first = placed_on(&e);
    assert_eq!(first.len(), 1, "{e:?}");
    let other = if first[0] == "w1" { "w2" } else { "w1" };
    ok(
        &mut m,
        10,
        Event::WorkerStopping {
            worker: first[0].clone(),
            held: Vec::new(),
        },
    );
    // Not after its 30 s stop grace, as for a lost worker: its kinski stopped it already.
    let (_, e) = sched(&mut m, 20);
    assert_eq!(placed_on(&e), [other.to_string()], "{e:?}");
}
