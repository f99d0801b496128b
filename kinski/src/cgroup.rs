//! The one owner of cgroups in kinski: finding every process of a unit of work (a service
//! instance's placement now; an attempt once the resources issue lands), including those that
//! left its process group (`setsid`, `setpgid`), killing them all, and cleaning up.
//!
//! Where kinski can write a cgroup v2 hierarchy (as root), each unit gets a cgroup of its own:
//! `<cgroup2 mount>/herzog-kinski-<worker>-<hash>/<unit>`. The mount is the first `cgroup2` in
//! /proc/self/mountinfo (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host);
//! `<hash>` is FNV-1a (64 bits, stable across builds) of kinski's canonical state directory,
//! so two kinskis on one host never share a root even under one worker name (the tests run
//! several clusters at once), and a restarted kinski finds its predecessor's. A unit's name
//! is `instance-<run>-<instance>`: run ids never repeat. The child moves itself in before it
//! execs (it writes "0" to the cgroup's `cgroup.procs`, which kinski opened before the fork:
//! a write is async-signal-safe, and the kernel checks the opener's credentials), so nothing
//! it starts is ever outside. Killing writes `cgroup.kill` (Linux 5.14), or else SIGKILLs what
//! `cgroup.procs` lists until the cgroup is empty; then the cgroup is removed. At its start
//! kinski kills and removes whatever its predecessor left under its root; at a clean exit it
//! removes the (then empty) root.
//!
//! Elsewhere (not root, no cgroup v2) a unit's processes are found by walking /proc by parent
//! pid from the ones already known (the leader first): when it counts as running, and before
//! each stop signal. A kill stops (SIGSTOP, so none forks meanwhile) every live process known
//! and its descendants until a walk finds no new one, then SIGKILLs them. A process is known
//! by its pid and start time, so a reused pid is never taken for it. The limit: a child whose
//! parent exited before a walk saw it (reparented to init, as a double fork does) escapes.
//!
//! For the resources issue: processes live only in the leaves, so the root can enable
//! controllers in its `cgroup.subtree_control` (and the mount's) and a unit's cgroup take
//! `cpu.max`, `memory.max`, `pids.max`; attempts become a second kind of [`Unit`].

use crate::leftovers::{Stat, all_processes, stat};
use common::dirfd::DirFd;
use common::instances::{InstanceId, RunId};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the processes of a killed unit may take to be gone: SIGKILL is asynchronous, and
/// a process in an uninterruptible sleep dies when it wakes.
const GONE_WITHIN: Duration = Duration::from_secs(10);
/// How often to look again while waiting for processes to stop or die without a notification.
const LOOK_AGAIN: Duration = Duration::from_millis(2);
/// Walks before a kill gives up on a tree that keeps growing (each round stops what it found).
const MAX_ROUNDS: usize = 64;

/// Why a cgroup could not be made, emptied or removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("failed to create the cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to kill the processes of the cgroup {path}: {source}")]
    Kill {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the processes of the cgroup {path} were still there {waited_ms} ms after SIGKILL")]
    Lingering { path: PathBuf, waited_ms: u64 },
    #[error("failed to remove the cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a cgroup is made for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// One placement of a service instance.
    Instance { run: RunId, instance: InstanceId },
}

impl Unit {
    /// Its cgroup's name: unique for a kinski (run ids never repeat), readable by an admin.
    pub(crate) fn name(&self) -> String {
        match self {
            Unit::Instance { run, instance } => {
                format!("instance-{run}-{}", instance.to_string().replace([':', '@'], "_"))
            }
        }
    }
}

/// The name of the root a kinski's cgroups live under (see the module's documentation).
pub(crate) fn root_name(worker: &str, state_dir: &Path) -> String {
    let state_dir = state_dir.canonicalize().unwrap_or_else(|_| state_dir.to_path_buf());
    format!(
        "herzog-kinski-{worker}-{:016x}",
        fnv1a(state_dir.as_os_str().as_bytes())
    )
}

/// FNV-1a, 64 bits: the same on every build (std's hashers promise no such thing), so a
/// kinski upgraded in place finds its predecessor's root.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where cgroup v2 is mounted, from the text of /proc/self/mountinfo: the first mount whose
/// filesystem type (after the ` - ` separator) is `cgroup2`.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // id, parent, major:minor, root, mount point, ...
        let point = mount.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape(point)))
    })
}

/// mountinfo writes a space, tab, newline or backslash in a path as three octal digits
/// (`\040`).
fn unescape(text: &str) -> OsString {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// Whether cgroup.events' text says processes are left in the cgroup or below it.
pub(crate) fn populated(events: &str) -> Option<bool> {
    events
        .lines()
        .find_map(|l| l.strip_prefix("populated "))
        .map(|v| v.trim() != "0")
}

/// `roots` and every process below them, from each process's (pid, parent pid).
pub(crate) fn descendants(parents: &[(i32, i32)], roots: impl IntoIterator<Item = i32>) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &(pid, ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = BTreeSet::new();
    let mut todo: Vec<i32> = roots.into_iter().collect();
    while let Some(pid) = todo.pop() {
        if found.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    }
    found
}

/// How this kinski finds every process of a unit; chosen once, at its start.
#[derive(Clone, Debug)]
pub(crate) enum Tracking {
    /// A cgroup v2 for each unit, under this root.
    Cgroups(Arc<Root>),
    /// Walking /proc by parent pid, because no cgroup v2 can be written here, as `why` says.
    Walk { why: String },
}

impl std::fmt::Display for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tracking::Cgroups(root) => write!(f, "a cgroup each, under {}", root.path.display()),
            Tracking::Walk { why } => write!(
                f,
                "walking /proc for children ({why}; a child whose parent exits before it is seen escapes)"
            ),
        }
    }
}

/// The directory of a kinski's cgroups.
#[derive(Debug)]
pub(crate) struct Root {
    path: PathBuf,
    dir: DirFd,
    /// `cgroup.kill` exists (Linux 5.14 and later): one write kills a cgroup.
    kill_file: bool,
}

impl Tracking {
    /// Chooses how this kinski tracks its units and kills what its predecessor left in its
    /// cgroups; returns how many of those held processes. Blocking.
    pub(crate) fn start(worker: &str, state_dir: &Path) -> (Tracking, usize) {
        let root = match Root::open(worker, state_dir, true) {
            Ok(root) => Arc::new(root),
            Err(why) => return (Tracking::Walk { why }, 0),
        };
        let killed = Root::clean(&root);
        (Tracking::Cgroups(root), killed)
    }

    /// The processes of `unit`, about to start: its cgroup is made now. Blocking.
    pub(crate) fn tree(&self, unit: &Unit) -> Tree {
        let walk = || Tree(Arc::new(Kind::Walk(Mutex::default())));
        match self {
            Tracking::Walk { .. } => walk(),
            Tracking::Cgroups(root) => match Leaf::create(root, &unit.name()) {
                Ok(leaf) => Tree(Arc::new(Kind::Cgroup(leaf))),
                Err(e) => {
                    tracing::warn!(error = %e, "walking /proc for this unit's processes instead");
                    walk()
                }
            },
        }
    }

    /// Removes the root, empty once every unit is gone (kinski shutting down). Blocking.
    pub(crate) fn finish(&self) {
        if let Tracking::Cgroups(root) = self
            && let Err(e) = root.remove_self()
        {
            tracing::debug!(error = %e, "the cgroup root stays");
        }
    }
}

/// Where the cgroups of the kinski with this name and state directory are (or would be), if
/// cgroup v2 is mounted: for tests to look.
pub fn root_of(worker: &str, state_dir: &Path) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(cgroup2_mount(&mountinfo)?.join(root_name(worker, state_dir)))
}

/// Kills whatever runs in the cgroups of the kinski with this name and state directory, and
/// removes them: for a test harness that SIGKILLed its kinskis. Returns how many held
/// processes; none where there are none or no cgroup can be written. Blocking.
pub fn kill_and_remove(worker: &str, state_dir: &Path) -> usize {
    let Ok(root) = Root::open(worker, state_dir, false) else {
        return 0;
    };
    let root = Arc::new(root);
    let killed = Root::clean(&root);
    let _ = root.remove_self();
    killed
}

impl Root {
    /// Opens (and with `create`, makes) the root of a kinski's cgroups; the reason when there
    /// is none to be had.
    fn open(worker: &str, state_dir: &Path, create: bool) -> Result<Root, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("failed to read /proc/self/mountinfo: {e}"))?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 is mounted")?;
        let name = root_name(worker, state_dir);
        let path = mount.join(&name);
        let mount_dir = DirFd::open(&mount).map_err(|e| format!("failed to open {}: {e}", mount.display()))?;
        let dir = if create {
            mount_dir.create_dir(&name, 0o755)
        } else {
            mount_dir.open_dir(&name)
        }
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", mount.display()))?;
        let kill_file = rustix::fs::statat(&dir, "cgroup.kill", AtFlags::SYMLINK_NOFOLLOW).is_ok();
        Ok(Root { path, dir, kill_file })
    }

    /// Kills and removes every cgroup under the root (a predecessor's); returns how many held
    /// processes.
    fn clean(root: &Arc<Root>) -> usize {
        let Ok(entries) = std::fs::read_dir(&root.path) else {
            return 0;
        };
        let mut killed = 0;
        // Only directories are cgroups; the rest are the root's control files.
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let leaf = match root.dir.open_dir(&name) {
                Ok(dir) => Leaf {
                    root: Arc::clone(root),
                    path: root.path.join(&name),
                    name,
                    dir,
                    procs: None,
                },
                Err(_) => continue,
            };
            match leaf.kill().and_then(|n| leaf.remove().map(|()| n)) {
                Ok(n) => killed += usize::from(n > 0),
                Err(e) => tracing::warn!(error = %e, "failed to clean up a previous kinski's cgroup"),
            }
        }
        killed
    }

    fn remove_self(&self) -> io::Result<()> {
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        let name = self.path.file_name().unwrap_or_default();
        rustix::fs::unlinkat(DirFd::open(parent)?, name, AtFlags::REMOVEDIR)?;
        Ok(())
    }
}

/// One unit's cgroup.
#[derive(Debug)]
struct Leaf {
    root: Arc<Root>,
    path: PathBuf,
    name: String,
    dir: DirFd,
    /// Its `cgroup.procs`, open for writing, for the child to move itself in.
    procs: Option<Arc<OwnedFd>>,
}

impl Leaf {
    fn create(root: &Arc<Root>, name: &str) -> Result<Leaf, CgroupError> {
        let path = root.path.join(name);
        let failed = |source| CgroupError::Create {
            path: path.clone(),
            source,
        };
        let dir = root.dir.create_dir(name, 0o755).map_err(failed)?;
        let procs = rustix::fs::openat(
            &dir,
            "cgroup.procs",
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(e.into()))?;
        Ok(Leaf {
            root: Arc::clone(root),
            path: path.clone(),
            name: name.to_string(),
            dir,
            procs: Some(Arc::new(procs)),
        })
    }

    fn open(&self, name: &str, flags: OFlags) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// The processes in it now.
    fn pids(&self) -> io::Result<Vec<i32>> {
        let mut text = String::new();
        self.open("cgroup.procs", OFlags::RDONLY)?.read_to_string(&mut text)?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kills every process in it and waits until they are gone; returns how many there were.
    fn kill(&self) -> Result<usize, CgroupError> {
        let root = &self.root;
        let failed = |source| CgroupError::Kill {
            path: self.path.clone(),
            source,
        };
        let events = self.open("cgroup.events", OFlags::RDONLY).map_err(failed)?;
        let is_populated = || -> io::Result<bool> {
            let mut buf = [0u8; 256];
            let n = events.read_at(&mut buf, 0)?;
            Ok(populated(&String::from_utf8_lossy(&buf[..n])).unwrap_or(true))
        };
        let found = self.pids().map_err(failed)?.len();
        if found == 0 && !is_populated().map_err(failed)? {
            return Ok(0);
        }
        if root.kill_file {
            self.open("cgroup.kill", OFlags::WRONLY)
                .and_then(|mut f| f.write_all(b"1"))
                .map_err(failed)?;
        }
        let started = Instant::now();
        loop {
            if !is_populated().map_err(failed)? {
                return Ok(found);
            }
            if !root.kill_file {
                // Without cgroup.kill: what is listed now; a fork meanwhile is in the next list.
                for pid in self.pids().map_err(failed)? {
                    // SAFETY: plain syscall, on a process the cgroup holds.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if started.elapsed() >= GONE_WITHIN {
                return Err(CgroupError::Lingering {
                    path: self.path.clone(),
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                });
            }
            // cgroup.events polls with POLLPRI when it changes; the timeout covers a missed one.
            let mut fds = libc::pollfd {
                fd: events.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut fds, 1, 50) };
        }
    }

    fn remove(&self) -> Result<(), CgroupError> {
        match rustix::fs::unlinkat(&self.root.dir, self.name.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(CgroupError::Remove {
                path: self.path.clone(),
                source: e.into(),
            }),
        }
    }
}

/// Every process of one unit, found whichever way this kinski tracks; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Tree(Arc<Kind>);

#[derive(Debug)]
enum Kind {
    Cgroup(Leaf),
    /// The processes known to be the unit's: pid and start time.
    Walk(Mutex<BTreeMap<i32, u64>>),
}

impl Tree {
    /// Has the child of `command` move itself into the unit's cgroup before it execs, before
    /// any other `pre_exec` step (it is still root then).
    pub(crate) fn enter(&self, command: &mut std::process::Command) {
        let Kind::Cgroup(Leaf { procs: Some(procs), .. }) = &*self.0 else {
            return;
        };
        let procs = Arc::clone(procs);
        // SAFETY: write is async-signal-safe; the descriptor was opened before the fork and
        // stays open (the closure holds it) until the exec.
        unsafe {
            command.pre_exec(move || {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The unit's leader started as `pid`, at `starttime`.
    pub(crate) fn started(&self, pid: i32, starttime: u64) {
        if let Kind::Walk(known) = &*self.0 {
            known.lock().unwrap_or_else(|p| p.into_inner()).insert(pid, starttime);
        }
    }

    /// Whether [`Tree::remember`] does anything (it walks /proc: call it off the runtime).
    pub(crate) fn walks(&self) -> bool {
        matches!(&*self.0, Kind::Walk(_))
    }

    /// Walking /proc: adds every descendant of the processes known now, and forgets those
    /// gone. Blocking.
    pub(crate) fn remember(&self) {
        let Kind::Walk(known) = &*self.0 else {
            return;
        };
        let table: BTreeMap<i32, Stat> = all_processes().into_iter().collect();
        let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|pid, start| table.get(pid).is_some_and(|s| live(s, *start)));
        let parents: Vec<(i32, i32)> = table.iter().map(|(pid, s)| (*pid, s.ppid)).collect();
        for pid in descendants(&parents, known.keys().copied().collect::<Vec<_>>()) {
            if let Some(s) = table.get(&pid).filter(|s| s.state != 'Z') {
                known.entry(pid).or_insert(s.starttime);
            }
        }
    }

    /// Kills every process of the unit and waits until they are gone; returns how many there
    /// were. Call it once the leader is reaped. Blocking.
    pub(crate) fn kill(&self) -> Result<usize, CgroupError> {
        match &*self.0 {
            Kind::Cgroup(leaf) => leaf.kill(),
            Kind::Walk(known) => {
                let roots = std::mem::take(&mut *known.lock().unwrap_or_else(|p| p.into_inner()));
                Ok(kill_walked(roots))
            }
        }
    }

    /// Removes the unit's cgroup (emptied first, if anything is left). Blocking.
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        let Kind::Cgroup(leaf) = &*self.0 else {
            return Ok(());
        };
        match leaf.remove() {
            Err(CgroupError::Remove { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                leaf.kill()?;
                leaf.remove()
            }
            other => other,
        }
    }
}

/// A process as known, still there: the same start time, not a zombie.
fn live(s: &Stat, starttime: u64) -> bool {
    s.starttime == starttime && !matches!(s.state, 'Z' | 'X')
}

/// Sends `signal` to `pid` if it is still the process that started at `starttime`.
fn signal(pid: i32, starttime: u64, signal: libc::c_int) {
    if stat(pid).is_some_and(|s| s.starttime == starttime) {
        // SAFETY: plain syscall, on a process of the unit (checked by its start time).
        unsafe { libc::kill(pid, signal) };
    }
}

/// Waits until `done` says so, at most `limit`, looking every [`LOOK_AGAIN`]: another
/// process's state has no notification to wait on.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(LOOK_AGAIN);
    }
}

/// Stops (SIGSTOP) the live processes of `known` and everything below them until a walk finds
/// no new one, so none forks a child out of sight meanwhile; then SIGKILLs them all and waits
/// until they are gone. Returns how many there were.
fn kill_walked(known: BTreeMap<i32, u64>) -> usize {
    let mut stopped: BTreeMap<i32, u64> = BTreeMap::new();
    for _ in 0..MAX_ROUNDS {
        let table: BTreeMap<i32, Stat> = all_processes().into_iter().collect();
        let alive = |pid: &i32, start: &u64| table.get(pid).is_some_and(|s| live(s, *start));
        let roots: Vec<i32> = known
            .iter()
            .chain(stopped.iter())
            .filter(|(pid, start)| alive(pid, start))
            .map(|(pid, _)| *pid)
            .collect();
        let parents: Vec<(i32, i32)> = table.iter().map(|(pid, s)| (*pid, s.ppid)).collect();
        let new: Vec<(i32, u64)> = descendants(&parents, roots)
            .into_iter()
            .filter(|pid| !stopped.contains_key(pid))
            .filter_map(|pid| {
                table
                    .get(&pid)
                    .filter(|s| live(s, s.starttime))
                    .map(|s| (pid, s.starttime))
            })
            .collect();
        if new.is_empty() {
            break;
        }
        for (pid, start) in new {
            signal(pid, start, libc::SIGSTOP);
            stopped.insert(pid, start);
        }
        // Until each has stopped it may still fork: walk again only then.
        wait_until(Duration::from_secs(1), || {
            stopped
                .iter()
                .all(|(pid, start)| stat(*pid).is_none_or(|s| !live(&s, *start) || matches!(s.state, 'T' | 't')))
        });
    }
    for (pid, start) in &stopped {
        signal(*pid, *start, libc::SIGKILL);
    }
    wait_until(GONE_WITHIN, || {
        stopped
            .iter()
            .all(|(pid, start)| stat(*pid).is_none_or(|s| !live(&s, *start)))
    });
    stopped.len()
}

#[cfg(test)]
mod tests;
