//! What the run reads besides the RPCs: herzog's log lines (their times, the restore figure),
//! the input directory listed as herzog lists it, and the size of the state.

use super::*;

/// herzog's log files, oldest first (the daily files sort by their date).
fn herzog_logs(state: &Path) -> Option<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("logs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("herzog.log"))
        })
        .collect();
    files.sort();
    Some(files)
}

/// The last "state restored ... elapsed_ms=N" in herzog's log files.
pub(super) fn restored_ms(state: &Path) -> Option<u64> {
    let files = herzog_logs(state)?;
    files.iter().rev().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let line = text.lines().rev().find(|l| l.contains("state restored"))?;
        let v = line.split("elapsed_ms=").nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

/// The time in the first herzog log line that contains `what` (tracing's RFC 3339 UTC stamp).
pub(super) fn log_time(state: &Path, what: &str) -> Option<std::time::SystemTime> {
    let files = herzog_logs(state)?;
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let line = text.lines().find(|l| l.contains(what))?;
        parse_rfc3339(line.split_whitespace().next()?)
    })
}

/// `2026-11-22T06:03:14.123456Z` as a time.
pub(super) fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Lists a directory as herzog's `list_inputs` does: readdir, a stat per entry, a sort.
pub(super) fn list_like_herzog(dir: &Path) -> Result<Duration> {
    let began = Instant::now();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(began.elapsed())
}

pub(super) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stamps_parse() {
        let t = parse_rfc3339("2026-11-22T06:03:14.123456Z").unwrap();
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_327_394);
        assert_eq!(d.subsec_micros(), 123_456);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01Z").unwrap(),
            std::time::UNIX_EPOCH + Duration::from_secs(1)
        );
    }
}
