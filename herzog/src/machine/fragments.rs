//! A fragment's life: its counts, its live attempts, how a completion or any other end of
//! an attempt moves it on, and the one place its state changes.

use super::*;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) pending: u64,
    pub(crate) running: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
}

impl Counts {
    pub(super) fn slot(&mut self, state: &FragmentState) -> &mut u64 {
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
    pub(super) fn new(project: ProjectId, index: u32, since: Mono) -> Live {
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

impl Machine {
    pub(super) fn complete(
        &mut self,
        now: Now,
        worker: &str,
        c: Completion,
        staging_error: Option<String>,
    ) -> Result<Reply, Rejected> {
        let Some(live) = self.live.get(&c.attempt).copied() else {
            #[cfg(feature = "planted-bugs")]
            if let Some((project, index)) = self.planted.unfenced(c.attempt)
                && let Some(FragmentState::Running { attempt, worker, .. }) = self
                    .projects
                    .get(&project)
                    .map(|p| p.fragments[index as usize].state.clone())
            {
                return self.complete(now, &worker, Completion { attempt, ..c }, staging_error);
            }
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

    /// Ends a live attempt and moves its fragment on. Returns the worker it ran on.
    pub(super) fn end_live(
        &mut self,
        now: Now,
        attempt: AttemptId,
        end: AttemptEnd,
        completion: Option<Completion>,
        note: Option<String>,
    ) -> Option<String> {
        let live = self.live.remove(&attempt)?;
        #[cfg(feature = "planted-bugs")]
        self.planted.ended(attempt, live.project, live.index);
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
    pub(super) fn set_state(&mut self, project: ProjectId, index: u32, next: FragmentState) {
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
}
