//! `hz progress [PROJECT] [--watch]`: how far projects are, as a table or as live bars.

use super::print_json;
use crate::Outcome;
use crate::args::ProgressArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, percent};
use common::wire::ProjectProgress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

/// How often `--watch` updates its bars. The end of a project is seen when it happens:
/// herzog answers a `project_wait` then, whatever is left of this.
pub(crate) const POLL: Duration = Duration::from_millis(500);

// The bar counts succeeded fragments; the rate and ETA are herzog's, from the recent pace.
const RUNNING_STYLE: &str = "{prefix:>20!} [{bar:30.cyan/blue}] {pos}/{len} {percent:>3}%  {msg}";
const SUCCEEDED_STYLE: &str = "{prefix:>20!} [{bar:30.green/blue}] {pos}/{len} in {elapsed}  {msg}";
const FAILED_STYLE: &str = "{prefix:>20!} [{bar:30.red/blue}] {pos}/{len} in {elapsed}  {msg}";

pub(crate) async fn run(args: &ProgressArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let project = args.project.as_deref();
    if args.watch {
        let end = Watch::new(project).follow(&herzog, POLL).await?;
        if !end.last.is_empty() {
            out.write_all(table(&end.last).render().as_bytes())?;
            for p in end.last.iter().filter(|p| p.failed > 0) {
                writeln!(out, "{}", failure_summary(p))?;
            }
            if !end.removed.is_empty() {
                note!(
                    "removed while watched: {} (its results stay until purged)",
                    end.removed.join(", ")
                );
                return Ok(Outcome::ProjectRemoved);
            }
            return Ok(failed_outcome(&end.last));
        }
        note!("no project is pending or running");
    }
    let projects = herzog.project_progress(project).await?;
    if args.output.json {
        print_json(out, &projects)?;
    } else if projects.is_empty() {
        note!("no projects yet: `hz action DIR PROGRAM` adds one");
    } else {
        out.write_all(table(&projects).render().as_bytes())?;
        // Below the table, whole: a reason is too long for a column.
        for p in &projects {
            if let Some(held) = &p.held {
                writeln!(out, "{}: {held}", p.name)?;
            }
            for warning in &p.warnings {
                writeln!(out, "{}: warning: {warning}", p.name)?;
            }
            if p.failed > 0 {
                writeln!(out, "{}", failure_summary(p))?;
            }
        }
    }
    Ok(Outcome::Ok)
}

/// [`Outcome::WorkFailed`] when a fragment of these projects failed.
pub(crate) fn failed_outcome(projects: &[ProjectProgress]) -> Outcome {
    if projects.iter().any(|p| p.failed > 0) {
        Outcome::WorkFailed
    } else {
        Outcome::Ok
    }
}

/// How many of a project failed, and the first reasons: `p: 29 failed: exited with 1 (28),
/// killed by signal 9 (1)`.
pub(crate) fn failure_summary(p: &ProjectProgress) -> String {
    let reasons: Vec<String> = p
        .failures
        .iter()
        .map(|f| format!("{} ({})", f.reason, f.count))
        .collect();
    let more = if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join(", "))
    };
    format!(
        "{}: {} failed{more}; `hz fragments {} --state failed` lists them",
        p.name, p.failed, p.name
    )
}

/// The rate and time left, as herzog estimates them from the recent pace; `?` until it can.
pub(crate) fn rate_and_eta(p: &ProjectProgress) -> (String, String) {
    match (p.rate, p.eta_secs()) {
        (Some(rate), Some(eta)) => (
            format!("{rate:.1}/s"),
            crate::table::duration_ms((eta * 1000.0).min(u64::MAX as f64) as u64),
        ),
        _ => ("?".to_string(), "?".to_string()),
    }
}

pub(crate) fn table(projects: &[ProjectProgress]) -> Table {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("TOTAL", Align::Right),
        ("PENDING", Align::Right),
        ("QUEUED", Align::Right),
        ("RUNNING", Align::Right),
        ("SUCCEEDED", Align::Right),
        ("FAILED", Align::Right),
        ("DONE", Align::Right),
        ("RATE", Align::Right),
        ("ETA", Align::Right),
    ]);
    for p in projects {
        let (rate, eta) = if p.is_finished() {
            ("-".to_string(), "-".to_string())
        } else {
            rate_and_eta(p)
        };
        t.row(vec![
            p.name.clone(),
            p.total.to_string(),
            p.pending.to_string(),
            p.queued.to_string(),
            p.running.to_string(),
            p.succeeded.to_string(),
            p.failed.to_string(),
            percent(p.percent),
            rate,
            eta,
        ]);
    }
    t
}

/// Without a terminal the bars are hidden: a line per change, at most this often, instead.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One project followed by [`watch`].
struct Watched {
    bar: ProgressBar,
    last: ProjectProgress,
    done: bool,
    /// Removed while watched.
    removed: bool,
    /// For plain output: the finished count last printed, and when.
    printed: Option<(u64, Instant)>,
}

impl Watched {
    fn update(&mut self, p: ProjectProgress) {
        if self.bar.is_hidden() {
            self.print_plain(&p);
        }
        self.bar.set_length(p.total);
        self.bar.set_position(p.succeeded);
        if p.is_finished() {
            if p.failed > 0 {
                self.bar.set_style(style(FAILED_STYLE));
                self.bar.abandon_with_message(failure_summary(&p));
            } else {
                self.bar.set_style(style(SUCCEEDED_STYLE));
                self.bar.finish_with_message(format!("{} succeeded", p.succeeded));
            }
            self.done = true;
        } else {
            let held = p.held.as_deref().map(|h| format!("; {h}")).unwrap_or_default();
            let (rate, eta) = rate_and_eta(&p);
            self.bar.set_message(format!(
                "{rate}  ETA {eta}  {} running, {} queued, {} failed{held}",
                p.running, p.queued, p.failed
            ));
        }
        self.last = p;
    }
}

impl Watched {
    fn print_plain(&mut self, p: &ProjectProgress) {
        let finished = p.succeeded + p.failed;
        let due = match self.printed {
            None => true,
            // A hold is said when it begins and ends, not ten seconds later.
            Some((n, at)) => {
                (n != finished && (p.is_finished() || at.elapsed() >= PLAIN_EVERY)) || p.held != self.last.held
            }
        };
        if due {
            let held = p.held.as_deref().map(|h| format!("; {h}")).unwrap_or_default();
            let (rate, eta) = rate_and_eta(p);
            note!(
                "{}: {}/{} succeeded, {} running, {} queued, {} failed, {rate}, ETA {eta}{held}",
                p.name,
                p.succeeded,
                p.total,
                p.running,
                p.queued,
                p.failed
            );
            self.printed = Some((finished, Instant::now()));
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Shows one bar per project on stderr (when it is not a terminal, a line now and then),
/// polling every `every`, until every watched project is finished; returns their last progress.
///
/// With `project`, watches that one (an unknown name is an error). Without, watches every
/// project that is unfinished at the start and every project added meanwhile; returns an
/// empty list when there is nothing to watch. A project removed meanwhile stops being watched
/// and keeps its last progress.
pub(crate) async fn watch(
    herzog: &Herzog,
    project: Option<&str>,
    every: Duration,
) -> Result<Vec<ProjectProgress>, CliError> {
    Ok(Watch::new(project).follow(herzog, every).await?.last)
}

/// How a watch ended: the watched projects' last progress, and which were removed meanwhile.
pub(crate) struct WatchEnd {
    pub(crate) last: Vec<ProjectProgress>,
    pub(crate) removed: Vec<String>,
}

/// What [`watch`] has seen so far.
pub(crate) struct Watch<'a> {
    project: Option<&'a str>,
    multi: MultiProgress,
    watched: Vec<Watched>,
    /// The projects already finished at the first look, which are not watched.
    finished_at_start: Option<HashSet<String>>,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(project: Option<&'a str>) -> Self {
        Watch {
            project,
            multi: MultiProgress::new(),
            watched: Vec::new(),
            finished_at_start: None,
        }
    }

    /// Looks at once, then waits for the end at most `every` at a time (herzog answers the
    /// moment the projects finish), updating the bars, until every watched project is finished;
    /// returns their last progress.
    pub(crate) async fn follow(mut self, herzog: &Herzog, every: Duration) -> Result<WatchEnd, CliError> {
        let mut list = herzog.project_progress(self.project).await?;
        while !self.look(list) {
            list = match herzog.project_wait(self.project, every).await {
                // The one project watched is gone: the watch ends there.
                Err(CliError::Api(common::ApiError::UnknownProject { .. })) if self.project.is_some() => Vec::new(),
                other => other?,
            };
        }
        let removed = self
            .watched
            .iter()
            .filter(|w| w.removed)
            .map(|w| w.last.name.clone())
            .collect();
        Ok(WatchEnd {
            last: self.watched.into_iter().map(|w| w.last).collect(),
            removed,
        })
    }

    /// Updates the bars from one answer; true once every watched project is finished.
    pub(crate) fn look(&mut self, list: Vec<ProjectProgress>) -> bool {
        let skip = self.finished_at_start.get_or_insert_with(|| match self.project {
            Some(_) => HashSet::new(),
            None => list
                .iter()
                .filter(|p| p.is_finished())
                .map(|p| p.name.clone())
                .collect(),
        });
        for p in list.iter().filter(|p| !skip.contains(&p.name)) {
            match self.watched.iter_mut().find(|w| w.last.name == p.name) {
                Some(w) if w.done => {}
                Some(w) => w.update(p.clone()),
                None => {
                    let bar = self.multi.add(
                        ProgressBar::new(p.total)
                            .with_style(style(RUNNING_STYLE))
                            .with_prefix(p.name.clone())
                            .with_position(p.succeeded),
                    );
                    let mut w = Watched {
                        bar,
                        last: p.clone(),
                        done: false,
                        removed: false,
                        printed: None,
                    };
                    w.update(p.clone());
                    self.watched.push(w);
                }
            }
        }
        for w in self.watched.iter_mut().filter(|w| !w.done) {
            if !list.iter().any(|p| p.name == w.last.name) {
                w.bar.abandon_with_message("removed while watched");
                w.done = true;
                w.removed = true;
            }
        }
        self.watched.iter().all(|w| w.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::JsonArgs;
    use crate::test_cluster::{Cluster, EVERY};
    use common::template::shell_quote;

    fn args(project: Option<&str>) -> ProgressArgs {
        ProgressArgs {
            project: project.map(str::to_string),
            watch: true,
            output: JsonArgs::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_follows_projects_until_they_finish() {
        let cluster = Cluster::with_worker(2).await;
        let done = cluster.inputs([("a", "")]);
        cluster.add("done", done, "true").await;
        cluster.finish("done").await;
        // The other projects' programs wait for a shared lock on the gate, held here until
        // the watch has first looked: they cannot finish before.
        let gate = tempfile::NamedTempFile::new().unwrap();
        let held = std::fs::File::open(gate.path()).unwrap();
        held.lock().unwrap();
        let flock = format!("flock -s {}", shell_quote(&gate.path().display().to_string()));
        let ok = cluster.inputs([("a", ""), ("b", ""), ("c", "")]);
        cluster.add("ok", ok, &format!("{flock} true")).await;
        let fails = cluster.inputs([("a", ""), ("b", "")]);
        cluster
            .add("will-fail", fails, &format!("{flock} sh -c 'exit 3'"))
            .await;
        let mut watcher = Watch::new(None);
        assert!(!watcher.look(cluster.herzog.project_progress(None).await.unwrap()));
        drop(held);

        let followed = watcher.follow(&cluster.herzog, EVERY);
        let end = tokio::time::timeout(Duration::from_secs(60), followed)
            .await
            .unwrap()
            .unwrap();
        assert!(end.removed.is_empty());
        let last = end.last;
        let names: Vec<&str> = last.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ok", "will-fail"], "the finished project is not watched");
        assert!(last.iter().all(ProjectProgress::is_finished), "{last:?}");
        assert_eq!((last[0].succeeded, last[0].failed), (3, 0));
        assert_eq!((last[1].succeeded, last[1].failed), (0, 2));
        assert_eq!(failed_outcome(&last), Outcome::WorkFailed);

        // `hz progress NAME --watch` on a finished project ends at its first look.
        let mut out = Vec::new();
        assert_eq!(
            run(&args(Some("ok")), &cluster.endpoint, &mut out).await.unwrap(),
            Outcome::Ok
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ok") && !text.contains("will-fail"), "{text}");
        let failed = run(&args(Some("will-fail")), &cluster.endpoint, &mut Vec::new()).await;
        assert_eq!(failed.unwrap(), Outcome::WorkFailed);
        let err = watch(&cluster.herzog, Some("nope"), EVERY).await.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        cluster.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_end_is_seen_when_it_happens_not_at_the_next_look() {
        let cluster = Cluster::with_worker(1).await;
        let gate = tempfile::NamedTempFile::new().unwrap();
        let held = std::fs::File::open(gate.path()).unwrap();
        held.lock().unwrap();
        let dir = cluster.inputs([("a", "")]);
        let flock = format!("flock -s {} true", shell_quote(&gate.path().display().to_string()));
        cluster.add("gated", dir, &flock).await;
        // Bars every hour: only herzog's answer at the end can finish this in time (herzog
        // holds a wait at most a minute, and the guard below is half that).
        let watching = tokio::spawn({
            let herzog = cluster.herzog.clone();
            async move { watch(&herzog, Some("gated"), Duration::from_secs(3600)).await }
        });
        let first = cluster.herzog.project_progress(Some("gated")).await.unwrap();
        assert!(!first[0].is_finished(), "the gate holds the program");
        drop(held);
        let last = tokio::time::timeout(Duration::from_secs(30), watching)
            .await
            .expect("the end was not answered when it happened")
            .unwrap()
            .unwrap();
        assert_eq!((last[0].succeeded, last[0].failed), (1, 0));
        cluster.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_to_watch_returns_at_once() {
        let cluster = Cluster::with_worker(1).await;
        let dir = cluster.inputs([("a", "")]);
        cluster.add("done", dir, "true").await;
        cluster.finish("done").await;
        // A second look would come an hour later: only the first one happens.
        let once = watch(&cluster.herzog, None, Duration::from_secs(3600));
        let last = tokio::time::timeout(Duration::from_secs(30), once).await;
        assert!(last.expect("watch looked twice").unwrap().is_empty());
        // `hz progress --watch` then prints the table of every project.
        let mut out = Vec::new();
        assert_eq!(
            run(&args(None), &cluster.endpoint, &mut out).await.unwrap(),
            Outcome::Ok
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("done") && text.contains("100"), "{text}");
        cluster.stop().await;
    }

    #[test]
    fn the_bar_templates_parse() {
        ProgressStyle::with_template(RUNNING_STYLE).unwrap();
        ProgressStyle::with_template(SUCCEEDED_STYLE).unwrap();
        ProgressStyle::with_template(FAILED_STYLE).unwrap();
    }
}
