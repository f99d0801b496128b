//! `hz commands`: the named commands of the services file, which `hz run NAME` runs.

use super::print_json;
use crate::Outcome;
use crate::args::JsonArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table};
use std::io::Write;

pub(crate) async fn run(args: JsonArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let commands = herzog.commands().await?;
    if args.json {
        print_json(out, &commands)?;
    } else if commands.is_empty() {
        note!("no named commands: add [commands.NAME] to the services file and `hz reload`");
    } else {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("ALIASES", Align::Left),
            ("HOSTS", Align::Left),
            ("COMMAND", Align::Left),
            ("DESCRIPTION", Align::Left),
        ]);
        for c in &commands {
            t.row(vec![
                c.name.clone(),
                c.aliases.join(","),
                c.hosts.as_ref().map_or_else(|| "any".to_string(), |h| h.join(",")),
                c.command.clone(),
                c.description.clone().unwrap_or_default(),
            ]);
        }
        out.write_all(t.render().as_bytes())?;
    }
    Ok(Outcome::Ok)
}
