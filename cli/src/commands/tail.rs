//! `hz tail NAME[:N] [-f] [--stderr] [-c BYTES]`: the last bytes of a service instance's
//! output, read from its worker through herzog; `-f` goes on printing what it writes, across
//! restarts, until Ctrl-C.
//!
//! The reads, one chunk at a time, are [`super::chunks`]' (as `hz logs -f`'s); what is this
//! command's own is moving from placement to placement. Messages (bytes cut before they were
//! read, a restart, waiting for a placement) go to stderr.

use super::chunks::{ASK_AGAIN, FOLLOW_WAIT_MS, parse_bytes};
use crate::Outcome;
use crate::args::TailArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::ApiError;
use common::instances::RunId;
use common::output::{Follow, MAX_READ, Position, ServiceOutput, ServiceRead, Stream};
use std::io::Write;

/// Where a reader is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reading {
    /// The instance's current placement, from `from`; `ended` is the placement read to its
    /// end before (a follower waits until herzog shows the next one).
    Current { from: Position, ended: Option<RunId> },
    /// A placement being read, at `at`.
    Run { run: RunId, worker: String, at: u64 },
}

/// What one answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    next: Reading,
    /// Bytes cut away (rotated, capped) between what was asked and what came.
    skipped: u64,
    /// The answer is a new placement, after the one read to its end.
    moved: bool,
    /// herzog still shows the placement read to its end: nothing to print, ask again later.
    stale: bool,
}

impl Reading {
    /// The read that goes on from here.
    fn read(&self, instance: &str, stream: Stream, wait_ms: u64) -> ServiceRead {
        let (follow, position) = self.request();
        ServiceRead {
            instance: instance.to_string(),
            follow,
            stream,
            position,
            max: MAX_READ,
            wait_ms,
        }
    }

    fn request(&self) -> (Follow, Position) {
        match self {
            Reading::Current { from, .. } => (Follow::Current, *from),
            Reading::Run { run, worker, at } => (
                Follow::Run {
                    run: *run,
                    worker: worker.clone(),
                },
                Position::At(*at),
            ),
        }
    }

    /// Where the reader goes with `answer`.
    fn step(&self, answer: &ServiceOutput) -> Step {
        let ended = match self {
            Reading::Current { ended, .. } => *ended,
            Reading::Run { .. } => None,
        };
        if ended == Some(answer.run) {
            return Step {
                next: self.clone(),
                skipped: 0,
                moved: false,
                stale: true,
            };
        }
        let chunk = &answer.chunk;
        let skipped = super::chunks::skipped(self.request().1, chunk);
        let next = if chunk.end {
            Reading::Current {
                from: Position::At(0),
                ended: Some(answer.run),
            }
        } else {
            Reading::Run {
                run: answer.run,
                worker: answer.worker.clone(),
                at: chunk.next_offset,
            }
        };
        Step {
            next,
            skipped,
            moved: ended.is_some(),
            stale: false,
        }
    }
}

pub(crate) async fn run(args: &TailArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let bytes = parse_bytes(&args.bytes)?;
    let herzog = Herzog::connect(addr).await?;
    let stream = if args.stderr { Stream::Stderr } else { Stream::Stdout };
    if !args.follow {
        print_last(&herzog, &args.name, stream, bytes, out).await?;
        return Ok(Outcome::Ok);
    }
    tokio::select! {
        done = follow(&herzog, &args.name, stream, bytes, out) => done.map(|()| Outcome::Ok),
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Interrupted),
    }
}

/// Prints the last `bytes` written so far, and stops.
async fn print_last(
    herzog: &Herzog,
    name: &str,
    stream: Stream,
    bytes: u64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut reading = Reading::Current {
        from: Position::Last(bytes),
        ended: None,
    };
    let mut end = None;
    loop {
        let answer = herzog.service_output(reading.read(name, stream, 0)).await?;
        let step = reading.step(&answer);
        let length = *end.get_or_insert(answer.chunk.length);
        show(&answer, &step, stream, out)?;
        let more = !answer.chunk.bytes.is_empty() && !answer.chunk.end && answer.chunk.next_offset < length;
        if !more {
            return Ok(());
        }
        reading = step.next;
    }
}

/// Prints the last `bytes`, then whatever comes, across restarts, until interrupted.
async fn follow(herzog: &Herzog, name: &str, stream: Stream, bytes: u64, out: &mut dyn Write) -> Result<(), CliError> {
    let mut reading = Reading::Current {
        from: Position::Last(bytes),
        ended: None,
    };
    let mut waiting_said = false;
    loop {
        let answer = match herzog.service_output(reading.read(name, stream, FOLLOW_WAIT_MS)).await {
            Ok(answer) => answer,
            Err(CliError::Api(e @ ApiError::NotPlaced { .. })) => {
                if !std::mem::replace(&mut waiting_said, true) {
                    note!("hz: {e}; waiting for it to start");
                }
                tokio::time::sleep(ASK_AGAIN).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let step = reading.step(&answer);
        if step.stale {
            tokio::time::sleep(ASK_AGAIN).await;
            continue;
        }
        waiting_said = false;
        show(&answer, &step, stream, out)?;
        reading = step.next;
    }
}

/// Writes a chunk to stdout and what it means to stderr.
fn show(answer: &ServiceOutput, step: &Step, stream: Stream, out: &mut dyn Write) -> Result<(), CliError> {
    if step.moved {
        note!(
            "hz: {} was placed again (run {} on worker {}): following its {}",
            answer.instance,
            answer.run,
            answer.worker,
            stream.name()
        );
    }
    let what = format!("{}'s {}", answer.instance, stream.name());
    super::chunks::show(&answer.chunk, step.skipped, &what, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(run: i64, offset: u64, len: u64, end: bool) -> ServiceOutput {
        ServiceOutput {
            instance: "web:0".into(),
            run: RunId(run),
            worker: "euclid".into(),
            chunk: crate::commands::chunks::tests::x_chunk(offset, len, end),
        }
    }

    #[test]
    fn a_reader_goes_on_where_the_chunk_ended_and_says_what_was_cut() {
        let start = Reading::Current {
            from: Position::Last(100),
            ended: None,
        };
        assert_eq!(start.request(), (Follow::Current, Position::Last(100)));
        let step = start.step(&answer(7, 400, 100, false));
        assert_eq!((step.skipped, step.moved, step.stale), (0, false, false));
        let reading = step.next;
        assert_eq!(
            reading.request(),
            (
                Follow::Run {
                    run: RunId(7),
                    worker: "euclid".into()
                },
                Position::At(500)
            )
        );
        // 40 bytes were rotated away before this read.
        let step = reading.step(&answer(7, 540, 10, false));
        assert_eq!(step.skipped, 40);
        assert!(matches!(step.next, Reading::Run { at: 550, .. }));
    }

    #[test]
    fn after_a_placement_ends_the_reader_waits_for_the_next_and_reads_it_from_its_start() {
        let reading = Reading::Run {
            run: RunId(7),
            worker: "euclid".into(),
            at: 500,
        };
        let step = reading.step(&answer(7, 500, 20, true));
        let after = Reading::Current {
            from: Position::At(0),
            ended: Some(RunId(7)),
        };
        assert_eq!(step.next, after);
        // herzog still shows the old placement (the worker has not reported it gone yet).
        let step = after.step(&answer(7, 0, 520, true));
        assert!(step.stale && step.next == after);
        // The new one: read from its beginning, said on stderr.
        let step = after.step(&answer(8, 0, 30, false));
        assert!(step.moved && !step.stale);
        assert_eq!(step.skipped, 0);
        assert!(matches!(
            step.next,
            Reading::Run {
                run: RunId(8),
                at: 30,
                ..
            }
        ));
    }

    /// `hz local`'s wiring (herzog, a kinski and hz in one process, over in-memory links)
    /// carries the reads as TCP does: the same Worker and Coordinator calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_travel_the_in_process_links_too() {
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("services.toml");
        std::fs::write(
            &services,
            "[services.ticker]\ncommand = \"/bin/sh -c 'i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done'\"\nstartsecs = 0\n",
        )
        .unwrap();
        let (dialer, listener) = common::link::in_process();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut config = herzog::Config::new(dir.path().join("herzog"));
        config.services = Some(services);
        let herzog_task = tokio::spawn(herzog::run(
            config,
            herzog::Listener::InProcess(listener),
            stopped(rx.clone()),
        ));
        let kinski_task = tokio::spawn(kinski::run(
            kinski::Config {
                herzog: kinski::Herzog::InProcess(dialer.clone()),
                name: "local".into(),
                slots: 1,
                state_dir: dir.path().join("kinski"),
                run_as: Some(kinski::user::current_user()),
                service_users: Vec::new(),
                scratch_dir: None,
                pid_dir: None,
            },
            stopped(rx),
        ));
        let herzog = Herzog::connect(&Endpoint::new_in_process(dialer)).await.unwrap();
        // The first chunk waits for the instance to be placed and to print.
        let first = loop {
            let start = Reading::Current {
                from: Position::Last(1000),
                ended: None,
            };
            match herzog.service_output(start.read("ticker", Stream::Stdout, 5_000)).await {
                Ok(answer) if !answer.chunk.bytes.is_empty() => break answer,
                Ok(_) | Err(CliError::Api(ApiError::NotPlaced { .. })) => tokio::time::sleep(ASK_AGAIN).await,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(first.worker, "local");
        assert!(first.chunk.bytes.starts_with(b"line 0\n"), "{first:?}");
        // The next read waits for what comes after.
        let reading = Reading::Run {
            run: first.run,
            worker: first.worker.clone(),
            at: first.chunk.next_offset,
        };
        let next = herzog
            .service_output(reading.read("ticker", Stream::Stdout, 5_000))
            .await
            .unwrap();
        assert_eq!(next.chunk.offset, first.chunk.next_offset);
        assert!(next.chunk.bytes.starts_with(b"line "), "{next:?}");
        let _ = stop.send(true);
        herzog_task.await.unwrap().unwrap();
        kinski_task.await.unwrap().unwrap();
    }
}
