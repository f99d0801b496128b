//! `hz shares`: each project's standing in the fair share (like Slurm's `sshare`).

use super::print_json;
use crate::Outcome;
use crate::args::JsonArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, duration_ms, opt, percent};
use common::wire::ShareInfo;
use std::io::Write;

pub(crate) async fn run(args: JsonArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let shares = herzog.shares().await?;
    if args.json {
        print_json(out, &shares)?;
    } else if shares.is_empty() {
        note!("no project has work to share the slots: `hz action` submits one");
    } else {
        out.write_all(table(&shares).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
}

fn table(shares: &[ShareInfo]) -> Table {
    let mut t = Table::new(&[
        ("PROJECT", Align::Left),
        ("SHARE", Align::Right),
        ("TARGET", Align::Right),
        ("LAST MIN", Align::Right),
        ("SINCE ACTIVE", Align::Right),
        ("CPU-TIME", Align::Right),
        ("ACTIVE FOR", Align::Right),
        ("DEFICIT", Align::Right),
    ]);
    for s in shares {
        let target = if s.priority {
            "priority".to_string()
        } else if s.active {
            percent(s.target * 100.0)
        } else {
            "-".to_string()
        };
        t.row(vec![
            s.project.clone(),
            s.share.to_string(),
            target,
            opt(s.last_minute, |p| percent(p * 100.0)),
            opt(s.since_active, |p| percent(p * 100.0)),
            duration_ms(s.used_ms),
            if s.active { duration_ms(s.active_ms) } else { "-".into() },
            if s.active { signed_ms(s.deficit_ms) } else { "-".into() },
        ]);
    }
    t
}

/// A deficit: `+1.2s` owed to the project, `-350ms` used beyond its share.
fn signed_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    format!("{sign}{}", duration_ms(ms.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_of_shares() {
        let s = ShareInfo {
            project: "a".into(),
            share: 2,
            active: true,
            target: 0.5,
            last_minute: Some(0.4975),
            since_active: None,
            used_ms: 12_300,
            active_ms: 65_000,
            deficit_ms: -350,
            priority: false,
        };
        let text = table(&[s]).render();
        assert!(text.contains("50.0%") && text.contains("49.8%"), "{text}");
        assert!(
            text.contains("12.3s") && text.contains("1m05s") && text.contains("-350ms"),
            "{text}"
        );
        assert_eq!(signed_ms(1_500), "+1.5s");
    }
}
