//! The fair share through the real daemons, measured from the programs' own start and end
//! times: equal projects split the slots equally, weights split them by weight, and a
//! project submitted later catches up to its share and then takes no more.

use common::wire::{ProjectProgress, ShareInfo};
use std::collections::BTreeMap;
use std::time::Duration;
use tests::timed::{Run, runs, timed_program};
use tests::{Cluster, eventually};

/// Fragments per project: 120 × 0.2 s on 4 slots keeps three projects busy for ~18 s.
const FRAGMENTS: usize = 120;

fn submit(cluster: &Cluster, program: &str, name: &str, extra: &[&str]) {
    let dir = cluster.inputs(name, FRAGMENTS);
    let mut args = vec!["action", dir.to_str().expect("UTF-8"), program, "--name", name];
    args.extend_from_slice(extra);
    cluster.hz_ok(&args);
}

/// Waits for every project to finish (`hz progress --watch` exits when they have).
fn wait_all(cluster: &Cluster) {
    let out = cluster.hz(&["progress", "--watch"]);
    assert!(out.status.success(), "{out:?}");
}

/// The window while every project had work: from the last first start to the first last
/// start (after its last start a project has nothing pending).
fn window(runs: &[Run]) -> (u128, u128) {
    let mut first: BTreeMap<&str, u128> = BTreeMap::new();
    let mut last: BTreeMap<&str, u128> = BTreeMap::new();
    for (p, s, _) in runs {
        let f = first.entry(p).or_insert(*s);
        *f = (*f).min(*s);
        let l = last.entry(p).or_insert(*s);
        *l = (*l).max(*s);
    }
    let from = *first.values().max().expect("runs");
    let to = *last.values().min().expect("runs");
    assert!(to > from, "no window where every project had work");
    (from, to)
}

/// Each project's part of the slot-time used within `[from, to)`, in percent.
fn shares(runs: &[Run], from: u128, to: u128) -> BTreeMap<String, f64> {
    let mut used: BTreeMap<String, u128> = BTreeMap::new();
    for (p, s, e) in runs {
        let (s, e) = ((*s).max(from), (*e).min(to));
        *used.entry(p.clone()).or_default() += e.saturating_sub(s);
    }
    let total: u128 = used.values().sum();
    used.into_iter()
        .map(|(p, u)| (p, 100.0 * u as f64 / total as f64))
        .collect()
}

fn assert_near(got: &BTreeMap<String, f64>, want: &[(&str, f64)], points: f64, what: &str) {
    for (p, w) in want {
        let g = got.get(*p).copied().unwrap_or(0.0);
        assert!(
            (g - w).abs() <= points,
            "{what}: {p} got {g:.1} %, want {w:.1} ± {points} ({got:?})"
        );
    }
}

/// Two workers of two slots, drained while the projects are submitted, so that all start
/// in the same round.
fn together(extra: &[(&str, &[&str])]) -> Cluster {
    let cluster = Cluster::start(&[("euclid", 2), ("newton", 2)]);
    let program = timed_program(&cluster, "0.2");
    cluster.hz_ok(&["drain", "euclid"]);
    cluster.hz_ok(&["drain", "newton"]);
    for (name, args) in extra {
        submit(&cluster, &program, name, args);
    }
    cluster.hz_ok(&["undrain", "euclid"]);
    cluster.hz_ok(&["undrain", "newton"]);
    cluster
}

#[test]
fn three_projects_on_four_slots_get_a_third_each() {
    let cluster = together(&[("a", &[]), ("b", &[]), ("c", &[])]);
    // While they run, `hz shares` shows each its target of a third.
    let during: Vec<ShareInfo> = eventually("three active projects", Duration::from_secs(30), || {
        let s: Vec<ShareInfo> = cluster.hz_json(&["shares"]);
        (s.iter().filter(|s| s.active && s.used_ms > 1_000).count() == 3).then_some(s)
    });
    for s in &during {
        assert!((s.target - 1.0 / 3.0).abs() < 1e-9, "{during:?}");
    }
    let table = cluster.hz_ok(&["shares"]);
    assert!(table.contains("TARGET") && table.contains("33.3%"), "{table}");
    wait_all(&cluster);
    let runs = runs(cluster.dir());
    assert_eq!(runs.len(), 3 * FRAGMENTS);
    let (from, to) = window(&runs);
    let got = shares(&runs, from, to);
    eprintln!("equal shares over {:.1} s: {got:?}", (to - from) as f64 / 1e9);
    assert_near(
        &got,
        &[("a", 100.0 / 3.0), ("b", 100.0 / 3.0), ("c", 100.0 / 3.0)],
        2.0,
        "equal",
    );
}

#[test]
fn weights_two_one_one_give_half_a_quarter_and_a_quarter() {
    let cluster = together(&[("a", &["--share", "2"]), ("b", &[]), ("c", &[])]);
    wait_all(&cluster);
    let runs = runs(cluster.dir());
    let (from, to) = window(&runs);
    let got = shares(&runs, from, to);
    eprintln!("2:1:1 shares over {:.1} s: {got:?}", (to - from) as f64 / 1e9);
    assert_near(&got, &[("a", 50.0), ("b", 25.0), ("c", 25.0)], 2.0, "2:1:1");
}

#[test]
fn a_weight_set_at_run_time_takes_effect_and_is_kept_across_a_restart() {
    let mut cluster = together(&[("a", &[]), ("b", &[])]);
    let said = String::from_utf8(cluster.hz(&["share", "a", "3"]).stderr).expect("UTF-8");
    assert!(said.contains("a has a share of 3"), "{said}");
    let s: Vec<ShareInfo> = cluster.hz_json(&["shares"]);
    let a = s.iter().find(|s| s.project == "a").expect("a is shown");
    assert_eq!((a.share, a.target), (3, 0.75), "{s:?}");
    cluster.hz_fails(&["share", "a", "0"], 2);
    let out = cluster.hz(&["share", "nosuch", "2"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("no project named 'nosuch'"),
        "{out:?}"
    );
    cluster.restart_herzog();
    let s: Vec<ShareInfo> = cluster.hz_json(&["shares"]);
    let a = eventually("a is active again", Duration::from_secs(30), || {
        let s: Vec<ShareInfo> = cluster.hz_json(&["shares"]);
        s.into_iter().find(|s| s.project == "a" && s.active)
    });
    assert_eq!(a.share, 3, "{s:?}");
    cluster.hz_ok(&["remove", "a"]);
    cluster.hz_ok(&["remove", "b"]);
}

#[test]
fn a_project_submitted_later_catches_up_and_then_takes_no_more() {
    let cluster = together(&[("a", &[]), ("b", &[])]);
    let program = timed_program(&cluster, "0.2");
    // a and b have had the slots for about 4 s.
    eventually("a and b ran a while", Duration::from_secs(60), || {
        let p: Vec<ProjectProgress> = cluster.hz_json(&["progress"]);
        (p.iter().map(|p| p.succeeded).sum::<u64>() >= 80).then_some(())
    });
    let submitted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    submit(&cluster, &program, "c", &[]);
    wait_all(&cluster);
    let runs = runs(cluster.dir());
    let (_, to) = window(&runs);
    let first_c = runs.iter().filter(|r| r.0 == "c").map(|r| r.1).min().expect("c ran");
    // It starts within one attempt (0.2 s) and herzog's round trips of its submission.
    let waited_ms = (first_c.saturating_sub(submitted)) as f64 / 1e6;
    assert!(waited_ms < 1_000.0, "c waited {waited_ms:.0} ms for its first start");
    // From its submission, it has its third within 2 points: it caught up what it waited.
    let since = shares(&runs, submitted, to);
    eprintln!(
        "since c came ({:.1} s): {since:?}, c waited {waited_ms:.0} ms",
        (to - submitted) as f64 / 1e9
    );
    assert_near(
        &since,
        &[("a", 100.0 / 3.0), ("b", 100.0 / 3.0), ("c", 100.0 / 3.0)],
        2.0,
        "since c came",
    );
    // And it takes no more than its third once it has caught up: the second half.
    let half = submitted + (to - submitted) / 2;
    let later = shares(&runs, half, to);
    eprintln!("second half: {later:?}");
    assert_near(&later, &[("c", 100.0 / 3.0)], 3.0, "second half");
}
