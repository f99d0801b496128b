//! `hz fragments PROJECT`: every fragment with its last attempt, like Slurm's sacct.

use super::print_json;
use crate::Outcome;
use crate::args::FragmentsArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, bytes, duration_ms, opt};
use common::wire::{FragmentInfo, FragmentStateKind};
use std::io::Write;

/// Fragments asked for per call; pages stay well below the frame limit.
const PAGE: u32 = 1000;

pub(crate) async fn run(args: &FragmentsArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let state = args.state.map(FragmentStateKind::from);
    let fragments = collect(&herzog, &args.project, state, usize::MAX).await?;
    if args.output.json {
        print_json(out, &fragments)?;
    } else if fragments.is_empty() {
        match state {
            Some(state) => note!("project {} has no {state} fragment", args.project),
            None => note!("project {} has no fragments", args.project),
        }
    } else {
        out.write_all(table(&fragments).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
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
            opt(f.peak_rss_kb, |kb| bytes(kb.saturating_mul(1024))),
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
        };
        let text = table(&[f]).render();
        assert!(
            text.contains("2.0 MiB") && text.contains("1m01s") && text.contains("f3.txt"),
            "{text}"
        );
    }
}
