//! The offset arithmetic, then reads of real capped logs while they are written.

use super::*;
use crate::output::Log;
use common::dirfd::DirFd;
use proptest::prelude::*;
use std::path::Path;

fn linear(start: u64, end: u64) -> Span {
    Span {
        start,
        end,
        layout: Layout::LINEAR,
    }
}

fn ring(start: u64, end: u64, head: u64, tail: u64) -> Span {
    Span {
        start,
        end,
        layout: Layout { head, tail },
    }
}

fn piece(span: usize, at: u64, len: u64) -> Piece {
    Piece { span, at, len }
}

#[test]
fn a_read_goes_on_from_one_file_into_the_next() {
    let spans = [linear(0, 10), linear(10, 25)];
    let p = plan(&spans, 4, 100);
    assert_eq!(p.from, 4);
    assert_eq!(p.pieces, [piece(0, 4, 6), piece(1, 0, 15)]);
    assert_eq!(plan(&spans, 4, 8).pieces, [piece(0, 4, 6), piece(1, 0, 2)]);
    // At the end, or past it: nothing to read, nothing skipped.
    assert_eq!(
        plan(&spans, 25, 100),
        Plan {
            from: 25,
            pieces: vec![]
        }
    );
    assert_eq!(
        plan(&[], 0, 100),
        Plan {
            from: 0,
            pieces: vec![]
        }
    );
}

#[test]
fn bytes_no_longer_kept_are_skipped_and_the_read_starts_where_they_resume() {
    // The file before this one was let go: the stream resumes at 100.
    let p = plan(&[linear(100, 130)], 20, 10);
    assert_eq!(
        p,
        Plan {
            from: 100,
            pieces: vec![piece(0, 0, 10)]
        }
    );
    // A capped log that wrapped: [0, 10) in place, [10, 25) cut, [25, 35) in the ring.
    let spans = [ring(0, 35, 10, 10)];
    // The head, then the gap ends the read; the next read reports the gap.
    assert_eq!(plan(&spans, 0, 100).pieces, [piece(0, 0, 10)]);
    let p = plan(&spans, 10, 100);
    assert_eq!(p.from, 25);
    // Offset 25 sits in slot 5 of the ring: to the ring's end, then from its start.
    assert_eq!(p.pieces, [piece(0, 15, 5), piece(0, 10, 5)]);
    assert_eq!(p.pieces.iter().map(|p| p.len).sum::<u64>(), 10);
}

#[test]
fn a_ring_that_has_not_wrapped_reads_straight_through() {
    let spans = [ring(0, 15, 10, 10)];
    assert_eq!(plan(&spans, 3, 100).pieces, [piece(0, 3, 7), piece(0, 10, 5)]);
    // A segment that starts later in the stream counts from its own start.
    let spans = [linear(0, 7), ring(7, 22, 10, 10)];
    assert_eq!(
        plan(&spans, 5, 100).pieces,
        [piece(0, 5, 2), piece(1, 0, 10), piece(1, 10, 5)]
    );
    // A cap too small for a ring keeps the head alone.
    assert_eq!(plan(&[ring(0, 50, 1, 0)], 0, 100).pieces, [piece(0, 0, 1)]);
    assert_eq!(
        plan(&[ring(0, 50, 1, 0)], 1, 100),
        Plan {
            from: 1,
            pieces: vec![]
        }
    );
}

#[test]
fn slots_overwritten_during_a_read_are_dropped_from_it() {
    // Nothing overwritten inside the read: kept whole.
    assert_eq!(intact(10, 5, (0, 10)), (10, 5));
    assert_eq!(intact(10, 5, (15, 30)), (10, 5));
    // The start overwritten: what follows is kept.
    assert_eq!(intact(10, 5, (0, 12)), (12, 3));
    assert_eq!(intact(10, 5, (0, 40)), (15, 0));
    // A middle overwritten (a head read into a ring that wrapped meanwhile): the part before.
    assert_eq!(intact(0, 20, (10, 12)), (0, 10));
    let span = ring(0, 35, 10, 10);
    assert_eq!(span.overwritten(35), Some((10, 25)));
    assert_eq!(span.overwritten(15), None);
    assert_eq!(linear(0, 35).overwritten(1000), None);
}

/// Byte `i` of every test stream.
fn byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn stream(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64).map(byte).collect()
}

/// A capped log in `dir` read through a tap.
fn log(dir: &Path, name: &str, cap: u64, tap: &Tap) -> Log {
    let fd = Arc::new(DirFd::open(dir).expect("open"));
    Log::new(fd, name.into(), dir.join(name), "stdout", cap).with_tap(Some(tap.clone()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Reads at `offset` until the end, checking each chunk against the stream; returns the
/// chunks' starts.
async fn read_all(tap: &Tap, offset: u64, max: u32) -> Vec<u64> {
    let mut at = offset;
    let mut starts = Vec::new();
    loop {
        let chunk = tap.read(Position::At(at), max, Duration::ZERO).await;
        assert!(chunk.offset >= at, "a chunk never starts before the offset asked");
        assert_eq!(
            chunk.bytes,
            stream(chunk.offset, chunk.bytes.len()),
            "at {}",
            chunk.offset
        );
        assert_eq!(chunk.next_offset, chunk.offset + chunk.bytes.len() as u64);
        if chunk.bytes.is_empty() {
            return starts;
        }
        starts.push(chunk.offset);
        at = chunk.next_offset;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the cap and the sizes of the writes, a read returns the stream's own bytes at
    /// the offset it says, skips only what the cap cut, and reads on to the end.
    #[test]
    fn reads_of_a_capped_log_return_the_programs_bytes_at_their_offsets(
        cap in 2u64..300,
        writes in proptest::collection::vec(1usize..200, 1..12),
        offset in 0u64..2000,
        max in 1u32..150,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tap = Tap::default();
        let mut log = log(dir.path(), "out", cap, &tap);
        let mut written = 0u64;
        for n in writes {
            log.write(&stream(written, n));
            written += n as u64;
        }
        let head = cap / 2;
        let tail = cap - head;
        runtime().block_on(async {
            let offset = offset.min(written);
            let starts = read_all(&tap, offset, max).await;
            // A read in the head or within the ring starts where asked.
            let kept = offset < head || offset >= written.saturating_sub(tail);
            if kept && offset < written {
                prop_assert_eq!(starts.first().copied(), Some(offset));
            }
            // The last `n` bytes are the stream's last, when the ring holds them.
            let n = tail.min(written);
            let last = tap.read(Position::Last(n), MAX_READ, Duration::ZERO).await;
            prop_assert_eq!(last.offset, written - n);
            prop_assert_eq!(last.length, written);
            prop_assert!(!last.end);
            Ok(())
        })?;
    }
}

#[test]
fn each_process_continues_the_stream_and_only_the_last_two_files_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tap = Tap::default();
    let rt = runtime();
    let mut at = 0u64;
    for (name, n) in [("one", 30usize), ("two", 40), ("three", 50)] {
        let mut log = log(dir.path(), name, 1000, &tap);
        log.write(&stream(at, n));
        log.finish();
        // What a restart does: the name goes, the open file stays readable.
        std::fs::remove_file(dir.path().join(name)).expect("remove");
        at += n as u64;
    }
    rt.block_on(async {
        // "one" is gone: a read from 0 starts at "two"'s first byte, and reads through.
        assert_eq!(read_all(&tap, 0, 1000).await, [30]);
        let chunk = tap.read(Position::At(0), 1000, Duration::ZERO).await;
        assert_eq!((chunk.offset, chunk.bytes.len(), chunk.length), (30, 90, 120));
        tap.end();
        let chunk = tap.read(Position::At(60), 1000, Duration::ZERO).await;
        assert!(chunk.end, "the end, once the stream's end is read");
        let chunk = tap.read(Position::At(60), 10, Duration::ZERO).await;
        assert!(!chunk.end, "not before");
    });
}

#[test]
fn a_read_at_the_end_waits_for_the_next_write_or_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tap = Tap::default();
    let rt = runtime();
    rt.block_on(async {
        // Nothing yet, no wait: an empty chunk.
        let chunk = tap.read(Position::Last(10), 100, Duration::ZERO).await;
        assert_eq!((chunk.offset, chunk.bytes.len(), chunk.end), (0, 0, false));
        let waiting = tokio::spawn({
            let tap = tap.clone();
            async move { tap.read(Position::At(0), 100, Duration::from_secs(20)).await }
        });
        tokio::task::yield_now().await;
        let mut log = log(dir.path(), "out", 1000, &tap);
        let mut log = tokio::task::spawn_blocking(move || {
            log.write(b"hello\n");
            log
        })
        .await
        .expect("write");
        let chunk = waiting.await.expect("read");
        assert_eq!(chunk.bytes, b"hello\n");
        // The last 0 bytes, waiting: what comes next, not what came before.
        let waiting = tokio::spawn({
            let tap = tap.clone();
            async move { tap.read(Position::Last(0), 100, Duration::from_secs(20)).await }
        });
        tokio::task::yield_now().await;
        let log = tokio::task::spawn_blocking(move || {
            log.write(b"world\n");
            log
        })
        .await
        .expect("write");
        let chunk = waiting.await.expect("read");
        assert_eq!((chunk.offset, chunk.bytes.as_slice()), (6, &b"world\n"[..]));
        let started = std::time::Instant::now();
        let waiting = tokio::spawn({
            let tap = tap.clone();
            async move { tap.read(Position::At(12), 100, Duration::from_secs(20)).await }
        });
        tokio::task::yield_now().await;
        log.finish();
        tap.end();
        let chunk = waiting.await.expect("read");
        assert!(chunk.end && chunk.bytes.is_empty());
        assert!(started.elapsed() < Duration::from_secs(10), "the end woke the reader");
        // A wait that runs out answers with nothing.
        let open = Tap::default();
        let chunk = open.read(Position::At(0), 100, Duration::from_millis(50)).await;
        assert!(chunk.bytes.is_empty() && !chunk.end);
    });
}

#[test]
fn a_ring_overwritten_while_it_is_read_never_yields_a_wrong_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tap = Tap::default();
    let mut log = log(dir.path(), "out", 64, &tap);
    let total = 200_000u64;
    let writer = std::thread::spawn(move || {
        let mut at = 0u64;
        let mut n = 1usize;
        while at < total {
            let len = n.min((total - at) as usize);
            log.write(&stream(at, len));
            at += len as u64;
            n = n % 97 + 1;
        }
    });
    runtime().block_on(async {
        let mut at = 0;
        let (mut read, mut skipped) = (0u64, 0u64);
        while at < total {
            let chunk = tap.read(Position::At(at), 50, Duration::from_secs(10)).await;
            assert!(chunk.offset >= at);
            assert_eq!(
                chunk.bytes,
                stream(chunk.offset, chunk.bytes.len()),
                "at {}",
                chunk.offset
            );
            skipped += chunk.offset - at;
            read += chunk.bytes.len() as u64;
            at = chunk.next_offset;
        }
        println!("read {read} bytes, {skipped} cut before they were read");
    });
    writer.join().expect("writer");
}
