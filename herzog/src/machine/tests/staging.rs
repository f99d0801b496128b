//! Hosts without the shared filesystem: the login check, files staged in scratch, and
//! what is dropped there when an attempt ends without running.

use super::restore::{RESTART, snapshot};
use super::*;

pub(super) fn staged_register(worker: &str, n: u32) -> Event {
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
