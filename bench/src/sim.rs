//! Simulated workers: each dials herzog exactly as kinski does (kinski/src/session.rs) — a
//! `registry` connection used as a `RegistryClient`, and a `worker {name}` connection on which
//! it *serves* the Worker service — registers, heartbeats with the attempts it holds, and
//! completes every start at once: it answers the start, then its reporter task sends
//! `Exit::Code(0)` for everything finished since its last call, in one call, as kinski does.
//! A completion is held until herzog acknowledges it and resent on the next session, as
//! kinski does, so a herzog restart loses nothing.

use common::AttemptId;
use common::instances::{InstanceRun, RunId, WatchSpec};
use common::service::{MAX_BATCH, RegistryClient, Worker, WorkerError};
use common::transport::{Connector, Hello, context_with, dial, json_transport, registry_client};
use common::wire::{Completion, Exit, Resources, StartAttempt};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::sync::watch;

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const NEVER: u64 = u64::MAX;

/// What every simulated worker counts, in nanoseconds since `t0` where it is a time.
#[derive(Debug)]
pub struct Stats {
    pub t0: Instant,
    /// Successful registrations (a worker re-registering after a restart counts again).
    pub registered: AtomicU64,
    /// `fragment_start` calls received.
    pub starts: AtomicU64,
    /// Completions herzog acknowledged (a resent one whose first reply was lost counts twice).
    pub acks: AtomicU64,
    /// Completions herzog refused (not retried).
    pub refused: AtomicU64,
    pub first_ack: AtomicU64,
    pub last_ack: AtomicU64,
    /// Set once herzog has been killed: the next start received is the first after the restart.
    pub armed: AtomicBool,
    pub first_start_after: AtomicU64,
    /// The first completion acknowledged after the restart (when nothing was left to start).
    pub first_ack_after: AtomicU64,
    /// Sessions that ended (connection lost, herzog refused a heartbeat, ...).
    pub session_ends: AtomicU64,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            t0: Instant::now(),
            registered: AtomicU64::new(0),
            starts: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            first_ack: AtomicU64::new(NEVER),
            last_ack: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            first_start_after: AtomicU64::new(NEVER),
            first_ack_after: AtomicU64::new(NEVER),
            session_ends: AtomicU64::new(0),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// A time recorded with [`Stats::now_ns`], or None if it never happened.
    pub fn at(ns: u64) -> Option<Duration> {
        (ns != NEVER).then(|| Duration::from_nanos(ns))
    }

    fn on_start(&self) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        if self.armed.load(Ordering::Relaxed) {
            let now = self.now_ns();
            self.first_start_after.fetch_min(now, Ordering::Relaxed);
        }
    }

    fn on_ack(&self) {
        let now = self.now_ns();
        self.first_ack.fetch_min(now, Ordering::Relaxed);
        self.last_ack.fetch_max(now, Ordering::Relaxed);
        if self.armed.load(Ordering::Relaxed) {
            self.first_ack_after.fetch_min(now, Ordering::Relaxed);
        }
        self.acks.fetch_add(1, Ordering::Relaxed);
    }
}

/// One simulated worker.
pub struct Sim {
    name: String,
    addr: String,
    /// Mutual TLS with this worker's own certificate (herzog checks the name on each call).
    connector: Connector,
    resources: Resources,
    stats: Arc<Stats>,
    /// Started and not yet acknowledged: what heartbeats and registrations report.
    held: Mutex<BTreeMap<AttemptId, Completion>>,
    /// Finished and not yet sent in the current session.
    outbox: Mutex<Vec<Completion>>,
    /// Wakes the reporter.
    finished: tokio::sync::Notify,
    /// The registry client of the current registered session, with its generation.
    client: watch::Sender<(u64, Option<RegistryClient>)>,
    /// Completions in flight hold it shared; a heartbeat or registration holds it alone. So,
    /// as in kinski (whose session reports, waits for the replies, then heartbeats), a
    /// heartbeat never lists an attempt whose completion herzog is processing at that moment
    /// (herzog would take it for an attempt it does not expect, and stop it).
    gate: tokio::sync::RwLock<()>,
}

impl Sim {
    pub fn new(
        name: String,
        addr: String,
        connector: Connector,
        slots: u32,
        queue: u32,
        stats: Arc<Stats>,
    ) -> Arc<Sim> {
        Arc::new(Sim {
            name,
            addr,
            connector,
            resources: Resources {
                cpus: slots,
                memory_bytes: 64 << 30,
                disk_free_bytes: 1 << 40,
                slots,
                queue,
                scratch_dir: None,
                ..Resources::default()
            },
            stats,
            held: Mutex::new(BTreeMap::new()),
            outbox: Mutex::new(Vec::new()),
            finished: tokio::sync::Notify::new(),
            client: watch::Sender::new((0, None)),
            gate: tokio::sync::RwLock::new(()),
        })
    }

    fn held(&self) -> Vec<AttemptId> {
        self.held.lock().expect("not poisoned").keys().copied().collect()
    }
}

#[derive(Clone)]
struct Service(Arc<Sim>);

impl Worker for Service {
    async fn fragment_prep(self, _: Context, _: Box<StartAttempt>) -> Result<(), WorkerError> {
        Ok(())
    }

    async fn fragment_start(self, _: Context, starts: Vec<StartAttempt>) -> Vec<Result<(), WorkerError>> {
        let sim = self.0;
        let now = common::now_millis();
        let mut fresh = Vec::with_capacity(starts.len());
        {
            let mut held = sim.held.lock().expect("not poisoned");
            for start in &starts {
                sim.stats.on_start();
                if held.contains_key(&start.attempt) {
                    continue;
                }
                let completion = Completion {
                    limit: None,
                    peak_memory_bytes: None,
                    attempt: start.attempt,
                    exit: Exit::Code(0),
                    wall_ms: 0,
                    cpu_ms: 0,
                    peak_rss_kb: 0,
                    finished_at: now,
                };
                held.insert(start.attempt, completion.clone());
                fresh.push(completion);
            }
        }
        sim.outbox.lock().expect("not poisoned").extend(fresh);
        sim.finished.notify_one();
        starts.iter().map(|_| Ok(())).collect()
    }

    async fn fragment_stop(self, _: Context, attempt: AttemptId) -> Result<(), WorkerError> {
        self.0.held.lock().expect("not poisoned").remove(&attempt);
        Ok(())
    }

    async fn fragment_list(self, _: Context) -> Vec<AttemptId> {
        self.0.held()
    }

    // The simulated workers run batch attempts only: no job reaches them.
    async fn fragment_signal(self, _: Context, attempt: AttemptId, _: i32) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownAttempt { attempt })
    }

    async fn fragment_input(
        self,
        _: Context,
        attempt: AttemptId,
        _: u64,
        _: Vec<u8>,
        _: bool,
    ) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownAttempt { attempt })
    }

    async fn fragment_resize(self, _: Context, attempt: AttemptId, _: common::job::TtySize) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownAttempt { attempt })
    }

    async fn fragment_unqueue(self, _: Context, _: Vec<AttemptId>) -> Vec<AttemptId> {
        // Every start completes at once here: none waits in a queue.
        Vec::new()
    }

    async fn resources_list(self, _: Context) -> Resources {
        self.0.resources.clone()
    }

    // The simulated workers run batch attempts only; herzog places no services on them
    // (the benchmark's cluster has no services file).
    async fn instance_run(self, _: Context, run: Box<InstanceRun>) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run: run.run })
    }

    async fn instance_prep(self, _: Context, run: RunId, _: u32) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run })
    }

    async fn instance_stop(self, _: Context, run: RunId) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run })
    }

    async fn instance_retune(self, _: Context, run: RunId, _: WatchSpec) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run })
    }

    async fn instance_signal(self, _: Context, run: RunId, _: i32) -> Result<(), WorkerError> {
        Err(WorkerError::UnknownRun { run })
    }

    async fn output_read(
        self,
        _: Context,
        target: common::output::OutputTarget,
        _: common::output::Position,
        _: u32,
        _: u64,
    ) -> Result<common::output::OutputChunk, WorkerError> {
        match target {
            common::output::OutputTarget::Instance { run, .. } => Err(WorkerError::UnknownRun { run }),
            common::output::OutputTarget::Attempt { attempt, .. } => Err(WorkerError::UnknownAttempt { attempt }),
        }
    }

    /// Simulated workers end with the benchmark, not on herzog's word: nothing stops here.
    async fn shutdown(self, _: Context) -> Result<(), WorkerError> {
        Err(WorkerError::Prepare {
            path: "-".into(),
            reason: "a simulated worker stops with its benchmark, not on request".into(),
        })
    }
}

/// Sends what finished, in calls of up to `MAX_BATCH`, whenever something did; what a failed
/// call carried goes back to the outbox for the next registered session.
async fn reporter(sim: Arc<Sim>) {
    let mut rx = sim.client.subscribe();
    loop {
        sim.finished.notified().await;
        loop {
            let batch: Vec<Completion> = {
                let mut outbox = sim.outbox.lock().expect("not poisoned");
                let n = outbox.len().min(MAX_BATCH);
                outbox.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let (generation, client) = rx.borrow_and_update().clone();
            let reply = match client {
                Some(client) => {
                    let _shared = sim.gate.read().await;
                    Some(
                        client
                            .fragment_complete(context_with(CALL_TIMEOUT), sim.name.clone(), batch.clone())
                            .await,
                    )
                }
                None => None,
            };
            match reply {
                Some(Ok(Ok(results))) => {
                    let mut held = sim.held.lock().expect("not poisoned");
                    for (completion, result) in batch.iter().zip(results) {
                        held.remove(&completion.attempt);
                        match result {
                            Ok(()) => sim.stats.on_ack(),
                            // herzog will not take it (requeued elsewhere, ...): resending
                            // cannot help.
                            Err(_) => {
                                sim.stats.refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                _ => {
                    sim.outbox.lock().expect("not poisoned").splice(0..0, batch);
                    if rx.wait_for(|(g, c)| *g != generation && c.is_some()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// One session, as kinski's: dial twice, serve, register, heartbeat until it breaks.
async fn session(sim: &Arc<Sim>, generation: u64) -> anyhow::Result<std::convert::Infallible> {
    let registry = registry_client(&sim.addr, &sim.connector).await?;
    let stream = dial(
        &sim.addr,
        &Hello::Worker {
            name: sim.name.clone(),
            incarnation: 0,
        },
        &sim.connector,
    )
    .await?;
    let mut serving = tokio::spawn(
        BaseChannel::with_defaults(json_transport(stream))
            .execute(Service(sim.clone()).serve())
            .for_each(spawn),
    );
    let _abort = AbortOnDrop(serving.abort_handle());
    let registered = {
        let _alone = sim.gate.write().await;
        registry
            .resources_register(
                context_with(CALL_TIMEOUT),
                sim.name.clone(),
                sim.resources.clone(),
                sim.held(),
            )
            .await??
    };
    sim.stats.registered.fetch_add(1, Ordering::Relaxed);
    // Completions waiting for a session (held across a restart) go out now.
    sim.client.send_replace((generation, Some(registry.clone())));
    let mut beat = tokio::time::interval(Duration::from_millis(registered.heartbeat_ms.max(50)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    loop {
        tokio::select! {
            _ = &mut serving => anyhow::bail!("herzog closed the worker connection"),
            _ = beat.tick() => {
                let _alone = sim.gate.write().await;
                registry.heartbeat(context_with(CALL_TIMEOUT), sim.name.clone(), sim.held()).await??;
            }
        }
    }
}

/// Runs a worker until `stop` is set, reconnecting after `retry` (plus up to `retry` of
/// jitter) whenever a session ends.
pub async fn run(sim: Arc<Sim>, index: u64, retry: Duration, mut stop: watch::Receiver<bool>) {
    let reporting = tokio::spawn(reporter(sim.clone()));
    let _stop_reporting = AbortOnDrop(reporting.abort_handle());
    let mut generation = 0u64;
    loop {
        generation += 1;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = session(&sim, generation) => {}
        }
        sim.client.send_replace((generation, None));
        sim.stats.session_ends.fetch_add(1, Ordering::Relaxed);
        // A deterministic jitter, so that a thousand workers do not all dial at once.
        let jitter = (index.wrapping_mul(0x9e37_79b9).wrapping_add(generation * 7919)) % 1000;
        let delay = retry + retry.mul_f64(jitter as f64 / 1000.0);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
