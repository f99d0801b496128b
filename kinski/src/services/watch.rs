//! Watching the files of `restart_on_change` for the instances on this host: one inotify
//! watcher (the `notify` crate) for all of them, driven by a thread of its own (adding a
//! watch is blocking IO, and a recursive one walks a tree: not for the runtime). It looks up
//! each path ([`plan::Target`]), keeps the watches their targets need, matches each event to
//! the instances whose files it concerns, and once a burst of changes is over
//! ([`plan::Debounce`]) tells each such instance's task which files changed; the task's policy
//! restarts it or sends it its `change_signal`.
//!
//! Privilege: kinski may be root and the paths are the user's. inotify only reads: a watch
//! opens nothing, the look-ups are `stat`s, and links are not followed into a recursive walk.
//! The thread starts when the first instance watches a path; the inotify instance exists
//! only while some instance watches one.

mod plan;

use common::instances::RunId;
use notify::Watcher as _;
pub(crate) use plan::Changes;
use plan::{Class, Debounce, Kind, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How many times a change of watches is tried again when what is on disk changed between a
/// look-up and its watch (each try looks again; a path created a directory at a time moves
/// one down each time).
const TRIES: usize = 32;

/// What the watching thread is told.
enum Msg {
    /// Watch these paths for `run` from now on (none: stop watching for it).
    Watch {
        run: RunId,
        instance: String,
        paths: Vec<PathBuf>,
        tx: UnboundedSender<Changes>,
    },
    /// An event from inotify.
    Event(notify::Result<notify::Event>),
    /// Answered once everything sent before is done.
    Sync(tokio::sync::oneshot::Sender<()>),
    Shutdown,
}

/// The watches of this host's instances; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Watches {
    /// The watching thread, once started.
    thread: Arc<Mutex<Option<Thread>>>,
}

struct Thread {
    tx: mpsc::Sender<Msg>,
}

impl Drop for Thread {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}

impl Watches {
    /// Watches `paths` for placement `run` of `instance`, replacing what it watched before;
    /// each burst of changes is sent to `tx`. No paths: watches nothing for it.
    pub(crate) fn watch(&self, run: RunId, instance: &str, paths: Vec<PathBuf>, tx: UnboundedSender<Changes>) {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if paths.is_empty() && thread.is_none() {
            return;
        }
        if thread.is_none() {
            let (sender, rx) = mpsc::channel();
            let events = sender.clone();
            match std::thread::Builder::new()
                .name("kinski-watch".into())
                .spawn(move || Watching::new(events).run(&rx))
            {
                Ok(_) => *thread = Some(Thread { tx: sender }),
                Err(e) => {
                    tracing::error!(%instance, error = %e, "failed to start the thread that watches restart_on_change: its changes restart nothing");
                    return;
                }
            }
        }
        if let Some(t) = thread.as_ref() {
            let instance = instance.to_string();
            let _ = t.tx.send(Msg::Watch {
                run,
                instance,
                paths,
                tx,
            });
        }
    }

    /// Waits until the thread has done everything asked before (the watches are on).
    pub(crate) async fn settled(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = t.tx.send(Msg::Sync(tx));
        }
        let _ = rx.await;
    }

    /// Stops watching for placement `run`.
    pub(crate) fn unwatch(&self, run: RunId) {
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let (tx, _) = tokio::sync::mpsc::unbounded_channel();
            let _ = t.tx.send(Msg::Watch {
                run,
                instance: String::new(),
                paths: Vec::new(),
                tx,
            });
        }
    }
}

/// One placement's watched paths.
struct Sub {
    instance: String,
    targets: Vec<Target>,
    debounce: Debounce,
    tx: UnboundedSender<Changes>,
}

/// The watching thread's state.
struct Watching {
    origin: Instant,
    subs: BTreeMap<RunId, Sub>,
    /// The watcher, while anything is watched.
    watcher: Option<notify::RecommendedWatcher>,
    /// The directories it watches, and whether recursively.
    current: BTreeMap<PathBuf, bool>,
    /// Where the watcher sends its events.
    events: mpsc::Sender<Msg>,
}

impl Watching {
    fn new(events: mpsc::Sender<Msg>) -> Watching {
        Watching {
            origin: Instant::now(),
            subs: BTreeMap::new(),
            watcher: None,
            current: BTreeMap::new(),
            events,
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        loop {
            let next = self.subs.values().filter_map(|s| s.debounce.deadline()).min();
            let msg = match next {
                Some(at) => rx.recv_timeout((self.origin + at).saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Watch {
                    run,
                    instance,
                    paths,
                    tx,
                }) => {
                    if paths.is_empty() {
                        self.subs.remove(&run);
                    } else {
                        let targets = paths.iter().map(|p| Target::of(p, probe)).collect();
                        let debounce = self.subs.remove(&run).map(|s| s.debounce).unwrap_or_default();
                        tracing::debug!(%instance, ?targets, "watching restart_on_change");
                        self.subs.insert(
                            run,
                            Sub {
                                instance,
                                targets,
                                debounce,
                                tx,
                            },
                        );
                    }
                    self.apply(BTreeSet::new());
                }
                Ok(Msg::Event(Ok(event))) => self.event(&event),
                Ok(Msg::Event(Err(e))) => {
                    tracing::warn!(error = %e, paths = ?e.paths, "the watch of restart_on_change failed: a change there may restart nothing{}", hint(&e));
                }
                Ok(Msg::Sync(tx)) => drop(tx.send(())),
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.deliver();
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Matches an event to the placements whose files it concerns.
    fn event(&mut self, event: &notify::Event) {
        if event.need_rescan() {
            tracing::warn!(
                "the kernel's queue of file events overflowed: changes may have been missed; looking up every path of restart_on_change again"
            );
            let all = self
                .subs
                .iter()
                .flat_map(|(run, s)| (0..s.targets.len()).map(|i| (*run, i)))
                .collect();
            self.rearm(all);
            return;
        }
        let Some(class) = class_of(&event.kind) else {
            return;
        };
        let now = self.now();
        let mut rearm = BTreeSet::new();
        for (run, sub) in &mut self.subs {
            for (i, target) in sub.targets.iter().enumerate() {
                for at in &event.paths {
                    let hit = plan::hit(target, at, class);
                    if let Some(file) = hit.changed {
                        sub.debounce.change(now, file);
                    }
                    if hit.rearm {
                        rearm.insert((*run, i));
                    }
                }
            }
        }
        if !rearm.is_empty() {
            self.rearm(rearm);
        }
    }

    /// Looks these targets up again and moves their watches; one that appeared is a change.
    fn rearm(&mut self, targets: BTreeSet<(RunId, usize)>) {
        let refresh = self.look_again(&targets);
        self.apply(refresh);
    }

    /// Looks the targets up again; returns the directories to watch anew for them.
    fn look_again(&mut self, targets: &BTreeSet<(RunId, usize)>) -> BTreeSet<PathBuf> {
        let now = self.now();
        let mut refresh = BTreeSet::new();
        for (run, i) in targets {
            let Some(sub) = self.subs.get_mut(run) else { continue };
            let Some(target) = sub.targets.get_mut(*i) else {
                continue;
            };
            let after = Target::of(target.path(), probe);
            if plan::appeared(target, &after) {
                sub.debounce.change(now, after.path().to_path_buf());
            }
            refresh.insert(after.watch().0.to_path_buf());
            *target = after;
        }
        refresh
    }

    /// Brings the watcher's watches to what the targets need; `refresh` are watched anew.
    fn apply(&mut self, mut refresh: BTreeSet<PathBuf>) {
        for _ in 0..TRIES {
            let wanted = plan::wanted(self.subs.values().flat_map(|s| &s.targets));
            if wanted.is_empty() {
                // Nothing to watch: no inotify instance kept open for nothing.
                self.watcher = None;
                self.current.clear();
                return;
            }
            if !self.start_watcher() {
                return;
            }
            let Some(watcher) = self.watcher.as_mut() else { return };
            let (remove, add) = plan::reconcile(&self.current, &wanted, &refresh);
            for path in remove {
                // Gone already when its directory was removed: nothing to undo.
                let _ = watcher.unwatch(&path);
                self.current.remove(&path);
            }
            let mut vanished = BTreeSet::new();
            for (path, recursive) in add {
                let mode = match recursive {
                    true => notify::RecursiveMode::Recursive,
                    false => notify::RecursiveMode::NonRecursive,
                };
                match watcher.watch(&path, mode) {
                    Ok(()) => {
                        self.current.insert(path, recursive);
                    }
                    Err(e) if not_found(&e) => {
                        vanished.insert(path);
                    }
                    Err(e) => {
                        let instances: Vec<&str> = self
                            .subs
                            .values()
                            .filter(|s| s.targets.iter().any(|t| t.watch().0 == path))
                            .map(|s| s.instance.as_str())
                            .collect();
                        tracing::warn!(path = %path.display(), ?instances, error = %e, "failed to watch a directory of restart_on_change: changes there restart nothing{}", hint(&e));
                    }
                }
            }
            // A directory removed between its look-up and its watch, or one on the way to a
            // missing path (or the path itself) created meanwhile, would never be told of:
            // look those up again now that the watches are on.
            let again: BTreeSet<(RunId, usize)> = self
                .subs
                .iter()
                .flat_map(|(run, s)| s.targets.iter().enumerate().map(move |(i, t)| (*run, i, t)))
                .filter(|(_, _, t)| {
                    vanished.contains(t.watch().0)
                        || matches!(t, Target::Missing { .. }) && Target::of(t.path(), probe) != **t
                })
                .map(|(run, i, _)| (run, i))
                .collect();
            if again.is_empty() {
                return;
            }
            refresh = self.look_again(&again);
        }
    }

    /// Makes the watcher if there is none; false if it cannot be made.
    fn start_watcher(&mut self) -> bool {
        if self.watcher.is_none() {
            let events = self.events.clone();
            let config = notify::Config::default().with_follow_symlinks(false);
            match notify::RecommendedWatcher::new(move |e| drop(events.send(Msg::Event(e))), config) {
                Ok(w) => self.watcher = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "failed to start watching the files of restart_on_change: their changes restart nothing{}", hint(&e));
                    return false;
                }
            }
        }
        true
    }

    /// Tells each placement whose burst of changes is over.
    fn deliver(&mut self) {
        let now = self.now();
        for sub in self.subs.values_mut() {
            if let Some(changes) = sub.debounce.due(now) {
                tracing::info!(instance = %sub.instance, files = ?changes.files, more = changes.more, "files of restart_on_change changed");
                // Its task is gone: it unwatches as it ends.
                let _ = sub.tx.send(changes);
            }
        }
    }
}

/// What is at `path`, links followed: a `stat`, nothing opened.
fn probe(path: &Path) -> Kind {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Kind::Dir,
        Ok(_) => Kind::Other,
        Err(_) => Kind::Missing,
    }
}

/// What an event means for the files it names; `None`: nothing changed (opened, read,
/// closed after reading: the program reading its own config must not restart it).
fn class_of(kind: &notify::EventKind) -> Option<Class> {
    use notify::EventKind as E;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        E::Create(_) | E::Any => Some(Class::Content),
        E::Modify(ModifyKind::Name(RenameMode::To)) => Some(Class::Content),
        E::Modify(ModifyKind::Name(_)) | E::Remove(_) => Some(Class::Gone),
        E::Modify(_) => Some(Class::Content),
        E::Access(AccessKind::Close(AccessMode::Write)) => Some(Class::Content),
        E::Access(_) | E::Other => None,
    }
}

fn not_found(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// What to do about an error the host's limits cause.
fn hint(e: &notify::Error) -> &'static str {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            " (the host's inotify watches are used up: raise fs.inotify.max_user_watches)"
        }
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => {
            " (the host's inotify instances are used up: raise fs.inotify.max_user_instances)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests;
