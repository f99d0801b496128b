//! `hz shell` through a real pty against real daemons: completion asks herzog for the names,
//! history survives a restart of the shell, Ctrl-C stops a running `tail -f` and not the
//! shell, the connection is dialled again after herzog restarted, and `shutdown` stops
//! herzog (its workers' services keep running) or one worker's kinski.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test shell -- --nocapture
//! ```

use expectrl::process::unix::WaitStatus;
use expectrl::{Eof, Expect, Session};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::services::{cluster, running, services};
use tests::{Cluster, STARTUP, alive, bin, bundle};

/// How long a line gets to answer.
const ANSWER: Duration = Duration::from_secs(20);
/// A fresh prompt: rustyline draws it on an empty line, then puts the cursor back after it
/// (a redraw of a line being edited has the line's text after the prompt instead).
const PROMPT: &str = "hz> \r";
const UP: &str = "\x1b[A";

type Shell = expectrl::session::OsSession;

/// `hz --herzog ADDR shell` on a pty, its history under `state`; returns once it prompts.
fn shell(cluster: &Cluster, state: &Path) -> Shell {
    shell_with(cluster, state, &["shell"])
}

/// `hz --herzog ADDR ARGS...` on a pty, as [`shell`].
fn shell_with(cluster: &Cluster, state: &Path, args: &[&str]) -> Shell {
    let mut cmd = Command::new(bin("hz"));
    cmd.args(["--herzog", cluster.addr()])
        .args(args)
        .env("HERZOG_TLS", bundle(cluster.dir(), "admin", "admin"))
        .env("XDG_STATE_HOME", state)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .env_remove("HERZOG_ADDR")
        .env_remove("HERZOG_CONFIG")
        .current_dir(cluster.dir());
    let mut session = Session::spawn(cmd).expect("failed to start hz shell on a pty");
    session.set_expect_timeout(Some(ANSWER));
    session.expect(PROMPT).expect("hz shell prompts");
    session
}

/// Sends `keys` (a line ends with "\r", as Enter sends it), and returns what the shell
/// printed until its next prompt.
fn line(session: &mut Shell, keys: &str) -> String {
    session.send(keys).expect("failed to type into the pty");
    let seen = session
        .expect(PROMPT)
        .unwrap_or_else(|e| panic!("no prompt after {keys:?}: {e}"));
    String::from_utf8_lossy(seen.before()).into_owned()
}

/// Waits until the shell has exited and returns its exit code.
fn exited(session: &mut Shell) -> i32 {
    session.expect(Eof).expect("hz shell ends its output");
    match session.get_process_mut().wait().expect("failed to reap hz shell") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("hz shell ended with {other:?}"),
    }
}

/// The WARN lines of a daemon's log, but the one that says tests run as root.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") && !l.contains("programs run as root"))
        .collect()
}

/// Two services: `ticker` prints a line every 200 ms, `other` stays up quietly.
fn ticker_and_other(cluster: &Cluster) {
    let dir = cluster.dir().display().to_string();
    services(
        cluster,
        &format!(
            r#"
[services.ticker]
command = "/bin/sh -c 'i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done'"
env = {{ CLUSTER = "{dir}" }}
startsecs = 0
[services.other]
command = "{dir}/serve.sh"
env = {{ CLUSTER = "{dir}" }}
startsecs = 0
"#
        ),
    );
    cluster.hz_ok(&["reload"]);
    running(cluster, &["ticker:0", "other:0"]);
}

#[test]
fn completion_history_errors_ctrl_c_and_a_herzog_restart() {
    let mut cluster = cluster();
    ticker_and_other(&cluster);
    let state = tempfile::tempdir().unwrap();
    let mut sh = shell(&cluster, state.path());

    // An unknown command says so, and the shell goes on; `help` lists what it runs.
    let said = line(&mut sh, "frobnicate now\r");
    assert!(said.contains("unknown command 'frobnicate'"), "{said}");
    let said = line(&mut sh, "help\r");
    assert!(said.contains("shutdown") && said.contains("quit"), "{said}");
    // Ctrl-C at the prompt cancels the line being typed.
    let said = line(&mut sh, "stop all\x03");
    assert!(!said.contains("STOPPED"), "{said}");

    // Ctrl-C stops `tail -f`, not the shell, which answers the next line.
    sh.send("tail ticker -f\r").unwrap();
    sh.expect("tick ").expect("tail -f prints the ticker's lines");
    sh.send("\x03").unwrap();
    sh.expect(PROMPT).expect("the prompt is back after Ctrl-C");
    let said = line(&mut sh, "status\r");
    assert!(said.contains("ticker:0") && said.contains("RUNNING"), "{said}");

    // herzog dies under a running command: the shell dials again, once, says why that
    // failed, and goes on.
    sh.send("tail ticker -f\r").unwrap();
    sh.expect("tick ").expect("tail -f prints the ticker's lines");
    cluster.kill_herzog();
    let said = String::from_utf8_lossy(sh.expect(PROMPT).expect("the prompt is back").before()).into_owned();
    assert!(
        said.contains("dialling again") && said.contains(cluster.addr()),
        "{said}"
    );
    cluster.start_herzog();
    cluster.wait_workers_connected(STARTUP);
    let said = line(&mut sh, "status ticker\r");
    assert!(said.contains("ticker:0"), "{said}");

    // herzog restarts between lines: the next line dials it again.
    cluster.restart_herzog();
    let said = line(&mut sh, "status other\r");
    assert!(said.contains("other:0") && !said.contains("ticker:0"), "{said}");

    // Tab completes a service's name from herzog's: `tic` alone names nothing.
    let said = line(&mut sh, "status tic\t\r");
    assert!(said.contains("ticker:0") && !said.contains("other:0"), "{said}");
    sh.send("\x04").unwrap();
    assert_eq!(exited(&mut sh), 0, "Ctrl-D quits");

    // The history is on disk, and a new shell (`hz` alone on a terminal opens one) recalls it
    // with the Up arrow.
    let history = std::fs::read_to_string(state.path().join("herzog/history")).expect("the history file");
    assert!(history.lines().any(|l| l == "status ticker"), "{history}");
    let mut sh = shell_with(&cluster, state.path(), &[]);
    let said = line(&mut sh, &format!("{UP}\r"));
    assert!(said.contains("ticker:0") && !said.contains("other:0"), "{said}");
    sh.send("quit\r").unwrap();
    assert_eq!(exited(&mut sh), 0, "quit quits");
    // The shells' connections came and went cleanly.
    assert_eq!(warnings(&cluster.herzog_log()), Vec::<&str>::new());
}

#[test]
fn shutdown_stops_a_worker_or_herzog_cleanly() {
    let mut cluster = cluster();
    ticker_and_other(&cluster);
    let pids = running(&cluster, &["ticker:0", "other:0"]);
    // Outside the shell, without a terminal, it does nothing without --yes.
    let said = cluster.hz_fails(&["shutdown"], 2);
    assert!(said.contains("--yes"), "{said}");

    let state = tempfile::tempdir().unwrap();
    let mut sh = shell(&cluster, state.path());
    let said = line(&mut sh, "shutdown nobody --yes\r");
    assert!(said.contains("no worker named 'nobody'"), "{said}");

    // A worker (the one without the ticker): asked first, then its kinski stops as on
    // SIGTERM, and with it what it ran.
    let status: Vec<common::instances::InstanceStatus> = cluster.hz_json(&["status"]);
    let host_of = |instance: &str| {
        let i = status.iter().find(|i| i.instance == instance).expect("listed");
        i.host.clone().expect("placed")
    };
    let ticker_host = host_of("ticker:0");
    let target = ["euclid", "newton"]
        .into_iter()
        .find(|w| *w != ticker_host)
        .expect("two workers");
    sh.send(format!("shutdown {target}\r")).unwrap();
    sh.expect("[y/N]").expect("shutdown asks first");
    let said = line(&mut sh, "y\r");
    assert!(said.contains(&format!("worker '{target}' is shutting down")), "{said}");
    let (exit, log) = cluster.worker_exit(target, STARTUP, "after hz shutdown WORKER");
    assert_eq!(exit.code(), Some(0), "kinski {target}: {exit}\n{log}");
    assert!(log.contains("herzog asked this worker to shut down"), "{log}");
    assert_eq!(
        warnings(&log),
        Vec::<&str>::new(),
        "a clean shutdown warns of nothing:\n{log}"
    );
    if host_of("other:0") == target {
        assert!(!alive(pids["other:0"]), "other:0 stopped with its worker");
    }

    // herzog: a no changes nothing; a yes stops it, and what runs on the workers goes on.
    sh.send("shutdown\r").unwrap();
    sh.expect("[y/N]").expect("shutdown asks first");
    let said = line(&mut sh, "n\r");
    assert!(said.contains("nothing was shut down"), "{said}");
    sh.send("shutdown\r").unwrap();
    sh.expect("[y/N]").expect("shutdown asks first");
    let said = line(&mut sh, "y\r");
    assert!(said.contains("herzog is shutting down"), "{said}");
    let (exit, log) = cluster.herzog_exit(STARTUP, "after hz shutdown");
    assert_eq!(exit.code(), Some(0), "herzog: {exit}\n{log}");
    assert_eq!(
        warnings(&log),
        Vec::<&str>::new(),
        "a clean shutdown warns of nothing:\n{log}"
    );
    assert!(alive(pids["ticker:0"]), "ticker:0 keeps running without herzog");

    // The shell says herzog is gone, and goes on.
    let said = line(&mut sh, "status\r");
    assert!(said.contains("hz: ") && said.contains(cluster.addr()), "{said}");
    sh.send("exit\r").unwrap();
    assert_eq!(exited(&mut sh), 0);
}

#[test]
fn run_streams_a_job_and_ctrl_c_signals_it_not_the_shell() {
    let cluster = cluster();
    let state = tempfile::tempdir().unwrap();
    let mut sh = shell(&cluster, state.path());
    // What the job prints, not the echo of the line (which holds the unexpanded `$((6*7))`).
    let said = line(&mut sh, "run -- sh -c 'echo job-$((6*7))'\r");
    assert!(said.contains("job-42"), "{said}");
    // Ctrl-C is the job's SIGINT: it ends, the shell goes on, and nothing runs it again.
    sh.send("run -- sh -c 'echo wait-$((6*7)); exec sleep 300'\r").unwrap();
    sh.expect("wait-42").expect("the job prints");
    sh.send("\x03").unwrap();
    let said = String::from_utf8_lossy(sh.expect(PROMPT).expect("the prompt is back").before()).into_owned();
    assert!(
        said.contains("sent SIGINT") && said.contains("killed by signal 2"),
        "{said}"
    );
    let said = line(&mut sh, "active\r");
    assert!(!said.contains("run:"), "{said}");
    sh.send("quit\r").unwrap();
    assert_eq!(exited(&mut sh), 0);
}
