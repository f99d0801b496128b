//! Stopping kills an instance's whole tree, also a child that left its process group
//! (`setsid`): as root kinski puts each instance in a cgroup of its own and kills everything
//! in it once the instance's process is gone, before it may start again; a restarted kinski
//! kills what its predecessor left in its cgroups. Real daemons; these need root.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test service_trees -- --ignored
//! ```

use common::instances::InstanceState;
use tests::services::{LIMIT, cluster, running, services, status};
use tests::{Cluster, eventually, write_script};

/// The pids a `tree.sh` instance wrote: its grandchild in its group and its child that
/// called `setsid`, in the order they were written.
fn tree_pids(cluster: &Cluster, n: usize) -> Vec<i32> {
    let file = cluster.dir().join("tree.pids");
    eventually(&format!("{n} pids in {}", file.display()), LIMIT, || {
        let text = std::fs::read_to_string(&file).ok()?;
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() >= n).then_some(pids)
    })
}

/// The session a process is in (field 6 of /proc/<pid>/stat).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(3)?.parse().ok()
}

/// A service whose program forks a grandchild in its group and a child that leaves it
/// (`setsid`), each writing its pid to `tree.pids`.
fn tree_service(cluster: &Cluster) {
    let dir = cluster.dir().display().to_string();
    write_script(
        &cluster.dir().join("tree.sh"),
        &format!(
            "#!/bin/sh\n\
             (sleep 1000 & echo $! >> {dir}/tree.pids; wait) &\n\
             setsid sh -c 'echo $$ >> {dir}/tree.pids; exec sleep 1000' &\n\
             exec sleep 1000\n"
        ),
    );
    services(
        cluster,
        &format!(
            "[services.tree]\ncommand = \"{dir}/tree.sh\"\nstartsecs = 0\nstopwaitsecs = 1\nhosts = [\"euclid\"]\n"
        ),
    );
}

#[test]
#[ignore = "needs root: cgroups"]
fn stopping_and_restarting_kill_the_whole_tree_even_a_child_that_left_the_group_as_root() {
    let cluster = cluster();
    let log = cluster.worker("euclid").log();
    assert!(log.contains("tracked by a cgroup each"), "{log}");
    tree_service(&cluster);
    cluster.hz_ok(&["reload"]);
    let first = running(&cluster, &["tree:0"])["tree:0"];
    let pids = tree_pids(&cluster, 2);
    assert!(
        pids.iter().any(|p| session_of(*p) != session_of(first)),
        "one of {pids:?} left the leader's session"
    );
    let root = kinski::cgroup::root_of("euclid", &cluster.kinski_state("euclid")).expect("a cgroup v2 mount");
    let root = root.file_name().unwrap().to_string_lossy().into_owned();
    for pid in pids.iter().chain([&first]) {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(&format!("/{root}/instance-")), "{pid} is in {cgroup}");
    }

    // A restart: the new process starts only once the old one's whole tree is gone.
    cluster.hz_ok(&["restart", "tree"]);
    let second = eventually("tree:0 to run again", LIMIT, || {
        match status(&cluster)["tree:0"].state {
            InstanceState::Running { pid, .. } if pid != first => Some(pid),
            _ => None,
        }
    });
    for pid in pids.iter().chain([&first]) {
        assert!(!tests::running(*pid), "{pid} of the first run survived its restart");
    }
    let again = tree_pids(&cluster, 4);
    let after_restart = &again[2..];

    // A stop: the same.
    cluster.hz_ok(&["stop", "tree"]);
    eventually("tree:0 to stop", LIMIT, || {
        (status(&cluster)["tree:0"].state == InstanceState::Stopped).then_some(())
    });
    for pid in after_restart.iter().chain([&second]) {
        assert!(!tests::running(*pid), "{pid} survived the stop");
    }
    let leaves: Vec<String> = cgroups_of(&cluster, "euclid");
    assert!(
        leaves.is_empty(),
        "the stopped instance's cgroup is removed: {leaves:?}"
    );
}

#[test]
#[ignore = "needs root: cgroups"]
fn a_restarted_kinski_kills_what_its_predecessor_left_in_its_cgroups_as_root() {
    let mut cluster = cluster();
    tree_service(&cluster);
    cluster.hz_ok(&["reload"]);
    let first = running(&cluster, &["tree:0"])["tree:0"];
    let pids = tree_pids(&cluster, 2);

    // kinski crashes; its instance, and the child that left its group, run on meanwhile.
    cluster.kill_kinski("euclid");
    assert!(pids.iter().chain([&first]).all(|p| tests::running(*p)));
    cluster.restart_worker("euclid");
    let second = eventually("tree:0 to run again", LIMIT, || {
        match status(&cluster)["tree:0"].state {
            InstanceState::Running { pid, .. } if pid != first => Some(pid),
            _ => None,
        }
    });
    for pid in pids.iter().chain([&first]) {
        assert!(!tests::running(*pid), "{pid} of the crashed kinski's instance survived");
    }
    assert!(tests::running(second));
    assert_eq!(cgroups_of(&cluster, "euclid").len(), 1, "only the new run's cgroup");
}

/// The cgroups worker `name` of this cluster has now (under its root in the cgroup v2 mount).
fn cgroups_of(cluster: &Cluster, name: &str) -> Vec<String> {
    let root = kinski::cgroup::root_of(name, &cluster.kinski_state(name)).expect("a cgroup v2 mount");
    kinski::cgroup::children(&root)
}
