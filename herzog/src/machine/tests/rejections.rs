//! What changes nothing: rejected events, events about unknown things, and late or repeated
//! completions (fencing).

use super::*;

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
