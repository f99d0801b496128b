//! herzog's side of services, pure: which instances should run, where each is placed, what
//! the workers say of them, and what to ask the workers to do. The machine owns one
//! [`Services`] and calls it with the events that concern services; it returns [`Order`]s
//! (the effects) and never does IO.
//!
//! Placement: an instance of a service pinned to `hosts` goes to the listed worker with the
//! fewest instances of it (then the fewest instances at all, then by name); one that may run
//! anywhere likewise among every connected worker; a service on every host has its own
//! instances per worker. A placement is a [`RunId`], new each time, so a report about an
//! earlier placement is told apart (as attempts are fenced).

use super::diff::{Diff, diff};
use crate::machine::Mono;
use common::Millis;
use common::instances::{
    EventKind, InstanceId, InstanceReport, InstanceRun, InstanceSpec, InstanceState, RunId, WatchSpec,
};
use common::services::{ServiceSpec, ServicesFile};
use std::collections::{BTreeMap, BTreeSet};

/// Whether an instance should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    Up,
    /// Stopped by hand (`hz stop`), or a service with `autostart = false` not started yet.
    Down,
}

/// An instance herzog keeps: what is wanted of it and where it is placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) wanted: Wanted,
    pub(crate) placed: Option<Placed>,
    /// The placement it had, being stopped: a new one waits until its worker no longer
    /// holds it (a restart, a reload), so the two never run at once.
    pub(crate) draining: Option<Placed>,
}

/// One placement of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) run: RunId,
    pub(crate) worker: String,
    /// When it was placed, for the grace before a worker that does not report it has lost it.
    pub(crate) since: Mono,
    /// What its worker last said of it; `None` until it does.
    pub(crate) state: Option<InstanceState>,
    pub(crate) restarts: u32,
    /// Its worker was lost: it is placed elsewhere from this time on, once the worker, cut
    /// off as long, has stopped it (its stop grace later).
    pub(crate) released: Option<Mono>,
}

/// What herzog asks of a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Keep this placement up.
    Run { worker: String, run: Box<InstanceRun> },
    /// Stop this placement and forget it.
    Stop { worker: String, run: RunId },
    /// Watch this placement so from now on (restart policy, stop signal and grace).
    Retune {
        worker: String,
        run: RunId,
        watch: WatchSpec,
    },
    /// Send this signal (its number) to this placement's process group.
    Signal { worker: String, run: RunId, signal: i32 },
}

/// Every service and instance herzog keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Services {
    file: ServicesFile,
    instances: BTreeMap<InstanceId, Kept>,
    next_run: i64,
    /// Instances whose wanted state or placement changed since [`Services::take_changed`]:
    /// what the record must learn (a reported state it need not: workers report it again).
    changed: BTreeSet<InstanceId>,
    /// What herzog itself did to instances since [`Services::take_notes`], for the event log:
    /// (service, instance or empty, worker, what).
    notes: Vec<(String, String, Option<String>, EventKind)>,
}

/// An instance as the record keeps it: enough to take its running placement back after a
/// restart of herzog without restarting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) id: InstanceId,
    pub(crate) wanted: Wanted,
    /// Its placement: run id and worker.
    pub(crate) placed: Option<(RunId, String)>,
}

impl Services {
    /// The services of `file`, none placed yet; `max_run` is the highest run id ever issued.
    #[cfg(test)]
    pub(crate) fn new(file: ServicesFile, max_run: i64) -> Services {
        let mut s = Services {
            file: ServicesFile::default(),
            instances: BTreeMap::new(),
            next_run: max_run + 1,
            changed: BTreeSet::new(),
            notes: Vec::new(),
        };
        s.reload(file, &[]);
        s.notes.clear();
        s
    }

    /// The services after a restart: the file in force and the instances as recorded. Their
    /// placements are kept, so the workers' reports of them take them back as they run.
    pub(crate) fn restore(file: ServicesFile, recorded: Vec<Recorded>, max_run: i64, now: Mono) -> Services {
        let instances = recorded
            .into_iter()
            .filter(|r| file.services.contains_key(&r.id.service))
            .map(|r| {
                let placed = r.placed.map(|(run, worker)| Placed {
                    run,
                    worker,
                    since: now,
                    state: None,
                    restarts: 0,
                    released: None,
                });
                (
                    r.id,
                    Kept {
                        wanted: r.wanted,
                        placed,
                        draining: None,
                    },
                )
            })
            .collect();
        Services {
            file,
            instances,
            next_run: max_run + 1,
            changed: BTreeSet::new(),
            notes: Vec::new(),
        }
    }

    /// What herzog did to instances since the last call, for the event log.
    pub(crate) fn take_notes(&mut self) -> Vec<(String, String, Option<String>, EventKind)> {
        std::mem::take(&mut self.notes)
    }

    /// The file in force.
    pub(crate) fn file(&self) -> &ServicesFile {
        &self.file
    }

    /// The highest run id issued.
    pub(crate) fn max_run(&self) -> i64 {
        self.next_run - 1
    }

    /// What changed for the record since the last call: each instance as it is now, or
    /// `None` for one that is gone.
    pub(crate) fn take_changed(&mut self) -> Vec<(InstanceId, Option<Recorded>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|id| {
                let now = self.instances.get(&id).map(|k| Recorded {
                    id: id.clone(),
                    wanted: k.wanted,
                    placed: k.placed.as_ref().map(|p| (p.run, p.worker.clone())),
                });
                (id, now)
            })
            .collect()
    }

    pub(crate) fn instances(&self) -> &BTreeMap<InstanceId, Kept> {
        &self.instances
    }

    /// Applies a new services file: what its diff says, instance by instance. `workers` are the
    /// connected workers, for services on every host.
    pub(crate) fn reload(&mut self, file: ServicesFile, workers: &[String]) -> (Diff, Vec<Order>) {
        let d = diff(&self.file, &file);
        self.file = file;
        for (change, names) in [
            ("added", &d.added),
            ("removed", &d.removed),
            ("restarted", &d.restarted),
            ("retuned", &d.retuned),
        ] {
            for name in names {
                let kind = EventKind::Reloaded { change: change.into() };
                self.notes.push((name.clone(), String::new(), None, kind));
            }
        }
        for (name, from, to) in &d.scaled {
            let kind = EventKind::Reloaded {
                change: format!("scaled from {from} to {to}"),
            };
            self.notes.push((name.clone(), String::new(), None, kind));
        }
        let mut orders = Vec::new();
        for name in &d.removed {
            let gone: Vec<InstanceId> = self.instances.keys().filter(|i| &i.service == name).cloned().collect();
            for id in gone {
                self.changed.insert(id.clone());
                if let Some(Kept { placed: Some(p), .. }) = self.instances.remove(&id) {
                    orders.push(Order::Stop {
                        worker: p.worker,
                        run: p.run,
                    });
                }
            }
        }
        for name in &d.restarted {
            // Placed again (with a new run id) by the next `place`.
            let ids: Vec<InstanceId> = self.instances.keys().filter(|i| &i.service == name).cloned().collect();
            for id in ids {
                orders.extend(self.drain(&id));
            }
        }
        for name in &d.retuned {
            let watch = WatchSpec::from(&self.file.services[name]);
            for (_, kept) in self.instances.iter().filter(|(i, _)| &i.service == name) {
                if let Some(p) = &kept.placed {
                    orders.push(Order::Retune {
                        worker: p.worker.clone(),
                        run: p.run,
                        watch: watch.clone(),
                    });
                }
            }
        }
        // The instances each service should have now: added and scaled ones appear, the
        // extra ones of a scaled-down service go.
        let names: Vec<String> = self.file.services.keys().cloned().collect();
        for name in names {
            let spec = self.file.services[&name].clone();
            let should: BTreeSet<InstanceId> = instance_ids(&name, &spec, workers);
            // On every host, an instance of a worker not connected now stays (its worker may
            // come back); only those beyond `numprocs`, or from before the service went on
            // every host, go.
            let extra: Vec<InstanceId> = self
                .instances
                .keys()
                .filter(|i| i.service == name)
                .filter(|i| match spec.every_host {
                    true => i.host.is_none() || i.index >= spec.numprocs,
                    false => !should.contains(i),
                })
                .cloned()
                .collect();
            for id in &extra {
                self.changed.insert(id.clone());
                if let Some(Kept { placed: Some(p), .. }) = self.instances.remove(id) {
                    orders.push(Order::Stop {
                        worker: p.worker,
                        run: p.run,
                    });
                }
            }
            for id in should {
                self.keep(id, spec.autostart);
            }
        }
        (d, orders)
    }

    /// Keeps track of instance `id` from now on, if it is new: up when its service starts
    /// by itself.
    fn keep(&mut self, id: InstanceId, autostart: bool) {
        if self.instances.contains_key(&id) {
            return;
        }
        self.changed.insert(id.clone());
        let wanted = if autostart { Wanted::Up } else { Wanted::Down };
        self.instances.insert(
            id,
            Kept {
                wanted,
                placed: None,
                draining: None,
            },
        );
    }

    /// Places as [`Services::place_on`] does, on workers with room for anything (tests).
    #[cfg(test)]
    pub(crate) fn place(&mut self, now: Mono, workers: &[String]) -> Vec<Order> {
        let hosts: Vec<super::Host> = workers.iter().map(|w| super::Host::unlimited(w)).collect();
        self.place_on(now, &hosts)
    }

    /// Places every instance that should run and is not placed, on the connected `hosts`
    /// (sorted by name), at `now`: only where its requests fit (see [`super::fit`]).
    pub(crate) fn place_on(&mut self, now: Mono, hosts: &[super::Host]) -> Vec<Order> {
        let workers: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        let mut used = self.requested();
        let mut orders = Vec::new();
        // A lost worker's movable instances whose lease has run out.
        for (id, kept) in self.instances.iter_mut() {
            let expired = |p: &Option<Placed>| p.as_ref().and_then(|p| p.released).is_some_and(|at| now >= at);
            if expired(&kept.placed) {
                kept.placed = None;
                self.changed.insert(id.clone());
            }
            if expired(&kept.draining) {
                kept.draining = None;
            }
        }
        // Instances of services on every host for workers that came since the last reload.
        let everywhere: Vec<(InstanceId, bool)> = self
            .file
            .services
            .iter()
            .filter(|(_, spec)| spec.every_host)
            .flat_map(|(name, spec)| {
                instance_ids(name, spec, &workers)
                    .into_iter()
                    .map(|id| (id, spec.autostart))
            })
            .collect();
        for (id, autostart) in everywhere {
            self.keep(id, autostart);
        }
        let waiting: Vec<InstanceId> = self
            .instances
            .iter()
            .filter(|(_, k)| k.wanted == Wanted::Up && k.placed.is_none() && k.draining.is_none())
            .map(|(i, _)| i.clone())
            .collect();
        for id in waiting {
            let Some(spec) = self.file.services.get(&id.service) else {
                continue;
            };
            let need = super::fit::request(spec);
            let Some(worker) = self.choose(&id, spec, hosts, &used, need) else {
                continue;
            };
            if need != crate::scheduler::Size::default() {
                let u = used.entry(worker.clone()).or_default();
                u.cpus = u.cpus.saturating_add(need.cpus);
                u.memory = u.memory.saturating_add(need.memory);
            }
            let run = RunId(self.next_run);
            self.next_run += 1;
            orders.push(Order::Run {
                worker: worker.clone(),
                run: Box::new(InstanceRun {
                    run,
                    instance: id.clone(),
                    spec: InstanceSpec::from(spec),
                    movable: !pinned(&id, spec),
                    // The machine stages it when the worker needs its files copied.
                    staged: None,
                }),
            });
            self.changed.insert(id.clone());
            self.notes.push((
                id.service.clone(),
                id.to_string(),
                Some(worker.clone()),
                EventKind::Placed,
            ));
            if let Some(kept) = self.instances.get_mut(&id) {
                kept.placed = Some(Placed {
                    run,
                    worker,
                    since: now,
                    state: None,
                    restarts: 0,
                    released: None,
                });
            }
        }
        orders
    }

    /// The worker for an instance: its own host, one of its service's hosts, or any, where
    /// its requests fit (`used`: what services ask for there), preferring one where they fit
    /// beside the attempts it runs now, with the fewest instances of the service, then the
    /// fewest at all, then by name.
    fn choose(
        &self,
        id: &InstanceId,
        spec: &ServiceSpec,
        hosts: &[super::Host],
        used: &BTreeMap<String, crate::scheduler::Size>,
        need: crate::scheduler::Size,
    ) -> Option<String> {
        let fits = |h: &super::Host| h.fits(used.get(&h.name).copied().unwrap_or_default(), need);
        if let Some(host) = &id.host {
            return hosts
                .iter()
                .find(|h| h.name == *host && fits(h).0)
                .map(|h| h.name.clone());
        }
        let load = |w: &str, service: Option<&str>| {
            self.instances
                .iter()
                .filter(|(i, k)| {
                    service.is_none_or(|s| i.service == s) && k.placed.as_ref().is_some_and(|p| p.worker == w)
                })
                .count()
        };
        hosts
            .iter()
            .filter(|h| spec.hosts.as_ref().is_none_or(|hosts| hosts.contains(&h.name)))
            .filter(|h| fits(h).0)
            .min_by_key(|h| {
                (
                    !fits(h).1,
                    load(&h.name, Some(&id.service)),
                    load(&h.name, None),
                    h.name.clone(),
                )
            })
            .map(|h| h.name.clone())
    }

    /// What `worker` says it holds. Its reports update the placements they name; a placement
    /// it holds that herzog no longer wants is stopped; one herzog placed there more than
    /// `grace_ms` ago that it does not hold is placed again.
    pub(crate) fn report(
        &mut self,
        now: Mono,
        grace_ms: i64,
        worker: &str,
        reports: Vec<InstanceReport>,
    ) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut held = BTreeSet::new();
        let reported: BTreeMap<RunId, InstanceState> = reports.iter().map(|r| (r.run, r.state.clone())).collect();
        let draining: BTreeSet<RunId> = self
            .instances
            .values()
            .filter_map(|k| k.draining.as_ref().map(|d| d.run))
            .collect();
        for r in reports {
            held.insert(r.run);
            if draining.contains(&r.run) {
                // Stopped already; its state is kept below.
                continue;
            }
            let current = self
                .instances
                .get_mut(&r.instance)
                .and_then(|k| k.placed.as_mut())
                .filter(|p| p.run == r.run && p.worker == worker);
            match current {
                Some(p) => {
                    p.state = Some(r.state);
                    p.restarts = r.restarts;
                    // Back before its lease ran out: it stays.
                    p.released = None;
                }
                // Already on its way down: asked once is enough.
                None if matches!(r.state, InstanceState::Stopping { .. }) => {}
                None => orders.push(Order::Stop {
                    worker: worker.to_string(),
                    run: r.run,
                }),
            }
        }
        for kept in self.instances.values_mut() {
            if let Some(d) = kept.draining.as_mut().filter(|d| d.worker == worker) {
                match reported.get(&d.run) {
                    Some(state) => d.state = Some(state.clone()),
                    // Gone from its worker: the new placement may start.
                    None => kept.draining = None,
                }
            }
        }
        for (id, kept) in self.instances.iter_mut() {
            let Some(p) = kept
                .placed
                .as_mut()
                .filter(|p| p.worker == worker && !held.contains(&p.run))
            else {
                continue;
            };
            if matches!(p.state, Some(InstanceState::Fatal { .. })) {
                // Refused by its worker: it stays FATAL, with the reason, until `hz start`.
            } else if now.since(p.since) >= grace_ms {
                kept.placed = None;
                self.changed.insert(id.clone());
            } else {
                // Not what it was: the worker does not hold it (yet, or any more).
                p.state = None;
            }
        }
        orders
    }

    /// `worker` is lost (silent for the worker timeout, at `now`): its instances show
    /// `Unknown`. Those that may run elsewhere are placed elsewhere once their stop grace has
    /// passed too: a kinski cut off from herzog for the worker timeout stops its movable
    /// instances itself, so one never runs on two hosts at once (a lease, not a race).
    pub(crate) fn lost(&mut self, worker: &str, at: Millis, now: Mono) {
        self.gone(worker, at, now, true);
    }

    /// A worker whose kinski shut down cleanly: it stopped every instance before it said so,
    /// so its movable ones are placed elsewhere at once (no lease to wait out); its pinned ones
    /// wait for it, as a lost worker's do.
    pub(crate) fn stopped(&mut self, worker: &str, at: Millis, now: Mono) {
        self.gone(worker, at, now, false);
    }

    /// What `lost` and `stopped` share; `lease`: wait each service's stop grace before placing
    /// a movable instance elsewhere (a cut-off worker stops them itself only then).
    fn gone(&mut self, worker: &str, at: Millis, now: Mono, lease: bool) {
        for (id, kept) in self.instances.iter_mut() {
            let grace = self
                .file
                .services
                .get(&id.service)
                .map_or(0, |s| i64::try_from(s.stopwaitsecs.as_millis()).unwrap_or(i64::MAX));
            if let Some(d) = kept.draining.as_mut().filter(|d| d.worker == worker) {
                // Stopped by the worker itself once cut off, or by the stop sent: gone by then.
                d.released = Some(Mono(now.0.saturating_add(if lease { grace } else { 0 })));
            }
            let Some(p) = kept.placed.as_mut().filter(|p| p.worker == worker) else {
                continue;
            };
            p.state = Some(InstanceState::Unknown { since: at });
            self.notes.push((
                id.service.clone(),
                id.to_string(),
                Some(worker.to_string()),
                EventKind::Lost,
            ));
            if let Some(spec) = self.file.services.get(&id.service)
                && !pinned(id, spec)
            {
                let grace = i64::try_from(spec.stopwaitsecs.as_millis()).unwrap_or(i64::MAX);
                p.released = Some(Mono(now.0.saturating_add(if lease { grace } else { 0 })));
            }
        }
    }

    /// Signals the placements of `ids` (those placed).
    pub(crate) fn signal(&self, ids: &[InstanceId], signal: i32) -> Vec<Order> {
        ids.iter()
            .filter_map(|id| self.instances.get(id)?.placed.as_ref())
            .map(|p| Order::Signal {
                worker: p.worker.clone(),
                run: p.run,
                signal,
            })
            .collect()
    }

    /// `worker` refused to run placement `run`: it is FATAL there with the reason (not placed
    /// again and again) until `hz start`.
    pub(crate) fn refused(&mut self, worker: &str, run: RunId, reason: String) {
        for (id, kept) in self.instances.iter_mut() {
            if let Some(p) = kept.placed.as_mut().filter(|p| p.run == run && p.worker == worker) {
                tracing::warn!(%worker, %run, %reason, "a worker refused to run a service instance: FATAL until `hz start`");
                let kind = EventKind::Refused { reason: reason.clone() };
                self.notes
                    .push((id.service.clone(), id.to_string(), Some(worker.to_string()), kind));
                p.state = Some(InstanceState::Fatal {
                    exit: common::wire::Exit::StartFailed(reason),
                    retries: 0,
                });
                return;
            }
        }
    }

    /// Asks for `ids` to be up (`hz start`); those placed and up are left alone.
    pub(crate) fn want(&mut self, ids: &[InstanceId], wanted: Wanted) -> Vec<Order> {
        let mut orders = Vec::new();
        for id in ids {
            let Some(kept) = self.instances.get_mut(id) else {
                continue;
            };
            kept.wanted = wanted;
            self.changed.insert(id.clone());
            if wanted == Wanted::Down {
                orders.extend(self.drain(id));
            }
        }
        orders
    }

    /// Stops an instance's placement, keeping it as draining until its worker no longer
    /// holds it: what a replacement waits for.
    fn drain(&mut self, id: &InstanceId) -> Option<Order> {
        let kept = self.instances.get_mut(id)?;
        let p = kept.placed.take()?;
        self.changed.insert(id.clone());
        let order = Order::Stop {
            worker: p.worker.clone(),
            run: p.run,
        };
        kept.draining = Some(p);
        Some(order)
    }

    /// Instances among `ids` that ended for good (`Fatal`, or exited and not restarted) are
    /// unplaced, to be placed afresh: `hz start` after a crash loop.
    pub(crate) fn restart_ended(&mut self, ids: &[InstanceId]) -> Vec<Order> {
        let mut orders = Vec::new();
        for id in ids {
            let Some(kept) = self.instances.get_mut(id) else {
                continue;
            };
            let ended = kept.placed.as_ref().is_some_and(|p| {
                matches!(
                    p.state,
                    Some(InstanceState::Fatal { .. } | InstanceState::Exited { .. })
                )
            });
            if ended {
                orders.extend(self.drain(id));
            }
        }
        orders
    }

    /// How many instances `worker` keeps up, as it last said (starting, running, backing off
    /// or stopping), for `hz workers`; none while it is lost (they show `Unknown`).
    pub(crate) fn kept_on(&self, worker: &str) -> u32 {
        let up = |p: &&Placed| {
            p.worker == worker
                && matches!(
                    p.state,
                    Some(
                        InstanceState::Starting { .. }
                            | InstanceState::Running { .. }
                            | InstanceState::Backoff { .. }
                            | InstanceState::Stopping { .. }
                    )
                )
        };
        let count = self
            .instances
            .values()
            .flat_map(|k| k.placed.iter().chain(k.draining.iter()))
            .filter(up)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The instances of `name` (every instance when `None`, `name:N` for one).
    pub(crate) fn select(&self, name: Option<&str>) -> Vec<InstanceId> {
        self.instances
            .keys()
            .filter(|i| match name {
                None | Some("all") => true,
                Some(n) => i.service == n || i.to_string() == n,
            })
            .cloned()
            .collect()
    }
}

/// Whether an instance must stay on its worker: its service is pinned to hosts or runs on
/// every host.
fn pinned(id: &InstanceId, spec: &ServiceSpec) -> bool {
    id.host.is_some() || spec.hosts.is_some()
}

/// The instances a service should have: `numprocs` of them, per worker for one on every host.
fn instance_ids(name: &str, spec: &ServiceSpec, workers: &[String]) -> BTreeSet<InstanceId> {
    let hosts: Vec<Option<String>> = if spec.every_host {
        workers.iter().cloned().map(Some).collect()
    } else {
        vec![None]
    };
    hosts
        .into_iter()
        .flat_map(|host| {
            (0..spec.numprocs).map(move |index| InstanceId {
                service: name.to_string(),
                host: host.clone(),
                index,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
