//! The service instances herzog placed on this worker, each driven by a task of its own that
//! feeds the pure [`policy`](super::policy) what happens (its process exits, a deadline
//! passes, herzog asks for a stop) and does what it says: spawn, signal, wait. A crash is
//! restarted here, at once, without a round trip to herzog; so is a change of a file it
//! watches ([`watch`](super::watch)). What each instance is doing is reported to herzog on
//! every change and beside every heartbeat.

use super::policy::{Action, Input, Instance, Note, State, Watch};
use crate::cgroup::{Tracking, Tree, Unit};
use crate::process::Stopper;
use crate::taps::{Ended, Taps};
use crate::user::RunAs;
use common::instances::{EventKind, InstanceEvent, InstanceReport, InstanceRun, InstanceState, RunId, WatchSpec};
use common::output::{OutputChunk, Position, Stream};
use common::service::WorkerError;
use common::services::Output as Sink;
use common::wire::Exit;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// What herzog asks of a running placement.
enum Command {
    Stop,
    Retune(WatchSpec),
    Signal(i32),
}

/// One placement held here.
struct Held {
    commands: mpsc::UnboundedSender<Command>,
    report: InstanceReport,
    movable: bool,
    /// Its kept output, for followers.
    taps: Taps,
}

/// Every placement held, shared by the Worker service, the session's reports and the tasks.
#[derive(Clone)]
pub(crate) struct Instances {
    held: Arc<Mutex<BTreeMap<RunId, Held>>>,
    /// Where kept output goes: `<state_dir>/services`.
    dir: PathBuf,
    /// The scratch directory, where staged placements' files lie (`stage`).
    scratch: PathBuf,
    run_as: Option<RunAs>,
    /// Users a service may name besides `run_as` (`kinski.service_users`).
    service_users: Vec<String>,
    /// Holds the journal, where each instance's process group is recorded.
    supervisor: crate::supervisor::Supervisor,
    /// How every process of an instance is found (its cgroup, or a walk through /proc).
    tracking: Tracking,
    /// `kinski.pid_dir`, when set.
    pid_files: Option<super::PidFiles>,
    /// The monotonic origin the policy's times count from.
    origin: Instant,
    /// Woken whenever a placement changes state, so the session reports it.
    pub(crate) changed: Arc<Notify>,
    /// The last time herzog answered, and after how long without an answer herzog counts
    /// this worker lost; `None` once the movable instances were stopped for it.
    contact: Arc<Mutex<Option<(Instant, Duration)>>>,
    heard: Arc<Notify>,
    /// Events herzog has not stored yet, oldest first (journaled until it has).
    events: Arc<Mutex<Vec<InstanceEvent>>>,
    /// The files of `restart_on_change`, watched for every placement.
    watches: super::watch::Watches,
    /// The kept output of placements that ended lately, still readable by followers.
    ended: Arc<Mutex<Ended<RunId>>>,
}

impl Instances {
    pub(crate) fn new(
        dir: PathBuf,
        scratch: PathBuf,
        run_as: Option<RunAs>,
        service_users: Vec<String>,
        supervisor: crate::supervisor::Supervisor,
        tracking: Tracking,
        pid_files: Option<super::PidFiles>,
    ) -> Instances {
        Instances {
            held: Arc::default(),
            dir,
            scratch,
            run_as,
            service_users,
            supervisor,
            tracking,
            pid_files,
            origin: Instant::now(),
            changed: Arc::new(Notify::new()),
            contact: Arc::default(),
            heard: Arc::new(Notify::new()),
            events: Arc::default(),
            watches: super::watch::Watches::default(),
            ended: Arc::default(),
        }
    }

    /// Events a previous kinski journaled and herzog has not stored: sent first.
    pub(crate) fn recovered_events(&self, events: Vec<InstanceEvent>) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).extend(events);
    }

    /// The events herzog has not stored yet, oldest first.
    pub(crate) fn pending_events(&self) -> Vec<InstanceEvent> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// herzog stored these events: forget them.
    pub(crate) fn events_stored(&self, stored: &[InstanceEvent]) {
        let keys: Vec<(RunId, u32)> = stored.iter().map(|e| (e.run, e.n)).collect();
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|e| !keys.contains(&(e.run, e.n)));
        self.supervisor.events_acked(keys);
    }

    /// Records what happened to an instance for herzog's event log, and says so.
    fn note(&self, event: InstanceEvent) {
        self.supervisor.instance_event(event.clone());
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// herzog answered a call sent at `asked`; it counts this worker lost after `timeout`
    /// without hearing from it (zero: an older herzog that does not say). Counted from when
    /// the call was sent, not answered: herzog heard it then, and answers only after its
    /// commit, so a later stamp would let this worker keep an instance past herzog's count.
    pub(crate) fn heard_from_herzog(&self, asked: Instant, timeout: Duration) {
        if timeout.is_zero() {
            return;
        }
        *self.contact.lock().unwrap_or_else(|p| p.into_inner()) = Some((asked, timeout));
        self.heard.notify_one();
    }

    /// Stops the movable instances once herzog has not answered for as long as it takes to
    /// count this worker lost: herzog then places them elsewhere (after their stop grace), so
    /// a worker cut off from herzog never runs one twice. Pinned ones keep running.
    pub(crate) async fn stop_movable_when_cut_off(&self) {
        loop {
            let contact = *self.contact.lock().unwrap_or_else(|p| p.into_inner());
            let Some((last, timeout)) = contact else {
                self.heard.notified().await;
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(last + timeout)) => {}
                () = self.heard.notified() => continue,
            }
            let mut contact = self.contact.lock().unwrap_or_else(|p| p.into_inner());
            if contact.is_some_and(|(l, _)| l == last) {
                *contact = None;
                drop(contact);
                let movable: Vec<RunId> = self.lock().iter().filter(|(_, h)| h.movable).map(|(r, _)| *r).collect();
                if !movable.is_empty() {
                    tracing::warn!(
                        instances = movable.len(),
                        timeout_ms = timeout.as_millis() as u64,
                        "no answer from herzog for its worker timeout: stopping the movable service instances, which herzog places elsewhere"
                    );
                }
                for run in movable {
                    let _ = self.stop(run);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RunId, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `run` up from now on; a placement already held is left as it is.
    pub(crate) fn run(&self, run: InstanceRun) -> Result<(), WorkerError> {
        // What herzog asks cannot go beyond what this host's admin allows: run_as, or a user
        // listed in kinski.service_users. The account is looked up when the instance starts,
        // off the runtime (NSS may ask a directory server).
        let user = match &run.spec.user {
            None => User::Resolved(self.run_as.clone()),
            Some(name) if self.run_as.as_ref().is_some_and(|r| &r.name == name) => User::Resolved(self.run_as.clone()),
            Some(name) if self.service_users.contains(name) => User::Named(name.clone()),
            Some(name) => {
                return Err(WorkerError::Prepare {
                    path: run.instance.to_string(),
                    reason: format!(
                        "this worker runs services only as its run_as user or one in kinski.service_users, not '{name}': add it there on this host"
                    ),
                });
            }
        };
        if let Some(staged) = &run.staged {
            super::stage::check(&self.scratch, run.run, staged)?;
        }
        let mut held = self.lock();
        if held.contains_key(&run.run) {
            return Ok(());
        }
        let (commands, rx) = mpsc::unbounded_channel();
        let taps = Taps::new(run.spec.stdout == Sink::Kept, run.spec.stderr == Sink::Kept);
        held.insert(
            run.run,
            Held {
                movable: run.movable,
                taps: taps.clone(),
                commands,
                report: InstanceReport {
                    run: run.run,
                    instance: run.instance.clone(),
                    state: InstanceState::Starting {
                        pid: None,
                        since: common::now_millis(),
                        retries: 0,
                    },
                    restarts: 0,
                },
            },
        );
        drop(held);
        tracing::info!(instance = %run.instance, run = %run.run, "service instance placed here");
        tokio::spawn(drive(self.clone(), run, user, taps, rx));
        Ok(())
    }

    /// Makes a staged placement's directory for herzog's login (`uploader`) to copy into.
    pub(crate) async fn prepare(&self, run: RunId, uploader: u32) -> Result<(), WorkerError> {
        if self.lock().contains_key(&run) {
            // Already running: its directory is the instance's now.
            return Ok(());
        }
        let scratch = self.scratch.clone();
        tokio::task::spawn_blocking(move || super::stage::prepare(&scratch, run, uploader))
            .await
            .unwrap_or_else(|e| {
                Err(WorkerError::Prepare {
                    path: String::new(),
                    reason: format!("the preparing thread failed: {e}"),
                })
            })
    }

    /// At most `max` bytes of a placement's kept `stream` from `position`, waiting up to
    /// `wait` for some to come; a placement that ended lately is still read to its end.
    pub(crate) async fn output(
        &self,
        run: RunId,
        stream: Stream,
        position: Position,
        max: u32,
        wait: Duration,
    ) -> Result<OutputChunk, WorkerError> {
        let taps = self.lock().get(&run).map(|h| h.taps.clone());
        let taps = match taps {
            Some(taps) => taps,
            None => self
                .ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(run)
                .ok_or(WorkerError::UnknownRun { run })?,
        };
        let tap = taps.get(stream).ok_or_else(|| WorkerError::NotKept {
            run,
            stream: stream.name().to_string(),
        })?;
        Ok(tap.read(position, max, wait).await)
    }

    /// Stops a placement (its stop signal, SIGKILL after its grace) and forgets it.
    pub(crate) fn stop(&self, run: RunId) -> Result<(), WorkerError> {
        self.command(run, Command::Stop)
    }

    /// Watches a placement so from now on, without restarting it.
    pub(crate) fn retune(&self, run: RunId, watch: WatchSpec) -> Result<(), WorkerError> {
        self.command(run, Command::Retune(watch))
    }

    /// Sends `signal` to a placement's process group, if it has a process now.
    pub(crate) fn signal(&self, run: RunId, signal: i32) -> Result<(), WorkerError> {
        self.command(run, Command::Signal(signal))
    }

    fn command(&self, run: RunId, command: Command) -> Result<(), WorkerError> {
        let held = self.lock();
        let h = held.get(&run).ok_or(WorkerError::UnknownRun { run })?;
        h.commands.send(command).map_err(|_| WorkerError::UnknownRun { run })
    }

    /// What every placement held is doing, for herzog.
    pub(crate) fn reports(&self) -> Vec<InstanceReport> {
        self.lock().values().map(|h| h.report.clone()).collect()
    }

    /// Stops every instance and waits until all are gone (kinski shutting down).
    pub(crate) async fn stop_all(&self) {
        loop {
            let gone = self.changed.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            let runs: Vec<RunId> = self.lock().keys().copied().collect();
            if runs.is_empty() {
                return;
            }
            for run in runs {
                let _ = self.stop(run);
            }
            gone.await;
        }
    }

    /// Records what `run` is doing now and, if that changed, says so: a report that repeats
    /// itself would have herzog answer again, and the two would talk in a loop.
    fn publish(&self, run: RunId, state: InstanceState, restarts: u32) {
        {
            let mut held = self.lock();
            let Some(h) = held.get_mut(&run) else { return };
            if h.report.state == state && h.report.restarts == restarts {
                return;
            }
            h.report.state = state;
            h.report.restarts = restarts;
        }
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    fn forget(&self, run: RunId) {
        self.watches.unwatch(run);
        let held = self.lock().remove(&run);
        if let Some(held) = held {
            // Its process and output are done (the outputs are finished before the process
            // counts as ended): followers get the rest, then the end.
            self.ended.lock().unwrap_or_else(|p| p.into_inner()).add(run, held.taps);
        }
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// A monotonic time of the policy as a wall time, for showing.
    fn wall(&self, at: Duration) -> common::Millis {
        let ago = self.origin.elapsed().saturating_sub(at);
        common::now_millis() - i64::try_from(ago.as_millis()).unwrap_or(0)
    }

    fn state(&self, state: &State) -> InstanceState {
        match state.clone() {
            State::Stopped => InstanceState::Stopped,
            State::Starting { pid, since, retries } => InstanceState::Starting {
                pid,
                since: self.wall(since),
                retries,
            },
            State::Running { pid, since } => InstanceState::Running {
                pid,
                since: self.wall(since),
            },
            State::Backoff { retries, exit, .. } => InstanceState::Backoff { retries, exit },
            State::Stopping { pid, .. } => InstanceState::Stopping { pid },
            State::Exited { exit, expected } => InstanceState::Exited { exit, expected },
            State::Fatal { exit, retries } => InstanceState::Fatal { exit, retries },
        }
    }
}

/// Whom an instance runs as: kinski's own choice, or a user the services file names, looked
/// up at its first start.
#[derive(Clone)]
enum User {
    Resolved(Option<RunAs>),
    Named(String),
}

/// The process of a placement, while it has one: a handle to signal it, and its end.
struct Running {
    stopper: Stopper,
    end: tokio::task::JoinHandle<Exit>,
}

/// Drives one placement until it has been stopped and its process is gone.
async fn drive(
    me: Instances,
    run: InstanceRun,
    mut user: User,
    taps: Taps,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut instance = Instance::new(Watch::from(&run.spec.watch));
    let mut process: Option<Running> = None;
    let mut wake: Option<tokio::time::Instant> = None;
    let mut leaving = false;
    let mut closed = false;
    let origin = tokio::time::Instant::from_std(me.origin);
    let mut inputs = VecDeque::from([Input::Start]);
    let mut noted = 0u32;
    // Every process of this placement, in its process group or not: its cgroup is made now,
    // with the spec's cpus and mem as its limits.
    let tree = {
        let (tracking, requests, unit) = (
            me.tracking.clone(),
            run.spec.requests,
            Unit::Instance {
                run: run.run,
                instance: run.instance.clone(),
            },
        );
        tokio::task::spawn_blocking(move || tracking.tree(&unit, &requests))
            .await
            .expect("making a cgroup does not panic")
    };
    let (changed, mut changes) = mpsc::unbounded_channel();
    let name = run.instance.to_string();
    me.watches.watch(
        run.run,
        &name,
        run.spec.watch.restart_on_change.clone(),
        changed.clone(),
    );
    if !run.spec.watch.restart_on_change.is_empty() {
        // The watches are on before the program first reads what they watch: a change made
        // while it starts is not missed.
        me.watches.settled().await;
    }
    loop {
        while let Some(input) = inputs.pop_front() {
            for action in instance.handle(me.origin.elapsed(), input) {
                match action {
                    Action::Spawn => {
                        let (dir, id, spec, who, within, taps) = (
                            me.dir.clone(),
                            run.instance.clone(),
                            run.spec.clone(),
                            user.clone(),
                            tree.clone(),
                            taps.clone(),
                        );
                        let number = run.run;
                        let staged = run.staged.is_some().then(|| me.scratch.clone());
                        let pid_files = me.pid_files.clone();
                        let spawned = tokio::task::spawn_blocking(move || {
                            let account = match who {
                                User::Resolved(account) => account,
                                User::Named(name) => crate::user::resolve(Some(&name)).map_err(|e| e.to_string())?,
                            };
                            if let Some(scratch) = staged {
                                super::stage::hand_over(&scratch, number, account.as_ref())?;
                            }
                            let p = super::spawn::spawn(&dir, number, &id, &spec, account.as_ref(), &within, &taps)
                                .map_err(|e| e.to_string())?;
                            if let Some(pid_files) = pid_files {
                                pid_files.write(&id, p.pid());
                            }
                            let starttime = crate::leftovers::process_starttime(p.pid()).unwrap_or(0);
                            within.started(p.pid(), starttime);
                            Ok::<_, String>((p, starttime, account))
                        })
                        .await;
                        match spawned {
                            Ok(Ok((p, starttime, account))) => {
                                user = User::Resolved(account);
                                let pid = p.pid();
                                me.supervisor.instance_started(run.run, &run.instance, pid, starttime);
                                let stopper = p.stopper();
                                let end = tokio::spawn(async move { p.wait().await.exit });
                                process = Some(Running { stopper, end });
                                inputs.push_back(Input::Spawned { pid });
                            }
                            Ok(Err(why)) => inputs.push_back(Input::Exited {
                                exit: Exit::StartFailed(why),
                            }),
                            Err(e) => inputs.push_back(Input::Exited {
                                exit: Exit::StartFailed(format!("the spawning thread failed: {e}")),
                            }),
                        }
                    }
                    Action::Signal { pid, signal } => {
                        if let Some(p) = process.as_ref().filter(|p| p.stopper.pgid() == pid) {
                            // While the leader lives, before the signal ends it.
                            remember(&tree).await;
                            p.stopper.signal(signal);
                        }
                    }
                    Action::WakeAt(at) => wake = Some(origin + at),
                    Action::Note(note) => {
                        if matches!(note, Note::Running { .. }) {
                            // What it started with (a daemon it forked, say) is known from now.
                            remember(&tree).await;
                        }
                        log(&run, &note);
                        noted += 1;
                        me.note(InstanceEvent {
                            run: run.run,
                            n: noted,
                            at: common::now_millis(),
                            instance: run.instance.clone(),
                            kind: kind(&note),
                        });
                    }
                }
            }
        }
        me.publish(run.run, me.state(&instance.state), instance.restarts);
        let settled = !matches!(instance.state, State::Starting { .. } | State::Stopping { .. });
        if leaving && process.is_none() && settled {
            if run.staged.is_some() {
                let scratch = me.scratch.clone();
                let number = run.run;
                let _ = tokio::task::spawn_blocking(move || super::stage::remove(&scratch, number)).await;
            }
            let gone = tree.clone();
            match tokio::task::spawn_blocking(move || gone.remove()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(instance = %run.instance, error = %e, "failed to remove the instance's cgroup")
                }
                Err(e) => {
                    tracing::warn!(instance = %run.instance, error = %e, "failed to remove the instance's cgroup")
                }
            }
            me.forget(run.run);
            tracing::info!(instance = %run.instance, run = %run.run, "service instance stopped and forgotten");
            return;
        }
        tokio::select! {
            command = commands.recv(), if !closed => match command {
                Some(Command::Retune(watch)) => {
                    instance.watch = Watch::from(&watch);
                    me.watches.watch(run.run, &name, watch.restart_on_change, changed.clone());
                }
                Some(Command::Signal(signal)) => {
                    if let Some(p) = &process {
                        p.stopper.signal(signal);
                    }
                }
                // Asked again while it stops: nothing new to do.
                Some(Command::Stop) if leaving => {}
                Some(Command::Stop) => {
                    leaving = true;
                    inputs.push_back(Input::Stop);
                }
                // Nobody can ask anything any more: stop, once.
                None => {
                    closed = true;
                    if !std::mem::replace(&mut leaving, true) {
                        inputs.push_back(Input::Stop);
                    }
                }
            },
            end = async { (&mut process.as_mut().expect("guarded").end).await }, if process.is_some() => {
                process = None;
                // Before the policy may start it again: whatever it left, in its group or not.
                kill_tree(&run, &tree).await;
                if let Some(pid_files) = me.pid_files.clone() {
                    // Awaited: a restart's new file must not be removed by this.
                    let id = run.instance.clone();
                    let _ = tokio::task::spawn_blocking(move || pid_files.remove(&id)).await;
                }
                me.supervisor.instance_ended(run.run);
                let exit = end.unwrap_or_else(|e| Exit::StartFailed(format!("its waiting task failed: {e}")));
                inputs.push_back(Input::Exited { exit });
            }
            Some(c) = changes.recv() => inputs.push_back(Input::Changed { files: c.files, more: c.more }),
            () = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {
                wake = None;
                inputs.push_back(Input::Tick);
            }
        }
    }
}

/// Walking /proc for the instance's processes: adds what runs below those known now.
async fn remember(tree: &Tree) {
    if tree.walks() {
        let tree = tree.clone();
        let _ = tokio::task::spawn_blocking(move || tree.remember()).await;
    }
}

/// Kills every process the instance's leader left (it is reaped), and waits until they are gone.
async fn kill_tree(run: &InstanceRun, tree: &Tree) {
    let tree = tree.clone();
    let instance = &run.instance;
    match tokio::task::spawn_blocking(move || tree.kill()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(processes)) => tracing::info!(%instance, processes, "killed what the instance's process left running"),
        Ok(Err(e)) => tracing::warn!(%instance, error = %e, "failed to kill what the instance's process left running"),
        Err(e) => tracing::warn!(%instance, error = %e, "failed to kill what the instance's process left running"),
    }
}

/// A note of the policy as the event log keeps it.
fn kind(note: &Note) -> EventKind {
    match note.clone() {
        Note::Started { pid } => EventKind::Started { pid },
        Note::Running { pid } => EventKind::Running { pid },
        Note::Exited { exit, expected } => EventKind::Exited { exit, expected },
        Note::Backoff { retries, delay } => EventKind::Backoff {
            retries,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        },
        Note::Fatal { retries } => EventKind::Fatal { retries },
        Note::Stopped => EventKind::Stopped,
        Note::FileChanged { files, more, signal } => EventKind::FileChanged { files, more, signal },
    }
}

/// What kinski's log says of an instance; a crash is a warning, the rest is routine.
fn log(run: &InstanceRun, note: &Note) {
    let instance = &run.instance;
    match note {
        Note::Started { pid } => tracing::info!(%instance, pid, "service instance started"),
        Note::Running { pid } => tracing::info!(%instance, pid, "service instance running"),
        Note::Exited { exit, expected: true } => {
            tracing::info!(%instance, %exit, "service instance exited as expected")
        }
        Note::Exited { exit, expected: false } => {
            tracing::warn!(%instance, %exit, "service instance exited unexpectedly")
        }
        Note::Backoff { retries, delay } => {
            tracing::warn!(%instance, retries, delay_ms = delay.as_millis() as u64, "service instance failed to start; trying again")
        }
        Note::Fatal { retries } => {
            tracing::error!(%instance, retries, "service instance failed to start too many times: FATAL until `hz start`")
        }
        Note::Stopped => tracing::info!(%instance, "service instance stopped"),
        Note::FileChanged {
            files,
            signal: Some(signal),
            ..
        } => {
            tracing::info!(%instance, ?files, %signal, "files it watches changed: sending it its change_signal")
        }
        Note::FileChanged {
            files, signal: None, ..
        } => {
            tracing::info!(%instance, ?files, "files it watches changed: restarting it")
        }
    }
}
