//! `hz logs PROJECT FRAGMENT -f [--stderr] [-c BYTES]`: the running attempt's output from its
//! start (or its last BYTES), then what it writes as it writes it, read from its worker
//! through herzog, until the attempt ends; exits 0 if it succeeded, 1 if not (pueue's
//! `follow`, supervisorctl's `tail -f`). A fragment that runs nothing has its logs printed
//! as `hz logs` prints them.
//!
//! The reads are [`super::chunks`]' (as `hz tail`'s); what is this command's own is the end:
//! after the stream's last byte, herzog answers once it has recorded how the attempt ended.

use super::chunks::{ASK_AGAIN, FOLLOW_WAIT_MS};
use crate::Outcome;
use crate::args::LogsArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::output::{AttemptOn, FragmentNow, FragmentOutput, FragmentRead, MAX_READ, Position, Stream};
use std::io::Write;

/// How a follow ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// The fragment ran nothing when asked: where it is.
    Idle(FragmentNow),
    /// The attempt read ended, and the fragment is now as `now` says.
    Attempt { attempt: AttemptOn, now: FragmentNow },
}

/// A follower's place: the attempt it reads (once the first answer named it) and where its
/// next read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reading {
    attempt: Option<AttemptOn>,
    at: Position,
}

/// What one answer means to the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Print this chunk (its bytes cut before it counted), then read on from `next`.
    Chunk {
        skipped: u64,
        next: Reading,
    },
    /// Nothing to read yet: ask again in a moment.
    Wait(Reading),
    Ended(Ended),
}

impl Reading {
    fn read(&self, args: &LogsArgs, stream: Stream) -> FragmentRead {
        FragmentRead {
            project: args.project.clone(),
            fragment: args.fragment.clone(),
            attempt: self.attempt.clone(),
            stream,
            position: self.at,
            max: MAX_READ,
            wait_ms: FOLLOW_WAIT_MS,
        }
    }

    /// Where the reader goes with `answer`; a chunk that ends the stream of an attempt
    /// herzog no longer shows running ends the follow.
    fn step(&self, answer: &FragmentOutput) -> Step {
        match answer {
            FragmentOutput::Idle { now } => Step::Ended(Ended::Idle(now.clone())),
            FragmentOutput::Starting { attempt } => Step::Wait(Reading {
                attempt: Some(attempt.clone()),
                at: self.at,
            }),
            FragmentOutput::Chunk { attempt, chunk, now } => {
                let runs = matches!(now, FragmentNow::Running { attempt: a, .. } if *a == attempt.attempt);
                if chunk.end && !runs {
                    return Step::Ended(Ended::Attempt {
                        attempt: attempt.clone(),
                        now: now.clone(),
                    });
                }
                Step::Chunk {
                    skipped: super::chunks::skipped(self.at, chunk),
                    next: Reading {
                        attempt: Some(attempt.clone()),
                        at: Position::At(chunk.next_offset),
                    },
                }
            }
        }
    }
}

pub(crate) async fn run(args: &LogsArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let at = match &args.bytes {
        Some(bytes) => Position::Last(super::chunks::parse_bytes(bytes)?),
        None => Position::At(0),
    };
    let stream = if args.stderr { Stream::Stderr } else { Stream::Stdout };
    let herzog = Herzog::connect(addr).await?;
    let ended = tokio::select! {
        ended = follow(&herzog, args, stream, at, out) => ended?,
        _ = tokio::signal::ctrl_c() => return Ok(Outcome::Interrupted),
    };
    let fragment = format!("fragment {} of project {}", args.fragment, args.project);
    match ended {
        Ended::Idle(now) => {
            let (state, outcome) = match &now {
                FragmentNow::Succeeded { .. } => ("it succeeded".to_string(), Outcome::Ok),
                FragmentNow::Failed { reason, .. } => (format!("it failed: {reason}"), Outcome::WorkFailed),
                FragmentNow::Pending | FragmentNow::Running { .. } => ("it waits for a slot".to_string(), Outcome::Ok),
            };
            note!("hz: {fragment} is not running ({state}): nothing to follow");
            let printed = LogsArgs {
                follow: false,
                bytes: None,
                ..args.clone()
            };
            // Boxed: `hz logs` calls this, and this calls it back (without -f).
            Box::pin(super::logs::run(&printed, addr, out)).await?;
            Ok(outcome)
        }
        Ended::Attempt { attempt, now } => Ok(match now {
            FragmentNow::Succeeded { attempt: a } if a == attempt.attempt => Outcome::Ok,
            FragmentNow::Failed {
                attempt: Some(a),
                reason,
            } if a == attempt.attempt => {
                note!("hz: {fragment} failed: {reason}");
                Outcome::WorkFailed
            }
            FragmentNow::Failed { reason, .. } => {
                note!("hz: attempt {} ended and {fragment} failed: {reason}", attempt.attempt);
                Outcome::WorkFailed
            }
            _ => {
                note!(
                    "hz: attempt {} of {fragment} ended, and the fragment goes again (a retry, or its worker was lost or stopped it): `hz logs {} {} -f` follows the next attempt once it runs",
                    attempt.attempt,
                    args.project,
                    args.fragment
                );
                Outcome::WorkFailed
            }
        }),
    }
}

/// Prints the attempt's stream from `at`, then what comes, until the attempt has ended.
async fn follow(
    herzog: &Herzog,
    args: &LogsArgs,
    stream: Stream,
    at: Position,
    out: &mut dyn Write,
) -> Result<Ended, CliError> {
    let mut reading = Reading { attempt: None, at };
    let mut waiting_said = false;
    loop {
        let answer = herzog.fragment_output(reading.read(args, stream)).await?;
        match reading.step(&answer) {
            Step::Ended(ended) => return Ok(ended),
            Step::Wait(next) => {
                if let (false, Some(on)) = (std::mem::replace(&mut waiting_said, true), &next.attempt) {
                    note!(
                        "hz: attempt {} is on its way to worker {}; waiting for it to start",
                        on.attempt,
                        on.worker
                    );
                }
                reading = next;
                tokio::time::sleep(ASK_AGAIN).await;
            }
            Step::Chunk { skipped, next } => {
                if let FragmentOutput::Chunk { chunk, .. } = &answer {
                    let what = format!("fragment {}'s {}", args.fragment, stream.name());
                    super::chunks::show(chunk, skipped, &what, out)?;
                }
                reading = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::AttemptId;

    fn on(attempt: i64) -> AttemptOn {
        AttemptOn {
            attempt: AttemptId(attempt),
            worker: "euclid".into(),
        }
    }

    fn chunk(attempt: i64, offset: u64, len: u64, end: bool, now: FragmentNow) -> FragmentOutput {
        FragmentOutput::Chunk {
            attempt: on(attempt),
            chunk: crate::commands::chunks::tests::x_chunk(offset, len, end),
            now,
        }
    }

    fn running(attempt: i64) -> FragmentNow {
        FragmentNow::Running {
            attempt: AttemptId(attempt),
            worker: "euclid".into(),
        }
    }

    #[test]
    fn a_reader_follows_one_attempt_to_the_end_of_its_stream_and_its_recorded_end() {
        let start = Reading {
            attempt: None,
            at: Position::Last(100),
        };
        // The first answer names the attempt; the reader stays with it.
        let Step::Chunk { skipped, next } = start.step(&chunk(7, 400, 100, false, running(7))) else {
            panic!("a chunk to print")
        };
        assert_eq!(skipped, 0);
        assert_eq!(
            next,
            Reading {
                attempt: Some(on(7)),
                at: Position::At(500)
            }
        );
        // Bytes capped away before this read are counted.
        let Step::Chunk { skipped, next } = next.step(&chunk(7, 540, 10, false, running(7))) else {
            panic!("a chunk to print")
        };
        assert_eq!((skipped, next.at), (40, Position::At(550)));
        // The stream ended while herzog still shows it running (its end not recorded yet in
        // the time the call had): read on.
        assert!(matches!(
            next.step(&chunk(7, 550, 0, true, running(7))),
            Step::Chunk { .. }
        ));
        // Recorded as ended, with bytes left to read: read on; at the stream's end: done.
        let done = FragmentNow::Succeeded { attempt: AttemptId(7) };
        assert!(matches!(
            next.step(&chunk(7, 550, 5, false, done.clone())),
            Step::Chunk { .. }
        ));
        assert_eq!(
            next.step(&chunk(7, 550, 5, true, done.clone())),
            Step::Ended(Ended::Attempt {
                attempt: on(7),
                now: done
            })
        );
    }

    #[test]
    fn a_fragment_not_running_ends_at_once_and_a_start_on_its_way_is_waited_for() {
        let start = Reading {
            attempt: None,
            at: Position::At(0),
        };
        assert_eq!(
            start.step(&FragmentOutput::Idle {
                now: FragmentNow::Pending
            }),
            Step::Ended(Ended::Idle(FragmentNow::Pending))
        );
        assert_eq!(
            start.step(&FragmentOutput::Starting { attempt: on(3) }),
            Step::Wait(Reading {
                attempt: Some(on(3)),
                at: Position::At(0)
            })
        );
    }
}
