//! Runs one attempt's program as its own process group and collects how it ended, its CPU time
//! and its peak RSS.
//!
//! tokio's `Child` only yields an `ExitStatus`, so the program is spawned with std's `Command`,
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

use crate::cgroup::{CgroupError, Tree};
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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How long a program runs before its output pipes are watched (see [`Process::wait`]).
const WATCH_PIPES_AFTER: Duration = Duration::from_millis(10);

/// How often to look at the leader when the pidfd cannot be registered with the runtime.
const FALLBACK_POLL: Duration = Duration::from_millis(20);

/// Why an attempt's program could not be started. The attempt is not lost: report it with
/// [`start_failed`] and this error's message.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("failed to start the program: the command line is empty")]
    EmptyArgv,
    #[error("failed to create the directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to give {path} to the user programs run as: {source}")]
    Handover {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{stream}: {source}")]
    OutputFile {
        stream: &'static str,
        #[source]
        source: crate::rotate::OutputFileError,
    },
    #[error("failed to make a pipe for the program's {stream}: {source}")]
    Pipe {
        stream: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to start {program} in {cwd}: the working directory is unusable: {source}")]
    Cwd {
        program: String,
        cwd: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to start {program}: interpreter {interpreter} not found (its #! line): install it or correct that line"
    )]
    Interpreter { program: String, interpreter: String },
    #[error(
        "failed to start {program}: the file is there, but the interpreter or dynamic loader it names was not found"
    )]
    Loader { program: String },
    #[error("failed to start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to make the attempt's cgroup, which would hold it to its requests: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("failed to open a pidfd for {program} (pid {pid}), so it was killed: {source}")]
    Pidfd {
        program: String,
        pid: i32,
        #[source]
        source: io::Error,
    },
}

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
    /// The largest resident set of the program or of any descendant it waited for.
    pub peak_rss_kb: u64,
    /// The limit that ended it, if one did.
    pub limit: Option<LimitHit>,
    /// The most memory its cgroup held at once, where one counted it.
    pub peak_memory_bytes: Option<u64>,
}

/// A cheap handle that stops the group while another task awaits [`Process::wait`].
#[derive(Clone, Debug)]
pub struct Stopper {
    group: Arc<Group>,
}

/// The state [`Process`] and its [`Stopper`]s share.
#[derive(Debug)]
struct Group {
    /// The leader's pid, which is also the process group id.
    pgid: libc::pid_t,
    pidfd: OwnedFd,
    /// True once the leader is reaped. Signals and the reap both happen under this lock, so no
    /// signal can reach a reused pgid.
    reaped: Mutex<bool>,
    /// The stop signal is sent once, however often `stop` is called: some programs take a
    /// second SIGTERM as "give up cleaning up".
    term_sent: AtomicBool,
    /// The signal a stop starts with: SIGTERM unless the project says otherwise.
    stop_signal: AtomicI32,
}

/// The reaped leader's wait status and resource usage.
struct Reaped {
    status: libc::c_int,
    rusage: libc::rusage,
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
        let mut command = Command::new(program);
        // First of the pre_exec steps: the child is still root, and nothing it starts is outside.
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
                command
                    .stdin(Stdio::null())
                    .stdout(stdout.map_or_else(Stdio::null, Stdio::from))
                    .stderr(stderr.map_or_else(Stdio::null, Stdio::from))
                    // No pre_exec unless switching users or setting a umask: that keeps std on
                    // its posix_spawn path, which matters at thousands of short attempts.
                    .process_group(0);
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
            // SAFETY: umask is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
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
        mut command: Command,
        program: &str,
        cwd: &Path,
        outputs: Vec<Output>,
    ) -> Result<Process, SpawnError> {
        let started = Instant::now();
        let child = command.spawn().map_err(|source| start_error(program, cwd, source))?;
        // The child has its copies; ours would keep the pipes from ever reaching end of file.
        drop(command);
        // A pid always fits in pid_t. Dropping the std Child neither waits nor kills.
        let pgid = child.id() as libc::pid_t;
        drop(child);

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
                let peak_rss_kb = u64::try_from(rusage.ru_maxrss).unwrap_or(0);
                let limit = match (usage, self.time_limit) {
                    // An OOM kill that did not end it (a child's) is no reason for its end.
                    (Some((usage, Some(limit_bytes))), _) if usage.oom_kills > 0 && exit != Exit::Code(0) => {
                        Some(LimitHit::Memory {
                            limit_bytes,
                            peak_bytes: usage.peak_bytes.unwrap_or(peak_rss_kb * 1024),
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

impl Stopper {
    /// The group's id (the leader's pid).
    pub(crate) fn pgid(&self) -> libc::pid_t {
        self.group.pgid
    }

    /// Sends `signal` to the group, unless its leader is already reaped.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        self.group.signal(signal);
    }

    /// Sends the stop signal (SIGTERM unless the attempt names another) to the group, gives
    /// the leader up to `grace` to exit, then SIGKILLs whatever is left of the group. Does
    /// nothing once the leader has been reaped; calling it again sends no second stop signal
    /// but still escalates.
    pub async fn stop(&self, grace: Duration) {
        if self.group.is_reaped() {
            return;
        }
        if !self.group.term_sent.swap(true, Ordering::SeqCst) {
            self.group.signal(self.group.stop_signal.load(Ordering::SeqCst));
        }
        self.group.leader_exit(grace).await;
        // Also when the leader went in time: its descendants must not outlive the attempt,
        // whether or not anyone is awaiting `wait` yet.
        self.group.signal(libc::SIGKILL);
    }
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

impl Group {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // The flag is a plain bool written last, so a panic elsewhere cannot leave it torn.
        self.reaped.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_reaped(&self) -> bool {
        *self.lock()
    }

    /// Signals the whole group unless the leader is reaped, after which the pgid may belong
    /// to someone else.
    fn signal(&self, signal: libc::c_int) {
        let reaped = self.lock();
        if *reaped {
            return;
        }
        // SAFETY: killpg takes no pointers.
        if unsafe { libc::killpg(self.pgid, signal) } != 0 {
            // ESRCH: the leader left its own group and no one is left in it.
            let err = io::Error::last_os_error();
            tracing::debug!(pgid = self.pgid, signal, "failed to signal the process group: {err}");
        }
    }

    /// Reaps the leader if it has exited: `None` while it runs.
    fn try_reap(&self) -> Option<io::Result<Reaped>> {
        let mut reaped = self.lock();
        if *reaped {
            return Some(Err(io::Error::from_raw_os_error(libc::ECHILD)));
        }
        // Look without reaping first, so the group can be killed while the zombie leader
        // still pins the pgid.
        match self.has_exited() {
            Ok(false) => return None,
            Ok(true) => {}
            Err(err) => {
                // Not our child any more: never signal this pgid again.
                *reaped = true;
                return Some(Err(err));
            }
        }
        // SAFETY: killpg takes no pointers.
        unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: status and rusage are valid and writable for the whole call.
            let pid = unsafe { libc::wait4(self.pgid, &mut status, libc::WNOHANG, &mut rusage) };
            if pid == self.pgid {
                *reaped = true;
                return Some(Ok(Reaped { status, rusage }));
            }
            if pid == 0 {
                // waitid just saw a zombie; this cannot happen, but must not block.
                return None;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                *reaped = true;
                return Some(Err(err));
            }
        }
    }

    /// Whether the leader has exited, without reaping it.
    fn has_exited(&self) -> io::Result<bool> {
        // SAFETY: siginfo_t is plain old data; zeroed si_pid is how "nothing yet" is told apart.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: info is valid and writable for the whole call.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pgid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if rc == 0 {
                // SAFETY: waitid filled in a SIGCHLD siginfo or left the zeroes.
                return Ok(unsafe { info.si_pid() } != 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Reaps by polling, for when the pidfd cannot be watched.
    async fn poll_reap(&self) -> io::Result<Reaped> {
        loop {
            if let Some(done) = self.try_reap() {
                return done;
            }
            tokio::time::sleep(FALLBACK_POLL).await;
        }
    }

    /// Returns when the leader has exited or been reaped, or after `grace`.
    async fn leader_exit(&self, grace: Duration) {
        // A duplicate, because `wait` may have the pidfd itself registered with the runtime.
        let watch = self.pidfd.try_clone().and_then(|fd| {
            // SAFETY: the AsyncFd owns the duplicate, so it stays open as long as needed.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
        });
        let polled = match watch {
            Ok(watch) => match tokio::time::timeout(grace, watch.readable()).await {
                Ok(Ok(_)) | Err(_) => return,
                Ok(Err(err)) => err,
            },
            Err(err) => err,
        };
        tracing::warn!(pid = self.pgid, "failed to watch the pidfd, polling instead: {polled}");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.is_reaped() || !matches!(self.has_exited(), Ok(false)) {
                return;
            }
            tokio::time::sleep(FALLBACK_POLL).await;
        }
    }
}

/// The write ends an attempt's program gets as stdout and stderr (`None`: /dev/null, a
/// stream the project discards), and the read ends kinski copies into the log files.
type AttemptOutputs = (Option<OwnedFd>, Option<OwnedFd>, Vec<Output>);

/// Each log keeps its stream's tap from `taps`, for followers.
fn attempt_outputs(start: &StartAttempt, taps: &Taps) -> Result<AttemptOutputs, SpawnError> {
    let keep_out = start.settings.stdout.is_keep();
    let keep_err = start.settings.stderr.is_keep();
    let mut outputs = Vec::new();
    let logs = if keep_out || keep_err {
        Some(LogDir::open(if keep_out { &start.stdout } else { &start.stderr })?)
    } else {
        None
    };
    let mut open = |stream: &'static str, path: &Path, label: &'static str| -> Result<OwnedFd, SpawnError> {
        let (read, write) = pipe().map_err(|source| SpawnError::Pipe { stream, source })?;
        let log = match &logs {
            Some(dir) if path.parent() == Some(dir.path.as_path()) => dir.log(path, label, start.max_log_bytes)?,
            _ => LogDir::open(path)?.log(path, label, start.max_log_bytes)?,
        };
        let tap = if stream == "stderr" { &taps.stderr } else { &taps.stdout };
        outputs.push(Output::new(read, log.with_tap(tap.clone())));
        Ok(write)
    };
    // One pipe for both when they share a file: the program's own interleaving is kept.
    if keep_out && keep_err && start.stderr == start.stdout {
        let both = open("stdout", &start.stdout, "stdout and stderr")?;
        let copy = both.try_clone().map_err(|source| SpawnError::Pipe {
            stream: "stderr",
            source,
        })?;
        return Ok((Some(both), Some(copy), outputs));
    }
    let stdout = keep_out.then(|| open("stdout", &start.stdout, "stdout")).transpose()?;
    let stderr = keep_err.then(|| open("stderr", &start.stderr, "stderr")).transpose()?;
    Ok((stdout, stderr, outputs))
}

/// Gives a descriptor's file (a pipe, a terminal) to the user programs run as.
fn give(fd: &OwnedFd, user: &crate::user::RunAs) -> io::Result<()> {
    interactive::give(fd, Some((user.uid, user.gid)))
}

/// A pipe whose ends are closed on exec (std dups the write end onto the child's stdout or
/// stderr); the read end does not block, so it can be drained without waiting.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// The directory of an attempt's log files, opened once for both streams.
pub(crate) struct LogDir {
    path: PathBuf,
    dir: Arc<DirFd>,
}

impl LogDir {
    /// Opens (making it if missing, with mode 0755) the directory `log` lies in.
    pub(crate) fn open(log: &Path) -> Result<LogDir, SpawnError> {
        let path = log.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = DirFd::open_or_create(&path, DIR_MODE).map_err(|source| SpawnError::CreateDir {
            path: path.clone(),
            source,
        })?;
        Ok(LogDir {
            path,
            dir: Arc::new(dir),
        })
    }

    /// The log at `path`, made at its first byte. Whatever an earlier run left at that name
    /// goes now: a stream that stays empty leaves no file.
    pub(crate) fn log(&self, path: &Path, stream: &'static str, cap: u64) -> Result<Log, SpawnError> {
        let refused = |source| SpawnError::CreateDir {
            path: path.to_path_buf(),
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            refused(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a log path must end in a file name",
            ))
        })?;
        match self.dir.remove_file(name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(refused(e)),
            _ => {}
        }
        Ok(Log::new(
            Arc::clone(&self.dir),
            name.to_os_string(),
            self.path.join(name),
            stream,
            cap,
        ))
    }
}

/// Makes the output directory once per directory for the life of kinski (a project's attempts
/// share one): making it on every start was three failing `mkdir`s and five `statx`s. A
/// directory removed behind kinski's back is made again, at the cost of one `statx`. Made with
/// mode 0755 through descriptors, and handed to `run_as` through its own descriptor, so a link
/// planted at its name is never followed.
pub(crate) fn ensure_output_dir(dir: &Path, run_as: Option<&crate::user::RunAs>) -> Result<(), SpawnError> {
    static MADE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let made = MADE.get_or_init(Default::default);
    let known = made.lock().unwrap_or_else(|p| p.into_inner()).contains(dir);
    if known && dir.is_dir() {
        return Ok(());
    }
    let failed = |source| SpawnError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    let opened = DirFd::open_or_create(dir, DIR_MODE).map_err(failed)?;
    if let Some(user) = run_as
        && opened.owner().map_err(failed)?.uid != user.uid
    {
        opened.chown(user.uid, Some(user.gid)).map_err(failed)?;
    }
    made.lock().unwrap_or_else(|p| p.into_inner()).insert(dir.to_path_buf());
    Ok(())
}

/// std reports a failed chdir with the same errno as a failed exec, so look at the directory
/// to say which it was. Only on the failure path, to keep spawning cheap.
fn start_error(program: &str, cwd: &Path, source: io::Error) -> SpawnError {
    let cwd_ok = std::fs::metadata(cwd).is_ok_and(|meta| meta.is_dir());
    // ENOENT for a program that is there: exec could not find what runs it.
    if cwd_ok
        && source.kind() == io::ErrorKind::NotFound
        && let Some(file) = find_program(program, cwd)
    {
        let program = program.to_string();
        return match interpreter_of(&file) {
            Some(interpreter) => SpawnError::Interpreter { program, interpreter },
            None => SpawnError::Loader { program },
        };
    }
    if cwd_ok {
        SpawnError::Start {
            program: program.to_string(),
            source,
        }
    } else {
        SpawnError::Cwd {
            program: program.to_string(),
            cwd: cwd.to_path_buf(),
            source,
        }
    }
}

/// The regular file exec would have run for `program`: a path (relative ones from `cwd`), or
/// the first match on kinski's PATH.
fn find_program(program: &str, cwd: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    if program.contains('/') {
        let path = cwd.join(program);
        return is_file(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_file(p))
}

/// The interpreter a script's `#!` line names, when it has one.
fn interpreter_of(file: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking and checked after opening: a FIFO swapped in must not hang kinski.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = [0u8; 256];
    let n = f.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().next().map(str::to_string)
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened descriptor (close-on-exec) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Kills and reaps a group that cannot be supervised. Blocks only for as long as SIGKILL takes.
fn kill_and_reap(pgid: libc::pid_t) {
    // SAFETY: killpg takes no pointers.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is valid and writable; a null rusage is allowed.
        let pid = unsafe { libc::wait4(pgid, &mut status, 0, std::ptr::null_mut()) };
        if pid == pgid || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
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
mod tests {
    use super::*;
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    use std::collections::BTreeMap;

    /// Bounds every wait, so a broken runner fails the test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(30);

    fn attempt(dir: &Path, argv: &[&str]) -> StartAttempt {
        StartAttempt {
            requests: Default::default(),
            attempt: AttemptId(7),
            project: "proj".into(),
            fragment: "frag-1".into(),
            input: dir.join("input/frag-1"),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: dir.to_path_buf(),
            env: BTreeMap::from([("EXTRA".to_string(), "extra value".to_string())]),
            stdout: dir.join("logs/7.out"),
            stderr: dir.join("logs/7.err"),
            output_dir: dir.join("out/7"),
            grace_ms: 1000,
            scratch: None,
            max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
            uploader_uid: None,
            settings: Default::default(),
            interactive: None,
        }
    }

    mod limits;

    fn sh(dir: &Path, script: &str) -> StartAttempt {
        attempt(dir, &["sh", "-c", script])
    }

    async fn run(start: &StartAttempt) -> Finished {
        let process = Process::spawn(start).expect("spawn");
        tokio::time::timeout(LIMIT, process.wait())
            .await
            .expect("wait timed out")
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    /// Waits for a script to write a whole line to `path`; polling is the only way to watch
    /// another process's file.
    async fn line_in(path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return text.trim().to_string();
            }
            assert!(Instant::now() < deadline, "{} was not written", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `pid` is dead within 5 s. SIGKILL is delivered asynchronously, and an orphan
    /// stays a zombie until init reaps it, so a zombie counts as dead.
    async fn dies(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
                return true;
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some((_, rest)) = stat.rsplit_once(") ")
                && rest.starts_with('Z')
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn exit_zero_captures_output_and_environment() {
        let dir = tempdir();
        let start = sh(
            dir.path(),
            r#"echo "$HERZOG_PROJECT|$HERZOG_FRAGMENT|$HERZOG_ATTEMPT|$HERZOG_INPUT|$HERZOG_OUTPUT_DIR|$EXTRA|$(pwd)"
               test -d "$HERZOG_OUTPUT_DIR" && echo output-dir-exists
               cat && echo stdin-empty
               echo to-stderr >&2"#,
        );
        let finished = run(&start).await;
        assert_eq!(finished.exit, Exit::Code(0));
        let stdout = std::fs::read_to_string(&start.stdout).expect("stdout");
        let d = dir.path().display();
        assert_eq!(
            stdout,
            format!("proj|frag-1|7|{d}/input/frag-1|{d}/out/7|extra value|{d}\noutput-dir-exists\nstdin-empty\n")
        );
        assert_eq!(std::fs::read_to_string(&start.stderr).expect("stderr"), "to-stderr\n");
    }

    #[tokio::test]
    async fn exit_code_is_reported_and_old_output_truncated() {
        let dir = tempdir();
        let start = sh(dir.path(), "echo new; exit 3");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
        std::fs::write(&start.stdout, "an old, much longer output\n").expect("write");
        let finished = run(&start).await;
        assert_eq!(finished.exit, Exit::Code(3));
        assert_eq!(std::fs::read_to_string(&start.stdout).expect("stdout"), "new\n");
    }

    #[tokio::test]
    async fn an_empty_stream_leaves_no_file_and_no_stale_one() {
        let dir = tempdir();
        let start = sh(dir.path(), "echo only-stdout");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
        std::fs::write(&start.stderr, "left by an earlier run\n").expect("write");
        assert_eq!(run(&start).await.exit, Exit::Code(0));
        assert_eq!(std::fs::read_to_string(&start.stdout).expect("stdout"), "only-stdout\n");
        assert!(!start.stderr.exists(), "an empty stderr must leave no file");

        let quiet = attempt(dir.path(), &["/bin/true"]);
        std::fs::remove_file(&quiet.stdout).expect("rm");
        assert_eq!(run(&quiet).await.exit, Exit::Code(0));
        assert!(!quiet.stdout.exists() && !quiet.stderr.exists());
    }

    #[tokio::test]
    async fn whatever_is_planted_at_a_log_path_is_replaced_never_written_through() {
        let dir = tempdir();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("write the victim");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
        let start = sh(dir.path(), "echo PWNED; echo PWNED >&2");
        type Plant<'a> = &'a dyn Fn(&Path);
        let plants: [(&str, Plant); 3] = [
            ("a symbolic link", &|at| {
                std::os::unix::fs::symlink(&victim, at).expect("symlink")
            }),
            ("a hard link", &|at| std::fs::hard_link(&victim, at).expect("hard link")),
            ("a FIFO", &|at| {
                let path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).expect("no NUL");
                // SAFETY: a valid C string.
                assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
            }),
        ];
        for (what, plant) in plants {
            for log in [&start.stdout, &start.stderr] {
                let _ = std::fs::remove_file(log);
                plant(log);
            }
            assert_eq!(run(&start).await.exit, Exit::Code(0), "{what}");
            assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret\n", "{what}");
            for log in [&start.stdout, &start.stderr] {
                let meta = std::fs::symlink_metadata(log).expect("the log");
                assert!(meta.is_file(), "{what}: {} is a file of kinski's now", log.display());
                assert_eq!(std::fs::read_to_string(log).expect("log"), "PWNED\n", "{what}");
            }
        }
    }

    #[tokio::test]
    async fn output_larger_than_a_pipe_is_copied_whole() {
        let dir = tempdir();
        // 4 MiB on stdout and 1 MiB on stderr: the program blocks unless both are read while
        // it runs.
        let start = sh(
            dir.path(),
            "head -c 4194304 /dev/zero; head -c 1048576 /dev/zero >&2; echo end",
        );
        assert_eq!(run(&start).await.exit, Exit::Code(0));
        assert_eq!(std::fs::metadata(&start.stdout).expect("stdout").len(), 4_194_304 + 4);
        assert_eq!(std::fs::metadata(&start.stderr).expect("stderr").len(), 1_048_576);
    }

    #[tokio::test]
    async fn an_escaped_descendant_does_not_hold_the_completion() {
        let dir = tempdir();
        // The descendant leaves the group and keeps the pipes open; the attempt still ends
        // with its leader (`run` fails the test after LIMIT).
        let start = sh(dir.path(), "setsid sleep 60 & echo leader-done");
        assert_eq!(run(&start).await.exit, Exit::Code(0));
        assert_eq!(std::fs::read_to_string(&start.stdout).expect("stdout"), "leader-done\n");
    }

    #[tokio::test]
    async fn shared_stdout_and_stderr_file_keeps_both() {
        let dir = tempdir();
        let mut start = sh(dir.path(), "echo one; echo two >&2; echo three");
        start.stderr = start.stdout.clone();
        assert_eq!(run(&start).await.exit, Exit::Code(0));
        assert_eq!(
            std::fs::read_to_string(&start.stdout).expect("stdout"),
            "one\ntwo\nthree\n"
        );
    }

    #[tokio::test]
    async fn killed_by_a_signal() {
        let dir = tempdir();
        let finished = run(&sh(dir.path(), "kill -9 $$")).await;
        assert_eq!(finished.exit, Exit::Signal(9));
    }

    #[tokio::test]
    async fn peak_rss_is_measured() {
        let dir = tempdir();
        let big = run(&attempt(
            dir.path(),
            &["python3", "-c", "b = b'x' * (64 * 1024 * 1024)"],
        ))
        .await;
        assert_eq!(big.exit, Exit::Code(0));
        assert!(big.peak_rss_kb > 60_000, "{big:?}");
        let small = run(&attempt(dir.path(), &["true"])).await;
        assert_eq!(small.exit, Exit::Code(0));
        assert!(small.peak_rss_kb < 20_000, "{small:?}");
    }

    #[tokio::test]
    async fn cpu_time_is_measured() {
        let dir = tempdir();
        let finished = run(&sh(dir.path(), "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")).await;
        assert_eq!(finished.exit, Exit::Code(0));
        assert!(finished.cpu_ms > 100, "{finished:?}");
        assert!(finished.wall_ms >= finished.cpu_ms / 2, "{finished:?}");
    }

    #[tokio::test]
    async fn stop_terminates_the_whole_group() {
        let dir = tempdir();
        let pid_file = dir.path().join("grandchild");
        let start = sh(
            dir.path(),
            &format!("sleep 1000 & echo $! > {}; wait", pid_file.display()),
        );
        let process = Process::spawn(&start).expect("spawn");
        let stopper = process.stopper();
        let waiter = tokio::spawn(process.wait());
        let grandchild: i32 = line_in(&pid_file).await.parse().expect("pid");

        let stopping = Instant::now();
        stopper.stop(Duration::from_secs(10)).await;
        let finished = tokio::time::timeout(LIMIT, waiter)
            .await
            .expect("wait timed out")
            .expect("join");
        assert_eq!(finished.exit, Exit::Signal(libc::SIGTERM));
        assert!(stopping.elapsed() < Duration::from_secs(5));
        assert!(dies(grandchild).await, "grandchild {grandchild} survived");

        // Once reaped, stopping again must not signal the (possibly reused) pgid.
        stopper.stop(Duration::from_secs(10)).await;
    }

    #[tokio::test]
    async fn settings_discard_streams_set_the_umask_and_pick_the_stop_signal() {
        use common::run_settings::{Signal, Sink};
        let dir = tempdir();
        let made = dir.path().join("made");
        let mut start = sh(
            dir.path(),
            &format!("echo out; echo err >&2; : > {}; umask", made.display()),
        );
        start.settings.stdout = Sink::Discard;
        start.settings.umask = Some(0o077);
        assert_eq!(run(&start).await.exit, Exit::Code(0));
        assert!(!start.stdout.exists(), "a discarded stdout leaves no log");
        assert_eq!(std::fs::read_to_string(&start.stderr).expect("stderr"), "err\n");
        let mode = std::fs::metadata(&made).expect("made").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

        // Another directory: the first program's logs lie at the same names.
        let dir = tempdir();
        let ready = dir.path().join("ready");
        let mut trapped = sh(
            dir.path(),
            &format!(
                r#"trap 'echo got-usr1; exit 7' USR1; echo > {}; while :; do sleep 0.05; done"#,
                ready.display()
            ),
        );
        trapped.settings.stop_signal = Some(Signal::parse("USR1").expect("a signal"));
        trapped.settings.stderr = Sink::Discard;
        let process = Process::spawn(&trapped).expect("spawn");
        let stopper = process.stopper();
        let waiter = tokio::spawn(process.wait());
        line_in(&ready).await;
        stopper.stop(Duration::from_secs(20)).await;
        let finished = tokio::time::timeout(LIMIT, waiter).await.expect("wait").expect("join");
        assert_eq!(finished.exit, Exit::Code(7));
        assert_eq!(std::fs::read_to_string(&trapped.stdout).expect("stdout"), "got-usr1\n");
        assert!(!trapped.stderr.exists());
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill() {
        let dir = tempdir();
        let ready = dir.path().join("ready");
        let start = sh(
            dir.path(),
            &format!(
                r#"trap "" TERM; echo ready > {}; while :; do sleep 0.1; done"#,
                ready.display()
            ),
        );
        let process = Process::spawn(&start).expect("spawn");
        let stopper = process.stopper();
        let waiter = tokio::spawn(process.wait());
        line_in(&ready).await;

        let stopping = Instant::now();
        let grace = Duration::from_millis(300);
        // Two concurrent stops behave like one.
        tokio::join!(stopper.stop(grace), stopper.stop(grace));
        assert!(stopping.elapsed() >= grace);
        let finished = tokio::time::timeout(LIMIT, waiter)
            .await
            .expect("wait timed out")
            .expect("join");
        assert_eq!(finished.exit, Exit::Signal(libc::SIGKILL));
    }

    #[tokio::test]
    async fn leader_exit_kills_what_it_left_behind() {
        let dir = tempdir();
        let pid_file = dir.path().join("grandchild");
        let start = sh(dir.path(), &format!("sleep 1000 & echo $! > {}", pid_file.display()));
        let finished = run(&start).await;
        assert_eq!(finished.exit, Exit::Code(0));
        let grandchild: i32 = line_in(&pid_file).await.parse().expect("pid");
        assert!(dies(grandchild).await, "grandchild {grandchild} survived");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_start_failure() {
        let dir = tempdir();
        for program in ["/nonexistent/herzog-no-such-program", "herzog-no-such-program"] {
            let start = attempt(dir.path(), &[program, "arg"]);
            let err = Process::spawn(&start).expect_err("spawn must fail");
            assert!(matches!(err, SpawnError::Start { .. }), "{err:?}");
            let why = err.to_string();
            assert!(why.contains(program), "{why}");

            let completion = start_failed(&start, why.clone());
            assert_eq!(completion.attempt, start.attempt);
            assert_eq!(completion.exit, Exit::StartFailed(why));
            assert_eq!(
                (completion.wall_ms, completion.cpu_ms, completion.peak_rss_kb),
                (0, 0, 0)
            );
        }
    }

    #[tokio::test]
    async fn a_script_whose_interpreter_is_missing_names_the_interpreter() {
        let dir = tempdir();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/nonexistent/herzog-interpreter -x\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let err = Process::spawn(&attempt(dir.path(), &[script.to_str().unwrap()])).expect_err("spawn must fail");
        let why = err.to_string();
        assert!(matches!(err, SpawnError::Interpreter { .. }), "{err:?}");
        assert!(
            why.contains("interpreter /nonexistent/herzog-interpreter not found"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_named() {
        let dir = tempdir();
        let mut start = attempt(dir.path(), &["true"]);
        start.cwd = dir.path().join("no-such-dir");
        let err = Process::spawn(&start).expect_err("spawn must fail");
        assert!(matches!(err, SpawnError::Cwd { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[tokio::test]
    async fn an_empty_command_line_is_refused() {
        let dir = tempdir();
        let err = Process::spawn(&attempt(dir.path(), &[])).expect_err("spawn must fail");
        assert!(matches!(err, SpawnError::EmptyArgv), "{err:?}");
    }

    #[tokio::test]
    async fn into_completion_carries_everything() {
        let dir = tempdir();
        let process = Process::spawn(&attempt(dir.path(), &["true"])).expect("spawn");
        assert!(process.pid() > 0);
        let finished = process.wait().await;
        let completion = finished.clone().into_completion(AttemptId(9));
        assert_eq!(completion.attempt, AttemptId(9));
        assert_eq!(completion.exit, finished.exit);
        assert_eq!(completion.wall_ms, finished.wall_ms);
        assert_eq!(completion.cpu_ms, finished.cpu_ms);
        assert_eq!(completion.peak_rss_kb, finished.peak_rss_kb);
        assert!(completion.finished_at > 0);
    }

    /// Spawn cost at the scale of the xargs comparison; run with `--ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn spawn_5000_true() {
        let dir = tempdir();
        let start = attempt(dir.path(), &["/bin/true"]);
        let began = Instant::now();
        for _ in 0..5000 {
            assert_eq!(run(&start).await.exit, Exit::Code(0));
        }
        eprintln!("5000 x /bin/true: {:?}", began.elapsed());
    }
}
