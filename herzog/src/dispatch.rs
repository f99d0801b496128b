//! Runs the loop's effects: starts and stops on workers, over each worker's own connection.

use crate::engine::Handle;
use crate::machine::{Effect, Event};
use common::service::WorkerClient;
use common::transport::context_with;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The live connections to workers, by name. A generation tells a replaced connection from
/// the current one.
#[derive(Clone, Default)]
pub(crate) struct Connections {
    inner: Arc<Mutex<HashMap<String, (u64, WorkerClient)>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Connections {
    /// Records a worker's connection; returns its generation.
    pub(crate) fn attach(&self, name: &str, client: WorkerClient) -> u64 {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), (generation, client));
        generation
    }

    /// Forgets a connection if it is still the current one; true if it was.
    pub(crate) fn detach(&self, name: &str, generation: u64) -> bool {
        let mut map = self.inner.lock().expect("not poisoned");
        if map.get(name).is_some_and(|(g, _)| *g == generation) {
            map.remove(name);
            true
        } else {
            false
        }
    }

    fn get(&self, name: &str) -> Option<WorkerClient> {
        self.inner
            .lock()
            .expect("not poisoned")
            .get(name)
            .map(|(_, c)| c.clone())
    }
}

/// Executes effects; failures come back to the loop as events.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    pub(crate) connections: Connections,
    pub(crate) handle: Handle,
    pub(crate) stager: Arc<crate::staging::Stager>,
}

impl Dispatcher {
    pub(crate) fn execute(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Start { worker, start, upload } => {
                    let attempt = start.attempt;
                    let client = self.connections.get(&worker);
                    let handle = self.handle.clone();
                    let stager = self.stager.clone();
                    tokio::spawn(async move {
                        let event = match client {
                            None => Some(Event::DispatchFailed {
                                attempt,
                                reason: format!("no connection to worker {worker}"),
                            }),
                            Some(c) => start_on(&c, &stager, &worker, *start, &upload).await,
                        };
                        if let Some(event) = event {
                            tracing::warn!(%attempt, ?event, "dispatch failed");
                            handle.notify(event);
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
                Effect::Stop { worker, attempt } => {
                    let Some(client) = self.connections.get(&worker) else {
                        // Reconciliation stops it when the worker is back.
                        continue;
                    };
                    tokio::spawn(async move {
                        match client.fragment_stop(context_with(CALL_TIMEOUT), attempt).await {
                            Ok(Ok(())) => tracing::info!(%worker, %attempt, "attempt stopped"),
                            Ok(Err(e)) => tracing::info!(%worker, %attempt, error = %e, "stop refused"),
                            Err(e) => tracing::warn!(%worker, %attempt, error = %e, "failed to send a stop"),
                        }
                    });
                }
            }
        }
    }
}

/// Delivers one start: on a staged worker, kinski first makes the attempt's directory and
/// herzog copies its files there. Returns the event saying why it did not happen, if it did
/// not.
async fn start_on(
    client: &WorkerClient,
    stager: &crate::staging::Stager,
    worker: &str,
    start: common::wire::StartAttempt,
    upload: &[crate::machine::Upload],
) -> Option<Event> {
    let attempt = start.attempt;
    let refused = |e: common::service::WorkerError| Event::StartRefused {
        attempt,
        reason: format!("worker {worker} refused the start: {e}"),
    };
    let unreachable = |e: tarpc::client::RpcError| Event::DispatchFailed {
        attempt,
        reason: format!("failed to reach worker {worker}: {e}"),
    };
    if start.scratch.is_some() {
        let began = std::time::Instant::now();
        match client.fragment_prep(context_with(CALL_TIMEOUT), start.clone()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(refused(e)),
            Err(e) => return Some(unreachable(e)),
        }
        let prepared = began.elapsed();
        if let Err(e) = stager.upload(worker, upload).await {
            return Some(Event::StagingFailed {
                attempt,
                reason: e.to_string(),
            });
        }
        tracing::debug!(%worker, %attempt, prep_us = prepared.as_micros() as u64, upload_us = (began.elapsed() - prepared).as_micros() as u64, "staged an attempt's files");
    }
    match client.fragment_start(context_with(CALL_TIMEOUT), start).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(refused(e)),
        Err(e) => Some(unreachable(e)),
    }
}
