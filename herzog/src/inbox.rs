//! The event loop's inbox: the commands it takes and the handle that sends them. A leaf
//! module (it knows neither the loop nor the dispatcher), so both depend on it and not on
//! each other.

use crate::machine::{Event, Machine, Reply};
use common::wire::ProjectProgress;
use common::{ApiError, AttemptId};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the loop. Past this, senders wait: an RPC handler waits to be taken,
/// and tarpc's per-connection limit then stops taking requests.
pub(crate) const WAITING: usize = 4096;

/// A read of the state: it runs on the state of its batch and gives back the sending of its
/// answer, which waits for the batch's commit.
pub(crate) type Query = Box<dyn FnOnce(&Machine) -> Answer + Send>;
pub(crate) type Answer = Box<dyn FnOnce() + Send>;

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

pub(crate) type WaitReply = oneshot::Sender<Result<Vec<ProjectProgress>, ApiError>>;
pub(crate) type EventReply = oneshot::Sender<Result<Reply, ApiError>>;
pub(crate) type EventsReply = oneshot::Sender<Vec<Result<Reply, ApiError>>>;

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

    /// Room left in the channel, for the test that a hung commit pushes back on senders.
    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        self.tx.capacity()
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
