//! Output helpers: plain aligned tables, human durations, byte sizes and ages.

use common::Millis;

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table with a header row, columns separated by two spaces, no trailing blanks.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; control characters (a newline in a file name or a reason) become spaces.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        let cells = cells
            .into_iter()
            .map(|c| {
                if c.contains(char::is_control) {
                    c.replace(char::is_control, " ")
                } else {
                    c
                }
            })
            .collect();
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending with a newline.
    pub(crate) fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - width(cell));
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A compact duration: `350ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.
pub(crate) fn duration_ms(ms: u64) -> String {
    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    match ms {
        0..S => format!("{ms}ms"),
        S..M => format!("{:.1}s", ms as f64 / S as f64),
        M..H => format!("{}m{:02}s", ms / M, (ms % M) / S),
        H..D => format!("{}h{:02}m", ms / H, (ms % H) / M),
        _ => format!("{}d{:02}h", ms / D, (ms % D) / H),
    }
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `then` was, seen from `now`: `3.0s ago`, `never` for a zero time.
pub(crate) fn ago(now: Millis, then: Millis) -> String {
    if then <= 0 {
        "never".to_string()
    } else if then >= now {
        "just now".to_string()
    } else {
        format!("{} ago", duration_ms((now - then) as u64))
    }
}

/// The time from `since` to `now`, never negative.
pub(crate) fn elapsed(now: Millis, since: Millis) -> String {
    duration_ms(now.saturating_sub(since).max(0) as u64)
}

/// A percentage with one decimal: `42.5%`.
pub(crate) fn percent(p: f64) -> String {
    format!("{p:.1}%")
}

/// An optional cell: its text, or `-`.
pub(crate) fn opt<T>(value: Option<T>, f: impl FnOnce(T) -> String) -> String {
    value.map(f).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_compact() {
        assert_eq!(duration_ms(0), "0ms");
        assert_eq!(duration_ms(999), "999ms");
        assert_eq!(duration_ms(1000), "1.0s");
        assert_eq!(duration_ms(12_345), "12.3s");
        assert_eq!(duration_ms(245_000), "4m05s");
        assert_eq!(duration_ms(2 * 3_600_000 + 3 * 60_000 + 59_000), "2h03m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn ages_and_elapsed_times() {
        assert_eq!(ago(10_000, 7_000), "3.0s ago");
        assert_eq!(ago(10_000, 0), "never");
        assert_eq!(ago(10_000, 11_000), "just now");
        assert_eq!(elapsed(10_000, 11_000), "0ms");
        assert_eq!(elapsed(70_000, 10_000), "1m00s");
        assert_eq!(percent(42.46), "42.5%");
        assert_eq!(opt(None::<u64>, |v| v.to_string()), "-");
        assert_eq!(opt(Some(3), |v| v.to_string()), "3");
    }

    #[test]
    fn tables_align_and_sanitise() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Right), ("NOTE", Align::Left)]);
        t.row(vec!["a".into(), "1".into(), "x\ny".into()]);
        t.row(vec!["long-name".into(), "100".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME         N  NOTE\n\
             a            1  x y\n\
             long-name  100\n"
        );
    }
}
