//! A long-running `hz` (`hz tail -f`, `hz events --follow`) read line by line as it prints.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `hz` whose stdout and stderr lines are read as it prints them. Dropping it kills
/// it (SIGKILL) and reaps it.
pub struct Follower {
    what: String,
    child: Child,
    /// Each stdout line; disconnected at end of file.
    out: Receiver<String>,
    /// Each stderr line as it comes, and every one so far.
    err: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// Every stdout line taken so far, for failure messages.
    seen: Vec<String>,
}

impl Follower {
    pub(crate) fn spawn(what: &str, mut cmd: Command) -> Follower {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {what} ({cmd:?}): {e}"));
        let lines = |pipe: Box<dyn Read + Send>, log: Option<Arc<Mutex<Vec<String>>>>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(log) = &log {
                        log.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let out = lines(Box::new(child.stdout.take().expect("piped")), None);
        let err = lines(Box::new(child.stderr.take().expect("piped")), Some(Arc::clone(&log)));
        Follower {
            what: what.to_string(),
            child,
            out,
            err,
            log,
            seen: Vec::new(),
        }
    }

    /// Everything it printed on stderr so far.
    /// The process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// Waits until it prints a line on stdout containing `needle` and returns that line; fails
    /// the test if it exits first or prints none within `limit`.
    pub fn line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{} printed no line with {needle:?} within {limit:?} ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                    self.what,
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Waits until it prints a line on stderr containing `needle` and returns it.
    pub fn note(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .err
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "{} said nothing with {needle:?} on stderr within {limit:?} ({e:?}); stderr:\n{}",
                    self.what,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits (for end of file on stdout, at most `limit`) until it exits by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{} did not exit within {limit:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                ),
            }
        }
        let status = self.child.wait().expect("failed to reap hz");
        // Its last stderr lines may still be on their way after stdout's end: read stderr to
        // its end too, so `stderr()` holds all it said.
        while self
            .err
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        status
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
