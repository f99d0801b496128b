//! The one owner of cgroups in kinski: a cgroup for each unit of work (an attempt, a service
//! instance's placement) that finds every process of it, including those that left its
//! process group (`setsid`, `setpgid`), kills them all, holds it to its requests (memory,
//! CPUs), counts its peak memory and OOM kills, and is removed when the unit ends.
//!
//! Where kinski can write cgroups (as root), each kinski has a root of its own,
//! `herzog-kinski-<worker>-<hash>`, and each unit a cgroup below it named after the unit.
//! `<hash>` is FNV-1a (64 bits, stable across builds) of kinski's canonical state directory,
//! so two kinskis on one host never share a root even under one worker name (the tests run
//! several clusters at once), and a restarted kinski finds its predecessor's. Unit names never
//! repeat (attempt and run ids do not).
//!
//! Tracking (membership and killing) uses the cgroup v2 mount (the first `cgroup2` in
//! /proc/self/mountinfo: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host, where
//! it has no controllers but still tracks and kills), its root directly under the mount;
//! killing writes `cgroup.kill` (Linux 5.14), or else SIGKILLs what `cgroup.procs` lists until
//! `cgroup.events` says empty. With no cgroup v2, the v1 `freezer` hierarchy tracks: a kill
//! freezes the cgroup (so none forks meanwhile), SIGKILLs what it lists, and thaws it.
//!
//! Limits ([`LimitSupport`], said at registration): cgroup v2 when its mount offers the
//! `memory` and `cpu` controllers (kinski enables them in the mount's and its root's
//! `cgroup.subtree_control`; processes live only in the leaves, so that is allowed):
//! `memory.max`, `memory.swap.max = 0`, `cpu.max`. Else cgroup v1 when the `memory` and `cpu`
//! hierarchies are mounted: a root in each, under kinski's own cgroup there (so a unit's
//! `MemoryMax=` still covers them), with `memory.limit_in_bytes` (and `memsw`) and
//! `cpu.cfs_quota_us`. Else none. Only what a unit asked for is limited (on v1 a unit gets a
//! `memory` or `cpu` cgroup only when it asked for memory or CPUs). Every attempt and every
//! service instance has one.
//!
//! The child is born in its v2 cgroup (clone3's `CLONE_INTO_CGROUP`, [`crate::exec`]) and
//! moves itself into its v1 ones before it execs (it writes "0" to each `cgroup.procs`, which
//! kinski opened before: the kernel checks the opener's credentials), so nothing it starts is
//! ever outside. At its start kinski kills and
//! removes whatever its predecessor left under its roots; at a clean exit it removes the
//! (then empty) roots.
//!
//! Elsewhere (not root, no cgroups) a service instance's processes are found by walking /proc
//! ([`walk`]) and an attempt is its process group alone; nothing is limited but time (kept by
//! [`crate::process`]).

mod leaf;
pub(crate) mod mounts;
mod walk;

use common::AttemptId;
use common::dirfd::DirFd;
use common::instances::{InstanceId, RunId};
use common::requests::{LimitSupport, Requests};
pub(crate) use leaf::Usage;
use leaf::{Dir, KillBy, Leaf, Limiter};
use mounts::{cgroup_dir, cgroup1_mount, cgroup2_mount, lists, own_cgroup1};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the processes of a killed unit may take to be gone: SIGKILL is asynchronous, and
/// a process in an uninterruptible sleep dies when it wakes.
const GONE_WITHIN: Duration = Duration::from_secs(10);
/// How often to look again while waiting for processes to stop or die without a notification.
const LOOK_AGAIN: Duration = Duration::from_millis(2);
/// Walks before a kill gives up on a tree that keeps growing (each round stops what it found).
const MAX_ROUNDS: usize = 64;

/// Why a cgroup could not be made, emptied or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
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
    /// One attempt of a fragment.
    Attempt(AttemptId),
}

impl Unit {
    /// Its cgroup's name: unique for a kinski (ids never repeat), readable by an admin.
    pub(crate) fn name(&self) -> String {
        match self {
            Unit::Instance { run, instance } => {
                format!("instance-{run}-{}", instance.to_string().replace([':', '@'], "_"))
            }
            Unit::Attempt(attempt) => format!("attempt-{attempt}"),
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

/// How this kinski finds every process of a unit; chosen once, at its start.
#[derive(Clone, Debug)]
pub(crate) enum Tracking {
    /// A cgroup for each unit, under this root.
    Cgroups(Arc<Root>),
    /// Walking /proc by parent pid, because no cgroup can be written here, as `why` says.
    Walk { why: String },
}

impl std::fmt::Display for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tracking::Cgroups(root) => write!(f, "a cgroup each, under {}", root.track.path.display()),
            Tracking::Walk { why } => write!(
                f,
                "walking /proc for children ({why}; a child whose parent exits before it is seen escapes)"
            ),
        }
    }
}

/// The roots of a kinski's cgroups.
#[derive(Debug)]
pub(crate) struct Root {
    /// Where units' processes are tracked.
    track: Dir,
    kill: KillBy,
    limits: Limiter,
    /// Empty attempt cgroups kept for the next attempts (see [`Root::pools`]), by name.
    idle: Mutex<Vec<String>>,
    /// How many pooled cgroups were made: the next one's number.
    made: AtomicU64,
}

/// The most empty cgroups kept for reuse; more are removed.
const IDLE: usize = 256;

impl Tracking {
    /// Chooses how this kinski tracks and limits its units and kills what its predecessor left
    /// in its cgroups; returns how many of those held processes. Blocking.
    pub(crate) fn start(worker: &str, state_dir: &Path) -> (Tracking, usize) {
        let root = match Root::open(worker, state_dir, true) {
            Ok(root) => Arc::new(root),
            Err(why) => return (Tracking::Walk { why }, 0),
        };
        let killed = Root::clean(&root);
        (Tracking::Cgroups(root), killed)
    }

    /// Which limits this kinski enforces.
    pub(crate) fn limits(&self) -> LimitSupport {
        match self {
            Tracking::Cgroups(root) => root.support(),
            Tracking::Walk { .. } => LimitSupport::None,
        }
    }

    /// The processes of `unit`, about to start with `requests`: its cgroup is made now.
    /// Blocking.
    pub(crate) fn tree(&self, unit: &Unit, requests: &Requests) -> Tree {
        let walk = || Tree(Arc::new(Kind::Walk(Mutex::default())));
        match self {
            Tracking::Walk { .. } => walk(),
            Tracking::Cgroups(root) => match Leaf::create(root, &unit.name(), requests) {
                Ok(leaf) => Tree(Arc::new(Kind::Cgroup(leaf))),
                Err(e) => {
                    tracing::warn!(error = %e, "walking /proc for this unit's processes instead, without limits");
                    walk()
                }
            },
        }
    }

    /// An attempt's cgroup, made now with its requests' limits; none where there are no
    /// cgroups (its process group is then all there is of it). Blocking.
    pub(crate) fn attempt(&self, attempt: AttemptId, requests: &Requests) -> Result<Option<Tree>, CgroupError> {
        let Tracking::Cgroups(root) = self else {
            return Ok(None);
        };
        if !root.pools(requests) {
            let leaf = Leaf::create(root, &Unit::Attempt(attempt).name(), requests)?;
            return Ok(Some(Tree(Arc::new(Kind::Cgroup(leaf)))));
        }
        let name = root
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| format!("attempts-{}", root.made.fetch_add(1, Ordering::Relaxed)));
        // Made anew, or the empty one kept (mkdir finds it there and it is opened).
        let mut leaf = Leaf::create(root, &name, requests)?;
        leaf.pooled = true;
        Ok(Some(Tree(Arc::new(Kind::Cgroup(leaf)))))
    }

    /// Removes the roots, empty once every unit is gone (kinski shutting down). Blocking.
    pub(crate) fn finish(&self) {
        let Tracking::Cgroups(root) = self else {
            return;
        };
        for name in std::mem::take(&mut *root.idle.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = root.track.remove_child(&name);
        }
        if let Err(e) = root.remove_self() {
            tracing::debug!(error = %e, "the cgroup root stays");
        }
    }
}

/// Where the cgroups that track the units of the kinski with this name and state directory
/// are (or would be), if a cgroup hierarchy is mounted: for tests to look.
pub fn root_of(worker: &str, state_dir: &Path) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let parent = match cgroup2_mount(&mountinfo) {
        Some(mount) => mount,
        None => v1_parent(&mountinfo, &own, "freezer")?,
    };
    Some(parent.join(root_name(worker, state_dir)))
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

/// The directory kinski's root goes into in the v1 hierarchy of `controller`: kinski's own
/// cgroup there.
fn v1_parent(mountinfo: &str, own: &str, controller: &str) -> Option<PathBuf> {
    let (point, root) = cgroup1_mount(mountinfo, controller)?;
    let mine = own_cgroup1(own, controller).unwrap_or_else(|| "/".to_string());
    Some(cgroup_dir(&point, &root, &mine))
}

impl Root {
    /// Opens (and with `create`, makes) the roots of a kinski's cgroups; the reason when
    /// there is none to be had.
    fn open(worker: &str, state_dir: &Path, create: bool) -> Result<Root, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("failed to read /proc/self/mountinfo: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Root::open_in(&mountinfo, &own, &root_name(worker, state_dir), create)
    }

    /// [`Root::open`] by the texts of /proc/self/mountinfo and /proc/self/cgroup.
    fn open_in(mountinfo: &str, own: &str, name: &str, create: bool) -> Result<Root, String> {
        let make = |parent: &Path| -> Result<Dir, String> {
            let failed = |e: io::Error| format!("cannot create a cgroup in {}: {e}", parent.display());
            let parent = Dir {
                path: parent.to_path_buf(),
                dir: DirFd::open(parent).map_err(failed)?,
            };
            parent.child(name, create).map_err(failed)
        };
        let v2 = cgroup2_mount(mountinfo);
        let (track, kill, v2_mount) = match v2.as_deref().map(|m| (m, make(m))) {
            Some((mount, Ok(track))) => {
                let kill =
                    if rustix::fs::statat(&track.dir, "cgroup.kill", rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                        KillBy::CgroupKill
                    } else {
                        KillBy::Procs
                    };
                (track, kill, Some(mount.to_path_buf()))
            }
            v2 => {
                let parent = v1_parent(mountinfo, own, "freezer").ok_or_else(|| match v2 {
                    Some((_, Err(why))) => why,
                    _ => "neither cgroup v2 nor the v1 freezer is mounted".to_string(),
                })?;
                (make(&parent)?, KillBy::Freezer, None)
            }
        };
        let limits = match v2_mount {
            Some(mount) if create && enable_v2_controllers(&mount, &track) => Limiter::V2,
            _ => {
                let root = |controller| v1_parent(mountinfo, own, controller).and_then(|p| make(&p).ok());
                Limiter::V1 {
                    memory: root("memory"),
                    cpu: root("cpu"),
                }
            }
        };
        Ok(Root {
            track,
            kill,
            limits,
            idle: Mutex::default(),
            made: AtomicU64::new(0),
        })
    }

    /// Whether an attempt with `requests` gets a cgroup kept from an earlier one: where
    /// nothing of the cgroup's is read or limited (no request for CPUs or memory, and no v2
    /// controllers counting its peak). The first process in a new cgroup costs about a
    /// millisecond (measured: spawning `/bin/true` into a fresh cgroup 1.3 ms, into one that
    /// held a process before 0.13 ms), as much as a short attempt itself.
    fn pools(&self, requests: &Requests) -> bool {
        requests.cpus.is_none() && requests.memory_bytes.is_none() && !matches!(self.limits, Limiter::V2)
    }

    /// What its limits can enforce.
    fn support(&self) -> LimitSupport {
        match &self.limits {
            Limiter::V2 => LimitSupport::Cgroup2,
            Limiter::V1 {
                memory: Some(_),
                cpu: Some(_),
            } => LimitSupport::Cgroup1,
            _ => LimitSupport::None,
        }
    }

    /// Kills and removes every cgroup under the roots (a predecessor's); returns how many
    /// held processes.
    fn clean(root: &Arc<Root>) -> usize {
        let mut killed = 0;
        for name in children(&root.track.path) {
            let Ok(leaf) = Leaf::existing(root, &name) else {
                continue;
            };
            match leaf.kill().and_then(|n| leaf.remove().map(|()| n)) {
                Ok(n) => killed += usize::from(n > 0),
                Err(e) => tracing::warn!(error = %e, "failed to clean up a previous kinski's cgroup"),
            }
        }
        // v1 limit cgroups whose tracking one was gone already (their processes are).
        if let Limiter::V1 { memory, cpu } = &root.limits {
            for parent in [memory, cpu].into_iter().flatten() {
                for name in children(&parent.path) {
                    let _ = parent.remove_child(&name);
                }
            }
        }
        killed
    }

    fn remove_self(&self) -> io::Result<()> {
        let mut dirs = vec![&self.track];
        if let Limiter::V1 { memory, cpu } = &self.limits {
            dirs.extend([memory, cpu].into_iter().flatten());
        }
        let mut result = Ok(());
        for dir in dirs {
            let parent = dir.path.parent().unwrap_or(Path::new("/"));
            let name = dir.path.file_name().unwrap_or_default();
            if let Err(e) =
                DirFd::open(parent).and_then(|p| Ok(rustix::fs::unlinkat(&p, name, rustix::fs::AtFlags::REMOVEDIR)?))
            {
                result = Err(e);
            }
        }
        result
    }
}

/// Turns on the memory and cpu controllers for the units under `track` (and pids, where
/// offered); false where the v2 mount does not offer both.
fn enable_v2_controllers(mount: &Path, track: &Dir) -> bool {
    let Ok(offered) = std::fs::read_to_string(mount.join("cgroup.controllers")) else {
        return false;
    };
    if !(lists(&offered, "memory") && lists(&offered, "cpu")) {
        return false;
    }
    let wanted: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| lists(&offered, c))
        .collect();
    let text: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    let enable = |dir: &Path| -> io::Result<()> {
        let on = std::fs::read_to_string(dir.join("cgroup.subtree_control"))?;
        if wanted.iter().all(|c| lists(&on, c)) {
            return Ok(());
        }
        std::fs::write(dir.join("cgroup.subtree_control"), text.trim_end())
    };
    match enable(mount).and_then(|()| enable(&track.path)) {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(error = %e, "cannot enable the memory and cpu controllers of cgroup v2");
            false
        }
    }
}

/// The names of the directories (cgroups) in `path`: for tests too, to see what a kinski left.
pub fn children(path: &Path) -> Vec<String> {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
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
    /// Has the child of `command` born in the unit's v2 cgroup, and move itself into its v1
    /// ones before it execs (first of its steps: it is still root then).
    pub(crate) fn enter(&self, command: &mut crate::exec::Exec) {
        let Kind::Cgroup(leaf) = &*self.0 else {
            return;
        };
        let mut procs = leaf.procs.as_slice();
        if let (Some(dir), [track, rest @ ..]) = (&leaf.v2_dir, procs) {
            command.born_in(Arc::clone(dir), Arc::clone(track));
            procs = rest;
        }
        for each in procs {
            command.cgroup(Arc::clone(each));
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
        if let Kind::Walk(known) = &*self.0 {
            walk::remember(&mut known.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Its peak memory and OOM kills so far (none counted without a cgroup). Blocking.
    pub(crate) fn usage(&self) -> Usage {
        match &*self.0 {
            Kind::Cgroup(leaf) => leaf.usage(),
            Kind::Walk(_) => Usage::default(),
        }
    }

    /// The requests its cgroup was made with and holds it to (none without one).
    pub(crate) fn limited(&self) -> Requests {
        match &*self.0 {
            Kind::Cgroup(leaf) if leaf.root.support() != LimitSupport::None => leaf.requests,
            _ => Requests::default(),
        }
    }

    /// Kills every process of the unit and waits until they are gone; returns how many there
    /// were. Call it once the leader is reaped. Blocking.
    pub(crate) fn kill(&self) -> Result<usize, CgroupError> {
        match &*self.0 {
            Kind::Cgroup(leaf) => leaf.kill(),
            Kind::Walk(known) => {
                let roots = std::mem::take(&mut *known.lock().unwrap_or_else(|p| p.into_inner()));
                Ok(walk::kill_walked(roots))
            }
        }
    }

    /// Removes the unit's cgroups (emptied first, if anything is left). Blocking.
    pub(crate) fn remove(&self) -> Result<(), CgroupError> {
        let Kind::Cgroup(leaf) = &*self.0 else {
            return Ok(());
        };
        if leaf.pooled && !leaf.killed.load(Ordering::SeqCst) && leaf.track.pids().is_ok_and(|p| p.is_empty()) {
            let mut idle = leaf.root.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE {
                idle.push(leaf.name.clone());
                return Ok(());
            }
        }
        match leaf.remove() {
            Err(CgroupError::Remove { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                leaf.kill()?;
                leaf.remove()
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
