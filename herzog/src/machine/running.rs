//! What runs where, as workers tell it: start notices, refused starts, a clean shutdown, and
//! the recent pace of each project (its rate and ETA).

use super::*;

/// The most recent completions the rate is measured over.
const WINDOW_ENDS: usize = 50;
/// Completions needed before a rate is shown ("ETA ?" until then).
const LEAST_ENDS: usize = 5;
/// A pause between two completions this many times the window's pace (and at least
/// [`LEAST_GAP_MS`]) means the project did not run meanwhile (paused, or another had
/// priority): the window starts again.
const GAP_FACTOR: i64 = 10;
const LEAST_GAP_MS: i64 = 5_000;
/// A worker that refuses starts for a lasting reason rests this long, doubling up to
/// [`MAX_REST_MS`].
const FIRST_REST_MS: i64 = 1_000;
const MAX_REST_MS: i64 = 60_000;

/// When a project's latest attempts ended, each with how many of its attempts ran then.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recent {
    ends: VecDeque<(Mono, u64)>,
}

impl Recent {
    /// An attempt ended at `at` while `running` of the project's attempts ran.
    pub(crate) fn ended(&mut self, at: Mono, running: u64) {
        if let (Some(first), Some(last)) = (self.ends.front(), self.ends.back()) {
            let n = self.ends.len() as i64;
            let pace = last.0.since(first.0) / n.max(1);
            if at.since(last.0) > (pace * GAP_FACTOR).max(LEAST_GAP_MS) {
                self.ends.clear();
            }
        }
        self.ends.push_back((at, running));
        if self.ends.len() > WINDOW_ENDS {
            self.ends.pop_front();
        }
    }

    /// Fragments per second at the recent pace, scaled from the attempts that ran then to the
    /// `running_now`; `None` with too few completions to go by, or nothing running.
    pub(crate) fn rate(&self, running_now: u64) -> Option<f64> {
        if running_now == 0 || self.ends.len() < LEAST_ENDS {
            return None;
        }
        let (first, last) = (self.ends.front()?, self.ends.back()?);
        let span_ms = last.0.since(first.0).max(1) as f64;
        let per_sec = (self.ends.len() - 1) as f64 * 1000.0 / span_ms;
        let ran: u64 = self.ends.iter().skip(1).map(|e| e.1).sum();
        let mean_running = ran as f64 / (self.ends.len() - 1) as f64;
        Some(per_sec * running_now as f64 / mean_running.max(1.0))
    }
}

impl Machine {
    /// Marks attempts whose programs started, by the worker they run on.
    pub(super) fn started(&mut self, now: Now, worker: &str, notices: Vec<StartNotice>) {
        let mut any = false;
        for n in notices {
            let Some(l) = self.live.get_mut(&n.attempt) else {
                // Ended already (a short program, or stopped): its completion said or says.
                continue;
            };
            let Some(p) = self.projects.get_mut(&l.project) else {
                continue;
            };
            let on_it = matches!(&p.fragments[l.index as usize].state, FragmentState::Running { worker: on, .. } if on == worker);
            if !on_it || l.ran.is_some() {
                continue;
            }
            l.ran = Some(n.at);
            p.started += 1;
            if p.job.is_none() {
                // Counted from its real start: as long before now as its worker's clock says,
                // but not before it was dispatched (clocks of different hosts disagree).
                let ago = (now.wall - n.at).clamp(0, now.mono.since(l.since).max(0));
                let from = Mono(now.mono.0 - ago);
                l.counted = Some(from);
                self.fair
                    .start_n(l.project, Size::of(&p.spec.requests).cpus, from.0, now.mono.0);
            }
            any = true;
            self.writes.push(Write::AttemptRan {
                id: n.attempt,
                at: n.at,
            });
        }
        if any {
            self.ran_a_start(worker);
        }
    }

    /// A program started on `worker`: a rest it had for refusing starts is over.
    pub(super) fn ran_a_start(&mut self, worker: &str) {
        if let Some(w) = self.workers.get_mut(worker)
            && w.refusing.take().is_some()
        {
            tracing::info!(%worker, "worker runs starts again");
        }
    }

    /// A start the worker refused goes back to the queue without costing an attempt; a
    /// refusal for a lasting reason gives the worker a rest that doubles each time.
    pub(super) fn start_refused(&mut self, now: Now, attempt: AttemptId, reason: String, lasting: bool) {
        let Some(l) = self.live.get(&attempt).copied() else {
            return;
        };
        if let Some(p) = self.projects.get_mut(&l.project) {
            let f = &mut p.fragments[l.index as usize];
            f.attempts = f.attempts.saturating_sub(1);
        }
        let Some(worker) = self.end_live(now, attempt, AttemptEnd::Lost, None, Some(reason.clone())) else {
            return;
        };
        self.drop_prepared(&worker, attempt);
        if !lasting {
            return;
        }
        let Some(w) = self.workers.get_mut(&worker) else { return };
        let (count, wait_ms) = match &w.refusing {
            Some(r) => (r.count + 1, (r.wait_ms * 2).min(MAX_REST_MS)),
            None => (1, FIRST_REST_MS),
        };
        if count == 1 {
            tracing::warn!(%worker, %reason, "worker refuses starts: it gets none for a while, longer each time it refuses again");
        }
        w.refusing = Some(Refusing {
            reason,
            count,
            wait_ms,
            until: Mono(now.mono.0 + wait_ms),
        });
    }

    /// The worker's kinski shuts down cleanly: what it stopped goes back to the queue at
    /// once, costing no attempt; what it still holds finished (`held`, completions it will
    /// report when it is back) stays until then.
    pub(super) fn worker_stopping(&mut self, now: Now, worker: &str, held: &[AttemptId]) -> Result<Reply, Rejected> {
        let Some(w) = self.workers.get_mut(worker) else {
            return Err(ApiError::UnknownWorker {
                name: worker.to_string(),
            }
            .into());
        };
        w.connection = ConnectionState::Stopped { since: now.wall };
        w.last_seen = now.wall;
        w.seen_stored = now.wall;
        w.heard = now.mono;
        self.writes.push(Write::WorkerSeen {
            name: worker.to_string(),
            seen: now.wall,
            stopped: true,
        });
        let stopped: Vec<AttemptId> = w.running.iter().copied().filter(|a| !held.contains(a)).collect();
        tracing::info!(%worker, requeued = stopped.len(), "worker stopped cleanly: the attempts it stopped go back to the queue");
        // It stopped its service instances too: the movable ones go elsewhere now.
        self.services.stopped(worker, now.wall, now.mono);
        for attempt in stopped {
            self.end_live(
                now,
                attempt,
                AttemptEnd::TakenBack,
                None,
                Some(format!("worker {worker} shut down")),
            );
        }
        Ok(Reply::Done)
    }

    /// Why a project's pending fragments do not start, if they do not.
    pub(super) fn held(&self, p: &Project) -> Option<String> {
        if p.counts.pending == 0 {
            return None;
        }
        if let Some(held) = self.space.held() {
            return Some(held);
        }
        if p.paused {
            return Some(format!("paused: `hz resume {}` lets it start again", p.name));
        }
        if let Some(why) = self.after_status(p) {
            return Some(why);
        }
        if let Some(why) = self.waits_for_fit(p) {
            return Some(why);
        }
        let now = Now {
            wall: self.last_wall,
            mono: self.last_mono,
        };
        if self.workers.values().any(|w| w.takes_starts(now)) {
            return None;
        }
        let refusing: Vec<String> = self
            .workers
            .values()
            .filter_map(|w| {
                let r = w.refusing.as_ref()?;
                Some(format!("{} refuses starts ({} refused): {}", w.name, r.count, r.reason))
            })
            .collect();
        (!refusing.is_empty()).then(|| format!("no worker takes starts: {}", refusing.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_needs_a_few_completions_scales_to_the_slots_held_now_and_restarts_after_a_pause() {
        let mut r = Recent::default();
        assert_eq!(r.rate(2), None);
        // Two attempts at a time, one ending every 100 ms: 10 a second.
        for i in 0..5 {
            r.ended(Mono(1_000 + i * 100), 2);
        }
        let rate = r.rate(2).unwrap();
        assert!((rate - 10.0).abs() < 0.01, "{rate}");
        // Half the slots now: half the pace.
        let rate = r.rate(1).unwrap();
        assert!((rate - 5.0).abs() < 0.01, "{rate}");
        assert_eq!(r.rate(0), None);
        // A minute without completions (paused): the window starts again.
        r.ended(Mono(61_400), 2);
        assert_eq!(r.rate(2), None);
    }
}
