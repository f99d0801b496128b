//! herzog keeps its state in SQLite: restarted on the same state directory it still knows the
//! projects, their fragments and the policy, and attempts that ran on through the restart are
//! taken back, not run again.

use common::wire::{FragmentInfo, FragmentStateKind, Policy, ProjectProgress};
use std::time::Duration;
use tests::{Cluster, eventually};

#[test]
fn a_restarted_herzog_keeps_its_state_and_the_running_attempts() {
    let mut cluster = Cluster::start(&[("euclid", 2)]);
    let program = cluster.marker_program();

    // A finished project and a policy, before the restart.
    cluster.inputs("done", 4);
    cluster.hz_ok(&["action", "done", &program]);
    cluster.hz_ok(&["progress", "done", "--watch"]);
    assert_eq!(cluster.hz_ok(&["schedule", "done"]).trim(), "priority done");
    let done_before: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "done"]);

    // A project whose two programs run through the restart.
    cluster.inputs("through", 2);
    cluster.hz_ok(&["action", "through", &program, "--env", "SLEEP=2"]);
    let started = eventually("both programs of 'through' to start", Duration::from_secs(10), || {
        let m: Vec<_> = cluster
            .markers()
            .into_iter()
            .filter(|m| m.project == "through")
            .collect();
        (m.len() == 2).then_some(m)
    });

    cluster.restart_herzog();
    assert!(
        started.iter().all(|m| tests::alive(m.pid)),
        "the restart stopped a program: {started:?}"
    );

    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["done", "through"]);
    assert_eq!(list[0].succeeded, 4);
    let done_after: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "done"]);
    assert_eq!(done_after, done_before);
    let policy: Policy = cluster.hz_json(&["schedule"]);
    assert_eq!(policy, Policy::Priority { project: "done".into() });

    cluster.hz_ok(&["progress", "through", "--watch"]);
    let fragments: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "through"]);
    for f in &fragments {
        assert_eq!(f.state, FragmentStateKind::Succeeded, "{f:?}");
        assert_eq!(f.attempts, 1, "{f:?}");
        let m = started
            .iter()
            .find(|m| m.fragment == f.name)
            .unwrap_or_else(|| panic!("{f:?} did not run before the restart"));
        assert_eq!(f.attempt.map(|a| a.0), Some(m.attempt), "{f:?}");
    }
    let runs = cluster.markers().iter().filter(|m| m.project == "through").count();
    assert_eq!(runs, 2, "a fragment ran again after the restart");
}
