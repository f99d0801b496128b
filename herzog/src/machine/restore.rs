//! Rebuilding the state from what the store holds after a restart.

use super::*;

/// A worker as the record keeps it.
#[derive(Debug, Clone)]
pub(crate) struct StoredWorker {
    pub(crate) name: String,
    pub(crate) resources: Resources,
    pub(crate) last_seen: Millis,
    pub(crate) drained: bool,
    pub(crate) stopped: bool,
}

/// What the store hands back at start-up.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) projects: Vec<Project>,
    pub(crate) workers: Vec<StoredWorker>,
    pub(crate) policy: Option<Policy>,
    pub(crate) max_project: i64,
    pub(crate) max_fragment: i64,
    pub(crate) max_attempt: i64,
    /// The services file in force, and its instances as recorded.
    pub(crate) services: common::services::ServicesFile,
    pub(crate) instances: Vec<crate::services::Recorded>,
    pub(crate) max_run: i64,
    pub(crate) max_event: i64,
    /// When the running attempts' programs started, for those a worker said so.
    pub(crate) ran: BTreeMap<AttemptId, Millis>,
}

impl Machine {
    /// Rebuilds the state after a restart. Workers come back disconnected with a fresh
    /// timeout, so their attempts are kept until they re-register or the watchdog fires.
    pub(crate) fn restore(timing: Timing, results_root: PathBuf, snap: Snapshot, now: Now) -> Self {
        let mut m = Machine::new(timing, results_root);
        m.next_project = snap.max_project + 1;
        m.next_fragment = snap.max_fragment + 1;
        m.next_attempt = snap.max_attempt + 1;
        m.next_event = snap.max_event + 1;
        m.policy = snap.policy.unwrap_or(Policy::Fair);
        m.services = crate::services::Services::restore(snap.services, snap.instances, snap.max_run, now.mono);
        for sw in snap.workers {
            let mut worker = Worker::new(
                sw.name.clone(),
                sw.resources,
                ConnectionState::Disconnected { since: now.wall },
                now,
            );
            worker.last_seen = sw.last_seen;
            worker.seen_stored = sw.last_seen;
            worker.drained = sw.drained;
            if sw.stopped {
                worker.connection = ConnectionState::Stopped { since: sw.last_seen };
            }
            m.workers.insert(sw.name, worker);
        }
        for mut p in snap.projects {
            p.counts = Counts::default();
            p.queue.clear();
            p.failures.clear();
            p.started = 0;
            for (i, f) in p.fragments.iter().enumerate() {
                *p.counts.slot(&f.state) += 1;
                match &f.state {
                    FragmentState::Pending => p.queue.push_back(i as u32),
                    FragmentState::Failed { reason, .. } => *p.failures.entry(reason.clone()).or_default() += 1,
                    FragmentState::Running { attempt, worker, since } => {
                        // Dispatched as long ago as the record says (the one place the wall
                        // clock reaches a timeout: a restored attempt's start grace).
                        let ago = (now.wall - since).max(0);
                        let mut live = Live::new(p.id, i as u32, Mono(now.mono.0 - ago));
                        live.ran = snap.ran.get(attempt).copied();
                        p.started += u64::from(live.ran.is_some());
                        if live.ran.is_some() && p.job.is_none() {
                            // Slot-time accrues afresh from a restart (see "Scheduling").
                            live.counted = Some(now.mono);
                            m.fair
                                .start_n(p.id, Size::of(&p.spec.requests).cpus, now.mono.0, now.mono.0);
                        }
                        m.live.insert(*attempt, live);
                        let size = Size::of(&p.spec.requests);
                        let w = m.workers.entry(worker.clone()).or_insert_with(|| {
                            Worker::new(
                                worker.clone(),
                                Resources::default(),
                                ConnectionState::Disconnected { since: now.wall },
                                now,
                            )
                        });
                        w.running.insert(*attempt);
                        w.held.add(size);
                    }
                    _ => {}
                }
            }
            m.fair.set_weight(p.id, p.share, now.mono.0);
            m.by_name.insert(p.name.clone(), p.id);
            m.projects.insert(p.id, p);
        }
        // A worker silent past the timeout before this start, with nothing left on it, was
        // lost then: it is not declared lost again (and logged) after every restart.
        for w in m.workers.values_mut() {
            if w.connection == (ConnectionState::Disconnected { since: now.wall })
                && w.running.is_empty()
                && now.wall - w.last_seen >= timing.worker_timeout_ms
            {
                w.connection = ConnectionState::Lost { since: w.last_seen };
            }
        }
        m
    }

    /// Shows the workers whose hosts lack the shared filesystem as staging from the start (they
    /// are checked again when they register).
    pub(crate) fn with_staged_hosts(mut self, staged: impl Fn(&str) -> bool) -> Self {
        for w in self.workers.values_mut() {
            if staged(&w.name) {
                w.staging = match w.resources.scratch_dir.clone() {
                    Some(scratch) => Staging::Checking { scratch },
                    None => Staging::Broken {
                        scratch: None,
                        reason: "not checked since herzog started".into(),
                        since: Mono(i64::MIN / 2),
                    },
                };
            }
        }
        self
    }
}
