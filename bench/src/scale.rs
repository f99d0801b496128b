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

mod herzog;
mod readings;
mod table;

use herzog::{Herzog, make_certs, until_listening};
use readings::{dir_bytes, list_like_herzog, log_time, restored_ms};
pub use table::{sweep_table, table};

/// The targets.
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
