//! The same events give the same replies, writes and effects in the same order, however the
//! machine's maps were filled: what replaying a run from its events depends on.

use super::restore::{RESTART, fragment};
use super::*;

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const PROJECTS: [&str; 3] = ["p", "q", "r"];
const FILES: [&str; 5] = ["a", "b", "c", "d", "e"];

fn trace_out(trace: &mut Vec<String>, out: Out) {
    trace.push(format!("{:?} {:?} {:?}", out.reply, out.writes, out.effects));
}

/// Drives `m` (its workers registered, its projects added) through a run that reaches every
/// map the machine iterates: starts for several projects on several workers, completions in
/// an order of their own, heartbeats, a worker lost with attempts on it, a project removed.
/// Returns every reply, write and effect, in order.
fn drive(m: &mut Machine, t0: Millis) -> Vec<String> {
    let mut trace = Vec::new();
    let (writes, effects) = sched(m, t0);
    let started = starts(&effects);
    assert!(
        started.len() >= 6,
        "the run starts attempts on every worker: {started:?}"
    );
    trace.push(format!("{writes:?} {effects:?}"));
    // Half of them end, the later attempts first; some fail and are retried.
    for (i, (worker, start)) in started.iter().enumerate().rev().step_by(2) {
        let exit = Exit::Code(if i % 4 == 0 { 0 } else { 1 });
        let event = complete_event(worker, start.attempt.0, exit, t0 + 1_000);
        trace_out(&mut trace, ok(m, t0 + 1_000, event));
    }
    let (writes, effects) = sched(m, t0 + 2_000);
    trace.push(format!("{writes:?} {effects:?}"));
    // w2 falls silent; the others report what they run.
    let heard = t0 + 2_000 + TIMEOUT;
    for worker in ["w3", "w1"] {
        let running: Vec<i64> = m.workers[worker].running.iter().map(|a| a.0).collect();
        trace_out(&mut trace, ok(m, heard, heartbeat_event(worker, &running)));
    }
    trace_out(&mut trace, ok(m, heard + 500, Event::Tick));
    let (writes, effects) = sched(m, heard + 500);
    trace.push(format!("{writes:?} {effects:?}"));
    trace_out(
        &mut trace,
        ok(m, heard + 600, Event::RemoveProject { name: "q".into() }),
    );
    let (writes, effects) = sched(m, heard + 700);
    trace.push(format!("{writes:?} {effects:?}"));
    assert!(
        trace.iter().any(|t| t.contains("worker w2 lost")),
        "the run loses w2 with attempts on it: {trace:#?}"
    );
    trace
}

/// A fresh machine with the workers registered in `order` and every project added.
fn fresh(order: [&str; 3]) -> Machine {
    let mut m = machine();
    for worker in order {
        ok(&mut m, 0, register_event(worker, 2, &[]));
    }
    for project in PROJECTS {
        ok(&mut m, 0, add_event(project, &FILES));
    }
    m
}

#[test]
fn the_same_events_give_the_same_replies_writes_and_effects() {
    let (mut a, mut b) = (fresh(WORKERS), fresh(WORKERS));
    assert_eq!(drive(&mut a, 100), drive(&mut b, 100));
    assert_eq!(digest(&a), digest(&b));
}

#[test]
fn the_order_workers_registered_in_changes_no_decision() {
    let mut a = fresh(WORKERS);
    let mut b = fresh(["w3", "w1", "w2"]);
    assert_eq!(drive(&mut a, 100), drive(&mut b, 100));
    assert_eq!(digest(&a), digest(&b));
}

/// What the store would hand back for the projects and workers in the orders given (each
/// project with its own id, every fragment pending).
fn listed_snapshot(projects: [&str; 3], workers: [&str; 3]) -> Snapshot {
    let projects = projects
        .iter()
        .map(|name| {
            let n = PROJECTS.iter().position(|p| p == name).expect("a known project") as i64;
            let fragments = (0..FILES.len() as i64)
                .map(|i| fragment(10 * (n + 1) + i, 0, FragmentState::Pending))
                .collect();
            Project::new(
                ProjectId(n + 1),
                name.to_string(),
                PathBuf::from("/data"),
                spec("wc -l", 2),
                PathBuf::from(format!("/results/{name}")),
                0,
                Arc::new(FILES.into_iter().collect()),
                fragments,
            )
        })
        .collect();
    Snapshot {
        projects,
        workers: workers
            .iter()
            .map(|name| StoredWorker {
                name: name.to_string(),
                resources: slots(2),
                last_seen: 0,
                drained: false,
                stopped: false,
            })
            .collect(),
        max_project: 3,
        max_fragment: 40,
        ..Snapshot::default()
    }
}

#[test]
fn a_machine_restored_from_lists_in_any_order_decides_the_same() {
    let restored = |projects, workers| {
        let mut m = Machine::restore(TIMING, root(), listed_snapshot(projects, workers), at(RESTART));
        for worker in WORKERS {
            ok(&mut m, RESTART, register_event(worker, 2, &[]));
        }
        m
    };
    let mut a = restored(PROJECTS, WORKERS);
    let mut b = restored(["r", "p", "q"], ["w2", "w3", "w1"]);
    assert_eq!(drive(&mut a, RESTART), drive(&mut b, RESTART));
    assert_eq!(digest(&a), digest(&b));
}
