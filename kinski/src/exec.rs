//! Starts a program without copying kinski: the child shares kinski's memory until it execs
//! (`clone` with `CLONE_VM | CLONE_VFORK`, as glibc's posix_spawn does), and does what std's
//! `pre_exec` steps would: enter the unit's cgroups, its own process group or session, stdio,
//! the working directory, umask, the user, then `execve`.
//!
//! std falls back to a full fork whenever a `pre_exec` step is set, and a fork of a big,
//! many-threaded process costs far more than the program it starts: copying the page tables,
//! a TLB shootdown on every thread, then a copy-on-write fault for each page kinski touches
//! afterwards. At `/bin/true` attempts with a cgroup that was 3.4 ms per attempt.
//!
//! The child is born in its cgroup v2 where the kernel can do that (clone3's
//! `CLONE_INTO_CGROUP`, Linux 5.7, on x86_64): moving a running process into a cgroup instead
//! (writing `cgroup.procs`) waits for an RCU grace period, 1 to 15 ms, per attempt. The v1
//! hierarchies that hold a request's limits on a hybrid host have no such call: the child
//! moves itself into those.
//!
//! The child runs on its own small stack, in kinski's memory, with every signal blocked until
//! it has reset the handled ones: it only reads what [`Exec::spawn`] prepared, allocates
//! nothing, takes no lock, and makes the credential changes as raw system calls (glibc's
//! `setuid` would signal kinski's threads).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack: its steps are a few system calls deep.
const STACK: usize = 64 * 1024;

/// The page below the child's stack, unmapped: an overflow faults instead of writing into
/// kinski's memory.
const GUARD: usize = 4096;

/// How often a program found busy (ETXTBSY) is tried again, 20 ms apart.
const TEXT_BUSY_TRIES: u32 = 10;

/// How a program is to be started; [`Exec::spawn`] starts it.
#[derive(Debug)]
pub(crate) struct Exec {
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    /// Set over kinski's own environment.
    env: BTreeMap<OsString, OsString>,
    /// Each `None` is /dev/null.
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    group: Group,
    user: Option<Ids>,
    umask: Option<libc::mode_t>,
    /// The cgroup v2 it is born in: its directory, and its `cgroup.procs` for a kernel
    /// without clone3.
    born_in: Option<(Arc<OwnedFd>, Arc<OwnedFd>)>,
    /// `cgroup.procs` of each further cgroup, open for writing.
    cgroups: Vec<Arc<OwnedFd>>,
}

/// The process group the program starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// Its own, its pid: the unit kinski signals.
    Own,
    /// A session of its own, whose controlling terminal is its stdin.
    Terminal,
}

/// The user a program runs as.
#[derive(Clone, Debug)]
pub(crate) struct Ids {
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    pub(crate) groups: Vec<libc::gid_t>,
}

impl Exec {
    /// `program` (a path, or a name looked up on the PATH it will have) in a process group of
    /// its own, with stdin, stdout and stderr on /dev/null until set.
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Exec {
        Exec {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            group: Group::Own,
            user: None,
            umask: None,
            born_in: None,
            cgroups: Vec::new(),
        }
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Exec {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub(crate) fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Exec {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    pub(crate) fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Exec {
        self.env
            .insert(key.as_ref().to_os_string(), value.as_ref().to_os_string());
        self
    }

    pub(crate) fn envs<I, K, V>(&mut self, vars: I) -> &mut Exec
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self.env(key, value);
        }
        self
    }

    pub(crate) fn stdin(&mut self, fd: Option<OwnedFd>) -> &mut Exec {
        self.stdin = fd;
        self
    }

    pub(crate) fn stdout(&mut self, fd: Option<OwnedFd>) -> &mut Exec {
        self.stdout = fd;
        self
    }

    pub(crate) fn stderr(&mut self, fd: Option<OwnedFd>) -> &mut Exec {
        self.stderr = fd;
        self
    }

    /// `terminal` (a pty's slave) as its stdin, stdout, stderr and controlling terminal, in a
    /// session of its own (so its process group is still its pid).
    pub(crate) fn terminal(&mut self, terminal: OwnedFd) -> io::Result<&mut Exec> {
        self.stdin = Some(terminal.try_clone()?);
        self.stdout = Some(terminal.try_clone()?);
        self.stderr = Some(terminal);
        self.group = Group::Terminal;
        Ok(self)
    }

    /// Runs it as this user (kinski is root).
    pub(crate) fn user(&mut self, ids: Ids) -> &mut Exec {
        self.user = Some(ids);
        self
    }

    pub(crate) fn umask(&mut self, mask: libc::mode_t) -> &mut Exec {
        self.umask = Some(mask);
        self
    }

    /// Has the child born in the cgroup v2 of directory `dir` (or, where the kernel cannot,
    /// move itself in through its `cgroup.procs`, `procs`).
    pub(crate) fn born_in(&mut self, dir: Arc<OwnedFd>, procs: Arc<OwnedFd>) -> &mut Exec {
        self.born_in = Some((dir, procs));
        self
    }

    /// Has the child move itself into the cgroup whose `cgroup.procs` this is before it execs.
    pub(crate) fn cgroup(&mut self, procs: Arc<OwnedFd>) -> &mut Exec {
        self.cgroups.push(procs);
        self
    }

    /// Starts the program; returns its pid, a child of kinski's that nothing has waited for.
    /// Blocking (until the child has exec'd): call it on a blocking thread.
    pub(crate) fn spawn(&self) -> io::Result<libc::pid_t> {
        let born_in = self.born_in.as_ref().filter(|_| clone3::WORKS.load(Ordering::Relaxed));
        let mut prepared = self.prepare()?;
        if let Some((_, procs)) = self.born_in.as_ref().filter(|_| born_in.is_none()) {
            prepared.cgroups.insert(0, procs.as_raw_fd());
        }
        let cgroup = born_in.map(|(dir, _)| dir.as_raw_fd());
        let mut busy = 0;
        loop {
            match self.clone_child(&prepared, cgroup) {
                // A kernel before 5.7 (or not x86_64): the child moves itself in, from now on.
                Err(e) if born_in.is_some() && clone3::unsupported(&e) => {
                    clone3::WORKS.store(false, Ordering::Relaxed);
                    return self.spawn();
                }
                // A program just written is still open for writing somewhere (a process
                // forked meanwhile holds the writer's descriptor until its own exec): that
                // passes in milliseconds.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy < TEXT_BUSY_TRIES => {
                    busy += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Starts the child (born in the cgroup of directory `cgroup`, if given) and waits until
    /// it has exec'd or failed.
    fn clone_child(&self, prepared: &Prepared, cgroup: Option<RawFd>) -> io::Result<libc::pid_t> {
        let failure = Failure::default();
        let mut stack = Stack::new()?;
        // Blocked in the child too, until it has reset the handlers it shares code with.
        let mut old = empty_sigset();
        let mut all = empty_sigset();
        // SAFETY: valid sigsets; this thread's mask is restored below.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let child = match cgroup {
            // SAFETY: as below, the child entering `child` through clone3.
            Some(dir) => unsafe {
                clone3::spawn(
                    stack.slice(),
                    dir,
                    &Entry {
                        prepared,
                        failure: &failure,
                    },
                )
            },
            None => {
                let (prepared, failure) = (prepared, &failure);
                // SAFETY: see `child`: called only in the clone's child, with every signal
                // blocked.
                let callback = Box::new(move || -> isize { unsafe { child(prepared, failure) } });
                // SAFETY: the child runs `child` on its own stack in our memory while this
                // thread waits (CLONE_VFORK); it only reads `prepared`, writes `failure`, and
                // never returns into Rust code of ours (it execs or exits).
                unsafe {
                    nix::sched::clone(
                        callback,
                        stack.slice(),
                        nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK,
                        Some(libc::SIGCHLD),
                    )
                }
                .map(|pid| pid.as_raw())
                .map_err(io::Error::from)
            }
        };
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let pid = child?;
        let errno = failure.errno.load(Ordering::SeqCst);
        if errno == 0 {
            return Ok(pid);
        }
        // It exited without exec'ing: reap it, so no zombie is left and the pid is free.
        let mut status = 0;
        // SAFETY: our own child, which has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let error = io::Error::from_raw_os_error(errno);
        Err(match Step::from(failure.step.load(Ordering::SeqCst)) {
            // As std reports them, for the caller to tell which it was.
            Step::Exec | Step::Cwd => error,
            step => io::Error::new(error.kind(), format!("failed to {}: {error}", step.doing())),
        })
    }

    /// Everything the child needs, made here so that it allocates nothing.
    fn prepare(&self) -> io::Result<Prepared> {
        let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let candidates = candidates(&self.program, env.get(OsStr::new("PATH")).map(OsString::as_os_str))
            .into_iter()
            .map(|p| cstring(p.as_os_str()))
            .collect::<io::Result<Vec<_>>>()?;
        let argv = std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| cstring(a))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut pair = k.clone();
                pair.push("=");
                pair.push(v);
                cstring(&pair)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let null = if [&self.stdin, &self.stdout, &self.stderr].iter().any(|fd| fd.is_none()) {
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?
                    .into(),
            )
        } else {
            None
        };
        let mut stdio = [-1; 3];
        let mut kept = Vec::new();
        for (i, fd) in [&self.stdin, &self.stdout, &self.stderr].into_iter().enumerate() {
            let raw = fd.as_ref().or(null.as_ref()).map_or(-1, AsRawFd::as_raw_fd);
            // One of 0..2 would be overwritten by an earlier dup2: use a copy above them.
            stdio[i] = if raw < 3 {
                // SAFETY: fcntl on a descriptor we hold.
                let copy = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 3) };
                if copy < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh descriptor nothing else owns.
                kept.push(unsafe { OwnedFd::from_raw_fd(copy) });
                copy
            } else {
                raw
            };
        }
        Ok(Prepared {
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            candidates,
            _argv: argv,
            _envp: envp,
            cwd: self.cwd.as_ref().map(|c| cstring(c.as_os_str())).transpose()?,
            stdio,
            group: self.group,
            user: self.user.clone(),
            umask: self.umask,
            cgroups: self.cgroups.iter().map(|fd| fd.as_raw_fd()).collect(),
            _null: null,
            _kept: kept,
        })
    }
}

/// The paths exec tries, in order, as `execvp` would: a name without a slash on each
/// directory of the PATH the program gets (an empty entry is the working directory).
pub(crate) fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<PathBuf> {
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return vec![PathBuf::from(program)];
    }
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    path.as_bytes()
        .split(|b| *b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() {
                Path::new(".")
            } else {
                Path::new(OsStr::from_bytes(dir))
            };
            dir.join(program)
        })
        .collect()
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a NUL byte in {:?}: a program's arguments, environment and paths cannot hold one",
                s
            ),
        )
    })
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises it.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

/// What the child reads, and where it says why it failed.
struct Entry<'a> {
    prepared: &'a Prepared,
    failure: &'a Failure,
}

/// What the child reads.
struct Prepared {
    candidates: Vec<CString>,
    /// What the pointers point into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    stdio: [RawFd; 3],
    group: Group,
    user: Option<Ids>,
    umask: Option<libc::mode_t>,
    cgroups: Vec<RawFd>,
    /// Held open until the child has exec'd.
    _null: Option<OwnedFd>,
    _kept: Vec<OwnedFd>,
}

/// Which step of the child's failed, and with what errno (0: it exec'd).
#[derive(Default)]
struct Failure {
    step: AtomicI32,
    errno: AtomicI32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Cgroup,
    Group,
    Stdio,
    Terminal,
    Cwd,
    User,
    Exec,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Cgroup,
        Step::Group,
        Step::Stdio,
        Step::Terminal,
        Step::Cwd,
        Step::User,
        Step::Exec,
    ];

    fn doing(self) -> &'static str {
        match self {
            Step::Cgroup => "enter the cgroup",
            Step::Group => "start a process group",
            Step::Stdio => "set up stdin, stdout and stderr",
            Step::Terminal => "take the terminal",
            Step::Cwd => "change to the working directory",
            Step::User => "switch to the user",
            Step::Exec => "exec the program",
        }
    }
}

impl From<i32> for Step {
    fn from(n: i32) -> Step {
        Step::ALL
            .get(usize::try_from(n).unwrap_or(0))
            .copied()
            .unwrap_or(Step::Exec)
    }
}

/// The child's stack, with a guard page below it.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = STACK + GUARD;
        // SAFETY: a fresh private mapping, unmapped on drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is ours and lives as long as `self`; only the child uses it.
        unsafe { std::slice::from_raw_parts_mut(self.base.cast::<u8>().add(GUARD), self.len - GUARD) }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used (the child has exec'd or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The child, between clone and exec. Only async-signal-safe calls, nothing allocated.
///
/// # Safety
/// Called only as the child of a `CLONE_VM | CLONE_VFORK` clone, with every signal blocked.
unsafe fn child(p: &Prepared, failure: &Failure) -> isize {
    let fail = |step: Step| -> isize {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
        failure.step.store(step as i32, Ordering::SeqCst);
        failure
            .errno
            .store(if errno == 0 { libc::EINVAL } else { errno }, Ordering::SeqCst);
        // SAFETY: ends the child without running anything of kinski's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: system calls on the child's own state, with what the parent prepared.
    unsafe {
        // A handler of kinski's must not run here, in kinski's memory; an ignored SIGPIPE
        // (Rust's default) is the program's default again, as std does.
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN) || signal == libc::SIGPIPE {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let empty = empty_sigset();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        for fd in &p.cgroups {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail(Step::Cgroup);
            }
        }
        let grouped = match p.group {
            Group::Own => libc::setpgid(0, 0),
            Group::Terminal => libc::setsid(),
        };
        if grouped < 0 {
            return fail(Step::Group);
        }
        for (target, fd) in p.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                return fail(Step::Stdio);
            }
        }
        if p.group == Group::Terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            return fail(Step::Terminal);
        }
        if let Some(cwd) = &p.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            return fail(Step::Cwd);
        }
        if let Some(mask) = p.umask {
            libc::umask(mask);
        }
        if let Some(user) = &p.user
            && (libc::syscall(libc::SYS_setgroups, user.groups.len(), user.groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, user.gid) != 0
                || libc::syscall(libc::SYS_setuid, user.uid) != 0)
        {
            return fail(Step::User);
        }
        // As execvp: the first that runs; EACCES from one that was there wins over a later
        // ENOENT.
        let mut denied = false;
        for path in &p.candidates {
            libc::execve(path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => {}
                Some(libc::EACCES) => denied = true,
                _ => return fail(Step::Exec),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(Step::Exec)
    }
}

mod clone3;

#[cfg(test)]
mod tests;
