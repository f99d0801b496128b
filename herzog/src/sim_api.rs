//! The narrow surface the deterministic simulator (`sim/`) drives: herzog's own loop core
//! (`engine::Core`, `Owed`, `Committed`), machine, scheduler and store, fed the simulator's
//! time and events, with the effects handed back as plain values. Only conversions live here,
//! no second copy of any decision. Hidden from the docs: it is for the simulator alone.

use crate::engine::{Core, Owed};
use crate::inbox::Command;
use crate::machine::{Effect, Event, Machine, Mono, NewProjectEvent, Now, Timing};
use crate::store::Store;
pub use crate::store::StoreError;
pub use common::AttemptId;
pub use common::wire::Control;
use common::wire::Policy;
pub use common::wire::{ActiveAttempt, ProjectProgress};
use common::wire::{Completion, Exit, Resources, RunSpec, StartNotice};
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;

/// A moment of simulated time, in milliseconds: the wall clock (which may jump) and the
/// monotonic one (which only goes forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimTime {
    pub wall: i64,
    pub mono: i64,
}

impl From<SimTime> for Now {
    fn from(t: SimTime) -> Now {
        Now {
            wall: t.wall,
            mono: Mono(t.mono),
        }
    }
}

/// What reaches herzog: a request from hz, or a message from a worker or its connection.
#[derive(Clone, Debug)]
pub enum Input {
    /// `hz action`: a project of `fragments` files.
    AddProject {
        name: String,
        fragments: usize,
        max_attempts: u32,
        /// A non-zero exit is tried again (within `max_attempts`).
        retry_failed: bool,
    },
    /// `hz remove`.
    RemoveProject {
        name: String,
    },
    /// `hz pause`, `hz resume`, `hz limit`, `hz share`, `hz cancel`, `hz drain`, ...
    Control(Control),
    /// `hz priority NAME`, or `hz fair` for `None`.
    SetPolicy {
        priority: Option<String>,
    },
    Register {
        worker: String,
        slots: u32,
        queue: u32,
        running: Vec<AttemptId>,
    },
    Heartbeat {
        worker: String,
        running: Vec<AttemptId>,
    },
    /// These attempts' programs started, at `at` by the worker's clock.
    Started {
        worker: String,
        attempts: Vec<AttemptId>,
        at: i64,
    },
    Complete {
        worker: String,
        attempt: AttemptId,
        /// Exit code 0, or 1.
        success: bool,
        wall_ms: u64,
        finished_at: i64,
    },
    Disconnected {
        worker: String,
    },
    /// The worker dropped these queued starts, as herzog asked: they never ran.
    TakenBack {
        worker: String,
        attempts: Vec<AttemptId>,
    },
    DispatchFailed {
        attempt: AttemptId,
    },
    Tick,
}

impl Input {
    fn event(self) -> Event {
        match self {
            Input::AddProject {
                name,
                fragments,
                max_attempts,
                retry_failed,
            } => Event::AddProject(Box::new(NewProjectEvent {
                name,
                dir: "/sim".into(),
                spec: RunSpec {
                    max_attempts,
                    retry_failed,
                    ..RunSpec::new("true")
                },
                files: (0..fragments).map(|i| format!("f{i:06}")).collect(),
                after: Vec::new(),
                max_running: None,
                share: 1,
            })),
            Input::RemoveProject { name } => Event::RemoveProject { name },
            Input::Control(control) => Event::Control(control),
            Input::SetPolicy { priority } => Event::SetPolicy(match priority {
                Some(project) => Policy::Priority { project },
                None => Policy::Fair,
            }),
            Input::Register {
                worker,
                slots,
                queue,
                running,
            } => Event::Register {
                worker,
                resources: Resources {
                    slots,
                    queue,
                    cpus: slots,
                    memory_bytes: 64 << 30,
                    ..Resources::default()
                },
                running,
                staged: false,
            },
            Input::Heartbeat { worker, running } => Event::Heartbeat { worker, running },
            Input::Started { worker, attempts, at } => Event::Started {
                worker,
                notices: attempts
                    .into_iter()
                    .map(|attempt| StartNotice { attempt, at })
                    .collect(),
            },
            Input::Complete {
                worker,
                attempt,
                success,
                wall_ms,
                finished_at,
            } => Event::Complete {
                worker,
                completion: Completion {
                    attempt,
                    exit: Exit::Code(if success { 0 } else { 1 }),
                    wall_ms,
                    cpu_ms: wall_ms,
                    peak_rss_kb: 0,
                    finished_at,
                    limit: None,
                    peak_memory_bytes: None,
                },
                staging_error: None,
            },
            Input::Disconnected { worker } => Event::Disconnected { worker },
            Input::TakenBack { worker, attempts } => Event::TakenBack { worker, attempts },
            Input::DispatchFailed { attempt } => Event::DispatchFailed {
                attempt,
                reason: "the simulated network lost the start".into(),
            },
            Input::Tick => Event::Tick,
        }
    }
}

/// An effect herzog released, as the simulator's workers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Start {
        worker: String,
        attempt: AttemptId,
        project: String,
        fragment: String,
    },
    Stop {
        worker: String,
        attempt: AttemptId,
    },
    Unqueue {
        worker: String,
        attempts: Vec<AttemptId>,
    },
    /// One the simulator does not model yet (services, probes, alerts), by name.
    Other(&'static str),
}

impl From<Effect> for Output {
    fn from(effect: Effect) -> Output {
        match effect {
            Effect::Start { worker, start, .. } => Output::Start {
                worker,
                attempt: start.attempt,
                project: start.project,
                fragment: start.fragment,
            },
            Effect::Stop { worker, attempt } => Output::Stop { worker, attempt },
            Effect::Unqueue { worker, attempts } => Output::Unqueue { worker, attempts },
            Effect::Probe { .. } => Output::Other("probe"),
            Effect::Instance(_) => Output::Other("instance"),
            Effect::StageInstance { .. } => Output::Other("stage instance"),
            Effect::Alerts => Output::Other("alerts"),
        }
    }
}

/// Where herzog stops in a step: nowhere, or crashed before its commit, in the middle of
/// it (this many of its writes made in the open transaction, which SQLite rolls back),
/// between its commit and its replies and effects, or between its replies and its effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    None,
    BeforeCommit,
    MidCommit(usize),
    AfterCommit,
    AfterReplies,
}

/// What one step released.
#[derive(Debug, Default)]
pub struct Step {
    /// The effects, in the order herzog released them.
    pub outputs: Vec<Output>,
    /// One per input: its reply, or why it was refused.
    pub replies: Vec<Result<(), String>>,
    /// Replies that were sent before the commit (must be none).
    pub early_replies: usize,
    /// Rows written in the step's transaction.
    pub writes: usize,
    /// Starts whose attempt the store did not hold when they were released (must be none).
    pub uncommitted_starts: Vec<AttemptId>,
    /// herzog crashed after its replies, before its effects: the simulator restarts it.
    pub crashed: bool,
}

/// A known bug to plant, for the simulator to show it finds it.
#[cfg(feature = "planted-bugs")]
pub use crate::machine::planted::Plant;

/// herzog, as the simulator runs it: the loop's core and the store, on simulated time.
pub struct Coordinator {
    core: Core,
    store: Store,
    #[cfg(feature = "planted-bugs")]
    plant: Option<Plant>,
}

impl Coordinator {
    /// Opens herzog on the database at `db` (created if new), restoring what it holds: the
    /// same path a restart takes.
    pub fn open(db: &Path, worker_timeout_ms: i64, now: SimTime) -> Result<Coordinator, StoreError> {
        let store = Store::open(db)?;
        let snapshot = store.load()?;
        let timing = Timing {
            worker_timeout_ms,
            start_grace_ms: 2_000,
            probe_retry_ms: worker_timeout_ms,
        };
        let machine = Machine::restore(timing, PathBuf::from("/sim/results"), snapshot, now.into());
        Ok(Coordinator {
            core: Core::new(machine),
            store,
            #[cfg(feature = "planted-bugs")]
            plant: None,
        })
    }

    /// Applies `inputs` as one batch (each with a caller waiting for its reply), schedules,
    /// commits, then releases: the daemon's loop without its channel and threads. `None`
    /// when `crash` stopped it before the release; the simulator then reopens from the store.
    pub fn step(&mut self, now: SimTime, inputs: Vec<Input>, crash: Crash) -> Result<Option<Step>, StoreError> {
        let mut waiting = Vec::with_capacity(inputs.len());
        let batch = inputs
            .into_iter()
            .map(|input| {
                let (reply, rx) = oneshot::channel();
                waiting.push(rx);
                Command::Event {
                    event: input.event(),
                    reply: Some(reply),
                }
            })
            .collect();
        let mut owed = Owed::default();
        self.core.apply(now.into(), batch, &mut owed);
        let early_replies = waiting.iter_mut().map(|rx| rx.try_recv()).filter(Result::is_ok).count();
        match crash {
            Crash::BeforeCommit => return Ok(None),
            Crash::MidCommit(made) => {
                self.store.torn_commit(owed.writes(), made)?;
                return Ok(None);
            }
            Crash::None | Crash::AfterCommit | Crash::AfterReplies => {}
        }
        let writes = owed.writes().len();
        let mut outputs = Vec::new();
        let mut uncommitted_starts = Vec::new();
        #[cfg(feature = "planted-bugs")]
        if self.plant == Some(Plant::ReleaseBeforeCommit) {
            let (committed, writes) = owed.planted_release_first();
            committed.release(&mut sink(&self.store, &mut outputs, &mut uncommitted_starts));
            let early_replies = waiting.iter_mut().map(|rx| rx.try_recv()).filter(Result::is_ok).count();
            self.store.commit(&writes)?;
            return Ok(Some(Step {
                outputs,
                replies: Vec::new(),
                early_replies,
                writes: writes.len(),
                uncommitted_starts,
                crashed: false,
            }));
        }
        let committed = owed.commit(&mut self.store)?;
        if crash == Crash::AfterCommit {
            return Ok(None);
        }
        committed.release(&mut sink(&self.store, &mut outputs, &mut uncommitted_starts));
        let replies = waiting
            .into_iter()
            .map(|mut rx| match rx.try_recv() {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("no reply after the release: {e}")),
            })
            .collect();
        let crashed = crash == Crash::AfterReplies;
        if crashed {
            // The replies went out; the effects die with the process.
            outputs.clear();
        }
        Ok(Some(Step {
            outputs,
            replies,
            early_replies,
            writes,
            uncommitted_starts,
            crashed,
        }))
    }

    /// Plants a known bug in this herzog.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, plant: Plant) {
        self.plant = Some(plant);
        self.core.plant(plant);
    }

    /// Caps the database at its size now: the next commit that needs room fails, as on a
    /// full disk.
    pub fn fill_disk(&mut self) -> Result<(), StoreError> {
        self.store.fill_disk()
    }

    /// Every attempt live now (dispatched, not ended), in attempt order, as `hz active`
    /// shows them.
    pub fn active(&self) -> Vec<ActiveAttempt> {
        self.core.machine().active(0, u32::MAX).items
    }

    /// The project given priority, if any.
    pub fn priority(&self) -> Option<String> {
        match self.core.machine().policy() {
            Policy::Priority { project } => Some(project),
            Policy::Fair => None,
        }
    }

    /// How many of `project`'s pending fragments may start now (none while it is paused,
    /// at its limit, or gone).
    pub fn startable(&self, project: &str) -> u64 {
        self.core.machine().project(project).map_or(0, |p| p.startable())
    }

    /// Work left undone after a scheduling round (a worker with a free slot while fragments
    /// may start), if any: the scheduler must never leave it.
    pub fn idle_while_waiting(&self, now: SimTime) -> Option<String> {
        self.core.machine().idle_while_waiting(now.into())
    }

    /// Every project's account in the fair share, as `hz shares` shows it.
    pub fn shares(&self) -> Vec<common::wire::ShareInfo> {
        self.core.machine().shares()
    }

    /// Every worker as `hz workers` shows it.
    pub fn workers(&self) -> Vec<common::wire::WorkerInfo> {
        self.core.machine().workers()
    }

    /// Every project's counts, as `hz status` shows them.
    pub fn progress(&self) -> Vec<ProjectProgress> {
        self.core.machine().progress(None).unwrap_or_default()
    }
}

/// An effect sink that keeps the effects as outputs and notes each start whose attempt the
/// store does not hold as it is released.
fn sink<'a>(
    store: &'a Store,
    outputs: &'a mut Vec<Output>,
    uncommitted: &'a mut Vec<AttemptId>,
) -> impl FnMut(Vec<Effect>) + 'a {
    move |effects: Vec<Effect>| {
        for effect in effects {
            if let Effect::Start { start, .. } = &effect
                && !store.holds_attempt(start.attempt).unwrap_or(false)
            {
                uncommitted.push(start.attempt);
            }
            outputs.push(Output::from(effect));
        }
    }
}
