//! Processes: the workspace binaries, commands with a clean environment, output collected
//! within a limit, and what /proc says of a pid.

use super::*;

/// The path of a workspace binary (`herzog`, `kinski`, `hz`) built next to this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the test executable");
    // target/debug/deps/<test>-<hash> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} has no grandparent directory", exe.display()));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Removes the ANSI colour sequences tracing may put in a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A command with the environment the tests rely on: no address or config from the caller's
/// environment, no RUST_LOG overriding the log level, no colours in the logs.
pub(crate) fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("HERZOG_ADDR")
        .env_remove("HERZOG_CONFIG")
        .env_remove("HERZOG_TLS")
        .env_remove("HERZOG_SERVER_TLS")
        .env_remove("KINSKI_TLS")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end and collects its output; a process still running after `limit` is
/// killed and the test fails. Waits for end of file on both pipes, not by polling.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout is piped")),
        Box::new(child.stderr.take().expect("stderr is piped")),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|mut pipe| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(());
                buf
            })
        })
        .collect();
    let deadline = Instant::now() + limit;
    for _ in 0..2 {
        if rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            let _ = child.kill();
            let _ = child.wait();
            let mut outputs = readers.into_iter().map(|r| r.join().unwrap_or_default());
            let (out, err) = (outputs.next().unwrap(), outputs.next().unwrap());
            panic!(
                "{cmd:?} still ran after {limit:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
    }
    let status = child.wait().expect("failed to reap a child");
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Output {
        status,
        stdout: outputs.next().unwrap(),
        stderr: outputs.next().unwrap(),
    }
}

/// Calls `check` every 50 ms until it returns `Some`, failing the test after `limit`.
/// Only for what cannot be awaited (a process disappearing, a count reaching a value).
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that `hz ARGS` exited 0 and returns its stdout; on failure the message shows its
/// output and `logs()` (the daemons' logs).
pub fn expect_success(args: &[&str], out: Output, logs: impl FnOnce() -> String) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "hz {args:?} failed\nstdout:\n{}\nstderr:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    String::from_utf8(out.stdout).expect("hz printed something not UTF-8")
}

/// True while `pid` exists and has not finished: neither gone nor a zombie.
pub fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The environment of a live process (`KEY=VALUE` each), empty when it cannot be read.
pub fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent pid of a live process, from /proc.
pub fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// True while `pid` exists (a zombie counts): `kill(pid, 0)` does not fail with ESRCH.
pub fn alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The wall clock in nanoseconds since the epoch, as the marker program records starts.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

/// Writes an executable script.
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("failed to chmod {}: {e}", path.display()));
}
