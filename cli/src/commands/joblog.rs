//! `hz local --joblog FILE`: GNU parallel's job log, so scripts that read one keep working. A
//! tab-separated header `Seq Host Starttime JobRuntime Send Receive Exitval Signal Command`,
//! then one line per attempt that ended, in the order they ended (parallel writes each job's
//! line as it finishes): `Seq` is the fragment's position (1-based, shared by its attempts),
//! `Host` is `:` (this machine, as parallel writes it), `Starttime` seconds since the epoch
//! with 3 decimals, `JobRuntime` seconds with 3 decimals right-aligned in 10 columns
//! (parallel's `%10.3f`), `Send` and `Receive` 0 (no files are transferred), `Exitval` and
//! `Signal` as parallel splits a wait status (killed by a signal: 0 and the signal), and the
//! command with its newlines as NUL, as parallel does.

use common::history::AttemptInfo;
use common::wire::{Exit, FragmentInfo};

/// The header line, as GNU parallel writes it.
pub(crate) const HEADER: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

/// The whole job log of `fragments` (with their attempts).
pub(crate) fn render(fragments: &[FragmentInfo]) -> String {
    let mut ended: Vec<(u64, &AttemptInfo)> = fragments
        .iter()
        .flat_map(|f| f.history.iter().map(move |a| (f.index, a)))
        .filter(|(_, a)| a.ended_at.is_some())
        .collect();
    ended.sort_by_key(|(_, a)| (a.ended_at, a.attempt));
    let mut text = String::from(HEADER);
    for (index, a) in ended {
        text += &line(index, a);
    }
    text
}

/// One attempt's line.
fn line(index: u64, a: &AttemptInfo) -> String {
    let runtime_ms = a
        .wall_ms
        .unwrap_or_else(|| u64::try_from(a.ended_at.unwrap_or(a.started_at) - a.started_at).unwrap_or(0));
    let (exitval, signal) = match &a.exit {
        Some(Exit::Code(code)) => (*code, 0),
        Some(Exit::Signal(signal)) => (0, *signal),
        // What a shell answers for a command it cannot run.
        Some(Exit::StartFailed(_)) => (127, 0),
        // Lost with its worker, or stopped before it reported: no status.
        None => (-1, 0),
    };
    format!(
        "{}\t:\t{}\t{:>10}\t0\t0\t{exitval}\t{signal}\t{}\n",
        index + 1,
        seconds(u64::try_from(a.started_at).unwrap_or(0)),
        seconds(runtime_ms),
        a.command.replace('\n', "\0"),
    )
}

/// Milliseconds as seconds with 3 decimals.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::AttemptId;
    use common::wire::FragmentStateKind;

    fn attempt(id: i64, start: i64, end: Option<i64>, wall: Option<u64>, exit: Option<Exit>) -> AttemptInfo {
        AttemptInfo {
            limit: None,
            peak_memory_bytes: None,
            attempt: AttemptId(id),
            worker: "local".into(),
            started_at: start,
            ended_at: end,
            outcome: "failed".into(),
            exit,
            wall_ms: wall,
            cpu_ms: None,
            peak_rss_kb: None,
            note: None,
            late_exit: None,
            command: "sh -c 'echo a\nb' x".into(),
        }
    }

    #[test]
    fn lines_follow_parallels_format_in_the_order_attempts_ended() {
        let fragment = |index, history| FragmentInfo {
            peak_memory_bytes: None,
            index,
            name: format!("f{index}"),
            state: FragmentStateKind::Failed,
            attempts: 1,
            attempt: None,
            worker: None,
            exit: None,
            wall_ms: None,
            cpu_ms: None,
            peak_rss_kb: None,
            reason: None,
            history,
        };
        let fragments = [
            fragment(
                0,
                vec![
                    attempt(
                        1,
                        1_700_000_000_123,
                        Some(1_700_000_009_000),
                        Some(8_877),
                        Some(Exit::Code(3)),
                    ),
                    attempt(4, 1_700_000_020_000, None, None, None),
                ],
            ),
            fragment(
                1,
                vec![
                    attempt(
                        2,
                        1_700_000_000_500,
                        Some(1_700_000_001_000),
                        Some(5),
                        Some(Exit::Signal(10)),
                    ),
                    attempt(3, 1_700_000_001_000, Some(1_700_000_002_250), None, None),
                ],
            ),
        ];
        let text = render(&fragments);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER.trim_end());
        assert_eq!(
            lines[1],
            "2\t:\t1700000000.500\t     0.005\t0\t0\t0\t10\tsh -c 'echo a\0b' x"
        );
        assert_eq!(
            lines[2],
            "2\t:\t1700000001.000\t     1.250\t0\t0\t-1\t0\tsh -c 'echo a\0b' x"
        );
        assert_eq!(
            lines[3],
            "1\t:\t1700000000.123\t     8.877\t0\t0\t3\t0\tsh -c 'echo a\0b' x"
        );
        assert_eq!(lines.len(), 4, "the running attempt has no line yet: {text}");
        assert!(lines.iter().all(|l| l.split('\t').count() == 9));
    }
}
