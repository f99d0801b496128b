//! The journal's tests: recovery, torn lines, compaction (that it runs, that appends do not
//! wait for it, and that a crash at any moment of it recovers everything).

use super::*;
use common::wire::Exit;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn completion(a: i64) -> Completion {
    Completion {
        limit: None,
        peak_memory_bytes: None,
        attempt: AttemptId(a),
        exit: Exit::Code(0),
        wall_ms: 1,
        cpu_ms: 1,
        peak_rss_kb: 1,
        finished_at: 0,
    }
}

fn start(a: i64) -> Started {
    Started {
        attempt: AttemptId(a),
        pgid: a as i32,
        starttime: a as u64,
    }
}

/// The journal files in `dir`, newest first.
fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| Some((generation_of(e.file_name().to_str()?)?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files.into_iter().map(|(_, p)| p).collect()
}

/// The lines of every journal file in `dir`.
fn journal_lines(dir: &Path) -> usize {
    journal_files(dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

#[test]
fn recovers_running_and_unacknowledged_and_forgets_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.running.is_empty() && rec.unacked.is_empty());
        for a in 1..=3 {
            j.started(start(a)).unwrap();
        }
        j.done(&completion(1)).unwrap();
        j.done(&completion(2)).unwrap();
        j.acked(AttemptId(1)).unwrap();
    }
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.running, [start(3)]);
    assert_eq!(rec.unacked, [completion(2)]);
    // Running leftovers are the caller's to kill; after a second open only the unacked remain.
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert!(rec.running.is_empty());
    assert_eq!(rec.unacked, [completion(2)]);
    assert_eq!(journal_files(dir.path()).len(), 1, "older generations are removed");
}

#[test]
fn a_torn_last_line_is_skipped_even_inside_a_character() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.done(&completion(5)).unwrap();
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal_files(dir.path())[0])
        .unwrap();
    f.write_all(b"{\"done\":{\"attempt\":6,\"exit\":{\"start_failed\":\"caf\xc3")
        .unwrap();
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.unacked, [completion(5)]);
}

#[test]
fn the_journal_of_an_older_kinski_is_read_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let legacy: Vec<u8> = [
        Record::Start(start(1)),
        Record::Start(start(2)),
        Record::Done(completion(2)),
    ]
    .iter()
    .flat_map(line_of)
    .collect();
    std::fs::write(dir.path().join(LEGACY), legacy).unwrap();
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.running, [start(1)]);
    assert_eq!(rec.unacked, [completion(2)]);
    assert_eq!(journal_files(dir.path()), [dir.path().join("journal.1.jsonl")]);
}

#[test]
fn a_newer_file_without_its_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let complete: Vec<u8> = [Record::Done(completion(1)), Record::Checkpoint]
        .iter()
        .flat_map(line_of)
        .collect();
    std::fs::write(dir.path().join("journal.5.jsonl"), complete).unwrap();
    // A compaction that had not switched yet: its snapshot, no checkpoint.
    std::fs::write(
        dir.path().join("journal.6.jsonl"),
        line_of(&Record::Done(completion(2))),
    )
    .unwrap();
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.unacked, [completion(1)]);
    assert_eq!(journal_files(dir.path()), [dir.path().join("journal.7.jsonl")]);
}

const SMALL: usize = 100;

#[test]
fn compaction_keeps_only_live_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open_compacting_after(dir.path(), SMALL).unwrap();
    for a in 1..=3000 {
        j.started(start(a)).unwrap();
        j.done(&completion(a)).unwrap();
        if a != 42 {
            j.acked(AttemptId(a)).unwrap();
        }
    }
    j.wait_for_compaction();
    // Generation 1 is the file open wrote; each compaction switches to the next.
    assert!(j.generation > 1, "compaction did not run");
    // Without compaction the file would hold 9,000 lines (8,999 records and open's
    // checkpoint); the first compaction alone, after 100 records of which 1 was live, drops
    // about as many. Appends go on while one runs, so how many more depends on the disk.
    let lines = journal_lines(dir.path());
    assert!(lines < 9000 - SMALL / 2, "{lines} lines: compaction did not run");
    drop(j);
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.unacked, [completion(42)]);
}

/// A pause hook that holds the compaction thread at each stage until `release` says go (or
/// is dropped), saying on `arrived` where it waits.
fn gated() -> (Pause, mpsc::Sender<()>, mpsc::Receiver<Stage>) {
    let (release, gate) = mpsc::channel::<()>();
    let (arrive, arrived) = mpsc::channel();
    let gate = Mutex::new(gate);
    let hook: Arc<dyn Fn(Stage) + Send + Sync> = Arc::new(move |stage| {
        let _ = arrive.send(stage);
        let _ = gate.lock().unwrap().recv();
    });
    (Some(hook), release, arrived)
}

#[test]
fn appends_go_on_while_a_compaction_waits_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open_compacting_after(dir.path(), SMALL).unwrap();
    // The disk hangs in the compaction's fsync until the test lets it go.
    let (pause, release, _) = gated();
    j.pause = pause;
    // Appends run where the supervisor would, on a thread of their own here.
    let (done, appended) = mpsc::channel();
    let n = 3 * SMALL as i64;
    let writer = std::thread::spawn(move || {
        for a in 1..=n {
            j.started(start(a)).unwrap();
            j.done(&completion(a)).unwrap();
            if a % 2 == 0 {
                j.acked(AttemptId(a)).unwrap();
            }
        }
        done.send(()).unwrap();
        j
    });
    let waited = appended.recv_timeout(Duration::from_secs(10));
    // Whatever happened, let the disk go so the thread can end.
    drop(release);
    assert!(waited.is_ok(), "appends waited for the compaction's fsync");
    let mut j = writer.join().unwrap();
    j.wait_for_compaction();
    assert!(j.generation > 1, "no compaction ran");
    drop(j);
    let (_, rec) = Journal::open(dir.path()).unwrap();
    let odd: Vec<Completion> = (1..=n).filter(|a| a % 2 == 1).map(completion).collect();
    assert_eq!(rec.unacked, odd);
    assert!(rec.running.is_empty());
}

/// xorshift64*: a seeded choice of operations.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Copies the journal files of `from` into a new directory: what a kinski restarted after
/// a SIGKILL at this moment would find (the page cache keeps every write).
fn crash_copy(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        // The compaction thread may remove a file meanwhile: then it is not there.
        if let Ok(bytes) = std::fs::read(&path) {
            std::fs::write(to.path().join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
    to
}

#[test]
fn a_crash_at_any_moment_of_compactions_recovers_every_start_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open_compacting_after(dir.path(), 8).unwrap();
    let (pause, release, arrived) = gated();
    j.pause = pause;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut running: BTreeSet<i64> = BTreeSet::new();
    let mut unacked: BTreeSet<i64> = BTreeSet::new();
    let mut next = 1;
    let mut compactions = 0;
    // Where the compaction thread waits, if it does.
    let mut waits: Option<Stage> = None;
    let mut seen: BTreeSet<Stage> = BTreeSet::new();
    for _ in 0..600 {
        let generation = j.generation;
        match rng.below(3) {
            0 => {
                j.started(start(next)).unwrap();
                running.insert(next);
                next += 1;
            }
            1 if !running.is_empty() => {
                let a = *running.iter().nth(rng.below(running.len())).unwrap();
                j.done(&completion(a)).unwrap();
                running.remove(&a);
                unacked.insert(a);
            }
            _ if !unacked.is_empty() => {
                let a = *unacked.iter().nth(rng.below(unacked.len())).unwrap();
                j.acked(AttemptId(a)).unwrap();
                unacked.remove(&a);
            }
            _ => continue,
        }
        compactions += usize::from(j.generation != generation);
        if let Ok(stage) = arrived.try_recv() {
            waits = Some(stage);
        }
        // The compaction thread moves on a stage now and then, so crashes land before its
        // fsync, after it, between the switch and the old file's removal, and between
        // compactions. Past its fsync it stops again where it hands the file over.
        if let Some(stage) = waits
            && rng.below(3) == 0
        {
            seen.insert(stage);
            release.send(()).unwrap();
            waits = (stage == Stage::BeforeSync).then(|| {
                arrived
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the thread went on")
            });
        }
        let copy = crash_copy(dir.path());
        let (_, rec) = Journal::open(copy.path()).unwrap();
        let found: Vec<i64> = rec.running.iter().map(|s| s.attempt.0).collect();
        assert_eq!(found, running.iter().copied().collect::<Vec<_>>(), "running");
        assert!(rec.running.iter().all(|s| *s == start(s.attempt.0)));
        let found: Vec<i64> = rec.unacked.iter().map(|c| c.attempt.0).collect();
        assert_eq!(found, unacked.iter().copied().collect::<Vec<_>>(), "unacknowledged");
    }
    assert_eq!(seen.len(), 3, "crashes at only some stages: {seen:?}");
    drop(release);
    j.wait_for_compaction();
    assert!(compactions >= 10, "only {compactions} compactions switched files");
}

#[test]
fn service_instances_and_their_events_are_recovered_until_ended_and_acknowledged() {
    use common::instances::{EventKind, InstanceEvent, InstanceId};
    let dir = tempfile::tempdir().unwrap();
    let event = |run: i64, n: u32| InstanceEvent {
        run: RunId(run),
        n,
        at: i64::from(n),
        instance: InstanceId {
            service: "web".into(),
            host: None,
            index: 0,
        },
        kind: EventKind::Stopped,
    };
    {
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for run in [1, 2] {
            j.instance_started(InstanceStarted {
                run: RunId(run),
                instance: Some(event(run, 0).instance),
                pgid: run as i32,
                starttime: 7,
            })
            .unwrap();
        }
        j.instance_ended(RunId(1)).unwrap();
        for n in 1..=3 {
            j.instance_event(event(2, n)).unwrap();
        }
        j.events_acked(vec![(RunId(2), 1)]).unwrap();
    }
    let (_, rec) = Journal::open(dir.path()).unwrap();
    let runs: Vec<RunId> = rec.instances.iter().map(|i| i.run).collect();
    assert_eq!(runs, [RunId(2)], "only the instance that had not ended");
    assert_eq!(
        rec.instances[0].instance.as_ref().map(|i| i.to_string()).as_deref(),
        Some("web:0")
    );
    assert_eq!(
        rec.events,
        [event(2, 2), event(2, 3)],
        "only the events not acknowledged"
    );
    // Reopened again: the events are still there (compaction at open keeps them).
    let (_, rec) = Journal::open(dir.path()).unwrap();
    assert_eq!(rec.events, [event(2, 2), event(2, 3)]);
}
