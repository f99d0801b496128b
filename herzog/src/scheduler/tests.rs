//! The scheduler's tests: exact assignments, packing, reservations, and properties (never
//! over-commit, work-conserving where a request fits, no starvation of a big request).

use super::*;
use crate::fair::Ledger;
use proptest::prelude::*;
use std::collections::BTreeMap;

static NOTHING: Held = Held::new();

const ONE: Size = Size { cpus: 1, memory: 0 };

/// A worker with `free` places, as many slots, and CPUs and memory to spare: slots alone
/// decide, as before packing.
fn cap(worker: &str, free: u32) -> Capacity<'_> {
    Capacity {
        worker,
        free,
        slots: free.max(1),
        room: Size {
            cpus: 1_000,
            memory: 1 << 40,
        },
        held: &NOTHING,
    }
}

/// A project with `running` attempts of one second each, against others level with it:
/// each running attempt puts it one attempt's cost above its share.
fn d(project: i64, pending: u64, running: u64) -> Demand {
    Demand {
        project: ProjectId(project),
        pending,
        owed_ms: -(running as i64) * 1000,
        weight: 1,
        cost_ms: 1000,
        size: ONE,
    }
}

fn sized(project: i64, pending: u64, cpus: u32) -> Demand {
    Demand {
        size: Size { cpus, memory: 0 },
        ..d(project, pending, 0)
    }
}

fn per_project(a: &[Assignment<'_>]) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for x in a {
        *m.entry(x.project.0).or_default() += 1;
    }
    m
}

fn run<'a>(demands: &[Demand], priority: Option<ProjectId>, capacity: &[Capacity<'a>]) -> Vec<Assignment<'a>> {
    assign(demands, priority, capacity, &[]).assignments
}

#[test]
fn fair_splits_six_slots_between_three_projects() {
    let cap = [cap("a", 4), cap("b", 2)];
    let a = run(&[d(1, 100, 0), d(2, 100, 0), d(3, 100, 0)], None, &cap);
    assert_eq!(per_project(&a), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
    // Spread across workers: each gets as many as it has free.
    assert_eq!(a.iter().filter(|x| x.worker == "a").count(), 4);
}

#[test]
fn fair_counts_what_already_runs() {
    let a = run(&[d(1, 100, 3), d(2, 100, 0)], None, &[cap("a", 3)]);
    assert_eq!(per_project(&a), BTreeMap::from([(2, 3)]));
}

#[test]
fn fair_gives_unused_share_to_others_and_ties_to_the_older() {
    let a = run(&[d(2, 100, 0), d(1, 1, 0)], None, &[cap("a", 5)]);
    assert_eq!(per_project(&a), BTreeMap::from([(1, 1), (2, 4)]));
    let a = run(&[d(2, 100, 0), d(1, 100, 0)], None, &[cap("a", 1)]);
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
    let a = run(
        &[d(1, 100, 0), d(2, 100, 0), d(3, 100, 0)],
        Some(ProjectId(3)),
        &[cap("a", 6)],
    );
    assert_eq!(per_project(&a), BTreeMap::from([(3, 6)]));
    let a = run(
        &[d(1, 100, 0), d(2, 100, 0), d(3, 2, 0)],
        Some(ProjectId(3)),
        &[cap("a", 6)],
    );
    assert_eq!(per_project(&a), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
}

#[test]
fn nothing_pending_or_no_slots_assigns_nothing() {
    assert!(run(&[d(1, 0, 5)], None, &[cap("a", 4)]).is_empty());
    assert!(run(&[d(1, 9, 0)], None, &[cap("a", 0)]).is_empty());
}

/// A worker of `slots` slots (and as many places) and `cpus` CPUs holding `held`.
fn worker<'a>(name: &'a str, slots: u32, cpus: u32, held: &'a Held) -> Capacity<'a> {
    Capacity {
        worker: name,
        free: slots.saturating_sub(held.count()),
        slots,
        room: Size { cpus, memory: 16 << 30 },
        held,
    }
}

#[test]
fn a_worker_of_two_cpus_runs_two_of_one_cpu_or_one_of_two() {
    let empty = Held::new();
    let w = [worker("w", 2, 2, &empty)];
    assert_eq!(per_project(&run(&[sized(1, 9, 1)], None, &w)), BTreeMap::from([(1, 2)]));
    assert_eq!(per_project(&run(&[sized(1, 9, 2)], None, &w)), BTreeMap::from([(1, 1)]));
    // Fewer CPUs than slots: the CPUs decide.
    let w = [worker("w", 4, 2, &empty)];
    assert_eq!(per_project(&run(&[sized(1, 9, 1)], None, &w)), BTreeMap::from([(1, 2)]));
    // Memory too.
    let big = Demand {
        size: Size {
            cpus: 1,
            memory: 10 << 30,
        },
        ..d(1, 9, 0)
    };
    assert_eq!(per_project(&run(&[big], None, &w)), BTreeMap::from([(1, 1)]));
}

#[test]
fn a_start_goes_where_it_fits_not_where_most_is_free() {
    let mut one = Held::new();
    one.add(ONE);
    let empty = Held::new();
    // "a" has more free places but one CPU used; only "b" fits two.
    let w = [worker("a", 4, 2, &one), worker("b", 2, 2, &empty)];
    assert_eq!(
        run(&[sized(1, 1, 2)], None, &w),
        [Assignment {
            worker: "b",
            project: ProjectId(1)
        }]
    );
}

#[test]
fn a_big_project_that_fits_nowhere_reserves_the_closest_worker_and_small_ones_keep_off() {
    let mut one = Held::new();
    one.add(ONE);
    let mut two = Held::new();
    two.add(ONE);
    two.add(ONE);
    // Big (project 1, 2 CPUs) is ahead (older, both level); small is project 2.
    let w = [worker("a", 2, 2, &two), worker("b", 2, 2, &one)];
    let round = assign(&[sized(1, 5, 2), sized(2, 50, 1)], None, &w, &[]);
    // b, one CPU short, is the closest: reserved; a is full anyway.
    assert_eq!(round.reserved, [(ProjectId(1), "b")]);
    assert!(round.assignments.is_empty(), "{:?}", round.assignments);
    // Without the big project, the small one takes b's free CPU.
    let round = assign(&[sized(2, 50, 1)], None, &w, &[]);
    assert_eq!(round.assignments.len(), 1);
    // A small project ahead of the big one (below its share) may still start there.
    let mut ahead = sized(2, 50, 1);
    ahead.owed_ms = 5_000;
    let round = assign(&[sized(1, 5, 2), ahead], None, &w, &[]);
    assert_eq!(per_project(&round.assignments), BTreeMap::from([(2, 1)]));
    // The reservation is kept from the round before even where another worker is as close.
    let round = assign(&[sized(1, 5, 2), sized(2, 50, 1)], None, &w, &[(ProjectId(1), "a")]);
    assert_eq!(round.reserved, [(ProjectId(1), "a")]);
    assert_eq!(per_project(&round.assignments), BTreeMap::from([(2, 1)]));
    assert_eq!(round.assignments[0].worker, "b");
    // Once a worker is empty, it starts there and lets the reservation go.
    let empty = Held::new();
    let w = [worker("a", 2, 2, &two), worker("b", 2, 2, &empty)];
    let round = assign(&[sized(1, 5, 2), sized(2, 50, 1)], None, &w, &[(ProjectId(1), "b")]);
    assert_eq!(round.assignments[0].worker, "b");
    assert_eq!(round.assignments[0].project, ProjectId(1));
}

#[test]
fn under_priority_the_big_project_keeps_every_other_off_its_worker() {
    let mut one = Held::new();
    one.add(ONE);
    let w = [worker("a", 2, 2, &one)];
    // The small project is far below its share, but the priority project is ahead of all.
    let mut small = sized(1, 50, 1);
    small.owed_ms = 1_000_000;
    let round = assign(&[small, sized(2, 5, 2)], Some(ProjectId(2)), &w, &[]);
    assert_eq!(round.reserved, [(ProjectId(2), "a")]);
    assert!(round.assignments.is_empty());
    // The priority project itself may use a worker another reserved.
    let round = assign(
        &[sized(1, 5, 2), sized(2, 5, 1)],
        Some(ProjectId(2)),
        &w,
        &[(ProjectId(1), "a")],
    );
    assert_eq!(per_project(&round.assignments), BTreeMap::from([(2, 1)]));
}

#[test]
fn a_request_larger_than_every_worker_reserves_nothing() {
    let empty = Held::new();
    let w = [worker("a", 2, 2, &empty)];
    let round = assign(&[sized(1, 5, 4), sized(2, 5, 1)], None, &w, &[]);
    assert!(round.reserved.is_empty());
    assert_eq!(per_project(&round.assignments), BTreeMap::from([(2, 2)]));
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
    let done = vec![false; wants.len()];
    let mut out = Vec::new();
    for _ in 0..total_free {
        let Some(i) = pick_project(&wants, &done, priority) else {
            break;
        };
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

/// Random workers: slots, extra queue places, CPUs, memory (GiB), and what they hold, made
/// by adding random requests while they fit (so none starts over-committed).
fn workers_strategy() -> impl Strategy<Value = Vec<(u32, u32, u32, u64, Vec<Size>)>> {
    proptest::collection::vec(
        (
            1u32..4,
            0u32..4,
            1u32..8,
            0u64..16,
            proptest::collection::vec((1u32..4, 0u64..8), 0..6),
        ),
        1..6,
    )
    .prop_map(|ws| {
        ws.into_iter()
            .map(|(slots, queue, cpus, gib, tries)| {
                let room = Size {
                    cpus,
                    memory: gib << 30,
                };
                let mut held = Held::new();
                let mut kept = Vec::new();
                for (c, g) in tries {
                    let s = Size {
                        cpus: c,
                        memory: g << 30,
                    };
                    if held.count() < slots + queue && held.fits(slots, room, s) {
                        held.add(s);
                        kept.push(s);
                    }
                }
                (slots, queue, cpus, gib, kept)
            })
            .collect()
    })
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
        let caps: Vec<Capacity<'_>> = workers.iter().map(|(n, f)| cap(n, *f)).collect();
        prop_assert_eq!(run(&demands, prio.map(ProjectId), &caps), assign_by_scan(&demands, prio.map(ProjectId), &caps));
    }

    #[test]
    fn assignments_respect_capacity_demand_and_fairness(
        pend in proptest::collection::vec((0u64..20, 0u64..5), 1..6),
        frees in proptest::collection::vec(0u32..6, 1..5),
        prio in proptest::option::of(1i64..7),
    ) {
        let demands: Vec<Demand> = pend.iter().enumerate().map(|(i, (p, r))| d(i as i64 + 1, *p, *r)).collect();
        let names: Vec<String> = (0..frees.len()).map(|i| format!("w{i}")).collect();
        let caps: Vec<Capacity<'_>> = names.iter().zip(&frees).map(|(n, f)| cap(n, *f)).collect();
        let a = run(&demands, prio.map(ProjectId), &caps);
        let again = run(&demands, prio.map(ProjectId), &caps);
        prop_assert_eq!(&a, &again);
        let total_free: u64 = frees.iter().map(|f| u64::from(*f)).sum();
        let total_pending: u64 = demands.iter().map(|d| d.pending).sum();
        // Work-conserving: every slot is used while anything is pending.
        prop_assert_eq!(a.len() as u64, total_free.min(total_pending));
        for c in &caps {
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

    /// With requests: no worker ends with more places, CPUs or memory promised than it has
    /// (any `slots` of its attempts fit together), and every project left with work fits on
    /// no worker but those reserved by a project ahead of it (work-conserving where a request
    /// fits). Reservations: one per project, one per worker, only for projects with work.
    #[test]
    fn packing_never_over_commits_and_leaves_no_fitting_place_unused(
        workers in workers_strategy(),
        projects in proptest::collection::vec((0u64..12, -3i64..3, 1u32..6, 0u64..10), 1..5),
        prio in proptest::option::of(1i64..6),
        old in proptest::collection::vec((1i64..6, 0usize..6), 0..3),
    ) {
        let names: Vec<String> = (0..workers.len()).map(|i| format!("w{i}")).collect();
        let helds: Vec<Held> = workers.iter().map(|w| {
            let mut h = Held::new();
            for s in &w.4 { h.add(*s); }
            h
        }).collect();
        let caps: Vec<Capacity<'_>> = workers.iter().enumerate().map(|(i, (slots, queue, cpus, gib, _))| Capacity {
            worker: &names[i],
            free: (slots + queue).saturating_sub(helds[i].count()),
            slots: *slots,
            room: Size { cpus: *cpus, memory: gib << 30 },
            held: &helds[i],
        }).collect();
        let demands: Vec<Demand> = projects.iter().enumerate().map(|(i, (pending, owed, cpus, gib))| Demand {
            project: ProjectId(i as i64 + 1),
            pending: *pending,
            owed_ms: owed * 1000,
            weight: 1,
            cost_ms: 1000,
            size: Size { cpus: *cpus, memory: gib << 30 },
        }).collect();
        let old: Vec<(ProjectId, &str)> = old.iter().filter(|(_, w)| *w < names.len()).map(|(p, w)| (ProjectId(*p), names[*w].as_str())).collect();
        let priority = prio.map(ProjectId);
        let round = assign(&demands, priority, &caps, &old);
        prop_assert_eq!(&round, &assign(&demands, priority, &caps, &old));
        // What each worker holds after the round, and each project's standing.
        let mut after: Vec<Held> = helds.clone();
        let mut wants = wants(&demands);
        for a in &round.assignments {
            let rank = names.iter().position(|n| n == a.worker).unwrap();
            let i = wants.iter().position(|w| w.project == a.project).unwrap();
            after[rank].add(wants[i].size);
            wants[i].take();
        }
        for (rank, c) in caps.iter().enumerate() {
            let given = round.assignments.iter().filter(|a| a.worker == c.worker).count() as u32;
            prop_assert!(given <= c.free);
            if given > 0 {
                let (cpus, memory) = after[rank].peak(c.slots, None);
                prop_assert!(cpus <= u64::from(c.room.cpus), "{} CPUs promised on {}", cpus, c.worker);
                prop_assert!(memory <= u128::from(c.room.memory));
            }
        }
        for w in &wants {
            let start = demands.iter().find(|d| d.project == w.project).unwrap().pending;
            prop_assert!(w.pending <= start);
        }
        let reserver = |worker: &str| round.reserved.iter().find(|r| r.1 == worker).map(|r| r.0);
        for x in wants.iter().filter(|w| w.pending > 0) {
            for (rank, c) in caps.iter().enumerate() {
                let given = round.assignments.iter().filter(|a| a.worker == c.worker).count() as u32;
                if c.free > given && after[rank].fits(c.slots, c.room, x.size) {
                    let r = reserver(c.worker);
                    let blocked = r.is_some_and(|r| r != x.project && ahead(wants.iter().find(|w| w.project == r).unwrap(), x, priority));
                    prop_assert!(blocked, "{:?} fits on {} unused", x.project, c.worker);
                }
            }
        }
        let mut projects_seen = std::collections::BTreeSet::new();
        let mut workers_seen = std::collections::BTreeSet::new();
        for (p, w) in &round.reserved {
            prop_assert!(projects_seen.insert(*p) && workers_seen.insert(*w));
            prop_assert!(wants.iter().any(|x| x.project == *p && x.pending > 0));
        }
    }
}

/// A cluster simulated through time with the real ledger: each worker runs attempts of random
/// lengths; at every completion the ledger hears the end, the scheduler fills what fits (with
/// the reservations of the round before), the ledger hears the starts. `big` joins at
/// `arrives` and asks for `big_cpus`; the others ask for one CPU and always have work.
/// Returns the longest `big` waited for a start (from its arrival, then between starts).
fn starve_sim(
    workers: &[(u32, u32)],
    smalls: u32,
    big_cpus: u32,
    arrives: i64,
    lengths: (i64, i64),
    priority: bool,
    seed: u64,
) -> i64 {
    let mut draw = crate::fair::tests::draws(seed);
    let names: Vec<String> = (0..workers.len()).map(|i| format!("w{i}")).collect();
    let big = ProjectId(i64::from(smalls) + 1);
    let ids: Vec<ProjectId> = (1..=i64::from(smalls) + 1).map(ProjectId).collect();
    let size = |p: ProjectId| Size {
        cpus: if p == big { big_cpus } else { 1 },
        memory: 0,
    };
    let mut ledger = Ledger::default();
    let mut helds: Vec<Held> = vec![Held::new(); workers.len()];
    // (ends at, worker, project, started at)
    let mut running: Vec<(i64, usize, ProjectId, i64)> = Vec::new();
    let mut reserved: Vec<(ProjectId, String)> = Vec::new();
    let mut last_start = arrives;
    let mut worst = 0;
    let mut now = 0;
    let until = arrives + 200 * lengths.1;
    while now < until {
        running.sort();
        while let Some(&(end, w, p, from)) = running.first().filter(|r| r.0 <= now) {
            running.remove(0);
            ledger.end_n(p, size(p).cpus, from, end, now);
            helds[w].remove(size(p));
        }
        let present: Vec<ProjectId> = ids.iter().copied().filter(|p| *p != big || now >= arrives).collect();
        let prio = priority.then_some(big).filter(|_| now >= arrives);
        let active: Vec<ProjectId> = present.iter().copied().filter(|p| Some(*p) != prio).collect();
        ledger.sync(&active, now);
        let demands: Vec<Demand> = present
            .iter()
            .map(|&p| Demand {
                project: p,
                pending: 1_000,
                owed_ms: ledger.deficit(p, now).round() as i64,
                weight: 1,
                cost_ms: ((lengths.0 + lengths.1) / 2) as u64 * u64::from(size(p).cpus),
                size: size(p),
            })
            .collect();
        let caps: Vec<Capacity<'_>> = workers
            .iter()
            .enumerate()
            .map(|(i, (slots, cpus))| Capacity {
                worker: &names[i],
                free: slots - helds[i].count(),
                slots: *slots,
                room: Size {
                    cpus: *cpus,
                    memory: 1 << 30,
                },
                held: &helds[i],
            })
            .collect();
        let old: Vec<(ProjectId, &str)> = reserved.iter().map(|(p, w)| (*p, w.as_str())).collect();
        let round = assign(&demands, prio, &caps, &old);
        let given: Vec<(usize, ProjectId)> = round
            .assignments
            .iter()
            .map(|a| (names.iter().position(|n| n == a.worker).unwrap(), a.project))
            .collect();
        reserved = round.reserved.iter().map(|(p, w)| (*p, w.to_string())).collect();
        for (w, p) in given {
            helds[w].add(size(p));
            running.push((now + draw(lengths.0, lengths.1), w, p, now));
            ledger.start_n(p, size(p).cpus, now, now);
            if p == big {
                worst = worst.max(now - last_start);
                last_start = now;
            }
        }
        now = running
            .iter()
            .map(|r| r.0)
            .chain([arrives].into_iter().filter(|a| *a > now))
            .min()
            .unwrap_or(until);
    }
    worst.max(until - last_start)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// No starvation: a project asking for as many CPUs as the largest worker has (`c`),
    /// among `smalls` projects of one CPU that always have work, waits at most
    /// `(projects × c + 2) × d_max` for each start under `fair` (the fair share's own bound of
    /// `(Σ weights / its weight + 2) × d_max`, each of its attempts counting `c` CPUs' time,
    /// to come first; then the reserved worker drains within one attempt), and at most
    /// `2 × d_max` as the `priority` project.
    #[test]
    fn a_big_request_is_not_starved_by_a_stream_of_small_ones(
        workers in proptest::collection::vec((1u32..5, 1u32..6), 1..5),
        smalls in 1u32..4,
        arrives in 0i64..5_000,
        least in 1i64..2_000,
        spread in 0i64..2_000,
        priority in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let big_cpus = workers.iter().map(|w| w.1).max().unwrap();
        let d_max = least + spread;
        let worst = starve_sim(&workers, smalls, big_cpus, arrives, (least, least + spread), priority, seed);
        let projects = i64::from(smalls) + 1;
        let bound = if priority { 2 * d_max } else { (projects * i64::from(big_cpus) + 2) * d_max };
        prop_assert!(worst <= bound, "waited {} > {} ({} projects, d_max {})", worst, bound, smalls + 1, d_max);
    }
}
