//! The attempts this worker holds: running, queued for the next free slot, and finished but
//! not yet acknowledged by herzog. Each attempt's task spawns the process, waits for it and queues its completion.
//! Every change is journaled before it is visible to herzog.
//!
//! Programs are spawned outside the lock and off the runtime: a spawn returns only once the
//! child has reached `exec` (posix_spawn's vfork), half a millisecond on a busy host, and it
//! comes with directory work that a slow filesystem can stall for seconds. Under the lock, the
//! other slot's completion, the heartbeat and herzog's start calls all waited for it; on a
//! runtime thread, so did every other task. So `prepare` and the spawns run on blocking threads.
//!
//! A staged attempt's directory `<scratch>/<attempt>/` stays kinski's (mode 0755): its log files
//! are written there by kinski, so nothing the program plants can redirect them. `out/` is the
//! program's (owned by `run_as`); `in/` belongs to herzog's SSH login while herzog uploads into
//! it, and is handed to `run_as` when the attempt starts, since it is the program's working
//! directory. Every one of these is made and handed over through descriptors
//! ([`common::dirfd`]), so no link is ever followed.

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

    /// The attempt's cgroup, for an attempt that asked for CPUs or memory. Only for those:
    /// entering a cgroup is a pre_exec step, which takes std off its posix_spawn (vfork) path,
    /// and moving a process in and removing the cgroup cost more again: `bench noop` went
    /// from 0.77x to 1.6x xargs with a cgroup for every attempt. An attempt without them is
    /// its process group, as before (a child that calls setsid escapes it).
    fn cgroup(&self, start: &StartAttempt) -> Result<Option<crate::cgroup::Tree>, SpawnError> {
        if start.requests.cpus.is_none() && start.requests.memory_bytes.is_none() {
            return Ok(None);
        }
        Ok(self.tracking.attempt(start.attempt, &start.requests)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    /// Checks the paths of a start from the wire: all absolute and clean, and for a staged
    /// attempt, its directory is `<scratch>/<attempt>` and its files lie inside it.
    fn check_paths(&self, start: &StartAttempt) -> Result<(), WorkerError> {
        let refuse = |path: &Path, reason: String| WorkerError::Prepare {
            path: path.display().to_string(),
            reason,
        };
        for path in [
            &start.input,
            &start.cwd,
            &start.stdout,
            &start.stderr,
            &start.output_dir,
        ] {
            common::paths::clean_absolute(path).map_err(|e| refuse(path, e.to_string()))?;
        }
        if let Some(dir) = &start.scratch {
            let expected = self.scratch.join(start.attempt.0.to_string());
            if *dir != expected {
                return Err(refuse(
                    dir,
                    format!("a staged attempt's directory must be {}", expected.display()),
                ));
            }
            // The layout kinski's ownership rules rely on: logs directly in the attempt's
            // directory (kinski's), the output directory `out/`, the input under `in/`.
            let inputs = dir.join("in");
            let laid_out = [
                (&start.stdout, start.stdout.parent() == Some(dir.as_path())),
                (&start.stderr, start.stderr.parent() == Some(dir.as_path())),
                (&start.output_dir, start.output_dir == dir.join("out")),
                (&start.input, start.input.starts_with(&inputs) && start.input != inputs),
            ];
            for (path, ok) in laid_out {
                if !ok {
                    return Err(refuse(
                        path,
                        format!(
                            "not where a staged attempt's file belongs in {} (stdout and stderr in it, out/, in/<input>)",
                            dir.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Makes what an attempt needs before its input arrives: for a staged attempt its own
    /// directory in the scratch directory, with `out/` for the program and `in/` for herzog's
    /// uploads; on the shared filesystem the results folders. On a blocking thread.
    pub(crate) async fn prepare(&self, start: &StartAttempt) -> Result<(), WorkerError> {
        self.check_paths(start)?;
        if self.lock().holds(start.attempt) {
            // Already accepted: its `in/` may be the program's by now, leave it be.
            return Ok(());
        }
        if start.scratch.is_some() {
            // Before anything is made, so a half-made directory is removed too.
            self.lock().staged.insert(start.attempt);
        }
        let (me, start) = (self.clone(), start.clone());
        tokio::task::spawn_blocking(move || me.prepare_now(&start))
            .await
            .unwrap_or_else(|e| {
                Err(WorkerError::Prepare {
                    path: String::new(),
                    reason: format!("the preparing thread failed: {e}"),
                })
            })
    }

    fn prepare_now(&self, start: &StartAttempt) -> Result<(), WorkerError> {
        let failed = |dir: &Path, e: std::io::Error| WorkerError::Prepare {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        let Some(root) = &start.scratch else {
            if let Some(logs) = start.stdout.parent() {
                DirFd::open_or_create(logs, DIR_MODE).map_err(|e| failed(logs, e))?;
            }
            return crate::process::ensure_output_dir(&start.output_dir, self.run_as.as_ref()).map_err(|e| {
                WorkerError::Prepare {
                    path: start.output_dir.display().to_string(),
                    reason: e.to_string(),
                }
            });
        };
        let scratch = DirFd::open(&self.scratch).map_err(|e| failed(&self.scratch, e))?;
        let attempt = scratch
            .create_dir(start.attempt.0.to_string(), DIR_MODE)
            .map_err(|e| failed(root, e))?;
        // Made now or by an earlier prep: kinski's either way, or someone planted it.
        let owner = attempt.owner().map_err(|e| failed(root, e))?;
        if owner.uid != rustix::process::geteuid().as_raw() || owner.mode & 0o022 != 0 {
            return Err(WorkerError::Prepare {
                path: root.display().to_string(),
                reason: format!(
                    "it is owned by uid {} with mode {:o}, not made by kinski: the scratch directory is not kinski's alone",
                    owner.uid, owner.mode
                ),
            });
        }
        let out = root.join("out");
        let made = attempt.create_dir("out", DIR_MODE).map_err(|e| failed(&out, e))?;
        if let Some(user) = &self.run_as {
            made.chown(user.uid, Some(user.gid)).map_err(|e| failed(&out, e))?;
        }
        let inputs = root.join("in");
        let made = attempt.create_dir("in", DIR_MODE).map_err(|e| failed(&inputs, e))?;
        // herzog's login writes here before the program exists; no one else may meanwhile.
        if let Some(uploader) = start.uploader_uid
            && made.owner().map_err(|e| failed(&inputs, e))?.uid != uploader
        {
            made.chown(uploader, None).map_err(|e| failed(&inputs, e))?;
        }
        Ok(())
    }

    /// Gives a staged attempt's `in/` (its working directory) to the user programs run as,
    /// now that herzog's uploads are done.
    fn hand_over_inputs(&self, start: &StartAttempt) -> Result<(), SpawnError> {
        let (Some(root), Some(user)) = (&start.scratch, &self.run_as) else {
            return Ok(());
        };
        let inputs = root.join("in");
        let failed = |source| SpawnError::Handover {
            path: inputs.clone(),
            source,
        };
        let dir = DirFd::open(&self.scratch)
            .and_then(|scratch| scratch.open_dir(start.attempt.0.to_string()))
            .and_then(|attempt| attempt.open_dir("in"))
            .map_err(failed)?;
        let owner = dir.owner().map_err(failed)?;
        if (owner.uid, owner.gid) != (user.uid, user.gid) {
            dir.chown(user.uid, Some(user.gid)).map_err(failed)?;
        }
        Ok(())
    }

    /// Removes a staged attempt's directory, `<scratch>/<attempt>`, on a blocking thread.
    /// The scratch directory is kinski's own; what the program could change lies below, and
    /// std's `remove_dir_all` works there through descriptors without following links.
    fn clean(&self, attempt: AttemptId) -> tokio::task::JoinHandle<()> {
        let dir = self.scratch.join(attempt.0.to_string());
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed a staged attempt's directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "failed to remove a staged attempt's directory"),
        })
    }

    /// Removes the directories of staged attempts this worker no longer holds (left by a
    /// previous kinski, or prepared for a start that never came), and remembers those of the
    /// completions it still holds, to remove them on their acknowledgement.
    pub(crate) async fn clean_leftovers(&self) {
        let scratch = self.scratch.clone();
        let listed = tokio::task::spawn_blocking(move || -> Vec<AttemptId> {
            let Ok(entries) = std::fs::read_dir(&scratch) else {
                return Vec::new();
            };
            entries
                .flatten()
                .filter_map(|e| attempt_of(e.file_name().to_str()?))
                .collect()
        })
        .await
        .unwrap_or_default();
        let held = self.held();
        for attempt in listed {
            if held.contains(&attempt) {
                self.lock().staged.insert(attempt);
            } else {
                drop(self.clean(attempt));
            }
        }
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

/// The attempt a directory in the scratch directory belongs to: a name of digits only.
fn attempt_of(name: &str) -> Option<AttemptId> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().map(AttemptId)
}

/// Stop signal, grace, SIGKILL, on a task of its own.
fn stop_in_background(attempt: AttemptId, stopper: Stopper, grace: Duration) {
    tracing::info!(%attempt, "stopping attempt");
    tokio::spawn(async move { stopper.stop(grace).await });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const LIMIT: Duration = Duration::from_secs(20);

    /// A supervisor journaling in `dir`, its scratch directory `dir/scratch`.
    pub(crate) fn supervisor(dir: &Path, slots: u32, queue: u32) -> Supervisor {
        let (journal, _) = Journal::open(dir).expect("journal");
        Supervisor::new(slots, queue, None, dir.join("scratch"), journal, Vec::new())
    }

    /// `sh -c SCRIPT` as attempt `attempt` of project p, its logs in `dir/logs`.
    pub(crate) fn start(dir: &Path, attempt: i64, script: &str) -> StartAttempt {
        StartAttempt {
            requests: Default::default(),
            attempt: AttemptId(attempt),
            project: "p".into(),
            fragment: format!("f{attempt}"),
            input: dir.join(format!("f{attempt}")),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            cwd: dir.to_path_buf(),
            env: BTreeMap::new(),
            stdout: dir.join(format!("logs/{attempt}.out")),
            stderr: dir.join(format!("logs/{attempt}.err")),
            output_dir: dir.join("out"),
            grace_ms: 100,
            scratch: None,
            max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
            uploader_uid: None,
            settings: Default::default(),
            interactive: None,
        }
    }

    /// A staged attempt `attempt` in `dir/scratch`, laid out as herzog lays it out.
    fn staged(dir: &Path, attempt: i64, script: &str) -> StartAttempt {
        let root = dir.join("scratch").join(attempt.to_string());
        StartAttempt {
            input: root.join("in/f"),
            cwd: root.join("in"),
            stdout: root.join("stdout"),
            stderr: root.join("stderr"),
            output_dir: root.join("out"),
            scratch: Some(root),
            ..start(dir, attempt, script)
        }
    }

    /// Waits until `n` completions are unacknowledged.
    async fn completions(s: &Supervisor, n: usize) -> Vec<Completion> {
        tokio::time::timeout(LIMIT, async {
            loop {
                let finished = s.finished.notified();
                let done = s.unacked();
                if done.len() >= n {
                    return done;
                }
                finished.await;
            }
        })
        .await
        .expect("the attempts finished in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_beyond_the_slots_wait_in_order_and_every_one_runs_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = supervisor(dir.path(), 2, 4);
        let log = dir.path().join("ran");
        // Each program waits for a line on a FIFO, so none ends before the test says so.
        let gate = dir.path().join("gate");
        let path = std::ffi::CString::new(gate.to_str().expect("utf-8")).expect("no NUL");
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let mut go = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&gate)
            .expect("fifo");
        for i in 1..=6 {
            let script = format!("read line < {}; echo {i} >> {}", gate.display(), log.display());
            s.start(start(dir.path(), i, &script)).expect("accepted");
        }
        // Two run, four wait; a seventh finds every place taken.
        let full = s.start(start(dir.path(), 7, "true"));
        assert_eq!(full, Err(WorkerError::NoFreeSlot { slots: 2 }));
        std::io::Write::write_all(&mut go, b"go\ngo\ngo\ngo\ngo\ngo\n").expect("write the gate");
        let done = completions(&s, 6).await;
        assert!(done.iter().all(|c| c.exit == common::wire::Exit::Code(0)), "{done:?}");
        let mut ran: Vec<i64> = std::fs::read_to_string(&log)
            .expect("log")
            .lines()
            .map(|l| l.parse().expect("a number"))
            .collect();
        ran.sort();
        assert_eq!(ran, [1, 2, 3, 4, 5, 6]);
        assert_eq!(s.running(), []);
        assert_eq!(s.held(), (1..=6).map(AttemptId).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acknowledgement_removes_a_staged_directory_and_touches_nothing_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = supervisor(dir.path(), 2, 0);
        std::fs::create_dir(dir.path().join("scratch")).expect("the scratch directory");
        let staged = staged(dir.path(), 1, "echo out > \"$HERZOG_OUTPUT_DIR/x\"");
        s.prepare(&staged).await.expect("prepared");
        s.start(staged).expect("started");
        s.start(start(dir.path(), 2, "true")).expect("started");
        completions(&s, 2).await;
        let removal = s.acked(AttemptId(1)).expect("a staged attempt's directory is removed");
        removal.await.expect("the removal ran");
        assert!(!dir.path().join("scratch/1").exists());
        // On the shared filesystem there is no directory to remove: nothing is tried.
        assert!(
            s.acked(AttemptId(2)).is_none(),
            "a removal for an attempt that has no directory"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepared_attempt_herzog_gave_up_on_leaves_no_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = supervisor(dir.path(), 1, 1);
        std::fs::create_dir(dir.path().join("scratch")).expect("the scratch directory");
        // Prepared, its input uploaded, and then herzog restarted and requeued it elsewhere:
        // no start comes, a stop does.
        let prepared = staged(dir.path(), 3, "true");
        s.prepare(&prepared).await.expect("prepared");
        std::fs::write(&prepared.input, b"uploaded").expect("the upload");
        assert_eq!(s.stop(AttemptId(3)).await, Ok(()));
        assert!(!dir.path().join("scratch/3").exists(), "the prepared directory stayed");
        // An attempt neither held nor prepared here is unknown, as before.
        assert_eq!(
            s.stop(AttemptId(4)).await,
            Err(WorkerError::UnknownAttempt { attempt: AttemptId(4) })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_link_planted_at_a_staged_log_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("scratch")).expect("mkdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("write the victim");
        let s = supervisor(dir.path(), 1, 1);
        let first = staged(dir.path(), 1, "echo PWNED; echo PWNED >&2");
        s.prepare(&first).await.expect("prepared");
        // What a program of the same user could plant before the start (it cannot any more:
        // the directory is kinski's; here the test plants them itself).
        std::os::unix::fs::symlink(&victim, &first.stdout).expect("symlink");
        std::fs::hard_link(&victim, &first.stderr).expect("hard link");
        s.start(first.clone()).expect("accepted");
        let done = completions(&s, 1).await;
        assert_eq!(done[0].exit, common::wire::Exit::Code(0), "{done:?}");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret\n");
        for log in [&first.stdout, &first.stderr] {
            assert!(std::fs::symlink_metadata(log).expect("log").is_file());
            assert_eq!(std::fs::read_to_string(log).expect("log"), "PWNED\n");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs root to run programs as another user: cargo test -p kinski -- --ignored as_root"]
    async fn a_program_cannot_plant_anything_kinski_or_herzog_later_uses_as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test runs programs as nobody and needs root (CI runs it as root)"
        );
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        // nobody must reach the attempt's directory: the temporary directory is 0700.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(dir.path().join("scratch")).expect("mkdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("write the victim");
        let nobody = crate::user::resolve(Some("nobody")).expect("nobody").expect("not root");
        let (journal, _) = Journal::open(dir.path()).expect("journal");
        let s = Supervisor::new(
            1,
            1,
            Some(nobody.clone()),
            dir.path().join("scratch"),
            journal,
            Vec::new(),
        );
        // Every path kinski or herzog uses later, planted by the program running as nobody.
        let script = format!(
            r#"a=$(dirname "$HERZOG_OUTPUT_DIR")
            for f in "$a/stdout" "$a/stderr" "$a/out2"; do ln -s {v} "$f" 2>/dev/null && echo "planted $f"; done
            mv "$HERZOG_OUTPUT_DIR" "$a/moved" 2>/dev/null && echo "moved the output directory"
            touch "$HERZOG_OUTPUT_DIR/mine" && echo "wrote an output"
            touch ./cwd-is-mine && echo "wrote in the working directory"
            echo PWNED >&2"#,
            v = victim.display()
        );
        let mut first = staged(dir.path(), 1, &script);
        first.uploader_uid = Some(0);
        s.prepare(&first).await.expect("prepared");
        let root = first.scratch.clone().expect("staged");
        let owner = |path: &Path| {
            let meta = std::fs::symlink_metadata(path).expect("stat");
            (meta.is_dir(), meta.uid(), meta.mode() & 0o777)
        };
        // Before the start: the attempt's directory is kinski's, out/ nobody's, in/ the
        // uploader's (root), so nothing can be planted while herzog uploads.
        assert_eq!(owner(&root), (true, 0, 0o755));
        assert_eq!(owner(&root.join("out")), (true, nobody.uid, 0o755));
        assert_eq!(owner(&root.join("in")), (true, 0, 0o755));
        s.start(first.clone()).expect("accepted");
        let done = completions(&s, 1).await;
        assert_eq!(done[0].exit, common::wire::Exit::Code(0), "{done:?}");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret\n");
        // Only what is the program's was writable: its outputs and its working directory.
        assert_eq!(
            std::fs::read_to_string(&first.stdout).expect("stdout"),
            "wrote an output\nwrote in the working directory\n"
        );
        assert_eq!(std::fs::read_to_string(&first.stderr).expect("stderr"), "PWNED\n");
        assert_eq!(owner(&root.join("in")), (true, nobody.uid, 0o755));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_asked_for_while_the_process_is_spawned_stops_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = supervisor(dir.path(), 1, 1);
        // As `start` leaves it just before spawning: the slot is taken, the lock released.
        s.lock().starting.insert(AttemptId(1), false);
        assert_eq!(s.running(), [AttemptId(1)]);
        s.stop(AttemptId(1)).await.expect("a starting attempt can be stopped");
        s.launch(vec![start(dir.path(), 1, "sleep 30")]);
        let done = completions(&s, 1).await;
        assert_eq!(done[0].exit, common::wire::Exit::Signal(libc::SIGTERM));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_waits_for_spawns_under_way_and_stops_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = supervisor(dir.path(), 1, 1);
        s.lock().starting.insert(AttemptId(1), false);
        // Polled once, stop_all has said kinski is going away and waits for the spawn.
        let mut stopping = Box::pin(s.stop_all());
        assert!(futures::poll!(stopping.as_mut()).is_pending());
        let spawning = s.clone();
        let first = start(dir.path(), 1, "sleep 30");
        tokio::task::spawn_blocking(move || spawning.launch_now(vec![first]))
            .await
            .expect("spawned");
        let pid = s.lock().running.get(&AttemptId(1)).map(|r| r.stopper.pgid());
        let pid = pid.expect("spawned");
        tokio::time::timeout(LIMIT, stopping).await.expect("stop_all returned");
        assert!(s.lock().starting.is_empty());
        // The program is gone (a zombie at most, until its task reaps it).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|rest| rest.chars().next());
        assert!(matches!(state, None | Some('Z')), "the program still runs: {stat}");
    }
}
