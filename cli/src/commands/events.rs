//! `hz events`: the services' event log (started, exited, backoff, fatal, stopped, placed,
//! lost, refused, reloads), oldest first; `--follow` waits for more as they come.

use crate::Outcome;
use crate::args::EventsArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::instances::ServiceEvent;
use std::io::Write;

/// How long one call waits for new events while following.
const FOLLOW_WAIT_MS: u64 = 25_000;

pub(crate) async fn run(args: &EventsArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let service = args.service.clone();
    let mut events = herzog.services_events(service.clone(), None, args.last, 0).await?;
    // The last event printed: following goes on from there, through calls that return none.
    let mut last_seen = 0;
    loop {
        for e in &events {
            if args.output.json {
                let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "{}", line(e))?;
            }
        }
        out.flush()?;
        if !args.follow {
            if events.is_empty() && !args.output.json {
                note!("no events yet");
            }
            return Ok(Outcome::Ok);
        }
        let after = events.last().map_or(last_seen, |e| e.id);
        last_seen = after;
        events = herzog
            .services_events(service.clone(), Some(after), 1_000, FOLLOW_WAIT_MS)
            .await?;
    }
}

/// One event as a line: when, which instance, where, what.
fn line(e: &ServiceEvent) -> String {
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(e.at).unwrap_or(0)),
    );
    let what = if e.instance.is_empty() { &e.service } else { &e.instance };
    let host = e.worker.as_deref().map(|w| format!(" on {w}")).unwrap_or_default();
    format!("{when}  {what}{host}: {}", e.kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::instances::EventKind;
    use common::wire::Exit;

    #[test]
    fn a_line_says_when_which_where_and_what() {
        let e = ServiceEvent {
            id: 3,
            at: 0,
            service: "web".into(),
            instance: "web:0".into(),
            worker: Some("euclid".into()),
            kind: EventKind::Exited {
                exit: Exit::Signal(9),
                expected: false,
            },
        };
        assert_eq!(
            line(&e),
            "1970-01-01T00:00:00Z  web:0 on euclid: exited unexpectedly (signal 9)"
        );
    }
}
