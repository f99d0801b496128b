//! `hz status`: every service instance, where it runs and how it is (supervisorctl status).

use super::print_json;
use crate::Outcome;
use crate::args::StatusArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use crate::table::{Align, Table, elapsed};
use common::instances::{InstanceState, InstanceStatus};
use std::io::Write;

pub(crate) async fn run(args: &StatusArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let herzog = Herzog::connect(addr).await?;
    let all = herzog.services_status(args.name.as_deref()).await?;
    if args.output.json {
        print_json(out, &all)?;
    } else if all.is_empty() {
        note!("no services: list them in the services file (services.example.toml), then `hz reload`");
    } else {
        out.write_all(table(&all, common::now_millis()).render().as_bytes())?;
    }
    Ok(Outcome::Ok)
}

pub(crate) fn table(all: &[InstanceStatus], now: common::Millis) -> Table {
    let mut t = Table::new(&[
        ("INSTANCE", Align::Left),
        ("HOST", Align::Left),
        ("STATE", Align::Left),
        ("PID", Align::Right),
        ("UPTIME OR REASON", Align::Left),
        ("RESTARTS", Align::Right),
    ]);
    for i in all {
        t.row(vec![
            i.instance.clone(),
            i.host.clone().unwrap_or_else(|| "-".into()),
            i.state.name().to_string(),
            i.state.pid().map_or_else(|| "-".into(), |p| p.to_string()),
            detail(&i.state, now),
            i.restarts.to_string(),
        ]);
    }
    t
}

/// For how long it has been up, or why it is not.
fn detail(state: &InstanceState, now: common::Millis) -> String {
    match state {
        InstanceState::Running { since, .. } => format!("up {}", elapsed(now, *since)),
        InstanceState::Starting { retries: 0, .. } => "starting".into(),
        InstanceState::Starting { retries, .. } => format!("starting again after {retries} failed starts"),
        InstanceState::Backoff { retries, exit } => format!("{retries} failed starts in a row, the last: {exit}"),
        InstanceState::Stopping { .. } => "stopping".into(),
        InstanceState::Stopped => "stopped".into(),
        InstanceState::Exited { exit, expected: true } => format!("exited ({exit}), as expected"),
        InstanceState::Exited { exit, .. } => format!("exited unexpectedly ({exit})"),
        InstanceState::Fatal { exit, retries } => {
            format!("{retries} failed starts in a row, the last: {exit}; `hz start` to try again")
        }
        InstanceState::Unknown { since } => format!("its host is unreachable, for {}", elapsed(now, *since)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::Exit;

    #[test]
    fn shows_uptime_or_why_not() {
        let row = |state| InstanceStatus {
            service: "web".into(),
            instance: "web:0".into(),
            host: Some("euclid".into()),
            state,
            restarts: 2,
            description: None,
        };
        let text = table(
            &[
                row(InstanceState::Running { pid: 42, since: 1_000 }),
                row(InstanceState::Fatal {
                    exit: Exit::Code(1),
                    retries: 4,
                }),
            ],
            66_000,
        )
        .render();
        assert!(
            text.contains("RUNNING") && text.contains("42") && text.contains("up 1m05s"),
            "{text}"
        );
        assert!(text.contains("FATAL") && text.contains("hz start"), "{text}");
    }
}
