//! `hz fragments PROJECT`: every fragment with its last attempt, like Slurm's sacct.

use super::print_json;
use crate::Outcome;
use crate::args::FragmentsArgs;
use crate::client::Herzog;
use crate::error::CliError;
use crate::table::{Align, Table, bytes, duration_ms, opt};
use common::wire::{FragmentInfo, FragmentStateKind};
use std::io::Write;

/// Fragments asked for per call; pages stay well below the frame limit.
const PAGE: u32 = 1000;

pub(crate) async fn run(args: &FragmentsArgs, addr: &str, out: &mut dyn Write) -> Result<Outcome, CliError> {
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
    let mut kept = Vec::new();
    let mut offset = 0;
    loop {
        let page = herzog.fragments(project, offset, PAGE).await?;
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
    use crate::testing::{FakeHerzog, fragment};

    #[tokio::test]
    async fn pages_through_every_fragment_and_filters() {
        let fake = FakeHerzog::default();
        fake.set_fragments("p", (0..2500).map(fragment).collect());
        let herzog = fake.start().await;
        let all = collect(&herzog, "p", None, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 2500);
        assert_eq!(all.last().unwrap().index, 2499);
        let failed = collect(&herzog, "p", Some(FragmentStateKind::Failed), usize::MAX)
            .await
            .unwrap();
        assert_eq!(failed.len(), 250);
        assert!(failed.iter().all(|f| f.state == FragmentStateKind::Failed));
        let first = collect(&herzog, "p", Some(FragmentStateKind::Failed), 10)
            .await
            .unwrap();
        assert_eq!(first.len(), 10);
        let err = collect(&herzog, "nope", None, 10).await.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[test]
    fn the_table_uses_human_units() {
        let mut f = fragment(3);
        f.peak_rss_kb = Some(2048);
        f.wall_ms = Some(61_000);
        let text = table(&[f]).render();
        assert!(
            text.contains("2.0 MiB") && text.contains("1m01s") && text.contains("f3.txt"),
            "{text}"
        );
    }
}
