//! `hz local` end to end: the real binary starts herzog and kinski in-process (talking over
//! in-memory channels, on no port), runs a tiny project and sums it up.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `hz local` in `cwd`, killing it if it takes longer than a minute.
fn hz_local(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hz"));
    cmd.arg("local").args(args).current_dir(cwd);
    tests::output_within(&mut cmd, Duration::from_secs(60))
}

fn inputs(dir: &Path) {
    std::fs::create_dir(dir.join("in")).unwrap();
    for i in 0..3 {
        std::fs::write(dir.join("in").join(format!("f{i}.txt")), format!("line {i}\n")).unwrap();
    }
}

#[test]
fn a_project_runs_to_the_end_and_is_summed_up() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let out = hz_local(tmp.path(), &["in", "wc -l", "--slots", "2"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 fragments, 3 succeeded, 0 failed"), "{stdout}");
    assert!(tmp.path().join("in.hz").is_dir());
}

#[test]
fn failures_are_listed_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let out = hz_local(tmp.path(), &["in", "false", "--max-attempts", "1", "--state-dir", "st"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 failed") && stdout.contains("failed fragments"),
        "{stdout}"
    );
    assert!(tmp.path().join("st").is_dir());
}

#[test]
fn ctrl_c_stops_the_daemons_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_hz"))
        .args(["local", "in", "sleep 30 #", "--slots", "1"])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start hz");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("added project") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("hz local ended early: {seen}");
        }
        seen += &line;
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "hz local did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted"), "{seen}{rest}");
}
