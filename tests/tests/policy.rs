//! The scheduling policy observed on real runs. herzog starts without a worker, projects A then
//! B are added and the policy set while nothing can run; then one worker with 2 slots starts
//! and the order in which the programs really started (their own timestamps) is checked.

use common::wire::Policy;
use tests::{Cluster, Marker};

const PER_PROJECT: usize = 12;
const SLOTS: u32 = 2;

/// Adds A then B (A is older), sets `policy`, starts the worker, waits for both projects and
/// returns each execution's project, in start order.
fn run_two_projects(policy: &str) -> (Cluster, Vec<String>) {
    let mut cluster = Cluster::start(&[]);
    let program = cluster.marker_program();
    for name in ["A", "B"] {
        cluster.inputs(name, PER_PROJECT);
        let added = cluster.hz_ok(&["action", name, &program, "--env", "SLEEP=0.2"]);
        assert_eq!(added, format!("{name}\n"));
    }
    assert_eq!(cluster.hz_ok(&["schedule", policy]).trim(), expected_display(policy));
    cluster.add_worker("euclid", SLOTS);
    cluster.hz_ok(&["progress", "A", "--watch"]);
    cluster.hz_ok(&["progress", "B", "--watch"]);

    let mut markers: Vec<Marker> = cluster.markers();
    assert_eq!(markers.len(), 2 * PER_PROJECT, "{markers:?}");
    for name in ["A", "B"] {
        let mut fragments: Vec<&str> = markers
            .iter()
            .filter(|m| m.project == name)
            .map(|m| m.fragment.as_str())
            .collect();
        fragments.sort_unstable();
        fragments.dedup();
        assert_eq!(fragments.len(), PER_PROJECT, "{name} did not run each fragment once");
    }
    markers.sort_by_key(|m| m.start_ns);
    let order: Vec<String> = markers.into_iter().map(|m| m.project).collect();
    (cluster, order)
}

fn expected_display(policy: &str) -> String {
    if policy == "fair" {
        "fair".to_string()
    } else {
        format!("priority {policy}")
    }
}

#[test]
fn fair_alternates_between_projects() {
    let (cluster, order) = run_two_projects("fair");
    let (mut a, mut b) = (0usize, 0usize);
    for (i, project) in order.iter().enumerate() {
        if a == PER_PROJECT || b == PER_PROJECT {
            break;
        }
        match project.as_str() {
            "A" => a += 1,
            _ => b += 1,
        }
        assert!(
            a.abs_diff(b) <= 2,
            "after {} starts, A started {a} and B {b}: not fair; start order {order:?}",
            i + 1
        );
    }
    assert_eq!(cluster.hz_ok(&["schedule"]).trim(), "fair");
    let policy: Policy = cluster.hz_json(&["schedule"]);
    assert_eq!(policy, Policy::Fair);
}

#[test]
fn priority_runs_the_chosen_project_first() {
    let (cluster, order) = run_two_projects("B");
    let last_b = order.iter().rposition(|p| p == "B").expect("B ran");
    let a_before = order[..last_b].iter().filter(|p| *p == "A").count();
    // Only when B has fewer pending fragments than free slots may A start alongside it.
    assert!(
        a_before < SLOTS as usize,
        "{a_before} of A's fragments started before B's last one: start order {order:?}"
    );
    assert_eq!(cluster.hz_ok(&["schedule"]).trim(), "priority B");
    let policy: Policy = cluster.hz_json(&["schedule"]);
    assert_eq!(policy, Policy::Priority { project: "B".into() });
}

#[test]
fn scheduling_an_unknown_project_is_refused() {
    let cluster = Cluster::start(&[]);
    let err = cluster.hz_fails(&["schedule", "nosuch"], 2);
    assert!(err.contains("'nosuch'"), "{err}");
    // The policy did not change.
    let policy: Policy = cluster.hz_json(&["schedule"]);
    assert_eq!(policy, Policy::Fair);
    let err = cluster.hz_fails(&["schedule", "bad/name"], 2);
    assert!(err.contains("bad/name"), "{err}");
}
