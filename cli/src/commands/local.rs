//! `hz local DIR PROGRAM`: runs a project on this machine with no set-up, through the real
//! code: herzog and one kinski start as tasks of this process, then hz adds the project over
//! RPC (as `hz action` does), follows it (as `hz progress --watch` does) and sums it up.
//!
//! The three talk over in-process connections (`common::link`): the same services and
//! handlers as on a cluster, without a port, TLS or JSON. Nothing listens, so nothing outside
//! this process can reach this herzog; on loopback TCP with TLS the transport cost more than
//! running `/bin/true` (BENCHMARKS.md).

use super::{action, fragments, joblog, progress};
use crate::Outcome;
use crate::args::LocalArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, duration_ms, opt};
use common::ApiError;
use common::history::FragmentQuery;
use common::wire::{FragmentInfo, FragmentStateKind, NewProject, ProjectProgress};
use futures::FutureExt;
use futures::future::Shared;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::task::JoinError;

/// The most failed fragments listed in the summary.
const FAILED_SHOWN: usize = 10;
/// The log file's filter (RUST_LOG overrides it). herzog's state machine and kinski's
/// supervisor log every attempt at info, which cost 144 µs per fragment here (BENCHMARKS.md);
/// `hz local` prints its own summary, so it keeps only their warnings. Those lines belong at
/// debug in `herzog/src/machine` and `kinski/src/supervisor.rs` themselves; until then this
/// keeps them out of `hz local`.
const LOG_FILTER: &str = "info,herzog::machine=warn,kinski::supervisor=warn";
/// How long the daemons get to stop after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How a daemon task ended: `Err` carries the message to print.
type DaemonEnd = Result<(), String>;
type DaemonTask = Shared<Pin<Box<dyn Future<Output = DaemonEnd> + Send>>>;

/// What the run achieved, gathered while herzog still runs.
struct Finished {
    progress: ProjectProgress,
    failed: Vec<FragmentInfo>,
}

/// Why the run stopped. Made once per run, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Ended {
    Work(Result<Finished, CliError>),
    Interrupted,
    Daemon(&'static str, DaemonEnd),
}

pub(crate) async fn run(args: &LocalArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let started = Instant::now();
    let cwd = std::env::current_dir().map_err(CliError::Cwd)?;
    let path_var = std::env::var("PATH").ok();
    let mut project = action::prepare(&args.run, &cwd, path_var.as_deref())?;
    let name = project
        .name
        .clone()
        .unwrap_or_else(|| common::name::name_from_dir(&project.dir));
    project.name = Some(name.clone());
    let joblog = args.joblog.as_ref().map(|path| cwd.join(path));
    if let Some(path) = &joblog {
        // Before any work: a path that cannot be written is bad input now, not after the run.
        tokio::fs::write(path, joblog::HEADER)
            .await
            .map_err(|source| CliError::Joblog {
                path: path.clone(),
                source,
            })?;
    }
    let state_dir = make_state_dir(&cwd.join(args.state_dir.clone().unwrap_or_else(|| format!("{name}.hz").into())))?;
    let _log_guard = herzog::logging::init(
        &state_dir,
        "hz-local",
        LOG_FILTER,
        false,
        common::config::DEFAULT_LOG_RETENTION,
    )
    .map_err(|source| CliError::StateDir {
        path: state_dir.join("logs"),
        source,
    })?;

    let (dialer, listener) = common::link::in_process();
    let endpoint = Endpoint::new_in_process(dialer.clone());
    let slots = args.slots.unwrap_or_else(kinski::default_slots);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let herzog_task = daemon(tokio::spawn(herzog::run(
        herzog::Config::new(state_dir.join("herzog")),
        herzog::Listener::InProcess(listener),
        stopped(stop_rx.clone()),
    )));
    // `--slots N` means N at once, as `parallel -j N` does, even beyond the host's CPUs:
    // attempts pack as 1 CPU each unless they ask for more.
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let capacity = kinski::Capacity {
        cpus: Some(slots.max(host_cpus)),
        ..kinski::Capacity::default()
    };
    let kinski_task = daemon(tokio::spawn(kinski::run_with(
        kinski::Config {
            herzog: kinski::Herzog::InProcess(dialer),
            name: "local".into(),
            slots,
            state_dir: state_dir.join("kinski"),
            // hz local runs programs as whoever runs hz.
            run_as: Some(kinski::user::current_user()),
            service_users: Vec::new(),
            pid_dir: None,
            scratch_dir: None,
        },
        capacity,
        stopped(stop_rx),
    )));
    note!(
        "started herzog and worker 'local' with {} in this process; state in {}",
        common::count(slots, "slot"),
        state_dir.display()
    );

    let ended = {
        let work = drive(
            &endpoint,
            project,
            &state_dir,
            args.retry_failed,
            progress::POLL,
            joblog.as_deref(),
        );
        tokio::select! {
            r = work => Ended::Work(r),
            () = interrupted() => Ended::Interrupted,
            r = herzog_task.clone() => Ended::Daemon("herzog", r),
            r = kinski_task.clone() => Ended::Daemon("kinski", r),
        }
    };

    let wall = started.elapsed();
    let _ = stop.send(true);
    let daemons = futures::future::join(herzog_task, kinski_task);
    let stopped_in_time = tokio::select! {
        r = tokio::time::timeout(SHUTDOWN_GRACE, daemons) => r.ok(),
        () = interrupted() => None,
    };
    let (herzog_end, kinski_end) = match stopped_in_time {
        Some(ends) => ends,
        None => {
            note!("hz: herzog and kinski did not stop in time; leaving them");
            (Ok(()), Ok(()))
        }
    };
    let daemon_failed = |which, end: &DaemonEnd| match end {
        Err(message) => Some(CliError::Daemon {
            which,
            message: message.clone(),
        }),
        Ok(()) => None,
    };

    match ended {
        Ended::Work(Ok(finished)) => {
            for e in [
                daemon_failed("herzog", &herzog_end),
                daemon_failed("kinski", &kinski_end),
            ]
            .into_iter()
            .flatten()
            {
                note!("hz: warning: {e} (while stopping)");
            }
            out.write_all(summary(&finished, wall, &state_dir).as_bytes())?;
            Ok(progress::failed_outcome(std::slice::from_ref(&finished.progress)))
        }
        Ended::Work(Err(e)) => {
            // A daemon's own error explains a failed call better than the call does.
            let cause = daemon_failed("herzog", &herzog_end).or_else(|| daemon_failed("kinski", &kinski_end));
            if let Some(cause) = cause {
                note!("hz: {e}");
                return Err(cause);
            }
            Err(e)
        }
        Ended::Interrupted => {
            note!(
                "hz: interrupted; the state is kept in {}: run the same command again to resume",
                state_dir.display()
            );
            Ok(Outcome::Interrupted)
        }
        Ended::Daemon(which, end) => Err(CliError::Daemon {
            which,
            message: end.err().unwrap_or_else(|| "it stopped unexpectedly".to_string()),
        }),
    }
}

/// Creates the state directory and returns its canonical path.
fn make_state_dir(path: &Path) -> Result<PathBuf, CliError> {
    common::paths::made_dir(path).map_err(|source| CliError::StateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = sigterm => {}
    }
}

/// Turns a daemon's task into a shareable future of its end, so it can be raced against the
/// work and awaited again at shutdown.
fn daemon<E: std::fmt::Display + Send + 'static>(task: tokio::task::JoinHandle<Result<(), E>>) -> DaemonTask {
    let end: Pin<Box<dyn Future<Output = DaemonEnd> + Send>> = Box::pin(task.map(daemon_end));
    end.shared()
}

fn daemon_end<E: std::fmt::Display>(joined: Result<Result<(), E>, JoinError>) -> DaemonEnd {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("it panicked: {what}"))
        }
        Err(_) => Err("its task was cancelled".to_string()),
    }
}

/// Adds (or resumes) the project, follows it to the end (asking herzog every `every`),
/// fetches what the summary needs, and writes the job log when asked.
async fn drive(
    addr: &Endpoint,
    project: NewProject,
    state_dir: &Path,
    retry_failed: bool,
    every: Duration,
    joblog: Option<&Path>,
) -> Result<Finished, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let name = project.name.clone().unwrap_or_default();
    match action::add(&herzog, project.clone()).await {
        Ok(_) => {}
        Err(CliError::Api(ApiError::DuplicateProject { .. })) => {
            resume(&herzog, &project, state_dir).await?;
            if retry_failed {
                // GNU parallel's --resume-failed: the failed fragments run again.
                let n = herzog.project_retry(&name).await?;
                note!("retrying {n} failed fragment{}", if n == 1 { "" } else { "s" });
            }
        }
        Err(e) => return Err(e),
    }
    let last = progress::watch(&herzog, Some(&name), every).await?;
    let Some(progress) = last.into_iter().find(|p| p.name == name) else {
        return Err(herzog.protocol_error("following the project", format!("no progress for '{name}'")));
    };
    let failed = if progress.failed > 0 {
        fragments::collect(&herzog, &name, Some(FragmentStateKind::Failed), FAILED_SHOWN).await?
    } else {
        Vec::new()
    };
    if let Some(path) = joblog {
        let query = FragmentQuery {
            attempts: true,
            ..FragmentQuery::default()
        };
        let all = fragments::collect_query(&herzog, &name, &query, None).await?;
        tokio::fs::write(path, joblog::render(&all))
            .await
            .map_err(|source| CliError::Joblog {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(Finished { progress, failed })
}

/// The state directory already has this project (an interrupted run): carry on with it when
/// it is the same directory and program.
async fn resume(herzog: &Herzog, project: &NewProject, state_dir: &Path) -> Result<(), CliError> {
    let name = project.name.clone().unwrap_or_default();
    let existing = herzog.project_progress(Some(&name)).await?;
    let conflict = |what: String| CliError::LocalConflict {
        state_dir: state_dir.to_path_buf(),
        name: name.clone(),
        what,
    };
    let Some(existing) = existing.into_iter().find(|p| p.name == name) else {
        return Err(conflict("no progress".into()));
    };
    if existing.dir != project.dir {
        return Err(conflict(format!("another directory ({})", existing.dir.display())));
    }
    if existing.program != project.spec.program {
        return Err(conflict(format!("another program ({})", existing.program)));
    }
    note!("resuming project {name} from {}", state_dir.display());
    Ok(())
}

/// What `hz local` prints at the end.
fn summary(f: &Finished, wall: Duration, state_dir: &Path) -> String {
    let p = &f.progress;
    let mut s = format!(
        "project {}: {}, {} succeeded, {} failed, in {}\n",
        p.name,
        common::count(p.total, "fragment"),
        p.succeeded,
        p.failed,
        duration_ms(u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)),
    );
    s += &format!(
        "results: {} (each attempt's stdout, stderr and outputs)\n",
        p.results_dir.display()
    );
    s += &format!("logs:    {}\n", state_dir.join("logs").display());
    s += &format!(
        "state:   {} (the same command resumes or re-reports; delete it to start over)\n",
        state_dir.display()
    );
    if !f.failed.is_empty() {
        if p.failed as usize > f.failed.len() {
            s += &format!("failed fragments (the first {} of {}):\n", f.failed.len(), p.failed);
        } else {
            s += "failed fragments:\n";
        }
        let mut t = Table::new(&[("NAME", Align::Left), ("EXIT", Align::Left), ("REASON", Align::Left)]);
        for frag in &f.failed {
            t.row(vec![
                frag.name.clone(),
                opt(frag.exit.as_ref(), |e| e.to_string()),
                opt(frag.reason.clone(), |r| r),
            ]);
        }
        for line in t.render().lines() {
            s += "  ";
            s += line;
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_cluster::{Cluster, EVERY};
    use common::wire::RunSpec;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_summary_names_counts_places_and_failures() {
        let cluster = Cluster::with_worker(4).await;
        // `grep -q ok` fails on the twelve files that do not say ok.
        let files = (0..20).map(|i| (format!("f{i:02}.txt"), if i < 8 { "ok\n" } else { "no\n" }));
        let project = NewProject {
            name: Some("genome".into()),
            dir: cluster.inputs(files),
            spec: RunSpec::new("grep -q ok"),
            after: Vec::new(),
            max_running: None,
            share: None,
        };
        let state_dir = Path::new("/s");
        let finished = drive(&cluster.endpoint, project.clone(), state_dir, false, EVERY, None)
            .await
            .unwrap();
        assert_eq!(finished.failed.len(), FAILED_SHOWN);
        let text = summary(&finished, Duration::from_secs(65), state_dir);
        assert!(
            text.starts_with("project genome: 20 fragments, 8 succeeded, 12 failed, in 1m05s\n"),
            "{text}"
        );
        let results = finished.progress.results_dir.display().to_string();
        assert!(results.ends_with("/results/genome"), "{results}");
        assert!(text.contains(&format!("results: {results} ")), "{text}");
        assert!(text.contains("logs:    /s/logs"), "{text}");
        assert!(text.contains("the first 10 of 12"), "{text}");
        assert!(text.contains("f08.txt") && text.contains("exited with 1"), "{text}");
        assert!(!text.contains("f07.txt"), "{text}");

        // The same command again resumes (here: re-reports) the project; another program
        // under the same name is refused.
        let again = drive(&cluster.endpoint, project.clone(), state_dir, false, EVERY, None)
            .await
            .unwrap();
        assert_eq!(again.progress.failed, 12);
        let mut other = project;
        other.spec = RunSpec::new("true");
        let err = drive(&cluster.endpoint, other, state_dir, false, EVERY, None)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, CliError::LocalConflict { .. }), "{err}");
        cluster.stop().await;
    }

    #[test]
    fn daemon_ends_become_messages() {
        assert_eq!(daemon_end::<String>(Ok(Ok(()))), Ok(()));
        assert_eq!(
            daemon_end::<String>(Ok(Err("disk full".into()))),
            Err("disk full".into())
        );
    }

    #[tokio::test]
    async fn a_panicking_daemon_is_reported() {
        let task = tokio::spawn(async { panic!("boom") });
        let end = daemon::<String>(task).await;
        assert_eq!(end, Err("it panicked: boom".to_string()));
    }

    #[tokio::test]
    async fn the_stop_flag_releases_the_daemons() {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let waiting = tokio::spawn(stopped(rx));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
