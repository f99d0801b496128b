//! `hz fragments PROJECT`: every fragment with its last attempt, like Slurm's sacct;
//! `hz fragments PROJECT FRAGMENT`: every attempt of one fragment; `--worker` and `--since`:
//! the attempts on a worker or within a time, one line each. `--json` carries each
//! fragment's attempts (start, end, host, command).

use super::print_json;
use crate::Outcome;
use crate::args::FragmentsArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, bytes, duration_ms, opt};
use common::history::FragmentQuery;
use common::wire::{FragmentInfo, FragmentStateKind};
use std::io::Write;

/// Fragments asked for per call; pages stay well below the frame limit.
const PAGE: u32 = 1000;
/// Fragments asked for per call with their attempts (each carries its command line).
const PAGE_WITH_ATTEMPTS: u32 = 500;

pub(crate) async fn run(args: &FragmentsArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let state = args.state.map(FragmentStateKind::from);
    let filtered = args.worker.is_some() || args.since.is_some();
    if args.fragment.is_none() && !filtered && !args.output.json {
        // The plain table needs no attempts: the older, lighter call.
        let fragments = collect(&herzog, &args.project, state, usize::MAX).await?;
        if fragments.is_empty() {
            match state {
                Some(state) => note!("project {} has no {state} fragment", args.project),
                None => note!("project {} has no fragments", args.project),
            }
        } else {
            requests_line(&herzog, &args.project, out).await?;
            out.write_all(table(&fragments).render().as_bytes())?;
        }
        return Ok(Outcome::Ok);
    }
    let query = FragmentQuery {
        attempts: true,
        fragment: args.fragment.clone(),
        worker: args.worker.clone(),
        since: args
            .since
            .map(|d| common::now_millis().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        ..FragmentQuery::default()
    };
    let fragments = collect_query(&herzog, &args.project, &query, state).await?;
    if let Some(key) = &args.fragment {
        let Some(fragment) = fragments.into_iter().next() else {
            note!(
                "fragment {key} of project {} has no attempt that passes the filters",
                args.project
            );
            return Ok(Outcome::Ok);
        };
        if args.output.json {
            print_json(out, &fragment)?;
        } else {
            writeln!(
                out,
                "{} (index {}): {}, {} attempt{}",
                fragment.name,
                fragment.index,
                fragment.state,
                fragment.history.len(),
                if fragment.history.len() == 1 { "" } else { "s" }
            )?;
            if let Some(reason) = &fragment.reason {
                writeln!(out, "reason: {reason}")?;
            }
            if let Some(first) = fragment.history.first() {
                writeln!(out, "command: {}", first.command)?;
            }
            out.write_all(
                attempts_table(std::slice::from_ref(&fragment), false)
                    .render()
                    .as_bytes(),
            )?;
        }
        return Ok(Outcome::Ok);
    }
    if args.output.json {
        print_json(out, &fragments)?;
    } else if fragments.is_empty() {
        note!("project {} has no attempt that passes the filters", args.project);
    } else {
        out.write_all(attempts_table(&fragments, true).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
}

/// `requests: 2 CPUs / 4 GiB / 10m` above the table, when the project asked for any.
async fn requests_line(herzog: &Herzog, project: &str, out: &mut dyn Write) -> Result<(), CliError> {
    if common::job::is_job(project) {
        // A job asks for nothing, and `hz progress` does not list jobs.
        return Ok(());
    }
    let spec = herzog
        .project_progress(Some(project))
        .await?
        .into_iter()
        .find_map(|p| p.spec);
    if let Some(spec) = spec.filter(|s| !s.requests.is_empty()) {
        writeln!(out, "requests: {}", spec.requests)?;
    }
    Ok(())
}

/// Pages through the fragments `query` selects (with their attempts when it asks), keeping
/// those in `state` (all when `None`).
pub(crate) async fn collect_query(
    herzog: &Herzog,
    project: &str,
    query: &FragmentQuery,
    state: Option<FragmentStateKind>,
) -> Result<Vec<FragmentInfo>, CliError> {
    let mut kept = Vec::new();
    let mut query = query.clone();
    query.limit = PAGE_WITH_ATTEMPTS;
    loop {
        let page = herzog.fragments_query(project, query.clone()).await?;
        kept.extend(page.items.into_iter().filter(|f| state.is_none_or(|s| f.state == s)));
        match page.next {
            None => break,
            Some(next) if next <= query.offset => {
                return Err(herzog.protocol_error(
                    "listing fragments",
                    format!("the page after offset {} starts at {next}", query.offset),
                ));
            }
            Some(next) => query.offset = next,
        }
    }
    Ok(kept)
}

/// One line per attempt: `with_fragment` adds the fragment's name (listings of several).
pub(crate) fn attempts_table(fragments: &[FragmentInfo], with_fragment: bool) -> Table {
    let mut columns = vec![("ATTEMPT", Align::Right)];
    if with_fragment {
        columns.push(("FRAGMENT", Align::Left));
    }
    columns.extend([
        ("WORKER", Align::Left),
        ("START", Align::Left),
        ("END", Align::Left),
        ("OUTCOME", Align::Left),
        ("EXIT", Align::Left),
        ("WALL", Align::Right),
        ("NOTE", Align::Left),
    ]);
    let mut t = Table::new(&columns);
    for f in fragments {
        for a in &f.history {
            let mut row = vec![a.attempt.to_string()];
            if with_fragment {
                row.push(f.name.clone());
            }
            row.extend([
                a.worker.clone(),
                time(a.started_at),
                opt(a.ended_at, time),
                a.outcome.clone(),
                opt(a.exit.as_ref(), |e| e.to_string()),
                opt(a.wall_ms, duration_ms),
                opt(
                    a.note
                        .clone()
                        .or_else(|| a.late_exit.as_ref().map(|l| format!("late result: {l}"))),
                    |n| n,
                ),
            ]);
            t.row(row);
        }
    }
    t
}

/// A recorded time, as UTC to the second.
fn time(ms: common::Millis) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Pages through a project's fragments, keeping those in `state` (all when `None`), until
/// the last page or `limit` kept.
pub(crate) async fn collect(
    herzog: &Herzog,
    project: &str,
    state: Option<FragmentStateKind>,
    limit: usize,
) -> Result<Vec<FragmentInfo>, CliError> {
    collect_paged(herzog, project, state, limit, PAGE).await
}

/// [`collect`], asking for `page` fragments per call.
async fn collect_paged(
    herzog: &Herzog,
    project: &str,
    state: Option<FragmentStateKind>,
    limit: usize,
    page: u32,
) -> Result<Vec<FragmentInfo>, CliError> {
    let mut kept = Vec::new();
    let mut offset = 0;
    loop {
        let page = herzog.fragments(project, offset, page).await?;
        kept.extend(
            page.items
                .into_iter()
                .filter(|f| state.is_none_or(|s| f.state == s))
                .take(limit - kept.len()),
        );
        match page.next {
            _ if kept.len() >= limit => break,
            None => break,
            Some(next) if next <= offset => {
                return Err(herzog.protocol_error(
                    "listing fragments",
                    format!("the page after offset {offset} starts at {next}"),
                ));
            }
            Some(next) => offset = next,
        }
    }
    Ok(kept)
}

/// Its peak memory: its cgroup's where it had one (the whole tree, page cache included),
/// else the largest process's as wait4 measured it.
fn peak_memory(f: &FragmentInfo) -> Option<u64> {
    f.peak_memory_bytes.or(f.peak_rss_kb.map(|kb| kb.saturating_mul(1024)))
}

pub(crate) fn table(fragments: &[FragmentInfo]) -> Table {
    let mut t = Table::new(&[
        ("INDEX", Align::Right),
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("WORKER", Align::Left),
        ("EXIT", Align::Left),
        ("WALL", Align::Right),
        ("CPU", Align::Right),
        ("PEAK MEM", Align::Right),
        ("REASON", Align::Left),
    ]);
    for f in fragments {
        t.row(vec![
            f.index.to_string(),
            f.name.clone(),
            f.state.to_string(),
            f.attempts.to_string(),
            opt(f.worker.clone(), |w| w),
            opt(f.exit.as_ref(), |e| e.to_string()),
            opt(f.wall_ms, duration_ms),
            opt(f.cpu_ms, duration_ms),
            opt(peak_memory(f), bytes),
            opt(f.reason.clone(), |r| r),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::JsonArgs;
    use crate::test_cluster::Cluster;
    use common::AttemptId;
    use common::wire::Exit;

    /// Fragments per page in the test: 40 fragments take six pages, the last one short.
    const SMALL_PAGE: u32 = 7;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_through_every_fragment_and_filters() {
        let cluster = Cluster::with_worker(4).await;
        // `grep -q ok` fails on every fourth file, which does not say ok.
        let files = (0..40).map(|i| (format!("f{i:02}.txt"), if i % 4 == 3 { "no\n" } else { "ok\n" }));
        let dir = cluster.inputs(files);
        cluster.add("p", dir, "grep -q ok").await;
        let finished = cluster.finish("p").await;
        assert_eq!((finished.succeeded, finished.failed), (30, 10));
        let herzog = &cluster.herzog;

        let all = collect_paged(herzog, "p", None, usize::MAX, SMALL_PAGE).await.unwrap();
        let indexes: Vec<u64> = all.iter().map(|f| f.index).collect();
        assert_eq!(indexes, (0..40).collect::<Vec<u64>>());
        assert_eq!(all[39].name, "f39.txt");
        let failed = collect_paged(herzog, "p", Some(FragmentStateKind::Failed), usize::MAX, SMALL_PAGE)
            .await
            .unwrap();
        let names: Vec<&str> = failed.iter().map(|f| f.name.as_str()).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("f{:02}.txt", i * 4 + 3)).collect();
        assert_eq!(names, expected);
        assert!(
            failed.iter().all(|f| f.exit == Some(Exit::Code(1)) && f.attempts == 1),
            "{failed:?}"
        );
        let first = collect_paged(herzog, "p", Some(FragmentStateKind::Failed), 3, SMALL_PAGE)
            .await
            .unwrap();
        assert_eq!(first.len(), 3);
        assert_eq!(first[2].name, "f11.txt");
        let err = collect_paged(herzog, "nope", None, 10, SMALL_PAGE).await.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");

        // `hz fragments p --state failed`, with the real page size.
        let args = FragmentsArgs {
            project: "p".into(),
            fragment: None,
            worker: None,
            since: None,
            state: Some(crate::args::StateFilter::Failed),
            output: JsonArgs::default(),
        };
        let mut out = Vec::new();
        run(&args, &cluster.endpoint, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 11, "a header and ten fragments: {text}");
        assert!(text.contains("f39.txt") && !text.contains("f00.txt"), "{text}");
        cluster.stop().await;
    }

    #[test]
    fn the_table_uses_human_units() {
        let f = FragmentInfo {
            peak_memory_bytes: None,
            index: 3,
            name: "f3.txt".into(),
            state: FragmentStateKind::Failed,
            attempts: 1,
            attempt: Some(AttemptId(3)),
            worker: Some("w".into()),
            exit: Some(Exit::Code(1)),
            wall_ms: Some(61_000),
            cpu_ms: Some(900),
            peak_rss_kb: Some(2048),
            reason: Some("exited with 1".into()),
            history: Vec::new(),
        };
        let text = table(&[f]).render();
        assert!(
            text.contains("2.0 MiB") && text.contains("1m01s") && text.contains("f3.txt"),
            "{text}"
        );
    }
}
