//! Runs the real `hz` binary on input it must refuse without a daemon: one line on stderr
//! naming the problem, and the documented exit code.

use std::process::{Command, Output};
use std::sync::LazyLock;

/// An admin bundle from a throwaway CA, so the cases below get as far as dialing.
static ADMIN: LazyLock<(tempfile::TempDir, String)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::tls::Authority::generate(1).unwrap();
    let path = dir.path().join("admin.pem");
    std::fs::write(&path, ca.issue("tester", common::tls::Role::Admin, 1).unwrap()).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
});

fn hz_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hz"));
    c.env_remove("HERZOG_ADDR")
        .env_remove("HERZOG_CONFIG")
        .env("HERZOG_TLS", &ADMIN.1);
    c
}

fn hz(args: &[&str]) -> Output {
    hz_command().args(args).output().expect("failed to run hz")
}

#[test]
fn no_certificate_exits_2_and_says_how_to_get_one() {
    let out = hz_command()
        .env_remove("HERZOG_TLS")
        .env("HOME", "/nonexistent-home")
        .args(["--herzog", "127.0.0.1:1", "list"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--tls") && err.contains("herzog certs issue"), "{err}");

    let out = hz(&["--tls", "/no/such/bundle.pem", "list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/no/such/bundle.pem"), "{err}");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_directory_is_named_and_exits_2() {
    let out = hz(&["action", "/no/such/dir-hz-test", "wc -l"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("hz: "), "{err}");
    assert!(err.contains("/no/such/dir-hz-test"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unreachable_herzog_is_named_and_exits_3() {
    for args in [
        &["--herzog", "127.0.0.1:1", "list"][..],
        &["progress", "--herzog", "127.0.0.1:1"][..],
    ] {
        let out = hz(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.starts_with("hz: ") && err.contains("127.0.0.1:1"), "{err}");
    }
}

#[test]
fn the_flag_beats_the_environment() {
    let out = hz_command()
        .args(["workers", "--herzog", "127.0.0.1:1"])
        .env("HERZOG_ADDR", "127.0.0.1:2")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn the_config_address_is_used_and_unknown_keys_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[herzog]\naddress = \"127.0.0.1:1\"\n").unwrap();
    let out = hz(&["--config", good.to_str().unwrap(), "active"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[herzog]\nadress = \"127.0.0.1:1\"\n").unwrap();
    let out = hz(&["--config", bad.to_str().unwrap(), "list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("hz: ") && err.contains("adress"), "{err}");
}

#[test]
fn an_invalid_name_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = hz(&["action", dir.path().to_str().unwrap(), "wc -l", "--name", "bad name"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("'bad name' is not a valid name"), "{err}");
}

#[test]
fn a_missing_program_exits_2_before_dialling() {
    let dir = tempfile::tempdir().unwrap();
    let out = hz(&[
        "--herzog",
        "127.0.0.1:1",
        "action",
        dir.path().to_str().unwrap(),
        "./no-such-tool {}",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no-such-tool") && err.contains("not found"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let out = hz(&["fragments"]);
    assert_eq!(out.status.code(), Some(2));
    let out = hz(&["action", "d", "p", "--env", "novalue"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = hz(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes:") && help.contains("herzog unreachable"),
        "{help}"
    );
}

#[test]
fn local_refuses_a_missing_directory_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = hz(&[
        "local",
        "/no/such/dir-hz-test",
        "wc -l",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!state.exists());
}

/// A "herzog" that takes each connection and closes it at once, as a dying herzog does:
/// `read_first` reads the TLS hello first (the client sees end of file), else the socket is
/// closed with the hello unread (the client sees a reset).
fn closing_listener(read_first: bool) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if read_first {
                let _ = stream.read(&mut [0u8; 4096]);
            }
            drop(stream);
        }
    });
    addr
}

#[test]
fn a_connection_closed_or_reset_during_the_handshake_is_unreachable_not_refused() {
    for read_first in [true, false] {
        let addr = closing_listener(read_first);
        let out = hz(&["--herzog", &addr, "list"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "read_first={read_first}: {err}");
        assert!(err.contains(&addr), "{err}");
        assert!(!err.contains("certificate"), "{err}");
    }
}

#[test]
fn an_address_without_a_port_is_bad_input() {
    let out = hz(&["--herzog", "127.0.0.1", "list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no port") && err.contains("127.0.0.1:7373"), "{err}");
    let out = hz(&["--herzog", "127.0.0.1:http", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_missing_certificate_bundle_is_named_as_such() {
    let out = hz(&["--herzog", "127.0.0.1:1", "--tls", "/no/such/admin.pem", "list"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("certificate bundle /no/such/admin.pem"), "{err}");
}
