//! Read-only views of the state for the RPCs.

use super::*;

impl Machine {
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
                state: w.connection.as_str().to_string(),
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

    /// Work left undone, which the scheduler must never leave after a round: a worker that
    /// takes starts with a slot free while a project has fragments that may start. A
    /// reservation (a request that fits nowhere yet) excuses it, so none is judged then.
    pub(crate) fn idle_while_waiting(&self, now: Now) -> Option<String> {
        if !self.reserved.is_empty() {
            return None;
        }
        let waiting: Vec<&str> = self
            .projects
            .values()
            .filter(|p| p.startable() > 0)
            .map(|p| p.name.as_str())
            .collect();
        let idle = self
            .workers
            .values()
            .find(|w| w.takes_starts(now) && w.running.len() as u32 + w.foreign < w.resources.slots)?;
        (!waiting.is_empty()).then(|| {
            format!(
                "{} has {} of {} slots busy while {waiting:?} have fragments that may start",
                idle.name,
                idle.running.len() as u32 + idle.foreign,
                idle.resources.slots
            )
        })
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

    pub(crate) fn project(&self, name: &str) -> Option<&Project> {
        self.by_name.get(name).map(|id| &self.projects[id])
    }

    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }
}
