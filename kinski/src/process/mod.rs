//! Runs one attempt's program as its own process group and collects how it ended, its CPU time
//! and its peak RSS.
//!
//! tokio's `Child` only yields an `ExitStatus`, so the program is spawned with [`Exec`],
//! a pidfd tells the runtime when the leader has exited, and `wait4` on that one pid reaps it
//! together with its `rusage`. Nothing else in kinski may reap these pids (no `tokio::process`
//! for them, no `waitpid(-1)`, never SIGCHLD set to `SIG_IGN`): the pid being ours until we reap
//! it is what makes signalling its group safe.
//!
//! The group is the unit of cleanup: when the leader exits, or when the attempt is stopped,
//! every process still in the group is killed. Where kinski has cgroups, the attempt also has
//! one ([`crate::cgroup`]), which the child enters before it execs: once the leader is reaped
//! everything left in it is killed too, so a descendant that left the group (`setsid`,
//! `setpgid`) dies with its attempt; the cgroup holds it to its requested memory and CPUs and
//! counts its peak memory and OOM kills. A time limit is kept here, on the monotonic clock
//! from the spawn: the stop signal at the limit, SIGKILL after the grace.
//! Children deliberately get no `PR_SET_PDEATHSIG`, so attempts outlive a kinski restart.
//!
//! stdout and stderr are pipes that kinski copies into the attempt's log files ([`crate::output`]:
//! created at the first byte through a directory descriptor, written on blocking threads,
//! capped). A stream that stays empty leaves no file. The copying ends when the leader has
//! exited and the pipe is drained; output a descendant that escaped the group writes later is
//! dropped. While kinski is down nothing reads the pipes, so a program that writes then gets
//! SIGPIPE (a restarted kinski kills what its predecessor left running anyway).
//!
//! Spawning does blocking work (the directories, the fork): [`Process::spawn_as`] is called on
//! a blocking thread, never on the runtime.

mod group;
mod outputs;
mod spawn_error;

pub use group::Stopper;
use group::{Group, Reaped, kill_and_reap, pidfd_open};
use outputs::{LogDir, attempt_outputs, give};
pub(crate) use outputs::{ensure_output_dir, pipe};
pub use spawn_error::SpawnError;
use spawn_error::start_error;

use crate::cgroup::{CgroupError, Tree};
use crate::exec::Exec;
use crate::interactive::{self, Connection};
use crate::output::{Log, Output};
use crate::taps::Taps;
use common::AttemptId;
use common::dirfd::{DIR_MODE, DirFd};
use common::requests::LimitHit;
use common::wire::{Completion, Exit, StartAttempt};
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long a program runs before its output pipes are watched (see [`Process::wait`]).
const WATCH_PIPES_AFTER: Duration = Duration::from_millis(10);

/// How often to look at the leader when the pidfd cannot be registered with the runtime.
const FALLBACK_POLL: Duration = Duration::from_millis(20);

/// One running attempt's process group.
#[derive(Debug)]
pub struct Process {
    group: Arc<Group>,
    started: Instant,
    /// The read ends of stdout and stderr (one when both go to the same file).
    outputs: Vec<Output>,
    /// A job's stdin and terminal, if it has them.
    connection: Connection,
    /// Its cgroup, where kinski has them.
    tree: Option<Tree>,
    /// Its time limit and stop grace.
    time_limit: Option<(Duration, Duration)>,
}

/// How an attempt's program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub exit: Exit,
    pub wall_ms: u64,
    /// User plus system CPU time of the program and the descendants it waited for.
    pub cpu_ms: u64,
    /// The largest resident set of the program or of any descendant it waited for; 0 when
    /// not known (see [`programs_peak_rss_kb`]).
    pub peak_rss_kb: u64,
    /// The limit that ended it, if one did.
    pub limit: Option<LimitHit>,
    /// The most memory its cgroup held at once, where one counted it.
    pub peak_memory_bytes: Option<u64>,
}

impl Process {
    /// Creates the output directory (once per directory), and starts `argv` in a new process
    /// group in `cwd`, with kinski's environment plus `start.env` plus the `HERZOG_*` variables,
    /// stdin from /dev/null, and stdout and stderr into pipes that [`Process::wait`] copies to
    /// the log files. Blocking: call it on a blocking thread.
    pub fn spawn(start: &StartAttempt) -> Result<Process, SpawnError> {
        Self::spawn_as(start, None)
    }

    /// Like [`Process::spawn`], running the program as `run_as` when given (kinski is root).
    /// The output directory is handed to that user; the log files are written by kinski, so
    /// the user needs no access to the results folder.
    pub fn spawn_as(start: &StartAttempt, run_as: Option<&crate::user::RunAs>) -> Result<Process, SpawnError> {
        Self::spawn_tapped(start, run_as, &Taps::default(), None)
    }

    /// Like [`Process::spawn_as`], followers reading the logs as they are written through
    /// `taps` (`hz logs -f`), in the cgroup `tree` if given.
    pub(crate) fn spawn_tapped(
        start: &StartAttempt,
        run_as: Option<&crate::user::RunAs>,
        taps: &Taps,
        tree: Option<Tree>,
    ) -> Result<Process, SpawnError> {
        let (program, args) = start.argv.split_first().ok_or(SpawnError::EmptyArgv)?;
        // A staged attempt's output directory is its own, made by fragment_prep: remembering
        // it would grow the cache by one path per attempt for the life of kinski.
        if start.scratch.is_none() {
            ensure_output_dir(&start.output_dir, run_as)?;
        }
        let mut command = Exec::new(program);
        // The child enters it first: it is still root, and nothing it starts is outside.
        if let Some(tree) = &tree {
            tree.enter(&mut command);
        }
        command
            .args(args)
            .current_dir(&start.cwd)
            // Where it is, not where kinski was started (a shell trusts PWD).
            .env("PWD", &start.cwd)
            .envs(&start.env)
            // After start.env, so a project cannot mask what herzog tells the program.
            .env("HERZOG_PROJECT", &start.project)
            .env("HERZOG_FRAGMENT", &start.fragment)
            .env("HERZOG_ATTEMPT", start.attempt.to_string())
            .env("HERZOG_INPUT", &start.input)
            .env("HERZOG_OUTPUT_DIR", &start.output_dir);
        let mut connection = Connection::default();
        let mut outputs = match start.interactive.and_then(|i| i.tty) {
            Some(size) => {
                // The terminal is its stdin, stdout and stderr, in a session of its own.
                let (read, input, terminal) = interactive::terminal(&mut command, size, run_as.map(|u| (u.uid, u.gid)))
                    .map_err(|source| SpawnError::Pipe {
                        stream: "terminal",
                        source,
                    })?;
                connection.input = Some(Arc::new(input));
                connection.terminal = Some(Arc::new(terminal));
                let log = LogDir::open(&start.stdout)?.log(&start.stdout, "stdout", start.max_log_bytes)?;
                vec![Output::new(read, log.with_tap(taps.stdout.clone()))]
            }
            None => {
                let (stdout, stderr, outputs) = attempt_outputs(start, taps)?;
                // The program's ends of its pipes are its user's, so it may open them again
                // (`echo msg > /dev/stderr`); a pipe is made root's, mode 0600.
                if let Some(user) = run_as {
                    for fd in stdout.iter().chain(stderr.iter()) {
                        give(fd, user).map_err(|source| SpawnError::Pipe {
                            stream: "stdout",
                            source,
                        })?;
                    }
                }
                command.stdout(stdout).stderr(stderr);
                if start.interactive.is_some_and(|i| i.stdin) {
                    let input =
                        interactive::stdin_pipe(&mut command, run_as.map(|u| (u.uid, u.gid))).map_err(|source| {
                            SpawnError::Pipe {
                                stream: "stdin",
                                source,
                            }
                        })?;
                    connection.input = Some(Arc::new(input));
                }
                outputs
            }
        };
        if start.interactive.is_some() {
            // A job's caller reads its output as it comes: the program waits for it.
            outputs = outputs
                .into_iter()
                .zip([&taps.stdout, &taps.stderr])
                .map(|(o, tap)| o.gated(tap.clone()))
                .collect();
        }
        if let Some(user) = run_as {
            user.apply(&mut command);
        }
        if let Some(mask) = start.settings.umask {
            command.umask(mask as libc::mode_t);
        }
        let mut process = Self::launch(command, program, &start.cwd, outputs).inspect_err(|_| {
            if let Some(tree) = &tree {
                let _ = tree.remove();
            }
        })?;
        process.connection = connection;
        process.tree = tree;
        process.time_limit = start
            .requests
            .time_ms
            .map(|ms| (Duration::from_millis(ms), Duration::from_millis(start.grace_ms)));
        if let Some(signal) = start.settings.stop_signal {
            process.group.stop_signal.store(signal.number(), Ordering::SeqCst);
        }
        Ok(process)
    }

    /// Spawns `command` (set up to run `program` in `cwd`, in a new process group, its
    /// stdout and stderr going into the pipes of `outputs` or elsewhere) and takes charge of
    /// it: a pidfd to wait on, the group to signal. Blocking: call it on a blocking thread.
    pub(crate) fn launch(
        command: Exec,
        program: &str,
        cwd: &Path,
        outputs: Vec<Output>,
    ) -> Result<Process, SpawnError> {
        let started = Instant::now();
        let pgid = command.spawn().map_err(|source| start_error(program, cwd, source))?;
        // The child has its copies; ours would keep the pipes from ever reaching end of file.
        drop(command);

        // Nothing else reaps our children, so the pid cannot have been reused since spawn,
        // even if the program has already exited.
        let pidfd = match pidfd_open(pgid) {
            Ok(pidfd) => pidfd,
            Err(source) => {
                // Without a pidfd the process cannot be waited for asynchronously; kill it
                // rather than leave an unsupervised group behind.
                kill_and_reap(pgid);
                return Err(SpawnError::Pidfd {
                    program: program.to_string(),
                    pid: pgid,
                    source,
                });
            }
        };

        Ok(Process {
            group: Arc::new(Group {
                pgid,
                pidfd,
                reaped: Mutex::new(false),
                term_sent: AtomicBool::new(false),
                stop_signal: AtomicI32::new(libc::SIGTERM),
            }),
            started,
            outputs,
            connection: Connection::default(),
            tree: None,
            time_limit: None,
        })
    }

    /// A job's stdin and terminal, which its supervisor keeps while it runs.
    pub(crate) fn take_connection(&mut self) -> Connection {
        std::mem::take(&mut self.connection)
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> i32 {
        self.group.pgid
    }

    /// A handle that can stop the group while another task awaits [`Process::wait`].
    pub fn stopper(&self) -> Stopper {
        Stopper {
            group: Arc::clone(&self.group),
        }
    }

    /// Waits for the leader to exit and reaps it.
    ///
    /// Whatever is left of the group is SIGKILLed as soon as the leader has exited: an
    /// attempt's background processes would otherwise outlive it, hold its slot's resources
    /// unaccounted, and keep writing to its output. The kill happens while the leader is an
    /// unreaped zombie, which keeps its pid (and so the pgid) from being reused.
    ///
    /// Dropping a `Process` without calling this leaves the leader a zombie until kinski exits.
    /// The output is copied to the log files meanwhile; the files are complete when this
    /// returns, except for what a descendant that left the group writes afterwards.
    pub async fn wait(mut self) -> Finished {
        let mut outputs = std::mem::take(&mut self.outputs);
        let timed_out = AtomicBool::new(false);
        let reap = {
            let reap = self.reap_within_limit(&timed_out);
            tokio::pin!(reap);
            // Most short programs are gone before a pipe fills (64 KiB): watching the pipes
            // only after a moment spares them four epoll_ctl calls and two wake-ups. A program
            // that fills a pipe sooner waits at most that moment, once.
            let early = tokio::select! {
                done = &mut reap => Some(done),
                () = tokio::time::sleep(WATCH_PIPES_AFTER) => None,
            };
            match early {
                Some(done) => done,
                None => {
                    // The copies stop when the group is gone (not at end of file: an escaped
                    // descendant may hold the pipes open), between two writes.
                    let (gone, watch) = tokio::sync::watch::channel(false);
                    let reaping = async {
                        let done = reap.await;
                        gone.send_replace(true);
                        done
                    };
                    let (done, ()) = tokio::join!(reaping, crate::output::copy_while_running(&mut outputs, watch));
                    done
                }
            }
        };
        let wall_ms = millis(self.started.elapsed());
        // The group is gone now (killed at the reap); what is left in the cgroup (what left the
        // group) is killed now, after its usage is read.
        let usage = match self.tree.take() {
            Some(tree) => Some(
                tokio::task::spawn_blocking(move || end_tree(&tree))
                    .await
                    .unwrap_or_default(),
            ),
            None => None,
        };
        // What is in the pipes is all there is, short of an escaped descendant (without a
        // cgroup), which must not hold the completion back.
        crate::output::finish(outputs).await;
        match reap {
            Ok(Reaped { status, rusage }) => {
                let exit = decode_status(status);
                let peak_rss_kb = programs_peak_rss_kb(&rusage);
                let limit = match (usage, self.time_limit) {
                    // An OOM kill that did not end it (a child's) is no reason for its end.
                    (Some((usage, Some(limit_bytes))), _) if usage.oom_kills > 0 && exit != Exit::Code(0) => {
                        Some(LimitHit::Memory {
                            limit_bytes,
                            peak_bytes: usage
                                .peak_bytes
                                .unwrap_or(u64::try_from(rusage.ru_maxrss).unwrap_or(0) * 1024),
                        })
                    }
                    (_, Some((limit, _))) if timed_out.load(Ordering::SeqCst) => Some(LimitHit::Time {
                        limit_ms: millis(limit),
                    }),
                    _ => None,
                };
                Finished {
                    exit,
                    wall_ms,
                    cpu_ms: cpu_ms(&rusage),
                    peak_rss_kb,
                    limit,
                    peak_memory_bytes: usage.and_then(|(u, _)| u.peak_bytes),
                }
            }
            // Something else reaped the pid, so the outcome is unknown. Reporting a start
            // failure lets herzog retry the fragment instead of guessing success or failure.
            Err(err) => {
                let why = format!("failed to collect the exit status of pid {}: {err}", self.group.pgid);
                tracing::error!(pid = self.group.pgid, "{why}");
                Finished {
                    exit: Exit::StartFailed(why),
                    wall_ms,
                    cpu_ms: 0,
                    peak_rss_kb: 0,
                    limit: None,
                    peak_memory_bytes: None,
                }
            }
        }
    }

    /// Like [`Self::reap_when_exited`], stopping the program at its time limit (stop signal,
    /// grace, SIGKILL) and saying so in `timed_out`.
    async fn reap_within_limit(&self, timed_out: &AtomicBool) -> io::Result<Reaped> {
        let Some((limit, grace)) = self.time_limit else {
            return self.reap_when_exited().await;
        };
        let reap = self.reap_when_exited();
        tokio::pin!(reap);
        let deadline = tokio::time::Instant::from_std(self.started + limit);
        tokio::select! {
            done = &mut reap => return done,
            () = tokio::time::sleep_until(deadline) => {}
        }
        timed_out.store(true, Ordering::SeqCst);
        tracing::info!(
            pid = self.group.pgid,
            limit_ms = millis(limit),
            "the attempt reached its time limit: stopping it"
        );
        let stopper = self.stopper();
        let (done, ()) = tokio::join!(reap, stopper.stop(grace));
        done
    }

    async fn reap_when_exited(&self) -> io::Result<Reaped> {
        // SAFETY: `self.group` owns the pidfd and outlives this AsyncFd, which is local here.
        let watch = unsafe { AsyncFd::register_with_interest(self.group.pidfd.as_raw_fd(), Interest::READABLE) };
        let watch = match watch.map_err(io::Error::from) {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(
                    pid = self.group.pgid,
                    "failed to watch the pidfd, polling instead: {err}"
                );
                return self.group.poll_reap().await;
            }
        };
        loop {
            match watch.readable().await {
                Ok(mut ready) => match self.group.try_reap() {
                    None => ready.clear_ready(),
                    Some(done) => return done,
                },
                Err(err) => {
                    tracing::warn!(
                        pid = self.group.pgid,
                        "failed to watch the pidfd, polling instead: {err}"
                    );
                    return self.group.poll_reap().await;
                }
            }
        }
    }
}

impl Finished {
    /// The report for herzog, stamped now.
    pub fn into_completion(self, attempt: AttemptId) -> Completion {
        Completion {
            attempt,
            exit: self.exit,
            wall_ms: self.wall_ms,
            cpu_ms: self.cpu_ms,
            peak_rss_kb: self.peak_rss_kb,
            finished_at: common::now_millis(),
            limit: self.limit,
            peak_memory_bytes: self.peak_memory_bytes,
        }
    }
}

/// The end of an attempt's cgroup: its usage (and the memory limit it was held to), then
/// whatever is left in it killed, and it removed. Blocking.
fn end_tree(tree: &Tree) -> (crate::cgroup::Usage, Option<u64>) {
    let usage = tree.usage();
    match tree.kill() {
        Ok(0) => {}
        Ok(processes) => tracing::info!(
            processes,
            "killed what the attempt's program left running outside its group"
        ),
        Err(e) => tracing::warn!(error = %e, "failed to kill what the attempt's program left running"),
    }
    if let Err(e) = tree.remove() {
        tracing::warn!(error = %e, "failed to remove the attempt's cgroup");
    }
    (usage, tree.limited().memory_bytes)
}

/// The completion for an attempt whose program could not be started, with zero times.
pub fn start_failed(start: &StartAttempt, why: String) -> Completion {
    Completion {
        attempt: start.attempt,
        exit: Exit::StartFailed(why),
        wall_ms: 0,
        cpu_ms: 0,
        peak_rss_kb: 0,
        finished_at: common::now_millis(),
        limit: None,
        peak_memory_bytes: None,
    }
}

/// The program's peak RSS from its rusage, or 0 when that is not the program's: at exec the
/// kernel folds the spawner's own peak into the child's (the child shares kinski's memory
/// until then), so a figure no larger than kinski's peak says only "at most that", and
/// `/bin/true` would show kinski's size.
fn programs_peak_rss_kb(rusage: &libc::rusage) -> u64 {
    let child = u64::try_from(rusage.ru_maxrss).unwrap_or(0);
    // SAFETY: getrusage fills the struct it is given.
    let own = unsafe {
        let mut own: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut own);
        u64::try_from(own.ru_maxrss).unwrap_or(0)
    };
    if child > own { child } else { 0 }
}

fn decode_status(status: libc::c_int) -> Exit {
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        // wait4 without WUNTRACED or WCONTINUED reports only terminations; keep the raw
        // status rather than invent a meaning.
        Exit::Code(status)
    }
}

fn cpu_ms(rusage: &libc::rusage) -> u64 {
    let micros =
        |tv: libc::timeval| u64::try_from(tv.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(tv.tv_usec).unwrap_or(0);
    (micros(rusage.ru_utime) + micros(rusage.ru_stime)) / 1000
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
