//! What watching the files of `restart_on_change` decides, pure: through which directory each
//! path is watched, what an inotify event at some path means for it, which watches the
//! watcher must add or remove, and when a burst of changes is over. No IO: what is on disk
//! comes in as a [`Kind`] from the caller's probe, time as a monotonic [`Duration`].
//!
//! - A file (anything but a directory) is watched through its directory, not itself: editors
//!   save by writing a new file and renaming it over the old one, which a watch on the old
//!   file's inode would miss. Events are matched by its name.
//! - A directory is watched with everything below it (recursively).
//! - A path that does not exist yet is watched through its nearest existing ancestor until it
//!   appears; each directory created on the way moves the watch down, and its appearance
//!   counts as a change.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A burst of changes is over once no change came for this long: an editor's save, a deploy
/// tool writing a few files, or `cp -r` of a config tree give one restart, not one per write.
pub(crate) const QUIET: Duration = Duration::from_millis(500);
/// ...or at the latest this long after its first change, so a file written without pause
/// still restarts its instances.
pub(crate) const MOST: Duration = Duration::from_secs(5);
/// The files an event names; the others are counted.
pub(crate) const MAX_FILES: usize = 8;

/// What a path is on disk (links followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    /// A file, a link to one, a FIFO, ...: anything that is not a directory.
    Other,
    Missing,
}

/// How one path of `restart_on_change` is watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A file: through its directory, non-recursively, matched by name.
    File { path: PathBuf, dir: PathBuf },
    /// A directory: itself and everything below it.
    Dir { path: PathBuf },
    /// Not there: through its nearest existing ancestor, non-recursively, until it is.
    Missing { path: PathBuf, nearest: PathBuf },
}

impl Target {
    /// How to watch `path` (absolute), given what `probe` says is on disk.
    pub(crate) fn of(path: &Path, probe: impl Fn(&Path) -> Kind) -> Target {
        match probe(path) {
            Kind::Dir => return Target::Dir { path: path.into() },
            Kind::Other => {
                if let Some(dir) = path.parent() {
                    return Target::File {
                        path: path.into(),
                        dir: dir.into(),
                    };
                }
            }
            Kind::Missing => {}
        }
        // A file in a directory on the way is no directory either: climb past it.
        let nearest = path
            .ancestors()
            .skip(1)
            .find(|a| probe(a) == Kind::Dir)
            .unwrap_or(Path::new("/"));
        Target::Missing {
            path: path.into(),
            nearest: nearest.into(),
        }
    }

    /// The path of `restart_on_change` it watches.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Target::File { path, .. } | Target::Dir { path } | Target::Missing { path, .. } => path,
        }
    }

    /// The directory the watcher watches for it, and whether recursively.
    pub(crate) fn watch(&self) -> (&Path, bool) {
        match self {
            Target::File { dir, .. } => (dir, false),
            Target::Dir { path } => (path, true),
            Target::Missing { nearest, .. } => (nearest, false),
        }
    }
}

/// What an event says happened at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Created, written, its metadata changed, or renamed to here.
    Content,
    /// Removed, or renamed away.
    Gone,
}

/// What an event at a path means for a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hit {
    /// The file that changed, to restart for.
    pub(crate) changed: Option<PathBuf>,
    /// The target must be looked up again and its watch moved (a directory on its way
    /// appeared, or the watched directory itself went).
    pub(crate) rearm: bool,
}

/// What an event of class `class` at `at` means for `target`.
pub(crate) fn hit(target: &Target, at: &Path, class: Class) -> Hit {
    let changed = |p: &Path| Some(p.to_path_buf());
    match target {
        Target::File { path, .. } if at == path => Hit {
            changed: changed(path),
            rearm: false,
        },
        // Its directory went, and the file with it.
        Target::File { path, dir } if at == dir && class == Class::Gone => Hit {
            changed: changed(path),
            rearm: true,
        },
        Target::Dir { path } if at == path && class == Class::Gone => Hit {
            changed: changed(path),
            rearm: true,
        },
        Target::Dir { path } if at.starts_with(path) => Hit {
            changed: changed(at),
            rearm: false,
        },
        // Something on the way to it appeared (or it did): look again. Whether it is there
        // now decides the change (see [`appeared`]).
        Target::Missing { path, nearest } if at != nearest && path.starts_with(at) => Hit {
            changed: None,
            rearm: true,
        },
        Target::Missing { nearest, .. } if at == nearest && class == Class::Gone => Hit {
            changed: None,
            rearm: true,
        },
        _ => Hit::default(),
    }
}

/// Whether a target looked up again shows a change: a path that was missing is there now.
pub(crate) fn appeared(before: &Target, after: &Target) -> bool {
    matches!(before, Target::Missing { .. }) && !matches!(after, Target::Missing { .. })
}

/// The watches `targets` need: each directory once, recursive if any target needs it so,
/// and none inside a recursive one (it sees their events already).
pub(crate) fn wanted<'a>(targets: impl IntoIterator<Item = &'a Target>) -> BTreeMap<PathBuf, bool> {
    let mut all: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for t in targets {
        let (dir, recursive) = t.watch();
        *all.entry(dir.to_path_buf()).or_default() |= recursive;
    }
    let roots: Vec<PathBuf> = all.iter().filter(|(_, r)| **r).map(|(p, _)| p.clone()).collect();
    all.retain(|p, _| !roots.iter().any(|r| p != r && p.starts_with(r)));
    all
}

/// The watches to remove, then those to add, to go from `current` to `wanted`. Those in
/// `refresh` are removed and added again even if unchanged: their directory was replaced, and
/// the kernel's watch is on the old one.
pub(crate) fn reconcile(
    current: &BTreeMap<PathBuf, bool>,
    wanted: &BTreeMap<PathBuf, bool>,
    refresh: &BTreeSet<PathBuf>,
) -> (Vec<PathBuf>, Vec<(PathBuf, bool)>) {
    let remove = current
        .iter()
        .filter(|(p, r)| wanted.get(*p) != Some(*r) || refresh.contains(*p))
        .map(|(p, _)| p.clone())
        .collect();
    let add = wanted
        .iter()
        .filter(|(p, r)| current.get(*p) != Some(*r) || refresh.contains(*p))
        .map(|(p, r)| (p.clone(), *r))
        .collect();
    (remove, add)
}

/// One burst of changes of an instance's files, told once it is over.
#[derive(Debug, Default)]
pub(crate) struct Debounce {
    burst: Option<Burst>,
}

#[derive(Debug)]
struct Burst {
    first: Duration,
    last: Duration,
    /// The first [`MAX_FILES`] that changed, in order.
    files: Vec<PathBuf>,
    /// The others, counted once each.
    others: HashSet<PathBuf>,
}

/// What a burst changed: the first files, and how many others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) more: u32,
}

impl Debounce {
    /// `file` changed at `now`.
    pub(crate) fn change(&mut self, now: Duration, file: PathBuf) {
        let burst = self.burst.get_or_insert_with(|| Burst {
            first: now,
            last: now,
            files: Vec::new(),
            others: HashSet::new(),
        });
        burst.last = now;
        if burst.files.contains(&file) {
            return;
        }
        if burst.files.len() < MAX_FILES {
            burst.files.push(file);
        } else {
            burst.others.insert(file);
        }
    }

    /// When the burst is over, if one is going on.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.burst.as_ref().map(|b| (b.last + QUIET).min(b.first + MOST))
    }

    /// The burst's changes, once it is over at `now`; it is forgotten then.
    pub(crate) fn due(&mut self, now: Duration) -> Option<Changes> {
        if self.deadline()? > now {
            return None;
        }
        let b = self.burst.take()?;
        Some(Changes {
            files: b.files,
            more: u32::try_from(b.others.len()).unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod tests;
