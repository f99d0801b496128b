//! Run-time controls: pause and resume, cancel, a project's limit, its dependencies, and
//! draining and forgetting workers.

use super::*;

impl Machine {
    /// Applies a control; answers what it did, in a line.
    pub(super) fn control(&mut self, now: Now, control: Control) -> Result<String, Rejected> {
        match control {
            Control::Pause { project } => {
                let id = self.project_id(&project)?;
                let p = self.projects.get_mut(&id).expect("found above");
                p.paused = true;
                self.write_controls(id);
                let queued: Vec<AttemptId> = self.queued_of(id).collect();
                let (running, taken) = (self.projects[&id].started, queued.len());
                self.take_back(queued);
                tracing::info!(%project, running, taken_back = taken, "project paused");
                Ok(format!(
                    "paused {project}: {} running finish{}, {} queued start{} taken back, nothing new starts until `hz resume {project}`",
                    running,
                    if running == 1 { "es" } else { "" },
                    taken,
                    plural(taken as u64)
                ))
            }
            Control::Resume { project } => {
                let id = self.project_id(&project)?;
                self.projects.get_mut(&id).expect("found above").paused = false;
                self.write_controls(id);
                tracing::info!(%project, "project resumed");
                Ok(format!("resumed {project}"))
            }
            Control::Limit { project, max_running } => {
                let id = self.project_id(&project)?;
                if max_running == Some(0) {
                    return Err(ApiError::InvalidValue {
                        what: "limit".into(),
                        reason: format!("must be at least 1: `hz pause {project}` holds a project"),
                    }
                    .into());
                }
                let p = self.projects.get_mut(&id).expect("found above");
                p.max_running = max_running;
                let over = max_running.map_or(0, |max| p.counts.running.saturating_sub(u64::from(max)));
                self.write_controls(id);
                // Queued starts beyond the limit come back at once, the latest dispatched first;
                // running ones finish.
                let mut queued: Vec<AttemptId> = self.queued_of(id).collect();
                queued.reverse();
                queued.truncate(over as usize);
                let taken = queued.len();
                self.take_back(queued);
                tracing::info!(%project, ?max_running, "project limit set");
                Ok(match max_running {
                    Some(max) => format!(
                        "{project} runs at most {max} attempt{} at once ({taken} queued start{} taken back)",
                        plural(u64::from(max)),
                        plural(taken as u64)
                    ),
                    None => format!("{project} runs without a limit"),
                })
            }
            Control::Cancel { project, fragments } => self.cancel(now, &project, &fragments),
            Control::Share { project, share } => self.set_share(now, &project, share),
            Control::Drain { worker } => {
                self.known_worker(&worker)?.drained = true;
                let w = &self.workers[&worker];
                let queued: Vec<AttemptId> = w
                    .running
                    .iter()
                    .copied()
                    .filter(|a| self.live.get(a).is_some_and(|l| l.ran.is_none()))
                    .collect();
                let running = w.running.len() - queued.len();
                self.writes.push(Write::WorkerDrained {
                    name: worker.clone(),
                    drained: true,
                });
                let taken = queued.len();
                self.take_back(queued);
                tracing::info!(%worker, running, taken_back = taken, "worker drained");
                Ok(format!(
                    "drained {worker}: {running} running finish{}, {taken} queued start{} taken back, it takes nothing new until `hz undrain {worker}`",
                    if running == 1 { "es" } else { "" },
                    plural(taken as u64)
                ))
            }
            Control::Undrain { worker } => {
                self.known_worker(&worker)?.drained = false;
                self.writes.push(Write::WorkerDrained {
                    name: worker.clone(),
                    drained: false,
                });
                tracing::info!(%worker, "worker undrained");
                Ok(format!("{worker} takes work again"))
            }
            Control::Forget { worker } => {
                self.known_worker(&worker)?;
                let w = &self.workers[&worker];
                if w.connection == ConnectionState::Connected {
                    return Err(ApiError::InvalidValue {
                        what: "worker".into(),
                        reason: format!(
                            "{worker} is connected: stop its kinski first (or `hz drain {worker}` to give it no work)"
                        ),
                    }
                    .into());
                }
                if !w.running.is_empty() || self.services.kept_on(&worker) > 0 {
                    return Err(ApiError::InvalidValue {
                        what: "worker".into(),
                        reason: format!(
                            "{worker} still holds {} attempt(s) or service instances: they are requeued when herzog counts it lost (herzog.worker_timeout)",
                            w.running.len()
                        ),
                    }
                    .into());
                }
                self.workers.remove(&worker);
                self.writes.push(Write::ForgetWorker { name: worker.clone() });
                tracing::info!(%worker, "worker forgotten");
                Ok(format!("forgot {worker}"))
            }
        }
    }

    fn known_worker(&mut self, name: &str) -> Result<&mut Worker, ApiError> {
        self.workers.get_mut(name).ok_or_else(|| ApiError::InvalidValue {
            what: "worker".into(),
            reason: format!("no worker named '{name}': `hz workers` lists them"),
        })
    }

    fn write_controls(&mut self, id: ProjectId) {
        let p = &self.projects[&id];
        self.writes.push(Write::ProjectControls {
            id,
            paused: p.paused,
            max_running: p.max_running,
            after: p.after.clone(),
        });
    }

    /// A project's attempts dispatched to workers that have not started there yet.
    fn queued_of(&self, id: ProjectId) -> impl Iterator<Item = AttemptId> + '_ {
        self.live
            .iter()
            .filter(move |(_, l)| l.project == id && l.ran.is_none() && !l.unqueue_asked)
            .map(|(a, _)| *a)
    }

    /// Asks the workers to drop these starts from their queues (those of a worker herzog cannot
    /// reach now are left: it runs them, or they are lost with it).
    fn take_back(&mut self, attempts: Vec<AttemptId>) {
        let mut by_worker: BTreeMap<String, Vec<AttemptId>> = BTreeMap::new();
        for attempt in attempts {
            let Some(l) = self.live.get_mut(&attempt) else { continue };
            let FragmentState::Running { worker, .. } = &self.projects[&l.project].fragments[l.index as usize].state
            else {
                continue;
            };
            if self
                .workers
                .get(worker)
                .is_some_and(|w| w.connection == ConnectionState::Connected)
            {
                l.unqueue_asked = true;
                by_worker.entry(worker.clone()).or_default().push(attempt);
            }
        }
        for (worker, attempts) in by_worker {
            self.effects.push(Effect::Unqueue { worker, attempts });
        }
    }

    /// The worker dropped these starts from its queue: they go back to their project's queue,
    /// costing no attempt.
    pub(super) fn taken_back(&mut self, now: Now, worker: &str, attempts: Vec<AttemptId>) {
        for attempt in attempts {
            let Some(l) = self.live.get(&attempt).copied() else {
                continue;
            };
            let on_it = matches!(&self.projects[&l.project].fragments[l.index as usize].state,
                FragmentState::Running { worker: on, .. } if on == worker);
            if !on_it || l.ran.is_some() {
                continue;
            }
            self.end_live(
                now,
                attempt,
                AttemptEnd::TakenBack,
                None,
                Some(format!("taken back from {worker}'s queue")),
            );
        }
    }

    /// Cancels fragments (names or indexes): pending ones end at once, dispatched ones are
    /// stopped (taken back if still queued); each ends failed, "cancelled".
    fn cancel(&mut self, now: Now, project: &str, fragments: &[String]) -> Result<String, Rejected> {
        let id = self.project_id(project)?;
        let mut indexes = Vec::with_capacity(fragments.len());
        for key in fragments {
            let p = &self.projects[&id];
            let index = p
                .names
                .position(key)
                .or_else(|| key.parse::<usize>().ok().filter(|&i| i < p.fragments.len()))
                .ok_or_else(|| ApiError::UnknownFragment {
                    project: project.to_string(),
                    fragment: key.clone(),
                })?;
            indexes.push(index as u32);
        }
        let (mut cancelled, mut finished) = (0u64, 0u64);
        for index in indexes {
            let state = self.projects[&id].fragments[index as usize].state.clone();
            match state {
                FragmentState::Pending => {
                    let p = self.projects.get_mut(&id).expect("found above");
                    p.queue.retain(|&i| i != index);
                    self.set_state(
                        id,
                        index,
                        FragmentState::Failed {
                            attempt: None,
                            reason: "cancelled".into(),
                        },
                    );
                    cancelled += 1;
                }
                FragmentState::Running { attempt, worker, .. } => {
                    let reachable = self
                        .workers
                        .get(&worker)
                        .is_some_and(|w| w.connection == ConnectionState::Connected);
                    self.end_live(now, attempt, AttemptEnd::Cancelled, None, Some("cancelled".into()));
                    if reachable {
                        // A queued start is dropped, a running program stopped with its grace.
                        self.effects.push(Effect::Stop { worker, attempt });
                    }
                    cancelled += 1;
                }
                FragmentState::Succeeded { .. } | FragmentState::Failed { .. } => finished += 1,
            }
        }
        tracing::info!(%project, cancelled, "fragments cancelled");
        Ok(match finished {
            0 => format!("cancelled {cancelled} fragment{} of {project}", plural(cancelled)),
            _ => format!(
                "cancelled {cancelled} fragment{} of {project}; {finished} had already finished",
                plural(cancelled)
            ),
        })
    }

    /// Drops from each project's `after` the projects that have succeeded.
    pub(super) fn settle_after(&mut self) {
        let waiting: Vec<ProjectId> = self
            .projects
            .values()
            .filter(|p| !p.after.is_empty())
            .map(|p| p.id)
            .collect();
        for id in waiting {
            let after = self.projects[&id].after.clone();
            let left: Vec<String> = after.iter().filter(|name| !self.succeeded(name)).cloned().collect();
            if left.len() != after.len() {
                if left.is_empty() {
                    tracing::info!(project = %self.projects[&id].name, "the projects it comes after succeeded: it starts");
                }
                self.projects.get_mut(&id).expect("listed above").after = left;
                self.write_controls(id);
            }
        }
    }

    /// Whether the project named so exists and every fragment of it succeeded.
    fn succeeded(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .map(|b| &self.projects[b])
            .is_some_and(|b| b.counts.succeeded == b.fragments.len() as u64)
    }

    /// Why a project that comes after others does not start: it waits, or it is blocked.
    pub(super) fn after_status(&self, p: &Project) -> Option<String> {
        let mut waits = Vec::new();
        for name in &p.after {
            let Some(before) = self.by_name.get(name).map(|b| &self.projects[b]) else {
                return Some(format!(
                    "blocked: {name} was removed before it succeeded; `hz remove {}` and add it again without --after {name}",
                    p.name
                ));
            };
            if before.counts.failed > 0 && before.counts.pending + before.counts.running == 0 {
                return Some(format!(
                    "blocked: {name} failed ({} fragment{} failed); `hz retry {name}` to try them again",
                    before.counts.failed,
                    plural(before.counts.failed)
                ));
            }
            waits.push(name.as_str());
        }
        (!waits.is_empty()).then(|| format!("waits for {} to succeed", waits.join(", ")))
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
