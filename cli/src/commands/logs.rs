//! `hz logs PROJECT FRAGMENT [--attempt ID]`: the output of a fragment's latest attempt, or
//! of the one named.

use super::print_json;
use crate::Outcome;
use crate::args::LogsArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::AttemptId;
use common::history::LogsQuery;
use common::wire::Logs;
use std::io::Write;

/// The most of each stream fetched: the tail of a longer file.
const MAX_BYTES: u64 = 1024 * 1024;

/// Prints stdout on stdout and stderr, labelled, on stderr; `--stdout` or `--stderr` prints
/// only that stream, on stdout, unlabelled.
pub(crate) async fn run(args: &LogsArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    if args.follow {
        return super::follow::run(args, addr, out).await;
    }
    let herzog = Herzog::connect(addr).await?;
    let logs = herzog
        .fragment_logs(LogsQuery {
            project: args.project.clone(),
            fragment: args.fragment.clone(),
            attempt: args.attempt.map(AttemptId),
            max_bytes: MAX_BYTES,
        })
        .await?;
    if args.output.json {
        print_json(out, &logs)?;
        return Ok(Outcome::Ok);
    }
    if logs.attempt.is_none() {
        note!(
            "fragment {} of project {} has not run yet: no output",
            args.fragment,
            args.project
        );
        return Ok(Outcome::Ok);
    }
    if let (Some(attempt), Some(why)) = (logs.attempt, &logs.never_ran) {
        note!(
            "attempt {attempt} of fragment {} of project {} never ran, so it has no output: {why}",
            args.fragment,
            args.project
        );
    }
    if logs.truncated {
        note!("(only the last {} of each stream)", crate::table::bytes(MAX_BYTES));
    }
    for line in &logs.cut {
        note!("{line}");
    }
    if args.stderr {
        out.write_all(logs.stderr.as_bytes())?;
    } else {
        out.write_all(logs.stdout.as_bytes())?;
        if !args.stdout && !logs.stderr.is_empty() {
            out.flush()?;
            write_stderr_section(&mut std::io::stderr(), &logs)?;
        }
    }
    Ok(Outcome::Ok)
}

fn write_stderr_section(w: &mut dyn Write, logs: &Logs) -> std::io::Result<()> {
    let path = logs
        .stderr_path
        .as_ref()
        .map(|p| format!(" ({})", p.display()))
        .unwrap_or_default();
    writeln!(w, "--- stderr{path} ---")?;
    w.write_all(logs.stderr.as_bytes())?;
    if !logs.stderr.ends_with('\n') {
        writeln!(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::JsonArgs;
    use crate::test_cluster::Cluster;

    fn args(project: &str, fragment: &str, stderr: bool) -> LogsArgs {
        LogsArgs {
            project: project.into(),
            fragment: fragment.into(),
            stderr,
            stdout: false,
            attempt: None,
            output: JsonArgs::default(),
            follow: false,
            bytes: None,
        }
    }

    async fn logs(addr: &Endpoint, args: &LogsArgs) -> String {
        let mut out = Vec::new();
        assert_eq!(run(args, addr, &mut out).await.unwrap(), Outcome::Ok);
        String::from_utf8(out).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prints_the_chosen_stream() {
        let mut cluster = Cluster::herzog().await;
        let addr = cluster.endpoint.clone();
        // Before any worker: the fragment has not run, so it has no output yet.
        let dir = cluster.inputs([("a.txt", "not read yet\n")]);
        cluster.add("q", dir, "cat").await;
        assert_eq!(logs(&addr, &args("q", "a.txt", false)).await, "");

        cluster.start_worker("w", 2);
        let dir = cluster.inputs([("a.txt", "out line\n"), ("b.txt", "other line\n")]);
        // Each file on stdout, a line naming it on stderr.
        cluster
            .add("p", dir, "sh -c 'cat \"$0\"; echo \"err line of ${0##*/}\" >&2'")
            .await;
        cluster.finish("p").await;
        assert_eq!(logs(&addr, &args("p", "a.txt", false)).await, "out line\n");
        assert_eq!(logs(&addr, &args("p", "1", false)).await, "other line\n");
        assert_eq!(logs(&addr, &args("p", "0", true)).await, "err line of a.txt\n");
        let err = run(&args("p", "zz", false), &addr, &mut Vec::new()).await.unwrap_err();
        assert!(err.to_string().contains("hz fragments p"), "{err}");
        assert_eq!(err.exit_code(), 2, "{err}");
        let err = run(&args("nope", "a.txt", false), &addr, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        cluster.stop().await;
    }

    #[test]
    fn the_stderr_section_is_labelled() {
        let logs = Logs {
            attempt: None,
            stdout_path: None,
            stderr_path: Some("/r/e".into()),
            stdout: String::new(),
            stderr: "oops".into(),
            truncated: false,
            cut: Vec::new(),
            never_ran: None,
        };
        let mut w = Vec::new();
        write_stderr_section(&mut w, &logs).unwrap();
        assert_eq!(String::from_utf8_lossy(&w), "--- stderr (/r/e) ---\noops\n");
    }
}
