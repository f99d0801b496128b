//! `hz active [--project P] [--worker W]`: every dispatched attempt, running or queued on its
//! worker, and for how long.

use super::print_json;
use crate::Outcome;
use crate::args::ActiveArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, elapsed};
use common::wire::ActiveAttempt;
use std::io::Write;

pub(crate) async fn run(args: &ActiveArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let mut active = collect_paged(&herzog, PAGE).await?;
    active.retain(|a| {
        args.project.as_ref().is_none_or(|p| *p == a.project) && args.worker.as_ref().is_none_or(|w| *w == a.worker)
    });
    if args.output.json {
        print_json(out, &active)?;
    } else if active.is_empty() {
        note!("nothing is running");
    } else {
        out.write_all(table(&active, common::now_millis()).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
}

/// Attempts per call: herzog answers at most 10,000 (a million-fragment cluster dispatches
/// hundreds of thousands, more than one frame holds).
const PAGE: u32 = 10_000;

/// Every dispatched attempt, in attempt order, `page` per call.
async fn collect_paged(herzog: &Herzog, page: u32) -> Result<Vec<ActiveAttempt>, CliError> {
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let got = herzog.project_active(offset, page).await?;
        all.extend(got.items);
        match got.next {
            None => return Ok(all),
            Some(next) if next <= offset => {
                return Err(herzog.protocol_error(
                    "listing running attempts",
                    format!("the page after offset {offset} starts at {next}"),
                ));
            }
            Some(next) => offset = next,
        }
    }
}

fn table(active: &[ActiveAttempt], now: common::Millis) -> Table {
    let mut t = Table::new(&[
        ("WORKER", Align::Left),
        ("PROJECT", Align::Left),
        ("FRAGMENT", Align::Left),
        ("ATTEMPT", Align::Right),
        ("STATE", Align::Left),
        ("FOR", Align::Right),
    ]);
    for a in active {
        // Running time from the program's real start; a queued start's wait since dispatch.
        let (state, since) = match a.started {
            Some(started) => ("running", started),
            None => ("queued", a.since),
        };
        t.row(vec![
            a.worker.clone(),
            a.project.clone(),
            a.fragment.clone(),
            a.attempt.to_string(),
            state.to_string(),
            elapsed(now, since),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_cluster::Cluster;
    use common::AttemptId;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_through_every_dispatched_attempt() {
        let cluster = Cluster::with_worker(4).await;
        let dir = cluster.inputs((0..20).map(|i| (format!("f{i:02}"), "x")));
        cluster.add("p", dir, "sh -c 'exec sleep 60' {}").await;
        // Four run and four wait on the worker for a slot (long attempts: a queue as deep as
        // the slots).
        let herzog = &cluster.herzog;
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while herzog
                .project_progress(Some("p"))
                .await
                .map(|p| p[0].running + p[0].queued)
                .unwrap()
                < 8
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("eight attempts dispatched");
        let all = collect_paged(herzog, 3).await.unwrap();
        let attempts: Vec<AttemptId> = all.iter().map(|a| a.attempt).collect();
        assert_eq!(attempts.len(), 8, "{all:?}");
        assert!(
            attempts.windows(2).all(|w| w[0] < w[1]),
            "in attempt order: {attempts:?}"
        );
        let mut fragments: Vec<&str> = all.iter().map(|a| a.fragment.as_str()).collect();
        fragments.dedup();
        assert_eq!(fragments.len(), 8, "{all:?}");
        assert!(all.iter().all(|a| a.project == "p" && a.worker == "w"), "{all:?}");
        cluster.stop().await;
    }

    #[test]
    fn shows_how_long_each_attempt_runs() {
        let a = ActiveAttempt {
            worker: "w1".into(),
            project: "p".into(),
            fragment: "a.txt".into(),
            attempt: AttemptId(12),
            since: 1_000,
            started: Some(6_000),
        };
        let queued = ActiveAttempt {
            attempt: AttemptId(13),
            started: None,
            ..a.clone()
        };
        let text = table(&[a, queued], 66_000).render();
        assert!(
            text.contains("w1") && text.contains("a.txt") && text.contains("12"),
            "{text}"
        );
        // From the real start, not from the dispatch.
        assert!(text.contains("running") && text.contains("1m00s"), "{text}");
        assert!(text.contains("queued") && text.contains("1m05s"), "{text}");
    }
}
