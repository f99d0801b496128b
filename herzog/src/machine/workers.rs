//! Workers: what they offer, registering and heartbeats (reconciled against what herzog
//! expects there), the staging check of hosts without the shared filesystem, and the watchdog.

use super::*;

/// How long the starts queued on a worker should keep its slots busy: longer than herzog's
/// round trip (completion, up to `engine::COMMIT_SPACING` waiting for a commit, the commit,
/// the start) takes even on a loaded host, so no slot waits for herzog between two short
/// attempts.
const QUEUE_COVERS_MS: u64 = 50;

#[derive(Clone, Debug)]
pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) resources: Resources,
    pub(crate) connection: ConnectionState,
    /// When it was last heard from, as shown (wall time)...
    pub(crate) last_seen: Millis,
    /// ...and as the watchdog measures it.
    pub(crate) heard: Mono,
    /// Attempts herzog believes run there.
    pub(crate) running: BTreeSet<AttemptId>,
    /// Attempts it last reported that herzog does not expect (being stopped): they hold
    /// slots until they are gone.
    pub(crate) foreign: u32,
    pub(crate) staging: Staging,
    /// `hz drain`: it finishes what it runs and takes nothing new.
    pub(crate) drained: bool,
    /// It refuses starts for a lasting reason: it rests.
    pub(crate) refusing: Option<Refusing>,
    /// The last contact written to the record (a heartbeat writes it at most every
    /// [`SEEN_WRITE_MS`]).
    pub(crate) seen_stored: Millis,
    /// What the attempts it holds (`running`, and the `foreign` ones at 1 CPU each) ask for.
    pub(crate) held: Held,
}

/// How stale the recorded last contact of a connected worker may get: what `hz workers`
/// shows for it after a restart of herzog.
const SEEN_WRITE_MS: i64 = 30_000;

impl Worker {
    pub(super) fn new(name: String, resources: Resources, connection: ConnectionState, now: Now) -> Worker {
        Worker {
            name,
            resources,
            connection,
            last_seen: now.wall,
            heard: now.mono,
            running: BTreeSet::new(),
            foreign: 0,
            staging: Staging::Shared,
            drained: false,
            refusing: None,
            seen_stored: now.wall,
            held: Held::new(),
        }
    }

    /// It reports `n` attempts herzog does not expect: each holds a slot and a CPU until gone.
    fn set_foreign(&mut self, n: u32) {
        let default = Size { cpus: 1, memory: 0 };
        for _ in n..self.foreign {
            self.held.remove(default);
        }
        for _ in self.foreign..n {
            self.held.add(default);
        }
        self.foreign = n;
    }

    /// The CPUs and memory its attempts are packed into: what it offers.
    pub(crate) fn offer(&self) -> Size {
        Size {
            cpus: self.resources.offered_cpus(),
            memory: self.resources.offered_memory(),
        }
    }

    /// Whether the scheduler may give it work now.
    pub(super) fn takes_starts(&self, now: Now) -> bool {
        self.connection == ConnectionState::Connected
            && matches!(self.staging, Staging::Shared | Staging::Ready { .. })
            && !self.drained
            && self.refusing.as_ref().is_none_or(|r| now.mono >= r.until)
    }

    /// How many attempts herzog keeps dispatched to this worker when the pending attempts
    /// last `attempt_ms` (`None`: not known yet): its slots, plus as many queued starts as
    /// keep them busy for [`QUEUE_COVERS_MS`]. That is as many as the slots for attempts of
    /// 50 ms or more (a project given priority waits at most one attempt per slot), and up to
    /// the whole queue the worker accepts for attempts of a few milliseconds.
    pub(crate) fn capacity(&self, attempt_ms: Option<u64>) -> u32 {
        let Resources { slots, queue, .. } = self.resources;
        let least = slots.min(queue);
        let queued = match attempt_ms {
            None => least,
            Some(ms) => {
                let covering = u64::from(slots) * QUEUE_COVERS_MS / ms.max(1);
                // At most `queue`, so it fits.
                (covering.min(u64::from(queue)) as u32).max(least)
            }
        };
        slots.saturating_add(queued)
    }
}

impl Machine {
    pub(super) fn register(
        &mut self,
        now: Now,
        name: String,
        resources: Resources,
        running: Vec<AttemptId>,
        staged: bool,
    ) -> Result<Reply, Rejected> {
        common::name::check_name(&name)?;
        let w = self
            .workers
            .entry(name.clone())
            .or_insert_with(|| Worker::new(name.clone(), resources.clone(), ConnectionState::Connected, now));
        w.resources = resources.clone();
        w.connection = ConnectionState::Connected;
        w.last_seen = now.wall;
        w.seen_stored = now.wall;
        w.heard = now.mono;
        w.refusing = None;
        // A staged host gets no work until herzog has logged in to it; a re-registration
        // keeps a known-good login (the worker, not its host, came back).
        w.staging = match (staged, resources.scratch_dir.clone(), &w.staging) {
            (false, _, _) => Staging::Shared,
            (true, Some(scratch), Staging::Ready { scratch: known }) if *known == scratch => Staging::Ready { scratch },
            (true, Some(scratch), _) => {
                self.effects.push(Effect::Probe {
                    worker: name.clone(),
                    scratch: scratch.clone(),
                });
                Staging::Checking { scratch }
            }
            (true, None, _) => Staging::Broken {
                scratch: None,
                reason: format!(
                    "host {name} has no shared filesystem (cluster.toml) but its kinski reported no scratch directory: upgrade kinski there"
                ),
                since: now.mono,
            },
        };
        self.writes.push(Write::Worker {
            name: name.clone(),
            resources,
            seen: now.wall,
        });
        tracing::info!(worker = %name, running = running.len(), "worker registered");
        self.reconcile(now, &name, &running);
        Ok(Reply::Registered)
    }

    pub(super) fn heartbeat(&mut self, now: Now, name: &str, running: Vec<AttemptId>) -> Result<Reply, Rejected> {
        let w = match self.workers.get_mut(name) {
            Some(w)
                if !matches!(
                    w.connection,
                    ConnectionState::Lost { .. } | ConnectionState::Stopped { .. }
                ) =>
            {
                w
            }
            // A lost or unknown worker must register again, which reconciles it.
            _ => return Err(ApiError::UnknownWorker { name: name.to_string() }.into()),
        };
        w.last_seen = now.wall;
        w.heard = now.mono;
        if now.wall - w.seen_stored >= SEEN_WRITE_MS {
            w.seen_stored = now.wall;
            self.writes.push(Write::WorkerSeen {
                name: name.to_string(),
                seen: now.wall,
                stopped: false,
            });
        }
        if w.connection == ConnectionState::Connected {
            self.reconcile(now, name, &running);
        }
        Ok(Reply::Done)
    }

    /// Compares what the worker runs with what herzog expects there: the unexpected are
    /// stopped, the missing (past the start grace) are lost and requeued.
    fn reconcile(&mut self, now: Now, worker: &str, reported: &[AttemptId]) {
        let reported_set: BTreeSet<AttemptId> = reported.iter().copied().collect();
        let expected = self.workers.get(worker).map(|w| w.running.clone()).unwrap_or_default();
        if let Some(w) = self.workers.get_mut(worker) {
            w.set_foreign(reported_set.difference(&expected).count() as u32);
        }
        for &attempt in reported_set.difference(&expected) {
            if attempt.0 < self.next_attempt {
                // One herzog ended: stopped, or completed with the acknowledgement crossing
                // this report. The worker lets go of it soon; the stop makes sure.
                tracing::debug!(%worker, %attempt, "worker still holds an attempt herzog ended: stopping it");
            } else {
                tracing::warn!(%worker, %attempt, "worker runs an attempt herzog never issued: stopping it");
            }
            // kinski stops it with the grace of the start it received.
            self.effects.push(Effect::Stop {
                worker: worker.to_string(),
                attempt,
            });
        }
        for &attempt in expected.difference(&reported_set) {
            let since = self.live.get(&attempt).map_or(now.mono, |l| l.since);
            if now.mono.since(since) >= self.timing.start_grace_ms {
                tracing::warn!(%worker, %attempt, "worker does not run an attempt herzog expects: requeueing");
                self.end_live(
                    now,
                    attempt,
                    AttemptEnd::Lost,
                    None,
                    Some(format!("{worker} no longer runs it")),
                );
                // Its directory may have been prepared there (a start lost with a killed
                // herzog).
                self.drop_prepared(worker, attempt);
            }
        }
    }

    /// An attempt that never started on a staged worker may have had its directory prepared
    /// there (its files uploaded): a stop has kinski remove it.
    pub(super) fn drop_prepared(&mut self, worker: &str, attempt: AttemptId) {
        if self.workers.get(worker).is_some_and(|w| w.staging != Staging::Shared) {
            self.effects.push(Effect::Stop {
                worker: worker.to_string(),
                attempt,
            });
        }
    }

    pub(super) fn probed(&mut self, now: Now, worker: &str, result: Result<(), String>) {
        let Some(w) = self.workers.get_mut(worker) else { return };
        // Only the check that is outstanding counts: a worker that re-registered as shared,
        // or whose scratch directory changed, ignores an older answer.
        let Staging::Checking { scratch } = &w.staging else {
            return;
        };
        let scratch = scratch.clone();
        match result {
            Ok(()) => {
                tracing::info!(%worker, scratch = %scratch.display(), "logged in over SSH: staging ready");
                w.staging = Staging::Ready { scratch };
            }
            Err(reason) => {
                tracing::warn!(%worker, %reason, "cannot stage files to this worker's host: it gets no work until a check succeeds");
                w.staging = Staging::Broken {
                    scratch: Some(scratch),
                    reason,
                    since: now.mono,
                };
            }
        }
    }

    /// A transfer failed after its retries: the host gets no more work until a new check
    /// succeeds.
    pub(super) fn staging_broke(&mut self, now: Now, worker: &str, reason: String) {
        if let Some(w) = self.workers.get_mut(worker)
            && let Some(scratch) = w.staging.scratch().cloned()
        {
            tracing::warn!(%worker, %reason, "staging failed: this worker gets no work until a check succeeds");
            w.staging = Staging::Broken {
                scratch: Some(scratch),
                reason,
                since: now.mono,
            };
        }
    }

    /// Checks again, after a pause, the hosts herzog could not log in to.
    pub(super) fn recheck_staging(&mut self, now: Now) {
        for w in self.workers.values_mut() {
            if let Staging::Broken {
                scratch: Some(scratch),
                since,
                ..
            } = &w.staging
                && w.connection == ConnectionState::Connected
                && now.mono.since(*since) >= self.timing.probe_retry_ms
            {
                let scratch = scratch.clone();
                self.effects.push(Effect::Probe {
                    worker: w.name.clone(),
                    scratch: scratch.clone(),
                });
                w.staging = Staging::Checking { scratch };
            }
        }
    }

    /// Declares silent workers lost; their attempts go back to the queue.
    pub(super) fn watchdog(&mut self, now: Now) {
        let silent: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                // A cleanly stopped worker is watched only for what it still holds.
                let watched = match w.connection {
                    ConnectionState::Lost { .. } => false,
                    ConnectionState::Stopped { .. } => !w.running.is_empty(),
                    ConnectionState::Connected | ConnectionState::Disconnected { .. } => true,
                };
                watched && now.mono.since(w.heard) >= self.timing.worker_timeout_ms
            })
            .map(|w| w.name.clone())
            .collect();
        for name in silent {
            let w = self.workers.get_mut(&name).expect("listed above");
            w.connection = ConnectionState::Lost { since: now.wall };
            let attempts: Vec<AttemptId> = w.running.iter().copied().collect();
            tracing::warn!(worker = %name, attempts = attempts.len(), "worker lost: requeueing its fragments");
            self.services.lost(&name, now.wall, now.mono);
            self.worker_lost_alert(now, &name, attempts.len());
            for attempt in attempts {
                self.end_live(
                    now,
                    attempt,
                    AttemptEnd::Lost,
                    None,
                    Some(format!("worker {name} lost")),
                );
            }
        }
    }
}
