//! What every benchmark shares: where the binaries and the scratch space are, medians,
//! `/proc` readings, the file-descriptor limit.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A workspace binary (`hz`, `herzog`) built next to this benchmark, in the same profile.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let dir = exe.parent().context("the bench executable has no directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p cli -p herzog` (bench/run.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// True when this bench is a debug build: its timings then mean nothing.
pub fn is_debug_build() -> bool {
    cfg!(debug_assertions)
}

/// Builds `hz` and `herzog` in this bench's profile when launched by `cargo run`, so that
/// `cargo run --release -p bench -- smoke` needs nothing else. Outside cargo, does nothing.
pub fn build_binaries() -> Result<()> {
    let Ok(cargo) = std::env::var("CARGO") else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build", "--quiet", "-p", "cli", "--bin", "hz", "-p", "herzog", "--bin", "herzog",
    ]);
    if !is_debug_build() {
        cmd.arg("--release");
    }
    if let Some(manifest) = option_env!("CARGO_MANIFEST_DIR") {
        cmd.arg("--manifest-path")
            .arg(Path::new(manifest).join("..").join("Cargo.toml"));
    }
    let status = cmd.status().context("failed to run cargo build")?;
    if !status.success() {
        bail!("cargo build of hz and herzog failed ({status})");
    }
    Ok(())
}

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(xs: &[Duration]) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// The median of some numbers.
pub fn median_f64(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Seconds with three decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Raises the soft limit on open files to the hard limit; returns (soft, hard) after.
/// Children spawned afterwards (herzog) inherit it.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// A `kB` field of `/proc/<pid>/status` (VmHWM, VmRSS), in bytes.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// User plus system CPU time of a live process.
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// The "Max open files" soft limit of a live process.
pub fn proc_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// This process's own CPU time (user plus system), children excluded.
pub fn self_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct; zeroed is a valid rusage.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory effects; a stale pid is only ever our own unreaped child.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Directories to remove when the benchmarks are done (see [`defer_removal`]).
static DEFERRED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes `dir` at the end of the run rather than now. On an ext4 without a journal (this
/// machine's root), creating a file costs 10 to 16 times more for minutes after many files
/// were deleted near it (the inode allocator skips and re-reads every recently deleted inode),
/// so deleting one repetition's 10,000 log files would slow the next repetition's herzog.
pub fn defer_removal(dir: PathBuf) {
    DEFERRED.lock().expect("not poisoned").push(dir);
}

/// Removes every deferred directory.
pub fn remove_deferred() {
    let dirs = std::mem::take(&mut *DEFERRED.lock().expect("not poisoned"));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// True when the filesystem holding `path` is an ext4 without a journal (see
/// [`defer_removal`]), judged from /proc/mounts and /sys/fs/ext4/<device>/journal_task.
pub fn ext4_without_journal(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let (device, mount) = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "ext4" && path.starts_with(mnt)).then(|| (dev.to_string(), mnt.to_string()))
        })
        .max_by_key(|(_, mnt)| mnt.len())?;
    let name = device.rsplit('/').next()?;
    let task = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/journal_task")).ok()?;
    (task.trim() == "<none>").then(|| format!("{device} on {mount}"))
}

/// A fresh directory under `root` named after `what`, the time and the pid.
pub fn fresh_dir(root: &Path, what: &str) -> Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("{what}-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("failed to clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    Ok(dir)
}

/// Creates `count` files in `dir` (named `f0000000`, ...) with `content(i)`, unless a previous
/// run left the same set complete (a marker next to the directory, `<dir>.complete`, says so).
pub fn ensure_inputs(dir: &Path, count: usize, content: impl Fn(usize) -> Vec<u8>) -> Result<()> {
    let marker = dir.with_extension("complete");
    if marker.is_file() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("failed to clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    eprintln!(
        "bench: creating {count} input files in {} (once; reused by later runs)",
        dir.display()
    );
    for i in 0..count {
        let path = dir.join(format!("f{i:07}"));
        std::fs::write(&path, content(i)).with_context(|| format!("failed to write {}", path.display()))?;
    }
    std::fs::write(&marker, b"").with_context(|| format!("failed to write {}", marker.display()))?;
    Ok(())
}

/// A local port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("failed to find a free port")?;
    Ok(l.local_addr()?.port())
}

/// What the machine is, for the report.
pub fn machine() -> String {
    let sh = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "nproc {}; {}; kernel {}",
        sh("nproc"),
        sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
        sh("uname -r")
    )
}
