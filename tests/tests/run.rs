//! `hz run` through the real daemons: exit statuses come back exactly, output arrives whole and
//! in order, a slow reader slows the program instead of growing kinski, stdin and a terminal
//! reach the program, Ctrl-C kills the remote tree, a lost worker ends the job with 255 and it
//! is not run again, a job goes ahead of queued batch starts, and named commands.
//!
//! cargo build --workspace && cargo test -p tests --test run -- --nocapture

use common::wire::ActiveAttempt;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;
use tests::{Cluster, HZ_LIMIT, eventually, output_within, running};

const WAIT: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A cluster whose herzog declares a silent worker lost after 2 s.
fn quick_cluster(workers: &[(&str, u32)]) -> Cluster {
    Cluster::start_with_config(
        Some("[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n"),
        workers,
    )
}

#[test]
fn exit_statuses_and_both_streams_come_back_exactly() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    let out = cluster.hz(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    let ok = cluster.hz(&[
        "run",
        "--env",
        "GREETING=hi there",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(text(&ok.stdout), "hi there\n");
    // A signal: 128 + its number, as a shell says.
    let killed = cluster.hz(&["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.code(), Some(128 + 15), "{killed:?}");
    assert!(
        text(&killed.stderr).contains("killed by signal 15"),
        "{}",
        text(&killed.stderr)
    );
    // Not found: 127, with the reason.
    let missing = cluster.hz(&["run", "--", "/no/such/program"]);
    assert_eq!(missing.status.code(), Some(127), "{missing:?}");
    assert!(
        text(&missing.stderr).contains("could not start"),
        "{}",
        text(&missing.stderr)
    );
    // Its directory: --cwd, else the caller's.
    let here = cluster.hz(&["run", "--", "pwd"]);
    assert_eq!(text(&here.stdout).trim(), cluster.dir().to_str().unwrap());
    let tmp = cluster.hz(&["run", "--cwd", "/tmp", "--", "pwd"]);
    assert_eq!(text(&tmp.stdout).trim(), "/tmp");
    // Jobs are not projects: `hz list` does not show them.
    let list = cluster.hz_ok(&["list"]);
    assert!(!list.contains("run:"), "{list}");
    // An unknown host is refused, naming it.
    let err = cluster.hz_fails(&["run", "--host", "gauss", "--", "true"], 2);
    assert!(err.contains("no worker named 'gauss'"), "{err}");
}

#[test]
fn a_hundred_megabytes_arrive_intact() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    // Every line numbered, so a lost, doubled or reordered chunk shows.
    let script = "seq 1 20000000 | head -c 100000000";
    let mut cmd = cluster.hz_command(&["run", "--", "sh", "-c", script]);
    let out = output_within(&mut cmd, Duration::from_secs(600));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let local = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run the script here");
    assert_eq!(out.stdout.len(), 100_000_000);
    assert!(out.stdout == local.stdout, "the bytes differ from the program's own");
}

#[test]
fn a_slow_reader_slows_the_program_and_nothing_grows() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let total: usize = 64 * 1024 * 1024;
    let script = format!("head -c {total} /dev/zero; echo done >&2");
    let mut child = cluster
        .hz_command(&["run", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hz run");
    // Nobody reads hz's stdout: the job's output stops near the window, far short of all.
    let logs = cluster.herzog_state().join("results");
    let written = || -> u64 {
        walk(&logs)
            .iter()
            .filter(|p| p.to_string_lossy().contains("/run:") && p.to_string_lossy().ends_with(".stdout"))
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let stalled = eventually("the job's output to stall", WAIT, || {
        let before = written();
        std::thread::sleep(Duration::from_millis(500));
        let after = written();
        (after > 0 && after == before).then_some(after)
    });
    let window = common::output::JOB_WINDOW;
    assert!(
        stalled <= window + 2 * u64::from(common::output::MAX_READ) + 1024 * 1024,
        "{stalled} bytes written while nobody read: the window is {window}"
    );
    let kinski = cluster.worker("euclid").pid();
    let rss = rss_kb(kinski);
    assert!(rss < 200 * 1024, "kinski holds {rss} KiB while the program waits");
    // Reading on gets every byte.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stdout.read(&mut buf).expect("read hz's stdout");
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == 0));
        got += n;
    }
    assert_eq!(got, total);
    let status = child.wait().expect("hz exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn stdin_reaches_the_program_and_a_terminal_is_a_terminal() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let input = cluster.dir().join("input.txt");
    let lines: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&input, &lines).expect("write input");
    let mut cmd = cluster.hz_command(&["run", "-i", "--", "sh", "-c", "cat; echo end"]);
    cmd.stdin(std::fs::File::open(&input).expect("open input"));
    let out = output_within(&mut cmd, HZ_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{lines}end\n"));
    // Without -i the program reads nothing.
    let mut cmd = cluster.hz_command(&["run", "--", "sh", "-c", "cat; echo end"]);
    cmd.stdin(std::fs::File::open(&input).expect("open input"));
    let out = output_within(&mut cmd, HZ_LIMIT);
    assert_eq!(text(&out.stdout), "end\n");
    // -t: the program's stdin and stdout are a terminal, and what it is typed reaches it.
    let mut cmd = cluster.hz_command(&[
        "run",
        "-t",
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo both-terminals; tty; read answer; echo \"got $answer\"",
    ]);
    let answer = cluster.dir().join("answer.txt");
    std::fs::write(&answer, "yes\n").expect("write answer");
    cmd.stdin(std::fs::File::open(&answer).expect("open answer"));
    let out = output_within(&mut cmd, HZ_LIMIT);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("both-terminals\r\n"), "{shown:?}");
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    assert!(shown.contains("got yes"), "{shown:?}");
}

#[test]
fn ctrl_c_kills_the_remote_tree_and_a_second_one_kills_it_hard() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let pids = cluster.dir().join("pids");
    let script = format!("sleep 300 & echo $! > {p}; echo started; wait", p = pids.display());
    let mut hz = cluster.hz_spawn(&["run", "--", "sh", "-c", &script]);
    hz.line("started", WAIT);
    let child: i32 = std::fs::read_to_string(&pids)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(running(child));
    let hz_pid = nix::unistd::Pid::from_raw(hz.pid() as i32);
    nix::sys::signal::kill(hz_pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT hz");
    hz.note("sent SIGINT", WAIT);
    let status = hz.wait_exit(WAIT);
    // sh dies of SIGINT; its background sleep (which ignores SIGINT, as a non-interactive
    // shell's background jobs do) goes with the group when its leader is gone.
    assert_eq!(status.code(), Some(128 + 2), "{}", hz.stderr());
    eventually("the background sleep to die", WAIT, || (!running(child)).then_some(()));

    // A program that ignores SIGINT: the second Ctrl-C is SIGKILL.
    let script = "trap '' INT; echo stubborn; while :; do sleep 1; done";
    let mut hz = cluster.hz_spawn(&["run", "--", "sh", "-c", script]);
    hz.line("stubborn", WAIT);
    let hz_pid = nix::unistd::Pid::from_raw(hz.pid() as i32);
    nix::sys::signal::kill(hz_pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT hz");
    hz.note("sent SIGINT", WAIT);
    nix::sys::signal::kill(hz_pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT hz again");
    let status = hz.wait_exit(WAIT);
    assert_eq!(status.code(), Some(128 + 9), "{}", hz.stderr());
}

#[test]
fn a_lost_worker_ends_the_job_with_255_and_it_is_not_run_again() {
    let mut cluster = quick_cluster(&[("euclid", 1), ("newton", 1)]);
    let starts = cluster.dir().join("starts");
    let script = format!("echo x >> {s}; echo started; exec sleep 300", s = starts.display());
    let mut hz = cluster.hz_spawn(&["run", "--", "sh", "-c", &script]);
    hz.line("started", WAIT);
    let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(active[0].project.starts_with("run:"), "{active:?}");
    let worker = active[0].worker.clone();
    cluster.kill_worker(&worker);
    let status = hz.wait_exit(WAIT);
    assert_eq!(status.code(), Some(255), "{}", hz.stderr());
    assert!(hz.stderr().contains("was lost"), "{}", hz.stderr());
    // Not run again, elsewhere or later: its one fragment ended for good with the loss,
    // which hz's exit already waited for.
    let job = active[0].project.clone();
    let fragments: Vec<common::wire::FragmentInfo> = cluster.hz_json(&["fragments", &job]);
    assert_eq!(
        (fragments[0].state, fragments[0].attempts),
        (common::wire::FragmentStateKind::Failed, 1),
        "{fragments:?}"
    );
    assert_eq!(std::fs::read_to_string(&starts).unwrap_or_default().lines().count(), 1);
    let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
    assert!(active.is_empty(), "{active:?}");
}

#[test]
fn a_job_goes_ahead_of_queued_batch_starts() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    let dir = cluster.inputs("batch", 4);
    let program = cluster.marker_program();
    cluster.hz_ok(&[
        "action",
        dir.to_str().unwrap(),
        &program,
        "--name",
        "batch",
        "--env",
        "SLEEP=1",
    ]);
    eventually("a batch attempt to run", WAIT, || {
        let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
        active.iter().any(|a| a.started.is_some()).then_some(())
    });
    let asked = tests::now_ns();
    let out = cluster.hz(&["run", "--", "sh", "-c", "date +%s%N"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job_started: u128 = text(&out.stdout).trim().parse().expect("a time");
    // It took the first slot that freed: no batch start (one waits queued on the worker)
    // came between the ask and the job.
    let between: Vec<_> = cluster
        .markers()
        .into_iter()
        .filter(|m| m.start_ns > asked && m.start_ns < job_started)
        .collect();
    assert!(between.is_empty(), "batch attempts started before the job: {between:?}");
    let mut progress = cluster.hz_spawn(&["progress", "batch", "--watch"]);
    assert!(progress.wait_exit(Duration::from_secs(60)).success());
    assert_eq!(cluster.markers().len(), 4);
}

#[test]
fn named_commands_run_by_name_or_alias_with_their_arguments() {
    // With a config, so herzog reads the services.toml beside it.
    let cluster = Cluster::start_with_config(Some("[herzog]\n"), &[("euclid", 1), ("newton", 1)]);
    std::fs::write(
        cluster.dir().join("services.toml"),
        "[commands.greet]\ncommand = \"echo hello\"\naliases = [\"hi\"]\nhosts = [\"newton\"]\ndescription = \"says hello\"\n\n\
         [commands.count]\ncommand = \"printf '%s|' \\\"$@\\\" | wc -c\"\n",
    )
    .expect("write services.toml");
    cluster.hz_ok(&["reload"]);
    let listed = cluster.hz_ok(&["commands"]);
    assert!(
        listed.contains("greet") && listed.contains("hi") && listed.contains("newton") && listed.contains("says hello"),
        "{listed}"
    );
    let out = cluster.hz(&["run", "hi", "world", "$(id)"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello world $(id)\n");
    // A shell command gets its arguments as "$@", never as script text.
    let out = cluster.hz(&["run", "count", "a b", ";rm"]);
    assert_eq!(text(&out.stdout).trim(), "8", "{}", text(&out.stderr));
    // Pinned to newton: a job asked for on euclid is refused.
    let err = cluster.hz_fails(&["run", "--host", "euclid", "greet"], 2);
    assert!(err.contains("runs only on newton"), "{err}");
    let err = cluster.hz_fails(&["run", "nosuch"], 2);
    assert!(err.contains("no command named 'nosuch'"), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("kinski's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_herzog_restart_under_a_job_loses_and_repeats_nothing() {
    let mut cluster = Cluster::start(&[("euclid", 1)]);
    let out_path = cluster.dir().join("job.out");
    let script = "for i in $(seq 1 60); do echo $i; sleep 0.05; done; exit 5";
    let mut child = cluster
        .hz_command(&["run", "--", "sh", "-c", script])
        .stdout(std::fs::File::create(&out_path).expect("create job.out"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hz run");
    eventually("the job to print its first lines", WAIT, || {
        std::fs::read_to_string(&out_path).ok()?.contains("5\n").then_some(())
    });
    cluster.kill_herzog();
    cluster.start_herzog();
    let status = eventually("hz run to end", WAIT, || child.try_wait().expect("wait for hz"));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("dialling again"), "{stderr}");
    let printed = std::fs::read_to_string(&out_path).expect("job.out");
    let expected: String = (1..=60).map(|i| format!("{i}\n")).collect();
    assert_eq!(printed, expected, "every line once, in order");
}

#[test]
fn a_reader_gone_or_a_hangup_ends_the_job_as_it_would_end_a_local_one() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    // stdout closed after a line (`hz run ... | head -1`): the job gets SIGPIPE.
    let mut child = cluster
        .hz_command(&["run", "--", "sh", "-c", "trap '' PIPE; exec yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hz run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 2];
    stdout.read_exact(&mut first).expect("a line");
    assert_eq!(&first, b"y\n");
    drop(stdout);
    let status = eventually("hz run to end", WAIT, || child.try_wait().expect("wait"));
    // This one ignores SIGPIPE and would wait for a reader for ever: it is killed.
    assert_eq!(status.code(), Some(128 + 9), "{status:?}");
    let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
    assert!(active.is_empty(), "the job still runs: {active:?}");
    let mut child = cluster
        .hz_command(&["run", "--", "seq", "1", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hz run");
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_exact(&mut first).expect("a line");
    drop(stdout);
    let status = eventually("hz run to end", WAIT, || child.try_wait().expect("wait"));
    assert_eq!(status.code(), Some(128 + 13), "killed by SIGPIPE: {status:?}");

    // A hangup (the terminal closed) goes on to the job.
    let mut hz = cluster.hz_spawn(&["run", "--", "sh", "-c", "echo up; exec sleep 300"]);
    hz.line("up", WAIT);
    let pid = nix::unistd::Pid::from_raw(hz.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP hz");
    let status = hz.wait_exit(WAIT);
    assert_eq!(status.code(), Some(128 + 1), "{}", hz.stderr());
    let active: Vec<ActiveAttempt> = cluster.hz_json(&["active"]);
    assert!(active.is_empty(), "the job still runs: {active:?}");
}
