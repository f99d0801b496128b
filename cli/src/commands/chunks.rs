//! Reading a stream chunk by chunk, as `hz tail` and `hz logs -f` both do: where the next
//! read starts, how many bytes were cut before a chunk, and the chunk printed.
//!
//! Each chunk is asked for only once the last one is written to stdout, so a slow reader
//! (a pager, a slow pipe) holds one chunk here and nothing anywhere else. Messages go to
//! stderr, so stdout is the program's output and nothing else.

use crate::error::CliError;
use common::output::{OutputChunk, Position};
use std::io::Write;
use std::time::Duration;

/// How long one call waits for more output while following.
pub(crate) const FOLLOW_WAIT_MS: u64 = 25_000;
/// How long a follower waits before it asks again when there is nothing to read yet (a
/// service between placements, an attempt whose start is on its way).
pub(crate) const ASK_AGAIN: Duration = Duration::from_millis(500);

/// `-c`: a number of bytes, with a unit if wished (`64KiB`, `1M`).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, CliError> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| CliError::Usage(format!("-c {text}: {e} (try e.g. 4096, 64KiB or 1MiB)")))
}

/// Bytes cut away (rotated, capped) between what a read at `asked` wanted and the chunk that
/// came: the last bytes asked for are the last there are, so none for those.
pub(crate) fn skipped(asked: Position, chunk: &OutputChunk) -> u64 {
    match asked {
        Position::At(offset) => chunk.offset.saturating_sub(offset),
        Position::Last(_) => 0,
    }
}

/// Says on stderr what was cut before the chunk (`what`: whose stream, "web:0's stdout"),
/// then writes its bytes to `out`.
pub(crate) fn show(chunk: &OutputChunk, skipped: u64, what: &str, out: &mut dyn Write) -> Result<(), CliError> {
    if skipped > 0 {
        note!("hz: {skipped} bytes of {what} were cut (rotated or capped) before they were read");
    }
    if !chunk.bytes.is_empty() {
        out.write_all(&chunk.bytes)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn chunk(offset: u64, bytes: &[u8]) -> OutputChunk {
        OutputChunk {
            offset,
            bytes: bytes.to_vec(),
            next_offset: offset + bytes.len() as u64,
            length: offset + bytes.len() as u64,
            end: false,
        }
    }

    /// `len` bytes from `offset`, the last written so far; `end`: and the stream's last.
    pub(crate) fn x_chunk(offset: u64, len: u64, end: bool) -> OutputChunk {
        OutputChunk {
            end,
            ..chunk(offset, &vec![b'x'; len as usize])
        }
    }

    #[test]
    fn a_chunk_later_than_asked_counts_what_was_cut_and_its_bytes_are_written() {
        assert_eq!(skipped(Position::At(500), &chunk(540, b"x")), 40);
        assert_eq!(skipped(Position::At(500), &chunk(500, b"x")), 0);
        assert_eq!(skipped(Position::Last(10), &chunk(990, b"x")), 0);
        let mut out = Vec::new();
        show(&chunk(0, b"line\n"), 0, "web:0's stdout", &mut out).unwrap();
        assert_eq!(out, b"line\n");
    }

    #[test]
    fn byte_counts_take_units() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("64KiB").unwrap(), 65536);
        assert!(parse_bytes("lots").is_err());
    }
}
