//! Limits: the files written for a request (pure), the v2 paths against a fake cgroup tree in
//! a temporary directory (files the test writes stand in for the kernel's), and the v1 paths
//! on this host's real hierarchies (as root): limits set, a setsid child killed through the
//! freezer, an OOM kill counted, everything removed.

use super::super::leaf::{Dir, v1_cpu_limits, v1_memory_limits, v1_oom_kills, v2_limits, v2_oom_kills};
use super::super::mounts::{cgroup_dir, cgroup1_mount, own_cgroup1};
use super::*;

fn asked(cpus: Option<u32>, memory_bytes: Option<u64>) -> Requests {
    Requests {
        cpus,
        memory_bytes,
        time_ms: None,
    }
}

#[test]
fn only_what_was_asked_for_is_limited() {
    assert!(
        v2_limits(&Requests::default()).is_empty(),
        "an unrequested CPU count does not throttle"
    );
    assert!(v1_memory_limits(&asked(Some(2), None)).is_empty());
    assert!(v1_cpu_limits(&asked(None, Some(1 << 20))).is_empty());
    let both = asked(Some(2), Some(512 << 20));
    assert_eq!(
        v2_limits(&both),
        vec![
            ("memory.max", "536870912".to_string()),
            ("memory.swap.max", "0".to_string()),
            ("cpu.max", "200000 100000".to_string()),
        ]
    );
    assert_eq!(
        v1_memory_limits(&both),
        vec![
            ("memory.limit_in_bytes", "536870912".to_string()),
            ("memory.memsw.limit_in_bytes", "536870912".to_string()),
        ]
    );
    assert_eq!(
        v1_cpu_limits(&both),
        vec![
            ("cpu.cfs_period_us", "100000".to_string()),
            ("cpu.cfs_quota_us", "200000".to_string()),
        ]
    );
}

#[test]
fn oom_kills_are_read_from_either_version() {
    assert_eq!(
        v2_oom_kills("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"),
        1
    );
    assert_eq!(v2_oom_kills("low 0\nhigh 0\n"), 0);
    assert_eq!(v1_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 3);
    // Before Linux 4.13 there is no oom_kill line: an OOM under way counts.
    assert_eq!(v1_oom_kills("oom_kill_disable 0\nunder_oom 1\n"), 1);
    assert_eq!(v1_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
}

#[test]
fn finds_v1_hierarchies_and_kinskis_own_cgroup_in_them() {
    assert_eq!(
        cgroup1_mount(HYBRID, "memory"),
        Some((PathBuf::from("/sys/fs/cgroup/memory"), "/".to_string()))
    );
    assert_eq!(cgroup1_mount(HYBRID, "freezer"), None);
    let comounted = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
    assert_eq!(
        cgroup1_mount(comounted, "cpu").map(|m| m.0),
        Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
    );
    let own = "9:name=systemd:/\n4:memory:/system.slice/kinski.service\n2:cpu,cpuacct:/\n0::/\n";
    assert_eq!(
        own_cgroup1(own, "memory").as_deref(),
        Some("/system.slice/kinski.service")
    );
    assert_eq!(own_cgroup1(own, "cpu").as_deref(), Some("/"));
    assert_eq!(own_cgroup1(own, "freezer"), None);
    let point = Path::new("/sys/fs/cgroup/memory");
    assert_eq!(
        cgroup_dir(point, "/", "/system.slice/kinski.service"),
        PathBuf::from("/sys/fs/cgroup/memory/system.slice/kinski.service")
    );
    // A container that mounted its own sub-tree sees it at the mount point.
    assert_eq!(
        cgroup_dir(point, "/lxc/c1", "/lxc/c1/app"),
        PathBuf::from("/sys/fs/cgroup/memory/app")
    );
}

/// A fake cgroup v2 mount: the files a kernel would show, written by the test.
fn fake_v2(mount: &Path, controllers: &str) {
    std::fs::write(mount.join("cgroup.controllers"), controllers).unwrap();
    std::fs::write(mount.join("cgroup.subtree_control"), "").unwrap();
}

#[test]
fn v2_enables_the_controllers_and_writes_the_limits_into_a_units_cgroup() {
    let mount = tempfile::tempdir().unwrap();
    fake_v2(mount.path(), "cpuset cpu io memory hugetlb pids rdma misc\n");
    let mountinfo = format!(
        "25 1 0:22 / {} rw shared:4 - cgroup2 cgroup2 rw\n",
        mount.path().display()
    );
    // The root the kernel would fill in when kinski makes it.
    let root_dir = mount.path().join("herzog-kinski-euclid-0");
    std::fs::create_dir(&root_dir).unwrap();
    fake_v2(&root_dir, "cpu memory pids\n");
    let root = Arc::new(Root::open_in(&mountinfo, "0::/\n", "herzog-kinski-euclid-0", true).expect("opened"));
    assert_eq!(root.support(), LimitSupport::Cgroup2);
    assert_eq!(root.kill, KillBy::Procs, "no cgroup.kill in the fake");
    for dir in [mount.path(), &root_dir] {
        let on = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
        assert_eq!(on, "+memory +cpu +pids", "{}", dir.display());
    }
    // The unit's cgroup as the kernel makes it: its files exist at mkdir (empty here: a
    // write does not truncate a plain file as a kernel's file takes it whole).
    let unit = root_dir.join("attempt-7");
    std::fs::create_dir(&unit).unwrap();
    for file in ["cgroup.procs", "memory.max", "memory.swap.max", "cpu.max"] {
        std::fs::write(unit.join(file), "").unwrap();
    }
    let leaf = Leaf::create(&root, "attempt-7", &asked(Some(1), Some(64 << 20))).expect("made");
    let read = |file: &str| std::fs::read_to_string(unit.join(file)).unwrap();
    assert_eq!(read("memory.max"), "67108864");
    assert_eq!(read("memory.swap.max"), "0");
    assert_eq!(read("cpu.max"), "100000 100000");
    assert_eq!(leaf.procs.len(), 1, "one cgroup.procs to enter");
    // What the kernel counts, read back as the attempt's usage.
    std::fs::write(unit.join("memory.peak"), "70123520\n").unwrap();
    std::fs::write(unit.join("memory.events"), "low 0\nhigh 0\nmax 40\noom 2\noom_kill 1\n").unwrap();
    assert_eq!(
        leaf.usage(),
        Usage {
            peak_bytes: Some(70_123_520),
            oom_kills: 1
        }
    );
    // A CPU count alone writes cpu.max only.
    let other = root_dir.join("attempt-8");
    std::fs::create_dir(&other).unwrap();
    for file in ["cgroup.procs", "memory.max", "cpu.max"] {
        std::fs::write(other.join(file), "").unwrap();
    }
    Leaf::create(&root, "attempt-8", &asked(Some(2), None)).expect("made");
    assert_eq!(std::fs::read_to_string(other.join("memory.max")).unwrap(), "");
    assert_eq!(std::fs::read_to_string(other.join("cpu.max")).unwrap(), "200000 100000");
}

#[test]
fn v2_without_the_controllers_tracks_but_does_not_limit() {
    let mount = tempfile::tempdir().unwrap();
    fake_v2(mount.path(), "");
    let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", mount.path().display());
    let root = Root::open_in(&mountinfo, "0::/\n", "herzog-kinski-euclid-0", true).expect("opened");
    assert_eq!(root.support(), LimitSupport::None);
    assert_eq!(
        std::fs::read_to_string(mount.path().join("cgroup.subtree_control")).unwrap(),
        ""
    );
}

/// This host's mountinfo without its cgroup2 mount: a legacy (v1 only) host, on the real
/// hierarchies.
fn v1_only() -> (String, String) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1: String = mountinfo
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    (v1, std::fs::read_to_string("/proc/self/cgroup").unwrap())
}

/// The cgroup `pid` is in, in the v1 hierarchy of `controller`.
fn cgroup_of(pid: i32, controller: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    own_cgroup1(&text, controller).unwrap_or_default()
}

#[test]
#[ignore = "needs root: cgroups"]
fn v1_limits_a_unit_kills_what_left_its_group_through_the_freezer_and_removes_it_as_root() {
    let (mountinfo, own) = v1_only();
    let state = tempfile::tempdir().unwrap();
    let name = root_name("v1test", state.path());
    let root = Arc::new(Root::open_in(&mountinfo, &own, &name, true).expect("the v1 hierarchies"));
    assert_eq!(root.kill, KillBy::Freezer);
    assert_eq!(root.support(), LimitSupport::Cgroup1);
    let tracking = Tracking::Cgroups(Arc::clone(&root));
    let tree = tracking
        .attempt(AttemptId(41), &asked(Some(1), Some(64 << 20)))
        .expect("made")
        .expect("a cgroup");
    let Kind::Cgroup(leaf) = &*tree.0 else {
        panic!("a cgroup")
    };
    assert_eq!(leaf.procs.len(), 3, "freezer, memory and cpu");
    let memory = leaf
        .memory
        .as_ref()
        .map(|d: &Dir| d.path.clone())
        .expect("a memory cgroup");
    let cpu = leaf.cpu.as_ref().map(|d: &Dir| d.path.clone()).expect("a cpu cgroup");
    let read = |path: &Path| std::fs::read_to_string(path).unwrap().trim().to_string();
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), (64u64 << 20).to_string());
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "100000");

    let dir = tempfile::tempdir().unwrap();
    let (leader, grandchild, escaped) = tree_of_three(dir.path(), &tree);
    for pid in [leader.id() as i32, grandchild, escaped] {
        for controller in ["freezer", "memory", "cpu"] {
            let mine = cgroup_of(pid, controller);
            assert!(
                mine.ends_with(&format!("/{name}/attempt-41")),
                "{pid} is in {controller}:{mine}"
            );
        }
    }
    leader_exits(leader);
    assert!(running(escaped), "the setsid child outlived its leader's group");
    let usage = tree.usage();
    assert!(usage.peak_bytes.is_some_and(|p| p > 0), "{usage:?}");
    assert_eq!(usage.oom_kills, 0);
    assert!(tree.kill().expect("killed") >= 1);
    assert!(!running(escaped) && !running(grandchild), "the freezer kill missed one");
    tree.remove().expect("removed");
    assert!(!memory.exists() && !cpu.exists() && !root.track.path.join("attempt-41").exists());

    // A unit without requests gets no memory or cpu cgroup; one left running by a killed
    // kinski is killed and removed by the next.
    let left = tracking
        .attempt(AttemptId(42), &Requests::default())
        .expect("made")
        .expect("a cgroup");
    let Kind::Cgroup(leaf) = &*left.0 else {
        panic!("a cgroup")
    };
    assert!(leaf.cpu.is_none() && leaf.memory.is_none());
    let other = tempfile::tempdir().unwrap();
    let (leader, grandchild, escaped) = tree_of_three(other.path(), &left);
    drop(left);
    let again = Arc::new(Root::open_in(&mountinfo, &own, &name, true).expect("opened again"));
    assert_eq!(Root::clean(&again), 1);
    assert!(!running(escaped) && !running(grandchild));
    leader_exits(leader);
    again.remove_self().expect("the roots are removed");
    assert!(!again.track.path.exists());
}

#[test]
#[ignore = "needs root: cgroups"]
fn v1_counts_an_oom_kill_and_the_peak_as_root() {
    let (mountinfo, own) = v1_only();
    let state = tempfile::tempdir().unwrap();
    let root = Arc::new(Root::open_in(&mountinfo, &own, &root_name("oomtest", state.path()), true).expect("v1"));
    let tracking = Tracking::Cgroups(Arc::clone(&root));
    let tree = tracking
        .attempt(AttemptId(1), &asked(None, Some(32 << 20)))
        .expect("made")
        .expect("a cgroup");
    let mut command = crate::exec::Exec::new("python3");
    command.args(["-c", "b = b'x' * (200 << 20)"]);
    tree.enter(&mut command);
    let pid = command.spawn().expect("python3 runs");
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{status:#x}"
    );
    let usage = tree.usage();
    assert!(usage.oom_kills >= 1, "{usage:?}");
    let peak = usage.peak_bytes.expect("a peak");
    assert!(peak > 16 << 20 && peak <= 32 << 20, "{usage:?}");
    tree.kill().expect("nothing left");
    tree.remove().expect("removed");
    root.remove_self().expect("the roots are removed");
}
