//! The names completion offers from herzog: fetched when an argument is completed, with a
//! short deadline so a herzog that is down or slow never holds the prompt, and kept a moment
//! so each Tab does not ask again.

use super::completion::Kind;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a Tab waits for herzog.
const DEADLINE: Duration = Duration::from_millis(500);
/// How long fetched names (or a failure to fetch them) are used before asking again.
const FRESH: Duration = Duration::from_secs(2);

/// herzog's names, asked from the prompt's thread through the shell's runtime.
pub(crate) struct Names {
    endpoint: Endpoint,
    runtime: tokio::runtime::Handle,
    cache: Mutex<HashMap<Kind, (Instant, Vec<String>)>>,
}

impl Names {
    pub(crate) fn new(endpoint: Endpoint, runtime: tokio::runtime::Handle) -> Names {
        Names {
            endpoint,
            runtime,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The names of `kind`; none when herzog does not answer within [`DEADLINE`]. Called on
    /// the prompt's thread, never on the runtime's.
    pub(crate) fn get(&self, kind: Kind) -> Vec<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, names)) = cache.get(&kind)
            && at.elapsed() < FRESH
        {
            return names.clone();
        }
        let names = self
            .runtime
            .block_on(async { tokio::time::timeout(DEADLINE, fetch(&self.endpoint, kind)).await })
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        cache.insert(kind, (Instant::now(), names.clone()));
        names
    }
}

async fn fetch(endpoint: &Endpoint, kind: Kind) -> Result<Vec<String>, CliError> {
    let herzog = Herzog::connect(endpoint).await?;
    Ok(match kind {
        Kind::Services => {
            let all = herzog.services_status(None).await?;
            let mut names: Vec<String> = all.iter().map(|i| i.service.clone()).collect();
            names.extend(all.into_iter().map(|i| i.instance));
            names
        }
        Kind::Projects => herzog
            .project_progress(None)
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect(),
        Kind::Workers => herzog.workers().await?.into_iter().map(|w| w.name).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_cluster::Cluster;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_come_from_herzog_and_a_silent_herzog_costs_the_deadline_once() {
        let cluster = Cluster::herzog().await;
        let dir = cluster.inputs([("a", "x")]);
        cluster.add("genome", dir, "true").await;
        let names = std::sync::Arc::new(Names::new(cluster.endpoint.clone(), tokio::runtime::Handle::current()));
        let asked = names.clone();
        let projects = tokio::task::spawn_blocking(move || asked.get(Kind::Projects))
            .await
            .unwrap();
        assert_eq!(projects, ["genome"]);

        // A herzog that takes the connection and never answers: no names, after the deadline,
        // and none again at once while that is fresh.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = cluster.endpoint.at(silent.local_addr().unwrap().to_string());
        let names = std::sync::Arc::new(Names::new(endpoint, tokio::runtime::Handle::current()));
        let asked = names.clone();
        let (first, second) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let first = (asked.get(Kind::Services), started.elapsed());
            let started = Instant::now();
            (first, (asked.get(Kind::Services), started.elapsed()))
        })
        .await
        .unwrap();
        assert!(first.0.is_empty() && second.0.is_empty());
        assert!(first.1 >= DEADLINE && first.1 < DEADLINE * 3, "{:?}", first.1);
        assert!(second.1 < DEADLINE / 5, "{:?}", second.1);
        drop(silent);
        cluster.stop().await;
    }
}
