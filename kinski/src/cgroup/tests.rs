//! The pure parts (names, mountinfo, cgroup.events, the tree of parents) on their own, and
//! both ways of tracking on real processes: a grandchild in the leader's group and a child
//! that called `setsid`, killed after the leader is gone.

use super::mounts::populated;
use super::walk::descendants;
use super::*;
use crate::leftovers::stat;
use std::collections::BTreeSet;
use std::time::Instant;

mod limits;

/// This machine's mountinfo: cgroup v1 controllers beside an empty v2 tree (a hybrid host).
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

#[test]
fn finds_the_cgroup2_mount_in_mountinfo() {
    assert_eq!(cgroup2_mount(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    let unified =
        "25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(cgroup2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
    // Optional fields (`shared:4`) come before the separator; a mount point may hold escapes.
    let spaced = "30 1 0:40 / /mnt/my\\040cgroups rw shared:9 master:2 - cgroup2 none rw\n";
    assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cgroups")));
    // Only v1, or a path that merely says cgroup2: none.
    let v1 = "32 31 0:29 / /sys/fs/cgroup/cgroup2 rw - cgroup cgroup rw,cpu\n";
    assert_eq!(cgroup2_mount(v1), None);
    assert_eq!(cgroup2_mount(""), None);
}

#[test]
fn two_kinskis_never_share_a_root_and_a_restarted_one_finds_its_own() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let name = root_name("euclid", a.path());
    assert!(name.starts_with("herzog-kinski-euclid-"), "{name}");
    assert_eq!(name.len(), "herzog-kinski-euclid-".len() + 16);
    assert_eq!(name, root_name("euclid", a.path()), "the same kinski again");
    assert_ne!(name, root_name("euclid", b.path()), "another cluster's euclid");
    assert_ne!(name, root_name("newton", a.path()));
    // The same directory by another spelling is the same kinski.
    let dotted = a.path().join(".");
    assert_eq!(name, root_name("euclid", &dotted));
    // FNV-1a's published values: the hash must not change between builds.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn a_units_cgroup_is_named_after_its_run_and_instance() {
    let unit = |run, service: &str, host: Option<&str>, index| Unit::Instance {
        run: RunId(run),
        instance: InstanceId {
            service: service.into(),
            host: host.map(Into::into),
            index,
        },
    };
    assert_eq!(unit(17, "web", None, 0).name(), "instance-17-web_0");
    assert_eq!(
        unit(18, "agent", Some("euclid"), 2).name(),
        "instance-18-agent_euclid_2"
    );
}

#[test]
fn reads_whether_a_cgroup_is_populated() {
    assert_eq!(populated("populated 1\nfrozen 0\n"), Some(true));
    assert_eq!(populated("populated 0\nfrozen 0\n"), Some(false));
    assert_eq!(populated("frozen 0\n"), None);
}

#[test]
fn descendants_follow_parent_pids_from_the_roots_only() {
    // 1 -> 10 -> 11 -> 12, 10 -> 13; 20 (another tree) -> 21.
    let parents = [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (21, 20)];
    assert_eq!(descendants(&parents, [10]), BTreeSet::from([10, 11, 12, 13]));
    assert_eq!(descendants(&parents, [11, 21]), BTreeSet::from([11, 12, 21]));
    assert_eq!(descendants(&parents, [99]), BTreeSet::from([99]));
}

fn web0() -> InstanceId {
    InstanceId {
        service: "web".into(),
        host: None,
        index: 0,
    }
}

/// A leader (`sh`, in a group of its own) with a grandchild in its group and a child that
/// called `setsid`; each writes its pid into `dir`. The leader waits for its stdin to close.
/// Returns the leader and the two pids.
fn tree_of_three(dir: &Path, tree: &Tree) -> (Leader, i32, i32) {
    // The directory is an argument ("$1"), never part of the script's text.
    let script = "(sleep 1000 & echo $! > \"$1\"/grandchild; wait) & \
                  setsid sh -c 'echo $$ > \"$1\"/escaped; exec sleep 1000' sh \"$1\" & \
                  read _";
    let (read, write) = std::io::pipe().unwrap();
    let mut command = crate::exec::Exec::new("sh");
    command
        .args([
            std::ffi::OsStr::new("-c"),
            script.as_ref(),
            "sh".as_ref(),
            dir.as_os_str(),
        ])
        .stdin(Some(read.into()));
    tree.enter(&mut command);
    let pid = command.spawn().expect("sh runs");
    drop(command);
    let leader = Leader {
        pid,
        stdin: Some(write),
    };
    tree.started(pid, stat(pid).expect("the leader runs").starttime);
    let read = |name: &str| -> i32 {
        let path = dir.join(name);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && text.ends_with('\n')
            {
                return text.trim().parse().expect("a pid");
            }
            assert!(Instant::now() < deadline, "{} was not written", path.display());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let (grandchild, escaped) = (read("grandchild"), read("escaped"));
    let session = |pid: i32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        text[text.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string()
    };
    assert_ne!(session(escaped), session(pid), "the child left the leader's session");
    (leader, grandchild, escaped)
}

/// A unit's leader, started as kinski starts them, reading its stdin.
struct Leader {
    pid: i32,
    stdin: Option<std::io::PipeWriter>,
}

impl Leader {
    fn id(&self) -> u32 {
        self.pid as u32
    }
}

/// The leader exits (as after its stop signal) and is reaped: what it left is orphaned.
fn leader_exits(mut leader: Leader) {
    drop(leader.stdin.take());
    // SAFETY: plain syscalls, on the group this test made and its leader, our child.
    unsafe {
        libc::killpg(leader.pid, libc::SIGKILL);
        assert_eq!(libc::waitpid(leader.pid, std::ptr::null_mut(), 0), leader.pid, "reaped");
    }
}

/// Running: there, and neither a zombie nor dead.
fn running(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}

#[test]
fn walking_proc_finds_a_child_that_left_the_group_and_kills_it_after_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tracking::Walk { why: "a test".into() }.tree(
        &Unit::Instance {
            run: RunId(1),
            instance: web0(),
        },
        &Requests::default(),
    );
    assert!(tree.walks());
    let (leader, grandchild, escaped) = tree_of_three(dir.path(), &tree);
    // What kinski does before the stop signal: the tree is seen while the leader lives.
    tree.remember();
    leader_exits(leader);
    assert!(running(escaped), "the setsid child outlived its leader's group");
    let killed = tree.kill().expect("killed");
    assert!(!running(escaped), "the setsid child survived");
    assert!(!running(grandchild), "the grandchild survived");
    assert!(killed >= 1, "killed {killed}");
    assert_eq!(tree.kill().expect("nothing left"), 0);
}

#[test]
#[ignore = "needs root: cgroups"]
fn a_cgroup_holds_what_left_the_group_is_emptied_removed_and_a_predecessors_killed_as_root() {
    let state = tempfile::tempdir().unwrap();
    let (tracking, leftovers) = Tracking::start("euclid", state.path());
    let Tracking::Cgroups(root) = &tracking else {
        panic!("no writable cgroup v2 as root: {tracking}");
    };
    assert_eq!(leftovers, 0);
    let unit = |run| Unit::Instance {
        run: RunId(run),
        instance: web0(),
    };
    let tree = tracking.tree(&unit(1), &Requests::default());
    assert!(!tree.walks());
    let dir = tempfile::tempdir().unwrap();
    let (leader, grandchild, escaped) = tree_of_three(dir.path(), &tree);
    let cgroup = format!(
        "0::/{}/instance-1-web_0",
        root.track.path.file_name().unwrap().to_string_lossy()
    );
    for pid in [leader.id() as i32, grandchild, escaped] {
        let mine = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            mine.lines().any(|l| l.ends_with(&cgroup)),
            "{pid} is in {mine}, not {cgroup}"
        );
    }
    leader_exits(leader);
    assert!(running(escaped));
    assert!(tree.kill().expect("killed") >= 1);
    assert!(!running(escaped) && !running(grandchild));
    tree.remove().expect("removed");
    assert!(!root.track.path.join("instance-1-web_0").exists());

    // A kinski killed with its unit running: the next one kills and removes what it left.
    let other = tempfile::tempdir().unwrap();
    let left = tracking.tree(&unit(2), &Requests::default());
    let (leader, grandchild, escaped) = tree_of_three(other.path(), &left);
    drop(left);
    let (again, leftovers) = Tracking::start("euclid", state.path());
    assert_eq!(leftovers, 1, "{again}");
    assert!(!running(escaped) && !running(grandchild));
    leader_exits(leader);
    assert!(!root.track.path.join("instance-2-web_0").exists());
    again.finish();
    assert!(!root.track.path.exists(), "the root is removed at a clean exit");
}

#[test]
#[ignore = "needs root: cgroups"]
fn an_empty_attempt_cgroup_is_kept_for_the_next_attempt_without_requests_as_root() {
    let state = tempfile::tempdir().unwrap();
    let (tracking, _) = Tracking::start("pooltest", state.path());
    let root = root_of("pooltest", state.path()).expect("a root");
    let plain = Requests::default();
    let first = tracking.attempt(AttemptId(1), &plain).expect("made").expect("a cgroup");
    let second = tracking.attempt(AttemptId(2), &plain).expect("made").expect("a cgroup");
    assert_eq!(children(&root).len(), 2, "two at once, two cgroups");
    // One ends (nothing in it): it is kept, and the next attempt gets it.
    first.kill().expect("empty");
    first.remove().expect("kept");
    assert_eq!(children(&root).len(), 2, "kept, not removed");
    let third = tracking.attempt(AttemptId(3), &plain).expect("made").expect("a cgroup");
    assert_eq!(children(&root).len(), 2, "the kept one reused");
    // A memory request gets a cgroup of its own, never a kept one.
    let limited = Requests {
        memory_bytes: Some(64 << 20),
        ..Requests::default()
    };
    let fourth = tracking
        .attempt(AttemptId(4), &limited)
        .expect("made")
        .expect("a cgroup");
    assert!(
        children(&root).contains(&"attempt-4".to_string()),
        "{:?}",
        children(&root)
    );
    for tree in [second, third, fourth] {
        tree.kill().expect("empty");
        tree.remove().expect("kept or removed");
    }
    tracking.finish();
    assert!(!root.exists(), "kept cgroups and the root are removed at the end");
}
