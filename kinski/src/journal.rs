//! kinski's local journal: which attempts it started (with the group to kill) and which
//! completions herzog has not acknowledged yet, so a kinski restart loses no result.
//!
//! JSON lines in `journal.<generation>.jsonl`, appended to as attempts start, finish and are
//! acknowledged. Records are written, not fsynced: they survive kinski being killed (the page
//! cache keeps them); a power cut takes the children with it, and whatever herzog then misses
//! it requeues, so the worst case is a re-run, never a lost or double-counted result.
//!
//! Compaction (at open, and whenever dead records are most of the file) writes the live
//! records into the next generation's file. After the open it runs on a thread of its own:
//! writing and fsyncing a file can take long on a slow disk, and appends happen under the
//! supervisor's lock on the runtime. Appends go on meanwhile to the current file and are kept;
//! once the new file is written, the next append copies them into it, then a `checkpoint`
//! line, and appends go there. The checkpoint is the switch: recovery reads the newest file
//! that has one, so a crash at any moment leaves one complete journal (the old file until the
//! checkpoint is written, the new one from then on). The thread then removes the old file.

use common::AttemptId;
use common::instances::{InstanceEvent, InstanceId, RunId};
use common::wire::Completion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Records in the file beyond which it is compacted, once dead ones are most of it.
const COMPACT_AFTER: usize = 10_000;
/// The single file of kinskis before generations: read at open (as generation 0), then removed.
const LEGACY: &str = "journal.jsonl";

/// A started attempt: enough to find its process group again and know it is still ours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Started {
    pub(crate) attempt: AttemptId,
    pub(crate) pgid: i32,
    /// The leader's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells
    /// our process from a later one that reused the pid.
    pub(crate) starttime: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Start(Started),
    Done(Completion),
    Ack(AttemptId),
    /// A service instance's process started (its group to kill after a crash of kinski)...
    Instance(InstanceStarted),
    /// ...and is gone.
    InstanceEnded(RunId),
    /// What happened to an instance, until herzog has stored it...
    Event(InstanceEvent),
    /// ...as it has these.
    EventsAcked(Vec<(RunId, u32)>),
    /// The records above it are a complete journal: this file is the one in use.
    Checkpoint,
}

/// A service instance's process group, as [`Started`] is an attempt's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceStarted {
    pub(crate) run: RunId,
    /// Which instance, for its pid file (journals before it was recorded lack it).
    #[serde(default)]
    pub(crate) instance: Option<InstanceId>,
    pub(crate) pgid: i32,
    pub(crate) starttime: u64,
}

/// What a previous kinski left behind.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Started and not finished: their processes may still run.
    pub(crate) running: Vec<Started>,
    /// Finished, not acknowledged: to report.
    pub(crate) unacked: Vec<Completion>,
    /// Service instances whose processes may still run.
    pub(crate) instances: Vec<InstanceStarted>,
    /// Service instances' events herzog has not stored yet, oldest first.
    pub(crate) events: Vec<InstanceEvent>,
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("failed to {action} the journal {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a test may hold the compaction thread, as a disk that hangs would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// The new file is written, not yet fsynced.
    BeforeSync,
    /// The new file is fsynced and handed over; appends still go to the old one.
    Handed,
    /// Appends go to the new file; the old one is not removed yet.
    BeforeRemovingOld,
}

/// Called at each [`Stage`] of a compaction: nothing outside tests.
#[cfg(test)]
type Pause = Option<std::sync::Arc<dyn Fn(Stage) + Send + Sync>>;
#[cfg(not(test))]
#[derive(Clone)]
struct Pause;

#[cfg(test)]
const NO_PAUSE: Pause = None;
#[cfg(not(test))]
const NO_PAUSE: Pause = Pause;

#[cfg(test)]
fn pause_at(pause: &Pause, stage: Stage) {
    if let Some(pause) = pause {
        pause(stage);
    }
}

#[cfg(not(test))]
fn pause_at(_: &Pause, _: Stage) {}

/// The open journal.
pub(crate) struct Journal {
    dir: PathBuf,
    /// The generation of `file`.
    generation: u64,
    file: File,
    /// Records in the file, and records still live: compaction compares the two.
    records: usize,
    compact_after: usize,
    /// No compaction starts before `records` reaches this (set when one failed).
    retry_at: usize,
    started: BTreeMap<AttemptId, Started>,
    done: BTreeMap<AttemptId, Completion>,
    instances: BTreeMap<RunId, InstanceStarted>,
    events: BTreeMap<(RunId, u32), InstanceEvent>,
    compaction: Option<Compaction>,
    pause: Pause,
}

/// A compaction under way on its thread.
struct Compaction {
    generation: u64,
    /// Records in the snapshot the thread writes.
    snapshot: usize,
    /// Lines appended since the snapshot was taken, to copy into the new file at the switch.
    tail: Vec<u8>,
    tail_records: usize,
    /// The new file, once written and fsynced.
    written: mpsc::Receiver<File>,
    /// Told once appends go to the new file; dropped unsent, the thread removes the file.
    switched: Option<mpsc::Sender<()>>,
    thread: std::thread::JoinHandle<Result<(), JournalError>>,
}

impl Journal {
    /// Opens the journal in `dir`, reads what it holds, and compacts it.
    pub(crate) fn open(dir: &Path) -> Result<(Journal, Recovered), JournalError> {
        Self::open_compacting_after(dir, COMPACT_AFTER)
    }

    /// [`Journal::open`], compacting once the file holds more than `compact_after` records.
    pub(crate) fn open_compacting_after(
        dir: &Path,
        compact_after: usize,
    ) -> Result<(Journal, Recovered), JournalError> {
        let entries = std::fs::read_dir(dir).map_err(|source| JournalError::Io {
            action: "list",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((generation_of(e.file_name().to_str()?)?, e.path())))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut records = Vec::new();
        for (generation, path) in &files {
            if let Some(found) = read(path, *generation == 0)? {
                records = found;
                break;
            }
        }
        let mut started = BTreeMap::new();
        let mut done = BTreeMap::new();
        let mut instances = BTreeMap::new();
        let mut events = BTreeMap::new();
        for record in records {
            match record {
                Record::Start(s) => {
                    started.insert(s.attempt, s);
                }
                Record::Done(c) => {
                    started.remove(&c.attempt);
                    done.insert(c.attempt, c);
                }
                Record::Ack(a) => {
                    started.remove(&a);
                    done.remove(&a);
                }
                Record::Instance(i) => {
                    instances.insert(i.run, i);
                }
                Record::InstanceEnded(run) => {
                    instances.remove(&run);
                }
                Record::Event(e) => {
                    events.insert((e.run, e.n), e);
                }
                Record::EventsAcked(acked) => {
                    for key in acked {
                        events.remove(&key);
                    }
                }
                Record::Checkpoint => {}
            }
        }
        let recovered = Recovered {
            running: started.into_values().collect(),
            unacked: done.values().cloned().collect(),
            instances: instances.into_values().collect(),
            events: {
                let mut unacked: Vec<InstanceEvent> = events.values().cloned().collect();
                unacked.sort_by_key(|e| e.at);
                unacked
            },
        };
        // Attempts found running are dealt with by the caller; they are not kept.
        let generation = files.first().map_or(0, |(g, _)| *g) + 1;
        let mut snapshot: Vec<Record> = done
            .values()
            .cloned()
            .map(Record::Done)
            .chain(events.values().cloned().map(Record::Event))
            .collect();
        snapshot.push(Record::Checkpoint);
        let file = write_file(&dir.join(file_name(generation)), &snapshot, &NO_PAUSE)?;
        for (_, path) in files {
            remove(&path)?;
        }
        let journal = Journal {
            dir: dir.to_path_buf(),
            generation,
            file,
            records: snapshot.len(),
            compact_after,
            retry_at: 0,
            started: BTreeMap::new(),
            done,
            instances: BTreeMap::new(),
            events,
            compaction: None,
            pause: NO_PAUSE,
        };
        Ok((journal, recovered))
    }

    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let line = line_of(record);
        self.file.write_all(&line).map_err(|source| JournalError::Io {
            action: "append to",
            path: self.dir.join(file_name(self.generation)),
            source,
        })?;
        self.records += 1;
        if let Some(c) = &mut self.compaction
            && c.switched.is_some()
        {
            c.tail.extend_from_slice(&line);
            c.tail_records += 1;
        }
        self.advance_compaction(false);
        let live = self.started.len() + self.done.len() + self.instances.len() + self.events.len();
        if self.compaction.is_none() && self.records >= self.retry_at && self.records > self.compact_after.max(4 * live)
        {
            self.start_compaction();
        }
        Ok(())
    }

    /// Hands a snapshot of the live records to a thread that writes the next generation.
    fn start_compaction(&mut self) {
        let generation = self.generation + 1;
        let snapshot: Vec<Record> = self
            .started
            .values()
            .cloned()
            .map(Record::Start)
            .chain(self.done.values().cloned().map(Record::Done))
            .chain(self.instances.values().cloned().map(Record::Instance))
            .chain(self.events.values().cloned().map(Record::Event))
            .collect();
        let (written_tx, written) = mpsc::channel();
        let (switched, switched_rx) = mpsc::channel();
        let new = self.dir.join(file_name(generation));
        let old = self.dir.join(file_name(self.generation));
        let count = snapshot.len();
        let pause = self.pause.clone();
        let spawned = std::thread::Builder::new()
            .name("journal-compaction".into())
            .spawn(move || compact(&new, &old, &snapshot, &written_tx, &switched_rx, &pause));
        match spawned {
            Ok(thread) => {
                self.compaction = Some(Compaction {
                    generation,
                    snapshot: count,
                    tail: Vec::new(),
                    tail_records: 0,
                    written,
                    switched: Some(switched),
                    thread,
                });
            }
            Err(e) => self.compaction_failed(&e),
        }
    }

    /// Switches to the new file once it is written, and collects the thread once it is done;
    /// `block` waits for both (tests).
    fn advance_compaction(&mut self, block: bool) {
        let Some(mut c) = self.compaction.take() else { return };
        if c.switched.is_some() {
            let written = if block {
                c.written.recv().ok()
            } else {
                match c.written.try_recv() {
                    Ok(file) => Some(file),
                    Err(mpsc::TryRecvError::Empty) => {
                        self.compaction = Some(c);
                        return;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => None,
                }
            };
            match written {
                Some(file) => self.switch(&mut c, file),
                // The thread gave up; its error comes with its end.
                None => c.switched = None,
            }
        }
        if !block && !c.thread.is_finished() {
            self.compaction = Some(c);
            return;
        }
        match c.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.compaction_failed(&e),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Copies what was appended since the snapshot into the new file, then the checkpoint,
    /// and appends there from now on.
    fn switch(&mut self, c: &mut Compaction, mut file: File) {
        let mut bytes = std::mem::take(&mut c.tail);
        bytes.extend_from_slice(&line_of(&Record::Checkpoint));
        // Dropped unsent when the copy fails: the thread then removes the unfinished file.
        let switched = c.switched.take();
        match file.write_all(&bytes) {
            Ok(()) => {
                self.file = file;
                self.generation = c.generation;
                self.records = c.snapshot + c.tail_records + 1;
                if let Some(switched) = switched {
                    let _ = switched.send(());
                }
            }
            Err(source) => self.compaction_failed(&JournalError::Io {
                action: "write",
                path: self.dir.join(file_name(c.generation)),
                source,
            }),
        }
    }

    /// Not fatal: the current file stays in use and grows until the next try.
    fn compaction_failed(&mut self, e: &dyn std::fmt::Display) {
        tracing::warn!(error = %e, "failed to compact the journal; it grows until the next try");
        self.retry_at = self.records + self.compact_after;
    }

    /// Waits for a compaction under way to finish, switch files and remove the old one.
    #[cfg(test)]
    fn wait_for_compaction(&mut self) {
        self.advance_compaction(true);
    }

    pub(crate) fn started(&mut self, s: Started) -> Result<(), JournalError> {
        self.started.insert(s.attempt, s.clone());
        self.append(&Record::Start(s))
    }

    pub(crate) fn done(&mut self, c: &Completion) -> Result<(), JournalError> {
        self.started.remove(&c.attempt);
        self.done.insert(c.attempt, c.clone());
        self.append(&Record::Done(c.clone()))
    }

    pub(crate) fn instance_started(&mut self, i: InstanceStarted) -> Result<(), JournalError> {
        self.instances.insert(i.run, i.clone());
        self.append(&Record::Instance(i))
    }

    pub(crate) fn instance_event(&mut self, e: InstanceEvent) -> Result<(), JournalError> {
        self.events.insert((e.run, e.n), e.clone());
        self.append(&Record::Event(e))
    }

    pub(crate) fn events_acked(&mut self, acked: Vec<(RunId, u32)>) -> Result<(), JournalError> {
        for key in &acked {
            self.events.remove(key);
        }
        self.append(&Record::EventsAcked(acked))
    }

    pub(crate) fn instance_ended(&mut self, run: RunId) -> Result<(), JournalError> {
        if self.instances.remove(&run).is_some() {
            self.append(&Record::InstanceEnded(run))?;
        }
        Ok(())
    }

    pub(crate) fn acked(&mut self, attempt: AttemptId) -> Result<(), JournalError> {
        self.started.remove(&attempt);
        if self.done.remove(&attempt).is_some() {
            self.append(&Record::Ack(attempt))?;
        }
        Ok(())
    }
}

fn file_name(generation: u64) -> String {
    format!("journal.{generation}.jsonl")
}

/// The generation a journal file's name stands for (the legacy file is 0).
fn generation_of(name: &str) -> Option<u64> {
    if name == LEGACY {
        return Some(0);
    }
    let digits = name.strip_prefix("journal.")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn line_of(record: &Record) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).expect("journal records serialize");
    line.push(b'\n');
    line
}

/// The records of a journal file, if it is complete: it has a checkpoint, or is the legacy
/// file. A line that does not parse (kinski killed mid-write) is skipped: its attempt is then
/// unknown here, and herzog requeues it.
fn read(path: &Path, legacy: bool) -> Result<Option<Vec<Record>>, JournalError> {
    let io = |action, source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", e)),
    };
    let mut complete = legacy;
    let mut records = Vec::new();
    // Bytes, not text: a torn line may end inside a character.
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| io("read", e))?;
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Checkpoint) => complete = true,
            Ok(record) => records.push(record),
            Err(_) => {}
        }
    }
    Ok(complete.then_some(records))
}

/// Writes `records` to a new file at `path` and fsyncs it; removes it again on failure.
fn write_file(path: &Path, records: &[Record], pause: &Pause) -> Result<File, JournalError> {
    let io = |action, source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let written = (|| {
        let mut out = std::io::BufWriter::new(File::create(path).map_err(|e| io("create", e))?);
        for r in records {
            out.write_all(&line_of(r)).map_err(|e| io("write", e))?;
        }
        let file = out.into_inner().map_err(|e| io("write", e.into_error()))?;
        pause_at(pause, Stage::BeforeSync);
        file.sync_all().map_err(|e| io("sync", e))?;
        Ok(file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

fn remove(path: &Path) -> Result<(), JournalError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(JournalError::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The compaction thread: writes the snapshot to `new`, hands the file over, and once appends
/// go there, fsyncs it (the copied tail and the checkpoint) and removes `old`.
fn compact(
    new: &Path,
    old: &Path,
    snapshot: &[Record],
    written: &mpsc::Sender<File>,
    switched: &mpsc::Receiver<()>,
    pause: &Pause,
) -> Result<(), JournalError> {
    let file = write_file(new, snapshot, pause)?;
    let kept = file.try_clone().map_err(|source| JournalError::Io {
        action: "reopen",
        path: new.to_path_buf(),
        source,
    })?;
    if written.send(file).is_err() {
        // The journal is gone: this file never got its checkpoint.
        return remove(new);
    }
    pause_at(pause, Stage::Handed);
    if switched.recv().is_err() {
        // The journal is gone, or could not switch: this file never got its checkpoint.
        return remove(new);
    }
    pause_at(pause, Stage::BeforeRemovingOld);
    kept.sync_all().map_err(|source| JournalError::Io {
        action: "sync",
        path: new.to_path_buf(),
        source,
    })?;
    remove(old)
}

#[cfg(test)]
mod tests;
