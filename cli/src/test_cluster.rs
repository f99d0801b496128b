//! The real thing for unit tests: herzog (and kinski workers when fragments must run) started
//! in-process on a loopback port, with their state and the projects' input directories in a
//! temporary directory. Projects are added through the CLI's own code and followed to their
//! end with `hz progress --watch`'s code, so nothing here sleeps.

use crate::client::{Endpoint, Herzog};
use crate::commands::{action, progress};
use common::wire::{NewProject, ProjectAdded, ProjectProgress, RunSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the tests' `--watch` asks herzog: the loopback round trip is cheap.
pub(crate) const EVERY: Duration = Duration::from_millis(10);
/// The longest a test waits for a project to finish or a daemon to stop.
const LIMIT: Duration = Duration::from_secs(60);

/// Resolves once the flag is set (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A kinski working for the cluster's herzog.
struct Worker {
    name: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), kinski::KinskiError>>,
}

/// herzog serving on loopback, its workers, and a client connected to it. Dropping it (a
/// failed test) drops the daemons with the test's runtime; [`Cluster::stop`] stops them and
/// checks that they stopped cleanly.
pub(crate) struct Cluster {
    /// herzog's address and an admin identity, for the commands' `run`.
    pub(crate) endpoint: Endpoint,
    ca: common::tls::Authority,
    pub(crate) herzog: Herzog,
    dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), herzog::HerzogError>>,
    workers: Vec<Worker>,
}

impl Cluster {
    /// herzog alone: projects added stay pending until a worker starts.
    pub(crate) async fn herzog() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, rx) = watch::channel(false);
        let ca = common::tls::Authority::generate(1).unwrap();
        let identity = |name: &str, role| {
            common::tls::Identity::from_pem(ca.issue(name, role, 1).unwrap().as_bytes(), Path::new("test")).unwrap()
        };
        let config = herzog::Config::new(dir.path().join("herzog"));
        let listener = herzog::Listener::Tls {
            tcp: listener,
            identity: identity("herzog", common::tls::Role::Coordinator),
        };
        let task = tokio::spawn(herzog::run(config, listener, stopped(rx)));
        let endpoint = Endpoint::new(addr, &identity("tester", common::tls::Role::Admin)).unwrap();
        let herzog = Herzog::connect(&endpoint).await.unwrap();
        Cluster {
            endpoint,
            ca,
            herzog,
            dir,
            stop,
            task,
            workers: Vec::new(),
        }
    }

    /// herzog and a worker named `w` with `slots` slots.
    pub(crate) async fn with_worker(slots: u32) -> Cluster {
        let mut cluster = Cluster::herzog().await;
        cluster.start_worker("w", slots);
        cluster
    }

    /// Starts a worker; it registers on its own and takes pending fragments from then on.
    pub(crate) fn start_worker(&mut self, name: &str, slots: u32) {
        let (stop, rx) = watch::channel(false);
        let config = kinski::Config {
            herzog: kinski::Herzog::Tls {
                addr: self.endpoint.addr.clone(),
                identity: common::tls::Identity::from_pem(
                    self.ca.issue(name, common::tls::Role::Worker, 1).unwrap().as_bytes(),
                    Path::new("test"),
                )
                .unwrap(),
            },
            name: name.to_string(),
            slots,
            state_dir: self.dir.path().join("kinski").join(name),
            run_as: Some(kinski::user::current_user()),
            service_users: Vec::new(),
            pid_dir: None,
            scratch_dir: None,
        };
        // A CPU a slot, as the integration tests' workers register: the tests ask for slots.
        let capacity = kinski::Capacity {
            cpus: Some(slots),
            ..kinski::Capacity::default()
        };
        let task = tokio::spawn(kinski::run_with(config, capacity, stopped(rx)));
        self.workers.push(Worker {
            name: name.to_string(),
            stop,
            task,
        });
    }

    /// A new input directory holding `files` (name, content).
    pub(crate) fn inputs<N: AsRef<str>, C: AsRef<[u8]>>(&self, files: impl IntoIterator<Item = (N, C)>) -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix("inputs-")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep();
        for (name, content) in files {
            std::fs::write(dir.join(name.as_ref()), content).unwrap();
        }
        dir
    }

    /// Adds project `name` over `dir` running `program`, as `hz action` does.
    pub(crate) async fn add(&self, name: &str, dir: PathBuf, program: &str) -> ProjectAdded {
        self.add_spec(name, dir, RunSpec::new(program)).await
    }

    /// Adds project `name` over `dir` with the whole run spec.
    pub(crate) async fn add_spec(&self, name: &str, dir: PathBuf, spec: RunSpec) -> ProjectAdded {
        let project = NewProject {
            name: Some(name.to_string()),
            dir,
            spec,

            after: Vec::new(),
            max_running: None,
            share: None,
        };
        action::add(&self.herzog, project).await.unwrap()
    }

    /// Waits, as `hz progress NAME --watch` does, until project `name` is finished; its last
    /// progress.
    pub(crate) async fn finish(&self, name: &str) -> ProjectProgress {
        let watched = progress::watch(&self.herzog, Some(name), EVERY);
        let last = tokio::time::timeout(LIMIT, watched)
            .await
            .unwrap_or_else(|_| panic!("project {name} did not finish in {LIMIT:?}"))
            .unwrap();
        assert_eq!(last.len(), 1, "{last:?}");
        last.into_iter().next().unwrap()
    }

    /// Stops the workers, then herzog, and checks that each stopped cleanly.
    pub(crate) async fn stop(mut self) {
        for worker in self.workers.drain(..) {
            let _ = worker.stop.send(true);
            let ended = tokio::time::timeout(LIMIT, worker.task).await;
            let ended = ended.unwrap_or_else(|_| panic!("worker {} did not stop in time", worker.name));
            ended.unwrap().unwrap();
        }
        let _ = self.stop.send(true);
        let ended = tokio::time::timeout(LIMIT, &mut self.task).await;
        ended.expect("herzog did not stop in time").unwrap().unwrap();
    }
}
