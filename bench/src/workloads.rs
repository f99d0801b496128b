//! The one-host workloads (`noop`, `sleep`, `cpu`): the real `hz local DIR PROGRAM --slots 2`
//! timed end to end as a child process (what a user waits for: herzog and kinski start, the
//! project is added, followed and summed up, the daemons stop), against
//! `find DIR -type f | sort | xargs -P2 -n1 PROGRAM` on the same files, interleaved.

use crate::util::{self, median, median_f64, secs};
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/bin/true` on empty files: pure per-fragment overhead.
    Noop,
    /// A shell script that sleeps: two processes per job and a known ideal makespan.
    Sleep,
    /// `gzip -9` of 2 MB files: real work.
    Cpu,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Noop => "noop",
            Kind::Sleep => "sleep",
            Kind::Cpu => "cpu",
        }
    }

    /// The target for herzog's wall time over xargs's.
    pub fn target(self) -> f64 {
        match self {
            Kind::Noop => 1.3,
            Kind::Sleep | Kind::Cpu => 1.01,
        }
    }
}

/// How to run one workload.
#[derive(Clone, Debug)]
pub struct Options {
    pub files: usize,
    pub reps: usize,
    /// Unrecorded runs of both sides before the recorded ones (page cache, binaries).
    pub warmup: usize,
    /// `sleep`: how long each job sleeps.
    pub sleep_ms: u64,
    /// `cpu`: the size of each input.
    pub file_bytes: usize,
    /// Where inputs, scripts and state directories go.
    pub work: PathBuf,
    pub slots: u32,
    /// More arguments for `hz local` (`--mem 1G`: a cgroup per attempt).
    pub hz_args: Vec<String>,
}

/// What one workload measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kind: Kind,
    pub files: usize,
    pub slots: u32,
    pub baseline: Vec<Duration>,
    pub herzog: Vec<Duration>,
    /// The wall time `hz local` reports in its summary (from its start to the project's end,
    /// without the daemons' shutdown and the process start).
    pub reported: Vec<Duration>,
    /// From spawning `hz local` to the moment herzog recorded the last completion (from its
    /// database): what herzog itself took, without hz's 500 ms progress polling and the
    /// daemons' shutdown.
    pub recorded: Vec<Duration>,
    pub ideal: Option<Duration>,
    pub command: String,
    pub baseline_command: String,
}

impl Outcome {
    pub fn ratio(&self) -> f64 {
        median(&self.herzog).as_secs_f64() / median(&self.baseline).as_secs_f64()
    }

    /// The median of each repetition's herzog/xargs ratio (the pair ran back to back).
    pub fn paired_ratio(&self) -> f64 {
        let r: Vec<f64> = self
            .baseline
            .iter()
            .zip(&self.herzog)
            .map(|(b, h)| h.as_secs_f64() / b.as_secs_f64())
            .collect();
        median_f64(&r)
    }

    /// The ratio of the time to the last recorded completion over the baseline.
    pub fn recorded_ratio(&self) -> Option<f64> {
        (!self.recorded.is_empty()).then(|| median(&self.recorded).as_secs_f64() / median(&self.baseline).as_secs_f64())
    }

    pub fn verdict(&self) -> &'static str {
        if self.ratio() <= self.kind.target() {
            "met"
        } else {
            "MISSED"
        }
    }

    /// The per-fragment overhead of herzog over xargs, in milliseconds per fragment per slot.
    pub fn overhead_ms_per_fragment(&self) -> f64 {
        let d = median(&self.herzog).as_secs_f64() - median(&self.baseline).as_secs_f64();
        d * 1000.0 * f64::from(self.slots) / self.files as f64
    }
}

/// A markdown table of outcomes.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| workload | files | reps | xargs -P2 (median) | hz local (median) | ratio | paired ratio | target | ideal | hz local → last completion recorded (median, ratio) | overhead/fragment |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        s += &format!(
            "| {} | {} | {} | {} | {} | **{:.3}x** | {:.3}x | ≤{}x ({}) | {} | {} | {:.2} ms |\n",
            o.kind.name(),
            o.files,
            o.baseline.len(),
            secs(median(&o.baseline)),
            secs(median(&o.herzog)),
            o.ratio(),
            o.paired_ratio(),
            o.kind.target(),
            o.verdict(),
            o.ideal.map_or("-".to_string(), |i| {
                format!(
                    "{} (xargs {:.3}x, hz {:.3}x)",
                    secs(i),
                    median(&o.baseline).as_secs_f64() / i.as_secs_f64(),
                    median(&o.herzog).as_secs_f64() / i.as_secs_f64()
                )
            }),
            o.recorded_ratio()
                .map_or("-".to_string(), |r| format!("{} ({r:.3}x)", secs(median(&o.recorded)))),
            o.overhead_ms_per_fragment(),
        );
    }
    s
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("a script has a directory")?)?;
    std::fs::write(path, body).with_context(|| format!("failed to write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Data that gzip -9 has to work on, like an annotated genome fragment: three quarters
/// pseudo-random words from a fixed vocabulary, then a quarter of random A/C/G/T in 60-column
/// lines (gzip -9 searches long hash chains there: about 0.45 s per 2 MB file on this machine).
fn text(seed: usize, bytes: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (seed as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(bytes + 16);
    while out.len() < bytes / 4 * 3 {
        // A word from a vocabulary of 4096: its letters follow from its number.
        let w = next() % 4096;
        let len = 3 + (w % 8) as usize;
        let mut h = w.wrapping_mul(0x2545_f491_4f6c_dd1d);
        for _ in 0..len {
            out.push(b'a' + (h % 26) as u8);
            h = h.rotate_left(7) ^ w;
        }
        out.push(if next() % 12 == 0 { b'\n' } else { b' ' });
    }
    out.push(b'\n');
    let mut column = 0;
    while out.len() < bytes {
        let r = next();
        for k in 0..16 {
            out.push(b"ACGT"[((r >> (2 * k)) & 3) as usize]);
            column += 1;
            if column == 60 {
                out.push(b'\n');
                column = 0;
            }
        }
    }
    out.truncate(bytes);
    out
}

/// The inputs and the program of a workload.
fn prepare(kind: Kind, o: &Options) -> Result<(PathBuf, String, Option<Duration>)> {
    let inputs = o.work.join("inputs");
    match kind {
        Kind::Noop => {
            let dir = inputs.join(format!("noop-{}", o.files));
            util::ensure_inputs(&dir, o.files, |_| Vec::new())?;
            Ok((dir, "/bin/true".to_string(), None))
        }
        Kind::Sleep => {
            let dir = inputs.join(format!("sleep-{}", o.files));
            util::ensure_inputs(&dir, o.files, |_| Vec::new())?;
            let sh = o.work.join("scripts").join(format!("sleep{}ms.sh", o.sleep_ms));
            script(&sh, &format!("#!/bin/sh\nsleep {:.3}\n", o.sleep_ms as f64 / 1000.0))?;
            let ideal = Duration::from_millis(o.sleep_ms * o.files as u64) / o.slots;
            Ok((dir, sh.display().to_string(), Some(ideal)))
        }
        Kind::Cpu => {
            let dir = inputs.join(format!("cpu2-{}x{}", o.files, o.file_bytes));
            util::ensure_inputs(&dir, o.files, |i| text(i, o.file_bytes))?;
            // herzog gives HERZOG_OUTPUT_DIR; the baseline gives BENCH_OUT: the same work and
            // the same writes either way.
            let sh = o.work.join("scripts").join("gzip9.sh");
            script(
                &sh,
                "#!/bin/sh\nexec gzip -9 -c \"$1\" > \"${HERZOG_OUTPUT_DIR:-$BENCH_OUT}/${1##*/}.gz\"\n",
            )?;
            Ok((dir, sh.display().to_string(), None))
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One run of the baseline.
fn run_baseline(cmdline: &str, out: &Path) -> Result<Duration> {
    let began = Instant::now();
    let status = Command::new("sh")
        .args(["-c", cmdline])
        .env("BENCH_OUT", out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("failed to run the baseline")?;
    let took = began.elapsed();
    if !status.success() {
        bail!("the baseline `{cmdline}` failed: {status}");
    }
    Ok(took)
}

/// What one run of `hz local` took.
struct HzRun {
    wall: Duration,
    reported: Option<Duration>,
    recorded: Option<Duration>,
}

/// The latest `ended_at` (herzog's clock, ms since the epoch) in herzog's database.
fn last_recorded(state: &Path) -> Option<std::time::SystemTime> {
    let db = state.join("herzog").join("herzog.db");
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let ms: Option<i64> = conn
        .query_row("SELECT MAX(ended_at) FROM attempts", [], |r| r.get(0))
        .ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms?).ok()?))
}

/// One run of `hz local`.
fn run_herzog(hz: &Path, dir: &Path, program: &str, state: &Path, o: &Options) -> Result<HzRun> {
    let (files, slots) = (o.files, o.slots);
    let spawned = std::time::SystemTime::now();
    let began = Instant::now();
    let out = Command::new(hz)
        .arg("local")
        .arg(dir)
        .arg(program)
        .arg("--slots")
        .arg(slots.to_string())
        .arg("--state-dir")
        .arg(state)
        .args(&o.hz_args)
        .env_remove("HERZOG_ADDR")
        .env_remove("HERZOG_CONFIG")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("failed to run hz local")?;
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expect = format!("{files} fragments, {files} succeeded, 0 failed");
    if !out.status.success() || !stdout.contains(&expect) {
        bail!(
            "hz local did not run every fragment successfully ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(HzRun {
        wall: took,
        reported: parse_reported(&stdout),
        recorded: last_recorded(state).and_then(|t| t.duration_since(spawned).ok()),
    })
}

/// The wall time in hz local's summary: `..., in 4.2s` (or `850ms`, `1m05s`).
fn parse_reported(stdout: &str) -> Option<Duration> {
    let first = stdout.lines().next()?;
    let t = first.rsplit_once(" in ")?.1.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some((m, s)) = t.split_once('m') {
        let s: u64 = s.strip_suffix('s')?.parse().ok()?;
        return Some(Duration::from_secs(m.parse::<u64>().ok()? * 60 + s));
    }
    t.strip_suffix('s')?.parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// Runs a workload: `warmup` unrecorded pairs, then `reps` pairs, each pair the baseline then
/// herzog, back to back.
pub fn run(kind: Kind, o: &Options) -> Result<Outcome> {
    let hz = util::bin("hz")?;
    let (dir, program, ideal) = prepare(kind, o)?;
    let baseline_command = format!(
        "find {} -type f | sort | xargs -P{} -n1 {}",
        sh_quote(&dir.display().to_string()),
        o.slots,
        sh_quote(&program)
    );
    let command = format!(
        "hz local {} {} --slots {} --state-dir FRESH",
        dir.display(),
        program,
        o.slots
    );
    let mut outcome = Outcome {
        kind,
        files: o.files,
        slots: o.slots,
        baseline: Vec::new(),
        herzog: Vec::new(),
        reported: Vec::new(),
        recorded: Vec::new(),
        ideal,
        command,
        baseline_command: baseline_command.clone(),
    };
    let runs = o.work.join("runs");
    for i in 0..o.warmup + o.reps {
        let recorded = i >= o.warmup;
        let out = util::fresh_dir(&runs, &format!("{}-xargs-out", kind.name()))?;
        let b = run_baseline(&baseline_command, &out)?;
        util::defer_removal(out);
        let state = util::fresh_dir(&runs, &format!("{}-state", kind.name()))?;
        let run = run_herzog(&hz, &dir, &program, &state, o)?;
        util::defer_removal(state);
        let h = run.wall;
        eprintln!(
            "bench: {} {} {}: xargs {}, hz local {} ({:.3}x){}{}",
            kind.name(),
            if recorded { "rep" } else { "warm-up" },
            if recorded { i - o.warmup + 1 } else { i + 1 },
            secs(b),
            secs(h),
            h.as_secs_f64() / b.as_secs_f64(),
            run.reported
                .map_or(String::new(), |r| format!(", hz reported {}", secs(r))),
            run.recorded.map_or(String::new(), |r| format!(
                ", last completion recorded at {} ({:.3}x)",
                secs(r),
                r.as_secs_f64() / b.as_secs_f64()
            ))
        );
        if recorded {
            outcome.baseline.push(b);
            outcome.herzog.push(h);
            outcome.reported.extend(run.reported);
            outcome.recorded.extend(run.recorded);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_times_parse() {
        let line = |t: &str| format!("project x: 5 fragments, 5 succeeded, 0 failed, in {t}\nresults: ...");
        assert_eq!(parse_reported(&line("850ms")), Some(Duration::from_millis(850)));
        assert_eq!(parse_reported(&line("4.2s")), Some(Duration::from_millis(4200)));
        assert_eq!(parse_reported(&line("1m05s")), Some(Duration::from_secs(65)));
    }

    #[test]
    fn text_is_sized_and_deterministic() {
        assert_eq!(text(3, 1000).len(), 1000);
        assert_eq!(text(3, 1000), text(3, 1000));
        assert_ne!(text(3, 1000), text(4, 1000));
    }
}
