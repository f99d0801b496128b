//! The scheduler: a pure function from demand, policy and free slots to assignments.
//!
//! `fair` gives each free slot (and each place in a worker's queue of starts) to the project
//! furthest below its entitlement per unit of weight: its deficit (slot-time it is owed by
//! its share minus slot-time it used, from [`crate::fair::Ledger`]) less the expected
//! slot-time of the starts it already has queued, over its weight. Each slot given charges
//! the project the expected length of one attempt, so a round spreads its slots. Ties go to
//! the older project. `priority P` gives P every slot it can use first; the others share the
//! rest fairly. Each slot goes to the worker with the most free slots left (ties by name),
//! which spreads a project across hosts. Deterministic, so tests assert exact assignments.

use common::ProjectId;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A project that wants slots. `ProjectId` order is age order: lower is older.
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
}

/// A worker's free slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Capacity<'a> {
    pub(crate) worker: &'a str,
    pub(crate) free: u32,
}

/// One slot given to one project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Assignment<'a> {
    pub(crate) worker: &'a str,
    pub(crate) project: ProjectId,
}

/// Decides who gets the free slots. `priority` is the project that goes first, if any.
///
/// O(W log W + S (P + log W)) for W workers, S free slots and P projects wanting slots: the
/// workers with free slots sit in a heap ordered by free slots and then by their place in name
/// order, so a slot costs a heap operation on integers, not a scan of every worker comparing
/// names (that scan was O(S × W) and showed at 1,000 workers).
pub(crate) fn assign<'a>(
    demands: &[Demand],
    priority: Option<ProjectId>,
    capacity: &[Capacity<'a>],
) -> Vec<Assignment<'a>> {
    let mut by_name: Vec<&Capacity<'a>> = capacity.iter().filter(|c| c.free > 0).collect();
    // The machine lists its workers in name order already; sorting is for any other caller.
    if !by_name.is_sorted_by(|a, b| a.worker <= b.worker) {
        by_name.sort_unstable_by(|a, b| a.worker.cmp(b.worker));
    }
    let total_free: u64 = by_name.iter().map(|c| u64::from(c.free)).sum();
    // Most free slots first; among equals the first in name order (the smallest rank).
    let mut free: BinaryHeap<(u32, Reverse<usize>)> = by_name
        .iter()
        .enumerate()
        .map(|(rank, c)| (c.free, Reverse(rank)))
        .collect();
    let mut wants = wants(demands);
    let mut out = Vec::with_capacity(total_free.min(wants.iter().map(|w| w.pending).sum()) as usize);
    for _ in 0..total_free {
        let Some(i) = pick_project(&wants, priority) else { break };
        let Some((left, Reverse(rank))) = free.pop() else {
            break;
        };
        if left > 1 {
            free.push((left - 1, Reverse(rank)));
        }
        wants[i].take();
        out.push(Assignment {
            worker: by_name[rank].worker,
            project: wants[i].project,
        });
    }
    out
}

/// A project's standing while a round hands out slots.
#[derive(Clone, Copy, Debug)]
struct Want {
    project: ProjectId,
    pending: u64,
    owed_ms: i64,
    weight: u32,
    cost_ms: u64,
}

impl Want {
    /// One slot given: one fewer pending, and charged what an attempt is expected to use.
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

/// The projects that want slots, older first.
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
        })
        .collect();
    wants.sort_by_key(|w| w.project);
    wants
}

/// Which project the next slot goes to: the priority project while it has work, else the
/// one furthest below its share per unit of weight, ties to the older.
fn pick_project(wants: &[Want], priority: Option<ProjectId>) -> Option<usize> {
    priority
        .and_then(|p| wants.iter().position(|w| w.project == p && w.pending > 0))
        .or_else(|| {
            wants
                .iter()
                .enumerate()
                .filter(|(_, w)| w.pending > 0)
                .min_by(|a, b| a.1.before(b.1))
                .map(|(i, _)| i)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A project with `running` attempts of one second each, against others level with it:
    /// each running attempt puts it one attempt's cost above its share.
    fn d(project: i64, pending: u64, running: u64) -> Demand {
        Demand {
            project: ProjectId(project),
            pending,
            owed_ms: -(running as i64) * 1000,
            weight: 1,
            cost_ms: 1000,
        }
    }

    fn per_project(a: &[Assignment<'_>]) -> BTreeMap<i64, usize> {
        let mut m = BTreeMap::new();
        for x in a {
            *m.entry(x.project.0).or_default() += 1;
        }
        m
    }

    #[test]
    fn fair_splits_six_slots_between_three_projects() {
        let cap = [Capacity { worker: "a", free: 4 }, Capacity { worker: "b", free: 2 }];
        let a = assign(&[d(1, 100, 0), d(2, 100, 0), d(3, 100, 0)], None, &cap);
        assert_eq!(per_project(&a), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        // Spread across workers: each gets as many as it has free.
        assert_eq!(a.iter().filter(|x| x.worker == "a").count(), 4);
    }

    #[test]
    fn fair_counts_what_already_runs() {
        let cap = [Capacity { worker: "a", free: 3 }];
        let a = assign(&[d(1, 100, 3), d(2, 100, 0)], None, &cap);
        assert_eq!(per_project(&a), BTreeMap::from([(2, 3)]));
    }

    #[test]
    fn fair_gives_unused_share_to_others_and_ties_to_the_older() {
        let cap = [Capacity { worker: "a", free: 5 }];
        let a = assign(&[d(2, 100, 0), d(1, 1, 0)], None, &cap);
        assert_eq!(per_project(&a), BTreeMap::from([(1, 1), (2, 4)]));
        let a = assign(
            &[d(2, 100, 0), d(1, 100, 0)],
            None,
            &[Capacity { worker: "a", free: 1 }],
        );
        assert_eq!(
            a,
            [Assignment {
                worker: "a",
                project: ProjectId(1)
            }]
        );
    }

    #[test]
    fn priority_takes_every_slot_it_can_use() {
        let cap = [Capacity { worker: "a", free: 6 }];
        let a = assign(&[d(1, 100, 0), d(2, 100, 0), d(3, 100, 0)], Some(ProjectId(3)), &cap);
        assert_eq!(per_project(&a), BTreeMap::from([(3, 6)]));
        let a = assign(&[d(1, 100, 0), d(2, 100, 0), d(3, 2, 0)], Some(ProjectId(3)), &cap);
        assert_eq!(per_project(&a), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
    }

    #[test]
    fn nothing_pending_or_no_slots_assigns_nothing() {
        assert!(assign(&[d(1, 0, 5)], None, &[Capacity { worker: "a", free: 4 }]).is_empty());
        assert!(assign(&[d(1, 9, 0)], None, &[Capacity { worker: "a", free: 0 }]).is_empty());
    }

    /// The scan `assign` used before the heap: every slot to the worker with the most free
    /// slots, ties to the smaller name. The heap must give exactly the same assignments.
    fn assign_by_scan<'a>(
        demands: &[Demand],
        priority: Option<ProjectId>,
        capacity: &[Capacity<'a>],
    ) -> Vec<Assignment<'a>> {
        let mut free: Vec<(u32, &'a str)> = capacity
            .iter()
            .filter(|c| c.free > 0)
            .map(|c| (c.free, c.worker))
            .collect();
        let total_free: u64 = free.iter().map(|(f, _)| u64::from(*f)).sum();
        let mut wants = wants(demands);
        let mut out = Vec::new();
        for _ in 0..total_free {
            let Some(i) = pick_project(&wants, priority) else { break };
            let Some(slot) = (0..free.len()).max_by(|&a, &b| free[a].0.cmp(&free[b].0).then(free[b].1.cmp(free[a].1)))
            else {
                break;
            };
            free[slot].0 -= 1;
            let worker = free[slot].1;
            if free[slot].0 == 0 {
                free.swap_remove(slot);
            }
            wants[i].take();
            out.push(Assignment {
                worker,
                project: wants[i].project,
            });
        }
        out
    }

    proptest! {
        #[test]
        fn the_heap_assigns_exactly_as_the_scan_did(
            pend in proptest::collection::vec((0u64..30, 0u64..5), 1..6),
            workers in proptest::collection::vec(("[a-e]{1,3}", 0u32..6), 1..12),
            prio in proptest::option::of(1i64..7),
        ) {
            let demands: Vec<Demand> = pend.iter().enumerate().map(|(i, (p, r))| d(i as i64 + 1, *p, *r)).collect();
            // Unique names, in whatever order they came.
            let mut seen = std::collections::HashSet::new();
            let workers: Vec<(String, u32)> = workers.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
            let cap: Vec<Capacity<'_>> = workers.iter().map(|(n, f)| Capacity { worker: n, free: *f }).collect();
            prop_assert_eq!(assign(&demands, prio.map(ProjectId), &cap), assign_by_scan(&demands, prio.map(ProjectId), &cap));
        }

        #[test]
        fn assignments_respect_capacity_demand_and_fairness(
            pend in proptest::collection::vec((0u64..20, 0u64..5), 1..6),
            frees in proptest::collection::vec(0u32..6, 1..5),
            prio in proptest::option::of(1i64..7),
        ) {
            let demands: Vec<Demand> = pend.iter().enumerate().map(|(i, (p, r))| d(i as i64 + 1, *p, *r)).collect();
            let names: Vec<String> = (0..frees.len()).map(|i| format!("w{i}")).collect();
            let cap: Vec<Capacity<'_>> = names.iter().zip(&frees).map(|(n, f)| Capacity { worker: n, free: *f }).collect();
            let a = assign(&demands, prio.map(ProjectId), &cap);
            let again = assign(&demands, prio.map(ProjectId), &cap);
            prop_assert_eq!(&a, &again);
            let total_free: u64 = frees.iter().map(|f| u64::from(*f)).sum();
            let total_pending: u64 = demands.iter().map(|d| d.pending).sum();
            // Work-conserving: every slot is used while anything is pending.
            prop_assert_eq!(a.len() as u64, total_free.min(total_pending));
            for c in &cap {
                prop_assert!(a.iter().filter(|x| x.worker == c.worker).count() as u32 <= c.free);
            }
            let got = per_project(&a);
            for dm in &demands {
                prop_assert!(*got.get(&dm.project.0).unwrap_or(&0) as u64 <= dm.pending);
            }
            // Without priority, a project that could take more never ends more than one slot
            // below another that got any.
            if prio.is_none() {
                for x in &demands {
                    let gx = *got.get(&x.project.0).unwrap_or(&0) as u64;
                    if gx < x.pending {
                        for y in &demands {
                            let gy = *got.get(&y.project.0).unwrap_or(&0) as u64;
                            if gy > 0 {
                                let (rx, ry) = (pend[x.project.0 as usize - 1].1, pend[y.project.0 as usize - 1].1);
                                prop_assert!(rx + gx + 1 >= ry + gy);
                            }
                        }
                    }
                }
            }
        }
    }
}
