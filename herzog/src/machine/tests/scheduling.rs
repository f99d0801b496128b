//! Scheduling through the machine: fair shares and slot-time, priority, queue depth, and
//! what holds every start (no slots, no room on the state filesystem).

use super::*;

pub(super) fn three_projects(m: &mut Machine) {
    let files: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    for name in ["p", "q", "r"] {
        ok(m, 0, add_event(name, &files));
    }
    ok(m, 0, register_event("w1", 6, &[]));
}

pub(super) fn starts_per_project(effects: &[Effect]) -> BTreeMap<String, usize> {
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
