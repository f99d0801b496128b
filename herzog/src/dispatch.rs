//! Runs the loop's effects: starts and stops on workers, over each worker's own connection.
//! Each connection has one sender task with a queue: the starts that gather while a call is
//! on its way go together in the next call, so a busy worker gets few large calls rather
//! than one call (and one task) per attempt.

use crate::inbox::Handle;
use crate::machine::{Effect, Event, Upload};
use crate::services::Order;
use crate::staging::Stager;
use common::service::{MAX_BATCH, WorkerClient, WorkerError};
use common::transport::context_with;
use common::wire::StartAttempt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts waiting for one worker's sender task. The machine never dispatches more to a worker
/// than its slots and queue (32 per slot), so this is only ever reached by a bug; then the
/// start fails rather than memory growing.
const QUEUED_STARTS: usize = 16_384;

/// A start waiting for its worker's sender task. Boxed: a channel's blocks hold 32 of these
/// inline, one channel per worker.
struct Queued {
    start: Box<StartAttempt>,
    upload: Vec<Upload>,
}

/// One worker's live connection.
struct WorkerConn {
    generation: u64,
    client: WorkerClient,
    starts: mpsc::Sender<Queued>,
    /// Where it comes from and since when, to name it to a second kinski of its name.
    peer: String,
    since: common::Millis,
    /// Which kinski process holds it.
    incarnation: u64,
    /// When its worker last called herzog (a heartbeat, a start notice).
    heard: std::time::Instant,
}

/// The live connections to workers, by name. A generation tells a replaced connection from
/// the current one.
#[derive(Clone)]
pub(crate) struct Connections {
    inner: Arc<Mutex<HashMap<String, WorkerConn>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
    handle: Handle,
    stager: Arc<Stager>,
    /// Silence after which a connection may be taken over by another kinski of its name.
    stale_after: Duration,
}

impl Connections {
    pub(crate) fn new(handle: Handle, stager: Arc<Stager>, stale_after: Duration) -> Self {
        Connections {
            inner: Arc::default(),
            next: Arc::default(),
            handle,
            stager,
            stale_after,
        }
    }

    /// Whether a kinski (`incarnation`) may connect as `name`: not while another kinski holds
    /// the name and heartbeats; the error names the holder.
    pub(crate) fn claim(&self, name: &str, incarnation: u64) -> Result<(), String> {
        let map = self.inner.lock().expect("not poisoned");
        match map.get(name) {
            Some(link) if link.incarnation != incarnation && link.heard.elapsed() < self.stale_after => Err(format!(
                "another kinski named '{name}' is connected from {} since {} and heartbeating: give this one another --name (or stop that one)",
                link.peer,
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(link.since.max(0) as u64)
                )
            )),
            _ => Ok(()),
        }
    }

    /// Notes that `name`'s worker called herzog now.
    pub(crate) fn heard(&self, name: &str) {
        if let Some(link) = self.inner.lock().expect("not poisoned").get_mut(name) {
            link.heard = std::time::Instant::now();
        }
    }

    /// Records a worker's connection and starts its sender task; returns its generation.
    pub(crate) fn attach(&self, name: &str, client: WorkerClient, peer: &str, incarnation: u64) -> u64 {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (starts, queue) = mpsc::channel(QUEUED_STARTS);
        tokio::spawn(send_starts(
            name.to_string(),
            client.clone(),
            queue,
            self.handle.clone(),
            self.stager.clone(),
        ));
        let link = WorkerConn {
            generation,
            client,
            starts,
            peer: peer.to_string(),
            since: common::now_millis(),
            incarnation,
            heard: std::time::Instant::now(),
        };
        self.inner.lock().expect("not poisoned").insert(name.to_string(), link);
        generation
    }

    /// Forgets a connection if it is still the current one; true if it was. Its sender task
    /// ends once its queue is empty.
    pub(crate) fn detach(&self, name: &str, generation: u64) -> bool {
        let mut map = self.inner.lock().expect("not poisoned");
        if map.get(name).is_some_and(|l| l.generation == generation) {
            map.remove(name);
            true
        } else {
            false
        }
    }

    /// `name`'s connection, if it has one now.
    pub(crate) fn client(&self, name: &str) -> Option<WorkerClient> {
        self.inner
            .lock()
            .expect("not poisoned")
            .get(name)
            .map(|l| l.client.clone())
    }

    /// Queues a start for its worker's sender task; false if the worker has no connection (or
    /// its queue is full).
    fn queue(&self, name: &str, queued: Queued) -> bool {
        match self.inner.lock().expect("not poisoned").get(name) {
            Some(link) => link.starts.try_send(queued).is_ok(),
            None => false,
        }
    }
}

/// Executes effects; failures come back to the loop as events.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    pub(crate) connections: Connections,
    pub(crate) handle: Handle,
    pub(crate) stager: Arc<Stager>,
    /// Woken when the alert outbox has new rows.
    pub(crate) alerts: crate::alerts::Outbox,
}

impl Dispatcher {
    pub(crate) fn execute(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Start { worker, start, upload } => {
                    let attempt = start.attempt;
                    if !self.connections.queue(&worker, Queued { start, upload }) {
                        tracing::warn!(%worker, %attempt, "no connection to the worker for a start, or its queue is full");
                        self.handle.notify(Event::DispatchFailed {
                            attempt,
                            reason: format!("no connection to worker {worker}, or its start queue is full"),
                        });
                    }
                }
                Effect::Stop { worker, attempt } => {
                    let Some(client) = self.connections.client(&worker) else {
                        // Reconciliation stops it when the worker is back.
                        continue;
                    };
                    tokio::spawn(async move {
                        match client.fragment_stop(context_with(CALL_TIMEOUT), attempt).await {
                            Ok(Ok(())) => tracing::debug!(%worker, %attempt, "attempt stopped"),
                            // It had ended there already (a completion crossing the stop).
                            Ok(Err(e)) => tracing::debug!(%worker, %attempt, error = %e, "stop refused"),
                            Err(e) => tracing::warn!(%worker, %attempt, error = %e, "failed to send a stop"),
                        }
                    });
                }
                Effect::Unqueue { worker, attempts } => {
                    let Some(client) = self.connections.client(&worker) else {
                        // Its starts run, or are lost with it.
                        continue;
                    };
                    let handle = self.handle.clone();
                    tokio::spawn(async move {
                        match client.fragment_unqueue(context_with(CALL_TIMEOUT), attempts).await {
                            Ok(attempts) => handle.notify(Event::TakenBack { worker, attempts }),
                            Err(e) => tracing::info!(%worker, error = %e, "failed to take starts back; they run"),
                        }
                    });
                }
                Effect::Instance(order) => self.instance(order),
                Effect::Alerts => self.alerts.wake(),
                Effect::StageInstance { worker, run, upload } => {
                    let Some(client) = self.connections.client(&worker) else {
                        // Placed again by reconciliation when the worker is back.
                        continue;
                    };
                    let (handle, stager) = (self.handle.clone(), self.stager.clone());
                    tokio::spawn(async move {
                        let number = run.run;
                        if let Err(reason) = run_staged(&client, &stager, &worker, run, &upload).await {
                            tracing::info!(%worker, run = %number, %reason, "a staged service placement did not start");
                            handle.notify(Event::InstanceRefused {
                                worker,
                                run: number,
                                reason,
                            });
                        }
                    });
                }
                Effect::Probe { worker, scratch } => {
                    let handle = self.handle.clone();
                    let stager = self.stager.clone();
                    tokio::spawn(async move {
                        let result = stager.probe(&worker, &scratch).await.map_err(|e| e.to_string());
                        handle.notify(Event::Probed { worker, result });
                    });
                }
            }
        }
    }
}

impl Dispatcher {
    /// Sends a service order to its worker. One that does not arrive is made good by
    /// reconciliation: a placement the worker does not report is placed again, one it holds
    /// that herzog does not want is stopped at its next report.
    fn instance(&self, order: Order) {
        let worker = match &order {
            Order::Run { worker, .. }
            | Order::Stop { worker, .. }
            | Order::Retune { worker, .. }
            | Order::Signal { worker, .. } => worker.clone(),
        };
        let Some(client) = self.connections.client(&worker) else {
            return;
        };
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let ctx = context_with(CALL_TIMEOUT);
            let (what, result) = match order {
                Order::Run { run, .. } => {
                    let number = run.run;
                    let result = client.instance_run(ctx, run).await;
                    if let Ok(Err(e)) = &result {
                        handle.notify(Event::InstanceRefused {
                            worker: worker.clone(),
                            run: number,
                            reason: e.to_string(),
                        });
                    }
                    ("run", result)
                }
                Order::Stop { run, .. } => ("stop", client.instance_stop(ctx, run).await),
                Order::Retune { run, watch, .. } => ("retune", client.instance_retune(ctx, run, watch).await),
                Order::Signal { run, signal, .. } => ("signal", client.instance_signal(ctx, run, signal).await),
            };
            match result {
                Ok(Ok(())) => tracing::debug!(%worker, what, "service order delivered"),
                Ok(Err(e)) => tracing::info!(%worker, what, error = %e, "service order refused"),
                Err(e) => tracing::warn!(%worker, what, error = %e, "failed to send a service order"),
            }
        });
    }
}

/// Delivers a service placement on a staged worker: kinski makes its directory, herzog copies
/// the service's files there, then it runs. Returns why it did not, if it did not.
async fn run_staged(
    client: &WorkerClient,
    stager: &Stager,
    worker: &str,
    run: Box<common::instances::InstanceRun>,
    upload: &[crate::machine::Upload],
) -> Result<(), String> {
    let uid = stager.login_uid(worker).await.map_err(|e| e.to_string())?;
    let unreachable = |e: tarpc::client::RpcError| format!("failed to reach worker {worker}: {e}");
    let refused = |e: WorkerError| format!("worker {worker} refused the placement: {e}");
    client
        .instance_prep(context_with(CALL_TIMEOUT), run.run, uid)
        .await
        .map_err(unreachable)?
        .map_err(refused)?;
    stager
        .upload(worker, upload)
        .await
        .map_err(|e| format!("failed to stage the service's files: {e}"))?;
    client
        .instance_run(context_with(CALL_TIMEOUT), run)
        .await
        .map_err(unreachable)?
        .map_err(refused)
}

/// One worker's sender task: takes every start queued so far, hands those of a staged host
/// to tasks of their own (their files travel first), and sends the rest in one call.
async fn send_starts(
    worker: String,
    client: WorkerClient,
    mut queue: mpsc::Receiver<Queued>,
    handle: Handle,
    stager: Arc<Stager>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut direct = Vec::with_capacity(batch.len());
        for queued in batch {
            if queued.start.scratch.is_some() {
                let (client, handle, stager, worker) = (client.clone(), handle.clone(), stager.clone(), worker.clone());
                tokio::spawn(async move {
                    if let Some(event) = start_staged(&client, &stager, &worker, queued).await {
                        tracing::warn!(?event, "dispatch failed");
                        handle.notify(event);
                    }
                });
            } else {
                direct.push(*queued.start);
            }
        }
        if direct.is_empty() {
            continue;
        }
        let attempts: Vec<_> = direct.iter().map(|s| s.attempt).collect();
        let events: Vec<Event> = match client.fragment_start(context_with(CALL_TIMEOUT), direct).await {
            Ok(results) => attempts
                .into_iter()
                .zip(results.into_iter().map(Some).chain(std::iter::repeat(None)))
                .filter_map(|(attempt, result)| match result {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(refused(&worker, attempt, e)),
                    None => Some(Event::DispatchFailed {
                        attempt,
                        reason: format!("worker {worker} did not answer for this start"),
                    }),
                })
                .collect(),
            Err(e) => attempts
                .into_iter()
                .map(|attempt| Event::DispatchFailed {
                    attempt,
                    reason: format!("failed to reach worker {worker}: {e}"),
                })
                .collect(),
        };
        for event in events {
            // A refusal is the machine's to log (once per worker, not per start).
            if !matches!(event, Event::StartRefused { .. }) {
                tracing::warn!(?event, "dispatch failed");
            }
            handle.notify(event);
        }
    }
}

fn refused(worker: &str, attempt: common::AttemptId, e: WorkerError) -> Event {
    Event::StartRefused {
        attempt,
        // A full queue or a shutdown passes; a start it cannot prepare is refused again.
        lasting: !matches!(e, WorkerError::NoFreeSlot { .. } | WorkerError::ShuttingDown),
        reason: format!("worker {worker} refused the start: {e}"),
    }
}

/// Delivers one start on a staged worker: kinski makes the attempt's directory, herzog
/// copies its files there, then it starts. Returns the event saying why it did not happen,
/// if it did not.
async fn start_staged(client: &WorkerClient, stager: &Stager, worker: &str, queued: Queued) -> Option<Event> {
    let Queued { mut start, upload } = queued;
    let attempt = start.attempt;
    // kinski gives the attempt's in/ to herzog's login there until the start.
    match stager.login_uid(worker).await {
        Ok(uid) => start.uploader_uid = Some(uid),
        Err(e) => {
            return Some(Event::StagingFailed {
                attempt,
                reason: e.to_string(),
            });
        }
    }
    let unreachable = |e: tarpc::client::RpcError| Event::DispatchFailed {
        attempt,
        reason: format!("failed to reach worker {worker}: {e}"),
    };
    let began = std::time::Instant::now();
    match client.fragment_prep(context_with(CALL_TIMEOUT), start.clone()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Some(refused(worker, attempt, e)),
        Err(e) => return Some(unreachable(e)),
    }
    let prepared = began.elapsed();
    match stager.upload(worker, &upload).await {
        Ok(()) => {}
        // The input's own fault (a link to another user's file, a FIFO): the attempt is lost
        // with the reason, the host stays in service.
        Err(e @ crate::staging::StagingError::Input { .. }) => {
            return Some(Event::DispatchFailed {
                attempt,
                reason: e.to_string(),
            });
        }
        Err(e) => {
            return Some(Event::StagingFailed {
                attempt,
                reason: e.to_string(),
            });
        }
    }
    tracing::debug!(%worker, %attempt, prep_us = prepared.as_micros() as u64, upload_us = (began.elapsed() - prepared).as_micros() as u64, "staged an attempt's files");
    match client.fragment_start(context_with(CALL_TIMEOUT), vec![*start]).await {
        Ok(mut results) => match results.pop() {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(refused(worker, attempt, e)),
            None => Some(Event::DispatchFailed {
                attempt,
                reason: format!("worker {worker} did not answer for this start"),
            }),
        },
        Err(e) => Some(unreachable(e)),
    }
}
