//! Tests of the fair-share ledger, alone and driving the scheduler in a simulated cluster.

use super::*;
use crate::scheduler::{Capacity, Demand, Held, Size, assign};
use proptest::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const A: ProjectId = ProjectId(1);
const B: ProjectId = ProjectId(2);

#[test]
fn usage_accrues_from_the_start_and_stops_at_the_end() {
    let mut l = Ledger::default();
    l.sync(&[A], 0);
    l.start(A, 0, 0);
    l.start(A, 500, 1_000); // heard at 1 s, started at 0.5 s
    assert_eq!(l.view(2_000)[0].used_ms, 2_000 + 1_500);
    l.end(A, 0, 1_800, 2_000); // ended at 1.8 s, heard at 2 s
    l.ran(A, 300, 2_000); // a short one herzog never heard start
    assert_eq!(l.view(3_000)[0].used_ms, 1_800 + 2_500 + 300);
    // Alone, it is owed all it used: no deficit either way.
    assert_eq!(l.deficit(A, 3_000).round(), 0.0);
}

#[test]
fn the_deficit_is_the_share_not_used() {
    let mut l = Ledger::default();
    l.set_weight(B, 3, 0);
    l.sync(&[A, B], 0);
    l.start(A, 0, 0);
    // 4 s of one slot, all used by A: B was owed 3/4 of it, A 1/4.
    assert_eq!(l.deficit(B, 4_000).round(), 3_000.0);
    assert_eq!(l.deficit(A, 4_000).round(), -3_000.0);
    let v = l.view(4_000);
    assert_eq!((v[0].target, v[1].target), (0.25, 0.75));
    assert_eq!((v[0].since_active, v[1].since_active), (Some(1.0), Some(0.0)));
}

#[test]
fn a_project_that_becomes_active_starts_level_and_one_that_stops_forgets() {
    let mut l = Ledger::default();
    l.sync(&[A], 0);
    l.start(A, 0, 0);
    l.sync(&[A, B], 10_000);
    assert_eq!(l.deficit(B, 10_000), 0.0);
    assert_eq!(l.deficit(B, 12_000).round(), 1_000.0);
    l.sync(&[A], 12_000);
    assert_eq!(l.deficit(B, 12_000), 0.0);
    assert_eq!(
        l.view(12_000).len(),
        1,
        "an inactive project with nothing running is not shown"
    );
}

#[test]
fn a_weight_change_counts_from_then() {
    let mut l = Ledger::default();
    l.sync(&[A, B], 0);
    l.start(A, 0, 0);
    l.start(B, 0, 0);
    l.set_weight(A, 3, 2_000);
    // Level for 2 s; then A is owed 3/4 of 2 slots for 2 s = 3 s while it used 2 s.
    assert_eq!(l.deficit(A, 4_000).round(), 1_000.0);
    assert_eq!(l.deficit(B, 4_000).round(), -1_000.0);
}

#[test]
fn decay_halves_a_deficit_over_the_half_life() {
    let mut l = Ledger::default();
    l.set_half_life(Some(10_000));
    l.sync(&[A, B], 0);
    l.start(A, 0, 0);
    l.end(A, 0, 2_000, 2_000);
    l.sync(&[A, B], 2_000);
    let before = l.deficit(B, 2_000);
    assert!(before > 800.0 && before < 1_000.0, "{before}");
    l.sync(&[A, B], 12_000);
    assert!((l.deficit(B, 12_000) / before - 0.5).abs() < 1e-9);
    assert!((l.deficit(A, 12_000) + l.deficit(B, 12_000)).abs() < 1e-6);
}

#[test]
fn forgetting_a_running_project_stops_its_usage() {
    let mut l = Ledger::default();
    l.sync(&[A, B], 0);
    l.start(A, 0, 0);
    l.start(B, 0, 0);
    l.forget(A, 1_000);
    assert_eq!(l.total_used(5_000), 1_000 + 5_000);
    assert_eq!(l.view(5_000).len(), 1);
}

/// A project of the simulation: its weight, when it arrives, how long its attempts run.
#[derive(Clone, Debug)]
struct SimProject {
    weight: u32,
    arrives: i64,
    least_ms: i64,
    most_ms: i64,
}

/// What the simulation saw.
#[derive(Debug, Default)]
struct Outcome {
    /// The largest |entitlement − use| of a project once it had `warm` completions,
    /// measured independently of the ledger, in slot-ms.
    worst_gap_ms: f64,
    /// The longest a project with work went without a start, over
    /// `(total weight / its weight + 2) × d_max`.
    worst_wait: f64,
    /// Per project: its use and entitlement at the end, slot-ms.
    end: Vec<(f64, f64)>,
}

/// A cluster of `slots` slots and projects that always have work, run for `until` ms: at each
/// completion the ledger hears the end, the scheduler fills the free slots, the ledger hears
/// the starts. Checks work conservation at every step.
fn simulate(projects: &[SimProject], slots: u32, until: i64, warm: u32, seed: u64) -> Result<Outcome, TestCaseError> {
    let mut draw = draws(seed);
    let total_weight: u32 = projects.iter().map(|p| p.weight).sum();
    let d_max = projects.iter().map(|p| p.most_ms).max().unwrap_or(1) as f64;
    let ids: Vec<ProjectId> = (0..projects.len()).map(|i| ProjectId(i as i64 + 1)).collect();
    let mut ledger = Ledger::default();
    for (id, p) in ids.iter().zip(projects) {
        ledger.set_weight(*id, p.weight, 0);
    }
    // (ends at, project index, started at)
    let mut running: BinaryHeap<Reverse<(i64, usize, i64)>> = BinaryHeap::new();
    let mut used = vec![0.0f64; projects.len()];
    let mut owed = vec![0.0f64; projects.len()];
    let mut done = vec![0u32; projects.len()];
    let mut last_start: Vec<Option<i64>> = vec![None; projects.len()];
    let mut out = Outcome::default();
    let mut now = 0i64;
    loop {
        // Ends due now.
        while let Some(&Reverse((end, i, from))) = running.peek() {
            if end > now {
                break;
            }
            running.pop();
            ledger.end(ids[i], from, end, now);
            done[i] += 1;
        }
        let arrived: Vec<usize> = (0..projects.len()).filter(|&i| projects[i].arrives <= now).collect();
        for &i in &arrived {
            last_start[i].get_or_insert(projects[i].arrives);
        }
        let active: Vec<ProjectId> = arrived.iter().map(|&i| ids[i]).collect();
        ledger.sync(&active, now);
        let demands: Vec<Demand> = arrived
            .iter()
            .map(|&i| Demand {
                project: ids[i],
                pending: 1_000_000,
                owed_ms: ledger.deficit(ids[i], now).round() as i64,
                weight: projects[i].weight,
                cost_ms: ((projects[i].least_ms + projects[i].most_ms) / 2) as u64,
                size: Size { cpus: 1, memory: 0 },
            })
            .collect();
        let free = slots - running.len() as u32;
        let held = Held::new();
        let w = Capacity {
            worker: "w",
            free,
            slots: slots.max(1),
            room: Size { cpus: slots, memory: 0 },
            held: &held,
        };
        let given = assign(&demands, None, &[w], &[]).assignments;
        // Work-conserving: every free slot goes to someone while anyone has work.
        prop_assert_eq!(given.len() as u32, if arrived.is_empty() { 0 } else { free });
        for a in given {
            let i = (a.project.0 - 1) as usize;
            let p = &projects[i];
            running.push(Reverse((now + draw(p.least_ms, p.most_ms), i, now)));
            ledger.start(a.project, now, now);
            // Against how long its share makes it wait at worst: the slot-time of everyone
            // else's attempts while it is ahead by one of its own.
            let fair_wait = (f64::from(total_weight) / f64::from(p.weight) + 2.0) * d_max;
            out.worst_wait = out
                .worst_wait
                .max((now - last_start[i].unwrap_or(now)) as f64 / fair_wait);
            last_start[i] = Some(now);
        }
        for &i in &arrived {
            if done[i] >= warm {
                out.worst_gap_ms = out.worst_gap_ms.max((owed[i] - used[i]).abs());
            }
        }
        let next = running
            .iter()
            .map(|r| r.0.0)
            .chain(projects.iter().map(|p| p.arrives).filter(|a| *a > now))
            .min()
            .unwrap_or(until)
            .min(until);
        // The fluid entitlement over [now, next): every running slot split by weight among
        // the arrived projects; computed here, not by the ledger.
        let weights: u32 = arrived.iter().map(|&i| projects[i].weight).sum();
        let dt = (next - now) as f64;
        for &i in &arrived {
            owed[i] += running.len() as f64 * dt * f64::from(projects[i].weight) / f64::from(weights);
        }
        for r in &running {
            used[r.0.1] += dt;
        }
        if next >= until {
            break;
        }
        now = next;
    }
    out.end = used.into_iter().zip(owed).collect();
    Ok(out)
}

fn sim_project() -> impl Strategy<Value = SimProject> {
    (1u32..5, prop_oneof![Just(0i64), 0i64..20_000], 1i64..3_000, 0i64..3_000).prop_map(
        |(weight, arrives, least_ms, spread)| SimProject {
            weight,
            arrives,
            least_ms,
            most_ms: least_ms + spread,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The bound: once a project has had `WARM` completions, its slot-time stays within
    /// `(slots + 1) × d_max` of its weighted share of the slot-time used since it
    /// arrived, d_max the longest attempt of any project. A project with work waits at most
    /// `(total weight / its weight + 2) × d_max` between starts (not starved), and no slot is
    /// idle while any project has work (checked at every step).
    #[test]
    fn every_project_gets_its_weighted_share_within_a_bound(
        projects in proptest::collection::vec(sim_project(), 1..6),
        slots in 1u32..16,
        seed in any::<u64>(),
    ) {
        const WARM: u32 = 10;
        let d_max = projects.iter().map(|p| p.most_ms).max().unwrap_or(1) as f64;
        let out = simulate(&projects, slots, 300_000, WARM, seed)?;
        let bound = d_max * f64::from(slots + 1);
        prop_assert!(out.worst_gap_ms <= bound, "gap {} > bound {} ({:?})", out.worst_gap_ms, bound, out.end);
        prop_assert!(out.worst_wait <= 1.0, "waited {} of the bound", out.worst_wait);
    }
}

#[test]
fn three_equal_projects_on_four_slots_get_a_third_each() {
    let p = SimProject {
        weight: 1,
        arrives: 0,
        least_ms: 150,
        most_ms: 250,
    };
    let out = simulate(&[p.clone(), p.clone(), p], 4, 120_000, 0, 7).expect("runs");
    let total: f64 = out.end.iter().map(|e| e.0).sum();
    for (used, _) in &out.end {
        assert!((used / total - 1.0 / 3.0).abs() < 0.005, "{:?}", out.end);
    }
}

#[test]
fn weights_two_one_one_give_half_a_quarter_and_a_quarter() {
    let p = |weight| SimProject {
        weight,
        arrives: 0,
        least_ms: 200,
        most_ms: 200,
    };
    let out = simulate(&[p(2), p(1), p(1)], 4, 120_000, 0, 7).expect("runs");
    let total: f64 = out.end.iter().map(|e| e.0).sum();
    let shares: Vec<f64> = out.end.iter().map(|e| e.0 / total).collect();
    assert!((shares[0] - 0.5).abs() < 0.005, "{shares:?}");
    assert!((shares[1] - 0.25).abs() < 0.005, "{shares:?}");
}

/// Draws in `lo..=hi` from `seed` by xorshift64: deterministic, enough for durations (the
/// scheduler's simulation draws the same way).
pub(crate) fn draws(seed: u64) -> impl FnMut(i64, i64) -> i64 {
    let mut rng = seed | 1;
    move |lo: i64, hi: i64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        lo + (rng % (hi - lo + 1) as u64) as i64
    }
}
