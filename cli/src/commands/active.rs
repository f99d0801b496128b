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
    let active = herzog.project_active().await?;
    if args.json {
        print_json(out, &active)?;
    } else if active.is_empty() {
        note!("nothing is running");
    } else {
        out.write_all(table(&active, common::now_millis()).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
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
    use common::AttemptId;

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
