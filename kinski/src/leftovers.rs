//! What a previous kinski left running: finding its attempts' process groups again, and
//! killing only those that are provably its own.

use crate::journal::{InstanceStarted, Started};

/// What kinski needs of /proc/<pid>/stat, here and to walk a tree of processes
/// ([`crate::cgroup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// 'Z' for a zombie, 'T' stopped.
    pub(crate) state: char,
    pub(crate) ppid: i32,
    pub(crate) pgid: i32,
    /// Clock ticks since boot (field 22): with the pid, a process's identity.
    pub(crate) starttime: u64,
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    let starttime = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        pgid,
        starttime,
    })
}

/// The start time of a process (field 22 of /proc/<pid>/stat), if it exists.
pub(crate) fn process_starttime(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.starttime)
}

/// True if the environment `pid` started with holds `wanted` (`NAME=value`) as kinski set it.
fn carries(pid: i32, wanted: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()))
}

/// Kills what a previous kinski left running. Adopting is not possible: they are no longer
/// kinski's children, so their exit status and resource usage cannot be collected, and a
/// result without them cannot be trusted. herzog requeues them when kinski registers
/// without them.
///
/// A group is killed only when it is provably the attempt's. The kernel gives no new process
/// the number of a group while any member of it lives (leader or not), so:
/// - the leader alive with the recorded start time: it is ours;
/// - another process under the leader's pid: the number was free, so our group had ended
///   entirely, and any group by that number now is someone else's;
/// - no process under the leader's pid (it exited while kinski was down): the group lives on
///   in its members if any live process in it carries the attempt's `HERZOG_ATTEMPT` (kinski
///   sets it on every program, children inherit it) and started no earlier than the leader.
///   An unrelated group that took the number after ours ended has no such process, unless
///   one of our own program's descendants made it (and it is fair game).
///
/// A group whose leader is gone and whose every member dropped that variable (or cannot be
/// read) is left running. Between the check and the kill the last member could exit and the
/// number be taken again: that needs the whole pid space to cycle in microseconds.
pub(crate) fn kill_leftovers(running: &[Started]) -> usize {
    kill_groups(
        running
            .iter()
            .map(|s| (s.pgid, s.starttime, format!("HERZOG_ATTEMPT={}", s.attempt))),
    )
}

/// [`kill_leftovers`] for service instances: the same rule, their marker `HERZOG_RUN`.
pub(crate) fn kill_instance_leftovers(instances: &[InstanceStarted]) -> usize {
    kill_groups(
        instances
            .iter()
            .map(|i| (i.pgid, i.starttime, format!("HERZOG_RUN={}", i.run))),
    )
}

/// Kills each group `(pgid, leader's start time, NAME=value its programs carry)` that is
/// provably the one recorded (see [`kill_leftovers`]).
fn kill_groups(groups: impl Iterator<Item = (i32, u64, String)>) -> usize {
    // Read once, and only if some leader is gone.
    let mut processes: Option<Vec<(i32, Stat)>> = None;
    let mut killed = 0;
    for (pgid, starttime, marker) in groups {
        let ours = match stat(pgid) {
            Some(leader) => leader.starttime == starttime,
            None => processes
                .get_or_insert_with(all_processes)
                .iter()
                .any(|(pid, p)| p.pgid == pgid && p.state != 'Z' && p.starttime >= starttime && carries(*pid, &marker)),
        };
        // SAFETY: plain syscall, on a group checked above to be the recorded one.
        if ours && unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

/// Every process in /proc with its stat.
pub(crate) fn all_processes() -> Vec<(i32, Stat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use std::io::BufRead;

    /// A process group like an attempt's: a leader (`sh`) with `HERZOG_ATTEMPT=attempt` that
    /// starts a member in its group and waits for its stdin to close, so the test decides
    /// when the leader exits. Returns the leader and its member's pid. The member is a
    /// subshell that never calls exec: while a process execs, its environment reads empty.
    fn group_with_member(attempt: i64) -> (std::process::Child, i32) {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut leader = Command::new("sh")
            .args(["-c", "while :; do sleep 1; done >/dev/null 2>&1 & echo $!; read _"])
            .env("HERZOG_ATTEMPT", attempt.to_string())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut line = String::new();
        std::io::BufReader::new(leader.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the member's pid");
        (leader, line.trim().parse().expect("a pid"))
    }

    /// The journal record of a running leader.
    fn started_record(attempt: i64, leader: &std::process::Child) -> Started {
        let pgid = leader.id() as i32;
        Started {
            attempt: common::AttemptId(attempt),
            pgid,
            starttime: process_starttime(pgid).expect("the leader runs"),
        }
    }

    /// Lets the leader exit (its stdin closes) and reaps it, as init would once its kinski
    /// is gone: its pid no longer exists, its group lives on in the member.
    fn leader_exits(mut leader: std::process::Child) {
        drop(leader.stdin.take());
        leader.wait().expect("reaped");
    }

    /// A pidfd for `pid`, to wait for its exit (any process, not only a child).
    fn pidfd(pid: i32) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; on success the result is a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(fd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
        // SAFETY: just opened, owned by nobody else.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
    }

    /// True if the process of `pidfd` exits within `limit` (a pidfd polls readable then).
    fn exits_within(pidfd: &std::os::fd::OwnedFd, limit: std::time::Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut fds = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fds, 1, limit.as_millis() as i32) };
        n == 1
    }

    /// Running, not a zombie.
    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().and_then(|rest| rest.chars().next()))
            .is_some_and(|state| state != 'Z' && state != 'X')
    }

    #[test]
    fn members_of_a_group_whose_leader_exited_while_kinski_was_down_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (leader, member) = group_with_member(11);
        let record = started_record(11, &leader);
        {
            // kinski journals the start, then crashes: nothing is stopped.
            let (mut j, _) = Journal::open(dir.path()).unwrap();
            j.started(record.clone()).unwrap();
        }
        let member_fd = pidfd(member);
        leader_exits(leader);
        assert!(running(member), "the member outlived its leader");
        // The next kinski recovers the journal and kills what its predecessor left.
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.running, [record]);
        let killed = kill_leftovers(&rec.running);
        let gone = exits_within(&member_fd, std::time::Duration::from_secs(10));
        if !gone {
            // SAFETY: plain syscall, on the process this test made.
            unsafe { libc::kill(member, libc::SIGKILL) };
        }
        assert!(
            gone,
            "the member of attempt 11's group survived recovery (killed {killed} groups)"
        );
        assert_eq!(killed, 1);
    }

    /// Runs [`reused_group_number_in_a_pid_namespace`] as pid 1 of a new user and PID
    /// namespace, where the next pid can be chosen (`ns_last_pid`), so a new group can be given
    /// the number of one that ended: the one way to meet an unrelated group with a recorded pgid.
    #[test]
    fn an_unrelated_group_with_a_reused_number_is_not_killed() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--pid", "--fork", "--mount-proc"])
            .arg(exe)
            .args([
                "--exact",
                "leftovers::tests::reused_group_number_in_a_pid_namespace",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .expect("failed to run unshare (util-linux)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{}\n{text}",
            out.status
        );
    }

    #[test]
    #[ignore = "run in a PID namespace of its own by an_unrelated_group_with_a_reused_number_is_not_killed"]
    fn reused_group_number_in_a_pid_namespace() {
        assert_eq!(std::process::id(), 1, "must run as pid 1 of a new PID namespace");
        // Attempt 7's group: its leader, alone, ends while kinski is down; nothing of it is left.
        let mut ours = {
            use std::os::unix::process::CommandExt;
            std::process::Command::new("sh")
                .args(["-c", "read _"])
                .env("HERZOG_ATTEMPT", "7")
                .process_group(0)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("sh runs")
        };
        let recorded = started_record(7, &ours);
        drop(ours.stdin.take());
        ours.wait().expect("reaped");
        // The next process gets attempt 7's number, and makes a group of its own with a member:
        // another program (here attempt 8's), unrelated to attempt 7.
        // Start times count clock ticks: a process started in the same tick as attempt 7's
        // leader would pass for it. Outside a test no pid comes round again that fast.
        // SAFETY: sysconf has no preconditions.
        let tick = 1000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        std::thread::sleep(std::time::Duration::from_millis(2 * tick));
        std::fs::write("/proc/sys/kernel/ns_last_pid", (recorded.pgid - 1).to_string()).expect("ns_last_pid");
        let (other, member) = group_with_member(8);
        assert_eq!(other.id() as i32, recorded.pgid, "the number was not reused");
        let other_record = started_record(8, &other);
        // Its leader runs: a different start time.
        assert_eq!(kill_leftovers(std::slice::from_ref(&recorded)), 0);
        assert!(running(member));
        // Its leader is gone too: the group is a member alone, as attempt 7's would be.
        leader_exits(other);
        assert_eq!(kill_leftovers(std::slice::from_ref(&recorded)), 0);
        assert!(running(member), "an unrelated group was killed for attempt 7");
        // The same group is killed for the attempt it belongs to.
        let member_fd = pidfd(member);
        assert_eq!(kill_leftovers(&[other_record]), 1);
        assert!(exits_within(&member_fd, std::time::Duration::from_secs(10)));
    }

    #[test]
    fn reads_this_process_start_time() {
        let me = std::process::id() as i32;
        assert!(process_starttime(me).is_some());
        assert_eq!(process_starttime(me), process_starttime(me));
        assert_eq!(process_starttime(i32::MAX), None);
    }
}
