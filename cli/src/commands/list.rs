//! `hz list`: every project with how far it is.

use super::print_json;
use crate::Outcome;
use crate::args::JsonArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, percent};
use common::wire::ProjectProgress;
use std::io::Write;

pub(crate) async fn run(args: JsonArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let projects = herzog.project_progress(None).await?;
    if args.json {
        print_json(out, &projects)?;
    } else if projects.is_empty() {
        note!("no projects yet: `hz action DIR PROGRAM` adds one");
    } else {
        out.write_all(table(&projects).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
}

/// A project's state in a word: a finished project with failures is `failed`, never done.
pub(crate) fn state(p: &ProjectProgress) -> &'static str {
    match (p.is_finished(), p.failed > 0) {
        (true, true) => "failed",
        (true, false) => "succeeded",
        _ if p.paused => "paused",
        _ if p.held.is_some() => "held",
        _ if p.running > 0 => "running",
        _ => "waiting",
    }
}

fn table(projects: &[ProjectProgress]) -> Table {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("FRAGMENTS", Align::Right),
        ("SUCCEEDED", Align::Right),
        ("FAILED", Align::Right),
        ("REQUESTS", Align::Left),
        ("DIR", Align::Left),
        ("PROGRAM", Align::Left),
    ]);
    for p in projects {
        t.row(vec![
            p.name.clone(),
            state(p).to_string(),
            p.total.to_string(),
            percent(p.percent),
            p.failed.to_string(),
            p.spec.as_ref().map(|s| s.requests.to_string()).unwrap_or_default(),
            p.dir.display().to_string(),
            p.program.clone(),
        ]);
    }
    t
}
