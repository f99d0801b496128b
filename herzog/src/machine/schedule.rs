//! Scheduling: free slots handed to pending fragments, as deep as their recent pace
//! allows, and the dispatch of each start.

use super::*;

impl Machine {
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

    pub(super) fn dispatch(&mut self, now: Now, worker: String, project: ProjectId) {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let p = self.projects.get_mut(&project).expect("scheduled projects exist");
        let index = p.queue.pop_front().expect("scheduled projects have pending fragments");
        #[cfg(feature = "planted-bugs")]
        let attempt = self.planted.attempt_for(project, index, attempt);
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
}
