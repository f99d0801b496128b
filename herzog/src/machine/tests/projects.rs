//! Projects: adding one writes it whole, every fragment change is written once, pausing
//! takes queued starts back, removing one stops its attempts.

use super::*;

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
