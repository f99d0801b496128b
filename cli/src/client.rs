//! Finding herzog and calling it: address resolution, and a client whose calls fold tarpc's
//! two layers of errors into [`CliError`].

use crate::error::CliError;
use common::ApiError;
use common::config::{ClusterConfig, DEFAULT_ADDRESS};
use common::history::{FragmentQuery, LogsQuery, ProjectRemoved};
use common::instances::{InstanceStatus, ReloadSummary, ServiceAction, ServiceEvent};
use common::output::{FragmentOutput, FragmentRead, ServiceOutput, ServiceRead};
use common::service::CoordinatorClient;
use common::transport::context_with;
use common::wire::*;
use std::future::Future;
use std::time::Duration;
use tarpc::client::RpcError;
use tarpc::context::Context;

/// Deadline for ordinary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for adding a project: herzog lists the whole directory first.
const ADD_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for removing or retrying a project, which touches each of its fragments.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for removing a project with its results folder.
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);

/// herzog's address: `--herzog` (or `HERZOG_ADDR`, which clap folds into the flag), else the
/// config's `herzog.address`, else [`DEFAULT_ADDRESS`].
pub(crate) fn resolve_address(flag: Option<&str>, config: Option<&ClusterConfig>) -> String {
    match (flag, config) {
        (Some(addr), _) => addr.to_string(),
        (None, Some(config)) => config.herzog.address.clone(),
        (None, None) => DEFAULT_ADDRESS.to_string(),
    }
}

/// Where herzog is and who we are to it. The certificate is read when a command first dials,
/// so input that can be checked locally is checked first.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) addr: String,
    identity: Identity,
    /// The tasks carrying each connection's calls, awaited by [`Endpoint::close`].
    sessions: Sessions,
    /// `hz shell`: one connection for every command, dialled again once it has broken.
    kept: Option<Kept>,
}

type Sessions = std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;
type Kept = std::sync::Arc<std::sync::Mutex<Option<KeptClient>>>;

/// The connection an endpoint keeps: its client, and its task, which ends when it breaks.
#[derive(Clone)]
struct KeptClient {
    client: CoordinatorClient,
    /// `None` in process, where the link does not break.
    task: Option<tokio::task::AbortHandle>,
}

impl KeptClient {
    fn alive(&self) -> bool {
        self.task.as_ref().is_none_or(|t| !t.is_finished())
    }
}

/// How long closing the connections may take before hz exits anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
enum Identity {
    #[cfg(test)]
    Ready(common::transport::Connector),
    /// `--tls`, if given.
    Flag(Option<std::path::PathBuf>),
    /// herzog runs in this process (`hz local`): no certificate is involved.
    InProcess(common::link::Dialer),
}

impl Endpoint {
    /// An endpoint with an identity in hand (tests).
    #[cfg(test)]
    pub(crate) fn new(addr: String, identity: &common::tls::Identity) -> Result<Endpoint, CliError> {
        Ok(Endpoint {
            addr,
            identity: Identity::Ready(common::transport::Connector::new(identity)?),
            sessions: Sessions::default(),
            kept: None,
        })
    }

    /// The same identity, for herzog at another address (tests).
    #[cfg(test)]
    pub(crate) fn at(&self, addr: String) -> Endpoint {
        Endpoint {
            addr,
            identity: self.identity.clone(),
            sessions: Sessions::default(),
            kept: None,
        }
    }

    /// herzog in this process.
    pub(crate) fn new_in_process(dialer: common::link::Dialer) -> Endpoint {
        Endpoint {
            addr: common::link::IN_PROCESS.to_string(),
            identity: Identity::InProcess(dialer),
            sessions: Sessions::default(),
            kept: None,
        }
    }

    /// An endpoint whose identity comes from `--tls` or the default path, read when dialing.
    pub(crate) fn from_flag(addr: String, tls: Option<std::path::PathBuf>) -> Endpoint {
        Endpoint {
            addr,
            identity: Identity::Flag(tls),
            sessions: Sessions::default(),
            kept: None,
        }
    }

    /// Closes every connection made through this endpoint once its clients are gone: waits
    /// for each to send TLS close_notify and close, so herzog sees a clean end, not a cut.
    pub(crate) async fn close(&self) {
        self.forget();
        let sessions = std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|e| e.into_inner()));
        for session in sessions {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, session).await;
        }
    }

    /// This endpoint, keeping one connection for all its commands (`hz shell`).
    pub(crate) fn keeping(self) -> Endpoint {
        Endpoint {
            kept: Some(Kept::default()),
            ..self
        }
    }

    /// Drops the kept connection (herzog shut down, or it broke): the next command dials.
    pub(crate) fn forget(&self) {
        if let Some(kept) = &self.kept {
            kept.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    fn kept_client(&self) -> Option<KeptClient> {
        let kept = self.kept.as_ref()?;
        kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn route(&self) -> Result<common::link::Route, CliError> {
        let tls = |connector| common::link::Route::Tls {
            addr: self.addr.clone(),
            connector,
        };
        match &self.identity {
            #[cfg(test)]
            Identity::Ready(c) => Ok(tls(c.clone())),
            Identity::Flag(flag) => Ok(tls(common::transport::Connector::new(&resolve_identity(
                flag.as_deref(),
            )?)?)),
            Identity::InProcess(dialer) => Ok(common::link::Route::InProcess(dialer.clone())),
        }
    }
}

/// The admin certificate: `--tls` (or `HERZOG_TLS`), else `~/.config/herzog/admin.pem`.
pub(crate) fn resolve_identity(flag: Option<&std::path::Path>) -> Result<common::tls::Identity, CliError> {
    let default = std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".config/herzog/admin.pem"));
    let path = match (flag, default) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) if p.exists() => p,
        _ => return Err(CliError::NoCertificate),
    };
    Ok(common::tls::Identity::load(&path)?)
}

/// A connected client that knows its address for error messages.
#[derive(Clone)]
pub(crate) struct Herzog {
    client: CoordinatorClient,
    addr: String,
}

impl Herzog {
    /// Dials herzog.
    /// Dials herzog; an endpoint that keeps its connection gives it again while it is up.
    pub(crate) async fn connect(to: &Endpoint) -> Result<Self, CliError> {
        if let Some(kept) = to.kept_client().filter(KeptClient::alive) {
            return Ok(Herzog {
                client: kept.client,
                addr: to.addr.clone(),
            });
        }
        let (client, task) = match to.route()? {
            common::link::Route::Tls { addr, connector } => {
                let (client, session) = common::transport::coordinator_session(&addr, &connector).await?;
                let task = session.abort_handle();
                to.sessions.lock().unwrap_or_else(|e| e.into_inner()).push(session);
                (client, Some(task))
            }
            route => (route.coordinator_client().await?, None),
        };
        if let Some(kept) = &to.kept {
            *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(KeptClient {
                client: client.clone(),
                task,
            });
        }
        Ok(Herzog {
            client,
            addr: to.addr.clone(),
        })
    }

    fn rpc_error(&self, what: &'static str, source: RpcError) -> CliError {
        CliError::Rpc {
            addr: self.addr.clone(),
            what,
            source,
        }
    }

    async fn call<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<Result<T, ApiError>, RpcError>>,
    ) -> Result<T, CliError> {
        Ok(fut.await.map_err(|e| self.rpc_error(what, e))??)
    }

    /// A protocol error naming this herzog.
    pub(crate) fn protocol_error(&self, what: &'static str, detail: String) -> CliError {
        CliError::Protocol {
            addr: self.addr.clone(),
            what,
            detail,
        }
    }

    pub(crate) async fn project_add(&self, project: NewProject) -> Result<ProjectAdded, CliError> {
        let ctx = context_with(ADD_TIMEOUT);
        self.call("adding the project", self.client.project_add(ctx, project))
            .await
    }

    /// Removes a project (and with `purge` its results folder); says what is left on disk.
    pub(crate) async fn project_remove_with(&self, name: &str, purge: bool) -> Result<ProjectRemoved, CliError> {
        // Deleting a large results folder takes as long as it takes; herzog finishes it anyway.
        let ctx = context_with(if purge { PURGE_TIMEOUT } else { REMOVE_TIMEOUT });
        self.call(
            "removing the project",
            self.client.project_remove_with(ctx, name.to_string(), purge),
        )
        .await
    }

    pub(crate) async fn fragments_query(
        &self,
        project: &str,
        query: FragmentQuery,
    ) -> Result<Page<FragmentInfo>, CliError> {
        let fut = self.client.fragments_query(ctx(), project.to_string(), query);
        self.call("listing fragments", fut).await
    }

    pub(crate) async fn fragment_logs(&self, query: LogsQuery) -> Result<Logs, CliError> {
        self.call("reading logs", self.client.fragment_logs(ctx(), query)).await
    }

    pub(crate) async fn project_progress(&self, name: Option<&str>) -> Result<Vec<ProjectProgress>, CliError> {
        let fut = self.client.project_progress(ctx(), name.map(str::to_string));
        self.call("reading progress", fut).await
    }

    /// Progress once none of the projects has a fragment pending or running, or after `timeout`
    /// as it is then.
    pub(crate) async fn project_wait(
        &self,
        name: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ProjectProgress>, CliError> {
        // The call's own deadline leaves herzog time to answer after the wait.
        let ctx = context_with(timeout + CALL_TIMEOUT);
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let fut = self.client.project_wait(ctx, name.map(str::to_string), ms);
        self.call("waiting for the project", fut).await
    }

    pub(crate) async fn control(&self, control: Control) -> Result<String, CliError> {
        let ctx = context_with(REMOVE_TIMEOUT);
        self.call("changing it", self.client.control(ctx, control)).await
    }

    pub(crate) async fn project_retry(&self, name: &str) -> Result<u64, CliError> {
        let ctx = context_with(REMOVE_TIMEOUT);
        self.call("retrying the project", self.client.project_retry(ctx, name.to_string()))
            .await
    }

    pub(crate) async fn project_schedule(&self, policy: Policy) -> Result<Policy, CliError> {
        self.call("setting the policy", self.client.project_schedule(ctx(), policy))
            .await
    }

    pub(crate) async fn project_report(&self, project: &str) -> Result<common::report::Report, CliError> {
        let fut = self.client.project_report(ctx(), project.to_string());
        self.call("reading the report", fut).await
    }

    pub(crate) async fn shares(&self) -> Result<Vec<common::wire::ShareInfo>, CliError> {
        self.call("reading the fair shares", self.client.shares(ctx())).await
    }

    pub(crate) async fn policy(&self) -> Result<Policy, CliError> {
        self.call("reading the policy", self.client.policy(ctx())).await
    }

    pub(crate) async fn project_active(&self, offset: u64, limit: u32) -> Result<Page<ActiveAttempt>, CliError> {
        self.call(
            "listing running attempts",
            self.client.project_active(ctx(), offset, limit),
        )
        .await
    }

    pub(crate) async fn services_status(&self, name: Option<&str>) -> Result<Vec<InstanceStatus>, CliError> {
        let fut = self.client.services_status(ctx(), name.map(str::to_string));
        self.call("listing the services", fut).await
    }

    pub(crate) async fn services_control(
        &self,
        action: ServiceAction,
        names: Vec<String>,
    ) -> Result<Vec<InstanceStatus>, CliError> {
        let fut = self.client.services_control(ctx(), action, names);
        self.call("controlling services", fut).await
    }

    /// The follow wait rides on the call's own deadline: a little longer than the wait.
    pub(crate) async fn services_events(
        &self,
        service: Option<String>,
        after: Option<i64>,
        limit: u32,
        wait_ms: u64,
    ) -> Result<Vec<ServiceEvent>, CliError> {
        let ctx = context_with(Duration::from_millis(wait_ms) + Duration::from_secs(10));
        let fut = self.client.services_events(ctx, service, after, limit, wait_ms);
        self.call("reading the event log", fut).await
    }

    /// A chunk of an instance's output; the wait rides on the call's deadline, as for events.
    pub(crate) async fn service_output(&self, read: ServiceRead) -> Result<ServiceOutput, CliError> {
        let ctx = context_with(Duration::from_millis(read.wait_ms) + Duration::from_secs(10));
        let fut = self.client.service_output(ctx, read);
        self.call("reading the instance's output", fut).await
    }

    /// A chunk of a fragment's running attempt's output (`hz logs -f`); the wait rides on the
    /// call's deadline, as for an instance's.
    pub(crate) async fn fragment_output(&self, read: FragmentRead) -> Result<FragmentOutput, CliError> {
        let ctx = context_with(Duration::from_millis(read.wait_ms) + Duration::from_secs(10));
        let fut = self.client.fragment_output(ctx, read);
        self.call("reading the fragment's output", fut).await
    }

    pub(crate) async fn job_start(
        &self,
        request: common::job::JobRequest,
    ) -> Result<common::job::JobStarted, CliError> {
        self.call("starting the job", self.client.job_start(ctx(), request))
            .await
    }

    /// Where the job is; with a wait, once it has ended or after `wait`.
    pub(crate) async fn job_state(&self, name: &str, wait: Duration) -> Result<common::job::JobState, CliError> {
        let ctx = context_with(wait + CALL_TIMEOUT);
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let fut = self.client.job_state(ctx, name.to_string(), ms);
        self.call("asking how the job is", fut).await
    }

    pub(crate) async fn job_signal(&self, name: &str, signal: i32) -> Result<(), CliError> {
        let fut = self.client.job_signal(ctx(), name.to_string(), signal);
        self.call("signalling the job", fut).await
    }

    /// Bytes for the job's stdin: answered once they are in its pipe, however long it takes
    /// the program to read what came before.
    pub(crate) async fn job_input(&self, name: &str, offset: u64, bytes: Vec<u8>, eof: bool) -> Result<(), CliError> {
        let ctx = context_with(Duration::from_secs(3600));
        let fut = self.client.job_input(ctx, name.to_string(), offset, bytes, eof);
        self.call("writing to the job's stdin", fut).await
    }

    pub(crate) async fn job_resize(&self, name: &str, size: common::job::TtySize) -> Result<(), CliError> {
        let fut = self.client.job_resize(ctx(), name.to_string(), size);
        self.call("resizing the job's terminal", fut).await
    }

    pub(crate) async fn commands(&self) -> Result<Vec<common::job::CommandInfo>, CliError> {
        self.call("listing the commands", self.client.commands(ctx())).await
    }

    pub(crate) async fn services_reload(&self) -> Result<ReloadSummary, CliError> {
        self.call("reloading the services", self.client.services_reload(ctx()))
            .await
    }

    pub(crate) async fn workers(&self) -> Result<Vec<WorkerInfo>, CliError> {
        self.call("listing workers", self.client.workers(ctx())).await
    }

    pub(crate) async fn fragments(
        &self,
        project: &str,
        offset: u64,
        limit: u32,
    ) -> Result<Page<FragmentInfo>, CliError> {
        let fut = self.client.fragments(ctx(), project.to_string(), offset, limit);
        self.call("listing fragments", fut).await
    }

    /// Stops herzog (`None`) or a worker's kinski; answers what happens.
    pub(crate) async fn shutdown(&self, worker: Option<String>) -> Result<String, CliError> {
        self.call("asking it to shut down", self.client.shutdown(ctx(), worker))
            .await
    }
}

fn ctx() -> Context {
    context_with(CALL_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `hz shell`'s endpoint: one connection for every command, a new one once it broke.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keeping_endpoint_dials_once_and_again_after_a_break() {
        let cluster = crate::test_cluster::Cluster::herzog().await;
        let kept = Endpoint {
            sessions: Sessions::default(),
            ..cluster.endpoint.clone()
        }
        .keeping();
        let dialled = || kept.sessions.lock().unwrap().len();
        for _ in 0..3 {
            Herzog::connect(&kept).await.unwrap().workers().await.unwrap();
        }
        assert_eq!(dialled(), 1, "one connection for every command");
        // The connection breaks (as when herzog restarts): the next command dials again.
        let session = kept.sessions.lock().unwrap().pop().unwrap();
        session.abort();
        let _ = session.await;
        assert!(!kept.kept_client().unwrap().alive());
        Herzog::connect(&kept).await.unwrap().workers().await.unwrap();
        assert_eq!(dialled(), 1, "a new connection");
        // Forgotten (herzog shut down): dialled again too; closing ends every connection.
        kept.forget();
        Herzog::connect(&kept).await.unwrap().workers().await.unwrap();
        assert_eq!(dialled(), 2);
        kept.close().await;
        assert!(kept.kept_client().is_none());
        cluster.stop().await;
    }

    #[test]
    fn the_flag_beats_the_config_which_beats_the_default() {
        let config = ClusterConfig::parse("[herzog]\naddress = \"10.0.0.1:9000\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(resolve_address(Some("h:1"), Some(&config)), "h:1");
        assert_eq!(resolve_address(None, Some(&config)), "10.0.0.1:9000");
        assert_eq!(resolve_address(None, None), DEFAULT_ADDRESS);
        assert_eq!(resolve_address(None, Some(&ClusterConfig::default())), DEFAULT_ADDRESS);
    }
}
