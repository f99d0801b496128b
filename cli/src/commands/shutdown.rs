//! `hz shutdown [WORKER] [--yes]`: stops herzog cleanly, as SIGTERM would (the services and
//! attempts keep running on their workers), or asks herzog to stop a worker's kinski, as
//! SIGTERM to it would. Asks first on a terminal; elsewhere only `--yes` does it.

use crate::Outcome;
use crate::args::ShutdownArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use std::io::IsTerminal;

pub(crate) async fn run(args: &ShutdownArgs, addr: &Endpoint) -> Result<Outcome, CliError> {
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "hz shutdown asks for confirmation, and stdin is not a terminal: add --yes to shut down without asking"
                    .to_string(),
            ));
        }
        let question = question(args, &addr.addr);
        let answer = tokio::task::spawn_blocking(move || {
            note_prompt(&question);
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(std::io::Error::other)??;
        if !confirmed(&answer) {
            note!("hz: nothing was shut down");
            return Ok(Outcome::Ok);
        }
    }
    let herzog = Herzog::connect(addr).await?;
    let done = herzog.shutdown(args.worker.clone()).await?;
    if args.worker.is_none() {
        // herzog waits for this connection to close before it exits.
        addr.forget();
    }
    note!("{done}");
    Ok(Outcome::Ok)
}

/// What `hz shutdown` asks before it acts.
pub(crate) fn question(args: &ShutdownArgs, addr: &str) -> String {
    match &args.worker {
        None => format!("Shut down herzog at {addr}? The services and attempts keep running on their workers. [y/N] "),
        Some(worker) => format!(
            "Shut down worker '{worker}'? Its kinski stops its attempts (they run again elsewhere) and its service instances. [y/N] "
        ),
    }
}

/// Whether an answer to [`question`] is yes.
pub(crate) fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn note_prompt(question: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr();
    let _ = write!(err, "{question}");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(confirmed(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "ye"] {
            assert!(!confirmed(no), "{no:?}");
        }
        let herzog = ShutdownArgs {
            worker: None,
            yes: false,
        };
        assert!(question(&herzog, "h:1").contains("herzog at h:1"));
        let worker = ShutdownArgs {
            worker: Some("euclid".into()),
            yes: false,
        };
        assert!(question(&worker, "h:1").contains("worker 'euclid'"));
    }
}
