//! kinski's local journal: which attempts it started (with the group to kill) and which
//! completions herzog has not acknowledged yet, so a kinski restart loses no result.
//!
//! One append-only file of JSON lines, compacted at open and whenever dead records dominate.
//! Records are written, not fsynced: they survive kinski being killed (the page cache keeps
//! them); a power cut takes the children with it, and whatever herzog then misses it
//! requeues, so the worst case is a re-run, never a lost or double-counted result.

use common::AttemptId;
use common::wire::Completion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// A started attempt: enough to find its process group again and know it is still ours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Started {
    pub(crate) attempt: AttemptId,
    pub(crate) pgid: i32,
    /// The leader's start time in clock ticks since boot (/proc/<pid>/stat field 22): tells
    /// our process from a later one that reused the pid.
    pub(crate) starttime: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Start(Started),
    Done(Completion),
    Ack(AttemptId),
}

/// What a previous kinski left behind.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Started and not finished: their processes may still run.
    pub(crate) running: Vec<Started>,
    /// Finished, not acknowledged: to report.
    pub(crate) unacked: Vec<Completion>,
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

/// The open journal.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// Records in the file, and records still live: compaction compares the two.
    records: usize,
    started: BTreeMap<AttemptId, Started>,
    done: BTreeMap<AttemptId, Completion>,
}

impl Journal {
    /// Opens `<dir>/journal.jsonl`, reads what it holds, and compacts it.
    pub(crate) fn open(dir: &Path) -> Result<(Journal, Recovered), JournalError> {
        let path = dir.join("journal.jsonl");
        let io = |action, source| JournalError::Io {
            action,
            path: path.clone(),
            source,
        };
        let mut started = BTreeMap::new();
        let mut done = BTreeMap::new();
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(|e| io("read", e))?;
                    // A torn last line (kinski killed mid-write) is skipped: its attempt is
                    // then unknown here, and herzog requeues it.
                    let Ok(record) = serde_json::from_str::<Record>(&line) else {
                        continue;
                    };
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
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("open", e)),
        }
        let recovered = Recovered {
            running: started.values().cloned().collect(),
            unacked: done.values().cloned().collect(),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        // Attempts found running are dealt with by the caller; they are not kept.
        let mut journal = Journal {
            path,
            file,
            records: 0,
            started: BTreeMap::new(),
            done,
        };
        journal.compact()?;
        Ok((journal, recovered))
    }

    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(record).expect("journal records serialize");
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| JournalError::Io {
            action: "append to",
            path: self.path.clone(),
            source,
        })?;
        self.records += 1;
        if self.records > 10_000 && self.records > 4 * (self.started.len() + self.done.len()) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the live records (write a copy, then rename over).
    fn compact(&mut self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let io = |action, source| JournalError::Io {
            action,
            path: tmp.clone(),
            source,
        };
        let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(|e| io("create", e))?);
        let records: Vec<Record> = self
            .started
            .values()
            .cloned()
            .map(Record::Start)
            .chain(self.done.values().cloned().map(Record::Done))
            .collect();
        for r in &records {
            serde_json::to_writer(&mut out, r).expect("journal records serialize");
            out.write_all(b"\n").map_err(|e| io("write", e))?;
        }
        out.into_inner()
            .map_err(|e| io("write", e.into_error()))?
            .sync_all()
            .map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("rename", e))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io("reopen", e))?;
        self.records = records.len();
        Ok(())
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

    pub(crate) fn acked(&mut self, attempt: AttemptId) -> Result<(), JournalError> {
        self.started.remove(&attempt);
        if self.done.remove(&attempt).is_some() {
            self.append(&Record::Ack(attempt))?;
        }
        Ok(())
    }
}

/// The start time of a process (field 22 of /proc/<pid>/stat), if it exists.
pub(crate) fn process_starttime(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills what a previous kinski left running. Adopting is not possible: they are no longer
/// kinski's children, so their exit status and resource usage cannot be collected, and a
/// result without them cannot be trusted. herzog requeues them when kinski registers
/// without them.
pub(crate) fn kill_leftovers(running: &[Started]) -> usize {
    let mut killed = 0;
    for s in running {
        if process_starttime(s.pgid) == Some(s.starttime) {
            // SAFETY: plain syscall; the start time check makes sure the group is still ours.
            if unsafe { libc::killpg(s.pgid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::Exit;

    fn completion(a: i64) -> Completion {
        Completion {
            attempt: AttemptId(a),
            exit: Exit::Code(0),
            wall_ms: 1,
            cpu_ms: 1,
            peak_rss_kb: 1,
            finished_at: 0,
        }
    }

    #[test]
    fn recovers_running_and_unacknowledged_and_forgets_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, rec) = Journal::open(dir.path()).unwrap();
            assert!(rec.running.is_empty() && rec.unacked.is_empty());
            for a in 1..=3 {
                j.started(Started {
                    attempt: AttemptId(a),
                    pgid: 1,
                    starttime: 7,
                })
                .unwrap();
            }
            j.done(&completion(1)).unwrap();
            j.done(&completion(2)).unwrap();
            j.acked(AttemptId(1)).unwrap();
        }
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.running.iter().map(|s| s.attempt.0).collect::<Vec<_>>(), [3]);
        assert_eq!(rec.unacked, [completion(2)]);
        // Running leftovers are the caller's to kill; after a second open only the unacked remain.
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.running.is_empty());
        assert_eq!(rec.unacked, [completion(2)]);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = Journal::open(dir.path()).unwrap();
            j.done(&completion(5)).unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .unwrap();
        f.write_all(b"{\"done\":{\"attempt\":6,\"ex").unwrap();
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.unacked, [completion(5)]);
    }

    #[test]
    fn compaction_keeps_only_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for a in 1..=3000 {
            j.started(Started {
                attempt: AttemptId(a),
                pgid: 1,
                starttime: 1,
            })
            .unwrap();
            j.done(&completion(a)).unwrap();
            if a != 42 {
                j.acked(AttemptId(a)).unwrap();
            }
        }
        let lines = std::fs::read_to_string(dir.path().join("journal.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 9000, "{lines} lines: compaction did not run");
        drop(j);
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.unacked, [completion(42)]);
    }

    #[test]
    fn reads_this_process_start_time() {
        let me = std::process::id() as i32;
        assert!(process_starttime(me).is_some());
        assert_eq!(process_starttime(me), process_starttime(me));
        assert_eq!(process_starttime(i32::MAX), None);
    }
}
