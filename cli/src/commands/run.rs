//! `hz run [--host H] [-i] [-t] -- COMMAND ARGS...` (or `hz run NAME ARGS...`): runs a command
//! once on a worker, prints its stdout and stderr here as they come, and exits with its exit
//! status (srun, `ssh host cmd`). Ctrl-C sends SIGINT to its process group, a second Ctrl-C
//! SIGKILL; with `-t` the terminal here is raw and Ctrl-C is a byte the remote terminal turns
//! into SIGINT itself.
//!
//! Output is read as `hz logs -f` reads it (one chunk per call, the next asked only once the
//! last is written), and the worker reads the program's pipes no further ahead of those calls
//! than a window: a slow reader here slows the program, and no byte is cut.

use super::chunks::{ASK_AGAIN, FOLLOW_WAIT_MS};
use crate::Outcome;
use crate::args::JobArgs;
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::ApiError;
use common::job::{Interactive, JobCommand, JobRequest, JobState, TtySize};
use common::output::{AttemptOn, FragmentNow, FragmentOutput, FragmentRead, MAX_READ, Position, Stream};
use std::io::{Read, Write};
use std::time::Duration;

/// How long one call waits for the job's end once its output has ended.
const END_WAIT: Duration = Duration::from_secs(30);
/// How long a job that got SIGPIPE (hz's stdout closed) has to end before it is killed.
const PIPE_GRACE: Duration = Duration::from_secs(5);
/// Bytes of stdin sent per call.
const INPUT_CHUNK: usize = 64 * 1024;

pub(crate) async fn run(args: &JobArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let request = request(args)?;
    let first = Herzog::connect(addr).await?;
    // Started once: never sent again, whatever happens to the connection.
    let started = first.job_start(request).await?;
    let name = started.name;
    let herzog = Redialing::new(addr, first);
    // Raw mode only when the caller is at a terminal; restored when this returns.
    let raw = if args.tty { RawMode::enter() } else { None };
    // Ended when this returns, so no call of theirs keeps the connection open past it.
    let mut helpers = Vec::new();
    if args.interactive || args.tty {
        let (h, n) = (herzog.clone(), name.clone());
        helpers.push(tokio::spawn(async move { forward_stdin(&h, &n).await }));
    }
    if raw.is_some() {
        let (h, n) = (herzog.clone(), name.clone());
        helpers.push(tokio::spawn(async move { forward_resizes(&h, &n).await }));
    }
    let outcome = follow_to_end(&herzog, &name, args.tty, raw.is_some(), out).await;
    for helper in helpers {
        helper.abort();
        let _ = helper.await;
    }
    drop(raw);
    outcome
}

/// Prints the job's output until it has ended and answers its exit status. Ctrl-C (unless the
/// terminal is raw), SIGTERM and SIGHUP are passed on to the job, as ssh does with its
/// connection's end; stdout closed (`hz run ... | head`) sends it SIGPIPE.
async fn follow_to_end(
    herzog: &Redialing,
    name: &str,
    tty: bool,
    raw: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = if tty {
        vec![Stream::Stdout]
    } else {
        vec![Stream::Stdout, Stream::Stderr]
    };
    let mut stderr = std::io::stderr();
    let follow = async {
        let mut sinks: Vec<&mut dyn Write> = vec![out, &mut stderr];
        let followers = streams
            .iter()
            .zip(sinks.iter_mut())
            .map(|(&stream, sink)| follow(herzog, name, stream, &mut **sink));
        futures::future::try_join_all(followers).await
    };
    tokio::pin!(follow);
    let failed = |e: std::io::Error| CliError::Output(std::io::Error::other(format!("failed to handle signals: {e}")));
    let mut hangups = signal(SignalKind::hangup()).map_err(failed)?;
    let mut terms = signal(SignalKind::terminate()).map_err(failed)?;
    // One stream for the whole run, as for the others: a `ctrl_c()` made anew each time round
    // the loop missed a Ctrl-C that came while the first one's note was being printed.
    let mut ctrl_cs = signal(SignalKind::interrupt()).map_err(failed)?;
    let mut interrupts = 0;
    let signal_job = |signal: i32, label: &'static str| async move {
        match herzog.call(|h| async move { h.job_signal(name, signal).await }).await {
            Ok(()) => note!("hz: sent {label} to {name}"),
            Err(e) => note!("hz: could not signal {name}: {e}"),
        }
    };
    loop {
        tokio::select! {
            done = &mut follow => match done {
                Ok(_) => break,
                // Nobody reads what it writes any more: it gets SIGPIPE, as a local
                // pipeline's writer would, and hz goes on to its end quietly.
                // One that ignores SIGPIPE would wait for a reader for ever: SIGKILL after a
                // grace.
                Err(e) if e.is_broken_pipe() => {
                    let _ = herzog.call(|h| async move { h.job_signal(name, libc::SIGPIPE).await }).await;
                    let state = match tokio::time::timeout(PIPE_GRACE, ended(herzog, name)).await {
                        Ok(state) => state?,
                        Err(_) => {
                            let _ = herzog.call(|h| async move { h.job_signal(name, libc::SIGKILL).await }).await;
                            ended(herzog, name).await?
                        }
                    };
                    return Ok(Outcome::Exit(state.exit_code().unwrap_or(255)));
                }
                Err(e) => {
                    if gone(&e) {
                        note!("hz: lost herzog while following {name}, which may still run: `hz logs {name} 0 -f` follows it, `hz fragments {name}` says how it ended");
                    }
                    return Err(e);
                }
            },
            _ = ctrl_cs.recv(), if !raw => {
                interrupts += 1;
                if interrupts == 1 {
                    signal_job(libc::SIGINT, "SIGINT (Ctrl-C again: SIGKILL)").await;
                } else {
                    signal_job(libc::SIGKILL, "SIGKILL").await;
                }
            }
            _ = hangups.recv() => signal_job(libc::SIGHUP, "SIGHUP").await,
            _ = terms.recv() => signal_job(libc::SIGTERM, "SIGTERM").await,
        }
    }
    let state = match ended(herzog, name).await {
        Ok(state) => state,
        Err(e) => {
            note!(
                "hz: lost herzog while following {name}, which may still run: `hz logs {name} 0 -f` follows it, `hz fragments {name}` says how it ended"
            );
            return Err(e);
        }
    };
    Ok(Outcome::Exit(report(name, &state)))
}

/// The request `args` make, checked here where that can be done.
fn request(args: &JobArgs) -> Result<JobRequest, CliError> {
    // A word before `--` that looks like an option is one hz run does not have.
    if let Some(flag) = args.named.first().filter(|w| w.starts_with('-')) {
        return Err(CliError::Usage(format!(
            "hz run has no option '{flag}': its options come first, then `--` and the command (`hz run --help`)"
        )));
    }
    let command = match (args.named.is_empty(), args.argv.is_empty()) {
        (true, false) => JobCommand::Argv(args.argv.clone()),
        (false, true) => JobCommand::Named {
            name: args.named[0].clone(),
            args: args.named[1..].to_vec(),
        },
        (true, true) => {
            return Err(CliError::Usage(
                "say what to run: `hz run -- COMMAND ARGS...`, or `hz run NAME` for a named command (`hz commands`)"
                    .into(),
            ));
        }
        (false, false) => {
            return Err(CliError::Usage(format!(
                "give either a named command or a command after `--`, not both (got '{}' and '{}')",
                args.named.join(" "),
                args.argv.join(" ")
            )));
        }
    };
    let from = std::env::current_dir().map_err(CliError::Cwd)?;
    let cwd = args.cwd.as_ref().map(|dir| from.join(dir));
    let tty = args
        .tty
        .then(|| window_size().unwrap_or(TtySize { rows: 24, cols: 80 }));
    let request = JobRequest {
        command,
        host: args.host.clone(),
        env: args.env.iter().cloned().collect(),
        cwd,
        from,
        interactive: Interactive {
            stdin: args.interactive || args.tty,
            tty,
        },
        requeue: args.requeue,
    };
    common::job::check(&request)?;
    Ok(request)
}

/// Prints one stream of the job to `sink` until its attempt has ended for good; follows the
/// next attempt when a lost worker sent the job back to the queue (`--requeue`).
async fn follow(herzog: &Redialing, name: &str, stream: Stream, sink: &mut dyn Write) -> Result<(), CliError> {
    let mut attempt: Option<AttemptOn> = None;
    let mut at = Position::At(0);
    let mut told_waiting = false;
    loop {
        let read = FragmentRead {
            project: name.to_string(),
            fragment: "0".to_string(),
            attempt: attempt.clone(),
            stream,
            position: at,
            max: MAX_READ,
            wait_ms: FOLLOW_WAIT_MS,
        };
        let answer = match herzog
            .call(|h| {
                let read = read.clone();
                async move { h.fragment_output(read).await }
            })
            .await
        {
            Ok(answer) => answer,
            // Its worker cannot be reached: it comes back, or herzog declares it lost.
            Err(CliError::Api(ApiError::HostUnreachable { .. })) => {
                tokio::time::sleep(ASK_AGAIN).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match answer {
            FragmentOutput::Idle { now } => match now {
                FragmentNow::Pending | FragmentNow::Running { .. } => {
                    if !told_waiting && stream == Stream::Stdout {
                        note!("hz: {name} waits for a free slot");
                        told_waiting = true;
                    }
                    tokio::time::sleep(ASK_AGAIN).await;
                }
                // It ended before this first read: read what it wrote from its end.
                FragmentNow::Succeeded { attempt: a } | FragmentNow::Failed { attempt: Some(a), .. }
                    if attempt.is_none() =>
                {
                    let worker = match herzog
                        .call(|h| async move { h.job_state(name, Duration::ZERO).await })
                        .await?
                    {
                        JobState::Exited { worker, .. } => worker,
                        _ => String::new(),
                    };
                    attempt = Some(AttemptOn { attempt: a, worker });
                }
                FragmentNow::Succeeded { .. } | FragmentNow::Failed { .. } => return Ok(()),
            },
            FragmentOutput::Starting { attempt: on } => {
                attempt = Some(on);
                tokio::time::sleep(ASK_AGAIN).await;
            }
            FragmentOutput::Chunk {
                attempt: on,
                chunk,
                now,
            } => {
                sink.write_all(&chunk.bytes)?;
                sink.flush()?;
                let runs = matches!(&now, FragmentNow::Running { attempt: a, .. } if *a == on.attempt);
                if chunk.end && !runs {
                    if matches!(now, FragmentNow::Pending | FragmentNow::Running { .. }) {
                        if stream == Stream::Stdout {
                            note!("hz: {name}'s worker {} was lost: it runs again (--requeue)", on.worker);
                        }
                        attempt = None;
                        at = Position::At(0);
                        continue;
                    }
                    return Ok(());
                }
                attempt = Some(on);
                at = Position::At(chunk.next_offset);
            }
        }
    }
}

/// How the job ended, once herzog has recorded it.
async fn ended(herzog: &Redialing, name: &str) -> Result<JobState, CliError> {
    loop {
        match herzog
            .call(|h| async move { h.job_state(name, END_WAIT).await })
            .await?
        {
            JobState::Waiting | JobState::Running { .. } => {}
            state => return Ok(state),
        }
    }
}

/// Says on stderr how the job ended when it did not exit by itself; returns hz's exit code.
fn report(name: &str, state: &JobState) -> u8 {
    match state {
        JobState::Exited {
            exit: common::wire::Exit::Signal(signal),
            worker,
        } => note!("hz: {name} was killed by signal {signal} on {worker}"),
        JobState::Exited {
            exit: common::wire::Exit::StartFailed(why),
            worker,
        } => note!("hz: {name} could not start on {worker}: {why}"),
        JobState::Ended { reason } => note!("hz: {name} ended without an exit status: {reason}"),
        JobState::Exited { .. } | JobState::Waiting | JobState::Running { .. } => {}
    }
    state.exit_code().unwrap_or(255)
}

/// Sends this process's stdin to the job once its program runs, then closes the job's.
async fn forward_stdin(herzog: &Redialing, name: &str) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    // A thread of its own: reading stdin blocks, and an abandoned read must not hold the
    // runtime's shutdown.
    let reader = std::thread::Builder::new().name("hz-stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; INPUT_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    if reader.is_err() {
        note!("hz: could not read stdin: no thread for it");
        return;
    }
    if !runs(herzog, name).await {
        return;
    }
    let mut offset = 0u64;
    loop {
        let chunk = rx.recv().await;
        let eof = chunk.is_none();
        let bytes = chunk.unwrap_or_default();
        let len = bytes.len() as u64;
        let sent = herzog
            .call(|h| {
                let bytes = bytes.clone();
                async move { h.job_input(name, offset, bytes, eof).await }
            })
            .await;
        if let Err(e) = sent {
            // The program closed its stdin or ended: what is left is not wanted.
            tracing::debug!(error = %e, "stdin forwarding ended");
            return;
        }
        offset += len;
        if eof {
            return;
        }
    }
}

/// Waits until the job's program has started; false if it ended first.
async fn runs(herzog: &Redialing, name: &str) -> bool {
    loop {
        match herzog
            .call(|h| async move { h.job_state(name, Duration::ZERO).await })
            .await
        {
            Ok(JobState::Running { started: true, .. }) => return true,
            Ok(JobState::Waiting | JobState::Running { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) | Err(_) => return false,
        }
    }
}

/// Tells the job's terminal each new size of this one.
async fn forward_resizes(herzog: &Redialing, name: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        if let Some(size) = window_size() {
            let _ = herzog.call(|h| async move { h.job_resize(name, size).await }).await;
        }
    }
}

/// herzog for the whole of a job: a call whose connection broke (herzog restarted, or is
/// restarting) is made again on a new connection, for up to [`REDIAL_FOR`]. Every call made
/// through it may be repeated: reads name their offset, stdin writes theirs, a state is a
/// question; the job's start is not made through it.
#[derive(Clone)]
struct Redialing {
    addr: Endpoint,
    herzog: std::sync::Arc<tokio::sync::Mutex<Herzog>>,
}

/// How long hz run waits for herzog to come back before it gives up on following the job.
const REDIAL_FOR: Duration = Duration::from_secs(120);

impl Redialing {
    fn new(addr: &Endpoint, herzog: Herzog) -> Redialing {
        Redialing {
            addr: addr.clone(),
            herzog: std::sync::Arc::new(tokio::sync::Mutex::new(herzog)),
        }
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: Fn(Herzog) -> Fut,
        Fut: std::future::Future<Output = Result<T, CliError>>,
    {
        let deadline = tokio::time::Instant::now() + REDIAL_FOR;
        let mut told = false;
        loop {
            let herzog = self.herzog.lock().await.clone();
            match f(herzog).await {
                Err(e) if gone(&e) && tokio::time::Instant::now() < deadline => {
                    if !told {
                        note!("hz: the connection to herzog broke (is it restarting?): dialling again");
                        told = true;
                    }
                    tokio::time::sleep(ASK_AGAIN).await;
                    if let Ok(fresh) = Herzog::connect(&self.addr).await {
                        *self.herzog.lock().await = fresh;
                    }
                }
                done => return done,
            }
        }
    }
}

/// Whether `e` says herzog went away (its connection broke, it is shutting down or cannot be
/// reached), rather than that it refused the call.
fn gone(e: &CliError) -> bool {
    use tarpc::client::RpcError;
    matches!(
        e,
        CliError::Rpc {
            source: RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_),
            ..
        } | CliError::Api(ApiError::ShuttingDown)
    )
}

/// This terminal's size, if stdin is one.
fn window_size() -> Option<TtySize> {
    // SAFETY: TIOCGWINSZ writes a winsize to a valid pointer.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd 0 is ours to query.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some(TtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// This terminal in raw mode (no echo, no line editing, no signals from keys: the remote
/// terminal does all that), restored when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode on stdin, if it is a terminal.
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parsed(line: &[&str]) -> JobArgs {
        let cli = crate::args::Cli::try_parse_from(line).expect("parses");
        match cli.command {
            crate::args::Command::Run(a) => a,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn after_dashes_a_command_runs_as_given_and_before_them_a_name() {
        let a = parsed(&["hz", "run", "--host", "w1", "--", "ls", "-l", "a b"]);
        let r = request(&a).expect("valid");
        assert_eq!(
            r.command,
            JobCommand::Argv(vec!["ls".into(), "-l".into(), "a b".into()])
        );
        assert_eq!(r.host.as_deref(), Some("w1"));
        assert!(r.from.is_absolute() && r.cwd.is_none());
        let a = parsed(&["hz", "run", "-i", "backup", "--fast", "x"]);
        let r = request(&a).expect("valid");
        assert_eq!(
            r.command,
            JobCommand::Named {
                name: "backup".into(),
                args: vec!["--fast".into(), "x".into()]
            }
        );
        assert!(r.interactive.stdin && r.interactive.tty.is_none());
        assert!(matches!(request(&parsed(&["hz", "run"])), Err(CliError::Usage(_))));
        let bogus = request(&parsed(&["hz", "run", "--bogus", "x"]));
        assert!(
            matches!(&bogus, Err(CliError::Usage(m)) if m.contains("no option '--bogus'")),
            "{bogus:?}"
        );
    }

    #[test]
    fn a_tty_implies_stdin_and_has_a_size() {
        let r = request(&parsed(&["hz", "run", "-t", "--", "sh"])).expect("valid");
        assert!(r.interactive.stdin);
        assert!(r.interactive.tty.is_some_and(|s| s.rows > 0 && s.cols > 0));
    }
}
