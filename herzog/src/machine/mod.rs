//! The state machine: herzog's whole scheduling state and every transition, with no IO.
//!
//! `handle` applies one event at a given time and queues the database writes and the
//! effects it implies; `schedule` hands free slots to pending fragments; `take` drains both
//! queues for the event loop, which commits the writes and only then runs the effects.

mod alerts;
mod controls;
mod follow;
mod jobs;
mod names;
mod packing;
mod running;
mod services;
mod shares;
#[cfg(test)]
mod tests;
mod types;

pub(crate) use alerts::{Alert, AlertRules, OutboxRow, Recipient, StderrFrom};
pub(crate) use follow::Followed;
pub(crate) use jobs::Job;
pub(crate) use names::Names;
pub(crate) use running::Recent;
pub(crate) use types::*;

use crate::scheduler::{self, Capacity, Demand, Held, Size};
use common::wire::*;
use common::{ApiError, AttemptId, FragmentId, Millis, ProjectId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;

/// Timings the machine needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// A worker silent this long is lost.
    pub(crate) worker_timeout_ms: i64,
    /// How long a dispatched attempt may be missing from a worker's report before it is lost
    /// (a start may still be on its way).
    pub(crate) start_grace_ms: i64,
    /// How long a worker whose host herzog cannot log in to waits before the next check.
    pub(crate) probe_retry_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) pending: u64,
    pub(crate) running: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
}

impl Counts {
    fn slot(&mut self, state: &FragmentState) -> &mut u64 {
        match state {
            FragmentState::Pending => &mut self.pending,
            FragmentState::Running { .. } => &mut self.running,
            FragmentState::Succeeded { .. } => &mut self.succeeded,
            FragmentState::Failed { .. } => &mut self.failed,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Fragment {
    pub(crate) id: FragmentId,
    pub(crate) attempts: u32,
    /// How many of its attempts failed (`retries` is their budget).
    pub(crate) failures: u32,
    pub(crate) state: FragmentState,
}

#[derive(Clone, Debug)]
pub(crate) struct Project {
    pub(crate) id: ProjectId,
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) spec: RunSpec,
    pub(crate) results_dir: PathBuf,
    pub(crate) created_at: Millis,
    /// Its fragments' names, in the order of `fragments`.
    pub(crate) names: std::sync::Arc<Names>,
    pub(crate) fragments: Vec<Fragment>,
    /// Indexes of pending fragments, in dispatch order.
    pub(crate) queue: VecDeque<u32>,
    pub(crate) counts: Counts,
    /// How long its attempts ran lately (a moving average of their wall time), once one has
    /// ended; not kept across restarts. Decides how deep workers' queues are filled.
    pub(crate) recent_wall_ms: Option<u64>,
    /// `hz pause`: nothing new starts.
    pub(crate) paused: bool,
    /// `hz limit`: the most attempts dispatched at once.
    pub(crate) max_running: Option<u32>,
    /// Projects that must succeed before this one starts; each is dropped from the list once
    /// it has, so removing it afterwards blocks nothing.
    pub(crate) after: Vec<String>,
    /// Its live attempts whose program has started (the others wait in workers' queues).
    pub(crate) started: u64,
    /// When its latest attempts ended, for the rate and ETA; not kept across restarts.
    pub(crate) recent: Recent,
    /// How many of its fragments failed, by reason.
    pub(crate) failures: BTreeMap<String, u64>,
    /// An `hz run` job's own part (its project has one fragment and is not listed).
    pub(crate) job: Option<Box<Job>>,
    /// Its weight in the fair share (`hz share`), at least 1.
    pub(crate) share: u32,
}

impl Project {
    /// A project as added or restored, with nothing queued or counted yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ProjectId,
        name: String,
        dir: PathBuf,
        spec: RunSpec,
        results_dir: PathBuf,
        created_at: Millis,
        names: std::sync::Arc<Names>,
        fragments: Vec<Fragment>,
    ) -> Project {
        Project {
            id,
            name,
            dir,
            spec,
            results_dir,
            created_at,
            names,
            fragments,
            queue: VecDeque::new(),
            counts: Counts::default(),
            recent_wall_ms: None,
            paused: false,
            max_running: None,
            after: Vec::new(),
            started: 0,
            recent: Recent::default(),
            failures: BTreeMap::new(),
            job: None,
            share: 1,
        }
    }
}

/// How long the starts queued on a worker should keep its slots busy: longer than herzog's
/// round trip (completion, up to `engine::COMMIT_SPACING` waiting for a commit, the commit,
/// the start) takes even on a loaded host, so no slot waits for herzog between two short
/// attempts.
const QUEUE_COVERS_MS: u64 = 50;

#[derive(Clone, Debug)]
pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) resources: Resources,
    pub(crate) link: Link,
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
    fn new(name: String, resources: Resources, link: Link, now: Now) -> Worker {
        Worker {
            name,
            resources,
            link,
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
    fn takes_starts(&self, now: Now) -> bool {
        self.link == Link::Connected
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

/// Where a live attempt belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) project: ProjectId,
    pub(crate) index: u32,
    /// When it was dispatched, for the start grace.
    pub(crate) since: Mono,
    /// When its program started, by its worker's clock; `None` while it waits in the
    /// worker's queue.
    pub(crate) ran: Option<Millis>,
    /// A take-back was asked for and not answered yet.
    pub(crate) unqueue_asked: bool,
    /// Since when its slot-time counts in the fair share (herzog's clock: its start as its
    /// worker told it, back-dated from when herzog heard); `None` until then, and for jobs.
    pub(crate) counted: Option<Mono>,
}

impl Live {
    fn new(project: ProjectId, index: u32, since: Mono) -> Live {
        Live {
            project,
            index,
            since,
            ran: None,
            unqueue_asked: false,
            counted: None,
        }
    }
}

/// herzog's state. One owner: the event loop.
#[derive(Debug)]
pub(crate) struct Machine {
    timing: Timing,
    results_root: PathBuf,
    projects: BTreeMap<ProjectId, Project>,
    by_name: HashMap<String, ProjectId>,
    workers: BTreeMap<String, Worker>,
    /// Ordered, so what is done for each (stops when a project goes) does not depend on hash
    /// order, and `hz active` pages through it in attempt order.
    live: BTreeMap<AttemptId, Live>,
    policy: Policy,
    space: Space,
    services: crate::services::Services,
    next_project: i64,
    next_fragment: i64,
    next_attempt: i64,
    /// The next id in the services' event log.
    next_event: i64,
    /// The wall time of the last event or scheduling: what herzog's own log entries carry.
    last_wall: Millis,
    /// The monotonic time of the last event or scheduling: what queries measure windows by.
    last_mono: Mono,
    writes: Vec<Write>,
    effects: Vec<Effect>,
    /// Sent with every start: the most kept of each stream of an attempt's output.
    max_log_bytes: u64,
    /// Each project's slot-time against its fair share.
    fair: crate::fair::Ledger,
    /// The workers reserved by projects whose next attempt fits nowhere yet (see
    /// [`scheduler`]), as the last round left them.
    reserved: Vec<(ProjectId, String)>,
    /// Who gets which alerts (`[alerts]`).
    alerts: AlertRules,
}

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
    pub(crate) fn new(timing: Timing, results_root: PathBuf) -> Self {
        Machine {
            timing,
            results_root,
            projects: BTreeMap::new(),
            by_name: HashMap::new(),
            workers: BTreeMap::new(),
            live: BTreeMap::new(),
            policy: Policy::Fair,
            space: Space::Enough,
            services: crate::services::Services::default(),
            next_project: 1,
            next_fragment: 1,
            next_attempt: 1,
            next_event: 1,
            last_wall: 0,
            last_mono: Mono(0),
            writes: Vec::new(),
            effects: Vec::new(),
            max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
            fair: crate::fair::Ledger::default(),
            reserved: Vec::new(),
            alerts: AlertRules::default(),
        }
    }

    /// Sets `herzog.fair_half_life`: how fast past imbalances in the fair share are forgiven.
    pub(crate) fn with_fair_half_life(mut self, half_life_ms: Option<i64>) -> Self {
        self.fair.set_half_life(half_life_ms);
        self
    }

    /// Sets `herzog.max_log_bytes` for the starts this machine builds.
    pub(crate) fn with_max_log_bytes(mut self, max_log_bytes: u64) -> Self {
        self.max_log_bytes = max_log_bytes;
        self
    }

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
                Link::Disconnected { since: now.wall },
                now,
            );
            worker.last_seen = sw.last_seen;
            worker.seen_stored = sw.last_seen;
            worker.drained = sw.drained;
            if sw.stopped {
                worker.link = Link::Stopped { since: sw.last_seen };
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
                                Link::Disconnected { since: now.wall },
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
            if w.link == (Link::Disconnected { since: now.wall })
                && w.running.is_empty()
                && now.wall - w.last_seen >= timing.worker_timeout_ms
            {
                w.link = Link::Lost { since: w.last_seen };
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

    /// Drains the writes and effects queued since the last call.
    pub(crate) fn take(&mut self) -> (Vec<Write>, Vec<Effect>) {
        self.services_writes();
        (std::mem::take(&mut self.writes), std::mem::take(&mut self.effects))
    }

    /// Applies one event. A rejected event changes nothing.
    pub(crate) fn handle(&mut self, now: Now, event: Event) -> Result<Reply, Rejected> {
        self.last_wall = now.wall;
        self.last_mono = now.mono;
        match event {
            Event::AddProject(new) => self.add_project(now, *new),
            Event::RemoveProject { name } => self.remove_project(now, &name),
            Event::Retry { name } => self.retry(&name),
            Event::SetPolicy(policy) => self.set_policy(policy),
            Event::Register {
                worker,
                resources,
                running,
                staged,
            } => self.register(now, worker, resources, running, staged),
            Event::Heartbeat { worker, running } => self.heartbeat(now, &worker, running),
            Event::Started { worker, notices } => {
                self.started(now, &worker, notices);
                Ok(Reply::Done)
            }
            Event::WorkerStopping { worker, held } => self.worker_stopping(now, &worker, &held),
            Event::Control(control) => self.control(now, control).map(Reply::Controlled),
            Event::TakenBack { worker, attempts } => {
                self.taken_back(now, &worker, attempts);
                Ok(Reply::Done)
            }
            Event::Complete {
                worker,
                completion,
                staging_error,
            } => self.complete(now, &worker, completion, staging_error),
            Event::StateSpace { free_bytes, min_bytes } => {
                let space = if free_bytes < min_bytes {
                    Space::Low { free_bytes, min_bytes }
                } else {
                    Space::Enough
                };
                match (&self.space, &space) {
                    (Space::Enough, Space::Low { .. }) => {
                        tracing::warn!(
                            free_bytes,
                            min_bytes,
                            "herzog's state filesystem is nearly full: no attempt starts until there is room"
                        );
                    }
                    (Space::Low { .. }, Space::Enough) => {
                        tracing::info!(
                            free_bytes,
                            min_bytes,
                            "herzog's state filesystem has room again: attempts start again"
                        );
                    }
                    _ => {}
                }
                self.space = space;
                Ok(Reply::Done)
            }
            Event::InstancesReport { worker, reports } => self.instances_report(now, &worker, reports),
            Event::ServicesReload { file } => self.services_reload(file),
            Event::InstanceEvents { worker, events } => self.instance_events(&worker, events),
            Event::InstanceRefused { worker, run, reason } => {
                self.refused_alert(now, &worker, run, &reason);
                self.services.refused(&worker, run, reason);
                Ok(Reply::Done)
            }
            Event::ServicesControl { action, names } => self.services_control(now, action, &names),
            Event::Probed { worker, result } => {
                self.probed(now, &worker, result);
                Ok(Reply::Done)
            }
            Event::StagingFailed { attempt, reason } => {
                if let Some(worker) = self.end_live(now, attempt, AttemptEnd::StagingFailed, None, Some(reason.clone()))
                {
                    self.drop_prepared(&worker, attempt);
                    self.staging_broke(now, &worker, reason);
                }
                Ok(Reply::Done)
            }
            Event::Disconnected { worker } => {
                if let Some(w) = self.workers.get_mut(&worker)
                    && w.link == Link::Connected
                {
                    w.link = Link::Disconnected { since: now.wall };
                    w.seen_stored = w.last_seen;
                    self.writes.push(Write::WorkerSeen {
                        name: worker,
                        seen: w.last_seen,
                        stopped: false,
                    });
                }
                Ok(Reply::Done)
            }
            Event::StartRefused {
                attempt,
                reason,
                lasting,
            } => {
                self.start_refused(now, attempt, reason, lasting);
                Ok(Reply::Done)
            }
            Event::DispatchFailed { attempt, reason } => {
                if self.live.contains_key(&attempt) {
                    self.end_live(now, attempt, AttemptEnd::Lost, None, Some(reason));
                }
                Ok(Reply::Done)
            }
            Event::AlertsDelivered { ids } => {
                self.alerts_delivered(now, ids);
                Ok(Reply::Done)
            }
            Event::Tick => {
                self.watchdog(now);
                self.recheck_staging(now);
                Ok(Reply::Done)
            }
            Event::AddJob(request) => self.add_job(now, *request),
        }
    }

    fn project_id(&self, name: &str) -> Result<ProjectId, ApiError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| ApiError::UnknownProject { name: name.to_string() })
    }

    fn add_project(&mut self, now: Now, new: NewProjectEvent) -> Result<Reply, Rejected> {
        let NewProjectEvent {
            name,
            dir,
            spec,
            files,
            after,
            max_running,
            share,
        } = new;
        common::name::check_name(&name)?;
        if self.by_name.contains_key(&name) {
            return Err(ApiError::DuplicateProject { name }.into());
        }
        for before in &after {
            self.project_id(before)?;
        }
        if max_running == Some(0) {
            return Err(ApiError::InvalidValue {
                what: "--max-running".into(),
                reason: "must be at least 1 (`hz pause` holds a project)".into(),
            }
            .into());
        }
        if share == 0 {
            return Err(ApiError::InvalidValue {
                what: "--share".into(),
                reason: "must be at least 1 (`hz pause` holds a project)".into(),
            }
            .into());
        }
        self.check_project_alerts(&spec)?;
        self.check_fits(&spec)?;
        if files.is_empty() {
            return Err(ApiError::EmptyDirectory {
                dir: dir.display().to_string(),
            }
            .into());
        }
        let id = ProjectId(self.next_project);
        self.next_project += 1;
        let first = self.next_fragment;
        self.next_fragment += files.len() as i64;
        let results_dir = self.results_root.join(&name);
        let names = std::sync::Arc::new(files.into_iter().collect::<Names>());
        let fragments: Vec<Fragment> = (0..names.len())
            .map(|i| Fragment {
                id: FragmentId(first + i as i64),
                attempts: 0,
                failures: 0,
                state: FragmentState::Pending,
            })
            .collect();
        let total = fragments.len() as u64;
        self.writes.push(Write::AddProject {
            id,
            name: name.clone(),
            dir: dir.clone(),
            spec: Box::new(spec.clone()),
            results_dir: results_dir.clone(),
            created_at: now.wall,
            first_fragment: FragmentId(first),
            names: names.clone(),
            after: after.clone(),
            max_running,
        });
        let mut project = Project::new(
            id,
            name.clone(),
            dir,
            spec,
            results_dir.clone(),
            now.wall,
            names,
            fragments,
        );
        project.queue = (0..total as u32).collect();
        project.counts.pending = total;
        project.after = after;
        project.max_running = max_running;
        project.share = share;
        if share != 1 {
            self.writes.push(Write::ProjectShare { id, share });
        }
        self.fair.set_weight(id, share, now.mono.0);
        self.by_name.insert(name.clone(), id);
        self.projects.insert(id, project);
        tracing::info!(project = %name, fragments = total, "project added");
        Ok(Reply::Added(ProjectAdded {
            id,
            name,
            fragments: total,
            results_dir,
        }))
    }

    fn remove_project(&mut self, now: Now, name: &str) -> Result<Reply, Rejected> {
        let id = self.project_id(name)?;
        let running: Vec<AttemptId> = self
            .live
            .iter()
            .filter(|(_, l)| l.project == id)
            .map(|(a, _)| *a)
            .collect();
        for attempt in running {
            if let Some(worker) = self.end_live(now, attempt, AttemptEnd::Stopped, None, Some("project removed".into()))
                && self.workers.get(&worker).is_some_and(|w| w.link == Link::Connected)
            {
                // A stop for an unreachable worker is delivered by reconciliation when it returns.
                self.effects.push(Effect::Stop { worker, attempt });
            }
        }
        self.projects.remove(&id);
        self.fair.forget(id, now.mono.0);
        self.by_name.remove(name);
        if self.policy
            == (Policy::Priority {
                project: name.to_string(),
            })
        {
            self.policy = Policy::Fair;
            self.writes.push(Write::Policy(Policy::Fair));
        }
        self.writes.push(Write::RemoveProject { id, at: now.wall });
        tracing::info!(project = %name, "project removed");
        Ok(Reply::Done)
    }

    fn retry(&mut self, name: &str) -> Result<Reply, Rejected> {
        let id = self.project_id(name)?;
        if self.projects[&id].job.is_some() {
            // A job runs once, for the caller that waits for it: nobody would read a rerun.
            return Err(ApiError::Job {
                name: name.to_string(),
                reason: "a job is not run again: `hz run` it anew".into(),
            }
            .into());
        }
        let failed: Vec<u32> = self.projects[&id]
            .fragments
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.state, FragmentState::Failed { .. }))
            .map(|(i, _)| i as u32)
            .collect();
        for &i in &failed {
            let p = self.projects.get_mut(&id).expect("checked above");
            p.fragments[i as usize].attempts = 0;
            p.fragments[i as usize].failures = 0;
            self.set_state(id, i, FragmentState::Pending);
        }
        Ok(Reply::Retried(failed.len() as u64))
    }

    fn set_policy(&mut self, policy: Policy) -> Result<Reply, Rejected> {
        if let Policy::Priority { project } = &policy {
            self.project_id(project)?;
        }
        tracing::info!(%policy, "policy changed");
        self.policy = policy.clone();
        self.writes.push(Write::Policy(policy.clone()));
        Ok(Reply::Policy(policy))
    }

    fn register(
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
            .or_insert_with(|| Worker::new(name.clone(), resources.clone(), Link::Connected, now));
        w.resources = resources.clone();
        w.link = Link::Connected;
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

    fn heartbeat(&mut self, now: Now, name: &str, running: Vec<AttemptId>) -> Result<Reply, Rejected> {
        let w = match self.workers.get_mut(name) {
            Some(w) if !matches!(w.link, Link::Lost { .. } | Link::Stopped { .. }) => w,
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
        if w.link == Link::Connected {
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
    fn drop_prepared(&mut self, worker: &str, attempt: AttemptId) {
        if self.workers.get(worker).is_some_and(|w| w.staging != Staging::Shared) {
            self.effects.push(Effect::Stop {
                worker: worker.to_string(),
                attempt,
            });
        }
    }

    fn complete(
        &mut self,
        now: Now,
        worker: &str,
        c: Completion,
        staging_error: Option<String>,
    ) -> Result<Reply, Rejected> {
        let Some(live) = self.live.get(&c.attempt).copied() else {
            if c.attempt.0 >= self.next_attempt || c.attempt.0 <= 0 {
                return Err(Rejected::UnknownAttempt { attempt: c.attempt });
            }
            // Already ended (lost, stopped, or this completion arrived twice): keep the late
            // result where the record allows it, change no fragment.
            tracing::info!(%worker, attempt = %c.attempt, exit = %c.exit, "late or repeated completion recorded; no fragment changes");
            // The machine no longer knows which worker ran it; the store checks the record.
            self.writes.push(Write::Late {
                id: c.attempt,
                worker: worker.to_string(),
                completion: c,
            });
            return Ok(Reply::Done);
        };
        let project = &self.projects[&live.project];
        let fragment = &project.fragments[live.index as usize];
        let FragmentState::Running { worker: runs_on, .. } = &fragment.state else {
            unreachable!("a live attempt's fragment is running");
        };
        if runs_on != worker {
            return Err(Rejected::NotItsAttempt {
                worker: worker.to_string(),
                attempt: c.attempt,
                runs_on: runs_on.clone(),
            });
        }
        if let Some(w) = self.workers.get_mut(worker) {
            w.last_seen = now.wall;
            w.heard = now.mono;
        }
        let p = self
            .projects
            .get_mut(&live.project)
            .expect("live attempts' projects exist");
        if !matches!(c.exit, Exit::StartFailed(_)) {
            // An average over about the last eight attempts: one slow start does not undo
            // the depth, a change of program shows within a few.
            p.recent_wall_ms = Some(p.recent_wall_ms.map_or(c.wall_ms, |avg| (avg * 7 + c.wall_ms) / 8));
        }
        p.recent.ended(now.mono, p.started.max(1));
        let project = &self.projects[&live.project];
        let fragment = project.names.get(live.index as usize);
        let success = matches!(c.exit, Exit::Code(code) if project.spec.success_codes.contains(&code));
        let end = match (&staging_error, success) {
            (Some(_), _) => AttemptEnd::StagingFailed,
            (None, true) => AttemptEnd::Succeeded,
            (None, false) => AttemptEnd::Failed,
        };
        tracing::debug!(project = %project.name, %fragment, attempt = %c.attempt, %worker, exit = %c.exit, wall_ms = c.wall_ms, "attempt finished");
        if !matches!(c.exit, Exit::StartFailed(_)) {
            self.ran_a_start(worker);
        }
        self.end_live(now, c.attempt, end, Some(c), staging_error.clone());
        if let Some(reason) = staging_error {
            self.staging_broke(now, worker, reason);
        }
        Ok(Reply::Done)
    }

    fn probed(&mut self, now: Now, worker: &str, result: Result<(), String>) {
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
    fn staging_broke(&mut self, now: Now, worker: &str, reason: String) {
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
    fn recheck_staging(&mut self, now: Now) {
        for w in self.workers.values_mut() {
            if let Staging::Broken {
                scratch: Some(scratch),
                since,
                ..
            } = &w.staging
                && w.link == Link::Connected
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

    /// Ends a live attempt and moves its fragment on. Returns the worker it ran on.
    fn end_live(
        &mut self,
        now: Now,
        attempt: AttemptId,
        end: AttemptEnd,
        completion: Option<Completion>,
        note: Option<String>,
    ) -> Option<String> {
        let live = self.live.remove(&attempt)?;
        let project = self.projects.get_mut(&live.project)?;
        if live.ran.is_some() {
            project.started -= 1;
        }
        if project.job.is_none() {
            let cpus = Size::of(&project.spec.requests).cpus;
            Self::fair_ended(&mut self.fair, now, &live, cpus, completion.as_ref());
        }
        // A job that ran is not run again, unless it asked to be.
        let job_ends = project
            .job
            .as_deref()
            .is_some_and(|job| jobs::ends_job(job, end, live.ran.is_some()));
        if end == AttemptEnd::TakenBack || (end == AttemptEnd::Cancelled && live.ran.is_none()) {
            // It never ran, or its worker's clean shutdown stopped it: it costs its fragment
            // no attempt.
            let f = &mut project.fragments[live.index as usize];
            f.attempts = f.attempts.saturating_sub(1);
        }
        let fragment = &project.fragments[live.index as usize];
        let FragmentState::Running { worker, .. } = fragment.state.clone() else {
            return None;
        };
        let max = project.spec.max_attempts;
        let retry_failed = project.spec.retry_failed;
        let attempts = fragment.attempts;
        let retries = project.spec.retries;
        let failures = fragment.failures + u32::from(end == AttemptEnd::Failed);
        project.fragments[live.index as usize].failures = failures;
        let size = Size::of(&project.spec.requests);
        if let Some(w) = self.workers.get_mut(&worker)
            && w.running.remove(&attempt)
        {
            w.held.remove(size);
        }
        let exit = completion.as_ref().map(|c| c.exit.clone());
        // A limit decides only a failed end (a program may cope with a child's OOM kill).
        let limit = completion
            .as_ref()
            .and_then(|c| c.limit.clone())
            .filter(|_| end == AttemptEnd::Failed);
        let limit_retried = limit
            .as_ref()
            .is_some_and(|l| project.spec.retry_on.contains(&l.kind()));
        if let Some(exit) = &exit {
            self.job_exited(live.project, &worker, exit);
        }
        // A completion also records the start where no notice came first (a short program):
        // the store takes it from `finished_at - wall_ms`, in the same row update.
        self.writes.push(Write::AttemptEnded {
            id: attempt,
            end,
            at: now.wall,
            completion,
            note: note.clone(),
        });
        let next = match end {
            AttemptEnd::Lost | AttemptEnd::TakenBack if job_ends => FragmentState::Failed {
                attempt: Some(attempt),
                reason: match end {
                    AttemptEnd::Lost => format!(
                        "its worker {worker} was lost while it {} ({}); it is not run again (`hz run --requeue` would)",
                        if live.ran.is_some() { "ran" } else { "was starting" },
                        note.as_deref().unwrap_or("lost")
                    ),
                    _ => format!(
                        "its worker {worker} shut down while it ran; it is not run again (`hz run --requeue` would)"
                    ),
                },
            },
            AttemptEnd::Succeeded => FragmentState::Succeeded { attempt },
            // The same input would hit the same limit: retried only where asked
            // (`--retry-on`), up to the attempts a fragment gets.
            AttemptEnd::Failed if limit.is_some() && limit_retried && attempts < max => FragmentState::Pending,
            AttemptEnd::Failed if limit.is_none() && (failures <= retries || (retry_failed && attempts < max)) => {
                FragmentState::Pending
            }
            AttemptEnd::Failed => FragmentState::Failed {
                attempt: Some(attempt),
                reason: match (&limit, &exit) {
                    (Some(limit), _) => limit.to_string(),
                    (None, Some(Exit::Code(c))) => format!("exited with {c}"),
                    (None, Some(Exit::Signal(s))) => format!("killed by signal {s}"),
                    (None, Some(Exit::StartFailed(why))) => format!("could not start: {why}"),
                    (None, None) => "failed".to_string(),
                },
            },
            AttemptEnd::Lost if attempts >= max => FragmentState::Failed {
                attempt: Some(attempt),
                reason: format!(
                    "{}, the last lost: {}",
                    common::count(attempts, "attempt"),
                    note.as_deref().unwrap_or("lost")
                ),
            },
            AttemptEnd::StagingFailed if attempts >= max => FragmentState::Failed {
                attempt: Some(attempt),
                reason: format!(
                    "{}, the last failed to stage its files: {}",
                    common::count(attempts, "attempt"),
                    note.as_deref().unwrap_or("unknown")
                ),
            },
            AttemptEnd::Cancelled => FragmentState::Failed {
                attempt: Some(attempt),
                reason: "cancelled".to_string(),
            },
            AttemptEnd::Lost | AttemptEnd::Stopped | AttemptEnd::StagingFailed | AttemptEnd::TakenBack => {
                FragmentState::Pending
            }
        };
        if end == AttemptEnd::Stopped {
            // The project is going away; its fragments are not requeued.
            return Some(worker);
        }
        let p = &self.projects[&live.project];
        let fragment = p.names.get(live.index as usize);
        match (&next, end) {
            (FragmentState::Failed { reason, .. }, _) => {
                tracing::info!(project = %p.name, %fragment, %attempt, %worker, exit = ?exit, %reason, "fragment failed");
            }
            (FragmentState::Pending, AttemptEnd::Failed) => {
                tracing::info!(project = %p.name, %fragment, %attempt, %worker, exit = ?exit, "attempt failed; its fragment is retried");
            }
            _ => {}
        }
        self.set_state(live.project, live.index, next);
        self.fragment_alerts(now, live, attempt, &worker, end, exit.as_ref());
        Some(worker)
    }

    /// The one place a fragment changes state: checks the transition, keeps the counts and
    /// the queue, and queues the write.
    fn set_state(&mut self, project: ProjectId, index: u32, next: FragmentState) {
        let p = self.projects.get_mut(&project).expect("caller checked the project");
        let f = &mut p.fragments[index as usize];
        assert!(
            f.state.may_become(&next),
            "illegal fragment transition {:?} -> {:?}",
            f.state,
            next
        );
        *p.counts.slot(&f.state) -= 1;
        *p.counts.slot(&next) += 1;
        if let FragmentState::Failed { reason, .. } = &f.state
            && let Some(n) = p.failures.get_mut(reason)
        {
            *n -= 1;
            if *n == 0 {
                p.failures.remove(reason);
            }
        }
        if let FragmentState::Failed { reason, .. } = &next {
            *p.failures.entry(reason.clone()).or_default() += 1;
        }
        if next == FragmentState::Pending {
            p.queue.push_back(index);
        }
        f.state = next;
        self.writes.push(Write::Fragment {
            id: f.id,
            attempts: f.attempts,
            failures: f.failures,
            state: f.state.clone(),
        });
    }

    /// Declares silent workers lost; their attempts go back to the queue.
    fn watchdog(&mut self, now: Now) {
        let silent: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                // A cleanly stopped worker is watched only for what it still holds.
                let watched = match w.link {
                    Link::Lost { .. } => false,
                    Link::Stopped { .. } => !w.running.is_empty(),
                    Link::Connected | Link::Disconnected { .. } => true,
                };
                watched && now.mono.since(w.heard) >= self.timing.worker_timeout_ms
            })
            .map(|w| w.name.clone())
            .collect();
        for name in silent {
            let w = self.workers.get_mut(&name).expect("listed above");
            w.link = Link::Lost { since: now.wall };
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

    /// Gives every free slot of a connected worker to a pending fragment.
    pub(crate) fn schedule(&mut self, now: Now) {
        self.last_wall = now.wall;
        self.last_mono = now.mono;
        self.settle_after();
        self.place_instances(now);
        if self.space == Space::Enough {
            self.schedule_jobs(now);
        }
        // Queues may deepen as projects run out of pending fragments (see `pending_attempt_ms`),
        // at most once per project: schedule until that settles.
        loop {
            let attempt_ms = self.pending_attempt_ms();
            if !self.schedule_once(now, attempt_ms) || self.pending_attempt_ms() == attempt_ms {
                return;
            }
        }
    }

    /// One round of [`Machine::schedule`] with queues as deep as `attempt_ms` allows; whether
    /// it started anything.
    fn schedule_once(&mut self, now: Now, attempt_ms: Option<u64>) -> bool {
        if self.space != Space::Enough {
            return false;
        }
        let priority = match &self.policy {
            Policy::Priority { project } => self.by_name.get(project).copied(),
            Policy::Fair => None,
        };
        let demands = self.fair_demands(now, priority);
        if demands.is_empty() {
            return false;
        }
        let services = self.services.requested();
        let capacity: Vec<Capacity<'_>> = self
            .workers
            .values()
            .filter(|w| w.takes_starts(now))
            .map(|w| Capacity {
                worker: &w.name,
                free: w
                    .capacity(attempt_ms)
                    .saturating_sub(w.running.len() as u32 + w.foreign),
                slots: w.resources.slots,
                room: packing::room(w.offer(), services.get(w.name.as_str())),
                held: &w.held,
            })
            .collect();
        let reserved: Vec<(ProjectId, &str)> = self.reserved.iter().map(|(p, w)| (*p, w.as_str())).collect();
        let round = scheduler::assign(&demands, priority, &capacity, &reserved);
        let assignments: Vec<(String, ProjectId)> = round
            .assignments
            .into_iter()
            .map(|a| (a.worker.to_string(), a.project))
            .collect();
        self.reserved = round.reserved.into_iter().map(|(p, w)| (p, w.to_string())).collect();
        let started = !assignments.is_empty();
        for (worker, project) in assignments {
            self.dispatch(now, worker, project);
        }
        started
    }

    /// How long the pending attempts can be expected to run: the longest recent wall time
    /// among the projects with pending fragments, `None` while one of them has had none end.
    /// Queues are filled deep only when every attempt that may go into them is short.
    pub(crate) fn pending_attempt_ms(&self) -> Option<u64> {
        self.projects
            .values()
            .filter(|p| !p.queue.is_empty() && p.job.is_none())
            .map(|p| p.recent_wall_ms)
            .try_fold(0, |longest, ms| Some(longest.max(ms?)))
    }

    fn dispatch(&mut self, now: Now, worker: String, project: ProjectId) {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let p = self.projects.get_mut(&project).expect("scheduled projects exist");
        let index = p.queue.pop_front().expect("scheduled projects have pending fragments");
        let f = &mut p.fragments[index as usize];
        f.attempts += 1;
        let w = self.workers.get_mut(&worker).expect("scheduled workers exist");
        w.running.insert(attempt);
        w.held.add(Size::of(&p.spec.requests));
        let (mut start, mut upload) = match w.staging.scratch() {
            None => (start_for(p, index, attempt, self.max_log_bytes), Vec::new()),
            Some(scratch) => staged_start_for(p, index, attempt, scratch, self.max_log_bytes),
        };
        if let Some(job) = &p.job {
            // Its command as given, in its directory, with nothing to copy.
            start.argv = job.argv.clone();
            start.interactive = Some(job.interactive);
            upload.clear();
        }
        let fragment_id = p.fragments[index as usize].id;
        self.live.insert(attempt, Live::new(project, index, now.mono));
        self.writes.push(Write::AttemptStarted {
            id: attempt,
            fragment: fragment_id,
            worker: worker.clone(),
            at: now.wall,
        });
        self.set_state(
            project,
            index,
            FragmentState::Running {
                attempt,
                worker: worker.clone(),
                since: now.wall,
            },
        );
        self.effects.push(Effect::Start {
            worker,
            start: Box::new(start),
            upload,
        });
    }

    // ----- queries: read-only views for the RPCs -----

    pub(crate) fn progress(&self, name: Option<&str>) -> Result<Vec<ProjectProgress>, ApiError> {
        let view = |p: &Project| {
            let total = p.fragments.len() as u64;
            let mut failures: Vec<FailureCount> = p
                .failures
                .iter()
                .map(|(reason, &count)| FailureCount {
                    reason: reason.clone(),
                    count,
                })
                .collect();
            failures.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
            failures.truncate(3);
            ProjectProgress {
                id: p.id,
                name: p.name.clone(),
                dir: p.dir.clone(),
                program: p.spec.program.clone(),
                total,
                pending: p.counts.pending,
                running: p.started,
                queued: p.counts.running - p.started,
                succeeded: p.counts.succeeded,
                failed: p.counts.failed,
                percent: if total == 0 {
                    100.0
                } else {
                    p.counts.succeeded as f64 * 100.0 / total as f64
                },
                rate: p.recent.rate(p.started),
                failures,
                created_at: p.created_at,
                results_dir: p.results_dir.clone(),
                held: self.held(p),
                warnings: self.warnings(p),
                paused: p.paused,
                max_running: p.max_running,
                after: p.after.clone(),
                spec: Some(Box::new(p.spec.clone())),
            }
        };
        match name {
            Some(n) => Ok(vec![view(&self.projects[&self.project_id(n)?])]),
            // Jobs (`hz run`) are shown by `hz active`, not listed.
            None => Ok(self.projects.values().filter(|p| p.job.is_none()).map(view).collect()),
        }
    }

    /// A page of the dispatched attempts, in attempt order.
    pub(crate) fn active(&self, offset: u64, limit: u32) -> Page<ActiveAttempt> {
        let total = self.live.len() as u64;
        let items: Vec<ActiveAttempt> = self
            .live
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit as usize)
            .filter_map(|(attempt, l)| {
                let p = self.projects.get(&l.project)?;
                let f = &p.fragments[l.index as usize];
                let FragmentState::Running { worker, since, .. } = &f.state else {
                    return None;
                };
                Some(ActiveAttempt {
                    worker: worker.clone(),
                    project: p.name.clone(),
                    fragment: p.names.get(l.index as usize).to_string(),
                    attempt: *attempt,
                    since: *since,
                    started: l.ran,
                })
            })
            .collect();
        let end = offset.saturating_add(u64::from(limit));
        Page {
            items,
            next: (end < total).then_some(end),
            total,
        }
    }

    pub(crate) fn workers(&self) -> Vec<WorkerInfo> {
        self.workers
            .values()
            .map(|w| {
                let running = w
                    .running
                    .iter()
                    .filter(|a| self.live.get(a).is_some_and(|l| l.ran.is_some()))
                    .count() as u32;
                (w, running)
            })
            .map(|(w, running)| WorkerInfo {
                name: w.name.clone(),
                resources: w.resources.clone(),
                running,
                queued: w.running.len() as u32 - running,
                instances: self.services.kept_on(&w.name),
                state: w.link.as_str().to_string(),
                drained: w.drained,
                last_seen: w.last_seen,
                staging: match &w.staging {
                    Staging::Shared => "shared",
                    Staging::Checking { .. } => "ssh checking",
                    Staging::Ready { .. } => "ssh ready",
                    Staging::Broken { .. } => "ssh failed",
                }
                .to_string(),
                problem: match (&w.staging, &w.refusing) {
                    (Staging::Broken { reason, .. }, _) => Some(reason.clone()),
                    (_, Some(r)) => Some(format!("{} refuses starts ({} refused): {}", w.name, r.count, r.reason)),
                    _ => self.space.held(),
                },
            })
            .collect()
    }

    /// What to copy back when `worker` reports `attempt` complete: nothing unless the worker
    /// stages and the attempt is still its fragment's current one (a late or repeated
    /// completion changes no outcome, so its files are not brought back over the accepted
    /// ones).
    pub(crate) fn fetch_plan(&self, worker: &str, attempt: AttemptId) -> Option<Fetch> {
        let scratch = self.workers.get(worker)?.staging.scratch()?;
        let l = self.live.get(&attempt)?;
        let p = self.projects.get(&l.project)?;
        let f = &p.fragments[l.index as usize];
        match &f.state {
            FragmentState::Running { worker: on, .. } if on == worker => {}
            _ => return None,
        }
        let name = p.names.get(l.index as usize);
        let (stdout, stderr, output_dir) = attempt_paths(&p.results_dir, name, attempt);
        let remote = StagedPaths::new(scratch, attempt, name);
        Some(Fetch {
            outputs: (remote.output_dir, output_dir),
            logs: vec![(remote.stdout, stdout), (remote.stderr, stderr)],
        })
    }

    pub(crate) fn policy(&self) -> Policy {
        self.policy.clone()
    }

    /// The project's id and results directory, for queries answered from the database.
    pub(crate) fn project_ref(&self, name: &str) -> Result<(ProjectId, PathBuf), ApiError> {
        let id = self.project_id(name)?;
        Ok((id, self.projects[&id].results_dir.clone()))
    }

    #[cfg(test)]
    pub(crate) fn project(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name).map(|id| &self.projects[id])
    }

    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// Where an attempt's files go: `<results>/logs/<fragment>.<attempt>.{stdout,stderr}`, and the
/// project's shared `<results>/output/` for what programs write. Flat on purpose: creating a
/// directory per fragment or per attempt cost more than running `/bin/true` (see
/// BENCHMARKS.md), and attempt-qualified names keep two attempts of one fragment apart.
pub(crate) fn attempt_paths(
    results_dir: &std::path::Path,
    fragment: &str,
    attempt: AttemptId,
) -> (PathBuf, PathBuf, PathBuf) {
    let logs = results_dir.join("logs");
    (
        logs.join(format!("{fragment}.{attempt}.stdout")),
        logs.join(format!("{fragment}.{attempt}.stderr")),
        results_dir.join("output"),
    )
}

/// An attempt's files on a host without the shared filesystem, all inside
/// `<scratch>/<attempt>/`: the input (and the program, when it lives in the project
/// directory) under `in/`, what the program writes under `out/`, and its stdout and stderr.
struct StagedPaths {
    root: PathBuf,
    inputs: PathBuf,
    input: PathBuf,
    output_dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl StagedPaths {
    fn new(scratch: &std::path::Path, attempt: AttemptId, fragment: &str) -> Self {
        let root = scratch.join(attempt.0.to_string());
        let inputs = root.join("in");
        StagedPaths {
            input: inputs.join(fragment),
            output_dir: root.join("out"),
            stdout: root.join("stdout"),
            stderr: root.join("stderr"),
            inputs,
            root,
        }
    }
}

/// The start of an attempt on a staged worker, and the files to copy there first. The
/// program is copied too when its executable lies inside the project directory (its path
/// there is not valid on the host); anywhere else it must be installed on the host.
fn staged_start_for(
    p: &Project,
    index: u32,
    attempt: AttemptId,
    scratch: &std::path::Path,
    max_log_bytes: u64,
) -> (StartAttempt, Vec<Upload>) {
    let name = p.names.get(index as usize);
    let paths = StagedPaths::new(scratch, attempt, name);
    let mut upload = vec![Upload {
        from: p.dir.join(name),
        to: paths.input.clone(),
    }];
    let mut program = p.spec.program.clone();
    if let Some(exe) = common::template::executable(&p.spec.program)
        && let Ok(rel) = std::path::Path::new(exe).strip_prefix(&p.dir)
        && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        let to = paths.inputs.join(rel);
        let start = p.spec.program.len() - p.spec.program.trim_start().len();
        program = format!(
            "{}{}{}",
            &p.spec.program[..start],
            to.display(),
            &p.spec.program[start + exe.len()..]
        );
        upload.push(Upload {
            from: PathBuf::from(exe),
            to,
        });
    }
    let start = StartAttempt {
        attempt,
        project: p.name.clone(),
        fragment: name.to_string(),
        argv: common::template::expand(&program, &paths.input),
        input: paths.input,
        cwd: p.spec.cwd.clone().unwrap_or_else(|| paths.inputs.clone()),
        env: p.spec.env.clone(),
        stdout: paths.stdout,
        stderr: paths.stderr,
        output_dir: paths.output_dir,
        grace_ms: p.spec.grace_ms,
        scratch: Some(paths.root),
        max_log_bytes,
        uploader_uid: None,
        settings: p.spec.settings.clone(),
        interactive: None,
        requests: p.spec.requests,
    };
    (start, upload)
}

fn start_for(p: &Project, index: u32, attempt: AttemptId, max_log_bytes: u64) -> StartAttempt {
    let name = p.names.get(index as usize);
    let input = p.dir.join(name);
    let (stdout, stderr, output_dir) = attempt_paths(&p.results_dir, name, attempt);
    StartAttempt {
        attempt,
        project: p.name.clone(),
        fragment: name.to_string(),
        argv: common::template::expand(&p.spec.program, &input),
        input,
        cwd: p.spec.cwd.clone().unwrap_or_else(|| p.dir.clone()),
        env: p.spec.env.clone(),
        stdout,
        stderr,
        output_dir,
        grace_ms: p.spec.grace_ms,
        scratch: None,
        max_log_bytes,
        uploader_uid: None,
        settings: p.spec.settings.clone(),
        interactive: None,
        requests: p.spec.requests,
    }
}
