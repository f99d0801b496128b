//! The attempts this worker holds: those running and those finished but not yet acknowledged
//! by herzog. Each attempt's task spawns the process, waits for it and queues its completion.
//! Every change is journaled before it is visible to herzog.

use crate::journal::{Journal, Started, process_starttime};
use crate::process::{Process, Stopper, start_failed};
use common::AttemptId;
use common::service::WorkerError;
use common::wire::{Completion, StartAttempt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

struct Inner {
    running: HashMap<AttemptId, (Stopper, Duration)>,
    /// Completions herzog has not acknowledged yet, oldest first.
    unacked: BTreeMap<AttemptId, Completion>,
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
}

/// Shared by the Worker service, the reporter and the attempt tasks.
#[derive(Clone)]
pub(crate) struct Supervisor {
    inner: Arc<Mutex<Inner>>,
    slots: u32,
    /// Woken when a completion is queued.
    pub(crate) finished: Arc<Notify>,
    shutting_down: Arc<std::sync::atomic::AtomicBool>,
}

impl Supervisor {
    /// A supervisor holding the completions a previous kinski left unacknowledged.
    pub(crate) fn new(slots: u32, journal: Journal, unacked: Vec<Completion>) -> Self {
        let unacked = unacked.into_iter().map(|c| (c.attempt, c)).collect();
        let inner = Inner {
            running: HashMap::new(),
            unacked,
            journal,
        };
        Supervisor {
            inner: Arc::new(Mutex::new(inner)),
            slots,
            finished: Arc::new(Notify::new()),
            shutting_down: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    /// Starts an attempt; starting one already held is a no-op (herzog may resend).
    pub(crate) fn start(&self, start: StartAttempt) -> Result<(), WorkerError> {
        let attempt = start.attempt;
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(WorkerError::ShuttingDown);
        }
        let mut inner = self.lock();
        if inner.running.contains_key(&attempt) || inner.unacked.contains_key(&attempt) {
            return Ok(());
        }
        if inner.running.len() >= self.slots as usize {
            return Err(WorkerError::NoFreeSlot { slots: self.slots });
        }
        let grace = Duration::from_millis(start.grace_ms);
        match Process::spawn(&start) {
            Ok(process) => {
                let pid = process.pid();
                tracing::info!(%attempt, project = %start.project, fragment = %start.fragment, pid, "attempt started");
                let record = Started {
                    attempt,
                    pgid: pid,
                    starttime: process_starttime(pid).unwrap_or(0),
                };
                let result = inner.journal.started(record);
                inner.log_failure("a start", result);
                inner.running.insert(attempt, (process.stopper(), grace));
                drop(inner);
                let me = self.clone();
                tokio::spawn(async move {
                    let completion = process.wait().await.into_completion(attempt);
                    me.finish(completion);
                });
            }
            Err(e) => {
                tracing::warn!(%attempt, error = %e, "attempt could not start");
                let completion = start_failed(&start, e.to_string());
                let result = inner.journal.done(&completion);
                inner.log_failure("a completion", result);
                inner.unacked.insert(attempt, completion);
                drop(inner);
                self.finished.notify_one();
            }
        }
        Ok(())
    }

    fn finish(&self, completion: Completion) {
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            // Stopped because kinski is going away: not the program's failure. Left out of
            // the record, herzog requeues the attempt when this worker registers without it.
            tracing::info!(attempt = %completion.attempt, "attempt stopped for shutdown; herzog will requeue it");
            self.lock().running.remove(&completion.attempt);
            return;
        }
        tracing::info!(attempt = %completion.attempt, exit = %completion.exit, wall_ms = completion.wall_ms, "attempt finished");
        let mut inner = self.lock();
        let result = inner.journal.done(&completion);
        inner.log_failure("a completion", result);
        inner.running.remove(&completion.attempt);
        inner.unacked.insert(completion.attempt, completion);
        drop(inner);
        self.finished.notify_one();
    }

    /// Stops a running attempt in the background (signal, grace, SIGKILL).
    pub(crate) fn stop(&self, attempt: AttemptId) -> Result<(), WorkerError> {
        let Some((stopper, grace)) = self.lock().running.get(&attempt).cloned() else {
            return Err(WorkerError::UnknownAttempt { attempt });
        };
        tracing::info!(%attempt, "stopping attempt");
        tokio::spawn(async move { stopper.stop(grace).await });
        Ok(())
    }

    /// Stops everything and waits for the processes to be gone (kinski shutting down).
    pub(crate) async fn stop_all(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let all: Vec<(Stopper, Duration)> = self.lock().running.values().cloned().collect();
        futures::future::join_all(all.iter().map(|(s, g)| s.stop(*g))).await;
    }

    /// Every attempt held: running or awaiting acknowledgement. This is what heartbeats carry.
    pub(crate) fn held(&self) -> Vec<AttemptId> {
        let inner = self.lock();
        let mut all: Vec<AttemptId> = inner.running.keys().chain(inner.unacked.keys()).copied().collect();
        all.sort();
        all
    }

    pub(crate) fn running(&self) -> Vec<AttemptId> {
        let mut all: Vec<AttemptId> = self.lock().running.keys().copied().collect();
        all.sort();
        all
    }

    /// The completions to report, oldest first.
    pub(crate) fn unacked(&self) -> Vec<Completion> {
        self.lock().unacked.values().cloned().collect()
    }

    /// herzog has stored this completion: forget it.
    pub(crate) fn acked(&self, attempt: AttemptId) {
        let mut inner = self.lock();
        if inner.unacked.remove(&attempt).is_some() {
            let result = inner.journal.acked(attempt);
            inner.log_failure("an acknowledgement", result);
        }
    }
}
