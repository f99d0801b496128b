//! The simulated world around herzog: a clock, a network of messages in flight, workers that
//! behave as kinski does (slots, a queue, a journal of unacknowledged completions), an hz that
//! submits projects, and the faults the seed turns on.

mod hz;
mod net;
mod workers;

use crate::check::{self, Truth};
use crate::faults::Faults;
use crate::{Failure, Summary};
use herzog::sim_api::{Coordinator, Crash, Input, Output, SimTime};
use net::{From, Msg, Sent};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use workers::{Conn, Worker};

const HEARTBEAT_MS: i64 = 2_000;
const WORKER_TIMEOUT_MS: i64 = 10_000;
const TICK_MS: i64 = 1_000;
/// How often a worker sends again what herzog has not acknowledged (kinski's journal).
const RESEND_MS: i64 = 3_000;
/// Events kept for the trace of a failure.
const TRACE: usize = 40;
/// Steps after the faults stop within which every project must finish.
const QUIET_STEPS: u64 = 100_000;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Steps with faults (if any); quiet steps follow until every project has finished.
    pub steps: u64,
    /// Let the seed turn a random subset of the faults on.
    pub swarm: bool,
    /// These faults instead of the ones the seed would choose (the world is the seed's
    /// either way): what shrinking a failure sets.
    pub faults: Option<Faults>,
}

impl Config {
    fn replay(&self) -> String {
        let faults = match &self.faults {
            Some(f) => format!(" --faults {f}"),
            None => String::new(),
        };
        format!(
            "cargo run --release -p sim -- --seed {} --steps {}{}{faults}",
            self.seed,
            self.steps,
            if self.swarm { " --swarm" } else { "" }
        )
    }

    /// The faults this run strikes with.
    pub fn faults(&self) -> Faults {
        let mut rng = XorShiftRng::seed_from_u64(self.seed);
        self.choose(&mut rng)
    }

    /// Draws the seed's faults (so the world drawn next is the same whatever they are), and
    /// returns them or the ones given.
    fn choose(&self, rng: &mut XorShiftRng) -> Faults {
        let chosen = if self.swarm {
            Faults::choose(rng)
        } else {
            Faults::default()
        };
        self.faults.clone().unwrap_or(chosen)
    }
}

pub(crate) struct World {
    config: Config,
    rng: XorShiftRng,
    faults: Faults,
    /// Faults apply (until `config.steps`).
    faulty: bool,
    mono: i64,
    wall_offset: i64,
    network: BTreeMap<(i64, u64), Msg>,
    seq: u64,
    /// Inputs herzog's own side raises (failed dispatches, closed connections).
    local: Vec<(From, Input)>,
    workers: Vec<Worker>,
    /// Projects hz has yet to hear were added: name, fragments.
    to_submit: BTreeMap<String, usize>,
    next_submit: i64,
    herzog: Option<Coordinator>,
    herzog_up_at: i64,
    next_tick: i64,
    /// The database lives here (tmpfs where there is one: fsync is free there).
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    truth: Truth,
    trace: VecDeque<String>,
    step: u64,
    commits: u64,
    restarts: u64,
    fail_rate: f64,
    /// An invariant broken mid-step, reported at its end.
    violation: Option<String>,
    /// A hash of every event so far.
    digest: u64,
    /// Projects hz made so far (their names count up).
    projects_made: usize,
    /// What hz must undo once the faults stop (pauses, drains), so that everything finishes.
    undo: BTreeSet<hz::Undo>,
    #[cfg(feature = "planted-bugs")]
    plant: Option<herzog::sim_api::Plant>,
}

impl World {
    pub(crate) fn new(config: Config) -> Result<World, Failure> {
        let mut rng = XorShiftRng::seed_from_u64(config.seed);
        let faults = config.choose(&mut rng);
        let dir = match std::path::Path::new("/dev/shm") {
            shm if shm.is_dir() => tempfile::tempdir_in(shm),
            _ => tempfile::tempdir(),
        }
        .map_err(|e| setup_failure(&config, format!("failed to make a temp dir: {e}")))?;
        let db = dir.path().join("herzog.db");
        let now = SimTime { wall: 0, mono: 0 };
        let herzog = Coordinator::open(&db, WORKER_TIMEOUT_MS, now)
            .map_err(|e| setup_failure(&config, format!("failed to open herzog: {e}")))?;
        let truth = Truth::new(&db).map_err(|e| setup_failure(&config, e))?;
        let workers = (0..rng.random_range(1..=5))
            .map(|i| Worker {
                name: format!("w{i}"),
                slots: rng.random_range(1..=4),
                queue: rng.random_range(0..=4),
                running: BTreeMap::new(),
                queued: VecDeque::new(),
                unacked: BTreeMap::new(),
                seen: BTreeSet::new(),
                conn: Conn::Registering(rng.random_range(0..500)),
                cut_until: 0,
                next_beat: 0,
                next_resend: 0,
                herzog_has_conn: false,
                epoch: 0,
            })
            .collect();
        let to_submit: BTreeMap<String, usize> = (0..rng.random_range(1..=3))
            .map(|i| (format!("p{i}"), rng.random_range(1..=60)))
            .collect();
        let to_submit_len = to_submit.len();
        let fail_rate = rng.random_range(0.0..0.3);
        Ok(World {
            faulty: true,
            rng,
            faults,
            mono: 0,
            wall_offset: 0,
            network: BTreeMap::new(),
            seq: 0,
            local: Vec::new(),
            workers,
            to_submit,
            next_submit: 0,
            herzog: Some(herzog),
            herzog_up_at: 0,
            next_tick: TICK_MS,
            _dir: dir,
            db,
            truth,
            trace: VecDeque::new(),
            step: 0,
            commits: 0,
            restarts: 0,
            fail_rate,
            violation: None,
            digest: 0xcbf2_9ce4_8422_2325,
            projects_made: to_submit_len,
            undo: BTreeSet::new(),
            #[cfg(feature = "planted-bugs")]
            plant: None,
            config,
        })
    }

    /// Plants a known bug in herzog, now and after every restart.
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn plant(&mut self, plant: herzog::sim_api::Plant) {
        self.plant = Some(plant);
        if let Some(herzog) = &mut self.herzog {
            herzog.plant(plant);
        }
    }

    fn now(&self) -> SimTime {
        SimTime {
            wall: self.mono + self.wall_offset,
            mono: self.mono,
        }
    }

    fn note(&mut self, event: String) {
        // FNV-1a over every event: two runs of a seed must give the same.
        for byte in event.bytes() {
            self.digest = (self.digest ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("[{} t={}ms] {event}", self.step, self.mono));
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            seed: self.config.seed,
            step: self.step,
            what,
            replay: self.config.replay(),
            trace: self.trace.iter().map(|l| format!("  {l}\n")).collect(),
        }
    }

    pub(crate) fn run(mut self) -> Result<Summary, Failure> {
        while self.step < self.config.steps {
            self.turn()?;
        }
        // Quiet: no new faults; cut-off workers heal, crashed ones come back, and every
        // project must finish.
        self.faulty = false;
        let quiet_until = self.step + QUIET_STEPS;
        loop {
            if self.finished() {
                break;
            }
            if self.step >= quiet_until {
                return Err(self.fail(format!(
                    "liveness: projects unfinished {QUIET_STEPS} steps after the faults stopped: {:?}\nworkers: {:?}",
                    self.herzog.as_ref().map(|h| h
                        .progress()
                        .into_iter()
                        .filter(|p| !p.is_finished())
                        .map(|p| (p.name, p.pending, p.running, p.queued, p.held))
                        .collect::<Vec<_>>()),
                    self.herzog.as_ref().map(|h| h.workers())
                )));
            }
            self.turn()?;
        }
        let progress = self.herzog.as_ref().map(|h| h.progress()).unwrap_or_default();
        Ok(Summary {
            seed: self.config.seed,
            steps: self.step,
            sim_ms: self.mono,
            commits: self.commits,
            restarts: self.restarts,
            attempts: self.truth.issued(),
            fragments: progress.iter().map(|p| p.total).sum(),
            succeeded: progress.iter().map(|p| p.succeeded).sum(),
            failed: progress.iter().map(|p| p.failed).sum(),
            failures: progress
                .iter()
                .flat_map(|p| {
                    p.failures
                        .iter()
                        .map(|f| format!("{}: {} x {}", p.name, f.reason, f.count))
                })
                .collect(),
            fail_rate: self.fail_rate,
            digest: self.digest,
            faults: self.faults.clone(),
        })
    }

    /// Every project submitted and finished, herzog up.
    fn finished(&self) -> bool {
        let Some(herzog) = &self.herzog else {
            return false;
        };
        let progress = herzog.progress();
        self.to_submit.is_empty() && progress.len() == self.truth.projects() && progress.iter().all(|p| p.is_finished())
    }

    /// One step: time passes, faults strike, messages arrive, workers act, herzog applies
    /// what reached it; then every invariant is checked.
    fn turn(&mut self) -> Result<(), Failure> {
        self.step += 1;
        self.mono += self.rng.random_range(1..=200);
        if self.faulty {
            self.strike()?;
        }
        self.deliver();
        self.workers_act();
        self.hz_acts();
        let mut inputs = std::mem::take(&mut self.local);
        if self.herzog.is_none() && self.mono >= self.herzog_up_at {
            self.restart_herzog()?;
        }
        if self.herzog.is_some() && self.mono >= self.next_tick {
            self.next_tick = self.mono + TICK_MS;
            inputs.push((From::Local, Input::Tick));
        }
        if self.herzog.is_some() && !inputs.is_empty() {
            self.herzog_step(inputs)?;
        }
        if let Some(what) = self.violation.take() {
            return Err(self.fail(what));
        }
        if let Some(herzog) = &self.herzog {
            self.truth.check(herzog).map_err(|what| self.fail(what))?;
        }
        Ok(())
    }

    /// Keeps the first invariant a worker saw broken, for the end of the step.
    fn violated(&mut self, result: Result<(), String>) {
        if let Err(what) = result {
            self.violation.get_or_insert(what);
        }
    }

    /// Faults of this step (those on messages strike as they are sent).
    fn strike(&mut self) -> Result<(), Failure> {
        let f = self.faults.clone();
        if f.clock_jump > 0.0 && self.rng.random_bool(f.clock_jump) {
            let jump = self.rng.random_range(-120_000..120_000);
            self.wall_offset += jump;
            self.note(format!("fault: the wall clock jumps {jump} ms"));
        }
        if !self.workers.is_empty() && f.partition > 0.0 && self.rng.random_bool(f.partition) {
            let w = self.rng.random_range(0..self.workers.len());
            let until = self.mono + self.rng.random_range(100..3 * WORKER_TIMEOUT_MS);
            self.workers[w].cut_until = until;
            // herzog notices half the time (a reset), and kinski connects again once it can.
            // Otherwise the connection is half-open both ways, as for a frozen worker: once
            // thawed it just goes on, and registers again only if herzog has let it go.
            if self.rng.random_bool(0.5) {
                self.disconnect(w);
                if !matches!(self.workers[w].conn, Conn::Down(_)) {
                    self.workers[w].conn = Conn::Registering(until);
                }
            }
            self.note(format!("fault: {} cut off until {until}", self.workers[w].name));
        }
        if !self.workers.is_empty() && f.worker_crash > 0.0 && self.rng.random_bool(f.worker_crash) {
            let w = self.rng.random_range(0..self.workers.len());
            let back = self.mono + self.rng.random_range(100..2 * WORKER_TIMEOUT_MS);
            let worker = &mut self.workers[w];
            worker.running.clear();
            worker.queued.clear();
            worker.conn = Conn::Down(back);
            self.disconnect(w);
            self.note(format!("fault: {} crashes, back at {back}", self.workers[w].name));
        }
        if self.herzog.is_some() && f.disk_full > 0.0 && self.rng.random_bool(f.disk_full) {
            self.herzog
                .as_mut()
                .expect("guarded")
                .fill_disk()
                .map_err(|e| self.fail(format!("failed to fill the disk: {e}")))?;
            self.note("fault: the disk is full".into());
        }
        Ok(())
    }

    /// herzog's connection to worker `w` closes, and its connection layer says so.
    fn disconnect(&mut self, w: usize) {
        self.workers[w].epoch += 1;
        if self.workers[w].herzog_has_conn {
            self.workers[w].herzog_has_conn = false;
            let worker = self.workers[w].name.clone();
            self.local.push((From::Local, Input::Disconnected { worker }));
        }
    }

    fn restart_herzog(&mut self) -> Result<(), Failure> {
        let herzog = Coordinator::open(&self.db, WORKER_TIMEOUT_MS, self.now())
            .map_err(|e| self.fail(format!("herzog failed to restart from its store: {e}")))?;
        self.herzog = Some(herzog);
        #[cfg(feature = "planted-bugs")]
        if let Some(plant) = self.plant {
            self.plant(plant);
        }
        self.restarts += 1;
        self.next_tick = self.mono + TICK_MS;
        self.note("herzog restarted from its store".into());
        Ok(())
    }

    /// herzog is gone: its connections with it. Every worker registers again once it is back.
    fn herzog_down(&mut self, why: &str) {
        self.herzog = None;
        self.herzog_up_at = self.mono + self.rng.random_range(100..3_000);
        self.network.clear();
        self.local.clear();
        for w in &mut self.workers {
            w.herzog_has_conn = false;
            w.epoch += 1;
            if matches!(w.conn, Conn::Up | Conn::Registering(_)) {
                w.conn = Conn::Registering(self.herzog_up_at);
            }
        }
        self.note(format!("herzog down: {why}"));
    }

    fn herzog_step(&mut self, batch: Vec<(From, Input)>) -> Result<(), Failure> {
        let f = self.faults.clone();
        let crash = if self.faulty && f.herzog_crash > 0.0 && self.rng.random_bool(f.herzog_crash) {
            match self.rng.random_range(0..4) {
                0 => Crash::BeforeCommit,
                1 => Crash::MidCommit(self.rng.random_range(0..64)),
                2 => Crash::AfterCommit,
                _ => Crash::AfterReplies,
            }
        } else {
            Crash::None
        };
        let (from, inputs): (Vec<From>, Vec<Input>) = batch.into_iter().unzip();
        let shown: Vec<String> = inputs.iter().map(|i| format!("{i:?}")).collect();
        let now = self.now();
        let herzog = self.herzog.as_mut().expect("guarded");
        let result = herzog.step(now, inputs, crash);
        self.note(format!("herzog applies {}", shown.join("; ")));
        let step = match result {
            Ok(Some(step)) => step,
            Ok(None) => {
                self.herzog_down(&format!("crashed ({crash:?})"));
                return Ok(());
            }
            Err(e) => {
                // What the daemon does on a failed commit: it exits, and is restarted.
                let what = e.to_string();
                if !what.contains("full") {
                    return Err(self.fail(format!("a commit failed for another reason than a full disk: {what}")));
                }
                self.herzog_down(&format!("commit failed: {what}"));
                return Ok(());
            }
        };
        self.commits += 1;
        if !step.uncommitted_starts.is_empty() {
            return Err(self.fail(format!(
                "starts released before their attempts were committed: {:?}",
                step.uncommitted_starts
            )));
        }
        if step.early_replies > 0 {
            return Err(self.fail(format!("{} replies were sent before their commit", step.early_replies)));
        }
        let new_starts: Vec<(String, String)> = step
            .outputs
            .iter()
            .filter_map(|out| match out {
                Output::Start {
                    attempt,
                    project,
                    worker,
                    ..
                } if !self.truth.was_issued(*attempt) => Some((project.clone(), worker.clone())),
                _ => None,
            })
            .collect();
        self.truth.released(&step.outputs).map_err(|what| self.fail(what))?;
        for (from, reply) in from.into_iter().zip(step.replies) {
            match from {
                From::Worker(w, epoch, sent) => {
                    // herzog holds the connection a registration came on from then on, if
                    // that connection is still open.
                    if matches!(sent, Sent::Register) && reply.is_ok() && epoch == self.workers[w].epoch {
                        self.workers[w].herzog_has_conn = true;
                    }
                    self.send(Msg::Reply(w, epoch, sent, reply.is_ok()));
                }
                From::Local => {}
                hz => self.hz_heard(hz, reply),
            }
        }
        if step.crashed {
            self.herzog_down("crashed after its replies, before its effects");
            return Ok(());
        }
        let herzog = self.herzog.as_ref().expect("stepped");
        check::round(herzog, self.now(), &new_starts).map_err(|what| self.fail(what))?;
        for out in step.outputs {
            self.note(format!("herzog releases {out:?}"));
            let worker = |name: &str| self.workers.iter().position(|w| w.name == name);
            match out {
                Output::Start {
                    worker: name,
                    attempt,
                    project,
                    fragment,
                } => {
                    let Some(to) = worker(&name) else {
                        return Err(self.fail(format!("a start for unknown worker {name}")));
                    };
                    if self.workers[to].herzog_has_conn {
                        self.send(Msg::Start {
                            to,
                            attempt,
                            fragment: (project, fragment),
                        });
                    } else {
                        self.local.push((From::Local, Input::DispatchFailed { attempt }));
                    }
                }
                Output::Stop { worker: name, attempt } => {
                    if let Some(to) = worker(&name).filter(|w| self.workers[*w].herzog_has_conn) {
                        self.send(Msg::Stop(to, attempt));
                    }
                }
                Output::Unqueue { worker: name, attempts } => {
                    if let Some(to) = worker(&name).filter(|w| self.workers[*w].herzog_has_conn) {
                        self.send(Msg::Unqueue(to, attempts));
                    }
                }
                Output::Other(_) => {}
            }
        }
        Ok(())
    }
}

fn setup_failure(config: &Config, what: String) -> Failure {
    Failure {
        seed: config.seed,
        step: 0,
        what,
        replay: config.replay(),
        trace: String::new(),
    }
}
