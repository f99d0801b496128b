//! The event loop: the one owner of the state machine. It takes every command waiting (a
//! batch), applies each, schedules, commits the batch's writes in one transaction, and only
//! then replies and runs the effects. The next batches are applied while a commit runs, and
//! committed together after it.

use crate::inbox::{Answer, Command, EventReply, EventsReply, WaitReply};
use crate::machine::{Effect, Event, Machine, Mono, Now, Reply, Write};
use crate::store::{Store, StoreError};
use common::wire::ProjectProgress;
use common::{ApiError, AttemptId};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 8192;
/// The most events applied and not yet committed. While a commit hangs (a stalled disk) the
/// loop stops taking commands here, so memory stops growing and the pressure goes back to
/// the senders instead.
const MAX_UNCOMMITTED: usize = 4 * MAX_BATCH;
/// The least time from one commit's start to the next's. Commits further apart than this
/// start at once; closer ones wait for the rest of it, and everything that arrives meanwhile
/// shares one transaction and one fsync. At millisecond attempts that is a dozen completions
/// per commit instead of one or two, and the per-batch work (scheduling, replies, start and
/// report calls, wake-ups) shrinks with it; workers' queues cover the wait. 2 ms left `hz
/// local` at 1.23x xargs on `/bin/true`, 10 ms at 1.13x (BENCHMARKS.md); a caller waits at
/// most that much longer, and only while herzog is committing back to back.
pub(crate) const COMMIT_SPACING: Duration = Duration::from_millis(10);

/// Where the loop runs its effects once their batch is committed: the dispatcher in the
/// daemon, simulated workers in the simulator, a recorder in tests.
pub(crate) trait Effects {
    fn run(&mut self, effects: Vec<Effect>);
}

impl<F: FnMut(Vec<Effect>)> Effects for F {
    fn run(&mut self, effects: Vec<Effect>) {
        self(effects);
    }
}

/// Reads both clocks for the machine: the wall clock for records, a monotonic one (from the
/// clock's creation) for every timeout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Now {
        Now {
            wall: common::now_millis(),
            mono: Mono(i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// A [`Command::Wait`], [`Command::WaitEvents`] or [`Command::WaitAttempt`] not answered yet.
enum Waiter {
    Projects {
        name: Option<String>,
        reply: WaitReply,
    },
    Events {
        after: i64,
        reply: oneshot::Sender<()>,
    },
    Attempt {
        attempt: AttemptId,
        reply: oneshot::Sender<()>,
    },
}

impl Waiter {
    /// Adds its answer to `answers` when what it waits for has happened (projects finished
    /// or unknown, an event past `after`); gives itself back otherwise.
    fn answer_if_ready(self, machine: &Machine, answers: &mut Vec<Answer>) -> Option<Waiter> {
        match self {
            // The caller gave up (its timeout): nothing to answer.
            Waiter::Projects { reply, .. } if reply.is_closed() => None,
            Waiter::Events { reply, .. } if reply.is_closed() => None,
            Waiter::Attempt { reply, .. } if reply.is_closed() => None,
            Waiter::Projects { name, reply } => match machine.progress(name.as_deref()) {
                Ok(list) if !list.iter().all(ProjectProgress::is_finished) => Some(Waiter::Projects { name, reply }),
                result => {
                    answers.push(Box::new(move || {
                        let _ = reply.send(result);
                    }));
                    None
                }
            },
            Waiter::Events { after, reply } if machine.last_event() > after => {
                answers.push(Box::new(move || {
                    let _ = reply.send(());
                }));
                None
            }
            Waiter::Attempt { attempt, reply } if !machine.is_live(attempt) => {
                answers.push(Box::new(move || {
                    let _ = reply.send(());
                }));
                None
            }
            waiting => Some(waiting),
        }
    }
}

/// What a batch owes its callers once its writes are durable: nothing here may be released
/// before that (commit, then reply; commit, then act). Batches applied while an earlier commit
/// runs accumulate here and are committed together. Only a [`Committed`] releases, and only
/// a commit (or a batch with nothing to write, every earlier one durable) makes one.
#[derive(Default)]
pub(crate) struct Owed {
    /// Events applied.
    events: usize,
    writes: Vec<Write>,
    replies: Vec<(EventReply, Result<Reply, ApiError>)>,
    batch_replies: Vec<(EventsReply, Vec<Result<Reply, ApiError>>)>,
    /// Answers to queries and waits, computed on the state of their batch.
    answers: Vec<Answer>,
    effects: Vec<Effect>,
}

/// What a committed batch owes: released by sending the replies and running the effects.
pub(crate) struct Committed(Owed);

impl Owed {
    fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.replies.is_empty()
            && self.batch_replies.is_empty()
            && self.answers.is_empty()
            && self.effects.is_empty()
    }

    /// The writes to commit.
    pub(crate) fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Commits the writes in one transaction. On failure every caller is told so and nothing
    /// is released: the error is for the loop to stop on.
    pub(crate) fn commit(self, store: &mut Store) -> Result<Committed, StoreError> {
        match store.commit(&self.writes) {
            Ok(()) => Ok(Committed(self)),
            Err(e) => Err(fail(e, self, Owed::default())),
        }
    }

    /// A planted bug, for the simulator to show it finds it: what the batch owes, releasable
    /// before its writes (handed back) are committed. Never built into herzog itself.
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn planted_release_first(mut self) -> (Committed, Vec<Write>) {
        let writes = std::mem::take(&mut self.writes);
        (Committed(self), writes)
    }

    /// Tells every caller the commit failed.
    fn fail(self, reason: &str) {
        let failed = || {
            Err(ApiError::Storage {
                reason: reason.to_string(),
            })
        };
        for (reply, _) in self.replies {
            let _ = reply.send(failed());
        }
        for (reply, results) in self.batch_replies {
            let _ = reply.send(results.iter().map(|_| failed()).collect());
        }
    }
}

impl Committed {
    /// Sends the replies and answers, then hands the effects to `effects`.
    pub(crate) fn release(self, effects: &mut impl Effects) {
        let owed = self.0;
        for (reply, result) in owed.replies {
            let _ = reply.send(result);
        }
        for (reply, results) in owed.batch_replies {
            let _ = reply.send(results);
        }
        for answer in owed.answers {
            answer();
        }
        effects.run(owed.effects);
    }
}

/// The loop's state between batches, without any IO: the machine and the callers waiting
/// for something to happen. The daemon's loop and the simulator both drive it.
pub(crate) struct Core {
    machine: Machine,
    waiters: Vec<Waiter>,
}

impl Core {
    pub(crate) fn new(machine: Machine) -> Core {
        Core {
            machine,
            waiters: Vec::new(),
        }
    }

    pub(crate) fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Plants a known bug in the machine (the simulator's tests only).
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn plant(&mut self, plant: crate::machine::planted::Plant) {
        self.machine.planted.plant = Some(plant);
    }

    /// Applies a batch of commands in order, schedules, and adds what they owe to `owed`.
    pub(crate) fn apply(&mut self, now: Now, batch: Vec<Command>, owed: &mut Owed) {
        let machine = &mut self.machine;
        let mut queries = Vec::new();
        for cmd in batch {
            owed.events += weight(&cmd);
            match cmd {
                Command::Event { event, reply } => {
                    let result = apply(machine, now, event);
                    if let Some(reply) = reply {
                        owed.replies.push((reply, result));
                    }
                }
                Command::Events { events, reply } => {
                    let results = events.into_iter().map(|event| apply(machine, now, event)).collect();
                    owed.batch_replies.push((reply, results));
                }
                Command::Query(q) => queries.push(q),
                Command::Wait { name, reply } => self.waiters.push(Waiter::Projects { name, reply }),
                Command::WaitEvents { after, reply } => self.waiters.push(Waiter::Events { after, reply }),
                Command::WaitAttempt { attempt, reply } => self.waiters.push(Waiter::Attempt { attempt, reply }),
            }
        }
        machine.schedule(now);
        let (writes, effects) = machine.take();
        owed.writes.extend(writes);
        owed.effects.extend(effects);
        // Read after the batch is applied, sent once it is committed.
        for q in queries {
            owed.answers.push(q(machine));
        }
        // A handful of waiters at most (hz sessions), each a look at per-project counters.
        if !self.waiters.is_empty() {
            self.waiters = std::mem::take(&mut self.waiters)
                .into_iter()
                .filter_map(|w| w.answer_if_ready(machine, &mut owed.answers))
                .collect();
        }
    }
}

/// How much a command weighs against the batch bounds, in events: a command of many events
/// weighs as many.
fn weight(cmd: &Command) -> usize {
    match cmd {
        Command::Events { events, .. } => events.len().max(1),
        _ => 1,
    }
}

type Commit = tokio::task::JoinHandle<(Store, Result<(), StoreError>)>;

/// Commits on a blocking thread; the loop keeps applying batches meanwhile.
fn start_commit(mut store: Store, writes: Vec<Write>) -> Commit {
    tokio::task::spawn_blocking(move || {
        let result = store.commit(&writes);
        (store, result)
    })
}

/// Runs until `shutdown` resolves or every handle is dropped. A failed commit stops herzog:
/// its memory is then ahead of its record, and a restart from the record is the safe way on.
/// Nothing the failed batch (or any later one) owes is released: its callers are told the
/// commit failed, and its effects are dropped.
///
/// The commit is pipelined: while one batch's transaction is written and fsynced, the loop
/// takes and applies the next commands, and commits everything they wrote in the next
/// transaction. So one fsync covers every completion that arrived during the previous one,
/// and commits start at least [`COMMIT_SPACING`] apart (at 2 slots of millisecond attempts,
/// each commit was one completion and one fsync). Replies, answers and effects still wait
/// for their own batch's commit.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    clock: Clock,
    machine: Machine,
    store: Store,
    mut rx: mpsc::Receiver<Command>,
    mut effects: impl Effects,
    tick_every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    let mut core = Core::new(machine);
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // The store, while no commit holds it.
    let mut idle_store = Some(store);
    // The commit running, and what its batches owe.
    let mut committing: Option<(Commit, Owed)> = None;
    // Batches applied since that commit started.
    let mut uncommitted = Owed::default();
    let mut closing = false;
    // When the last commit started, and when the next may.
    let mut next_commit = tokio::time::Instant::now();
    // systemd's watchdog gets a ping every quarter of its interval while the loop turns and no
    // commit has hung for half of it: a hung herzog is restarted like a failed one.
    let watchdog = common::logging::watchdog_interval();
    let every = watchdog.map_or(Duration::from_secs(3600), |w| w / 4);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commit_started: Option<tokio::time::Instant> = None;
    loop {
        let waiting = committing.is_none() && !uncommitted.writes.is_empty();
        // Ticks wait too: a heartbeat left in the channel must not make its worker look silent.
        let taking = uncommitted.events + committing.as_ref().map_or(0, |(_, owed)| owed.events) < MAX_UNCOMMITTED;
        let first = tokio::select! {
            biased;
            done = async { (&mut committing.as_mut().expect("guarded").0).await }, if committing.is_some() => {
                let (store, result) = done.expect("the commit task does not panic");
                let (_, owed) = committing.take().expect("guarded");
                commit_started = None;
                if let Err(e) = result {
                    return Err(fail(e, owed, uncommitted));
                }
                Committed(owed).release(&mut effects);
                idle_store = Some(store);
                None
            }
            _ = &mut shutdown, if !closing => { closing = true; None }
            cmd = rx.recv(), if !closing && taking => match cmd {
                Some(cmd) => Some(cmd),
                None => { closing = true; None }
            },
            _ = tick.tick(), if !closing && taking => Some(Command::Event { event: Event::Tick, reply: None }),
            () = tokio::time::sleep_until(next_commit), if waiting => None,
            _ = ping.tick(), if watchdog.is_some() => {
                let limit = watchdog.unwrap_or_default();
                if commit_started.is_none_or(|at| at.elapsed() < limit / 2) {
                    common::logging::notify_watchdog();
                } else {
                    tracing::error!(waited_ms = commit_started.map_or(0, |at| at.elapsed().as_millis() as u64), "a commit hangs: no longer telling systemd's watchdog that herzog is alive");
                }
                None
            }
        };
        if let Some(first) = first {
            let batch = take_batch(&mut rx, first, uncommitted.events);
            core.apply(clock.now(), batch, &mut uncommitted);
        }
        if committing.is_none() && (!uncommitted.is_empty() || uncommitted.events > 0) {
            let now = tokio::time::Instant::now();
            if uncommitted.writes.is_empty() {
                // Nothing to make durable, and every earlier batch is: release at once (also
                // what owes nothing, which would otherwise count against MAX_UNCOMMITTED).
                Committed(std::mem::take(&mut uncommitted)).release(&mut effects);
            } else if now >= next_commit || closing {
                let mut batch = std::mem::take(&mut uncommitted);
                let writes = std::mem::take(&mut batch.writes);
                let store = idle_store.take().expect("no commit is running");
                committing = Some((start_commit(store, writes), batch));
                commit_started = Some(now);
                next_commit = now + COMMIT_SPACING;
            }
        }
        if closing && committing.is_none() && uncommitted.is_empty() {
            break;
        }
    }
    Ok(())
}

/// `first` and every command waiting after it, up to [`MAX_BATCH`] events (and what may
/// still be held uncommitted beside the `held` already).
fn take_batch(rx: &mut mpsc::Receiver<Command>, first: Command, held: usize) -> Vec<Command> {
    let mut weighed = weight(&first);
    let mut batch = vec![first];
    while weighed < MAX_BATCH.min(MAX_UNCOMMITTED.saturating_sub(held)) {
        match rx.try_recv() {
            Ok(cmd) => {
                weighed += weight(&cmd);
                batch.push(cmd);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Applies one event; a rejection is logged and becomes the caller's error. A request herzog
/// refuses (a typo, a name taken) is the user's to read in hz, so only INFO here; a worker
/// reporting what is not its own is worth a WARN.
fn apply(machine: &mut Machine, now: Now, event: Event) -> Result<Reply, ApiError> {
    machine.handle(now, event).map_err(|rejected| {
        match &rejected {
            crate::machine::Rejected::Api(_) => tracing::info!(%rejected, "request refused"),
            _ => tracing::warn!(%rejected, "event rejected"),
        }
        ApiError::from(rejected)
    })
}

/// Logs a failed commit and fails everyone waiting on it or on later batches.
fn fail(e: StoreError, owed: Owed, uncommitted: Owed) -> StoreError {
    tracing::error!(error = %e, "commit failed: stopping so that a restart recovers from the record");
    let reason = e.to_string();
    owed.fail(&reason);
    uncommitted.fail(&reason);
    e
}

#[cfg(test)]
mod tests;
