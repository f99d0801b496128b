//! The attempts this worker holds: running, queued for the next free slot, and finished but
//! not yet acknowledged by herzog. Each attempt's task spawns the process, waits for it and queues its completion.
//! Every change is journaled before it is visible to herzog.
//!
//! Programs are spawned outside the lock and off the runtime: a spawn returns only once the
//! child has reached `exec` ([`crate::exec`]), half a millisecond on a busy host, and it comes
//! with directory work that a slow filesystem can stall for seconds. Under the lock, the
//! other slot's completion, the heartbeat and herzog's start calls all waited for it; on a
//! runtime thread, so did every other task. So `prepare` and the spawns run on blocking threads.
//!
//! A staged attempt's directory `<scratch>/<attempt>/` stays kinski's (mode 0755): its log files
//! are written there by kinski, so nothing the program plants can redirect them. `out/` is the
//! program's (owned by `run_as`); `in/` belongs to herzog's SSH login while herzog uploads into
//! it, and is handed to `run_as` when the attempt starts, since it is the program's working
//! directory. Every one of these is made and handed over through descriptors
//! ([`common::dirfd`]), so no link is ever followed.

mod prepare;

use crate::journal::{Journal, Started};
use crate::leftovers::process_starttime;
use crate::process::{Process, SpawnError, Stopper, start_failed};
use crate::taps::AttemptTaps;
use common::AttemptId;
use common::dirfd::{DIR_MODE, DirFd};
use common::service::WorkerError;
use common::wire::{Completion, StartAttempt};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// An attempt whose process runs.
struct Running {
    stopper: Stopper,
    grace: Duration,
    /// Named in the log line of its end.
    project: String,
    fragment: String,
    /// A job's stdin and terminal.
    connection: crate::interactive::Connection,
}

struct Inner {
    running: HashMap<AttemptId, Running>,
    /// Attempts that started and that herzog has not been told of yet, with when.
    unnoticed: BTreeMap<AttemptId, common::Millis>,
    /// When each running attempt started, to tell a new session of herzog.
    started_at: HashMap<AttemptId, common::Millis>,
    /// Given a slot and being spawned outside the lock; true once a stop was asked for.
    starting: HashMap<AttemptId, bool>,
    /// Accepted beyond the slots: started, in order, the moment a slot frees.
    queued: VecDeque<StartAttempt>,
    /// Completions herzog has not acknowledged yet, oldest first.
    unacked: BTreeMap<AttemptId, Completion>,
    /// Attempts with a directory in the scratch directory (prepared for staging), removed
    /// when herzog has what it needs from it or no longer expects the attempt. On the
    /// shared filesystem there is none to remove.
    staged: HashSet<AttemptId>,
    /// What followers read each attempt's output through (`hz logs -f`), from the acceptance
    /// of its start until a while after its end.
    taps: AttemptTaps,
    journal: Journal,
}

impl Inner {
    fn log_failure(&mut self, what: &str, result: Result<(), crate::journal::JournalError>) {
        // Not fatal: the result is still reported from memory; only a crash before the
        // report would cost a re-run (herzog requeues what it does not hear about).
        if let Err(e) = result {
            tracing::error!(error = %e, "failed to journal {what}");
        }
    }

    fn holds(&self, attempt: AttemptId) -> bool {
        self.running.contains_key(&attempt)
            || self.starting.contains_key(&attempt)
            || self.unacked.contains_key(&attempt)
            || self.queued.iter().any(|s| s.attempt == attempt)
    }

    /// Slots taken: running, or being spawned.
    fn busy(&self) -> usize {
        self.running.len() + self.starting.len()
    }
}

/// Shared by the Worker service, the reporter and the attempt tasks.
#[derive(Clone)]
pub(crate) struct Supervisor {
    inner: Arc<Mutex<Inner>>,
    slots: u32,
    queue: u32,
    run_as: Option<crate::user::RunAs>,
    /// Where staged attempts get their directories (`<scratch>/<attempt>`).
    scratch: PathBuf,
    /// Woken when a completion is queued.
    pub(crate) finished: Arc<Notify>,
    /// Woken whenever an attempt stops being `starting`.
    started: Arc<Notify>,
    /// Woken when an attempt's program started (herzog is told).
    pub(crate) ran: Arc<Notify>,
    shutting_down: Arc<AtomicBool>,
    /// Where each attempt gets its cgroup (none while walking).
    tracking: crate::cgroup::Tracking,
}

impl Supervisor {
    /// A supervisor holding the completions a previous kinski left unacknowledged.
    pub(crate) fn new(
        slots: u32,
        queue: u32,
        run_as: Option<crate::user::RunAs>,
        scratch: PathBuf,
        journal: Journal,
        unacked: Vec<Completion>,
    ) -> Self {
        let unacked = unacked.into_iter().map(|c| (c.attempt, c)).collect();
        let inner = Inner {
            running: HashMap::new(),
            unnoticed: BTreeMap::new(),
            started_at: HashMap::new(),
            starting: HashMap::new(),
            queued: VecDeque::new(),
            unacked,
            staged: HashSet::new(),
            taps: AttemptTaps::default(),
            journal,
        };
        Supervisor {
            inner: Arc::new(Mutex::new(inner)),
            slots,
            queue,
            run_as,
            scratch,
            finished: Arc::new(Notify::new()),
            started: Arc::new(Notify::new()),
            ran: Arc::new(Notify::new()),
            shutting_down: Arc::default(),
            tracking: crate::cgroup::Tracking::Walk {
                why: "no cgroups given".to_string(),
            },
        }
    }

    /// Each attempt gets a cgroup of `tracking`'s, which holds it to its requests.
    pub(crate) fn with_tracking(mut self, tracking: crate::cgroup::Tracking) -> Self {
        self.tracking = tracking;
        self
    }

    /// The attempt's cgroup, where kinski has them: every attempt gets one, so whatever its
    /// program leaves running (a child that called setsid too) dies with it. Blocking.
    fn cgroup(&self, start: &StartAttempt) -> Result<Option<crate::cgroup::Tree>, SpawnError> {
        Ok(self.tracking.attempt(start.attempt, &start.requests)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    /// Starts an attempt, or queues it when every slot is busy; an attempt already held is a
    /// no-op (herzog may resend).
    pub(crate) fn start(&self, start: StartAttempt) -> Result<(), WorkerError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(WorkerError::ShuttingDown);
        }
        self.check_paths(&start)?;
        let mut inner = self.lock();
        if inner.holds(start.attempt) {
            return Ok(());
        }
        if inner.busy() < self.slots as usize {
            inner.starting.insert(start.attempt, false);
            inner.taps.open(start.attempt, start.stdout == start.stderr);
            drop(inner);
            self.launch(vec![start]);
        } else if start.interactive.is_some() {
            // A job (`hz run`) takes the next free slot, ahead of the batch starts queued.
            inner.taps.open(start.attempt, start.stdout == start.stderr);
            inner.queued.push_front(start);
        } else if inner.queued.len() < self.queue as usize {
            inner.taps.open(start.attempt, start.stdout == start.stderr);
            inner.queued.push_back(start);
        } else {
            return Err(WorkerError::NoFreeSlot { slots: self.slots });
        }
        Ok(())
    }

    /// Gives the free slots to the first queued starts, marking them `starting`.
    fn take_queued(&self, inner: &mut Inner) -> Vec<StartAttempt> {
        let mut next = Vec::new();
        while inner.busy() < self.slots as usize {
            let Some(start) = inner.queued.pop_front() else { break };
            inner.starting.insert(start.attempt, false);
            next.push(start);
        }
        next
    }

    /// Spawns `starting` attempts' processes on a blocking thread (see [`Self::launch_now`]).
    fn launch(&self, starts: Vec<StartAttempt>) {
        if starts.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.launch_now(starts));
    }

    /// Spawns `starting` attempts' processes, each with a task that waits for it. Blocking,
    /// and called without the lock; each start is recorded under it once its process exists.
    fn launch_now(&self, starts: Vec<StartAttempt>) {
        let mut todo = VecDeque::from(starts);
        while let Some(start) = todo.pop_front() {
            let attempt = start.attempt;
            let grace = Duration::from_millis(start.grace_ms);
            let taps = self.lock().taps.open(attempt, start.stdout == start.stderr);
            let spawned = self
                .hand_over_inputs(&start)
                .and_then(|()| {
                    let tree = self.cgroup(&start)?;
                    Process::spawn_tapped(&start, self.run_as.as_ref(), &taps, tree)
                })
                .map(|process| {
                    let starttime = process_starttime(process.pid()).unwrap_or(0);
                    (process, starttime)
                });
            let mut inner = self.lock();
            let stop_asked = inner.starting.remove(&attempt).unwrap_or(false);
            match spawned {
                Ok((mut process, starttime)) => {
                    let pid = process.pid();
                    let connection = process.take_connection();
                    tracing::info!(%attempt, project = %start.project, fragment = %start.fragment, pid, "attempt started");
                    let record = Started {
                        attempt,
                        pgid: pid,
                        starttime,
                    };
                    let result = inner.journal.started(record);
                    inner.log_failure("a start", result);
                    let stopper = process.stopper();
                    let at = common::now_millis();
                    // The notice task wakes for the first start it has not told of yet.
                    let wake = inner.unnoticed.is_empty();
                    inner.unnoticed.insert(attempt, at);
                    inner.started_at.insert(attempt, at);
                    inner.running.insert(
                        attempt,
                        Running {
                            stopper: stopper.clone(),
                            grace,
                            project: start.project.clone(),
                            fragment: start.fragment.clone(),
                            connection,
                        },
                    );
                    drop(inner);
                    if wake {
                        self.ran.notify_one();
                    }
                    let me = self.clone();
                    tokio::spawn(async move {
                        let completion = process.wait().await.into_completion(attempt);
                        me.finish(completion);
                    });
                    // Asked to stop while it was being spawned, or kinski is going away.
                    if stop_asked || self.shutting_down.load(Ordering::SeqCst) {
                        stop_in_background(attempt, stopper, grace);
                    }
                }
                Err(e) => {
                    // The program's own problem (a typo, a missing directory): herzog records it
                    // and the user sees it; nothing is wrong with kinski.
                    tracing::info!(%attempt, error = %e, "attempt could not start");
                    let completion = start_failed(&start, e.to_string());
                    inner.taps.end(attempt);
                    let result = inner.journal.done(&completion);
                    inner.log_failure("a completion", result);
                    inner.unacked.insert(attempt, completion);
                    // Its slot is free again.
                    todo.extend(self.take_queued(&mut inner));
                    drop(inner);
                    self.finished.notify_one();
                }
            }
            self.started.notify_waiters();
        }
    }

    fn finish(&self, completion: Completion) {
        let mut inner = self.lock();
        let ran = inner.running.remove(&completion.attempt);
        // Its output is finished: followers read the rest, then the end.
        inner.taps.end(completion.attempt);
        // The completion tells herzog it ran.
        inner.unnoticed.remove(&completion.attempt);
        inner.started_at.remove(&completion.attempt);
        if self.shutting_down.load(Ordering::SeqCst) {
            // Stopped because kinski is going away: not the program's failure. Left out of
            // the record, herzog requeues the attempt when this worker registers without it.
            tracing::info!(attempt = %completion.attempt, "attempt stopped for shutdown; herzog will requeue it");
            return;
        }
        let (project, fragment) = ran.map(|r| (r.project, r.fragment)).unwrap_or_default();
        tracing::info!(attempt = %completion.attempt, %project, %fragment, exit = %completion.exit, wall_ms = completion.wall_ms, "attempt finished");
        let result = inner.journal.done(&completion);
        inner.log_failure("a completion", result);
        inner.unacked.insert(completion.attempt, completion);
        let next = self.take_queued(&mut inner);
        drop(inner);
        self.finished.notify_one();
        self.launch(next);
    }

    /// Stops an attempt: a queued one is dropped, a running one is signalled in the
    /// background (stop signal, grace, SIGKILL). One that was only prepared (herzog gave up
    /// on it before its start arrived) has its directory removed before this returns.
    pub(crate) async fn stop(&self, attempt: AttemptId) -> Result<(), WorkerError> {
        // Decided under the lock, done after it (the guard must not live across an await).
        let prepared_only = {
            let mut inner = self.lock();
            if let Some(i) = inner.queued.iter().position(|s| s.attempt == attempt) {
                inner.queued.remove(i);
                inner.taps.end(attempt);
                let staged = inner.staged.remove(&attempt);
                drop(inner);
                tracing::info!(%attempt, "dropped a queued attempt");
                if staged {
                    drop(self.clean(attempt));
                }
                return Ok(());
            }
            if let Some(stop_asked) = inner.starting.get_mut(&attempt) {
                // Stopped the moment its process exists.
                *stop_asked = true;
                return Ok(());
            }
            if let Some((stopper, grace)) = inner.running.get(&attempt).map(|r| (r.stopper.clone(), r.grace)) {
                drop(inner);
                stop_in_background(attempt, stopper, grace);
                return Ok(());
            }
            // Finished and not acknowledged: herzog may still fetch its outputs.
            !inner.unacked.contains_key(&attempt) && inner.staged.remove(&attempt)
        };
        if !prepared_only {
            return Err(WorkerError::UnknownAttempt { attempt });
        }
        let _ = self.clean(attempt).await;
        tracing::info!(%attempt, "removed the directory of a prepared attempt herzog no longer expects");
        Ok(())
    }

    /// Sends `signal` to a running attempt's process group (`hz run`'s Ctrl-C).
    pub(crate) fn signal(&self, attempt: AttemptId, signal: i32) -> Result<(), WorkerError> {
        let stopper = self
            .lock()
            .running
            .get(&attempt)
            .map(|r| r.stopper.clone())
            .ok_or(WorkerError::UnknownAttempt { attempt })?;
        tracing::info!(%attempt, signal, "signalling an attempt as asked");
        stopper.signal(signal);
        Ok(())
    }

    /// Writes to a job's stdin (see [`crate::interactive::Input::write`]).
    pub(crate) async fn input(
        &self,
        attempt: AttemptId,
        offset: u64,
        bytes: Vec<u8>,
        eof: bool,
    ) -> Result<(), WorkerError> {
        let input = self.connection(attempt, |c| c.input.clone(), WorkerError::NoInput { attempt })?;
        input.write(offset, &bytes, eof).await.map_err(|e| WorkerError::Input {
            attempt,
            reason: e.to_string(),
        })
    }

    /// A part of a running job's connection (its stdin, its terminal), or `missing`.
    fn connection<T>(
        &self,
        attempt: AttemptId,
        part: impl Fn(&crate::interactive::Connection) -> Option<T>,
        missing: WorkerError,
    ) -> Result<T, WorkerError> {
        let inner = self.lock();
        let running = inner
            .running
            .get(&attempt)
            .ok_or(WorkerError::UnknownAttempt { attempt })?;
        part(&running.connection).ok_or(missing)
    }

    /// Sets a job's terminal size.
    pub(crate) fn resize(&self, attempt: AttemptId, size: common::job::TtySize) -> Result<(), WorkerError> {
        let terminal = self.connection(attempt, |c| c.terminal.clone(), WorkerError::NoTty { attempt })?;
        terminal.resize(size).map_err(|e| WorkerError::Input {
            attempt,
            reason: format!("failed to set the terminal's size: {e}"),
        })
    }

    /// Journals a service instance's process group, so a restarted kinski kills it (and removes
    /// its pid file).
    pub(crate) fn instance_started(
        &self,
        run: common::instances::RunId,
        instance: &common::instances::InstanceId,
        pgid: i32,
        starttime: u64,
    ) {
        let mut inner = self.lock();
        let record = crate::journal::InstanceStarted {
            run,
            instance: Some(instance.clone()),
            pgid,
            starttime,
        };
        let result = inner.journal.instance_started(record);
        inner.log_failure("an instance's start", result);
    }

    /// Journals a service instance's event until herzog has stored it.
    pub(crate) fn instance_event(&self, event: common::instances::InstanceEvent) {
        let mut inner = self.lock();
        let result = inner.journal.instance_event(event);
        inner.log_failure("an instance's event", result);
    }

    /// Journals that herzog stored these events.
    pub(crate) fn events_acked(&self, acked: Vec<(common::instances::RunId, u32)>) {
        let mut inner = self.lock();
        let result = inner.journal.events_acked(acked);
        inner.log_failure("an acknowledgement of events", result);
    }

    /// Journals that a service instance's process is gone.
    pub(crate) fn instance_ended(&self, run: common::instances::RunId) {
        let mut inner = self.lock();
        let result = inner.journal.instance_ended(run);
        inner.log_failure("an instance's end", result);
    }

    /// Stops everything and waits for the processes to be gone (kinski shutting down).
    pub(crate) async fn stop_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        {
            let mut inner = self.lock();
            for start in std::mem::take(&mut inner.queued) {
                inner.taps.end(start.attempt);
            }
        }
        // Spawns under way end in `running` (and are stopped there): wait for them.
        loop {
            let started = self.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if self.lock().starting.is_empty() {
                break;
            }
            started.await;
        }
        let all: Vec<(Stopper, Duration)> = self
            .lock()
            .running
            .values()
            .map(|r| (r.stopper.clone(), r.grace))
            .collect();
        futures::future::join_all(all.iter().map(|(s, g)| s.stop(*g))).await;
    }

    /// Every attempt held: running, queued, or awaiting acknowledgement. Heartbeats carry this.
    pub(crate) fn held(&self) -> Vec<AttemptId> {
        let inner = self.lock();
        let mut all: Vec<AttemptId> = inner.unacked.keys().copied().collect();
        all.extend(Self::active(&inner));
        all.sort();
        all
    }

    /// The starts herzog has not been told of, oldest first.
    pub(crate) fn unnoticed(&self) -> Vec<common::wire::StartNotice> {
        let inner = self.lock();
        inner
            .unnoticed
            .iter()
            .map(|(&attempt, &at)| common::wire::StartNotice { attempt, at })
            .collect()
    }

    /// Whether herzog has been told of every start.
    pub(crate) fn all_noticed(&self) -> bool {
        self.lock().unnoticed.is_empty()
    }

    /// herzog has been told of these starts.
    pub(crate) fn noticed(&self, notices: &[common::wire::StartNotice]) {
        let mut inner = self.lock();
        for n in notices {
            inner.unnoticed.remove(&n.attempt);
        }
    }

    /// A new session: herzog is told again of every attempt that runs.
    pub(crate) fn notice_all_again(&self) {
        let mut inner = self.lock();
        let all: Vec<(AttemptId, common::Millis)> = inner.started_at.iter().map(|(&a, &at)| (a, at)).collect();
        inner.unnoticed.extend(all);
    }

    /// Drops these starts from the queue if they are still waiting there; answers those it
    /// dropped.
    pub(crate) fn unqueue(&self, attempts: &[AttemptId]) -> Vec<AttemptId> {
        let mut inner = self.lock();
        let mut dropped = Vec::new();
        let mut staged = Vec::new();
        inner.queued.retain(|s| {
            let take = attempts.contains(&s.attempt);
            if take {
                dropped.push(s.attempt);
            }
            !take
        });
        for &attempt in &dropped {
            inner.taps.end(attempt);
            if inner.staged.remove(&attempt) {
                staged.push(attempt);
            }
        }
        drop(inner);
        for attempt in staged {
            drop(self.clean(attempt));
        }
        if !dropped.is_empty() {
            tracing::info!(taken_back = dropped.len(), "herzog took back queued starts");
        }
        dropped
    }

    /// At most `max` bytes of an attempt's `stream` from `position`, waiting up to `wait` for
    /// some to come; an attempt that ended lately is still read to its end.
    pub(crate) async fn output(
        &self,
        attempt: AttemptId,
        stream: common::output::Stream,
        position: common::output::Position,
        max: u32,
        wait: Duration,
    ) -> Result<common::output::OutputChunk, WorkerError> {
        let taps = self.lock().taps.get(attempt);
        let taps = taps.ok_or(WorkerError::UnknownAttempt { attempt })?;
        let tap = taps.get(stream).ok_or(WorkerError::UnknownAttempt { attempt })?;
        Ok(tap.read(position, max, wait).await)
    }

    /// The attempts running or queued.
    pub(crate) fn running(&self) -> Vec<AttemptId> {
        let mut all: Vec<AttemptId> = Self::active(&self.lock()).collect();
        all.sort();
        all
    }

    fn active(inner: &Inner) -> impl Iterator<Item = AttemptId> + '_ {
        inner
            .running
            .keys()
            .chain(inner.starting.keys())
            .copied()
            .chain(inner.queued.iter().map(|s| s.attempt))
    }

    /// The completions to report, oldest first.
    pub(crate) fn unacked(&self) -> Vec<Completion> {
        self.lock().unacked.values().cloned().collect()
    }

    /// herzog has stored this completion: forget it. Returns the removal of its staged
    /// directory, if it has one.
    pub(crate) fn acked(&self, attempt: AttemptId) -> Option<tokio::task::JoinHandle<()>> {
        let mut inner = self.lock();
        inner.unacked.remove(&attempt)?;
        let result = inner.journal.acked(attempt);
        inner.log_failure("an acknowledgement", result);
        let staged = inner.staged.remove(&attempt);
        if staged {
            inner.taps.forget(attempt);
        }
        drop(inner);
        staged.then(|| self.clean(attempt))
    }
}

/// Stop signal, grace, SIGKILL, on a task of its own.
fn stop_in_background(attempt: AttemptId, stopper: Stopper, grace: Duration) {
    tracing::info!(%attempt, "stopping attempt");
    tokio::spawn(async move { stopper.stop(grace).await });
}

#[cfg(test)]
pub(crate) mod tests;
