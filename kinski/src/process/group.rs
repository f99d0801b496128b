//! The process group: its leader's pidfd, signals that never reach a reused group (sent
//! and reaped under one lock), the stop with its grace, and the reap with its rusage.

use super::*;

/// A cheap handle that stops the group while another task awaits [`Process::wait`].
#[derive(Clone, Debug)]
pub struct Stopper {
    pub(super) group: Arc<Group>,
}

/// The state [`Process`] and its [`Stopper`]s share.
#[derive(Debug)]
pub(super) struct Group {
    /// The leader's pid, which is also the process group id.
    pub(super) pgid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
    /// True once the leader is reaped. Signals and the reap both happen under this lock, so no
    /// signal can reach a reused pgid.
    pub(super) reaped: Mutex<bool>,
    /// The stop signal is sent once, however often `stop` is called: some programs take a
    /// second SIGTERM as "give up cleaning up".
    pub(super) term_sent: AtomicBool,
    /// The signal a stop starts with: SIGTERM unless the project says otherwise.
    pub(super) stop_signal: AtomicI32,
}

/// The reaped leader's wait status and resource usage.
pub(super) struct Reaped {
    pub(super) status: libc::c_int,
    pub(super) rusage: libc::rusage,
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

impl Group {
    pub(super) fn lock(&self) -> MutexGuard<'_, bool> {
        // The flag is a plain bool written last, so a panic elsewhere cannot leave it torn.
        self.reaped.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn is_reaped(&self) -> bool {
        *self.lock()
    }

    /// Signals the whole group unless the leader is reaped, after which the pgid may belong
    /// to someone else.
    pub(super) fn signal(&self, signal: libc::c_int) {
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
    pub(super) fn try_reap(&self) -> Option<io::Result<Reaped>> {
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
    pub(super) fn has_exited(&self) -> io::Result<bool> {
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
    pub(super) async fn poll_reap(&self) -> io::Result<Reaped> {
        loop {
            if let Some(done) = self.try_reap() {
                return done;
            }
            tokio::time::sleep(FALLBACK_POLL).await;
        }
    }

    /// Returns when the leader has exited or been reaped, or after `grace`.
    pub(super) async fn leader_exit(&self, grace: Duration) {
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

pub(super) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened descriptor (close-on-exec) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Kills and reaps a group that cannot be supervised. Blocks only for as long as SIGKILL takes.
pub(super) fn kill_and_reap(pgid: libc::pid_t) {
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
