//! Streamed output on the wire: what a follower (`hz tail -f`, `hz logs -f`; later `hz run`)
//! asks a worker for, through herzog, and what comes back.
//!
//! A read names a stream and a byte offset in it and gets at most `max` bytes from there,
//! waiting up to `wait_ms` for bytes to come when there are none yet: a long poll. The caller
//! asks for the next chunk only once it has used the last, so a slow reader holds one chunk,
//! and nothing piles up anywhere. Offsets count every byte the program wrote to the stream,
//! so a chunk can say that bytes were cut away (rotated, or dropped by a log's cap) before
//! they were read: it starts later than asked.

use crate::AttemptId;
use crate::instances::RunId;
use serde::{Deserialize, Serialize};

/// The most bytes one read returns, whatever is asked: one chunk per call in flight is what
/// a follower costs a worker and herzog.
pub const MAX_READ: u32 = 1024 * 1024;
/// The longest one read waits for bytes to come.
pub const MAX_WAIT_MS: u64 = 30_000;
/// How far a job's (`hz run`) output may run ahead of what its follower has read: the worker
/// stops reading the program's pipe there, so a slow caller slows the program (as ssh does)
/// instead of growing anything, and no byte is cut from what the caller gets.
pub const JOB_WINDOW: u64 = 4 * 1024 * 1024;

/// Which of a program's two outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whose output a worker reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputTarget {
    /// One placement of a service instance: its kept output, one stream across the local
    /// restarts of that placement (each process's bytes follow the previous one's).
    Instance { run: RunId, stream: Stream },
    /// A batch attempt's stdout or stderr as its capped log keeps it (bytes the cap drops are
    /// skipped), from when its start was accepted until a while after it ended.
    Attempt { attempt: AttemptId, stream: Stream },
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// At this offset of the stream: where the last chunk ended.
    At(u64),
    /// The last this many bytes written so far (`hz tail -c N`).
    Last(u64),
}

/// A piece of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// The stream offset of `bytes`' first byte: later than asked when what lay between had
    /// been cut away before it was read (a rotated or capped file); never earlier.
    pub offset: u64,
    /// Base64 on the wire: JSON has no bytes, and an array of numbers is three times as long.
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
    /// Where the next read goes on: `offset + bytes.len()`.
    pub next_offset: u64,
    /// How long the stream was when this was read.
    pub length: u64,
    /// Nothing more will come: the writer is done (the placement has ended) and this chunk
    /// reached the stream's end.
    pub end: bool,
}

impl OutputChunk {
    /// No bytes at `offset`, with nothing more to come.
    pub fn ended(offset: u64) -> OutputChunk {
        OutputChunk {
            offset,
            bytes: Vec::new(),
            next_offset: offset,
            length: offset,
            end: true,
        }
    }
}

/// Which placement of an instance a follower reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Follow {
    /// The current one (the one being stopped while a restart waits for it, if none is
    /// placed yet).
    Current,
    /// One read before, on `worker`: a follower finishes a placement's stream before it moves
    /// to the next, even after herzog has forgotten that placement.
    Run { run: RunId, worker: String },
}

/// A read of a service instance's output, as hz asks herzog for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRead {
    /// `NAME` (its instance 0), `NAME:N`, or `NAME@HOST:N` for a service on every host.
    pub instance: String,
    pub follow: Follow,
    pub stream: Stream,
    pub position: Position,
    /// At most this many bytes (capped at [`MAX_READ`]).
    pub max: u32,
    /// How long to wait for bytes when there are none yet (capped at [`MAX_WAIT_MS`], and
    /// below the call's deadline).
    pub wait_ms: u64,
}

/// A chunk of an instance's output, and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOutput {
    /// `web:0`.
    pub instance: String,
    /// The placement read, and where it runs.
    pub run: RunId,
    pub worker: String,
    pub chunk: OutputChunk,
}

/// An attempt a follower reads, and the worker it runs on, as the first answer named them: it
/// is read to its end even once herzog has recorded that it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOn {
    pub attempt: AttemptId,
    pub worker: String,
}

/// A read of a fragment's running attempt's output, as hz asks herzog for it (`hz logs -f`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentRead {
    pub project: String,
    /// Its file name, or its index.
    pub fragment: String,
    /// `None` at the first read: the fragment's running attempt, if it has one.
    pub attempt: Option<AttemptOn>,
    pub stream: Stream,
    pub position: Position,
    /// At most this many bytes (capped at [`MAX_READ`]).
    pub max: u32,
    /// How long to wait for bytes when there are none yet (capped at [`MAX_WAIT_MS`], and
    /// below the call's deadline).
    pub wait_ms: u64,
}

/// Where a fragment is, as a follower of its output needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentNow {
    /// Waiting for a slot: never run, or back in the queue after an attempt was lost,
    /// stopped, or failed with retries left.
    Pending,
    /// An attempt is dispatched to `worker`: running there, or queued for one of its slots.
    Running {
        attempt: AttemptId,
        worker: String,
    },
    Succeeded {
        attempt: AttemptId,
    },
    Failed {
        attempt: Option<AttemptId>,
        reason: String,
    },
}

/// What a read of a fragment's output found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentOutput {
    /// A first read found no attempt running: nothing to follow (`hz logs` shows what the
    /// last one wrote).
    Idle { now: FragmentNow },
    /// The attempt is dispatched but its worker does not hold it yet (its start or its input
    /// is on the way): ask again shortly.
    Starting { attempt: AttemptOn },
    /// A chunk of the attempt's stream. `now` is the fragment after the read: `Running` with
    /// this attempt while it runs, where it went once its end is recorded (which an end of
    /// the stream is followed by shortly).
    Chunk {
        attempt: AttemptOn,
        chunk: OutputChunk,
        now: FragmentNow,
    },
}

/// `Vec<u8>` as a base64 string.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_carries_any_bytes_as_base64() {
        let chunk = OutputChunk {
            offset: 7,
            bytes: vec![0, 255, b'\n', b'a'],
            next_offset: 11,
            length: 20,
            end: false,
        };
        let text = serde_json::to_string(&chunk).unwrap();
        assert!(text.contains(r#""bytes":"AP8KYQ==""#), "{text}");
        assert_eq!(serde_json::from_str::<OutputChunk>(&text).unwrap(), chunk);
        assert!(serde_json::from_str::<OutputChunk>(&text.replace("AP8KYQ==", "!")).is_err());
    }
}
