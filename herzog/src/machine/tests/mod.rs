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

mod alerts;
mod determinism;
mod invariants;
mod limits;
mod packing;
mod projects;
mod random;
mod rejections;
mod restore;
mod scheduling;
mod staging;
mod transitions;
mod workers;
