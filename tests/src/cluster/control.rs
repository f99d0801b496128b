//! Fault injection on a running cluster: crashes and restarts of single daemons on their
//! own state directories, stopped processes, and herzog's database read directly.

use super::*;

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
