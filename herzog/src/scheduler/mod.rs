//! The scheduler: a pure function from demand, policy and what workers have free to
//! assignments (and the reservations of projects that fit nowhere yet).
//!
//! `fair` gives each start to the project furthest below its entitlement per unit of weight:
//! its deficit (slot-time it is owed by its share minus slot-time it used, from
//! [`crate::fair::Ledger`]) less the expected slot-time of the starts it already has queued,
//! over its weight. Each start given charges the project the expected length of one attempt,
//! so a round spreads its starts. Ties go to the older project. `priority P` gives P every
//! start it can use first; the others share the rest fairly.
//!
//! Packing: each project's attempts ask for CPUs and memory ([`Size`]); a start goes only to a
//! worker where it fits ([`Held::fits`]), among those the one with the most free places
//! (slots and queue) left, ties by name, which spreads a project across hosts.
//!
//! Reservations (backfill, as Slurm's): a project whose next attempt fits on no worker while
//! some worker has a free place (not even on one another project reserves) reserves the worker closest to fitting it
//! ([`Held::shortfall`]); from then on no project behind it in the policy's order (further
//! above its share under `fair`; every other project when it is the `priority` project) starts
//! anything there, so that worker drains until it fits. A reservation is kept from round to
//! round (the caller hands it back) until its project starts an attempt or has no work; one
//! project ahead of another may take its reserved worker over. Deterministic: no hash order,
//! so tests assert exact assignments.

mod fit;
#[cfg(test)]
mod tests;

pub(crate) use fit::{Held, Size};

use common::ProjectId;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

/// A project that wants starts. `ProjectId` order is age order: lower is older.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Demand {
    pub(crate) project: ProjectId,
    pub(crate) pending: u64,
    /// How far below its entitlement it is, in slot-ms, less what its queued starts are
    /// expected to use (negative: above it).
    pub(crate) owed_ms: i64,
    /// Its share weight (`hz share`), at least 1.
    pub(crate) weight: u32,
    /// What one more attempt is expected to use, slot-ms (at least 1).
    pub(crate) cost_ms: u64,
    /// What each of its attempts asks for.
    pub(crate) size: Size,
}

/// A worker that takes starts, and what it has free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Capacity<'a> {
    pub(crate) worker: &'a str,
    /// Places for more attempts: its slots and the depth of its queue, less what it holds.
    pub(crate) free: u32,
    /// How many of its attempts run at once.
    pub(crate) slots: u32,
    /// The CPUs and memory its attempts may use together (offered, less its services').
    pub(crate) room: Size,
    /// What the attempts it holds ask for.
    pub(crate) held: &'a Held,
}

/// One start given to one project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Assignment<'a> {
    pub(crate) worker: &'a str,
    pub(crate) project: ProjectId,
}

/// What a round decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Round<'a> {
    pub(crate) assignments: Vec<Assignment<'a>>,
    /// Each project that fits nowhere yet, with the worker it reserves, in project order.
    pub(crate) reserved: Vec<(ProjectId, &'a str)>,
}

/// Decides who gets the free places. `priority` is the project that goes first, if any;
/// `reserved` the reservations the previous round returned.
///
/// O(W log W + S (P + log W + D) + B W) for W workers, S starts, P projects wanting starts, D
/// distinct requests on a worker and B projects that fit nowhere: the workers with free places
/// sit in a heap per distinct request size, ordered by free places and then by their place in
/// name order, so a start costs a heap operation on integers (a scan of every worker per start
/// showed at 1,000 workers). A worker found too full for a size is dropped from that size's
/// heap for the round: within a round, workers only fill up.
pub(crate) fn assign<'a>(
    demands: &[Demand],
    priority: Option<ProjectId>,
    capacity: &[Capacity<'a>],
    reserved: &[(ProjectId, &str)],
) -> Round<'a> {
    let mut by_name: Vec<&Capacity<'a>> = capacity.iter().collect();
    // The machine lists its workers in name order already; sorting is for any other caller.
    if !by_name.is_sorted_by(|a, b| a.worker <= b.worker) {
        by_name.sort_unstable_by(|a, b| a.worker.cmp(b.worker));
    }
    let mut free: Vec<u32> = by_name.iter().map(|c| c.free).collect();
    let mut total_free: u64 = free.iter().map(|f| u64::from(*f)).sum();
    // What a worker holds once this round's starts are added, copied on its first start (by
    // rank; sparse, as a round touches few of many workers).
    let mut added: BTreeMap<usize, Held> = BTreeMap::new();
    let mut wants = wants(demands);
    // worker rank -> index into `wants` of the project that reserves it.
    let mut holds: BTreeMap<usize, usize> = BTreeMap::new();
    for (project, worker) in reserved {
        let (Ok(rank), Some(i)) = (
            by_name.binary_search_by(|c| c.worker.cmp(worker)),
            wants.iter().position(|w| w.project == *project),
        ) else {
            continue;
        };
        let valid = wants[i].size.within(by_name[rank].room) && by_name[rank].slots > 0;
        if valid && wants[i].reserves.is_none() && !holds.contains_key(&rank) {
            holds.insert(rank, i);
            wants[i].reserves = Some(rank);
        }
    }
    let mut heaps: BTreeMap<Size, BinaryHeap<(u32, Reverse<usize>)>> = BTreeMap::new();
    let mut out = Vec::with_capacity(total_free.min(wants.iter().map(|w| w.pending).sum()) as usize);
    let mut done = vec![false; wants.len()];
    while total_free > 0 {
        let Some(i) = pick_project(&wants, &done, priority) else {
            break;
        };
        let size = wants[i].size;
        let heap = heaps.entry(size).or_insert_with(|| {
            free.iter()
                .enumerate()
                .filter(|(_, f)| **f > 0)
                .map(|(rank, f)| (*f, Reverse(rank)))
                .collect()
        });
        // Workers reserved by a project ahead of this one: set aside, back after the pick.
        let mut aside = Vec::new();
        let mut chosen = None;
        while let Some((f, Reverse(rank))) = heap.pop() {
            if f != free[rank] {
                // Stale: it filled up since this entry was pushed.
                if free[rank] > 0 {
                    heap.push((free[rank], Reverse(rank)));
                }
                continue;
            }
            let c = by_name[rank];
            let held = added.get(&rank).unwrap_or(c.held);
            if !held.fits(c.slots, c.room, size) {
                continue;
            }
            if let Some(&r) = holds.get(&rank)
                && r != i
                && ahead(&wants[r], &wants[i], priority)
            {
                aside.push((f, Reverse(rank)));
                continue;
            }
            chosen = Some(rank);
            break;
        }
        heap.extend(aside.iter().copied());
        let Some(rank) = chosen else {
            done[i] = true;
            // Kept off a worker it fits by a reservation: it is not the big one.
            if !aside.is_empty() {
                continue;
            }
            if let Some((rank, lost)) = reserve(i, &wants, &holds, &by_name, &added, priority) {
                if let Some(behind) = lost {
                    wants[behind].reserves = None;
                }
                holds.insert(rank, i);
                wants[i].reserves = Some(rank);
            }
            continue;
        };
        free[rank] -= 1;
        total_free -= 1;
        if free[rank] > 0 {
            heap.push((free[rank], Reverse(rank)));
        }
        added
            .entry(rank)
            .or_insert_with(|| by_name[rank].held.clone())
            .add(size);
        if let Some(r) = wants[i].reserves.take() {
            holds.remove(&r);
        }
        wants[i].take();
        out.push(Assignment {
            worker: by_name[rank].worker,
            project: wants[i].project,
        });
    }
    let mut reserved: Vec<(ProjectId, &'a str)> = holds
        .iter()
        .filter(|(_, i)| wants[**i].pending > 0)
        .map(|(rank, i)| (wants[*i].project, by_name[*rank].worker))
        .collect();
    reserved.sort();
    Round {
        assignments: out,
        reserved,
    }
}

/// The worker project `i`, which fits nowhere it may go, reserves: the one it already holds,
/// else the one closest to fitting it among those that could ever hold it and no project
/// ahead of it reserves (ties by name), with the project behind it that held that worker.
fn reserve(
    i: usize,
    wants: &[Want],
    holds: &BTreeMap<usize, usize>,
    by_name: &[&Capacity<'_>],
    added: &BTreeMap<usize, Held>,
    priority: Option<ProjectId>,
) -> Option<(usize, Option<usize>)> {
    if let Some(rank) = wants[i].reserves {
        return Some((rank, None));
    }
    let size = wants[i].size;
    let mut best: Option<(f64, usize)> = None;
    for (rank, c) in by_name.iter().enumerate() {
        if c.slots == 0 || !size.within(c.room) {
            continue;
        }
        if holds.get(&rank).is_some_and(|&r| ahead(&wants[r], &wants[i], priority)) {
            continue;
        }
        let held = added.get(&rank).unwrap_or(c.held);
        let short = held.shortfall(c.slots, c.room, size);
        if best.is_none_or(|(b, _)| short < b) {
            best = Some((short, rank));
        }
    }
    let (_, rank) = best?;
    Some((rank, holds.get(&rank).copied()))
}

/// Whether `r` stands ahead of `x` in the policy's order: the priority project ahead of all,
/// else the one further below its share.
fn ahead(r: &Want, x: &Want, priority: Option<ProjectId>) -> bool {
    match priority {
        Some(p) if r.project == p => true,
        Some(p) if x.project == p => false,
        _ => r.before(x) == Ordering::Less,
    }
}

/// A project's standing while a round hands out starts.
#[derive(Clone, Copy, Debug)]
struct Want {
    project: ProjectId,
    pending: u64,
    owed_ms: i64,
    weight: u32,
    cost_ms: u64,
    size: Size,
    /// The worker (rank) it reserves.
    reserves: Option<usize>,
}

impl Want {
    /// One start given: one fewer pending, and charged what an attempt is expected to use.
    fn take(&mut self) {
        self.pending -= 1;
        self.owed_ms = self.owed_ms.saturating_sub(self.cost_ms.max(1) as i64);
    }

    /// Who is further below its share per unit of weight: `owed / weight`, compared exactly
    /// by cross-multiplying; ties to the older.
    fn before(&self, other: &Want) -> Ordering {
        let mine = i128::from(self.owed_ms) * i128::from(other.weight.max(1));
        let theirs = i128::from(other.owed_ms) * i128::from(self.weight.max(1));
        theirs.cmp(&mine).then(self.project.cmp(&other.project))
    }
}

/// The projects that want starts, older first.
fn wants(demands: &[Demand]) -> Vec<Want> {
    let mut wants: Vec<Want> = demands
        .iter()
        .filter(|d| d.pending > 0)
        .map(|d| Want {
            project: d.project,
            pending: d.pending,
            owed_ms: d.owed_ms,
            weight: d.weight.max(1),
            cost_ms: d.cost_ms.max(1),
            size: d.size,
            reserves: None,
        })
        .collect();
    wants.sort_by_key(|w| w.project);
    wants
}

/// Which project the next start goes to: the priority project while it has work it can
/// place, else the one furthest below its share per unit of weight, ties to the older.
/// Projects `done` for the round (nothing fits them) are passed over.
fn pick_project(wants: &[Want], done: &[bool], priority: Option<ProjectId>) -> Option<usize> {
    let open = |i: usize| wants[i].pending > 0 && !done[i];
    priority
        .and_then(|p| (0..wants.len()).find(|&i| wants[i].project == p && open(i)))
        .or_else(|| {
            (0..wants.len())
                .filter(|&i| open(i))
                .min_by(|&a, &b| wants[a].before(&wants[b]))
        })
}
