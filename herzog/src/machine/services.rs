//! The machine's services: the events that concern them, handed to the pure
//! [`Services`](crate::services::Services), whose orders become effects and whose changes
//! become writes.

use super::*;
use crate::services::{Order, Wanted};
use common::instances::{InstanceReport, InstanceRun, InstanceState, InstanceStatus, ReloadSummary, ServiceAction};
use common::services::ServicesFile;

impl Machine {
    /// The connected workers, by name, that files can reach: where instances may be placed
    /// (on a host without the shared filesystem, once herzog has logged in there).
    fn connected(&self) -> Vec<String> {
        self.workers
            .values()
            .filter(|w| {
                w.connection == ConnectionState::Connected
                    && matches!(w.staging, Staging::Shared | Staging::Ready { .. })
            })
            .map(|w| w.name.clone())
            .collect()
    }

    /// The connected workers as placement sees them: what they offer and what their
    /// attempts use at once.
    fn hosts(&self) -> Vec<crate::services::Host> {
        self.workers
            .values()
            .filter(|w| {
                w.connection == ConnectionState::Connected
                    && matches!(w.staging, Staging::Shared | Staging::Ready { .. })
            })
            .map(|w| {
                let (cpus, memory) = w.held.peak(w.resources.slots, None);
                crate::services::Host {
                    name: w.name.clone(),
                    offer: w.offer(),
                    attempts: Size {
                        cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
                        memory: u64::try_from(memory).unwrap_or(u64::MAX),
                    },
                }
            })
            .collect()
    }

    fn order(&mut self, orders: Vec<Order>) {
        for order in orders {
            let effect = match order {
                Order::Run { worker, mut run } => match self.stage(&worker, &mut run) {
                    Some(upload) => Effect::StageInstance { worker, run, upload },
                    None => Effect::Instance(Order::Run { worker, run }),
                },
                other => Effect::Instance(other),
            };
            self.effects.push(effect);
        }
    }

    /// What to copy for a placement on a worker without the shared filesystem, if its
    /// service stages files: each into `<scratch>/services/<run>/` by its file name. The
    /// placement learns the directory (`HERZOG_STAGE_DIR`), and an argument that names a
    /// staged file names its copy instead.
    fn stage(&self, worker: &str, run: &mut InstanceRun) -> Option<Vec<Upload>> {
        let Some(Worker {
            staging: Staging::Ready { scratch },
            ..
        }) = self.workers.get(worker)
        else {
            return None;
        };
        let staged = &self.services.file().services.get(&run.instance.service)?.stage;
        if staged.is_empty() {
            return None;
        }
        let dir = scratch.join("services").join(run.run.to_string());
        let upload: Vec<Upload> = staged
            .iter()
            .filter_map(|from| {
                Some(Upload {
                    from: from.clone(),
                    to: dir.join(from.file_name()?),
                })
            })
            .collect();
        for arg in &mut run.spec.argv {
            if let Some(u) = upload.iter().find(|u| u.from.as_os_str() == arg.as_str()) {
                *arg = u.to.to_string_lossy().into_owned();
            }
        }
        run.spec
            .env
            .insert("HERZOG_STAGE_DIR".into(), dir.to_string_lossy().into_owned());
        run.staged = Some(dir);
        Some(upload)
    }

    pub(super) fn instances_report(
        &mut self,
        now: Now,
        worker: &str,
        reports: Vec<InstanceReport>,
    ) -> Result<Reply, Rejected> {
        match self.workers.get(worker) {
            Some(w) if w.connection == ConnectionState::Connected => {}
            // A worker must register first: that is when herzog reconciles it.
            _ => {
                return Err(ApiError::UnknownWorker {
                    name: worker.to_string(),
                }
                .into());
            }
        }
        self.note_exits(&reports);
        let orders = self
            .services
            .report(now.mono, self.timing.start_grace_ms, worker, reports);
        self.order(orders);
        Ok(Reply::Done)
    }

    pub(super) fn services_reload(&mut self, file: ServicesFile) -> Result<Reply, Rejected> {
        let connected = self.connected();
        let (d, orders) = self.services.reload(file.clone(), &connected);
        self.writes.push(Write::ServicesFile(file));
        self.order(orders);
        if !d.is_empty() {
            tracing::info!(added = ?d.added, removed = ?d.removed, restarted = ?d.restarted, retuned = ?d.retuned, scaled = ?d.scaled, "services reloaded");
        }
        Ok(Reply::Reloaded(ReloadSummary {
            added: d.added,
            removed: d.removed,
            restarted: d.restarted,
            retuned: d.retuned,
            scaled: d.scaled,
            unchanged: d.unchanged,
        }))
    }

    pub(super) fn services_control(
        &mut self,
        now: Now,
        action: ServiceAction,
        names: &[String],
    ) -> Result<Reply, Rejected> {
        let mut ids = Vec::new();
        for name in names {
            let selected = self.services.select(Some(name));
            if selected.is_empty() {
                return Err(ApiError::UnknownService { name: name.clone() }.into());
            }
            ids.extend(selected);
        }
        let orders = match action {
            ServiceAction::Start => {
                // A Fatal or exited instance starts afresh: placed anew.
                let mut orders = self.services.restart_ended(&ids);
                orders.extend(self.services.want(&ids, Wanted::Up));
                orders
            }
            ServiceAction::Stop => self.services.want(&ids, Wanted::Down),
            ServiceAction::Restart => {
                let mut orders = self.services.want(&ids, Wanted::Down);
                orders.extend(self.services.want(&ids, Wanted::Up));
                orders
            }
            ServiceAction::Signal(signal) => self.services.signal(&ids, signal.number()),
        };
        self.order(orders);
        // What the reply shows includes what starts now.
        self.place_instances(now);
        Ok(Reply::Instances(self.services_status(None)))
    }

    /// Where `hz tail` reads `name`'s `stream`: the placement `follow` names and its worker.
    pub(crate) fn output_route(
        &self,
        name: &str,
        follow: &common::output::Follow,
        stream: common::output::Stream,
    ) -> Result<crate::services::Route, ApiError> {
        let connected = |w: &str| {
            self.workers
                .get(w)
                .is_some_and(|w| w.connection == ConnectionState::Connected)
        };
        crate::services::route::route(&self.services, connected, name, follow, stream)
    }

    /// Places what waits for a worker; after every batch, with the scheduling.
    pub(super) fn place_instances(&mut self, now: Now) {
        let hosts = self.hosts();
        let orders = self.services.place_on(now.mono, &hosts);
        self.order(orders);
    }

    /// What the record must learn of services since the last call.
    pub(super) fn services_writes(&mut self) {
        let notes = self.services.take_notes();
        if !notes.is_empty() {
            let at = self.last_wall;
            let stored = notes
                .into_iter()
                .map(|(service, instance, worker, kind)| self.event(at, service, instance, worker, None, kind))
                .collect();
            self.writes.push(Write::ServiceEvents(stored));
        }
        let changed = self.services.take_changed();
        if changed.is_empty() {
            return;
        }
        for (id, recorded) in changed {
            self.writes.push(Write::Instance { id, recorded });
        }
        self.writes.push(Write::MaxRun(self.services.max_run()));
    }

    /// An entry of the event log, with the next id.
    fn event(
        &mut self,
        at: common::Millis,
        service: String,
        instance: String,
        worker: Option<String>,
        origin: Option<(common::instances::RunId, u32)>,
        kind: common::instances::EventKind,
    ) -> StoredEvent {
        let id = self.next_event;
        self.next_event += 1;
        StoredEvent {
            id,
            at,
            service,
            instance,
            worker,
            origin,
            kind,
        }
    }

    /// What a worker says happened to its instances: into the event log.
    pub(super) fn instance_events(
        &mut self,
        worker: &str,
        events: Vec<common::instances::InstanceEvent>,
    ) -> Result<Reply, Rejected> {
        if !self.workers.contains_key(worker) {
            return Err(ApiError::UnknownWorker {
                name: worker.to_string(),
            }
            .into());
        }
        for e in &events {
            self.instance_alert(worker, e);
        }
        let stored = events
            .into_iter()
            .map(|e| {
                let origin = Some((e.run, e.n));
                self.event(
                    e.at,
                    e.instance.service.clone(),
                    e.instance.to_string(),
                    Some(worker.to_string()),
                    origin,
                    e.kind,
                )
            })
            .collect::<Vec<_>>();
        if !stored.is_empty() {
            self.writes.push(Write::ServiceEvents(stored));
        }
        Ok(Reply::Done)
    }

    /// The id of the last event of the log (0 when none).
    pub(crate) fn last_event(&self) -> i64 {
        self.next_event - 1
    }

    /// Every instance of `name` (of every service when `None`), as `hz status` shows it.
    pub(crate) fn services_status(&self, name: Option<&str>) -> Vec<InstanceStatus> {
        let file = self.services.file();
        self.services
            .instances()
            .iter()
            .filter(|(id, _)| name.is_none_or(|n| id.service == n || id.to_string() == n))
            .map(|(id, kept)| {
                // Being replaced or stopped: its old placement, stopping, until it is gone.
                let draining = kept.draining.as_ref().filter(|_| kept.placed.is_none());
                let placed = kept.placed.as_ref().or(draining);
                let state = match placed.and_then(|p| p.state.clone()) {
                    _ if draining.is_some() => InstanceState::Stopping {
                        pid: draining.and_then(|d| d.state.as_ref()?.pid()),
                    },
                    Some(state) => state,
                    None if placed.is_some() => InstanceState::Starting {
                        pid: None,
                        since: 0,
                        retries: 0,
                    },
                    None => InstanceState::Stopped,
                };
                InstanceStatus {
                    service: id.service.clone(),
                    instance: id.to_string(),
                    host: placed.map(|p| p.worker.clone()),
                    state,
                    restarts: placed.map_or(0, |p| p.restarts),
                    description: file.services.get(&id.service).and_then(|s| s.description.clone()),
                }
            })
            .collect()
    }
}
