//! `hz active`: every running attempt and for how long it has run.

use super::print_json;
use crate::Outcome;
use crate::args::JsonArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, elapsed};
use common::wire::ActiveAttempt;
use std::io::Write;

pub(crate) async fn run(args: JsonArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let active = collect_paged(&herzog, PAGE).await?;
    if args.json {
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
        ("RUNNING FOR", Align::Right),
    ]);
    for a in active {
        t.row(vec![
            a.worker.clone(),
            a.project.clone(),
            a.fragment.clone(),
            a.attempt.to_string(),
            elapsed(now, a.since),
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
            while herzog.project_progress(Some("p")).await.unwrap()[0].running < 8 {
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
        };
        let text = table(&[a], 66_000).render();
        assert!(
            text.contains("w1") && text.contains("a.txt") && text.contains("12"),
            "{text}"
        );
        assert!(text.contains("1m05s"), "{text}");
    }
}
