//! A program's stdout and stderr: pipes read on the runtime, files written on blocking
//! threads: an attempt's capped log ([`Log`]), or a service's rotated file
//! ([`crate::rotate::Rotating`]).
//!
//! A write to a slow or stalled filesystem (NFS, a full disk being cleaned) must not hold a
//! runtime thread: heartbeats run there, and a worker whose heartbeats stop is declared lost.
//! So each chunk read from a pipe is written by `spawn_blocking`, and the pipe is not read
//! again until that write is done: a stalled disk stalls the program (its pipe fills), never
//! kinski.
//!
//! A log file is created at its stream's first byte (two inode creations per attempt were the
//! largest cost of short programs), inside a directory kinski opened itself and with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` ([`common::dirfd`]): whatever a program planted at the name
//! is replaced, never written through.
//!
//! Each stream keeps at most `max_log_bytes`: the first half as written, the last half in a
//! ring in the file's second half, rotated into order when the stream ends, with a line
//! between them saying how many bytes were cut and why. Memory stays one chunk per stream,
//! whatever the program writes.
//!
//! A log may keep a [`Tap`]: followers read the stream through it while it is written
//! ([`crate::stream`]), told of each file it begins and of each write.

use crate::rotate::Rotating;
use crate::stream::{Layout, Tap};
use common::dirfd::{DirFd, FILE_MODE};
use common::output::JOB_WINDOW;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

/// Bytes read from a pipe before they are handed to a blocking write.
const CHUNK: usize = 256 * 1024;
/// The most read from a pipe once the program has exited: what the pipe held, unless a
/// descendant that left the group keeps writing, which must not hold the completion back.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// One pipe and the file its bytes go to.
#[derive(Debug)]
pub(crate) struct Output {
    pipe: OwnedFd,
    /// `None` while a blocking write has it, or after that write's thread died.
    log: Option<Sink>,
    eof: bool,
    /// A job's stream: the pipe is read no further than [`JOB_WINDOW`] ahead of what its
    /// follower has read, so a slow caller slows the program rather than growing anything.
    gate: Option<Tap>,
}

/// Where a pipe's bytes go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// An attempt's log, capped.
    Log(Log),
    /// A service's file, rotated.
    Rotating(Rotating),
}

impl Sink {
    /// Stores the program's bytes. Blocking: only on a blocking thread.
    fn write(&mut self, bytes: &[u8]) {
        match self {
            Sink::Log(log) => log.write(bytes),
            Sink::Rotating(file) => file.write(bytes),
        }
    }

    /// Puts the file in order and closes it. Blocking: only on a blocking thread.
    fn finish(self) {
        match self {
            Sink::Log(log) => log.finish(),
            Sink::Rotating(file) => drop(file),
        }
    }

    /// Whether it holds a file to finish (a log is made at its first byte).
    fn has_file(&self) -> bool {
        match self {
            Sink::Log(log) => log.file.is_some(),
            Sink::Rotating(_) => true,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Sink::Log(log) => &log.path,
            Sink::Rotating(file) => file.path(),
        }
    }
}

/// A stream's log file, created at the first byte.
#[derive(Debug)]
pub(crate) struct Log {
    dir: Arc<DirFd>,
    name: OsString,
    /// For messages only: every file operation goes through `dir`.
    path: PathBuf,
    /// "stdout", "stderr", or "stdout and stderr" when they share a file.
    stream: &'static str,
    /// Bytes kept from the start, and in the ring after them.
    head: u64,
    tail: u64,
    /// Shared with followers' reads through the tap.
    file: Option<Arc<File>>,
    /// Where followers read the stream as it is written.
    tap: Option<Tap>,
    /// Every byte the program wrote to the stream, kept or not.
    written: u64,
    /// Set when the file could not be written: the rest is read and dropped, so the program
    /// never blocks on a full pipe.
    broken: bool,
}

/// How a non-blocking read of a pipe stopped.
enum Read {
    Eof,
    WouldBlock,
    /// The limit was reached with more to read.
    Full,
}

impl Output {
    pub(crate) fn new(pipe: OwnedFd, log: Log) -> Output {
        Output::to(pipe, Sink::Log(log))
    }

    /// A pipe whose bytes go to a service's rotated file.
    pub(crate) fn rotating(pipe: OwnedFd, file: Rotating) -> Output {
        Output::to(pipe, Sink::Rotating(file))
    }

    fn to(pipe: OwnedFd, sink: Sink) -> Output {
        Output {
            pipe,
            log: Some(sink),
            eof: false,
            gate: None,
        }
    }

    /// Reads the pipe only as far ahead of `tap`'s readers as a job's window allows.
    pub(crate) fn gated(mut self, tap: Option<Tap>) -> Output {
        self.gate = tap;
        self
    }

    /// Appends what the pipe holds to `buf`, up to `limit` bytes in `buf`, without waiting.
    fn read_some(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<Read> {
        let mut chunk = [0u8; 16 * 1024];
        while buf.len() < limit {
            let want = chunk.len().min(limit - buf.len());
            // SAFETY: chunk is valid and writable for `want` bytes; the fd is ours.
            let n = unsafe { libc::read(self.pipe.as_raw_fd(), chunk.as_mut_ptr().cast(), want) };
            if n > 0 {
                // n is positive and at most `want`.
                buf.extend_from_slice(&chunk[..n as usize]);
                continue;
            }
            if n == 0 {
                self.eof = true;
                return Ok(Read::Eof);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(Read::WouldBlock),
                // A terminal's master once every holder of its slave has closed it.
                _ if err.raw_os_error() == Some(libc::EIO) => {
                    self.eof = true;
                    return Ok(Read::Eof);
                }
                _ => return Err(err),
            }
        }
        Ok(Read::Full)
    }

    fn describe(&self) -> String {
        self.log
            .as_ref()
            .map(|l| l.path().display().to_string())
            .unwrap_or_default()
    }

    /// Writes `buf` on a blocking thread and waits for it; the pipe is not read meanwhile.
    async fn write(&mut self, buf: Vec<u8>) -> Vec<u8> {
        let Some(mut log) = self.log.take() else {
            // The log is gone (its thread died): the bytes are dropped, the pipe kept flowing.
            let mut buf = buf;
            buf.clear();
            return buf;
        };
        let done = tokio::task::spawn_blocking(move || {
            log.write(&buf);
            (log, buf)
        })
        .await;
        match done {
            Ok((log, mut buf)) => {
                self.log = Some(log);
                buf.clear();
                buf
            }
            Err(err) => {
                tracing::error!("failed to write the program's output, dropping the rest: {err}");
                Vec::new()
            }
        }
    }

    /// Copies the pipe to the log until end of file, or until `gone` says the group is gone
    /// (never in the middle of a write, so nothing is lost or written twice).
    async fn copy_while_running(&mut self, mut gone: watch::Receiver<bool>) {
        let raw = self.pipe.as_raw_fd();
        // SAFETY: `self` owns the fd and outlives this AsyncFd, which is local here.
        let watch = match unsafe { AsyncFd::register_with_interest(raw, Interest::READABLE) } {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(path = %self.describe(), "failed to watch the output pipe, reading it at the end: {err}");
                let _ = gone.wait_for(|gone| *gone).await;
                return;
            }
        };
        let mut buf = Vec::with_capacity(CHUNK);
        loop {
            if let Some(gate) = &self.gate {
                tokio::select! {
                    biased;
                    _ = gone.wait_for(|gone| *gone) => return,
                    () = gate.room(JOB_WINDOW) => {}
                }
            }
            let ready = tokio::select! {
                biased;
                _ = gone.wait_for(|gone| *gone) => return,
                ready = watch.readable() => ready,
            };
            let mut ready = match ready {
                Ok(ready) => ready,
                Err(err) => {
                    tracing::warn!(path = %self.describe(), "failed to watch the output pipe, reading it at the end: {err}");
                    let _ = gone.wait_for(|gone| *gone).await;
                    return;
                }
            };
            let read = self.read_some(&mut buf, CHUNK);
            if matches!(read, Ok(Read::WouldBlock)) {
                ready.clear_ready();
            }
            drop(ready);
            if !buf.is_empty() {
                buf = self.write(std::mem::take(&mut buf)).await;
            }
            match read {
                Ok(Read::Eof) => return,
                Ok(Read::WouldBlock | Read::Full) => {}
                Err(err) => {
                    tracing::warn!(path = %self.describe(), "failed to read the program's output: {err}");
                    let _ = gone.wait_for(|gone| *gone).await;
                    return;
                }
            }
        }
    }
}

/// Copies every output while the program runs, until each pipe ends or `gone` is set.
pub(crate) async fn copy_while_running(outputs: &mut [Output], gone: watch::Receiver<bool>) {
    futures::future::join_all(outputs.iter_mut().map(|o| o.copy_while_running(gone.clone()))).await;
}

/// Once the group is gone: reads what is left in the pipes, then writes it and closes each
/// log (cutting it to its cap) on a blocking thread. A program that wrote nothing costs no
/// thread switch.
pub(crate) async fn finish(outputs: Vec<Output>) {
    let mut work = Vec::new();
    for mut output in outputs {
        let mut rest = Vec::new();
        if !output.eof
            && let Err(err) = output.read_some(&mut rest, DRAIN_LIMIT)
        {
            tracing::warn!(path = %output.describe(), "failed to read the program's output: {err}");
        }
        if let Some(log) = output.log.take()
            && (log.has_file() || !rest.is_empty())
        {
            work.push((log, rest));
        }
    }
    if work.is_empty() {
        return;
    }
    let done = tokio::task::spawn_blocking(move || {
        for (mut log, rest) in work {
            log.write(&rest);
            log.finish();
        }
    })
    .await;
    if let Err(err) = done {
        tracing::error!("failed to finish the program's log files: {err}");
    }
}

impl Log {
    /// The log `name` in `dir` (`path` names it in messages), keeping at most `cap` bytes.
    pub(crate) fn new(dir: Arc<DirFd>, name: OsString, path: PathBuf, stream: &'static str, cap: u64) -> Log {
        let head = cap / 2;
        Log {
            dir,
            name,
            path,
            stream,
            head,
            tail: cap - head,
            file: None,
            tap: None,
            written: 0,
            broken: false,
        }
    }

    /// Followers read this log through `tap` from now on.
    pub(crate) fn with_tap(mut self, tap: Option<Tap>) -> Log {
        self.tap = tap;
        self
    }

    /// Stores the program's bytes. Blocking: only on a blocking thread.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        let before = self.written;
        if let Some(tap) = &self.tap {
            tap.writing(bytes.len() as u64);
        }
        let placed = self.place(bytes);
        // What reached the file (all of it, short of an error) is readable now.
        if let Some(tap) = &self.tap {
            tap.wrote(self.written - before);
        }
        if let Err(err) = placed {
            tracing::warn!(path = %self.path.display(), "failed to write the program's output, dropping the rest: {err}");
            self.broken = true;
        }
    }

    fn place(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let file = Arc::new(self.dir.create_file(&self.name, FILE_MODE)?);
            if let Some(tap) = &self.tap {
                let layout = Layout {
                    head: self.head,
                    tail: self.tail,
                };
                tap.file(file.clone(), layout);
            }
            self.file = Some(file);
        }
        let file = self.file.as_ref().expect("just made");
        if self.written < self.head {
            let n = bytes
                .len()
                .min(usize::try_from(self.head - self.written).unwrap_or(usize::MAX));
            file.write_all_at(&bytes[..n], self.written)?;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        if self.tail == 0 {
            self.written += bytes.len() as u64;
            return Ok(());
        }
        // Only the last `tail` bytes of a long write can survive in the ring.
        let tail = usize::try_from(self.tail).unwrap_or(usize::MAX);
        if bytes.len() > tail {
            let skip = bytes.len() - tail;
            self.written += skip as u64;
            bytes = &bytes[skip..];
        }
        while !bytes.is_empty() {
            let at = (self.written - self.head) % self.tail;
            let n = bytes.len().min(usize::try_from(self.tail - at).unwrap_or(usize::MAX));
            file.write_all_at(&bytes[..n], self.head + at)?;
            self.written += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Puts a cut stream in order (head, the line saying what was cut, tail) and closes the
    /// file. Blocking: only on a blocking thread.
    pub(crate) fn finish(mut self) {
        let Some(file) = self.file.take() else { return };
        if self.broken || self.written <= self.head + self.tail {
            return;
        }
        if let Err(err) = self.cut(&file) {
            tracing::warn!(path = %self.path.display(), "failed to put the cut log in order; its second half is a ring: {err}");
        }
    }

    fn cut(&self, file: &File) -> io::Result<()> {
        if self.tail == 0 {
            // A cap of under two bytes keeps no tail: the head alone is the log.
            return Ok(());
        }
        let start = (self.written - self.head) % self.tail;
        let cut = self.written - self.head - self.tail;
        let cap = self.head + self.tail;
        let marker = format!(
            "\n[herzog: {cut} bytes of {stream} cut here: the program wrote {written} bytes, more than \
             herzog.max_log_bytes ({cap}); the first {head} and the last {tail} are kept]\n",
            stream = self.stream,
            written = self.written,
            head = self.head,
            tail = self.tail,
        );
        let mut part_name = self.name.clone();
        part_name.push(".part");
        let mut part = self.dir.create_file(&part_name, FILE_MODE)?;
        let copy = |part: &mut File, from: u64, len: u64| -> io::Result<()> {
            let mut source = file;
            source.seek(SeekFrom::Start(from))?;
            let copied = io::copy(&mut io::Read::take(source, len), part)?;
            if copied == len {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("copied {copied} of {len} bytes"),
                ))
            }
        };
        let result = (|| {
            copy(&mut part, 0, self.head)?;
            part.write_all(marker.as_bytes())?;
            copy(&mut part, self.head + start, self.tail - start)?;
            copy(&mut part, self.head, start)?;
            self.dir.rename(&part_name, &self.dir, &self.name)
        })();
        if result.is_err() {
            let _ = self.dir.remove_file(&part_name);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn log(dir: &Path, cap: u64) -> Log {
        let fd = Arc::new(DirFd::open(dir).expect("open"));
        Log::new(fd, "out".into(), dir.join("out"), "stdout", cap)
    }

    fn written(chunks: &[&[u8]], cap: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = log(dir.path(), cap);
        for chunk in chunks {
            log.write(chunk);
        }
        log.finish();
        std::fs::read(dir.path().join("out")).unwrap_or_default()
    }

    #[test]
    fn a_tiny_or_zero_cap_cuts_without_panicking() {
        assert_eq!(written(&[b"abcdef"], 0), b"");
        assert_eq!(written(&[b"abcdef", b"gh"], 3), b"a\n[herzog: 5 bytes of stdout cut here: the program wrote 8 bytes, more than herzog.max_log_bytes (3); the first 1 and the last 2 are kept]\ngh");
    }

    #[test]
    fn a_stream_within_the_cap_is_kept_whole() {
        assert_eq!(written(&[b"hello ", b"world\n"], 12), b"hello world\n");
        assert_eq!(written(&[], 12), b"");
    }

    #[test]
    fn a_longer_stream_keeps_its_head_and_tail_around_a_line_that_says_what_was_cut() {
        let all: Vec<u8> = (0..1000u32).flat_map(|i| format!("{i:04}\n").into_bytes()).collect();
        // In odd chunk sizes, one larger than the ring.
        let chunks: Vec<&[u8]> = [3usize, 700, 1, 2500, 5, 1791]
            .iter()
            .scan(0, |at, n| {
                let chunk = &all[*at..*at + n];
                *at += n;
                Some(chunk)
            })
            .collect();
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), all.len());
        let got = written(&chunks, 1000);
        let marker = "\n[herzog: 4000 bytes of stdout cut here: the program wrote 5000 bytes, more than \
                      herzog.max_log_bytes (1000); the first 500 and the last 500 are kept]\n";
        let mut expected = all[..500].to_vec();
        expected.extend_from_slice(marker.as_bytes());
        expected.extend_from_slice(&all[4500..]);
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    }
}
