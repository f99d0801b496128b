//! Output reads for followers (`hz tail -f`, `hz logs -f`; `hz run` to come): a stream's
//! bytes by offset, read from the files its writer keeps, waiting for more when there is none.
//!
//! A stream is numbered by every byte the program wrote to it, across the files that hold it:
//! each process of a service placement starts a new file (a crash restarted here, the old
//! file kept beside as `.1`), and a writer that rotates at a size starts one too. Its writer
//! ([`crate::output::Log`]) keeps a [`Tap`]: the open files of the last [`SEGMENTS`] of them
//! with the stream offset each starts at, how many bytes are written, and whether the writer
//! is done. Readers wait on it (a `watch`, woken by each write, never a poll of the file),
//! and read through the very descriptors the writer writes, so a file renamed or removed
//! behind them (rotation, the next process's file) is still read whole: no name is opened,
//! no race with a rename.
//!
//! A file is laid out as a capped log keeps it (the first half in place, the last half in a
//! ring, [`Layout`]), or straight through from its segment's start; bytes the cap dropped,
//! or a segment no longer kept, are skipped: a chunk then starts later than asked and says
//! so. A ring may be overwritten while it is read: the writer marks how far it is about to
//! write before it writes, and a read keeps only what that mark shows intact.
//!
//! The offset arithmetic is pure ([`plan`], [`intact`]); the reads run on a blocking thread.

use common::output::{MAX_READ, MAX_WAIT_MS, OutputChunk, Position};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Files of a stream kept readable: the current one and the one before it, so a follower
/// can lag behind by a whole file (or a crash loop's previous run) and lose nothing.
const SEGMENTS: usize = 2;
/// Reads on blocking threads at once, each holding up to [`MAX_READ`] bytes: many followers
/// queue here rather than each holding a thread and a buffer.
static READS: Semaphore = Semaphore::const_new(8);

/// How a file holds its segment's bytes, counted from the segment's start: the first `head`
/// in place, then the last `tail` in a ring at `head + (i - head) % tail` (what lay between
/// is gone), as a capped log keeps them. A file written straight through (one that rotates
/// instead of capping) has an unbounded head (`head = u64::MAX`, `tail = 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) head: u64,
    pub(crate) tail: u64,
}

impl Layout {
    /// Byte `start + i` at position `i`.
    pub(crate) const LINEAR: Layout = Layout {
        head: u64::MAX,
        tail: 0,
    };
}

/// Stream offsets `[start, end)` held in one file laid out as `layout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) layout: Layout,
}

/// One contiguous read from one file: `len` bytes at `at` in the file of span `span`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) span: usize,
    pub(crate) at: u64,
    pub(crate) len: u64,
}

/// What to read for a request: the stream's bytes from `from` (never before the offset
/// asked), contiguous, in pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) from: u64,
    pub(crate) pieces: Vec<Piece>,
}

impl Span {
    /// The readable parts of the span, in order, each as `[lo, hi)`.
    fn readable(&self) -> impl Iterator<Item = (u64, u64)> {
        let Layout { head, tail } = self.layout;
        let head_end = self.end.min(self.start.saturating_add(head));
        let ring = (self.end > head_end && tail > 0).then(|| (head_end.max(self.end.saturating_sub(tail)), self.end));
        std::iter::once((self.start, head_end))
            .chain(ring)
            .filter(|(lo, hi)| lo < hi)
    }

    /// Where stream offset `x` (readable) lies in the file, and how many bytes from there
    /// are contiguous in the file.
    fn locate(&self, x: u64) -> (u64, u64) {
        let i = x - self.start;
        let Layout { head, tail } = self.layout;
        if i >= head && tail > 0 {
            let slot = (i - head) % tail;
            (head + slot, tail - slot)
        } else {
            (i, u64::MAX)
        }
    }

    /// The offsets from which this span's ring slots are no longer safe once its writer
    /// means to write up to `writing`: `[ring start, writing - tail)`.
    fn overwritten(&self, writing: u64) -> Option<(u64, u64)> {
        let Layout { head, tail } = self.layout;
        let lo = self.start.saturating_add(head);
        let hi = writing.saturating_sub(tail);
        (tail > 0 && hi > lo).then_some((lo, hi))
    }
}

/// The bytes to read for a request at `offset` of at most `max` bytes: from the first
/// readable byte at or after `offset`, as far as they are contiguous (a gap ends the read;
/// the next one reports it as skipped).
pub(crate) fn plan(spans: &[Span], offset: u64, max: u64) -> Plan {
    let mut from = None;
    let mut at = offset;
    let mut left = max;
    let mut pieces = Vec::new();
    'spans: for (i, span) in spans.iter().enumerate() {
        for (lo, hi) in span.readable() {
            if hi <= at {
                continue;
            }
            if from.is_some() && lo > at {
                break 'spans;
            }
            at = at.max(lo);
            from.get_or_insert(at);
            while at < hi && left > 0 {
                let (pos, room) = span.locate(at);
                let len = (hi - at).min(room).min(left);
                pieces.push(Piece { span: i, at: pos, len });
                at += len;
                left -= len;
            }
            if left == 0 {
                break 'spans;
            }
        }
    }
    Plan {
        from: from.unwrap_or(offset),
        pieces,
    }
}

/// What is left of a read of `[from, from + len)` once the offsets `bad` (`[lo, hi)`, slots a
/// writer may have overwritten during the read) are taken out: the part before them when
/// they lie inside, else the part after; as `(from, len)`.
pub(crate) fn intact(from: u64, len: u64, bad: (u64, u64)) -> (u64, u64) {
    let end = from + len;
    let (lo, hi) = bad;
    if hi <= from || lo >= end {
        (from, len)
    } else if lo > from {
        (from, lo - from)
    } else {
        let start = hi.min(end);
        (start, end - start)
    }
}

/// One file of a stream.
#[derive(Clone, Debug)]
struct Segment {
    start: u64,
    layout: Layout,
    file: Arc<File>,
}

/// What readers see of a stream.
#[derive(Clone, Debug, Default)]
struct Shown {
    /// Oldest first, at most [`SEGMENTS`].
    segments: VecDeque<Segment>,
    /// Bytes written (and readable, short of a cap's cut).
    written: u64,
    /// How far the writer is writing now: a ring's slots below `writing - tail` may be
    /// overwritten under a reader.
    writing: u64,
    /// The writer is done: nothing more comes.
    ended: bool,
    /// The furthest offset a reader has asked for: everything before it was read. A job's
    /// writer waits for it (flow control, [`Tap::room`]).
    consumed: u64,
}

impl Shown {
    fn spans(&self) -> Vec<Span> {
        self.segments
            .iter()
            .enumerate()
            .map(|(i, s)| Span {
                start: s.start,
                end: self.segments.get(i + 1).map_or(self.written, |next| next.start),
                layout: s.layout,
            })
            .collect()
    }
}

/// A stream as its writers keep it and its readers follow it. Cheap to clone: all clones
/// are the same stream.
#[derive(Clone, Debug)]
pub(crate) struct Tap(Arc<watch::Sender<Shown>>);

impl Default for Tap {
    fn default() -> Self {
        Tap(Arc::new(watch::Sender::new(Shown::default())))
    }
}

impl Tap {
    /// `file` holds the stream from the next byte written on, laid out as `layout`.
    pub(crate) fn file(&self, file: Arc<File>, layout: Layout) {
        self.0.send_modify(|s| {
            let start = s.written;
            s.segments.push_back(Segment { start, layout, file });
            while s.segments.len() > SEGMENTS {
                s.segments.pop_front();
            }
        });
    }

    /// The writer is about to write `n` more bytes. Nobody is woken: no byte is readable yet.
    pub(crate) fn writing(&self, n: u64) {
        self.0.send_if_modified(|s| {
            s.writing = s.written + n;
            false
        });
    }

    /// The writer has written `n` more bytes (some of which a cap may have dropped).
    pub(crate) fn wrote(&self, n: u64) {
        self.0.send_modify(|s| {
            s.written += n;
            s.writing = s.written;
        });
    }

    /// Waits until the writer is at most `window` bytes ahead of what readers have read.
    pub(crate) async fn room(&self, window: u64) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|s| s.written <= s.consumed.saturating_add(window)).await;
    }

    /// Nothing more comes: readers waiting are answered.
    pub(crate) fn end(&self) {
        self.0.send_if_modified(|s| !std::mem::replace(&mut s.ended, true));
    }

    /// At most `max` bytes (capped at [`MAX_READ`]) from `position`; when there are none yet,
    /// waits up to `wait` (capped at [`MAX_WAIT_MS`]) for some, or for the end.
    pub(crate) async fn read(&self, position: Position, max: u32, wait: Duration) -> OutputChunk {
        let mut rx = self.0.subscribe();
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_millis(MAX_WAIT_MS));
        // The last bytes are those written when the read arrives: what comes while it waits
        // is after them, not instead of them.
        let offset = resolve(position, rx.borrow().written);
        // Asking for `offset` says everything before it was taken: a gated writer may go on.
        self.0.send_if_modified(|s| {
            let further = offset > s.consumed;
            s.consumed = s.consumed.max(offset);
            further
        });
        let shown = loop {
            let shown = rx.borrow_and_update().clone();
            if offset < shown.written || shown.ended {
                break shown;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // Out of time, or every writer gone (the stream ends as it is).
                Ok(Err(_)) | Err(_) => break shown,
            }
        };
        let spans = shown.spans();
        let plan = plan(&spans, offset, u64::from(max.clamp(1, MAX_READ)));
        let bytes = if plan.pieces.is_empty() {
            Vec::new()
        } else {
            let files: Vec<Arc<File>> = shown.segments.iter().map(|s| s.file.clone()).collect();
            let pieces = plan.pieces.clone();
            let _permit = READS.acquire().await.expect("never closed");
            tokio::task::spawn_blocking(move || read_pieces(&files, &pieces))
                .await
                .unwrap_or_default()
        };
        // Slots the writer may have overwritten while they were read are dropped.
        let (from, len) = match spans.last() {
            Some(span) => {
                let writing = self.0.borrow().writing;
                match span.overwritten(writing) {
                    Some(bad) => intact(plan.from, bytes.len() as u64, bad),
                    None => (plan.from, bytes.len() as u64),
                }
            }
            None => (plan.from, 0),
        };
        let skip = usize::try_from(from - plan.from).unwrap_or(usize::MAX);
        let bytes = bytes
            .get(skip..skip + usize::try_from(len).unwrap_or(0))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let next_offset = from + bytes.len() as u64;
        OutputChunk {
            offset: from,
            bytes,
            next_offset,
            length: shown.written,
            end: shown.ended && next_offset >= shown.written,
        }
    }
}

/// The offset a position names in a stream of `written` bytes.
fn resolve(position: Position, written: u64) -> u64 {
    match position {
        Position::At(offset) => offset,
        Position::Last(n) => written.saturating_sub(n),
    }
}

/// Reads the pieces in order; stops at the first that comes short (a file cut behind the
/// writer's back), so what is returned is contiguous.
fn read_pieces(files: &[Arc<File>], pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(pieces.iter().map(|p| p.len).sum::<u64>()).unwrap_or(0));
    for piece in pieces {
        let want = usize::try_from(piece.len).unwrap_or(0);
        let start = out.len();
        out.resize(start + want, 0);
        let mut got = 0;
        while got < want {
            match files[piece.span].read_at(&mut out[start + got..start + want], piece.at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "failed to read a kept output file");
                    break;
                }
            }
        }
        out.truncate(start + got);
        if got < want {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
