//! Finding a unit's processes without cgroups: walking /proc by parent pid from the ones
//! already known, and killing what was found (stopped first, so none forks out of sight).

use super::{GONE_WITHIN, LOOK_AGAIN, MAX_ROUNDS};
use crate::leftovers::{Stat, all_processes, stat};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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

/// Adds to `known` every live descendant of the processes in it, and forgets those gone.
pub(super) fn remember(known: &mut BTreeMap<i32, u64>) {
    let table: BTreeMap<i32, Stat> = all_processes().into_iter().collect();
    known.retain(|pid, start| table.get(pid).is_some_and(|s| live(s, *start)));
    let parents: Vec<(i32, i32)> = table.iter().map(|(pid, s)| (*pid, s.ppid)).collect();
    for pid in descendants(&parents, known.keys().copied().collect::<Vec<_>>()) {
        if let Some(s) = table.get(&pid).filter(|s| s.state != 'Z') {
            known.entry(pid).or_insert(s.starttime);
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
pub(super) fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(LOOK_AGAIN);
    }
}

/// Stops (SIGSTOP) the live processes of `known` and everything below them until a walk finds
/// no new one, so none forks a child out of sight meanwhile; then SIGKILLs them all and waits
/// until they are gone. Returns how many there were.
pub(super) fn kill_walked(known: BTreeMap<i32, u64>) -> usize {
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
