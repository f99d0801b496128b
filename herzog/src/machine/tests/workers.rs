//! Workers as the machine sees them: reconciliation, loss on the monotonic clock, start
//! notices, refused starts and a clean stop.

use super::*;

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

#[test]
fn a_lost_worker_must_register_again() {
    let mut m = machine();
    ok(&mut m, 0, register_event("w1", 1, &[]));
    ok(&mut m, TIMEOUT, Event::Tick);
    assert_eq!(m.workers["w1"].connection, ConnectionState::Lost { since: TIMEOUT });
    let out = step(&mut m, TIMEOUT + 1, heartbeat_event("w1", &[]));
    assert_eq!(
        out.reply,
        Err(Rejected::Api(ApiError::UnknownWorker { name: "w1".into() }))
    );
    ok(&mut m, TIMEOUT + 2, register_event("w1", 1, &[]));
    ok(&mut m, TIMEOUT + 3, heartbeat_event("w1", &[]));
    assert_eq!(m.workers["w1"].connection, ConnectionState::Connected);
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
    assert!(m.workers.values().all(|w| w.connection == ConnectionState::Connected));
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
    assert!(matches!(m.workers["w3"].connection, ConnectionState::Lost { .. }));
    assert_eq!(m.workers["w1"].connection, ConnectionState::Connected);
}

/// w1 with one slot and room for a queued start.

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
