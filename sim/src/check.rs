//! The invariants, checked after every step against herzog's machine and its store (read
//! through a connection of the simulator's own), and the ground truth of what the simulated
//! workers really ran.

use herzog::sim_api::{AttemptId, Coordinator, Output, ProjectProgress, SimTime};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

/// A fragment: its project's name and its own.
type Frag = (String, String);

pub(crate) struct Truth {
    reader: Connection,
    /// Every attempt herzog released a start for, with its fragment.
    issued: BTreeMap<AttemptId, Frag>,
    /// Programs that ran to their end on a worker, and whether they succeeded.
    ran: BTreeMap<AttemptId, bool>,
    /// Fragments seen succeeded in the store, with the attempt: never changes after.
    succeeded: BTreeMap<Frag, AttemptId>,
    /// Projects hz submitted, with their fragment counts.
    expected: BTreeMap<String, usize>,
    /// Those herzog acknowledged (and that are not removed).
    accepted: BTreeSet<String>,
    /// Those hz asked to remove: only they may go.
    removing: BTreeSet<String>,
}

/// One fragment's row.
struct Row {
    project: String,
    name: String,
    state: String,
    attempt: Option<i64>,
}

/// Counts by state: pending, running (queued included), succeeded, failed.
type Counts = [u64; 4];

impl Truth {
    pub(crate) fn new(db: &std::path::Path) -> Result<Truth, String> {
        let reader = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("failed to open a reader on {}: {e}", db.display()))?;
        Ok(Truth {
            reader,
            issued: BTreeMap::new(),
            ran: BTreeMap::new(),
            succeeded: BTreeMap::new(),
            expected: BTreeMap::new(),
            accepted: BTreeSet::new(),
            removing: BTreeSet::new(),
        })
    }

    pub(crate) fn issued(&self) -> usize {
        self.issued.len()
    }

    pub(crate) fn projects(&self) -> usize {
        self.accepted.len()
    }

    /// Whether herzog released a start for `attempt` before.
    pub(crate) fn was_issued(&self, attempt: AttemptId) -> bool {
        self.issued.contains_key(&attempt)
    }

    /// Projects herzog acknowledged and hz has not asked to remove.
    pub(crate) fn removable(&self) -> Vec<String> {
        self.accepted.difference(&self.removing).cloned().collect()
    }

    /// hz asks to remove `name`.
    pub(crate) fn removing(&mut self, name: &str) {
        self.removing.insert(name.to_string());
    }

    /// Projects the store holds as removed: only those hz asked to remove, which then count
    /// no more.
    fn forget_removed(&mut self) -> Result<(), String> {
        let removed: Vec<String> = self
            .reader
            .prepare_cached("SELECT name FROM projects WHERE removed_at IS NOT NULL AND job IS NULL")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| format!("failed to read the store: {e}"))?;
        for name in removed {
            if !self.removing.contains(&name) {
                return Err(format!("project {name} was removed, but nobody asked for that"));
            }
            if self.accepted.remove(&name) {
                self.expected.remove(&name);
                self.succeeded.retain(|(project, _), _| *project != name);
            }
        }
        Ok(())
    }

    /// hz submits `name` (perhaps again).
    pub(crate) fn expect(&mut self, name: &str, fragments: usize) {
        self.expected.insert(name.to_string(), fragments);
    }

    /// herzog acknowledged `name`.
    pub(crate) fn submitted(&mut self, name: String) {
        self.accepted.insert(name);
    }

    /// A worker received a start: only ever one herzog released.
    pub(crate) fn handed(&mut self, attempt: AttemptId, fragment: Frag) -> Result<(), String> {
        match self.issued.get(&attempt) {
            Some(f) if *f == fragment => Ok(()),
            other => Err(format!(
                "a worker was handed {attempt} for {fragment:?}, which herzog released as {other:?}"
            )),
        }
    }

    /// A program ended on a worker.
    pub(crate) fn ran(&mut self, attempt: AttemptId, succeeded: bool) -> Result<(), String> {
        match self.ran.insert(attempt, succeeded) {
            None => Ok(()),
            Some(_) => Err(format!("attempt {attempt} ran twice")),
        }
    }

    /// herzog released these effects: each start's attempt is new (or the same fragment's)
    /// and already in the store (commit, then act).
    pub(crate) fn released(&mut self, outputs: &[Output]) -> Result<(), String> {
        for out in outputs {
            let Output::Start {
                attempt,
                project,
                fragment,
                ..
            } = out
            else {
                continue;
            };
            let frag = (project.clone(), fragment.clone());
            if let Some(before) = self.issued.get(attempt)
                && *before != frag
            {
                return Err(format!("attempt id {attempt} reused: {before:?}, now {frag:?}"));
            }
            let stored: Option<Frag> = self
                .reader
                .query_row(
                    "SELECT p.name, f.name FROM attempts a JOIN fragments f ON f.id = a.fragment_id
                     JOIN projects p ON p.id = f.project_id WHERE a.id = ?1",
                    [attempt.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok();
            if stored.as_ref() != Some(&frag) {
                return Err(format!(
                    "the start of {attempt} ({frag:?}) was released, but the store holds {stored:?}: an effect before its commit"
                ));
            }
            self.issued.insert(*attempt, frag);
        }
        Ok(())
    }

    /// Every invariant between steps, against the store and the machine.
    pub(crate) fn check(&mut self, herzog: &Coordinator) -> Result<(), String> {
        self.forget_removed()?;
        let rows = self.fragments().map_err(|e| format!("failed to read the store: {e}"))?;
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for row in &rows {
            let c = counts.entry(row.project.clone()).or_default();
            let frag = (row.project.clone(), row.name.clone());
            match row.state.as_str() {
                "pending" => c[0] += 1,
                "running" => c[1] += 1,
                "succeeded" => {
                    c[2] += 1;
                    let attempt = AttemptId(row.attempt.ok_or_else(|| format!("{frag:?} succeeded by no attempt"))?);
                    if self.ran.get(&attempt) != Some(&true) {
                        return Err(format!(
                            "{frag:?} succeeded by {attempt}, which no worker ran to success (ran: {:?})",
                            self.ran.get(&attempt)
                        ));
                    }
                    if self.issued.get(&attempt) != Some(&frag) {
                        return Err(format!(
                            "{frag:?} succeeded by {attempt}, issued for {:?}",
                            self.issued.get(&attempt)
                        ));
                    }
                    if let Some(first) = self.succeeded.insert(frag.clone(), attempt)
                        && first != attempt
                    {
                        return Err(format!("{frag:?} succeeded twice: by {first}, then by {attempt}"));
                    }
                }
                "failed" => c[3] += 1,
                other => return Err(format!("{frag:?} is in an unknown state {other}")),
            }
        }
        // Every fragment seen succeeded still is, unless its project was removed.
        let now_succeeded = rows.iter().filter(|r| r.state == "succeeded").count();
        if now_succeeded != self.succeeded.len() {
            return Err(format!(
                "{} fragments succeeded so far, {now_succeeded} now in the store",
                self.succeeded.len()
            ));
        }
        let twice: Vec<(i64, i64)> = self
            .reader
            .prepare(
                "SELECT fragment_id, COUNT(*) FROM attempts WHERE outcome = 'succeeded'
                 GROUP BY fragment_id HAVING COUNT(*) > 1",
            )
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| format!("failed to read the store: {e}"))?;
        if !twice.is_empty() {
            return Err(format!(
                "fragments with two successful attempts in the store: {twice:?}"
            ));
        }
        // Every attempt recorded as ended by its program (not lost, stopped or taken back)
        // ran to that end on a worker: a completion fenced off changes no record.
        let ended: Vec<(i64, String)> = self
            .reader
            .prepare_cached("SELECT id, outcome FROM attempts WHERE outcome IN ('succeeded', 'failed') ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| format!("failed to read the store: {e}"))?;
        for (id, outcome) in ended {
            let attempt = AttemptId(id);
            let ran = self.ran.get(&attempt);
            if ran != Some(&(outcome == "succeeded")) {
                return Err(format!(
                    "the store records {attempt} {outcome}, but no worker ran it to that end (ran: {ran:?})"
                ));
            }
        }
        // None lost, counts conserved, the machine and the store agreeing.
        let progress = herzog.progress();
        let in_machine: BTreeSet<&str> = progress.iter().map(|p| p.name.as_str()).collect();
        let in_store: BTreeSet<&str> = counts.keys().map(String::as_str).collect();
        if in_machine != in_store {
            return Err(format!(
                "projects in the machine {in_machine:?}, in the store {in_store:?}"
            ));
        }
        for p in &progress {
            let stored = counts[&p.name];
            let expected = self.expected.get(&p.name).copied().unwrap_or_default() as u64;
            let total = p.pending + p.running + p.queued + p.succeeded + p.failed;
            let machine = [p.pending, p.running + p.queued, p.succeeded, p.failed];
            if p.total != expected || total != expected || machine != stored {
                return Err(format!(
                    "project {}: {expected} fragments submitted; the machine counts {} in all, {machine:?} by state (pending, running, succeeded, failed); the store {stored:?}",
                    p.name, p.total
                ));
            }
        }
        let live: Vec<AttemptId> = herzog.active().iter().map(|a| a.attempt).collect();
        let running: Vec<AttemptId> = self
            .reader
            .prepare("SELECT id FROM attempts WHERE outcome = 'running' ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| Ok(AttemptId(r.get(0)?)))?.collect())
            .map_err(|e| format!("failed to read the store: {e}"))?;
        if live != running {
            return Err(format!(
                "attempts live in the machine {live:?}, running in the store {running:?}"
            ));
        }
        Ok(())
    }

    fn fragments(&self) -> rusqlite::Result<Vec<Row>> {
        let mut stmt = self.reader.prepare_cached(
            "SELECT p.name, f.name, f.state, f.attempt_id FROM fragments f JOIN projects p ON p.id = f.project_id
             WHERE p.removed_at IS NULL AND p.job IS NULL ORDER BY f.id",
        )?;
        stmt.query_map([], |r| {
            Ok(Row {
                project: r.get(0)?,
                name: r.get(1)?,
                state: r.get(2)?,
                attempt: r.get(3)?,
            })
        })?
        .collect()
    }
}

/// What a scheduling round must respect, after every step that ran one (`starts`: the new
/// starts it released, project and worker): nothing left undone; no other project started
/// while the one given priority still has fragments that may start; no start of a paused
/// project, on a drained worker, or past a project's limit.
pub(crate) fn round(herzog: &Coordinator, now: SimTime, starts: &[(String, String)]) -> Result<(), String> {
    if let Some(what) = herzog.idle_while_waiting(now) {
        return Err(format!("work left undone: {what}"));
    }
    if let Some(first) = herzog.priority()
        && herzog.startable(&first) > 0
        && let Some((other, _)) = starts.iter().find(|(p, _)| *p != first)
    {
        return Err(format!(
            "{other} got a start while {first}, given priority, still has fragments that may start"
        ));
    }
    if starts.is_empty() {
        return Ok(());
    }
    let progress = herzog.progress();
    if herzog.priority().is_none() {
        fair(herzog, &progress, starts)?;
    }
    let workers = herzog.workers();
    for (project, worker) in starts {
        if workers.iter().any(|w| w.name == *worker && w.drained) {
            return Err(format!("{project} got a start on {worker}, which is drained"));
        }
        let Some(p) = progress.iter().find(|p| p.name == *project) else {
            return Err(format!("{project} got a start, but herzog no longer has it"));
        };
        if p.paused {
            return Err(format!("{project} got a start while paused"));
        }
        if let Some(max) = p.max_running
            && p.running + p.queued > u64::from(max)
        {
            return Err(format!(
                "{project} got a start with {} running and {} queued, past its limit of {max}",
                p.running, p.queued
            ));
        }
    }
    Ok(())
}

/// The longest a simulated program runs, ms: what one attempt can cost a project's share.
const LONGEST_ATTEMPT_MS: f64 = 3_000.0;

/// Under the fair policy, a start goes to the project furthest below its share per unit of
/// weight, its starts already waiting in workers' queues counted as used. So no project that
/// still may start fragments after the round is further below its share than one that got a
/// start, by more than what its own queued starts will use (each at most the longest attempt).
fn fair(herzog: &Coordinator, progress: &[ProjectProgress], starts: &[(String, String)]) -> Result<(), String> {
    let shares = herzog.shares();
    // Only an active project's deficit is its standing at the round: one the round left
    // without work is no longer in the share, and its account starts afresh.
    let per_weight = |name: &str| {
        shares
            .iter()
            .find(|s| s.project == name && s.active)
            .map(|s| (s.deficit_ms as f64 / f64::from(s.share.max(1)), s.share.max(1)))
    };
    for (started, _) in starts {
        let Some((theirs, _)) = per_weight(started) else {
            continue;
        };
        for behind in shares.iter().filter(|s| s.active && s.project != *started) {
            if herzog.startable(&behind.project) == 0 {
                continue;
            }
            let Some((owed, weight)) = per_weight(&behind.project) else {
                continue;
            };
            let queued = progress
                .iter()
                .find(|p| p.name == behind.project)
                .map_or(0, |p| p.queued);
            let allowance = queued as f64 * LONGEST_ATTEMPT_MS / f64::from(weight) + 2.0;
            if owed - theirs > allowance {
                return Err(format!(
                    "fair share: {started} got a start at {theirs:.0} ms below its share per unit of weight, while {} may start more at {owed:.0} ms below its share ({queued} queued, allowed {allowance:.0} ms more)",
                    behind.project
                ));
            }
        }
    }
    Ok(())
}
