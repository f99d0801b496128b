//! A running daemon whose stderr is read line by line, killed when its guard is dropped.

use super::*;

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
