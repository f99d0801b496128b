//! The harness of the integration tests: real herzog, kinski and hz processes talking real TCP
//! on loopback, with herzog's real SQLite file in a temporary directory.
//!
//! The binaries are the ones cargo built next to the test executable (`target/debug/`);
//! `cargo test --workspace` builds them (herzog's and kinski's own `tests/cli.rs` make cargo
//! build their binaries, cli's tests build `hz`), otherwise run `cargo build --workspace` first.
//!
//! Nothing here sleeps to wait for an event: a daemon is ready when it logs so (its stderr is
//! read line by line), a project is finished when `hz progress <p> --watch` returns. What can
//! only be polled is polled by [`eventually`], with a deadline and a message.
//!
//! Every process started here is killed (SIGKILL, then reaped) when its guard is dropped, also
//! when a test panics; so are the programs the workers still run (their process groups).

use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod bed;
mod follower;
pub mod services;
pub mod sinks;
pub mod timed;
pub use follower::Follower;

pub use common::wire;

/// How long a daemon gets to say it is ready (or to stop when asked).
pub const STARTUP: Duration = Duration::from_secs(15);
/// The longest any one `hz` call may take, `progress --watch` included.
pub const HZ_LIMIT: Duration = Duration::from_secs(60);

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
fn command(program: &Path) -> Command {
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

/// A running daemon whose stderr is read line by line. Dropping it kills it (SIGKILL) and
/// reaps it.
pub struct Daemon {
    name: String,
    child: Child,
    /// Each stderr line, ANSI stripped; disconnected at end of file, i.e. when it exits.
    lines: Receiver<String>,
    /// Every line so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Daemon {
    /// Starts `cmd` with stderr piped to a reader thread.
    pub fn spawn(name: &str, mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name} ({cmd:?}): {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
                // The receiver may be gone (the daemon's guard was dropped): keep draining
                // so the daemon never blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        Daemon {
            name: name.to_string(),
            child,
            lines,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// Waits until it logs a line containing `needle` and returns that line; fails the test if
    /// it exits first or stays silent for `limit`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} did not log {needle:?} within {limit:?}; its log:\n{}",
                    self.name,
                    self.log()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited ({status:?}) before logging {needle:?}; its log:\n{}",
                        self.name,
                        self.log()
                    )
                }
            }
        }
    }

    /// Sends `signal` and waits (for end of file on its stderr, at most `limit`) until it has
    /// exited; returns how it ended.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, limit: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("failed to signal {}: {e}", self.name));
        self.wait_exit(limit, &format!("of {signal}"))
    }

    /// Waits (for end of file on its stderr, at most `limit`) until it exits by itself;
    /// returns how it ended. `what` says what it should have exited after, for the failure.
    pub fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} did not exit within {limit:?} {what}; its log:\n{}",
                    self.name,
                    self.log()
                ),
            }
        }
        self.child.wait().expect("failed to reap a daemon")
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it; fails the test if it had ended
    /// on its own before (a crash the caller would otherwise count as its own doing).
    pub fn kill(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        let _ = self.child.kill();
        let status = self.child.wait().expect("failed to reap a daemon");
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGKILL as i32),
            "{} had already ended ({status}) when it was to be killed; its log:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frozen worker; thawed when dropped. See [`Cluster::freeze`].
pub struct Frozen<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.cluster
            .signal_worker(&self.name, nix::sys::signal::Signal::SIGCONT);
    }
}

/// One execution of the marker program, as it recorded itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub project: String,
    pub fragment: String,
    pub attempt: i64,
    /// When it started, in nanoseconds since the epoch (`date +%s%N`).
    pub start_ns: u128,
    /// Its pid (also its process group: kinski starts each attempt in its own group).
    pub pid: i32,
    /// Its parent's pid: the kinski that ran it.
    pub ppid: u32,
}

/// The marker program: records each execution in its own file under `markers/`, prints the
/// input's byte count, then, when `SLEEP` is set (through the project's `--env`), becomes
/// `sleep $SLEEP` (same pid).
const MARKER_SCRIPT: &str = r#"#!/bin/sh
start=$(date +%s%N)
marker="@MARKERS@/$HERZOG_PROJECT.$HERZOG_FRAGMENT.$HERZOG_ATTEMPT"
: > "$marker"
echo "$HERZOG_PROJECT $HERZOG_FRAGMENT $HERZOG_ATTEMPT $start $$ $PPID" >> "$marker"
wc -c < "$1"
if [ -n "$SLEEP" ]; then exec sleep "$SLEEP"; fi
"#;

/// herzog plus workers, each a real process, in a temporary directory (herzog's state, each
/// worker's state, inputs, markers). Dropping it kills everything it started.
pub struct Cluster {
    // Dropped in this order: workers, herzog, then the directory.
    workers: Vec<(String, Daemon)>,
    herzog: Option<Daemon>,
    addr: String,
    config: Option<PathBuf>,
    /// Each worker's slot count, kept so that a worker can be started again as it was.
    slots: BTreeMap<String, u32>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.addr)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Cluster {
    /// Starts herzog on a free loopback port, then one kinski per `(name, slots)`, each
    /// registered before this returns.
    pub fn start(workers: &[(&str, u32)]) -> Cluster {
        Self::start_with_config(None, workers)
    }

    /// Like [`Cluster::start`], with a cluster config file (TOML text) given to every daemon.
    pub fn start_with_config(config: Option<&str>, workers: &[(&str, u32)]) -> Cluster {
        let dir = tempfile::tempdir().expect("failed to create a temporary directory");
        std::fs::create_dir(dir.path().join("markers")).expect("failed to create markers/");
        let config = config.map(|text| {
            let path = dir.path().join("cluster.toml");
            std::fs::write(&path, text).expect("failed to write the config");
            path
        });
        let (herzog, addr) = spawn_herzog(dir.path(), config.as_deref(), "127.0.0.1:0");
        let mut cluster = Cluster {
            workers: Vec::new(),
            herzog: Some(herzog),
            addr,
            config,
            slots: BTreeMap::new(),
            dir,
        };
        for (name, slots) in workers {
            cluster.add_worker(name, *slots);
        }
        cluster
    }

    /// Like [`Cluster::start`], with herzog given a relative `--state-dir` (`herzog`, from
    /// the cluster's directory as its working directory).
    pub fn start_relative(workers: &[(&str, u32)]) -> Cluster {
        let dir = tempfile::tempdir().expect("failed to create a temporary directory");
        std::fs::create_dir(dir.path().join("markers")).expect("failed to create markers/");
        let mut cmd = command(&bin("herzog"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
            "--state-dir",
            "herzog",
            "--tls",
        ])
        .arg(bundle(dir.path(), "herzog", "coordinator"))
        .current_dir(dir.path());
        let (herzog, addr) = listening(Daemon::spawn("herzog", cmd));
        let mut cluster = Cluster {
            workers: Vec::new(),
            herzog: Some(herzog),
            addr,
            config: None,
            slots: BTreeMap::new(),
            dir,
        };
        for (name, slots) in workers {
            cluster.add_worker(name, *slots);
        }
        cluster
    }

    /// Starts another kinski under a name a worker of this cluster has, with its own state
    /// directory `<dir>/<state>`; it is not waited for.
    pub fn spawn_extra_kinski(&self, name: &str, state: &str) -> Daemon {
        let cmd = self.kinski_command_in(name, 1, &self.dir().join(state));
        Daemon::spawn(&format!("kinski {name} (second)"), cmd)
    }

    /// Stops a worker cleanly (SIGTERM), asserting it exits 0.
    pub fn stop_worker(&mut self, name: &str) {
        let mut daemon = self.take_worker(name);
        let status = daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, STARTUP);
        assert_eq!(
            status.code(),
            Some(0),
            "kinski {name}: {status}; its log:\n{}",
            daemon.log()
        );
    }

    /// herzog's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops herzog (SIGTERM, asserting a clean exit) and starts it again on the same address
    /// and state directory, then waits until every worker has registered again.
    pub fn restart_herzog(&mut self) {
        let mut old = self.herzog.take().expect("herzog runs");
        let status = old.signal_and_wait(nix::sys::signal::Signal::SIGTERM, STARTUP);
        assert_eq!(
            status.code(),
            Some(0),
            "herzog ended with {status}; its log:\n{}",
            old.log()
        );
        let (herzog, addr) = spawn_herzog(self.dir.path(), self.config.as_deref(), &self.addr);
        assert_eq!(addr, self.addr);
        self.herzog = Some(herzog);
        for (_, worker) in &mut self.workers {
            worker.wait_for("registered with herzog", STARTUP);
        }
    }

    /// The temporary directory everything lives in; `hz` runs with it as its cwd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// herzog's state directory (herzog.db, logs/, results/).
    pub fn herzog_state(&self) -> PathBuf {
        self.dir().join("herzog")
    }

    /// Everything herzog logged so far.
    pub fn herzog_log(&self) -> String {
        self.herzog.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Starts a kinski and waits until it has registered with herzog.
    pub fn add_worker(&mut self, name: &str, slots: u32) {
        assert!(
            self.workers.iter().all(|(n, _)| n != name),
            "worker {name} already runs"
        );
        self.slots.insert(name.to_string(), slots);
        let cmd = self.kinski_command(name, slots);
        self.spawn_worker(name, cmd);
    }

    /// Starts worker `name` by `cmd` and waits until it has registered with herzog.
    fn spawn_worker(&mut self, name: &str, cmd: Command) {
        let mut kinski = Daemon::spawn(&format!("kinski {name}"), cmd);
        kinski.wait_for("registered with herzog", STARTUP);
        self.workers.push((name.to_string(), kinski));
    }

    /// Takes worker `name` out of the cluster's list (to stop or kill it).
    fn take_worker(&mut self, name: &str) -> Daemon {
        let i = self
            .workers
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no worker named {name}"));
        self.workers.remove(i).1
    }

    /// Starts a kinski as `nohup` would, ignoring SIGHUP, and waits until it has registered.
    pub fn add_worker_ignoring_hangups(&mut self, name: &str, slots: u32) {
        use nix::sys::signal::{SigHandler, Signal, signal};
        use std::os::unix::process::CommandExt;
        self.slots.insert(name.to_string(), slots);
        let mut cmd = self.kinski_command(name, slots);
        // SAFETY: signal is async-signal-safe, and ignoring installs no handler.
        unsafe {
            cmd.pre_exec(|| {
                signal(Signal::SIGHUP, SigHandler::SigIgn).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        self.spawn_worker(name, cmd);
    }

    /// The command that starts worker `name`: state in `<dir>/kinski-<name>`.
    fn kinski_command(&self, name: &str, slots: u32) -> Command {
        self.kinski_command_in(name, slots, &self.kinski_state(name))
    }

    /// Starts a kinski that registers `cpus` CPUs (not one a slot) and waits until it has
    /// registered with herzog.
    pub fn add_worker_with_cpus(&mut self, name: &str, slots: u32, cpus: u32) {
        self.slots.insert(name.to_string(), slots);
        let mut cmd = self.kinski_command(name, slots);
        // The last --cpus counts.
        cmd.args(["--cpus", &cpus.to_string()]);
        self.spawn_worker(name, cmd);
    }

    /// The command that starts worker `name` with its state in `state`. It registers a CPU a
    /// slot, so herzog (packing a CPU an attempt by default) keeps every slot busy.
    fn kinski_command_in(&self, name: &str, slots: u32, state: &Path) -> Command {
        let mut cmd = command(&bin("kinski"));
        cmd.args(["--herzog", &self.addr, "--name", name, "--log-level", "info", "--tls"])
            .arg(bundle(self.dir(), name, "worker"))
            .args(["--run-as", &kinski::user::current_user()])
            .args([
                "--slots",
                &slots.to_string(),
                "--cpus",
                &slots.max(1).to_string(),
                "--state-dir",
            ])
            .arg(state);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd
    }

    /// The worker process called `name`.
    pub fn worker(&self, name: &str) -> &Daemon {
        self.workers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("no worker named {name}"))
    }

    /// The name of the worker whose pid is `pid`.
    pub fn worker_by_pid(&self, pid: u32) -> Option<&str> {
        self.workers
            .iter()
            .find(|(_, d)| d.pid() == pid)
            .map(|(n, _)| n.as_str())
    }

    /// Kills a worker with SIGKILL, as a crash would, and reaps it. herzog only sees the
    /// connection drop, and declares the worker lost after `worker_timeout`. The programs the worker ran (in their own process groups)
    /// are killed right after it, as they would be on a crashed host; not before, or the
    /// worker would report them as killed by a signal.
    pub fn kill_worker(&mut self, name: &str) {
        let groups = self.attempts_of(&[self.worker(name).pid()]);
        let mut daemon = self.take_worker(name);
        daemon.kill();
        for pid in groups {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Asks every worker, then herzog, to shut down (SIGTERM) and waits for each to exit;
    /// returns each daemon's name and exit status, herzog last.
    pub fn stop(mut self) -> Vec<(String, ExitStatus)> {
        let mut ended = Vec::new();
        for (name, mut daemon) in std::mem::take(&mut self.workers) {
            ended.push((name, daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, STARTUP)));
        }
        if let Some(mut herzog) = self.herzog.take() {
            ended.push((
                "herzog".to_string(),
                herzog.signal_and_wait(nix::sys::signal::Signal::SIGTERM, STARTUP),
            ));
        }
        ended
    }

    /// Runs `hz --herzog ADDR ARGS...` in the cluster's directory.
    pub fn hz(&self, args: &[&str]) -> Output {
        self.hz_as(&bundle(self.dir(), "admin", "admin"), args)
    }

    /// Runs `hz --herzog ADDR ARGS...` presenting the certificate bundle `tls` instead of the
    /// admin's.
    pub fn hz_as(&self, tls: &Path, args: &[&str]) -> Output {
        let mut cmd = command(&bin("hz"));
        cmd.args(["--herzog", &self.addr])
            .env("HERZOG_TLS", tls)
            .args(args)
            .current_dir(self.dir());
        output_within(&mut cmd, HZ_LIMIT)
    }

    /// Runs hz, asserts it exits 0 and returns its stdout.
    pub fn hz_ok(&self, args: &[&str]) -> String {
        expect_success(args, self.hz(args), || format!("herzog's log:\n{}", self.herzog_log()))
    }

    /// Runs hz with `--json`, asserts it exits 0 and parses its stdout.
    pub fn hz_json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.hz_ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("hz {args:?} printed no valid JSON ({e}): {stdout}"))
    }

    /// Starts `hz --herzog ADDR ARGS...` (a follower: `hz tail -f`, `hz events --follow`)
    /// and reads its stdout and stderr line by line as it prints them.
    pub fn hz_spawn(&self, args: &[&str]) -> Follower {
        let mut cmd = command(&bin("hz"));
        cmd.args(["--herzog", &self.addr])
            .env("HERZOG_TLS", bundle(self.dir(), "admin", "admin"))
            .args(args)
            .current_dir(self.dir());
        Follower::spawn(&format!("hz {}", args.join(" ")), cmd)
    }

    /// `hz --herzog ADDR ARGS...` as the admin, in the cluster's directory, to be run by the
    /// caller (with its own stdin, say).
    pub fn hz_command(&self, args: &[&str]) -> Command {
        let mut cmd = command(&bin("hz"));
        cmd.args(["--herzog", &self.addr])
            .env("HERZOG_TLS", bundle(self.dir(), "admin", "admin"))
            .args(args)
            .current_dir(self.dir());
        cmd
    }

    /// Runs hz, asserts it exits with `code` and prints nothing on stdout; returns stderr.
    pub fn hz_fails(&self, args: &[&str], code: i32) -> String {
        let out = self.hz(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "hz {args:?} should exit {code}\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "hz {args:?} printed on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// Makes `<dir>/<name>` with `n` files `f0000`, `f0001`, ...; file `i` holds `i + 2` bytes,
    /// so each fragment's output differs. Returns its path.
    pub fn inputs(&self, name: &str, n: usize) -> PathBuf {
        make_inputs(&self.dir().join(name), n)
    }

    /// Writes the marker program (see [`Marker`]) once and returns its absolute path.
    pub fn marker_program(&self) -> String {
        let path = self.dir().join("marker.sh");
        if !path.exists() {
            let markers = self.dir().join("markers");
            let text = MARKER_SCRIPT.replace("@MARKERS@", markers.to_str().expect("a UTF-8 tempdir"));
            write_script(&path, &text);
        }
        path.to_str().expect("a UTF-8 tempdir").to_string()
    }

    /// Every recorded execution of the marker program, in no particular order.
    pub fn markers(&self) -> Vec<Marker> {
        read_markers(&self.dir().join("markers"))
    }

    /// The programs `workers` run now: their child processes, each the leader of its own
    /// process group. Read from /proc while the workers live, so no pid can have been
    /// reused by someone else's process.
    fn attempts_of(&self, workers: &[u32]) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| parent_of(*pid).is_some_and(|ppid| workers.contains(&ppid)))
            .collect()
    }
}

/// Fault injection: crashes and restarts of single daemons on their own state directories,
/// stopped processes, and herzog's database read directly.
impl Cluster {
    /// The cluster config file given to every daemon, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// A worker's state directory (its journal and logs): `<dir>/kinski-<name>`.
    pub fn kinski_state(&self, name: &str) -> PathBuf {
        self.dir().join(format!("kinski-{name}"))
    }

    /// The names of the workers whose kinski runs now (started by this harness).
    pub fn worker_names(&self) -> Vec<String> {
        self.workers.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The slot count worker `name` was started with.
    pub fn worker_slots(&self, name: &str) -> u32 {
        *self
            .slots
            .get(name)
            .unwrap_or_else(|| panic!("no worker named {name} was ever started"))
    }

    /// herzog's pid, while it runs.
    pub fn herzog_pid(&self) -> Option<u32> {
        self.herzog.as_ref().map(Daemon::pid)
    }

    /// Kills herzog with SIGKILL, as a crash would, and reaps it. The workers notice their
    /// connections drop and keep their programs running.
    pub fn kill_herzog(&mut self) {
        self.herzog.take().expect("herzog runs").kill();
    }

    /// Stops herzog (SIGTERM, asserting a clean exit), without starting it again.
    pub fn stop_herzog(&mut self) {
        let mut old = self.herzog.take().expect("herzog runs");
        let status = old.signal_and_wait(nix::sys::signal::Signal::SIGTERM, STARTUP);
        assert_eq!(
            status.code(),
            Some(0),
            "herzog ended with {status}; its log:\n{}",
            old.log()
        );
    }

    /// Starts herzog again on the same address and state directory and waits until it listens
    /// (not until the workers are back: see [`Cluster::wait_workers_connected`]).
    pub fn start_herzog(&mut self) {
        assert!(self.herzog.is_none(), "herzog already runs");
        let (herzog, addr) = spawn_herzog(self.dir.path(), self.config.as_deref(), &self.addr);
        assert_eq!(addr, self.addr);
        self.herzog = Some(herzog);
    }

    /// Waits until herzog exits by itself (at most `limit`), and returns how it ended and
    /// everything it logged; herzog is then gone, as after [`Cluster::kill_herzog`].
    pub fn herzog_exit(&mut self, limit: Duration, what: &str) -> (ExitStatus, String) {
        let mut herzog = self.herzog.take().expect("herzog runs");
        let status = herzog.wait_exit(limit, what);
        (status, herzog.log())
    }

    /// Waits until worker `name`'s kinski exits by itself (at most `limit`), and returns how
    /// it ended and everything it logged; it is then out of the cluster.
    pub fn worker_exit(&mut self, name: &str, limit: Duration, what: &str) -> (ExitStatus, String) {
        let mut worker = self.take_worker(name);
        let status = worker.wait_exit(limit, what);
        (status, worker.log())
    }

    /// Waits until herzog logs a line containing `needle` (see [`Daemon::wait_for`]).
    pub fn herzog_wait_for(&mut self, needle: &str, limit: Duration) -> String {
        self.herzog.as_mut().expect("herzog runs").wait_for(needle, limit)
    }

    /// Sends `signal` to herzog (SIGSTOP, SIGCONT, ...) without waiting for anything.
    pub fn signal_herzog(&self, signal: nix::sys::signal::Signal) {
        let pid = self.herzog_pid().expect("herzog runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("failed to send {signal} to herzog: {e}"));
    }

    /// Sends `signal` to worker `name`'s kinski alone (not to its programs, which live in
    /// their own process groups): SIGSTOP freezes kinski while what it runs goes on.
    pub fn signal_worker(&self, name: &str, signal: nix::sys::signal::Signal) {
        let pid = self.worker(name).pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("failed to send {signal} to worker {name}: {e}"));
    }

    /// Freezes worker `name`'s kinski (SIGSTOP) until the guard is dropped (SIGCONT), so a
    /// failed assertion never leaves the cluster's teardown waiting on a frozen process.
    pub fn freeze(&self, name: &str) -> Frozen<'_> {
        self.signal_worker(name, nix::sys::signal::Signal::SIGSTOP);
        Frozen {
            cluster: self,
            name: name.to_string(),
        }
    }

    /// Kills worker `name`'s kinski with SIGKILL and reaps it, leaving the programs it ran
    /// running: a kinski crash, not a host crash (that is [`Cluster::kill_worker`]). Returns
    /// the pid it had. Its state directory stays for [`Cluster::start_worker`].
    pub fn kill_kinski(&mut self, name: &str) -> u32 {
        let mut daemon = self.take_worker(name);
        let pid = daemon.pid();
        daemon.kill();
        pid
    }

    /// Starts worker `name` again, with the slots and the state directory (journal) it had,
    /// without waiting for it to register (herzog may be down).
    pub fn start_worker(&mut self, name: &str) {
        assert!(
            self.workers.iter().all(|(n, _)| n != name),
            "worker {name} already runs"
        );
        let slots = self.worker_slots(name);
        let kinski = Daemon::spawn(&format!("kinski {name}"), self.kinski_command(name, slots));
        self.workers.push((name.to_string(), kinski));
    }

    /// Starts a new worker without waiting for it to register (herzog may be down).
    pub fn add_worker_unregistered(&mut self, name: &str, slots: u32) {
        self.slots.insert(name.to_string(), slots);
        self.start_worker(name);
    }

    /// Like [`Cluster::start_worker`], then waits until it has registered with herzog.
    pub fn restart_worker(&mut self, name: &str) {
        self.start_worker(name);
        self.worker_mut(name).wait_for("registered with herzog", STARTUP);
    }

    /// The worker process called `name`, to wait for its log lines.
    pub fn worker_mut(&mut self, name: &str) -> &mut Daemon {
        self.workers
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .unwrap_or_else(|| panic!("no worker named {name}"))
    }

    /// The workers as `hz workers --json` shows them, or `None` when hz cannot reach herzog.
    pub fn try_workers(&self) -> Option<Vec<wire::WorkerInfo>> {
        let out = self.hz(&["workers", "--json"]);
        if out.status.code() != Some(0) {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// What `hz workers` says of worker `name` (`connected`, `disconnected`, `lost`).
    pub fn worker_state(&self, name: &str) -> Option<String> {
        self.try_workers()?
            .into_iter()
            .find(|w| w.name == name)
            .map(|w| w.state)
    }

    /// Waits until herzog shows every running kinski of this harness as `connected`.
    pub fn wait_workers_connected(&self, limit: Duration) {
        let names = self.worker_names();
        eventually(&format!("workers {names:?} to be connected"), limit, || {
            let workers = self.try_workers()?;
            names
                .iter()
                .all(|n| workers.iter().any(|w| &w.name == n && w.state == "connected"))
                .then_some(())
        });
    }

    /// herzog's database file.
    pub fn db_path(&self) -> PathBuf {
        self.herzog_state().join("herzog.db")
    }

    /// A read-only connection to herzog's database: usable while herzog runs (WAL) and after
    /// it was killed; it never writes, so it never checkpoints or repairs anything.
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_with_flags(
            self.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("failed to open {} read-only: {e}", self.db_path().display()));
        conn.busy_timeout(Duration::from_secs(10))
            .expect("failed to set a busy timeout");
        conn
    }

    /// Every fragment of the live project `project` with its attempts, as herzog recorded
    /// them, ordered by index (attempts by id).
    pub fn db_fragments(&self, project: &str) -> Vec<DbFragment> {
        by_path::db_fragments(&self.db_path(), project)
    }

    /// Asserts the promise "never lose, never double-count" from herzog's database: project
    /// `project` has `expected` fragments, and each has exactly one attempt whose outcome is
    /// `succeeded`, and is itself `succeeded` by that attempt. Returns the fragments.
    pub fn assert_each_fragment_succeeded_once(&self, project: &str, expected: usize) -> Vec<DbFragment> {
        by_path::assert_each_fragment_succeeded_once(&self.db_path(), project, expected)
    }

    /// The processes of this cluster's programs that run now (not zombies), wherever their
    /// parent is: found by the input path in their environment.
    pub fn programs_running(&self) -> Vec<i32> {
        let Ok(dir) = self.dir().canonicalize() else {
            return Vec::new();
        };
        let needle = format!("HERZOG_INPUT={}/", dir.display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| running(*pid) && environ(*pid).iter().any(|v| v.starts_with(&needle)))
            .collect()
    }

    /// True while the execution `m` recorded runs (a zombie has finished): its pid is alive,
    /// not a zombie, and still the program of that project, fragment and attempt.
    pub fn marker_running(&self, m: &Marker) -> bool {
        if !running(m.pid) {
            return false;
        }
        let env = environ(m.pid);
        let has = |kv: String| env.contains(&kv);
        has(format!("HERZOG_PROJECT={}", m.project))
            && has(format!("HERZOG_FRAGMENT={}", m.fragment))
            && has(format!("HERZOG_ATTEMPT={}", m.attempt))
    }
}

/// One fragment as herzog's database holds it.
#[derive(Clone, Debug)]
pub struct DbFragment {
    pub id: i64,
    pub index: i64,
    pub name: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// How many attempts count toward `max_attempts`.
    pub attempt_count: i64,
    /// The running, accepted or failing attempt.
    pub attempt_id: Option<i64>,
    /// Every attempt, by id.
    pub attempts: Vec<DbAttempt>,
}

/// One attempt as herzog's database holds it.
#[derive(Clone, Debug)]
pub struct DbAttempt {
    pub id: i64,
    pub worker: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// `running`, `succeeded`, `failed`, `lost`, `stopped` (or `late`).
    pub outcome: String,
    pub ended_at: Option<i64>,
    pub exit_kind: Option<String>,
    pub exit_value: Option<i64>,
    /// The exit of a completion that arrived after the attempt had ended (lost or stopped).
    pub late_exit: Option<String>,
    pub note: Option<String>,
    /// The program's wall time, when a completion was stored.
    pub wall_ms: Option<i64>,
}

impl Drop for Cluster {
    /// Kills what the workers still run (the workers and herzog die with their guards), the
    /// programs that outlived a killed kinski, and, where the kinskis made cgroups (as root),
    /// everything left in them (a service's child that left its group), removing them.
    fn drop(&mut self) {
        let workers: Vec<u32> = self.workers.iter().map(|(_, d)| d.pid()).collect();
        let groups = self.attempts_of(&workers);
        // The kinskis first, so none starts again what is killed next.
        self.workers.clear();
        for pid in groups {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        for pid in self.programs_running() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        for name in self.slots.keys() {
            kinski::cgroup::kill_and_remove(name, &self.kinski_state(name));
        }
    }
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

/// The wall clock in nanoseconds since the epoch, as the marker program records starts.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

/// How many executions each fragment of `project` had, by name, from the markers.
pub fn executions(markers: &[Marker], project: &str) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for m in markers.iter().filter(|m| m.project == project) {
        *runs.entry(m.fragment.clone()).or_insert(0) += 1;
    }
    runs
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

/// The certificate bundle for `name` from the cluster's CA in `<dir>/pki`, made with the real
/// `herzog certs` commands the first time it is asked for (herzog's and the admin's come from
/// `init`, a worker's from `issue`).
pub fn bundle(dir: &Path, name: &str, role: &str) -> PathBuf {
    let pki = dir.join("pki");
    let run = |args: &[&str]| {
        let out = output_within(command(&bin("herzog")).args(args).arg("--dir").arg(&pki), STARTUP);
        assert!(
            out.status.success(),
            "herzog {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !pki.join("ca.key").exists() {
        run(&["certs", "init"]);
    }
    let path = pki.join(format!("{name}.pem"));
    if !path.exists() {
        run(&["certs", "issue", name, "--role", role]);
    }
    path
}

/// Starts herzog on `listen` with its state in `<dir>/herzog` and waits until it listens;
/// returns it and the address it listens on.
fn spawn_herzog(dir: &Path, config: Option<&Path>, listen: &str) -> (Daemon, String) {
    let mut cmd = command(&bin("herzog"));
    cmd.args(["--listen", listen, "--log-level", "info", "--state-dir"])
        .arg(dir.join("herzog"))
        .arg("--tls")
        .arg(bundle(dir, "herzog", "coordinator"));
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    listening(Daemon::spawn("herzog", cmd))
}

/// Waits until a herzog just spawned listens; returns it and its address.
fn listening(mut herzog: Daemon) -> (Daemon, String) {
    let line = herzog.wait_for("herzog listening", STARTUP);
    let addr = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address= in herzog's line {line:?}"))
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "herzog listens on {addr}"
    );
    (herzog, addr)
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

/// Writes an executable script.
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("failed to chmod {}: {e}", path.display()));
}

/// Makes `dir` with `n` files `f0000`, `f0001`, ...; file `i` holds `i + 2` bytes.
pub fn make_inputs(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("failed to create {}: {e}", dir.display()));
    for i in 0..n {
        let content = format!("{}\n", "x".repeat(i + 1));
        std::fs::write(dir.join(format!("f{i:04}")), content).expect("failed to write an input");
    }
    dir.to_path_buf()
}

/// The size of every file in `dir`, by name.
pub fn sizes(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("failed to list an input");
            let size = entry.metadata().expect("failed to stat an input").len();
            (entry.file_name().to_string_lossy().into_owned(), size)
        })
        .collect()
}

fn read_markers(dir: &Path) -> Vec<Marker> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("failed to list markers").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Created empty, then written with one short write: empty means "being written".
        let Some(line) = text.lines().next() else { continue };
        let words: Vec<&str> = line.split(' ').collect();
        let bad = || format!("marker {} is malformed: {text:?}", path.display());
        assert!(words.len() == 6 && text.lines().count() == 1, "{}", bad());
        out.push(Marker {
            project: words[0].to_string(),
            fragment: words[1].to_string(),
            attempt: words[2].parse().unwrap_or_else(|_| panic!("{}", bad())),
            start_ns: words[3].parse().unwrap_or_else(|_| panic!("{}", bad())),
            pid: words[4].parse().unwrap_or_else(|_| panic!("{}", bad())),
            ppid: words[5].parse().unwrap_or_else(|_| panic!("{}", bad())),
        });
    }
    out
}

/// Helpers for daemons this harness does not start itself (the multi-host bed of
/// `tests/testbed/netns.sh`, whose daemons run in network namespaces): the clean environment
/// every harness process gets, and herzog's database read by its path.
pub mod by_path {
    use super::{BTreeMap, Command, DbAttempt, DbFragment, Duration, Path};

    /// A command for `program` with the environment the tests rely on (as the harness starts
    /// herzog, kinski and hz): no address, config or certificate from the caller's environment,
    /// no RUST_LOG, no colours, stdin from /dev/null.
    pub fn clean_command(program: &Path) -> Command {
        super::command(program)
    }

    /// Every fragment of the live project `project` in herzog's database `db`, with its
    /// attempts (as [`super::Cluster::db_fragments`] reads them), ordered by index and id. The
    /// connection is read-only: usable while herzog runs (WAL) and after it was killed.
    pub fn db_fragments(db: &Path, project: &str) -> Vec<DbFragment> {
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("failed to open {} read-only: {e}", db.display()));
        conn.busy_timeout(Duration::from_secs(10))
            .expect("failed to set a busy timeout");
        let tx = conn
            .unchecked_transaction()
            .expect("failed to begin a read transaction");
        let mut fragments: Vec<DbFragment> = tx
            .prepare(
                "SELECT f.id, f.idx, f.name, f.state, f.attempts, f.attempt_id FROM fragments f
                 JOIN projects p ON p.id = f.project_id
                 WHERE p.name = ?1 AND p.removed_at IS NULL ORDER BY f.idx",
            )
            .and_then(|mut s| {
                s.query_map([project], |r| {
                    Ok(DbFragment {
                        id: r.get(0)?,
                        index: r.get(1)?,
                        name: r.get(2)?,
                        state: r.get(3)?,
                        attempt_count: r.get(4)?,
                        attempt_id: r.get(5)?,
                        attempts: Vec::new(),
                    })
                })?
                .collect()
            })
            .expect("failed to read fragments");
        let by_id: BTreeMap<i64, usize> = fragments.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
        let attempts: Vec<(i64, DbAttempt)> = tx
            .prepare(
                "SELECT a.id, a.fragment_id, a.worker, a.started_at, a.outcome, a.ended_at, a.exit_kind,
                        a.exit_value, a.late_exit, a.note, a.wall_ms
                 FROM attempts a JOIN fragments f ON f.id = a.fragment_id JOIN projects p ON p.id = f.project_id
                 WHERE p.name = ?1 AND p.removed_at IS NULL ORDER BY a.id",
            )
            .and_then(|mut s| {
                s.query_map([project], |r| {
                    Ok((
                        r.get(1)?,
                        DbAttempt {
                            id: r.get(0)?,
                            worker: r.get(2)?,
                            started_at: r.get(3)?,
                            outcome: r.get(4)?,
                            ended_at: r.get(5)?,
                            exit_kind: r.get(6)?,
                            exit_value: r.get(7)?,
                            late_exit: r.get(8)?,
                            note: r.get(9)?,
                            wall_ms: r.get(10)?,
                        },
                    ))
                })?
                .collect()
            })
            .expect("failed to read attempts");
        for (fragment, attempt) in attempts {
            fragments[by_id[&fragment]].attempts.push(attempt);
        }
        fragments
    }

    /// Asserts "never lose, never double-count" from herzog's database `db`, as
    /// [`super::Cluster::assert_each_fragment_succeeded_once`] does: `project` has `expected`
    /// fragments, each with exactly one attempt whose outcome is `succeeded`, and is itself
    /// `succeeded` by that attempt. Returns the fragments.
    pub fn assert_each_fragment_succeeded_once(db: &Path, project: &str, expected: usize) -> Vec<DbFragment> {
        let fragments = db_fragments(db, project);
        assert_eq!(fragments.len(), expected, "fragments of {project} in the database");
        let wrong: Vec<String> = fragments
            .iter()
            .filter(|f| {
                let won: Vec<i64> = f
                    .attempts
                    .iter()
                    .filter(|a| a.outcome == "succeeded")
                    .map(|a| a.id)
                    .collect();
                won.len() != 1 || f.state != "succeeded" || f.attempt_id != Some(won[0])
            })
            .map(|f| format!("{f:?}"))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {} fragments of {project} do not have exactly one accepted success:\n{}",
            wrong.len(),
            fragments.len(),
            wrong.join("\n")
        );
        fragments
    }
}
