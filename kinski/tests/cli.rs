//! The kinski binary refuses bad input before it dials herzog: one message naming the problem
//! and exit code 2 (bad configuration or arguments).
//!
//! Being an integration test of this package, this file also makes `cargo test` build the
//! kinski binary, which the `tests` crate starts.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long kinski gets to refuse; a kinski that accepted the input would retry forever.
const LIMIT: Duration = Duration::from_secs(20);

/// Runs kinski with `args` (and a herzog address where nothing listens), killing it if it has not exited within [`LIMIT`].
fn kinski(state_dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kinski"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--herzog", "127.0.0.1:1"])
        .args(args)
        .env_remove("HERZOG_CONFIG")
        .env_remove("HERZOG_ADDR")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start kinski");
    let (tx, rx) = mpsc::channel();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
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
    // Both pipes reach end of file when kinski exits.
    for _ in 0..2 {
        if rx.recv_timeout(LIMIT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let err = readers.into_iter().nth(1).unwrap().join().unwrap();
            panic!(
                "kinski {args:?} still ran after {LIMIT:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
    }
    let status = child.wait().unwrap();
    let mut outputs = readers.into_iter().map(|r| r.join().unwrap());
    Output {
        status,
        stdout: outputs.next().unwrap(),
        stderr: outputs.next().unwrap(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn an_unknown_config_key_is_named_with_the_file_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let path = config(tmp.path(), "[kinski]\nslot = 2\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path, "--name", "w1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`slot`"), "the key is not named: {err}");
    assert!(err.contains(&path), "the file is not named: {err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn a_bad_config_value_is_named_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    // The default heartbeat_interval is 2s: a 1s timeout is refused by every daemon.
    let path = config(tmp.path(), "[herzog]\nworker_timeout = \"1s\"\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path, "--name", "w1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("herzog.worker_timeout"), "{err}");
    assert!(err.contains(&path), "{err}");

    let path = config(tmp.path(), "[kinski]\nslots = 0\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path, "--name", "w1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("kinski.slots"), "{err}");

    let path = config(tmp.path(), "[kinski]\nname = \"a b\"\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("kinski.name"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn a_bad_name_flag_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "a b", "--slots", "1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("'a b' is not a valid name"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn zero_slots_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "w1", "--slots", "0"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--slots"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn a_slot_count_that_is_not_a_number_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "w1", "--slots", "many"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("many"), "{err}");
}

#[test]
fn a_missing_or_wrong_certificate_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "w1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("herzog certs issue"), "{err}");

    let ca = common::tls::Authority::generate(1).unwrap();
    let bundle = tmp.path().join("w2.pem");
    std::fs::write(&bundle, ca.issue("w2", common::tls::Role::Worker, 1).unwrap()).unwrap();
    let out = kinski(
        &tmp.path().join("state"),
        &["--name", "w1", "--tls", bundle.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("'w2'") && err.contains("'w1'"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}
