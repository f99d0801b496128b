//! Real programs through Process: exit, signals, stop and grace, the group's cleanup, output
//! files and taps, CPU time and peak RSS, start failures.

use super::*;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use std::collections::BTreeMap;

/// Bounds every wait, so a broken runner fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(30);

fn attempt(dir: &Path, argv: &[&str]) -> StartAttempt {
    StartAttempt {
        requests: Default::default(),
        attempt: AttemptId(7),
        project: "proj".into(),
        fragment: "frag-1".into(),
        input: dir.join("input/frag-1"),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: dir.to_path_buf(),
        env: BTreeMap::from([("EXTRA".to_string(), "extra value".to_string())]),
        stdout: dir.join("logs/7.out"),
        stderr: dir.join("logs/7.err"),
        output_dir: dir.join("out/7"),
        grace_ms: 1000,
        scratch: None,
        max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
        uploader_uid: None,
        settings: Default::default(),
        interactive: None,
    }
}

mod limits;

/// `sh -c script` in `dir`: scripts name their files relative to it, so no path is ever
/// part of a script's text.
fn sh(dir: &Path, script: &str) -> StartAttempt {
    attempt(dir, &["sh", "-c", script])
}

async fn run(start: &StartAttempt) -> Finished {
    let process = Process::spawn(start).expect("spawn");
    tokio::time::timeout(LIMIT, process.wait())
        .await
        .expect("wait timed out")
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Waits for a script to write a whole line to `path`; polling is the only way to watch
/// another process's file.
async fn line_in(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        assert!(Instant::now() < deadline, "{} was not written", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is dead within 5 s. SIGKILL is delivered asynchronously, and an orphan
/// stays a zombie until init reaps it, so a zombie counts as dead.
async fn dies(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(") ")
            && rest.starts_with('Z')
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn exit_zero_captures_output_and_environment() {
    let dir = tempdir();
    let start = sh(
        dir.path(),
        r#"echo "$HERZOG_PROJECT|$HERZOG_FRAGMENT|$HERZOG_ATTEMPT|$HERZOG_INPUT|$HERZOG_OUTPUT_DIR|$EXTRA|$(pwd)"
           test -d "$HERZOG_OUTPUT_DIR" && echo output-dir-exists
           cat && echo stdin-empty
           echo to-stderr >&2"#,
    );
    let finished = run(&start).await;
    assert_eq!(finished.exit, Exit::Code(0));
    let stdout = std::fs::read_to_string(&start.stdout).expect("stdout");
    let d = dir.path().display();
    assert_eq!(
        stdout,
        format!("proj|frag-1|7|{d}/input/frag-1|{d}/out/7|extra value|{d}\noutput-dir-exists\nstdin-empty\n")
    );
    assert_eq!(std::fs::read_to_string(&start.stderr).expect("stderr"), "to-stderr\n");
}

#[tokio::test]
async fn exit_code_is_reported_and_old_output_truncated() {
    let dir = tempdir();
    let start = sh(dir.path(), "echo new; exit 3");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    std::fs::write(&start.stdout, "an old, much longer output\n").expect("write");
    let finished = run(&start).await;
    assert_eq!(finished.exit, Exit::Code(3));
    assert_eq!(std::fs::read_to_string(&start.stdout).expect("stdout"), "new\n");
}

#[tokio::test]
async fn an_empty_stream_leaves_no_file_and_no_stale_one() {
    let dir = tempdir();
    let start = sh(dir.path(), "echo only-stdout");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    std::fs::write(&start.stderr, "left by an earlier run\n").expect("write");
    assert_eq!(run(&start).await.exit, Exit::Code(0));
    assert_eq!(std::fs::read_to_string(&start.stdout).expect("stdout"), "only-stdout\n");
    assert!(!start.stderr.exists(), "an empty stderr must leave no file");

    let quiet = attempt(dir.path(), &["/bin/true"]);
    std::fs::remove_file(&quiet.stdout).expect("rm");
    assert_eq!(run(&quiet).await.exit, Exit::Code(0));
    assert!(!quiet.stdout.exists() && !quiet.stderr.exists());
}

#[tokio::test]
async fn whatever_is_planted_at_a_log_path_is_replaced_never_written_through() {
    let dir = tempdir();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "secret\n").expect("write the victim");
    std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
    let start = sh(dir.path(), "echo PWNED; echo PWNED >&2");
    type Plant<'a> = &'a dyn Fn(&Path);
    let plants: [(&str, Plant); 3] = [
        ("a symbolic link", &|at| {
            std::os::unix::fs::symlink(&victim, at).expect("symlink")
        }),
        ("a hard link", &|at| std::fs::hard_link(&victim, at).expect("hard link")),
        ("a FIFO", &|at| {
            let path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).expect("no NUL");
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        }),
    ];
    for (what, plant) in plants {
        for log in [&start.stdout, &start.stderr] {
            let _ = std::fs::remove_file(log);
            plant(log);
        }
        assert_eq!(run(&start).await.exit, Exit::Code(0), "{what}");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret\n", "{what}");
        for log in [&start.stdout, &start.stderr] {
            let meta = std::fs::symlink_metadata(log).expect("the log");
            assert!(meta.is_file(), "{what}: {} is a file of kinski's now", log.display());
            assert_eq!(std::fs::read_to_string(log).expect("log"), "PWNED\n", "{what}");
        }
    }
}

#[tokio::test]
async fn output_larger_than_a_pipe_is_copied_whole() {
    let dir = tempdir();
    // 4 MiB on stdout and 1 MiB on stderr: the program blocks unless both are read while
    // it runs.
    let start = sh(
        dir.path(),
        "head -c 4194304 /dev/zero; head -c 1048576 /dev/zero >&2; echo end",
    );
    assert_eq!(run(&start).await.exit, Exit::Code(0));
    assert_eq!(std::fs::metadata(&start.stdout).expect("stdout").len(), 4_194_304 + 4);
    assert_eq!(std::fs::metadata(&start.stderr).expect("stderr").len(), 1_048_576);
}

#[tokio::test]
async fn an_escaped_descendant_does_not_hold_the_completion() {
    let dir = tempdir();
    // The descendant leaves the group and keeps the pipes open; the attempt still ends
    // with its leader (`run` fails the test after LIMIT).
    let start = sh(dir.path(), "setsid sleep 60 & echo leader-done");
    assert_eq!(run(&start).await.exit, Exit::Code(0));
    assert_eq!(std::fs::read_to_string(&start.stdout).expect("stdout"), "leader-done\n");
}

#[tokio::test]
async fn shared_stdout_and_stderr_file_keeps_both() {
    let dir = tempdir();
    let mut start = sh(dir.path(), "echo one; echo two >&2; echo three");
    start.stderr = start.stdout.clone();
    assert_eq!(run(&start).await.exit, Exit::Code(0));
    assert_eq!(
        std::fs::read_to_string(&start.stdout).expect("stdout"),
        "one\ntwo\nthree\n"
    );
}

#[tokio::test]
async fn killed_by_a_signal() {
    let dir = tempdir();
    let finished = run(&sh(dir.path(), "kill -9 $$")).await;
    assert_eq!(finished.exit, Exit::Signal(9));
}

#[tokio::test]
async fn peak_rss_is_measured_where_it_is_the_programs_own() {
    let dir = tempdir();
    let big = run(&attempt(
        dir.path(),
        &["python3", "-c", "b = b'x' * (200 * 1024 * 1024)"],
    ))
    .await;
    assert_eq!(big.exit, Exit::Code(0));
    assert!(big.peak_rss_kb > 200_000, "{big:?}");
    // At exec the kernel folds the spawner's peak RSS into the child's (the child shares its
    // memory until then): for a program smaller than this process, wait4 says only "at most
    // this process's", so it is not given as the program's.
    let small = run(&attempt(dir.path(), &["true"])).await;
    assert_eq!(small.exit, Exit::Code(0));
    assert_eq!(small.peak_rss_kb, 0, "not measured: {small:?}");
}

#[tokio::test]
async fn cpu_time_is_measured() {
    let dir = tempdir();
    let finished = run(&sh(dir.path(), "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")).await;
    assert_eq!(finished.exit, Exit::Code(0));
    assert!(finished.cpu_ms > 100, "{finished:?}");
    assert!(finished.wall_ms >= finished.cpu_ms / 2, "{finished:?}");
}

#[tokio::test]
async fn stop_terminates_the_whole_group() {
    let dir = tempdir();
    let pid_file = dir.path().join("grandchild");
    let start = sh(dir.path(), "sleep 1000 & echo $! > grandchild; wait");
    let process = Process::spawn(&start).expect("spawn");
    let stopper = process.stopper();
    let waiter = tokio::spawn(process.wait());
    let grandchild: i32 = line_in(&pid_file).await.parse().expect("pid");

    let stopping = Instant::now();
    stopper.stop(Duration::from_secs(10)).await;
    let finished = tokio::time::timeout(LIMIT, waiter)
        .await
        .expect("wait timed out")
        .expect("join");
    assert_eq!(finished.exit, Exit::Signal(libc::SIGTERM));
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert!(dies(grandchild).await, "grandchild {grandchild} survived");

    // Once reaped, stopping again must not signal the (possibly reused) pgid.
    stopper.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn settings_discard_streams_set_the_umask_and_pick_the_stop_signal() {
    use common::run_settings::{Signal, Sink};
    let dir = tempdir();
    let made = dir.path().join("made");
    let mut start = sh(dir.path(), "echo out; echo err >&2; : > made; umask");
    start.settings.stdout = Sink::Discard;
    start.settings.umask = Some(0o077);
    assert_eq!(run(&start).await.exit, Exit::Code(0));
    assert!(!start.stdout.exists(), "a discarded stdout leaves no log");
    assert_eq!(std::fs::read_to_string(&start.stderr).expect("stderr"), "err\n");
    let mode = std::fs::metadata(&made).expect("made").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);

    // Another directory: the first program's logs lie at the same names.
    let dir = tempdir();
    let ready = dir.path().join("ready");
    let mut trapped = sh(
        dir.path(),
        r#"trap 'echo got-usr1; exit 7' USR1; echo > ready; while :; do sleep 0.05; done"#,
    );
    trapped.settings.stop_signal = Some(Signal::parse("USR1").expect("a signal"));
    trapped.settings.stderr = Sink::Discard;
    let process = Process::spawn(&trapped).expect("spawn");
    let stopper = process.stopper();
    let waiter = tokio::spawn(process.wait());
    line_in(&ready).await;
    stopper.stop(Duration::from_secs(20)).await;
    let finished = tokio::time::timeout(LIMIT, waiter).await.expect("wait").expect("join");
    assert_eq!(finished.exit, Exit::Code(7));
    assert_eq!(std::fs::read_to_string(&trapped.stdout).expect("stdout"), "got-usr1\n");
    assert!(!trapped.stderr.exists());
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let dir = tempdir();
    let ready = dir.path().join("ready");
    let start = sh(
        dir.path(),
        r#"trap "" TERM; echo ready > ready; while :; do sleep 0.1; done"#,
    );
    let process = Process::spawn(&start).expect("spawn");
    let stopper = process.stopper();
    let waiter = tokio::spawn(process.wait());
    line_in(&ready).await;

    let stopping = Instant::now();
    let grace = Duration::from_millis(300);
    // Two concurrent stops behave like one.
    tokio::join!(stopper.stop(grace), stopper.stop(grace));
    assert!(stopping.elapsed() >= grace);
    let finished = tokio::time::timeout(LIMIT, waiter)
        .await
        .expect("wait timed out")
        .expect("join");
    assert_eq!(finished.exit, Exit::Signal(libc::SIGKILL));
}

#[tokio::test]
async fn leader_exit_kills_what_it_left_behind() {
    let dir = tempdir();
    let pid_file = dir.path().join("grandchild");
    let start = sh(dir.path(), "sleep 1000 & echo $! > grandchild");
    let finished = run(&start).await;
    assert_eq!(finished.exit, Exit::Code(0));
    let grandchild: i32 = line_in(&pid_file).await.parse().expect("pid");
    assert!(dies(grandchild).await, "grandchild {grandchild} survived");
}

#[tokio::test]
async fn a_missing_program_is_a_start_failure() {
    let dir = tempdir();
    for program in ["/nonexistent/herzog-no-such-program", "herzog-no-such-program"] {
        let start = attempt(dir.path(), &[program, "arg"]);
        let err = Process::spawn(&start).expect_err("spawn must fail");
        assert!(matches!(err, SpawnError::Start { .. }), "{err:?}");
        let why = err.to_string();
        assert!(why.contains(program), "{why}");

        let completion = start_failed(&start, why.clone());
        assert_eq!(completion.attempt, start.attempt);
        assert_eq!(completion.exit, Exit::StartFailed(why));
        assert_eq!(
            (completion.wall_ms, completion.cpu_ms, completion.peak_rss_kb),
            (0, 0, 0)
        );
    }
}

#[tokio::test]
async fn a_script_whose_interpreter_is_missing_names_the_interpreter() {
    let dir = tempdir();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/nonexistent/herzog-interpreter -x\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = Process::spawn(&attempt(dir.path(), &[script.to_str().unwrap()])).expect_err("spawn must fail");
    let why = err.to_string();
    assert!(matches!(err, SpawnError::Interpreter { .. }), "{err:?}");
    assert!(
        why.contains("interpreter /nonexistent/herzog-interpreter not found"),
        "{why}"
    );
}

#[tokio::test]
async fn a_missing_working_directory_is_named() {
    let dir = tempdir();
    let mut start = attempt(dir.path(), &["true"]);
    start.cwd = dir.path().join("no-such-dir");
    let err = Process::spawn(&start).expect_err("spawn must fail");
    assert!(matches!(err, SpawnError::Cwd { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[tokio::test]
async fn an_empty_command_line_is_refused() {
    let dir = tempdir();
    let err = Process::spawn(&attempt(dir.path(), &[])).expect_err("spawn must fail");
    assert!(matches!(err, SpawnError::EmptyArgv), "{err:?}");
}

#[tokio::test]
async fn into_completion_carries_everything() {
    let dir = tempdir();
    let process = Process::spawn(&attempt(dir.path(), &["true"])).expect("spawn");
    assert!(process.pid() > 0);
    let finished = process.wait().await;
    let completion = finished.clone().into_completion(AttemptId(9));
    assert_eq!(completion.attempt, AttemptId(9));
    assert_eq!(completion.exit, finished.exit);
    assert_eq!(completion.wall_ms, finished.wall_ms);
    assert_eq!(completion.cpu_ms, finished.cpu_ms);
    assert_eq!(completion.peak_rss_kb, finished.peak_rss_kb);
    assert!(completion.finished_at > 0);
}

/// Spawn cost at the scale of the xargs comparison; run with `--ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn spawn_5000_true() {
    let dir = tempdir();
    let start = attempt(dir.path(), &["/bin/true"]);
    let began = Instant::now();
    for _ in 0..5000 {
        assert_eq!(run(&start).await.exit, Exit::Code(0));
    }
    eprintln!("5000 x /bin/true: {:?}", began.elapsed());
}
