//! The event loop: the one owner of the state machine. It takes every command waiting (a
//! batch), applies each, schedules, commits the batch's writes in one transaction, and only
//! then replies and runs the effects. The next batches are applied while a commit runs, and
//! committed together after it.

use crate::dispatch::Dispatcher;
use crate::machine::{Effect, Event, Machine, Mono, Now, Reply, Write};
use crate::store::{Store, StoreError};
use common::wire::ProjectProgress;
use common::{ApiError, AttemptId};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 8192;
/// Commands waiting for the loop. Past this, senders wait: an RPC handler waits to be taken,
/// and tarpc's per-connection limit then stops taking requests.
const WAITING: usize = 4096;
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

/// A read of the state: it runs on the state of its batch and gives back the sending of its
/// answer, which waits for the batch's commit.
type Query = Box<dyn FnOnce(&Machine) -> Answer + Send>;
type Answer = Box<dyn FnOnce() + Send>;

/// What the loop is asked to do.
pub(crate) enum Command {
    /// An event to apply; its reply is sent once the batch is committed.
    Event { event: Event, reply: Option<EventReply> },
    /// Events to apply in order, with one reply for them all (a worker's completions): one
    /// message and one waiting caller instead of one each.
    Events { events: Vec<Event>, reply: EventsReply },
    /// A read of the state, answered after the batch it arrived in is committed.
    Query(Query),
    /// Progress of `name` (or of every project), answered after the first committed batch
    /// that leaves none of them with a fragment pending or running.
    Wait { name: Option<String>, reply: WaitReply },
    /// Answered after the first committed batch whose event log goes past `after`.
    WaitEvents { after: i64, reply: oneshot::Sender<()> },
    /// Answered after the first committed batch in which `attempt` is no longer live (its
    /// end applied), for a follower of its output that has read it to its end.
    WaitAttempt {
        attempt: AttemptId,
        reply: oneshot::Sender<()>,
    },
}

type WaitReply = oneshot::Sender<Result<Vec<ProjectProgress>, ApiError>>;
type EventReply = oneshot::Sender<Result<Reply, ApiError>>;
type EventsReply = oneshot::Sender<Vec<Result<Reply, ApiError>>>;

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

/// A handle for sending commands to the loop.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    pub(crate) fn new() -> (Handle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(WAITING);
        (Handle { tx }, rx)
    }

    async fn send(&self, command: Command) -> Result<(), ApiError> {
        self.tx.send(command).await.map_err(|_| ApiError::ShuttingDown)
    }

    /// Applies an event and waits until it is durable.
    pub(crate) async fn event(&self, event: Event) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Event {
            event,
            reply: Some(reply),
        })
        .await?;
        rx.await.map_err(|_| ApiError::ShuttingDown)?
    }

    /// Applies events in order and waits until they are durable; one result each.
    pub(crate) async fn events(&self, events: Vec<Event>) -> Result<Vec<Result<Reply, ApiError>>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Events { events, reply }).await?;
        rx.await.map_err(|_| ApiError::ShuttingDown)
    }

    /// Sends an event nobody waits for, waiting for room in the channel; false once the loop
    /// is gone.
    pub(crate) async fn offer(&self, event: Event) -> bool {
        self.tx.send(Command::Event { event, reply: None }).await.is_ok()
    }

    /// Sends an event nobody waits for (connection closed, dispatch failed). Never waits, as
    /// the loop itself calls it (through the dispatcher); when the channel is full the event
    /// goes on a task of its own rather than being dropped.
    pub(crate) fn notify(&self, event: Event) {
        match self.tx.try_send(Command::Event { event, reply: None }) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(command).await;
                });
            }
        }
    }

    /// Reads the state.
    pub(crate) async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Machine) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let q: Query = Box::new(move |m| {
            let value = f(m);
            Box::new(move || {
                let _ = tx.send(value);
            })
        });
        self.send(Command::Query(q)).await?;
        rx.await.map_err(|_| ApiError::ShuttingDown)
    }

    /// Returns once the event log goes past `after` (committed), or after `timeout`.
    pub(crate) async fn wait_events(&self, after: i64, timeout: Duration) -> Result<(), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::WaitEvents { after, reply }).await?;
        // Dropping the receiver tells the loop to forget the waiter.
        let _ = tokio::time::timeout(timeout, rx).await;
        Ok(())
    }

    /// Returns once `attempt` has ended (its end committed), or after `timeout`.
    pub(crate) async fn wait_attempt(&self, attempt: AttemptId, timeout: Duration) -> Result<(), ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::WaitAttempt { attempt, reply }).await?;
        // Dropping the receiver tells the loop to forget the waiter.
        let _ = tokio::time::timeout(timeout, rx).await;
        Ok(())
    }

    /// Progress of `name` (or of every project) once none of them has a fragment pending or
    /// running, or after `timeout` as it is then. The loop answers from the batch that
    /// finishes them: no polling.
    pub(crate) async fn wait_finished(
        &self,
        name: Option<String>,
        timeout: Duration,
    ) -> Result<Vec<ProjectProgress>, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Wait {
            name: name.clone(),
            reply,
        })
        .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(answer) => answer.map_err(|_| ApiError::ShuttingDown)?,
            // Dropping the receiver tells the loop to forget the waiter.
            Err(_) => self.query(move |m| m.progress(name.as_deref())).await?,
        }
    }
}

/// What a batch owes its callers once its writes are durable: nothing here may be released
/// before that (commit, then reply; commit, then act). Batches applied while an earlier commit
/// runs accumulate here and are committed together.
#[derive(Default)]
struct Uncommitted {
    /// Events applied.
    events: usize,
    writes: Vec<Write>,
    replies: Vec<(EventReply, Result<Reply, ApiError>)>,
    batch_replies: Vec<(EventsReply, Vec<Result<Reply, ApiError>>)>,
    /// Answers to queries and waits, computed on the state of their batch.
    answers: Vec<Answer>,
    effects: Vec<Effect>,
}

impl Uncommitted {
    fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.replies.is_empty()
            && self.batch_replies.is_empty()
            && self.answers.is_empty()
            && self.effects.is_empty()
    }

    /// Sends the replies and answers and hands the effects to the dispatcher.
    fn release(self, dispatcher: &Dispatcher) {
        for (reply, result) in self.replies {
            let _ = reply.send(result);
        }
        for (reply, results) in self.batch_replies {
            let _ = reply.send(results);
        }
        for answer in self.answers {
            answer();
        }
        dispatcher.execute(self.effects);
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
///
/// The commit is pipelined: while one batch's transaction is written and fsynced, the loop
/// takes and applies the next commands, and commits everything they wrote in the next
/// transaction. So one fsync covers every completion that arrived during the previous one,
/// and commits start at least [`COMMIT_SPACING`] apart (at 2 slots of millisecond attempts,
/// each commit was one completion and one fsync). Replies, answers and effects still wait
/// for their own batch's commit.
pub(crate) async fn run(
    clock: Clock,
    mut machine: Machine,
    store: Store,
    mut rx: mpsc::Receiver<Command>,
    dispatcher: Dispatcher,
    tick_every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // The store, while no commit holds it.
    let mut idle_store = Some(store);
    // The commit running, and what its batches owe.
    let mut committing: Option<(Commit, Uncommitted)> = None;
    // Batches applied since that commit started.
    let mut uncommitted = Uncommitted::default();
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
                owed.release(&dispatcher);
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
            apply_batch(
                &mut machine,
                clock.now(),
                &mut rx,
                first,
                &mut waiters,
                &mut uncommitted,
            );
        }
        if committing.is_none() && (!uncommitted.is_empty() || uncommitted.events > 0) {
            let now = tokio::time::Instant::now();
            if uncommitted.writes.is_empty() {
                // Nothing to make durable, and every earlier batch is: release at once (also
                // what owes nothing, which would otherwise count against MAX_UNCOMMITTED).
                std::mem::take(&mut uncommitted).release(&dispatcher);
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

/// Takes every command waiting after `first` (up to [`MAX_BATCH`]), applies them, schedules,
/// and adds what they owe to `uncommitted`.
fn apply_batch(
    machine: &mut Machine,
    now: Now,
    rx: &mut mpsc::Receiver<Command>,
    first: Command,
    waiters: &mut Vec<Waiter>,
    uncommitted: &mut Uncommitted,
) {
    // Counted in events: a command of many events weighs as many.
    let weight = |cmd: &Command| match cmd {
        Command::Events { events, .. } => events.len().max(1),
        _ => 1,
    };
    let mut weighed = weight(&first);
    let mut batch = vec![first];
    while weighed < MAX_BATCH.min(MAX_UNCOMMITTED.saturating_sub(uncommitted.events)) {
        match rx.try_recv() {
            Ok(cmd) => {
                weighed += weight(&cmd);
                batch.push(cmd);
            }
            Err(_) => break,
        }
    }
    let mut queries = Vec::new();
    for cmd in batch {
        uncommitted.events += weight(&cmd);
        match cmd {
            Command::Event { event, reply } => {
                let result = apply(machine, now, event);
                if let Some(reply) = reply {
                    uncommitted.replies.push((reply, result));
                }
            }
            Command::Events { events, reply } => {
                let results = events.into_iter().map(|event| apply(machine, now, event)).collect();
                uncommitted.batch_replies.push((reply, results));
            }
            Command::Query(q) => queries.push(q),
            Command::Wait { name, reply } => waiters.push(Waiter::Projects { name, reply }),
            Command::WaitEvents { after, reply } => waiters.push(Waiter::Events { after, reply }),
            Command::WaitAttempt { attempt, reply } => waiters.push(Waiter::Attempt { attempt, reply }),
        }
    }
    machine.schedule(now);
    let (writes, effects) = machine.take();
    uncommitted.writes.extend(writes);
    uncommitted.effects.extend(effects);
    // Read after the batch is applied, sent once it is committed.
    for q in queries {
        uncommitted.answers.push(q(machine));
    }
    // A handful of waiters at most (hz sessions), each a look at per-project counters.
    if !waiters.is_empty() {
        *waiters = std::mem::take(waiters)
            .into_iter()
            .filter_map(|w| w.answer_if_ready(machine, &mut uncommitted.answers))
            .collect();
    }
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
fn fail(e: StoreError, owed: Uncommitted, uncommitted: Uncommitted) -> StoreError {
    tracing::error!(error = %e, "commit failed: stopping so that a restart recovers from the record");
    let reason = e.to_string();
    owed.fail(&reason);
    uncommitted.fail(&reason);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Connections;
    use crate::machine::Timing;
    use crate::staging::Stager;
    use std::sync::Arc;

    async fn engine(dir: &std::path::Path) -> (Handle, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let store = Store::open(&dir.join("herzog.db")).unwrap();
        let (handle, rx) = Handle::new();
        let stager = Arc::new(Stager::new(&[], dir).await.unwrap());
        let dispatcher = Dispatcher {
            connections: Connections::new(handle.clone(), stager.clone(), std::time::Duration::from_secs(3)),
            handle: handle.clone(),
            stager,
            alerts: crate::alerts::Outbox::default(),
        };
        let timing = Timing {
            worker_timeout_ms: 60_000,
            start_grace_ms: 2_000,
            probe_retry_ms: 60_000,
        };
        let machine = Machine::new(timing, dir.join("results"));
        let tick = Duration::from_secs(1);
        let engine = tokio::spawn(run(
            Clock::new(),
            machine,
            store,
            rx,
            dispatcher,
            tick,
            std::future::pending(),
        ));
        (handle, engine)
    }

    /// Events that write nothing and owe nothing (ticks, free-space readings: an idle herzog)
    /// must not add up to the bound on what waits uncommitted: the loop would stop taking
    /// commands for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_loop_never_stops_taking_commands() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _engine) = engine(dir.path()).await;
        for _ in 0..MAX_UNCOMMITTED + 10 {
            let reading = Event::StateSpace {
                free_bytes: 1 << 40,
                min_bytes: 1,
            };
            assert!(handle.offer(reading).await);
        }
        let answered = tokio::time::timeout(Duration::from_secs(10), handle.query(|m| m.policy())).await;
        assert!(
            matches!(answered, Ok(Ok(_))),
            "the loop stopped taking commands: {answered:?}"
        );
    }

    /// A commit that hangs (another connection holds the database's write lock) must not let
    /// the loop take commands without end: it stops at what it may hold uncommitted, the
    /// channel fills, and senders wait; released, every one gets its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_commit_pushes_back_on_senders() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, engine) = engine(dir.path()).await;
        let blocker = rusqlite::Connection::open(dir.path().join("herzog.db")).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        // Each registration writes; far more of them than the loop may hold plus the channel.
        let senders: Vec<_> = (0..MAX_UNCOMMITTED + WAITING + 1_000)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let event = Event::Register {
                        worker: format!("w{i}"),
                        resources: Default::default(),
                        running: Vec::new(),
                        staged: false,
                    };
                    handle.event(event).await
                })
            })
            .collect();
        // Half a second is ages for the loop to drain the channel if it still took commands:
        // it must stay full (what cannot be awaited: the absence of progress).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            handle.tx.capacity(),
            0,
            "the loop went on taking commands while its commit hung"
        );
        blocker.execute_batch("ROLLBACK").unwrap();
        for sender in senders {
            let reply = sender.await.unwrap();
            assert!(matches!(reply, Ok(Reply::Registered)), "{reply:?}");
        }
        assert!(!engine.is_finished());
    }
}
