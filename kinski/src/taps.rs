//! The output of each service placement and batch attempt, for followers (`hz tail`,
//! `hz logs -f`): a [`Tap`] per kept stream, living as long as the placement or attempt, and
//! a while after it so a follower can read its last bytes after it ended (a restart: the
//! follower finishes the old placement's stream, then moves on to the new one; an attempt:
//! the follower reads to its end, then learns how it ended).

use crate::stream::Tap;
use common::AttemptId;
use common::output::Stream;
use std::collections::{HashMap, VecDeque};

/// Ended placements or attempts whose output stays readable: a follower of each of them has
/// time to read what it had not yet, and each costs at most a few open files. Attempts end
/// far more often than placements (thousands a second for short programs), so more of them
/// are kept; a follower lagging past that many reads the rest from herzog's copy of the log.
const ENDED: usize = 16;
const ENDED_ATTEMPTS: usize = 64;

/// The streams kept of a placement or an attempt: `None` for one discarded or written to a
/// file the service names (kinski does not read those).
#[derive(Clone, Debug, Default)]
pub(crate) struct Taps {
    pub(crate) stdout: Option<Tap>,
    pub(crate) stderr: Option<Tap>,
}

impl Taps {
    /// The taps a placement keeps, by whether each stream is kept.
    pub(crate) fn new(stdout: bool, stderr: bool) -> Taps {
        Taps {
            stdout: stdout.then(Tap::default),
            stderr: stderr.then(Tap::default),
        }
    }

    /// One tap for both streams, for a program whose stdout and stderr go to one file.
    pub(crate) fn shared() -> Taps {
        let both = Tap::default();
        Taps {
            stdout: Some(both.clone()),
            stderr: Some(both),
        }
    }

    pub(crate) fn get(&self, stream: Stream) -> Option<&Tap> {
        match stream {
            Stream::Stdout => self.stdout.as_ref(),
            Stream::Stderr => self.stderr.as_ref(),
        }
    }

    /// The placement is gone: nothing more comes.
    fn end(&self) {
        self.stdout.iter().chain(&self.stderr).for_each(Tap::end);
    }
}

/// The taps of the last few placements (`K` = `RunId`) or attempts that ended here, newest
/// last.
#[derive(Debug)]
pub(crate) struct Ended<K> {
    kept: VecDeque<(K, Taps)>,
    most: usize,
}

impl<K> Default for Ended<K> {
    /// For placements: the last [`ENDED`].
    fn default() -> Self {
        Ended::keeping(ENDED)
    }
}

impl<K> Ended<K> {
    fn keeping(most: usize) -> Self {
        Ended {
            kept: VecDeque::new(),
            most,
        }
    }
}

impl<K: Copy + PartialEq> Ended<K> {
    /// `key` has ended: its followers get the rest and the end.
    pub(crate) fn add(&mut self, key: K, taps: Taps) {
        taps.end();
        self.kept.retain(|(k, _)| *k != key);
        self.kept.push_back((key, taps));
        while self.kept.len() > self.most {
            self.kept.pop_front();
        }
    }

    pub(crate) fn get(&self, key: K) -> Option<Taps> {
        self.kept.iter().find(|(k, _)| *k == key).map(|(_, t)| t.clone())
    }

    fn remove(&mut self, key: K) {
        self.kept.retain(|(k, _)| *k != key);
    }
}

/// The taps of the attempts a worker holds (from the acceptance of their start, so a
/// follower can wait on one still queued for a slot) and of those that ended lately.
#[derive(Debug)]
pub(crate) struct AttemptTaps {
    held: HashMap<AttemptId, Taps>,
    ended: Ended<AttemptId>,
}

impl Default for AttemptTaps {
    fn default() -> Self {
        AttemptTaps {
            held: HashMap::new(),
            ended: Ended::keeping(ENDED_ATTEMPTS),
        }
    }
}

impl AttemptTaps {
    /// An accepted attempt's taps: one per stream, or one for both when they share a file.
    pub(crate) fn open(&mut self, attempt: AttemptId, shared: bool) -> Taps {
        self.held
            .entry(attempt)
            .or_insert_with(|| if shared { Taps::shared() } else { Taps::new(true, true) })
            .clone()
    }

    /// The attempt is over (its output finished, or it never ran): followers get the rest and
    /// the end.
    pub(crate) fn end(&mut self, attempt: AttemptId) {
        if let Some(taps) = self.held.remove(&attempt) {
            self.ended.add(attempt, taps);
        }
    }

    /// An ended attempt's files are about to be removed (a staged attempt's directory, once
    /// herzog has its copies): its taps go now, so no descriptor keeps the space of a removed
    /// log in use. A follower still reading reads herzog's copy.
    pub(crate) fn forget(&mut self, attempt: AttemptId) {
        self.ended.remove(attempt);
    }

    /// The taps of an attempt held or lately ended.
    pub(crate) fn get(&self, attempt: AttemptId) -> Option<Taps> {
        self.held.get(&attempt).cloned().or_else(|| self.ended.get(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::tests::{start, supervisor};
    use common::instances::RunId;
    use common::output::Position;
    use std::time::Duration;

    #[test]
    fn only_the_last_ended_placements_stay_readable() {
        let mut ended = Ended::default();
        for run in 0..(ENDED as i64 + 3) {
            ended.add(RunId(run), Taps::new(true, false));
        }
        assert!(ended.get(RunId(2)).is_none());
        let last = ended.get(RunId(ENDED as i64 + 2)).expect("kept");
        assert!(last.get(Stream::Stdout).is_some() && last.get(Stream::Stderr).is_none());
    }

    /// How many bytes a tap says were written.
    async fn written(tap: &Tap) -> u64 {
        tap.read(Position::Last(0), 1, Duration::ZERO).await.length
    }

    #[tokio::test]
    async fn an_attempt_stays_readable_from_its_acceptance_until_a_while_after_its_end() {
        let mut taps = AttemptTaps::default();
        let first = taps.open(AttemptId(1), false);
        first.stdout.as_ref().expect("kept").wrote(3);
        // Opened again (herzog resent the start): the same streams.
        let again = taps.open(AttemptId(1), false);
        assert_eq!(written(again.stdout.as_ref().expect("kept")).await, 3);
        assert_eq!(written(again.stderr.as_ref().expect("kept")).await, 0);
        taps.end(AttemptId(1));
        let ended = taps.get(AttemptId(1)).expect("readable after its end");
        let chunk = ended
            .get(Stream::Stderr)
            .expect("kept")
            .read(Position::At(0), 10, Duration::from_secs(5))
            .await;
        assert!(chunk.end && chunk.bytes.is_empty(), "{chunk:?}");
        for attempt in 2..=(ENDED_ATTEMPTS as i64 + 1) {
            taps.open(AttemptId(attempt), true);
            taps.end(AttemptId(attempt));
        }
        assert!(taps.get(AttemptId(1)).is_none(), "only the last ones are kept");
        taps.forget(AttemptId(3));
        assert!(taps.get(AttemptId(3)).is_none());
        // A shared file: what is written to one is the other's too.
        let shared = taps.get(AttemptId(2)).expect("kept");
        shared.stdout.as_ref().expect("kept").wrote(7);
        assert_eq!(written(shared.stderr.as_ref().expect("kept")).await, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_reads_an_attempts_output_as_it_is_written_and_then_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = supervisor(dir.path(), 1, 1);
        // The program prints, then waits for a line on a FIFO the test holds open.
        let gate = dir.path().join("gate");
        nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let mut go = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&gate)
            .expect("fifo");
        let script = format!(
            "echo first; read line < {}; echo second >&2; echo third",
            gate.display()
        );
        s.start(start(dir.path(), 1, &script)).expect("accepted");
        // The one slot is taken: the next waits in the queue, and can be followed already.
        s.start(start(dir.path(), 2, "echo queued")).expect("queued");
        let wait = Duration::from_secs(20);
        let read =
            |attempt: i64, stream: Stream, at: u64| s.output(AttemptId(attempt), stream, Position::At(at), 1024, wait);
        let first = read(1, Stream::Stdout, 0).await.expect("held");
        assert_eq!((first.bytes.as_slice(), first.end), (&b"first\n"[..], false));
        // Nothing more until the gate opens: a read that waits briefly gets nothing.
        let none = s
            .output(AttemptId(1), Stream::Stdout, Position::At(6), 1024, Duration::ZERO)
            .await
            .expect("held");
        assert!(none.bytes.is_empty() && !none.end, "{none:?}");
        std::io::Write::write_all(&mut go, b"go\n").expect("open the gate");
        // The rest of each stream, then its end (the attempt is over), chunk after chunk.
        let rest = |attempt: i64, stream: Stream, mut at: u64| {
            let read = &read;
            async move {
                let mut all = Vec::new();
                loop {
                    let chunk = read(attempt, stream, at).await.expect("readable");
                    all.extend_from_slice(&chunk.bytes);
                    at = chunk.next_offset;
                    if chunk.end {
                        return all;
                    }
                }
            }
        };
        // A stream that never ended would be read for ever: the test fails instead.
        let ended = |all| async {
            tokio::time::timeout(Duration::from_secs(30), all)
                .await
                .expect("the stream ended")
        };
        assert_eq!(ended(rest(1, Stream::Stdout, 6)).await, b"third\n");
        assert_eq!(ended(rest(1, Stream::Stderr, 0)).await, b"second\n");
        assert_eq!(ended(rest(2, Stream::Stdout, 0)).await, b"queued\n");
        assert_eq!(
            s.output(AttemptId(9), Stream::Stdout, Position::At(0), 1024, wait)
                .await,
            Err(common::service::WorkerError::UnknownAttempt { attempt: AttemptId(9) })
        );
    }
}
