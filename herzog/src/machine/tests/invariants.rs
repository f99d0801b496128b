//! What must hold after any step of a random run: the model the property test keeps of
//! what was written, and the checks against it.

use super::random::Pick;
use super::*;

/// What the run has seen so far, across every step.
#[derive(Default)]
pub(super) struct Model {
    /// Every attempt started, with its fragment, in order.
    pub(super) started: BTreeMap<AttemptId, FragmentId>,
    /// Attempts that ended (other than late), so none ends twice.
    pub(super) ended: BTreeSet<AttemptId>,
    /// Accepted successes per fragment.
    pub(super) successes: BTreeMap<FragmentId, usize>,
    /// Succeeded fragments and their attempt: never change again while they exist.
    pub(super) succeeded: BTreeMap<FragmentId, AttemptId>,
}

impl Model {
    pub(super) fn resolve(&self, m: &Machine, p: &Pick, worker: &str) -> AttemptId {
        let from = |v: Vec<AttemptId>, i: usize| if v.is_empty() { AttemptId(1) } else { v[i % v.len()] };
        match p {
            Pick::Issued(i) => from(self.started.keys().copied().collect(), *i),
            Pick::Live(i) => {
                let mut live: Vec<AttemptId> = m.live.keys().copied().collect();
                live.sort();
                from(live, *i)
            }
            Pick::Mine(i) => from(
                m.workers
                    .get(worker)
                    .map(|w| w.running.iter().copied().collect())
                    .unwrap_or_default(),
                *i,
            ),
            Pick::Raw(n) => AttemptId(*n),
        }
    }

    /// Applies what a batch of writes says to the model, checking it as it goes.
    pub(super) fn record(&mut self, writes: &[Write], live_before: &BTreeSet<AttemptId>) {
        for w in writes {
            match w {
                Write::AttemptStarted { id, fragment, .. } => {
                    if let Some((last, _)) = self.started.last_key_value() {
                        assert!(id > last, "attempt ids increase: {id} after {last}");
                    }
                    assert!(
                        self.started.insert(*id, *fragment).is_none(),
                        "attempt {id} issued twice"
                    );
                }
                Write::Late { id, .. } => {
                    assert!(self.ended.contains(id), "attempt {id} is late but had not ended");
                }
                Write::AttemptEnded { id, end, .. } => {
                    assert!(
                        self.started.contains_key(id),
                        "attempt {id} ended but was never started"
                    );
                    assert!(
                        live_before.contains(id),
                        "attempt {id} ended ({end:?}) but was not live"
                    );
                    assert!(self.ended.insert(*id), "attempt {id} ended twice");
                    if *end == AttemptEnd::Succeeded {
                        let n = self.successes.entry(self.started[id]).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "fragment {} succeeded twice", self.started[id]);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Everything that must hold between events.
pub(super) fn check_invariants(m: &Machine, model: &mut Model) {
    let mut running_fragments: BTreeMap<AttemptId, (ProjectId, u32, String)> = BTreeMap::new();
    for (id, p) in &m.projects {
        assert_eq!(*id, p.id);
        assert_eq!(m.by_name.get(&p.name), Some(id), "by_name names project {}", p.name);
        let mut recount = Counts::default();
        let mut pending = BTreeSet::new();
        for (i, f) in p.fragments.iter().enumerate() {
            *recount.slot(&f.state) += 1;
            match &f.state {
                FragmentState::Pending => {
                    pending.insert(i as u32);
                }
                FragmentState::Running { attempt, worker, .. } => {
                    let prev = running_fragments.insert(*attempt, (p.id, i as u32, worker.clone()));
                    assert!(prev.is_none(), "attempt {attempt} runs two fragments");
                    assert_eq!(
                        model.started.get(attempt),
                        Some(&f.id),
                        "running attempt {attempt} was started for it"
                    );
                }
                FragmentState::Succeeded { attempt } => {
                    assert_eq!(
                        model.started.get(attempt),
                        Some(&f.id),
                        "success by an attempt of another fragment"
                    );
                    let prev = model.succeeded.insert(f.id, *attempt);
                    assert!(
                        prev.is_none() || prev == Some(*attempt),
                        "fragment {} succeeded by two attempts",
                        f.id
                    );
                }
                FragmentState::Failed { .. } => {}
            }
        }
        assert_eq!(p.counts, recount, "project {} counts", p.name);
        let c = &p.counts;
        assert_eq!(c.pending + c.running + c.succeeded + c.failed, p.fragments.len() as u64);
        let queued: BTreeSet<u32> = p.queue.iter().copied().collect();
        assert_eq!(
            queued.len(),
            p.queue.len(),
            "project {}: a fragment queued twice",
            p.name
        );
        assert_eq!(
            queued, pending,
            "project {}: the queue holds exactly the pending fragments",
            p.name
        );
        let view = &m.progress(Some(&p.name)).expect("exists")[0];
        assert_eq!(
            (
                view.total,
                view.pending,
                view.running + view.queued,
                view.succeeded,
                view.failed
            ),
            (p.fragments.len() as u64, c.pending, c.running, c.succeeded, c.failed)
        );
    }
    assert_eq!(m.by_name.len(), m.projects.len());

    // A success is final while its project exists.
    let existing: BTreeMap<FragmentId, &FragmentState> = m
        .projects
        .values()
        .flat_map(|p| p.fragments.iter().map(|f| (f.id, &f.state)))
        .collect();
    for (fid, attempt) in &model.succeeded {
        if let Some(s) = existing.get(fid) {
            assert_eq!(
                *s,
                &FragmentState::Succeeded { attempt: *attempt },
                "fragment {fid} left Succeeded"
            );
        }
    }

    // `live` is exactly the running fragments.
    assert_eq!(m.live.len(), running_fragments.len());
    for (attempt, (project, index, _)) in &running_fragments {
        assert_eq!(
            m.live.get(attempt).map(|l| (l.project, l.index)),
            Some((*project, *index)),
            "attempt {attempt}"
        );
    }
    assert_eq!(m.active(0, u32::MAX).items.len(), m.live.len());

    // Each worker's set is exactly the live attempts that name it.
    for w in m.workers.values() {
        let expected: BTreeSet<AttemptId> = running_fragments
            .iter()
            .filter(|(_, (_, _, on))| *on == w.name)
            .map(|(a, _)| *a)
            .collect();
        assert_eq!(w.running, expected, "worker {} running set", w.name);
        if matches!(w.connection, ConnectionState::Lost { .. }) {
            assert!(w.running.is_empty(), "lost worker {} still has attempts", w.name);
        }
    }
    for (attempt, (_, _, on)) in &running_fragments {
        assert!(
            m.workers.contains_key(on),
            "attempt {attempt} runs on unknown worker {on}"
        );
    }
    if let Policy::Priority { project } = &m.policy {
        assert!(m.by_name.contains_key(project), "the priority project {project} exists");
    }
}
