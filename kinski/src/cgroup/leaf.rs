//! One unit's cgroups: made with the unit's limits, entered by its child before it execs,
//! read for its peak memory and OOM kills, killed (cgroup.kill, or freezing on v1) and
//! removed. The file contents for limits and the parsing of usage are pure, below.

use super::mounts::{keyed, populated};
use super::{CgroupError, GONE_WITHIN, Root, walk::wait_until};
use common::dirfd::DirFd;
use common::requests::Requests;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The CFS period a CPU request is a quota of (the kernel's default, 100 ms).
const PERIOD_US: u64 = 100_000;

/// The files, with their text, that hold `requests` on cgroup v2, in the order to write them.
/// Only what was asked for: an unrequested CPU count does not throttle.
pub(crate) fn v2_limits(requests: &Requests) -> Vec<(&'static str, String)> {
    let mut files = Vec::new();
    if let Some(bytes) = requests.memory_bytes {
        files.push(("memory.max", bytes.to_string()));
        // Swap counts against nothing else: without this a program would page out past its limit.
        files.push(("memory.swap.max", "0".to_string()));
    }
    if let Some(cpus) = requests.cpus {
        files.push(("cpu.max", format!("{} {PERIOD_US}", u64::from(cpus.max(1)) * PERIOD_US)));
    }
    files
}

/// The files of the v1 `memory` hierarchy that hold `requests`: memory.memsw after
/// memory.limit_in_bytes, which it may not be below.
pub(crate) fn v1_memory_limits(requests: &Requests) -> Vec<(&'static str, String)> {
    requests.memory_bytes.map_or_else(Vec::new, |bytes| {
        vec![
            ("memory.limit_in_bytes", bytes.to_string()),
            ("memory.memsw.limit_in_bytes", bytes.to_string()),
        ]
    })
}

/// The files of the v1 `cpu` hierarchy that hold `requests`.
pub(crate) fn v1_cpu_limits(requests: &Requests) -> Vec<(&'static str, String)> {
    requests.cpus.map_or_else(Vec::new, |cpus| {
        vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", (u64::from(cpus.max(1)) * PERIOD_US).to_string()),
        ]
    })
}

/// Files a kernel may lack (no swap accounting): their absence is no failure.
fn optional(file: &str) -> bool {
    matches!(file, "memory.swap.max" | "memory.memsw.limit_in_bytes")
}

/// What a unit's cgroup counted while it ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// The most memory its processes held at once (page cache included, as the kernel
    /// charges it), where a memory controller counted it.
    pub(crate) peak_bytes: Option<u64>,
    /// Processes the OOM killer killed in it.
    pub(crate) oom_kills: u64,
}

/// OOM kills from v2's `memory.events`.
pub(crate) fn v2_oom_kills(events: &str) -> u64 {
    keyed(events).get("oom_kill").copied().unwrap_or(0)
}

/// OOM kills from v1's `memory.oom_control` (its `oom_kill` line, Linux 4.13); before that,
/// an OOM under way (`under_oom`) counts as one.
pub(crate) fn v1_oom_kills(oom_control: &str) -> u64 {
    let fields = keyed(oom_control);
    fields
        .get("oom_kill")
        .copied()
        .unwrap_or_else(|| u64::from(fields.get("under_oom").is_some_and(|v| *v > 0)))
}

/// An open cgroup directory.
#[derive(Debug)]
pub(crate) struct Dir {
    pub(crate) path: PathBuf,
    pub(crate) dir: DirFd,
}

impl Dir {
    pub(crate) fn file(&self, name: &str, flags: OFlags) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    pub(crate) fn read(&self, name: &str) -> io::Result<String> {
        let mut text = String::new();
        self.file(name, OFlags::RDONLY)?.read_to_string(&mut text)?;
        Ok(text)
    }

    /// Writes `text` in one write, as a cgroup file wants it.
    pub(crate) fn write(&self, name: &str, text: &str) -> io::Result<()> {
        self.file(name, OFlags::WRONLY)?.write_all(text.as_bytes())
    }

    /// Writes each file; a missing optional one is skipped.
    fn write_all(&self, files: &[(&'static str, String)]) -> io::Result<()> {
        for (name, text) in files {
            match self.write(name, text) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && optional(name) => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{name}: {e}"))),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// The processes in it now.
    pub(crate) fn pids(&self) -> io::Result<Vec<i32>> {
        Ok(self
            .read("cgroup.procs")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// The child `name` (made with `create`).
    pub(crate) fn child(&self, name: &str, create: bool) -> io::Result<Dir> {
        let dir = if create {
            self.dir.create_dir(name, 0o755)?
        } else {
            self.dir.open_dir(name)?
        };
        Ok(Dir {
            path: self.path.join(name),
            dir,
        })
    }

    /// Removes the empty child `name`; one already gone is fine.
    pub(crate) fn remove_child(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `cgroup.procs`, open for writing, for a child to move itself in.
    fn procs(&self) -> io::Result<Arc<OwnedFd>> {
        Ok(Arc::new(OwnedFd::from(self.file("cgroup.procs", OFlags::WRONLY)?)))
    }

    /// Its peak memory and OOM kills, from the v2 files (where the memory controller is on).
    pub(crate) fn v2_usage(&self) -> Usage {
        Usage {
            peak_bytes: self.read("memory.peak").ok().and_then(|t| t.trim().parse().ok()),
            oom_kills: self.read("memory.events").map(|t| v2_oom_kills(&t)).unwrap_or(0),
        }
    }

    /// Its peak memory and OOM kills, from the v1 `memory` files.
    fn v1_usage(&self) -> Usage {
        Usage {
            peak_bytes: self
                .read("memory.max_usage_in_bytes")
                .ok()
                .and_then(|t| t.trim().parse().ok()),
            oom_kills: self.read("memory.oom_control").map(|t| v1_oom_kills(&t)).unwrap_or(0),
        }
    }
}

/// How a unit's processes are killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KillBy {
    /// v2's `cgroup.kill` (Linux 5.14): one write.
    CgroupKill,
    /// v2 without it: SIGKILL what `cgroup.procs` lists until `cgroup.events` says empty.
    Procs,
    /// v1's freezer: freeze (so none forks), SIGKILL what it lists, thaw.
    Freezer,
}

/// Where limits are set.
#[derive(Debug)]
pub(crate) enum Limiter {
    /// In the unit's own (v2) cgroup: the memory and cpu controllers are on under the root.
    V2,
    /// In a cgroup of each v1 hierarchy, under these roots (none: not mounted here).
    V1 { memory: Option<Dir>, cpu: Option<Dir> },
}

/// One unit's cgroups: the one its processes are tracked in, and the v1 ones limiting it.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub(crate) root: Arc<Root>,
    pub(crate) name: String,
    pub(crate) track: Dir,
    pub(crate) memory: Option<Dir>,
    pub(crate) cpu: Option<Dir>,
    /// `cgroup.procs` of each, open for writing, for the child to move itself in.
    pub(crate) procs: Vec<Arc<OwnedFd>>,
    /// The tracking cgroup's directory where it is v2, for the child to be born in.
    pub(crate) v2_dir: Option<Arc<OwnedFd>>,
    /// What it was made with.
    pub(crate) requests: Requests,
    /// Kept for the next attempt once empty, not removed.
    pub(crate) pooled: bool,
    /// Whether `cgroup.kill` was written: Linux 6.18 then SIGKILLs every child cloned into
    /// it (its kill count differs from the parent's), so it is never kept.
    pub(crate) killed: std::sync::atomic::AtomicBool,
}

impl Leaf {
    /// Makes the unit's cgroups, with `requests`' limits: on v1 a `memory` one only for a
    /// memory request, a `cpu` one only for a CPU request.
    pub(crate) fn create(root: &Arc<Root>, name: &str, requests: &Requests) -> Result<Leaf, CgroupError> {
        let failed = |path: &PathBuf| {
            let path = path.join(name);
            move |source| CgroupError::Create { path, source }
        };
        let track = root.track.child(name, true).map_err(failed(&root.track.path))?;
        let mut leaf = Leaf {
            root: Arc::clone(root),
            name: name.to_string(),
            procs: vec![track.procs().map_err(failed(&root.track.path))?],
            v2_dir: match root.kill {
                KillBy::Freezer => None,
                KillBy::CgroupKill | KillBy::Procs => Some(Arc::new(
                    track
                        .dir
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(failed(&root.track.path))?,
                )),
            },
            track,
            memory: None,
            cpu: None,
            requests: *requests,
            pooled: false,
            killed: Default::default(),
        };
        // Made before anything can fail, so a failure removes what was made (on drop of
        // `leaf` by the caller's remove).
        let result = (|| {
            match &root.limits {
                Limiter::V2 => leaf
                    .track
                    .write_all(&v2_limits(requests))
                    .map_err(failed(&root.track.path))?,
                Limiter::V1 { memory, cpu } => {
                    let wanted = [
                        (
                            memory.as_ref(),
                            requests.memory_bytes.is_some(),
                            v1_memory_limits(requests),
                        ),
                        (cpu.as_ref(), requests.cpus.is_some(), v1_cpu_limits(requests)),
                    ];
                    for (i, (parent, wanted, files)) in wanted.into_iter().enumerate() {
                        let Some(parent) = parent.filter(|_| wanted) else {
                            continue;
                        };
                        let dir = parent.child(name, true).map_err(failed(&parent.path))?;
                        let slot = if i == 0 { &mut leaf.memory } else { &mut leaf.cpu };
                        let dir = slot.insert(dir);
                        dir.write_all(&files).map_err(failed(&parent.path))?;
                        leaf.procs.push(dir.procs().map_err(failed(&parent.path))?);
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(leaf),
            Err(e) => {
                let _ = leaf.remove();
                Err(e)
            }
        }
    }

    /// A predecessor's cgroup `name`, to kill and remove.
    pub(crate) fn existing(root: &Arc<Root>, name: &str) -> io::Result<Leaf> {
        let (memory, cpu) = match &root.limits {
            Limiter::V1 { memory, cpu } => (
                memory.as_ref().and_then(|m| m.child(name, false).ok()),
                cpu.as_ref().and_then(|c| c.child(name, false).ok()),
            ),
            _ => (None, None),
        };
        Ok(Leaf {
            root: Arc::clone(root),
            name: name.to_string(),
            track: root.track.child(name, false)?,
            memory,
            cpu,
            procs: Vec::new(),
            v2_dir: None,
            requests: Requests::default(),
            pooled: false,
            killed: Default::default(),
        })
    }

    /// Its peak memory and OOM kills so far.
    pub(crate) fn usage(&self) -> Usage {
        match (&self.root.limits, &self.memory) {
            (Limiter::V2, _) => self.track.v2_usage(),
            (_, Some(memory)) => memory.v1_usage(),
            _ => Usage::default(),
        }
    }

    /// Kills every process in it and waits until they are gone; returns how many there were.
    pub(crate) fn kill(&self) -> Result<usize, CgroupError> {
        let failed = |source| CgroupError::Kill {
            path: self.track.path.clone(),
            source,
        };
        let lingering = |started: Instant| CgroupError::Lingering {
            path: self.track.path.clone(),
            waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        match self.root.kill {
            KillBy::Freezer => {
                let found = self.track.pids().map_err(failed)?;
                if found.is_empty() {
                    return Ok(0);
                }
                self.track.write("freezer.state", "FROZEN").map_err(failed)?;
                // FREEZING until every task is stopped; a task in an uninterruptible sleep
                // may hold it there: kill what is listed anyway after a while.
                wait_until(Duration::from_secs(1), || {
                    self.track.read("freezer.state").is_ok_and(|s| s.trim() == "FROZEN")
                });
                let pids = self.track.pids().map_err(failed)?;
                for pid in &pids {
                    // SAFETY: plain syscall, on a process the cgroup holds (a frozen one
                    // cannot exit, so its pid is not reused meanwhile).
                    unsafe { libc::kill(*pid, libc::SIGKILL) };
                }
                self.track.write("freezer.state", "THAWED").map_err(failed)?;
                let started = Instant::now();
                if !wait_until(GONE_WITHIN, || self.track.pids().is_ok_and(|p| p.is_empty())) {
                    return Err(lingering(started));
                }
                Ok(found.len().max(pids.len()))
            }
            KillBy::CgroupKill | KillBy::Procs => {
                let events = self.track.file("cgroup.events", OFlags::RDONLY).map_err(failed)?;
                let is_populated = || -> io::Result<bool> {
                    let mut buf = [0u8; 256];
                    let n = events.read_at(&mut buf, 0)?;
                    Ok(populated(&String::from_utf8_lossy(&buf[..n])).unwrap_or(true))
                };
                let found = self.track.pids().map_err(failed)?.len();
                if found == 0 && !is_populated().map_err(failed)? {
                    return Ok(0);
                }
                let kill_file = self.root.kill == KillBy::CgroupKill;
                if kill_file {
                    self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
                    self.track.write("cgroup.kill", "1").map_err(failed)?;
                }
                let started = Instant::now();
                loop {
                    if !is_populated().map_err(failed)? {
                        return Ok(found);
                    }
                    if !kill_file {
                        // What is listed now; a fork meanwhile is in the next list.
                        for pid in self.track.pids().map_err(failed)? {
                            // SAFETY: plain syscall, on a process the cgroup holds.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                    if started.elapsed() >= GONE_WITHIN {
                        return Err(lingering(started));
                    }
                    // cgroup.events polls with POLLPRI when it changes; the timeout covers a
                    // missed one.
                    let mut fds = libc::pollfd {
                        fd: events.as_raw_fd(),
                        events: libc::POLLPRI,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut fds, 1, 50) };
                }
            }
        }
    }

    /// Removes its cgroups (they must be empty).
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        let failed = |path: &PathBuf| {
            let path = path.join(&self.name);
            move |source| CgroupError::Remove { path, source }
        };
        let root = &self.root;
        root.track.remove_child(&self.name).map_err(failed(&root.track.path))?;
        if let Limiter::V1 { memory, cpu } = &root.limits {
            for (made, parent) in [(&self.memory, memory), (&self.cpu, cpu)] {
                if let (Some(_), Some(parent)) = (made, parent) {
                    parent.remove_child(&self.name).map_err(failed(&parent.path))?;
                }
            }
        }
        Ok(())
    }
}
