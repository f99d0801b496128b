//! `hz reload`: herzog reads the services file again and applies what changed, service by
//! service; a file with an error changes nothing and the error says where.

use crate::Outcome;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use std::io::Write;

pub(crate) async fn run(addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let s = herzog.services_reload().await?;
    let mut said = false;
    for (what, names) in [
        ("added", &s.added),
        ("removed", &s.removed),
        ("restarted", &s.restarted),
        ("changed without a restart", &s.retuned),
    ] {
        if !names.is_empty() {
            writeln!(out, "{what}: {}", names.join(", "))?;
            said = true;
        }
    }
    for (name, from, to) in &s.scaled {
        writeln!(out, "scaled: {name} from {from} to {}", common::count(*to, "instance"))?;
        said = true;
    }
    if !said {
        let as_they_were = if s.unchanged.len() == 1 {
            "as it was"
        } else {
            "as they were"
        };
        let services = common::count(s.unchanged.len() as u64, "service");
        writeln!(out, "nothing changed ({services} {as_they_were})")?;
    }
    Ok(Outcome::Ok)
}
