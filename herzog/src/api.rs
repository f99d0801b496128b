//! The RPC handlers. They check input, send events to the loop and wait for the committed
//! reply; they never touch the state themselves.

mod history;
mod jobs;
mod remove;
mod report;
pub(crate) mod shutdown;

use crate::inbox::Handle;
use crate::machine::{Event, Reply, attempt_paths};
use crate::store::Reader;
use common::instances::{InstanceEvent, InstanceReport, InstanceStatus, ReloadSummary, ServiceAction, ServiceEvent};
use common::output::{FragmentOutput, FragmentRead, ServiceOutput, ServiceRead};
use common::service::{Coordinator, Registry};
use common::wire::*;
use common::{ApiError, AttemptId};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tarpc::context::Context;

/// The longest `project_wait` holds a call.
/// The most items one page of a listing carries (fragments, active attempts).
const MAX_PAGE: u32 = 10_000;
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long before the caller's deadline `project_wait` answers anyway.
const WAIT_MARGIN: Duration = Duration::from_millis(500);

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) handle: Handle,
    pub(crate) db: PathBuf,
    pub(crate) heartbeat_ms: u64,
    pub(crate) worker_timeout_ms: u64,
    /// `herzog.max_log_bytes`: where kinski's cut of a long log lies.
    pub(crate) max_log_bytes: u64,
    pub(crate) stager: std::sync::Arc<crate::staging::Stager>,
    /// The services file `hz reload` reads.
    pub(crate) services: Option<PathBuf>,
    /// The workers' connections, for reads of their output (`hz tail`).
    pub(crate) connections: crate::dispatch::Connections,
    /// Where each project's results folder is made: `<results_root>/<project>`.
    pub(crate) results_root: PathBuf,
    /// `hz shutdown` asks the server's loop to stop herzog through this.
    pub(crate) shutdown: shutdown::Asked,
    /// `[herzog.defaults]`: requests a project gets where `hz action` gave none.
    pub(crate) defaults: common::requests::Requests,
}

/// The Coordinator service (for hz), for one connection: the watch ends when it closes.
#[derive(Clone)]
pub(crate) struct ClientApi(pub(crate) Api, pub(crate) tokio::sync::watch::Receiver<()>);

/// The Registry service (for kinski), for the worker its certificate names.
#[derive(Clone)]
pub(crate) struct WorkerApi {
    pub(crate) api: Api,
    pub(crate) worker: String,
}

impl WorkerApi {
    /// A worker speaks only for itself: the name it gives must be its certificate's.
    fn check(&self, name: &str) -> Result<(), ApiError> {
        if name == self.worker {
            Ok(())
        } else {
            Err(ApiError::NotYourName {
                certificate: self.worker.clone(),
                claimed: name.to_string(),
            })
        }
    }
}

pub(crate) fn unexpected(reply: Reply) -> ApiError {
    ApiError::Storage {
        reason: format!("the loop answered {reply:?} unexpectedly"),
    }
}

/// Lists a project directory: its regular files (symlinks followed), hidden ones skipped,
/// sorted by name.
pub(crate) fn list_inputs(dir: &Path) -> Result<Vec<String>, ApiError> {
    let unreadable = |e: std::io::Error| ApiError::DirectoryUnreadable {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    };
    if let Err(e) = common::paths::clean_absolute(dir) {
        return Err(ApiError::InvalidValue {
            what: "directory".into(),
            reason: e.to_string(),
        });
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ApiError::InvalidValue {
                what: "file name".into(),
                reason: format!(
                    "{} in {} is not UTF-8: rename it",
                    name.to_string_lossy(),
                    dir.display()
                ),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        // read_dir gives plain names; checked anyway, since every path herzog builds from a
        // fragment's name relies on it.
        let Ok(path) = common::paths::child(dir, name) else {
            continue;
        };
        // The type readdir gave costs nothing; only symlinks (and filesystems that do not say)
        // need a stat. A stat per file was a third of a million-file submit.
        let regular = match entry.file_type() {
            Ok(t) if t.is_file() => true,
            Ok(t) if t.is_dir() => false,
            _ => std::fs::metadata(path).is_ok_and(|m| m.is_file()),
        };
        if regular {
            names.push(name.to_string());
        }
    }
    names.sort_unstable();
    // It goes on into the state machine: do not carry up to twice its size along.
    names.shrink_to_fit();
    Ok(names)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::Storage {
            reason: format!("a background task failed: {e}"),
        })
    })
}

fn storage(e: crate::store::StoreError) -> ApiError {
    ApiError::Storage { reason: e.to_string() }
}

/// The last `max` bytes of a file, and whether it was cut.
/// The line kinski wrote where it cut the log at `path`, if it did: right after the head,
/// which is half of `max_log_bytes` (as configured now: a log cut under another cap is not
/// found).
fn cut_marker(path: &Path, max_log_bytes: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(max_log_bytes / 2)).ok()?;
    let mut buf = vec![0u8; 512];
    let n = f.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text.strip_prefix("\n[herzog: ")?.split('\n').next()?;
    line.contains(" cut here: ").then(|| format!("[herzog: {line}"))
}

fn tail(path: &Path, max: u64) -> (String, bool) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), false);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (String::new(), false);
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), start > 0)
}

impl Coordinator for ClientApi {
    async fn project_add(self, _: Context, project: NewProject) -> Result<ProjectAdded, ApiError> {
        let NewProject {
            name,
            dir,
            mut spec,
            after,
            max_running,
            share,
        } = project;
        let name = name.unwrap_or_else(|| common::name::name_from_dir(&dir));
        common::name::check_name(&name)?;
        common::template::check_program(&spec.program, std::env::var("PATH").ok().as_deref())?;
        spec.requests = spec.requests.or(self.0.defaults);
        spec.check()?;
        // A live project of that name is the machine's to refuse; a folder an earlier one
        // left would mix its results with the new ones.
        let n = name.clone();
        let live = self.0.handle.query(move |m| m.project_ref(&n).is_ok()).await?;
        let results_dir = self.0.results_root.join(&name);
        if !live && remove::exists(results_dir.clone()).await {
            return Err(ApiError::ResultsExist {
                name,
                path: results_dir.display().to_string(),
            });
        }
        let listed = dir.clone();
        let files = blocking(move || list_inputs(&listed)).await?;
        match self
            .0
            .handle
            .event(Event::AddProject(Box::new(crate::machine::NewProjectEvent {
                name,
                dir,
                spec,
                files,
                after,
                max_running,
                share: share.unwrap_or(1),
            })))
            .await?
        {
            Reply::Added(added) => Ok(added),
            other => Err(unexpected(other)),
        }
    }

    async fn job_start(
        self,
        _: Context,
        request: common::job::JobRequest,
    ) -> Result<common::job::JobStarted, ApiError> {
        jobs::start(&self.0, request).await
    }

    async fn job_state(self, ctx: Context, name: String, wait_ms: u64) -> Result<common::job::JobState, ApiError> {
        jobs::state(&self.0, name, wait_ms, jobs::left(ctx.deadline)).await
    }

    async fn job_signal(self, _: Context, name: String, signal: i32) -> Result<(), ApiError> {
        jobs::signal(&self.0, name, signal).await
    }

    async fn job_input(
        self,
        ctx: Context,
        name: String,
        offset: u64,
        bytes: Vec<u8>,
        eof: bool,
    ) -> Result<(), ApiError> {
        jobs::input(&self.0, name, offset, bytes, eof, jobs::left(ctx.deadline)).await
    }

    async fn job_resize(self, _: Context, name: String, size: common::job::TtySize) -> Result<(), ApiError> {
        jobs::resize(&self.0, name, size).await
    }

    async fn commands(self, _: Context) -> Result<Vec<common::job::CommandInfo>, ApiError> {
        jobs::commands(&self.0).await
    }

    async fn shutdown(self, _: Context, worker: Option<String>) -> Result<String, ApiError> {
        match worker {
            None => shutdown::herzog(&self.0, &self.1),
            Some(name) => shutdown::worker(&self.0, name).await,
        }
    }

    async fn control(self, _: Context, control: Control) -> Result<String, ApiError> {
        match self.0.handle.event(Event::Control(control)).await? {
            Reply::Controlled(done) => Ok(done),
            other => Err(unexpected(other)),
        }
    }

    async fn project_remove(self, _: Context, name: String) -> Result<(), ApiError> {
        self.0.handle.event(Event::RemoveProject { name }).await.map(|_| ())
    }

    async fn project_remove_with(
        self,
        _: Context,
        name: String,
        purge: bool,
    ) -> Result<common::history::ProjectRemoved, ApiError> {
        remove::remove(&self.0, name, purge).await
    }

    async fn fragments_query(
        self,
        _: Context,
        project: String,
        query: common::history::FragmentQuery,
    ) -> Result<Page<FragmentInfo>, ApiError> {
        history::fragments(&self.0, project, query).await
    }

    async fn fragment_logs(self, _: Context, query: common::history::LogsQuery) -> Result<Logs, ApiError> {
        history::logs(&self.0, query).await
    }

    async fn project_retry(self, _: Context, name: String) -> Result<u64, ApiError> {
        match self.0.handle.event(Event::Retry { name }).await? {
            Reply::Retried(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn project_progress(self, _: Context, name: Option<String>) -> Result<Vec<ProjectProgress>, ApiError> {
        self.0.handle.query(move |m| m.progress(name.as_deref())).await?
    }

    async fn project_wait(
        self,
        ctx: Context,
        name: Option<String>,
        timeout_ms: u64,
    ) -> Result<Vec<ProjectProgress>, ApiError> {
        // Answer before the caller's deadline, or tarpc drops the reply and the caller sees
        // an error instead of the progress.
        let left = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(WAIT_MARGIN);
        let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT).min(left);
        self.0.handle.wait_finished(name, timeout).await
    }

    async fn project_schedule(self, _: Context, policy: Policy) -> Result<Policy, ApiError> {
        match self.0.handle.event(Event::SetPolicy(policy)).await? {
            Reply::Policy(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    // A herzog shutting down says so rather than answering "fair" or "nothing".
    async fn shares(self, _: Context) -> Result<Vec<ShareInfo>, ApiError> {
        self.0.handle.query(|m| m.shares()).await
    }

    async fn project_report(self, _: Context, name: String) -> Result<common::report::Report, ApiError> {
        report::report(&self.0, name).await
    }

    async fn policy(self, _: Context) -> Result<Policy, ApiError> {
        self.0.handle.query(|m| m.policy()).await
    }

    async fn project_active(self, _: Context, offset: u64, limit: u32) -> Result<Page<ActiveAttempt>, ApiError> {
        let limit = limit.clamp(1, MAX_PAGE);
        self.0.handle.query(move |m| m.active(offset, limit)).await
    }

    async fn workers(self, _: Context) -> Result<Vec<WorkerInfo>, ApiError> {
        self.0.handle.query(|m| m.workers()).await
    }

    async fn fragments(
        self,
        _: Context,
        project: String,
        offset: u64,
        limit: u32,
    ) -> Result<Page<FragmentInfo>, ApiError> {
        let (id, _) = self.0.handle.query(move |m| m.project_ref(&project)).await??;
        let db = self.0.db.clone();
        let limit = limit.clamp(1, MAX_PAGE);
        blocking(move || {
            Reader::open(&db)
                .and_then(|r| r.fragments(id, offset, limit))
                .map_err(storage)
        })
        .await
    }

    async fn services_status(self, _: Context, name: Option<String>) -> Result<Vec<InstanceStatus>, ApiError> {
        crate::services::rpc::status(&self.0, name).await
    }

    async fn services_control(
        self,
        _: Context,
        action: ServiceAction,
        names: Vec<String>,
    ) -> Result<Vec<InstanceStatus>, ApiError> {
        crate::services::rpc::control(&self.0, action, names).await
    }

    async fn services_reload(self, _: Context) -> Result<ReloadSummary, ApiError> {
        crate::services::rpc::reload(&self.0).await
    }

    async fn services_events(
        self,
        ctx: Context,
        service: Option<String>,
        after: Option<i64>,
        limit: u32,
        wait_ms: u64,
    ) -> Result<Vec<ServiceEvent>, ApiError> {
        // Answer before the caller's deadline, or tarpc drops the reply.
        let left = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(WAIT_MARGIN);
        let wait_ms = wait_ms.min(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        crate::services::rpc::events(&self.0, service, after, limit, wait_ms).await
    }

    async fn service_output(self, ctx: Context, read: ServiceRead) -> Result<ServiceOutput, ApiError> {
        let left = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(WAIT_MARGIN);
        crate::services::rpc::output(&self.0, read, left).await
    }

    async fn fragment_output(self, ctx: Context, read: FragmentRead) -> Result<FragmentOutput, ApiError> {
        let left = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(WAIT_MARGIN);
        crate::fragment_output::output(&self.0, read, left).await
    }

    async fn logs(self, _: Context, project: String, fragment: String, max_bytes: u64) -> Result<Logs, ApiError> {
        // The latest attempt's: `fragment_logs` without an attempt (kept for older clients).
        let query = common::history::LogsQuery {
            project,
            fragment,
            attempt: None,
            max_bytes,
        };
        history::logs(&self.0, query).await
    }
}

fn read_logs(results_dir: &Path, fragment: &str, attempt: AttemptId, max: u64, max_log_bytes: u64) -> Logs {
    let (out, err, _) = attempt_paths(results_dir, fragment, attempt);
    let (stdout, cut_out) = tail(&out, max);
    let (stderr, cut_err) = tail(&err, max);
    // Where only a tail is shown, the line saying what kinski cut lies before it.
    let cut = [(&out, cut_out), (&err, cut_err)]
        .into_iter()
        .filter(|(_, shown_from_the_middle)| *shown_from_the_middle)
        .filter_map(|(path, _)| cut_marker(path, max_log_bytes))
        .collect();
    Logs {
        attempt: Some(attempt),
        stdout_path: Some(out),
        stderr_path: Some(err),
        stdout,
        stderr,
        truncated: cut_out || cut_err,
        cut,
        never_ran: None,
    }
}

impl WorkerApi {
    /// Applies one completion from a host without the shared filesystem: the attempt's
    /// outputs are fetched first; a fetch that fails fails the attempt, and kinski keeps its
    /// scratch directory (and resends) until this has succeeded.
    async fn complete_one(&self, name: &str, completion: Completion) -> Result<(), ApiError> {
        let (worker, attempt) = (name.to_string(), completion.attempt);
        let plan = self.api.handle.query(move |m| m.fetch_plan(&worker, attempt)).await?;
        let staging_error = match plan {
            None => None,
            Some(plan) => match self.api.stager.fetch(name, &plan).await {
                Ok(bytes) => {
                    tracing::debug!(worker = %name, %attempt, bytes, "fetched a staged attempt's files");
                    None
                }
                Err(e) => {
                    tracing::warn!(worker = %name, %attempt, error = %e, "failed to fetch a staged attempt's files");
                    Some(e.to_string())
                }
            },
        };
        self.api
            .handle
            .event(Event::Complete {
                worker: name.to_string(),
                completion,
                staging_error,
            })
            .await
            .map(|_| ())
    }
}

impl Registry for WorkerApi {
    async fn resources_register(
        self,
        _: Context,
        name: String,
        resources: Resources,
        running: Vec<AttemptId>,
    ) -> Result<Registered, ApiError> {
        self.check(&name)?;
        if resources.slots == 0 {
            return Err(ApiError::InvalidValue {
                what: "slots".into(),
                reason: "a worker needs at least one slot".into(),
            });
        }
        let mut resources = resources;
        if let Some(slots) = self.api.stager.slots(&name) {
            // Fewer slots than kinski offers is herzog's choice; more would only be refused.
            if slots > resources.slots {
                tracing::warn!(worker = %name, configured = slots, registered = resources.slots, "cluster.toml gives this host more slots than its kinski runs: using kinski's");
            }
            resources.slots = resources.slots.min(slots);
        }
        if let Some(dir) = &resources.scratch_dir
            && common::paths::clean_absolute(dir).is_err()
        {
            return Err(ApiError::InvalidValue {
                what: "scratch_dir".into(),
                reason: format!("{} is not an absolute path without '..'", dir.display()),
            });
        }
        let staged = self.api.stager.staged(&name);
        self.api
            .handle
            .event(Event::Register {
                worker: name,
                resources,
                running,
                staged,
            })
            .await?;
        Ok(Registered {
            heartbeat_ms: self.api.heartbeat_ms,
            worker_timeout_ms: self.api.worker_timeout_ms,
        })
    }

    async fn instance_events(self, _: Context, name: String, events: Vec<InstanceEvent>) -> Result<(), ApiError> {
        self.check(&name)?;
        crate::services::rpc::store_events(&self.api, name, events).await
    }

    async fn instances_report(self, _: Context, name: String, reports: Vec<InstanceReport>) -> Result<(), ApiError> {
        self.check(&name)?;
        crate::services::rpc::report(&self.api, name, reports).await
    }

    async fn heartbeat(self, _: Context, name: String, running: Vec<AttemptId>) -> Result<(), ApiError> {
        self.check(&name)?;
        self.api.connections.heard(&name);
        self.api
            .handle
            .event(Event::Heartbeat { worker: name, running })
            .await
            .map(|_| ())
    }

    async fn fragment_started(self, _: Context, name: String, started: Vec<StartNotice>) -> Result<(), ApiError> {
        self.check(&name)?;
        self.api.connections.heard(&name);
        self.api
            .handle
            .event(Event::Started {
                worker: name,
                notices: started,
            })
            .await
            .map(|_| ())
    }

    async fn worker_stopping(self, _: Context, name: String, held: Vec<AttemptId>) -> Result<(), ApiError> {
        self.check(&name)?;
        self.api
            .handle
            .event(Event::WorkerStopping { worker: name, held })
            .await
            .map(|_| ())
    }

    async fn fragment_complete(
        self,
        _: Context,
        name: String,
        completions: Vec<Completion>,
    ) -> Result<Vec<Result<(), ApiError>>, ApiError> {
        self.check(&name)?;
        if completions.len() > common::service::MAX_BATCH {
            return Err(ApiError::InvalidValue {
                what: "completions".into(),
                reason: format!("at most {} in one call", common::service::MAX_BATCH),
            });
        }
        // All at once: their events reach the loop together and are committed in one
        // transaction. Without files to fetch, as one command: a thousand workers' calls in
        // flight held a future and a reply channel per completion (20 MB, BENCHMARKS.md).
        if !self.api.stager.staged(&name) {
            let events = completions
                .into_iter()
                .map(|completion| Event::Complete {
                    worker: name.clone(),
                    completion,
                    staging_error: None,
                })
                .collect();
            let results = self.api.handle.events(events).await?;
            return Ok(results.into_iter().map(|r| r.map(|_| ())).collect());
        }
        let each = completions.into_iter().map(|c| self.complete_one(&name, c));
        Ok(futures::future::join_all(each).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_regular_files_and_symlinks_to_them_sorted_without_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["b", "a", ".hidden"] {
            std::fs::write(d.join(name), "").unwrap();
        }
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("to-file")).unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("to-dir")).unwrap();
        std::os::unix::fs::symlink(d.join("missing"), d.join("dangling")).unwrap();
        assert_eq!(list_inputs(d).unwrap(), ["a", "b", "to-file"]);
    }
}
