//! Fragment transitions through events: every legal one, retries and their budget, and the
//! illegal ones refused.

use super::*;

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
    assert_eq!(m.workers["w1"].connection, ConnectionState::Disconnected { since: 400 });
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
    assert_eq!(
        m.workers["w1"].connection,
        ConnectionState::Lost { since: 300 + TIMEOUT }
    );
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
