//! The event loop: the one owner of the state machine. It takes every command waiting (a
//! batch), applies each, schedules, commits the batch's writes in one transaction, and only
//! then replies and runs the effects.

use crate::dispatch::Dispatcher;
use crate::machine::{Event, Machine, Reply};
use crate::store::{Store, StoreError};
use common::ApiError;
use common::wire::ProjectProgress;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most commands applied in one transaction.
const MAX_BATCH: usize = 8192;

type Query = Box<dyn FnOnce(&Machine) + Send>;

/// What the loop is asked to do.
pub(crate) enum Command {
    /// An event to apply; its reply is sent once the batch is committed.
    Event {
        event: Event,
        reply: Option<oneshot::Sender<Result<Reply, ApiError>>>,
    },
    /// A read of the state, answered after the batch it arrived in is committed.
    Query(Query),
    /// Progress of `name` (or of every project), answered after the first committed batch
    /// that leaves none of them with a fragment pending or running.
    Wait { name: Option<String>, reply: WaitReply },
}

type WaitReply = oneshot::Sender<Result<Vec<ProjectProgress>, ApiError>>;

/// A [`Command::Wait`] not answered yet.
struct Waiter {
    name: Option<String>,
    reply: WaitReply,
}

impl Waiter {
    /// Answers when the projects are finished (or unknown); gives itself back otherwise.
    fn answer_if_finished(self, machine: &Machine) -> Option<Waiter> {
        // The caller gave up (its timeout): nothing to answer.
        if self.reply.is_closed() {
            return None;
        }
        match machine.progress(self.name.as_deref()) {
            Ok(list) if !list.iter().all(ProjectProgress::is_finished) => Some(self),
            result => {
                let _ = self.reply.send(result);
                None
            }
        }
    }
}

/// A handle for sending commands to the loop.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Command>,
}

impl Handle {
    pub(crate) fn new() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Handle { tx }, rx)
    }

    /// Applies an event and waits until it is durable.
    pub(crate) async fn event(&self, event: Event) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Event {
                event,
                reply: Some(reply),
            })
            .map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)?
    }

    /// Sends an event nobody waits for (connection closed, dispatch failed).
    pub(crate) fn notify(&self, event: Event) {
        let _ = self.tx.send(Command::Event { event, reply: None });
    }

    /// Reads the state.
    pub(crate) async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Machine) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let q: Query = Box::new(move |m| {
            let _ = tx.send(f(m));
        });
        self.tx.send(Command::Query(q)).map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)
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
        self.tx
            .send(Command::Wait {
                name: name.clone(),
                reply,
            })
            .map_err(|_| ApiError::ShuttingDown)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(answer) => answer.map_err(|_| ApiError::ShuttingDown)?,
            // Dropping the receiver tells the loop to forget the waiter.
            Err(_) => self.query(move |m| m.progress(name.as_deref())).await?,
        }
    }
}

/// Runs until `shutdown` resolves or every handle is dropped. A failed commit stops herzog:
/// its memory is then ahead of its record, and a restart from the record is the safe way on.
pub(crate) async fn run(
    mut machine: Machine,
    mut store: Store,
    mut rx: mpsc::UnboundedReceiver<Command>,
    dispatcher: Dispatcher,
    tick_every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StoreError> {
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => break,
            },
            _ = tick.tick() => Command::Event { event: Event::Tick, reply: None },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let now = common::now_millis();
        let mut replies = Vec::new();
        let mut queries = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Event { event, reply } => {
                    let result = machine.handle(now, event);
                    if let Err(rejected) = &result {
                        tracing::warn!(%rejected, "event rejected");
                    }
                    if let Some(reply) = reply {
                        replies.push((reply, result.map_err(ApiError::from)));
                    }
                }
                Command::Query(q) => queries.push(q),
                Command::Wait { name, reply } => waiters.push(Waiter { name, reply }),
            }
        }
        machine.schedule(now);
        let (writes, effects) = machine.take();
        if !writes.is_empty() {
            let (back, result) = tokio::task::spawn_blocking(move || {
                let r = store.commit(&writes);
                (store, r)
            })
            .await
            .expect("the commit task does not panic");
            store = back;
            if let Err(e) = result {
                tracing::error!(error = %e, "commit failed: stopping so that a restart recovers from the record");
                for (reply, _) in replies {
                    let _ = reply.send(Err(ApiError::Storage { reason: e.to_string() }));
                }
                return Err(e);
            }
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        for q in queries {
            q(&machine);
        }
        // After the commit, like any reply. A handful of waiters at most (hz sessions), each
        // a look at per-project counters.
        if !waiters.is_empty() {
            waiters = waiters
                .into_iter()
                .filter_map(|w| w.answer_if_finished(&machine))
                .collect();
        }
        dispatcher.execute(effects);
    }
    Ok(())
}
