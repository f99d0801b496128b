//! The child's steps on real programs: what it runs, where, with what, in which group, with
//! which signals, and how each failure is reported.

use super::*;
use std::io::Read;

/// Runs `exec` with its stdout on a pipe; returns the pid, what it wrote and its exit code.
fn run(exec: &mut Exec) -> (libc::pid_t, String, i32) {
    let (mut read, write) = std::io::pipe().unwrap();
    exec.stdout(Some(write.into()));
    let pid = exec.spawn().expect("spawn");
    // Ours (the write end) must be gone for the read to end: the Exec holds it.
    exec.stdout(None);
    let mut out = String::new();
    read.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    (pid, out, libc::WEXITSTATUS(status))
}

#[test]
fn runs_the_program_with_its_arguments_environment_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut exec = Exec::new("sh");
    exec.args(["-c", "echo \"$0 $1 $HERZOG_TEST_VAR\"; pwd; exit 3", "zero", "one two"])
        .env("HERZOG_TEST_VAR", "set")
        .current_dir(dir.path());
    let (_, out, code) = run(&mut exec);
    let here = dir.path().canonicalize().unwrap();
    assert_eq!(out, format!("zero one two set\n{}\n", here.display()));
    assert_eq!(code, 3);
    // kinski's own environment is passed on beneath what was set.
    let mut exec = Exec::new("sh");
    exec.args(["-c", "echo \"$HOME\""]);
    assert_eq!(run(&mut exec).1.trim(), std::env::var("HOME").unwrap_or_default());
}

#[test]
fn a_name_is_looked_up_on_the_path_the_program_gets() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("herzog-exec-probe");
    std::fs::write(&script, "#!/bin/sh\necho found\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("/nonexistent:{}:/bin", dir.path().display());
    let mut exec = Exec::new("herzog-exec-probe");
    exec.env("PATH", &path);
    assert_eq!(run(&mut exec).1, "found\n");
    // Not on that PATH: not found, as std says it.
    let mut exec = Exec::new("herzog-exec-probe");
    exec.env("PATH", "/nonexistent:/bin");
    let err = exec.spawn().expect_err("not on the PATH");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    // There but not executable: permission denied, even with a later directory lacking it.
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut exec = Exec::new("herzog-exec-probe");
    exec.env("PATH", &path);
    let err = exec.spawn().expect_err("not executable");
    if !nix::unistd::geteuid().is_root() {
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    }
}

#[test]
fn a_missing_directory_fails_as_std_reports_it() {
    let mut exec = Exec::new("true");
    exec.current_dir("/nonexistent/herzog");
    let err = exec.spawn().expect_err("no such directory");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    let err = Exec::new("tr\0ue").spawn().expect_err("a NUL byte");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn it_leads_its_own_process_group_with_its_umask() {
    let mut exec = Exec::new("sh");
    exec.args(["-c", "umask"]).umask(0o027);
    assert_eq!(run(&mut exec).1, "0027\n");
    let mut exec = Exec::new("cat");
    exec.args(["/proc/self/stat"]);
    let (pid, stat, _) = run(&mut exec);
    // After the name: state, parent, process group.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    assert_eq!(fields[2], pid.to_string(), "its group is its pid: {stat}");
}

extern "C" fn on_usr1(_: libc::c_int) {}

#[test]
fn signals_start_at_their_defaults_and_unblocked() {
    // SAFETY: a handler that does nothing, for a signal nothing else in these tests uses; and
    // a blocked signal in this thread only.
    unsafe {
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
        let mut set = empty_sigset();
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut exec = Exec::new("cat");
    exec.args(["/proc/self/status"]);
    let (_, status, _) = run(&mut exec);
    let mask = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let bit = |signal: libc::c_int| 1u64 << (signal - 1);
    assert_eq!(mask("SigBlk:"), 0, "nothing blocked: {status}");
    assert_eq!(mask("SigIgn:") & bit(libc::SIGPIPE), 0, "SIGPIPE at its default");
    assert_eq!(mask("SigCgt:") & bit(libc::SIGUSR1), 0, "no handler of ours");
    // This thread's mask is as it was.
    // SAFETY: reads this thread's mask.
    unsafe {
        let mut now = empty_sigset();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
        assert_eq!(libc::sigismember(&now, libc::SIGUSR2), 1);
        assert_eq!(libc::sigismember(&now, libc::SIGUSR1), 0);
    }
}

#[test]
fn stdin_is_null_unless_given() {
    let mut exec = Exec::new("cat");
    assert_eq!(run(&mut exec).1, "");
    let (read, mut write) = std::io::pipe().unwrap();
    std::io::Write::write_all(&mut write, b"piped in").unwrap();
    drop(write);
    let mut exec = Exec::new("cat");
    exec.stdin(Some(read.into()));
    assert_eq!(run(&mut exec).1, "piped in");
}

/// The v2 line of /proc/self/cgroup as `cat` sees it, started into `tree`.
fn cgroup_of_child(tree: &crate::cgroup::Tree) -> String {
    let mut exec = Exec::new("cat");
    exec.args(["/proc/self/cgroup"]);
    tree.enter(&mut exec);
    let (_, out, code) = run(&mut exec);
    assert_eq!(code, 0);
    out.lines()
        .find(|l| l.starts_with("0::"))
        .expect("a v2 line")
        .to_string()
}

#[test]
#[ignore = "needs root: cgroups"]
fn a_child_is_born_in_its_cgroup_or_moves_itself_in_as_root() {
    let state = tempfile::tempdir().unwrap();
    let (tracking, _) = crate::cgroup::Tracking::start("exec-test", state.path());
    let root = crate::cgroup::root_of("exec-test", state.path()).expect("a cgroup root");
    let tree = tracking
        .attempt(common::AttemptId(7), &common::requests::Requests::default())
        .expect("made")
        .expect("a cgroup");
    let line = cgroup_of_child(&tree);
    let name = root.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        line.contains(&format!("/{name}/attempts-")),
        "{line} under {}",
        root.display()
    );
    // This kernel has clone3 with CLONE_INTO_CGROUP: it was used, not given up.
    assert!(clone3::WORKS.load(Ordering::SeqCst), "clone3 was refused");
    // Where the kernel refuses it, the child moves itself in.
    clone3::WORKS.store(false, Ordering::SeqCst);
    let moved = cgroup_of_child(&tree);
    clone3::WORKS.store(true, Ordering::SeqCst);
    assert_eq!(moved, line);
    tree.kill().expect("nothing left");
    tree.remove().expect("removed");
    tracking.finish();
}

#[test]
#[ignore = "needs root: cgroups"]
fn a_child_born_in_a_cgroup_that_was_killed_before_lives_as_root() {
    // Linux 6.18 kills a child cloned into a cgroup whose cgroup.kill was ever written
    // (its kill count differs from the parent's): such a cgroup is never given again.
    let state = tempfile::tempdir().unwrap();
    let (tracking, _) = crate::cgroup::Tracking::start("exec-killed", state.path());
    let plain = common::requests::Requests::default();
    let first = tracking
        .attempt(common::AttemptId(1), &plain)
        .expect("made")
        .expect("a cgroup");
    let mut sleeper = Exec::new("sleep");
    sleeper.args(["30"]);
    first.enter(&mut sleeper);
    let pid = sleeper.spawn().expect("sleep runs");
    assert_eq!(first.kill().expect("killed"), 1);
    // SAFETY: our own child, killed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    first.remove().expect("removed or kept");
    let second = tracking
        .attempt(common::AttemptId(2), &plain)
        .expect("made")
        .expect("a cgroup");
    let mut alive = Exec::new("sh");
    alive.args(["-c", "echo alive"]);
    second.enter(&mut alive);
    let (_, out, code) = run(&mut alive);
    assert_eq!((out.as_str(), code), ("alive\n", 0));
    second.kill().expect("empty");
    second.remove().expect("removed or kept");
    tracking.finish();
}

#[test]
fn a_program_still_open_for_writing_is_tried_again_until_it_is_closed() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fresh.sh");
    let mut writer = std::fs::File::create(&script).unwrap();
    writer.write_all(b"#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Closed 50 ms from now, as a forked process's copy of the writer's descriptor is at its
    // exec: the spawn waits for it instead of failing with "Text file busy".
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(writer);
    });
    let mut exec = Exec::new(&script);
    let (_, out, code) = run(&mut exec);
    closer.join().unwrap();
    assert_eq!((out.as_str(), code), ("ran\n", 0));
}
