//! The kept output of each placement, for followers (`hz tail`): a [`Tap`] per kept stream,
//! living as long as the placement, and a while after it so a follower can read its last
//! bytes after it was stopped (a restart: the follower finishes the old placement's stream,
//! then moves on to the new one).

use crate::stream::Tap;
use common::instances::RunId;
use common::output::Stream;
use std::collections::VecDeque;

/// Ended placements whose output stays readable: a follower of each of them has time to read
/// what it had not yet, and each costs at most a few open files.
const ENDED: usize = 16;

/// A placement's kept streams: `None` for one discarded or written to a file the service
/// names (kinski does not read those).
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

/// The taps of the last [`ENDED`] placements that ended here, newest last.
#[derive(Debug, Default)]
pub(crate) struct Ended(VecDeque<(RunId, Taps)>);

impl Ended {
    /// `run` has ended: its followers get the rest and the end.
    pub(crate) fn add(&mut self, run: RunId, taps: Taps) {
        taps.end();
        self.0.retain(|(r, _)| *r != run);
        self.0.push_back((run, taps));
        while self.0.len() > ENDED {
            self.0.pop_front();
        }
    }

    pub(crate) fn get(&self, run: RunId) -> Option<Taps> {
        self.0.iter().find(|(r, _)| *r == run).map(|(_, t)| t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
