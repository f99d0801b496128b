//! `hz logs PROJECT FRAGMENT -f` on real daemons (issue 12): a running attempt's output read
//! from its worker through herzog as it is written, from its start, until the attempt ends;
//! then hz exits 0 if it succeeded, 1 if it failed. A fragment that runs nothing has its logs
//! printed, as `hz logs` prints them.
//!
//! Each program prints, then blocks reading a FIFO the test holds (its gate): the test's open
//! of the FIFO for writing returns once the program has opened it, so the test knows the
//! program waits there, and what the follower prints before the test writes the gate was
//! followed live. No sleeps.
//!
//! ```text
//! cargo build -p herzog -p kinski -p cli && cargo test -p tests --test logs_follow -- --nocapture
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use tests::{Cluster, write_script};

const LIMIT: Duration = Duration::from_secs(30);

/// Prints a line on stdout and one on stderr naming its input, waits at the gate
/// `gates/<input>`, prints a second line, and exits with the code its input holds.
const PROGRAM: &str = r#"#!/bin/sh
name=$(basename "$1")
echo "first line of $name"
echo "err line of $name" >&2
read go < "@GATES@/$name"
echo "second line of $name"
exit "$(cat "$1")"
"#;

/// Opens the gate for writing on a thread of its own: the open returns once the program has
/// opened it for reading, that is, once it has printed its first lines and waits there.
fn gate_opened(path: PathBuf) -> mpsc::Receiver<std::fs::File> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("failed to open the gate {}: {e}", path.display()));
        let _ = tx.send(file);
    });
    rx
}

fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("failed to make the FIFO {}: {e}", path.display()));
}

#[test]
fn a_follower_prints_a_running_attempts_output_as_it_comes_and_exits_as_the_attempt_ends() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    let gates = cluster.dir().join("gates");
    let inputs = cluster.dir().join("inputs");
    std::fs::create_dir(&gates).expect("mkdir gates");
    std::fs::create_dir(&inputs).expect("mkdir inputs");
    for (name, code) in [("ok", "0"), ("bad", "3")] {
        std::fs::write(inputs.join(name), code).expect("write an input");
        fifo(&gates.join(name));
    }
    let program = cluster.dir().join("gated.sh");
    write_script(&program, &PROGRAM.replace("@GATES@", gates.to_str().expect("UTF-8")));
    let ok_gate = gate_opened(gates.join("ok"));
    let bad_gate = gate_opened(gates.join("bad"));
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        program.to_str().expect("UTF-8"),
        "--name",
        "p",
    ]);
    let reached = |gate: mpsc::Receiver<std::fs::File>, name: &str| {
        gate.recv_timeout(LIMIT).unwrap_or_else(|e| {
            panic!(
                "{name}'s program did not reach its gate ({e}):\n{}\n{}",
                cluster.hz_ok(&["fragments", "p"]),
                String::from_utf8_lossy(&cluster.hz(&["logs", "p", name]).stderr)
            )
        })
    };
    let mut ok_gate = reached(ok_gate, "ok");
    let mut bad_gate = reached(bad_gate, "bad");

    // Both programs wait at their gates: what the followers print now was read live, from
    // the start of each stream.
    let mut ok = cluster.hz_spawn(&["logs", "p", "ok", "-f"]);
    assert_eq!(ok.line("line", LIMIT), "first line of ok");
    let mut bad = cluster.hz_spawn(&["logs", "p", "0", "-f", "--stderr"]);
    assert_eq!(bad.line("line", LIMIT), "err line of bad");
    // -c: only the last bytes written so far.
    let mut tail = cluster.hz_spawn(&["logs", "p", "ok", "-f", "-c", "8"]);
    assert_eq!(tail.line("", LIMIT), "e of ok", "the last 8 bytes, newline included");

    // The gate opens: the second line comes, the attempt ends and the follower with it,
    // exiting 0 for a success.
    ok_gate.write_all(b"go\n").expect("open the gate");
    drop(ok_gate);
    assert_eq!(ok.line("line", LIMIT), "second line of ok");
    let status = ok.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", ok.stderr());
    assert_eq!(tail.line("line", LIMIT), "second line of ok");
    assert_eq!(tail.wait_exit(LIMIT).code(), Some(0), "stderr:\n{}", tail.stderr());

    // A failure: 1, and why on stderr.
    bad_gate.write_all(b"go\n").expect("open the gate");
    drop(bad_gate);
    let status = bad.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "stderr:\n{}", bad.stderr());
    let said = bad.stderr();
    assert!(said.contains("fragment 0 of project p failed: exited with 3"), "{said}");

    // Not running any more: its logs, as `hz logs` prints them, and the same exit codes.
    let done = cluster.hz(&["logs", "p", "ok", "-f"]);
    assert_eq!(done.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "first line of ok\nsecond line of ok\n"
    );
    assert!(String::from_utf8_lossy(&done.stderr).contains("not running (it succeeded)"));
    let failed = cluster.hz(&["logs", "p", "bad", "-f", "--stderr"]);
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "err line of bad\n");

    // Bad input says what is wrong.
    let err = cluster.hz_fails(&["logs", "p", "nope", "-f"], 2);
    assert!(err.contains("project 'p' has no fragment 'nope'"), "{err}");
    let err = cluster.hz_fails(&["logs", "p", "ok", "-c", "8"], 2);
    assert!(err.contains("--follow"), "{err}");
    let err = cluster.hz_fails(&["logs", "p", "ok", "-f", "--attempt", "1"], 2);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = cluster.hz_fails(&["logs", "p", "ok", "-f", "-c", "lots"], 2);
    assert!(err.contains("-c lots"), "{err}");
}
