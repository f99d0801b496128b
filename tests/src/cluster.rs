//! herzog plus workers, each a real process, in a temporary directory: starting them, hz
//! against them, and killing everything when the cluster is dropped.

use super::*;

mod control;

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
        self.stop_herzog();
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
