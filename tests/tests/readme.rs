//! The README's cluster walkthrough ("Using a cluster") works when pasted line by line: this
//! test takes that code block from README.md and types it, a line at a time, into one bash
//! (`set -e`, so any failing command ends the walk), with the real herzog, kinski and hz.
//!
//! What differs from a person's machine is substituted mechanically, and only this:
//! - `/etc/herzog` and `/var/lib/` get a temporary directory as prefix;
//! - `:7373` becomes a free port, and `0.0.0.0` becomes `127.0.0.1` (a test listens on
//!   loopback only);
//! - `hzrun`, the user programs run as, becomes the user running the test;
//! - HOME is a temporary directory, PATH starts with the binaries cargo built, and the shell
//!   starts in the repository's root (where `examples/` is).
//!
//! A line ending in `&` starts a daemon: as a person would before pasting the next line, the
//! test waits until that daemon says it is ready (herzog: listening; kinski: registered).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use tests::{HZ_LIMIT, STARTUP, bin};

/// The first ```sh block after the heading `## Using a cluster`.
fn walkthrough(readme: &str) -> Vec<String> {
    let section = &readme[readme
        .find("\n## Using a cluster")
        .expect("README has a '## Using a cluster' section")..];
    let start = section.find("```sh\n").expect("the section has a ```sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block is closed");
    section[start..end].lines().map(str::to_string).collect()
}

/// The substitutions of the module's doc, applied to one line.
fn substitute(line: &str, root: &Path, port: u16, user: &str) -> String {
    let root = root.display().to_string();
    line.replace("/etc/herzog", &format!("{root}/etc/herzog"))
        .replace("/var/lib/", &format!("{root}/var/lib/"))
        .replace(":7373", &format!(":{port}"))
        .replace("0.0.0.0", "127.0.0.1")
        .replace("hzrun", user)
}

/// A free loopback port (taken, then released for herzog).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
        .port()
}

/// One bash fed line by line; it and the daemons it starts share a process group, which is
/// killed when this is dropped.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    /// Every line bash and its children print, stdout and stderr alike, as it comes.
    lines: Receiver<String>,
    seen: Vec<String>,
}

/// What the shell prints after each line: the marker and the line's exit status.
const MARKER: &str = "@@readme-line-done";

impl Shell {
    fn start(root: &Path, cwd: &Path) -> Shell {
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let bins = bin("hz").parent().expect("a directory").to_path_buf();
        let path = std::env::join_paths(
            std::iter::once(bins).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        let mut child = tests::by_path::clean_command(Path::new("bash"))
            .args(["--noprofile", "--norc", "-e"])
            .current_dir(cwd)
            .env("HOME", &home)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("failed to start bash");
        let (tx, lines) = channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(tests::strip_ansi(&line)).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        Shell {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`, counting those seen from index `from` on,
    /// failing the test after `limit`.
    fn wait_for(&mut self, from: usize, needle: &str, limit: Duration, what: &str) -> String {
        if let Some(line) = self.seen[from.min(self.seen.len())..]
            .iter()
            .find(|l| l.contains(needle))
        {
            return line.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| {
                    panic!(
                        "{what}: no {needle:?} within {limit:?} ({e}); the shell printed:\n{}",
                        self.seen.join("\n")
                    )
                });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Types `line` and waits until it has run; returns what it printed.
    fn run(&mut self, line: &str) -> Vec<String> {
        writeln!(self.stdin, "{line}\necho {MARKER} $?").expect("bash has gone");
        let from = self.seen.len();
        let done = self.wait_for(from, MARKER, HZ_LIMIT, line);
        assert!(done.ends_with(&format!("{MARKER} 0")), "{line}: {done}");
        self.seen[from..self.seen.len() - 1].to_vec()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[test]
fn the_readmes_cluster_walkthrough_runs_when_pasted_line_by_line() {
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let (port, user) = (free_port(), kinski::user::current_user());
    let mut shell = Shell::start(&root, &repo);
    let mut printed = Vec::new();
    let mut daemons = 0;
    for line in walkthrough(&readme) {
        let code = line.split(" #").next().unwrap_or("").trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        let typed = substitute(&line, &root, port, &user);
        let from = shell.seen.len();
        let out = shell.run(&typed);
        if code.ends_with('&') {
            daemons += 1;
            let (needle, what) = match code.split_whitespace().next() {
                Some("herzog") => ("herzog listening", "herzog to listen"),
                Some("kinski") => ("registered with herzog", "kinski to register"),
                other => panic!("a daemon the test does not know: {other:?}"),
            };
            shell.wait_for(from, needle, STARTUP, what);
        }
        printed.push((typed, out));
    }
    assert_eq!(daemons, 2, "the walkthrough starts herzog and kinski in the background");
    let said = |prefix: &str| -> String {
        let (_, out) = printed
            .iter()
            .find(|(line, _)| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("the walkthrough has no line starting {prefix:?}"));
        out.join("\n")
    };
    assert!(
        said("hz action").lines().any(|l| l == "genome"),
        "{}",
        said("hz action")
    );
    let fragments = said("hz fragments genome");
    assert_eq!(
        fragments.lines().filter(|l| l.contains("succeeded")).count(),
        24,
        "{fragments}"
    );
    let logs = said("hz logs genome chr7.fa");
    assert!(logs.contains("chr7.fa\tlength="), "{logs}");
}
