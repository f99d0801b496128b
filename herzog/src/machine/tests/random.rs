//! The property test: random event sequences (restarts from the real store among them)
//! keep every invariant.

use super::invariants::{Model, check_invariants};
use super::*;

pub(super) const PROJECT_NAMES: [&str; 4] = ["p", "q", "r", "bad name"];
pub(super) const WORKER_NAMES: [&str; 4] = ["w1", "w2", "w3", "ghost"];
pub(super) const PROP_TIMING: Timing = Timing {
    worker_timeout_ms: 5_000,
    start_grace_ms: 1_000,
    probe_retry_ms: 3_000,
};

/// An attempt id, chosen when the step runs from what has happened so far.
#[derive(Clone, Debug)]
pub(super) enum Pick {
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
pub(super) enum Op {
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

pub(super) fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        3 => any::<usize>().prop_map(Pick::Issued),
        3 => any::<usize>().prop_map(Pick::Live),
        4 => any::<usize>().prop_map(Pick::Mine),
        1 => (-1i64..60).prop_map(Pick::Raw),
    ]
}

/// Completions mostly name a live attempt; the rest are stale or never issued.
pub(super) fn completed_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        6 => any::<usize>().prop_map(Pick::Live),
        2 => any::<usize>().prop_map(Pick::Issued),
        1 => (-1i64..60).prop_map(Pick::Raw),
    ]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
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

pub(super) fn run_op(m: &Machine, model: &Model, now: Millis, op: &Op) -> Event {
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
pub(super) fn runs_on(m: &Machine, attempt: AttemptId) -> Option<String> {
    let l = m.live.get(&attempt)?;
    match &m.projects[&l.project].fragments[l.index as usize].state {
        FragmentState::Running { worker, .. } => Some(worker.clone()),
        _ => None,
    }
}

pub(super) fn live_set(m: &Machine) -> BTreeSet<AttemptId> {
    m.live.keys().copied().collect()
}

/// A restart from what `store` holds, which must give back the machine's picture: a wrong
/// write or row mapping shows here.
pub(super) fn restart(m: &Machine, store: &crate::store::Store, now: Now) -> Result<Machine, TestCaseError> {
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
            ConnectionState::Lost { since: w.last_seen }
        } else {
            ConnectionState::Disconnected { since: now.wall }
        };
        prop_assert_eq!(&w.connection, &expected);
        prop_assert_eq!(&w.running, &m.workers[&w.name].running);
    }
    Ok(restored)
}

/// Commits what a step wrote, as the engine does: a write the schema refuses fails the test.
pub(super) fn commit(store: &mut crate::store::Store, writes: &[Write]) -> Result<(), TestCaseError> {
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
                        prop_assert_eq!(&m.workers[worker].connection, &ConnectionState::Connected);
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
                .filter(|w| w.connection == ConnectionState::Connected)
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
                prop_assert_eq!(&m.workers[worker].connection, &ConnectionState::Connected, "start on {} which is not connected", worker);
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
