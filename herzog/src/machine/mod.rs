//! The state machine: herzog's whole scheduling state and every transition, with no IO.
//!
//! `handle` applies one event at a given time and queues the database writes and the
//! effects it implies; `schedule` hands free slots to pending fragments; `take` drains both
//! queues for the event loop, which commits the writes and only then runs the effects.
//! The transitions live in child modules by topic (projects, fragments, workers, schedule,
//! starts, queries, restore, ...), each an `impl Machine` with access to its private state.

mod alerts;
mod controls;
mod follow;
mod fragments;
mod jobs;
mod names;
mod packing;
#[cfg(feature = "planted-bugs")]
pub(crate) mod planted;
mod projects;
mod queries;
mod restore;
mod running;
mod schedule;
mod services;
mod shares;
mod starts;
#[cfg(test)]
mod tests;
mod types;
mod workers;

pub(crate) use alerts::{Alert, AlertRules, OutboxRow, Recipient, StderrFrom};
pub(crate) use follow::Followed;
pub(crate) use jobs::Job;
pub(crate) use names::Names;
pub(crate) use running::Recent;
pub(crate) use types::*;

pub(crate) use fragments::{Counts, Fragment, Live};
pub(crate) use projects::Project;
pub(crate) use restore::{Snapshot, StoredWorker};
pub(crate) use starts::attempt_paths;
use starts::{StagedPaths, staged_start_for, start_for};
pub(crate) use workers::Worker;

use crate::scheduler::{self, Capacity, Demand, Held, Size};
use common::wire::*;
use common::{ApiError, AttemptId, FragmentId, Millis, ProjectId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// herzog's state. One owner: the event loop.
#[derive(Debug)]
pub(crate) struct Machine {
    timing: Timing,
    results_root: PathBuf,
    projects: BTreeMap<ProjectId, Project>,
    /// Ordered like every map here, so nothing the machine decides depends on hash order.
    by_name: BTreeMap<String, ProjectId>,
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
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted: planted::Planted,
}

impl Machine {
    pub(crate) fn new(timing: Timing, results_root: PathBuf) -> Self {
        Machine {
            timing,
            results_root,
            projects: BTreeMap::new(),
            by_name: BTreeMap::new(),
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
            #[cfg(feature = "planted-bugs")]
            planted: planted::Planted::default(),
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
                    && w.connection == ConnectionState::Connected
                {
                    w.connection = ConnectionState::Disconnected { since: now.wall };
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
}
