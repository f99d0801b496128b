//! Coordinator scale: the real release `herzog` binary as a child process, against many
//! simulated workers in this process (see `sim.rs`), with a project of N empty files.
//!
//! Measured: the time to register every worker, the time to submit the project
//! (`CoordinatorClient::project_add`, what `hz action` calls), fragments completed per second
//! (from the workers' acknowledged completions, and sampled every second), herzog's peak RSS
//! (VmHWM from /proc), and a restart: herzog is SIGKILLed once half the project is done and
//! restarted on the same state directory; the figure is from the spawn to the first
//! `fragment_start` any simulated worker receives.

use crate::sim::{self, Sim, Stats};
use crate::util::{self, secs};
use anyhow::{Context, Result, bail};
use common::service::CoordinatorClient;
use common::tls::{Authority, Identity, Role};
use common::transport::{Connector, Hello, context_with, coordinator_client, dial};
use common::wire::{NewProject, ProjectProgress, RunSpec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The issue's targets.
pub const TARGET_RATE: f64 = 10_000.0;
pub const TARGET_RSS: u64 = 300 * 1024 * 1024;
pub const TARGET_SUBMIT: Duration = Duration::from_secs(10);
pub const TARGET_RESTART: Duration = Duration::from_secs(2);

const PROJECT: &str = "scale";

#[derive(Clone, Debug)]
pub struct Options {
    pub workers: usize,
    pub slots: u32,
    pub queue: u32,
    pub fragments: usize,
    /// Kill and restart herzog when half the project is done.
    pub restart: bool,
    /// How long a simulated worker waits before dialing again (plus up to as much jitter).
    pub retry: Duration,
    /// herzog's `--log-level`, if not its default.
    pub log_level: Option<String>,
    /// Where herzog's stderr goes (default: /dev/null; its log file is kept either way).
    pub herzog_stderr: Option<PathBuf>,
    /// Extra environment for herzog (experiments such as MALLOC_ARENA_MAX=2).
    pub herzog_env: Vec<(String, String)>,
    pub work: PathBuf,
    /// The longest the whole run may take.
    pub timeout: Duration,
    /// Keep the state directory afterwards.
    pub keep: bool,
}

/// One sample of the progress, taken every second.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Since the submit began.
    pub t: Duration,
    pub acks: u64,
    /// Succeeded according to herzog (None while it is down).
    pub succeeded: Option<u64>,
    pub rss: Option<u64>,
    /// How long herzog took to answer `project_progress` (None: not within 900 ms).
    pub latency: Option<Duration>,
}

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub workers: usize,
    pub slots: u32,
    pub fragments: usize,
    pub register: Duration,
    pub submit: Duration,
    /// Listing the input directory as herzog's `list_inputs` does (readdir, then a stat per
    /// file), timed in the bench process just before the submit: the listing's share.
    pub listing: Duration,
    /// From the submit to herzog's "project added" log line (listing, event, state machine;
    /// before the commit), and from there to the reply (commit of every row, reply).
    pub submit_to_added: Option<Duration>,
    /// Median latency of `project_progress` while the project ran.
    pub query_latency: Option<Duration>,
    /// Completions per second from the first completion to the kill (or to the last).
    pub rate: f64,
    /// After the restart: from the first start to the last completion.
    pub rate_after: Option<f64>,
    /// Median of the per-second samples while herzog was up and work remained.
    pub rate_sampled: f64,
    pub peak_rss: u64,
    pub restart: Option<Duration>,
    /// The restart figure is to the first acknowledged completion (nothing was left to start).
    pub restart_by_completion: bool,
    /// herzog's own "state restored" figure after the restart, from its log.
    pub restored_ms: Option<u64>,
    /// From the restart's spawn to accepting a connection.
    pub listening: Option<Duration>,
    pub herzog_cpu: Duration,
    pub bench_cpu: Duration,
    pub herzog_nofile: Option<u64>,
    pub bench_nofile: (u64, u64),
    pub db_bytes: u64,
    pub total: Duration,
    pub samples: Vec<Sample>,
    pub refused: u64,
    pub session_ends: u64,
}

/// The cluster's certificates, made for this run: herzog's bundle on disk (for `--tls`), an
/// admin connector for the submit and the progress, and one connector per simulated worker
/// (each certificate names its worker, as `herzog certs issue NAME --role worker` would).
struct Certs {
    herzog: PathBuf,
    admin: Connector,
    workers: Vec<(String, Connector)>,
}

fn make_certs(dir: &Path, workers: usize) -> Result<Certs> {
    let ca = Authority::generate(2)?;
    let herzog = dir.join("herzog.pem");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // A fresh directory: the file is new, and its key readable by its owner alone.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&herzog)?;
        file.write_all(ca.issue("herzog", Role::Coordinator, 2)?.as_bytes())?;
    }
    let connector = |name: &str, role: Role| -> Result<Connector> {
        let bundle = ca.issue(name, role, 2)?;
        let identity = Identity::from_pem(bundle.as_bytes(), Path::new("(bench, in memory)"))?;
        Ok(Connector::new(&identity)?)
    };
    let admin = connector("bench-admin", Role::Admin)?;
    let workers = (0..workers)
        .map(|i| {
            let name = format!("sim-{i:05}");
            connector(&name, Role::Worker).map(|c| (name, c))
        })
        .collect::<Result<_>>()?;
    Ok(Certs { herzog, admin, workers })
}

/// The herzog child process.
struct Herzog {
    child: Child,
    pid: u32,
}

impl Herzog {
    fn spawn(o: &Options, state: &Path, tls: &Path, port: u16) -> Result<Herzog> {
        let mut cmd = Command::new(util::bin("herzog")?);
        cmd.arg("--tls")
            .arg(tls)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state)
            .env_remove("RUST_LOG")
            .env_remove("HERZOG_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd.envs(o.herzog_env.iter().map(|(k, v)| (k, v)));
        if let Some(level) = &o.log_level {
            cmd.arg("--log-level").arg(level);
        }
        match &o.herzog_stderr {
            Some(path) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                cmd.stderr(f);
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().context("failed to start herzog")?;
        let pid = child.id();
        Ok(Herzog { child, pid })
    }

    /// Fails if herzog has exited.
    fn check(&mut self, state: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "herzog exited ({status}); its log is under {}",
                state.join("logs").display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after a grace.
    async fn stop(mut self) {
        util::signal(self.pid, libc::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Herzog {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until herzog accepts a connection and its hello; returns how long that took.
async fn until_listening(addr: &str, admin: &Connector, herzog: &mut Herzog, state: &Path) -> Result<Duration> {
    let began = Instant::now();
    loop {
        if dial(addr, &Hello::Client, admin).await.is_ok() {
            return Ok(began.elapsed());
        }
        herzog.check(state)?;
        if began.elapsed() > Duration::from_secs(60) {
            bail!("herzog did not listen on {addr} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The last "state restored ... elapsed_ms=N" in herzog's log files.
fn restored_ms(state: &Path) -> Option<u64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("logs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("herzog.log"))
        })
        .collect();
    files.sort();
    files.iter().rev().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let line = text.lines().rev().find(|l| l.contains("state restored"))?;
        let v = line.split("elapsed_ms=").nth(1)?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

/// The time in the first herzog log line that contains `what` (tracing's RFC 3339 UTC stamp).
fn log_time(state: &Path, what: &str) -> Option<std::time::SystemTime> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("logs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("herzog.log"))
        })
        .collect();
    files.sort();
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        let line = text.lines().find(|l| l.contains(what))?;
        parse_rfc3339(line.split_whitespace().next()?)
    })
}

/// `2026-11-22T06:03:14.123456Z` as a time.
fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
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
fn list_like_herzog(dir: &Path) -> Result<Duration> {
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

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn progress(client: &mut Option<CoordinatorClient>, addr: &str, admin: &Connector) -> Option<ProjectProgress> {
    if client.is_none() {
        *client = coordinator_client(addr, admin).await.ok();
    }
    let c = client.as_ref()?;
    match c
        .project_progress(context_with(Duration::from_secs(5)), Some(PROJECT.to_string()))
        .await
    {
        Ok(Ok(mut v)) => v.pop(),
        Ok(Err(_)) => None,
        Err(_) => {
            *client = None;
            None
        }
    }
}

/// Runs one scale measurement.
pub fn run(o: &Options) -> Result<Outcome> {
    let bench_nofile = util::raise_nofile();
    let needed = 2 * o.workers as u64 + 64;
    if bench_nofile.0 < needed {
        bail!(
            "{} workers need about {needed} open files on each side; the limit is {} (hard {})",
            o.workers,
            bench_nofile.0,
            bench_nofile.1
        );
    }
    let inputs = o.work.join("inputs").join(format!("scale-{}", o.fragments));
    util::ensure_inputs(&inputs, o.fragments, |_| Vec::new())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the runtime")?;
    let state = util::fresh_dir(&o.work.join("runs"), "scale-state")?;
    let result = runtime.block_on(measure(o, &inputs, &state, bench_nofile));
    if result.is_ok() && !o.keep {
        let _ = std::fs::remove_dir_all(&state);
    } else {
        eprintln!("bench: scale state kept in {}", state.display());
    }
    result
}

async fn measure(o: &Options, inputs: &Path, state: &Path, bench_nofile: (u64, u64)) -> Result<Outcome> {
    let deadline = Instant::now() + o.timeout;
    let made = Instant::now();
    let certs = make_certs(state, o.workers)?;
    eprintln!(
        "bench: scale: made a CA and {} worker certificates in {}",
        o.workers,
        secs(made.elapsed())
    );
    let admin = certs.admin.clone();
    let port = util::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let herzog_dir = state.join("herzog");
    let state = herzog_dir.as_path();
    let mut herzog = Herzog::spawn(o, state, &certs.herzog, port)?;
    until_listening(&addr, &admin, &mut herzog, state).await?;
    let pid = Arc::new(AtomicU32::new(herzog.pid));
    let mut out = Outcome {
        workers: o.workers,
        slots: o.slots,
        fragments: o.fragments,
        bench_nofile,
        herzog_nofile: util::proc_nofile(herzog.pid),
        ..Outcome::default()
    };
    let bench_cpu_before = util::self_cpu();

    // The workers.
    let stats = Stats::new();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let began = Instant::now();
    for (i, (name, connector)) in certs.workers.iter().enumerate() {
        let sim = Sim::new(
            name.clone(),
            addr.clone(),
            connector.clone(),
            o.slots,
            o.queue,
            stats.clone(),
        );
        tasks.spawn(sim::run(sim, i as u64, o.retry, stop_rx.clone()));
    }
    while stats.registered.load(Ordering::Relaxed) < o.workers as u64 {
        herzog.check(state)?;
        if began.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {} workers registered within 300 s",
                stats.registered.load(Ordering::Relaxed),
                o.workers
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.register = began.elapsed();
    eprintln!(
        "bench: scale: {} workers registered in {}",
        o.workers,
        secs(out.register)
    );

    // The sampler, every second from the submit on.
    let submit_began = Instant::now();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let stats = stats.clone();
        let pid = pid.clone();
        let addr = addr.clone();
        let admin = admin.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            let mut client = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                // The counters at the tick; herzog's own count as soon as it answers (its
                // answer waits for the batch in progress: the latency is a figure too).
                let t = submit_began.elapsed();
                let acks = stats.acks.load(Ordering::Relaxed);
                let rss = util::proc_status_kb(pid.load(Ordering::Relaxed), "VmRSS");
                let asked = Instant::now();
                let answer =
                    tokio::time::timeout(Duration::from_millis(900), progress(&mut client, &addr, &admin)).await;
                let (succeeded, latency) = match answer {
                    Ok(Some(p)) => (Some(p.succeeded), Some(asked.elapsed())),
                    Ok(None) => (None, None),
                    Err(_) => {
                        client = None;
                        (None, None)
                    }
                };
                let sample = Sample {
                    t,
                    acks,
                    succeeded,
                    rss,
                    latency,
                };
                eprintln!(
                    "bench: scale: t={:>6.1}s acks={:>8} herzog-succeeded={:>8} (answered in {}) rss={:>5} MB",
                    sample.t.as_secs_f64(),
                    sample.acks,
                    sample.succeeded.map_or("-".into(), |s| s.to_string()),
                    sample.latency.map_or("-".into(), |l| format!("{} ms", l.as_millis())),
                    sample.rss.map_or("-".into(), |r| (r >> 20).to_string())
                );
                samples.lock().expect("not poisoned").push(sample);
            }
        })
    };

    // The submit.
    out.listing = list_like_herzog(inputs)?;
    let client = coordinator_client(&addr, &admin).await?;
    let submit_wall = std::time::SystemTime::now();
    let added = client
        .project_add(
            context_with(Duration::from_secs(3600)),
            NewProject {
                name: Some(PROJECT.to_string()),
                dir: inputs.to_path_buf(),
                spec: RunSpec::new("/bin/true"),
                after: Vec::new(),
                max_running: None,
                share: None,
            },
        )
        .await
        .context("project_add failed")?
        .map_err(|e| anyhow::anyhow!("herzog refused the project: {e}"))?;
    out.submit = submit_began.elapsed();
    out.submit_to_added = log_time(state, "project added").and_then(|t| t.duration_since(submit_wall).ok());
    eprintln!(
        "bench: scale: submitted {} fragments in {}",
        added.fragments,
        secs(out.submit)
    );
    if added.fragments != o.fragments as u64 {
        bail!("herzog found {} fragments, not {}", added.fragments, o.fragments);
    }
    drop(client);

    let wait = |what: &'static str| {
        let stats = stats.clone();
        move |herzog: &mut Herzog| -> Result<()> {
            herzog.check(state)?;
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}: {} of {} completions acknowledged",
                    stats.acks.load(Ordering::Relaxed),
                    o.fragments
                );
            }
            Ok(())
        }
    };

    let mut peak_rss = 0;
    let mut herzog_cpu = Duration::ZERO;
    let mut rate_end_ns = None;
    let mut acks_at_kill = 0;
    let capacity = o.workers as u64 * u64::from(o.slots + o.queue);
    if o.restart {
        let half = (o.fragments / 2) as u64;
        let check = wait("half the project");
        while stats.acks.load(Ordering::Relaxed) < half {
            check(&mut herzog)?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        peak_rss = util::proc_status_kb(herzog.pid, "VmHWM").unwrap_or(0);
        herzog_cpu += util::proc_cpu(herzog.pid).unwrap_or_default();
        herzog.child.kill().context("failed to kill herzog")?;
        herzog.child.wait()?;
        acks_at_kill = stats.acks.load(Ordering::Relaxed);
        rate_end_ns = Some(stats.now_ns());
        stats.armed.store(true, Ordering::SeqCst);
        eprintln!("bench: scale: killed herzog at {acks_at_kill} completions; restarting it");
        let spawned_ns = stats.now_ns();
        let spawned = Instant::now();
        herzog = Herzog::spawn(o, state, &certs.herzog, port)?;
        pid.store(herzog.pid, Ordering::Relaxed);
        out.listening = Some(until_listening(&addr, &admin, &mut herzog, state).await?);
        let check = wait("the first start after the restart");
        loop {
            // Back to dispatching: the first start a worker receives. When every fragment left
            // was already dispatched before the kill (a small project on many slots), there is
            // nothing to start: the first acknowledged completion counts instead.
            let start = Stats::at(stats.first_start_after.load(Ordering::Relaxed));
            let ack = Stats::at(stats.first_ack_after.load(Ordering::Relaxed));
            let pending_at_kill = o.fragments as u64 > acks_at_kill + capacity;
            let first = if pending_at_kill { start } else { start.or(ack) };
            if let Some(at) = first {
                out.restart = Some(at.saturating_sub(Duration::from_nanos(spawned_ns)));
                out.restart_by_completion = start.is_none();
                break;
            }
            check(&mut herzog)?;
            if spawned.elapsed() > Duration::from_secs(120) {
                bail!("no start reached a worker within 120 s of the restart");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.restored_ms = restored_ms(state);
        eprintln!(
            "bench: scale: restart: listening after {}, first start after {} (herzog restored its state in {} ms)",
            secs(out.listening.unwrap_or_default()),
            secs(out.restart.unwrap_or_default()),
            out.restored_ms.map_or("?".into(), |m| m.to_string())
        );
    }

    // The end: every completion acknowledged, then herzog agrees nothing is left.
    let check = wait("the end of the project");
    while stats.acks.load(Ordering::Relaxed) < o.fragments as u64 {
        check(&mut herzog)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut client = None;
    loop {
        check(&mut herzog)?;
        if let Some(p) = progress(&mut client, &addr, &admin).await
            && p.is_finished()
        {
            if p.failed > 0 || p.succeeded != o.fragments as u64 {
                bail!(
                    "the project ended with {} succeeded and {} failed of {}",
                    p.succeeded,
                    p.failed,
                    o.fragments
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.total = submit_began.elapsed();
    sampler.abort();
    out.samples = std::mem::take(&mut *samples.lock().expect("not poisoned"));

    // The rates.
    let first = Stats::at(stats.first_ack.load(Ordering::Relaxed)).unwrap_or_default();
    let last = Stats::at(stats.last_ack.load(Ordering::Relaxed)).unwrap_or_default();
    match rate_end_ns {
        Some(kill) => {
            let span = Duration::from_nanos(kill).saturating_sub(first);
            out.rate = acks_at_kill as f64 / span.as_secs_f64().max(1e-9);
            // Only meaningful when there was work left to start and it took a while.
            if let Some(restart_first) = Stats::at(stats.first_start_after.load(Ordering::Relaxed)) {
                let after = last.saturating_sub(restart_first);
                let done_after = stats.acks.load(Ordering::Relaxed).saturating_sub(acks_at_kill);
                if after > Duration::from_secs(1) {
                    out.rate_after = Some(done_after as f64 / after.as_secs_f64());
                }
            }
        }
        None => {
            out.rate = o.fragments as f64 / last.saturating_sub(first).as_secs_f64().max(1e-9);
        }
    }
    // Per-second deltas while herzog answered and work remained.
    let deltas: Vec<f64> = out
        .samples
        .windows(2)
        .filter(|w| w[0].succeeded.is_some() && w[1].succeeded.is_some())
        .filter(|w| w[0].acks > 0 && w[1].acks < o.fragments as u64)
        .map(|w| (w[1].acks - w[0].acks) as f64 / (w[1].t - w[0].t).as_secs_f64())
        .collect();
    out.rate_sampled = util::median_f64(&deltas);
    let latencies: Vec<Duration> = out
        .samples
        .iter()
        .filter(|s| s.acks > 0)
        .filter_map(|s| s.latency)
        .collect();
    out.query_latency = (!latencies.is_empty()).then(|| util::median(&latencies));

    peak_rss = peak_rss.max(util::proc_status_kb(herzog.pid, "VmHWM").unwrap_or(0));
    herzog_cpu += util::proc_cpu(herzog.pid).unwrap_or_default();
    out.peak_rss = peak_rss;
    out.herzog_cpu = herzog_cpu;
    out.bench_cpu = util::self_cpu().saturating_sub(bench_cpu_before);
    out.db_bytes = dir_bytes(state);
    out.refused = stats.refused.load(Ordering::Relaxed);
    out.session_ends = stats.session_ends.load(Ordering::Relaxed);

    let _ = stop.send(true);
    herzog.stop().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(out)
}

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / (1024.0 * 1024.0))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The figures of one run beside the issue's targets, as a markdown table.
pub fn table(x: &Outcome) -> String {
    let per_fragment = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / x.fragments as f64);
    let mut s = format!(
        "{} fragments, {} simulated workers × {} slots\n\n\
         | figure | measured | target | measured/target | verdict |\n|---|---:|---:|---:|---|\n",
        x.fragments, x.workers, x.slots
    );
    s += &format!(
        "| submit (`project_add`, {} files) | {} | < 10 s | {:.2} | {} |\n",
        x.fragments,
        secs(x.submit),
        x.submit.as_secs_f64() / TARGET_SUBMIT.as_secs_f64(),
        verdict(x.submit < TARGET_SUBMIT)
    );
    s += &format!(
        "| … of which: listing the directory (readdir + stat, timed in the bench) | {} | | | |\n",
        secs(x.listing)
    );
    if let Some(a) = x.submit_to_added {
        s += &format!(
            "| … of which: submit → herzog's \"project added\" (listing, state machine) | {} | | | |\n",
            secs(a)
        );
        s += &format!(
            "| … of which: \"project added\" → reply (commit of every row) | {} | | | |\n",
            secs(x.submit.saturating_sub(a))
        );
    }
    s += &format!(
        "| fragments/s sustained (first completion → {}) | {:.0}/s | ≥ 10,000/s | {:.2} | {} |\n",
        if x.restart.is_some() { "kill" } else { "last" },
        x.rate,
        x.rate / TARGET_RATE,
        verdict(x.rate >= TARGET_RATE)
    );
    if x.rate_sampled.is_finite() {
        s += &format!(
            "| fragments/s, median of 1 s samples | {:.0}/s | ≥ 10,000/s | {:.2} | {} |\n",
            x.rate_sampled,
            x.rate_sampled / TARGET_RATE,
            verdict(x.rate_sampled >= TARGET_RATE)
        );
    }
    if let Some(r) = x.rate_after {
        s += &format!(
            "| fragments/s after the restart (first start → last) | {r:.0}/s | ≥ 10,000/s | {:.2} | {} |\n",
            r / TARGET_RATE,
            verdict(r >= TARGET_RATE)
        );
    }
    s += &format!(
        "| herzog peak RSS (VmHWM, max of both processes) | {} | < 300 MB | {:.2} | {} |\n",
        mb(x.peak_rss),
        x.peak_rss as f64 / TARGET_RSS as f64,
        verdict(x.peak_rss < TARGET_RSS)
    );
    if let Some(r) = x.restart {
        s += &format!(
            "| restart: spawn → first {} at a worker | {} | < 2 s | {:.2} | {} |\n",
            if x.restart_by_completion {
                "acknowledged completion (nothing was left to start)"
            } else {
                "`fragment_start`"
            },
            secs(r),
            r.as_secs_f64() / TARGET_RESTART.as_secs_f64(),
            verdict(r < TARGET_RESTART)
        );
        s += &format!(
            "| … of which: spawn → accepting connections | {} | | | |\n",
            x.listening.map_or("-".into(), secs)
        );
        s += &format!(
            "| … of which: herzog's \"state restored\" (its log) | {} | | | |\n",
            x.restored_ms.map_or("-".into(), |m| format!("{m} ms"))
        );
    }
    s += &format!(
        "| register {} workers (dial twice + `resources_register`) | {} | | | |\n",
        x.workers,
        secs(x.register)
    );
    s += &format!(
        "| herzog CPU per fragment (user+sys) | {} | | | |\n",
        per_fragment(x.herzog_cpu)
    );
    s += &format!(
        "| simulator CPU per fragment (this process) | {} | | | |\n",
        per_fragment(x.bench_cpu)
    );
    s += &format!("| submit → project finished | {} | | | |\n", secs(x.total));
    s += &format!(
        "| `project_progress` latency while busy (median of the 1 s samples) | {} | | | |\n",
        x.query_latency
            .map_or("> 900 ms".into(), |l| format!("{} ms", l.as_millis()))
    );
    s += &format!("| database + WAL at the end | {} | | | |\n", mb(x.db_bytes));
    s += &format!(
        "| open-file limit: bench {} (hard {}), herzog {} | | | | |\n",
        x.bench_nofile.0,
        x.bench_nofile.1,
        x.herzog_nofile.map_or("?".into(), |n| n.to_string())
    );
    if x.refused > 0 {
        s += &format!("| completions herzog refused | {} | | | |\n", x.refused);
    }
    s
}

/// One line per run for the sweep's table.
pub fn sweep_table(xs: &[Outcome]) -> String {
    let mut s = String::from(
        "| fragments | workers × slots | register | submit | fragments/s (→kill) | fragments/s (1 s median) | after restart | peak RSS | restart → first start | restored (log) | herzog CPU/fragment |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for x in xs {
        s += &format!(
            "| {} | {} × {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} µs |\n",
            x.fragments,
            x.workers,
            x.slots,
            secs(x.register),
            secs(x.submit),
            x.rate,
            if x.rate_sampled.is_finite() {
                format!("{:.0}", x.rate_sampled)
            } else {
                "-".into()
            },
            x.rate_after.map_or("-".into(), |r| format!("{r:.0}")),
            mb(x.peak_rss),
            x.restart.map_or("-".into(), |r| {
                format!("{}{}", secs(r), if x.restart_by_completion { " (ack)" } else { "" })
            }),
            x.restored_ms.map_or("-".into(), |m| format!("{m} ms")),
            x.herzog_cpu.as_secs_f64() * 1e6 / x.fragments as f64,
        );
    }
    s
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
