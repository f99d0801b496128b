//! `hz remove` on a running project: its programs are stopped (the stop signal first, within
//! the grace), nothing more of it runs, and herzog forgets it.

use common::wire::{ActiveAttempt, ProjectProgress};
use std::time::Duration;
use tests::{Cluster, alive, eventually};

#[test]
fn removing_a_running_project_stops_its_programs() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    cluster.inputs("long", 4);
    let program = cluster.marker_program();
    // The marker program records its pid, then `exec sleep 30` keeps that pid. A grace longer
    // than the test's wait below means only the stop signal (SIGTERM) can end it in time.
    let added = cluster.hz_ok(&["action", "long", &program, "--env", "SLEEP=30", "--grace", "60s"]);
    assert_eq!(added, "long\n");

    // 2 slots and a queue of 2: all 4 are dispatched, 2 run and 2 wait on the worker.
    let running = eventually(
        "hz active to show 4 dispatched attempts",
        Duration::from_secs(10),
        || {
            let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
            (active.len() == 4).then_some(active)
        },
    );
    assert!(
        running.iter().all(|a| a.project == "long" && a.worker == "euclid"),
        "{running:?}"
    );
    let markers = eventually("both programs to record their pids", Duration::from_secs(10), || {
        let markers = cluster.markers();
        (markers.len() == 2).then_some(markers)
    });
    let kinski = cluster.worker("euclid").pid();
    for m in &markers {
        assert_eq!(m.ppid, kinski, "{m:?} was not started by the worker");
        assert!(alive(m.pid), "{m:?} is not running before the remove");
        assert!(
            running
                .iter()
                .any(|a| a.fragment == m.fragment && a.attempt.0 == m.attempt),
            "{m:?} is not an attempt hz active showed: {running:?}"
        );
    }

    cluster.hz_ok(&["remove", "long"]);

    for m in &markers {
        eventually(
            &format!("pid {} (fragment {}) to be gone", m.pid, m.fragment),
            Duration::from_secs(15),
            || (!alive(m.pid)).then_some(()),
        );
    }
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert!(list.is_empty(), "{list:?}");
    cluster.hz_fails(&["progress", "long"], 2);
    let active: Vec<ActiveAttempt> = eventually("hz active to be empty", Duration::from_secs(10), || {
        let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
        active.is_empty().then_some(active)
    });
    assert!(active.is_empty());

    // A barrier: a later project runs on the freed slots and finishes. Had the removed
    // project's two pending fragments been scheduled, they would have started by now.
    cluster.inputs("after", 1);
    cluster.hz_ok(&["action", "after", &program]);
    cluster.hz_ok(&["progress", "after", "--watch"]);
    let markers = cluster.markers();
    let long = markers.iter().filter(|m| m.project == "long").count();
    assert_eq!(long, 2, "the removed project kept running: {markers:?}");
    assert_eq!(markers.iter().filter(|m| m.project == "after").count(), 1);
}
