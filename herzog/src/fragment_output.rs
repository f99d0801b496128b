//! `hz logs -f`: a fragment's running attempt's output, read from its worker over the
//! connection the worker opened and relayed one chunk per call, as `hz tail` reads a
//! service's ([`crate::services::rpc::relay_read`]); each answer says where the fragment is
//! after the read, so a follower stops once the attempt has ended and knows how it ended.
//!
//! The worker keeps an attempt's stream readable a while after its end, so a follower reads
//! it to its last byte. One it no longer holds (the follower lagged far behind, or the worker
//! is gone) is read from the log herzog has recorded, where that holds the stream byte for
//! byte (a log longer than the cap was cut, and its offsets are no longer the stream's).

use crate::api::Api;
use crate::machine::{Followed, attempt_paths};
use crate::services::rpc::{RELAY_MARGIN, relay_read};
use common::output::{
    AttemptOn, FragmentNow, FragmentOutput, FragmentRead, OutputChunk, OutputTarget, Position, Stream,
};
use common::service::WorkerError;
use common::{ApiError, AttemptId};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the worker gave no chunk.
enum Unread {
    /// It does not hold the attempt (not yet, or not any more).
    Unknown,
    /// It cannot be reached, or failed the read.
    Failed(String),
}

/// Answers a read of a fragment's output; `left` is how long herzog may take to answer.
pub(crate) async fn output(api: &Api, read: FragmentRead, left: Duration) -> Result<FragmentOutput, ApiError> {
    let started = Instant::now();
    let FragmentRead {
        project,
        fragment,
        attempt,
        stream,
        position,
        max,
        wait_ms,
    } = read;
    let asked = attempt.as_ref().map(|a| a.attempt);
    // A follower that names the attempt it reads gets the chunks before the last one without a
    // question to the loop each (at a commit's pace that was most of `hz run`'s time per
    // chunk): it only looks at where the fragment is once the stream has ended.
    if let Some(on) = &attempt
        && let Some(client) = api.connections.client(&on.worker)
    {
        let target = OutputTarget::Attempt {
            attempt: on.attempt,
            stream,
        };
        if let Ok(Ok(chunk)) = relay_read(&client, target, position, max, wait_ms, left).await
            && !chunk.end
        {
            let now = FragmentNow::Running {
                attempt: on.attempt,
                worker: on.worker.clone(),
            };
            return Ok(FragmentOutput::Chunk {
                attempt: on.clone(),
                chunk,
                now,
            });
        }
    }
    // What the read above took is not the caller's to wait again.
    let left = left.saturating_sub(started.elapsed());
    let followed = now(api, &project, &fragment, asked).await?;
    let on = match (attempt, &followed.now) {
        (Some(on), _) => on,
        (None, FragmentNow::Running { attempt, worker }) => AttemptOn {
            attempt: *attempt,
            worker: worker.clone(),
        },
        (None, _) => return Ok(FragmentOutput::Idle { now: followed.now }),
    };
    let running = runs(&followed.now, on.attempt);
    let target = OutputTarget::Attempt {
        attempt: on.attempt,
        stream,
    };
    let answer = match api.connections.client(&on.worker) {
        None => Err(Unread::Failed("it is not connected".to_string())),
        Some(client) => match relay_read(&client, target, position, max, wait_ms, left).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(WorkerError::UnknownAttempt { .. })) => Err(Unread::Unknown),
            Ok(Err(e)) => Err(Unread::Failed(e.to_string())),
            Err(e) => Err(Unread::Failed(format!("the read failed: {e}"))),
        },
    };
    match answer {
        Ok(chunk) => {
            let mut followed = followed;
            if chunk.end && running {
                // Its end comes right after its output's: wait for it here rather than have
                // the follower ask again and again.
                let rest = left.saturating_sub(started.elapsed()).saturating_sub(RELAY_MARGIN);
                api.handle.wait_attempt(on.attempt, rest).await?;
                followed = now(api, &project, &fragment, asked.or(Some(on.attempt))).await?;
            }
            Ok(FragmentOutput::Chunk {
                attempt: on,
                chunk,
                now: followed.now,
            })
        }
        // Dispatched, not yet there (its start or its input is on the way).
        Err(Unread::Unknown) if running => Ok(FragmentOutput::Starting { attempt: on }),
        Err(unread) => {
            // Lost meanwhile, perhaps: a worker that cannot be reached only matters while
            // its attempt runs.
            let followed = if running {
                now(api, &project, &fragment, Some(on.attempt)).await?
            } else {
                followed
            };
            if runs(&followed.now, on.attempt) {
                let reason = match unread {
                    Unread::Failed(reason) => reason,
                    Unread::Unknown => "it does not hold the attempt".to_string(),
                };
                return Err(ApiError::HostUnreachable {
                    instance: format!(
                        "attempt {} of fragment {} of project {project}",
                        on.attempt, followed.name
                    ),
                    worker: on.worker,
                    reason,
                });
            }
            let chunk = recorded(&followed, on.attempt, stream, position, max, api.max_log_bytes).await?;
            Ok(FragmentOutput::Chunk {
                attempt: on,
                chunk,
                now: followed.now,
            })
        }
    }
}

/// Where the fragment is now, by the machine.
async fn now(api: &Api, project: &str, fragment: &str, attempt: Option<AttemptId>) -> Result<Followed, ApiError> {
    let (p, f) = (project.to_string(), fragment.to_string());
    api.handle.query(move |m| m.fragment_now(&p, &f, attempt)).await?
}

/// Whether `attempt` is the fragment's running one.
fn runs(now: &FragmentNow, attempt: AttemptId) -> bool {
    matches!(now, FragmentNow::Running { attempt: a, .. } if *a == attempt)
}

/// The rest of an ended attempt's stream, from the log herzog recorded.
async fn recorded(
    followed: &Followed,
    attempt: AttemptId,
    stream: Stream,
    position: Position,
    max: u32,
    max_log_bytes: u64,
) -> Result<OutputChunk, ApiError> {
    let (out, err, _) = attempt_paths(&followed.results_dir, &followed.name, attempt);
    let path = match stream {
        Stream::Stdout => out,
        Stream::Stderr => err,
    };
    tokio::task::spawn_blocking(move || read_recorded(&path, position, max, max_log_bytes))
        .await
        .map_err(|e| ApiError::Storage {
            reason: format!("a background task failed: {e}"),
        })
}

/// At most `max` bytes of a recorded log from `position`, as a chunk of its stream that
/// nothing more follows. A log longer than `cap` was cut (its first half, a line saying what
/// was cut, its last half): no offset after its head is the stream's, so it ends where asked.
/// No file: the stream stayed empty.
fn read_recorded(path: &Path, position: Position, max: u32, cap: u64) -> OutputChunk {
    let Ok(file) = std::fs::File::open(path) else {
        return OutputChunk::ended(match position {
            Position::At(offset) => offset,
            Position::Last(_) => 0,
        });
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = match position {
        Position::At(offset) => offset,
        Position::Last(n) => length.saturating_sub(n),
    };
    if length > cap || offset >= length {
        return OutputChunk::ended(offset);
    }
    let want = (length - offset).min(u64::from(max.clamp(1, common::output::MAX_READ)));
    let mut bytes = vec![0; usize::try_from(want).unwrap_or(0)];
    let mut got = 0;
    while got < bytes.len() {
        match file.read_at(&mut bytes[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "failed to read a recorded log");
                break;
            }
        }
    }
    bytes.truncate(got);
    let next_offset = offset + got as u64;
    OutputChunk {
        offset,
        bytes,
        next_offset,
        length,
        end: next_offset >= length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_log_is_read_from_the_offset_asked_unless_it_was_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.7.stdout");
        std::fs::write(&log, b"first\nsecond\n").expect("write");
        let chunk = read_recorded(&log, Position::At(6), 4, 100);
        assert_eq!(chunk.bytes, b"seco");
        assert_eq!(
            (chunk.offset, chunk.next_offset, chunk.length, chunk.end),
            (6, 10, 13, false)
        );
        let rest = read_recorded(&log, Position::At(10), 100, 100);
        assert_eq!(rest.bytes, b"nd\n");
        assert!(rest.end);
        assert_eq!(read_recorded(&log, Position::Last(7), 100, 100).bytes, b"second\n");
        // Longer than the cap: cut, its offsets are not the stream's.
        let cut = read_recorded(&log, Position::At(6), 100, 10);
        assert!(cut.bytes.is_empty() && cut.end && cut.offset == 6, "{cut:?}");
        // No file: nothing was written.
        let none = read_recorded(&dir.path().join("a.7.stderr"), Position::At(0), 100, 100);
        assert!(none.bytes.is_empty() && none.end, "{none:?}");
    }
}
