//! The daemons' binaries refuse bad input: one message naming the problem and the
//! documented exit code (2 for bad configuration or arguments, 1 for a runtime failure), and
//! `herzog certs` makes bundles with the right names and roles.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tests::{bin, output_within};

/// How long a daemon gets to refuse; one that accepted the input would run forever.
const LIMIT: Duration = Duration::from_secs(20);

fn daemon(name: &str, state_dir: &Path) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.arg("--state-dir")
        .arg(state_dir)
        .env_remove("HERZOG_CONFIG")
        .env_remove("HERZOG_ADDR")
        .env_remove("HERZOG_TLS")
        .env_remove("HERZOG_SERVER_TLS")
        .env_remove("KINSKI_TLS")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs herzog with `args`.
fn herzog(state_dir: &Path, args: &[&str]) -> Output {
    output_within(daemon("herzog", state_dir).args(args), LIMIT)
}

/// Runs kinski with `args`, and a herzog address where nothing listens.
fn kinski(state_dir: &Path, args: &[&str]) -> Output {
    output_within(
        daemon("kinski", state_dir).args(["--herzog", "127.0.0.1:1"]).args(args),
        LIMIT,
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the daemon exited with `code` and returns its stderr, for the message checks.
#[track_caller]
fn exits_with(out: &Output, code: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

#[test]
fn herzog_an_unknown_config_key_is_named_with_the_file_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[herzog]\nlog_level = \"info\"\nlisten_adress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains("listen_adress"), "the key is not named: {err}");
    assert!(err.contains(config.to_str().unwrap()), "the file is not named: {err}");
    assert!(!tmp.path().join("state").join("herzog.db").exists());
}

#[test]
fn an_unknown_config_key_is_reported_on_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[herzog]\nlog_level = \"info\"\nlisten_adress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains("(line 3: listen_adress"), "the key is on line 3: {err}");
}

#[test]
fn herzog_a_bad_config_value_is_named_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cluster.toml");
    // The default heartbeat_interval is 2s: a 1s timeout would lose every worker.
    std::fs::write(&config, "[herzog]\nworker_timeout = \"1s\"\n").unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains("herzog.worker_timeout"), "{err}");
    assert!(err.contains(config.to_str().unwrap()), "{err}");
    assert!(!tmp.path().join("state").join("herzog.db").exists());
}

#[test]
fn an_unparsable_config_value_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("cluster.toml");
    std::fs::write(&config, "[herzog]\nheartbeat_interval = \"soon\"\n").unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains("heartbeat_interval"), "the key is not named: {err}");
}

#[test]
fn a_missing_config_file_is_named_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("no-such.toml");
    let out = herzog(
        &tmp.path().join("state"),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains(config.to_str().unwrap()), "{err}");
}

#[test]
fn an_address_in_use_is_named_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let bundle = tmp.path().join("herzog.pem");
    let ca = common::tls::Authority::generate(1).unwrap();
    std::fs::write(&bundle, ca.issue("herzog", common::tls::Role::Coordinator, 1).unwrap()).unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &["--listen", &addr, "--tls", bundle.to_str().unwrap()],
    );
    let err = exits_with(&out, 1);
    assert!(err.contains(&format!("failed to listen on {addr}")), "{err}");
    drop(taken);
}

#[test]
fn an_unknown_flag_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = herzog(&tmp.path().join("state"), &["--listen", "127.0.0.1:0", "--slots", "3"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("--slots"), "{err}");
}

#[test]
fn without_a_certificate_herzog_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let out = herzog(&tmp.path().join("state"), &["--listen", "127.0.0.1:0"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("herzog certs init"), "{err}");
    // A worker's bundle is not herzog's.
    let ca = common::tls::Authority::generate(1).unwrap();
    let bundle = tmp.path().join("w.pem");
    std::fs::write(&bundle, ca.issue("w", common::tls::Role::Worker, 1).unwrap()).unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &["--listen", "127.0.0.1:0", "--tls", bundle.to_str().unwrap()],
    );
    let err = exits_with(&out, 2);
    assert!(
        err.contains("is a worker certificate for 'w'") && err.contains("herzog.pem"),
        "{err}"
    );
    assert!(
        !tmp.path().join("state").exists(),
        "herzog made its state directory first"
    );
}

#[test]
fn certs_init_and_issue_make_bundles_with_names_and_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    let state = tmp.path().join("state");
    let out = herzog(&state, &["certs", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = herzog(
        &state,
        &[
            "certs", "issue", "euclid", "--role", "worker", "--dir", d, "--days", "30",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (file, name, role) in [
        ("herzog.pem", "herzog", common::tls::Role::Coordinator),
        ("admin.pem", "admin", common::tls::Role::Admin),
        ("euclid.pem", "euclid", common::tls::Role::Worker),
    ] {
        let id = common::tls::Identity::load(&dir.join(file)).unwrap();
        assert_eq!((id.name.as_str(), id.role), (name, role), "{file}");
    }
    // A second init would orphan every certificate issued so far.
    let out = herzog(&state, &["certs", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already holds a CA"), "{}", stderr(&out));
    let out = herzog(&state, &["certs", "issue", "x", "--role", "root", "--dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown role 'root'"), "{}", stderr(&out));
}

/// The mode bits (permissions only) of `path`, not following a link.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("failed to look at {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every file of a PKI directory with its bytes and mode.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, (Vec<u8>, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, (std::fs::read(&path).unwrap(), mode(&path)))
        })
        .collect()
}

/// `herzog certs init --dir DIR` run under `umask`, as a shell would start it.
fn certs_init_under_umask(state: &Path, dir: &Path, umask: &str) -> Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(bin("herzog"))
        .args(["--state-dir"])
        .arg(state)
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .env_remove("HERZOG_CONFIG");
    output_within(&mut cmd, LIMIT)
}

#[test]
fn certs_issue_refuses_the_names_init_wrote_and_never_touches_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    let state = tmp.path().join("state");
    let out = herzog(&state, &["certs", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(&dir);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        ["admin.pem", "ca.key", "ca.pem", "herzog.pem"]
    );
    // `issue ca` wrote a private key over the CA's certificate; `issue herzog` and `issue
    // admin` replaced herzog's and the first admin's bundles. --force changes none of that.
    for name in ["ca", "herzog", "admin", "CA", "Herzog"] {
        for role in ["admin", "worker"] {
            for force in [false, true] {
                let mut args = vec!["certs", "issue", name, "--role", role, "--dir", d];
                if force {
                    args.push("--force");
                }
                let out = herzog(&state, &args);
                let err = exits_with(&out, 2);
                assert!(err.contains("reserved"), "{args:?}: {err}");
                assert_eq!(snapshot(&dir), before, "{args:?} changed the PKI directory");
            }
        }
    }
}

#[test]
fn certs_issue_refuses_an_existing_bundle_unless_forced_and_a_forced_one_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    let state = tmp.path().join("state");
    let out = herzog(&state, &["certs", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let issue = ["certs", "issue", "euclid", "--role", "worker", "--dir", d];
    let out = herzog(&state, &issue);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = dir.join("euclid.pem");
    assert_eq!(mode(&bundle), 0o600);
    // Made readable by someone, say by a careless copy.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644)).unwrap();
    let first = std::fs::read(&bundle).unwrap();

    let out = herzog(&state, &issue);
    let err = exits_with(&out, 2);
    assert!(
        err.contains("euclid.pem") && err.contains("exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        first,
        "the bundle was replaced without --force"
    );

    let mut forced = issue.to_vec();
    forced.push("--force");
    let out = herzog(&state, &forced);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(std::fs::read(&bundle).unwrap(), first, "--force kept the old bundle");
    assert_eq!(mode(&bundle), 0o600, "a replaced bundle keeps the old file's mode");
    let id = common::tls::Identity::load(&bundle).unwrap();
    assert_eq!((id.name.as_str(), id.role), ("euclid", common::tls::Role::Worker));
    // Nothing else is left behind (no temporary file).
    assert_eq!(snapshot(&dir).len(), 5, "{:?}", snapshot(&dir).keys());
}

#[test]
fn certs_issue_never_writes_through_a_symbolic_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    let state = tmp.path().join("state");
    let out = herzog(&state, &["certs", "init", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("euclid.pem")).unwrap();
    // A dangling link: following it would create the file it names.
    let nowhere = tmp.path().join("created-through-a-link");
    std::os::unix::fs::symlink(&nowhere, dir.join("newton.pem")).unwrap();
    for name in ["euclid", "newton"] {
        for force in [false, true] {
            let mut args = vec!["certs", "issue", name, "--role", "worker", "--dir", d];
            if force {
                args.push("--force");
            }
            let out = herzog(&state, &args);
            let err = exits_with(&out, 2);
            assert!(err.contains("symbolic link"), "{args:?}: {err}");
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!nowhere.exists(), "a bundle was written through a dangling link");
}

#[test]
fn certs_init_makes_a_private_directory_and_exact_modes_whatever_the_umask() {
    for umask in ["000", "077"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etc").join("pki");
        let out = certs_init_under_umask(&tmp.path().join("state"), &dir, umask);
        assert_eq!(out.status.code(), Some(0), "umask {umask}: {}", stderr(&out));
        assert_eq!(mode(&dir), 0o700, "umask {umask}: the PKI directory");
        for (file, expected) in [
            ("ca.key", 0o600),
            ("herzog.pem", 0o600),
            ("admin.pem", 0o600),
            ("ca.pem", 0o644),
        ] {
            assert_eq!(mode(&dir.join(file)), expected, "umask {umask}: {file}");
        }
    }
    // A PKI directory others can write to is refused: they could swap the files in it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = certs_init_under_umask(&tmp.path().join("state"), &dir, "022");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = herzog(
        &tmp.path().join("state"),
        &[
            "certs",
            "issue",
            "euclid",
            "--role",
            "worker",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains("writable by other users"), "{err}");
    assert!(!dir.join("euclid.pem").exists());
}

fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn kinski_an_unknown_config_key_is_named_with_the_file_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let path = config(tmp.path(), "[kinski]\nslot = 2\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path, "--name", "w1"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("`slot`"), "the key is not named: {err}");
    assert!(err.contains(&path), "the file is not named: {err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn kinski_a_bad_config_value_is_named_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    // The default heartbeat_interval is 2s: a 1s timeout is refused by every daemon.
    let path = config(tmp.path(), "[herzog]\nworker_timeout = \"1s\"\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path, "--name", "w1"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("herzog.worker_timeout"), "{err}");
    assert!(err.contains(&path), "{err}");

    let path = config(tmp.path(), "[kinski]\nslots = 0\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path, "--name", "w1"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("kinski.slots"), "{err}");

    let path = config(tmp.path(), "[kinski]\nname = \"a b\"\n");
    let out = kinski(&tmp.path().join("state"), &["--config", &path]);
    let err = exits_with(&out, 2);
    assert!(err.contains("kinski.name"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn a_bad_name_flag_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "a b", "--slots", "1"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("'a b' is not a valid name"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn zero_slots_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "w1", "--slots", "0"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("--slots"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn a_slot_count_that_is_not_a_number_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "w1", "--slots", "many"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("many"), "{err}");
}

#[test]
fn a_missing_or_wrong_certificate_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kinski(&tmp.path().join("state"), &["--name", "w1"]);
    let err = exits_with(&out, 2);
    assert!(err.contains("herzog certs issue"), "{err}");

    let ca = common::tls::Authority::generate(1).unwrap();
    let bundle = tmp.path().join("w2.pem");
    std::fs::write(&bundle, ca.issue("w2", common::tls::Role::Worker, 1).unwrap()).unwrap();
    let out = kinski(
        &tmp.path().join("state"),
        &["--name", "w1", "--tls", bundle.to_str().unwrap()],
    );
    let err = exits_with(&out, 2);
    assert!(err.contains("'w2'") && err.contains("'w1'"), "{err}");
    assert!(!tmp.path().join("state").exists(), "kinski went on to set up its state");
}

#[test]
fn herzog_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let mut cmd = daemon("herzog", &tmp.path().join("state"));
    cmd.args(["--listen", "127.0.0.1:0", "--tls"])
        .arg(tests::bundle(tmp.path(), "herzog", "coordinator"))
        .env("NOTIFY_SOCKET", &socket_path);
    let mut herzog = tests::Daemon::spawn("herzog", cmd);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within the limit");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means listening: the line saying so was logged before.
    herzog.wait_for("herzog listening", LIMIT);
    let status = herzog.signal_and_wait(nix::sys::signal::Signal::SIGTERM, LIMIT);
    assert!(status.success(), "herzog did not stop cleanly on SIGTERM: {status}");
    let n = socket.recv(&mut buf).expect("STOPPING=1 within the limit");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
}

/// With `WatchdogSec=` in its unit, herzog pings systemd's watchdog while its loop turns, and
/// stops pinging while a commit hangs (here: another connection holds the database's write
/// lock), so systemd restarts a hung herzog; pings resume once the commit goes through.
#[test]
fn herzog_pings_systemds_watchdog_only_while_its_commits_go_through() {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let state = tmp.path().join("state");
    let mut cmd = daemon("herzog", &state);
    cmd.args(["--listen", "127.0.0.1:0", "--tls"])
        .arg(tests::bundle(tmp.path(), "herzog", "coordinator"))
        .env("NOTIFY_SOCKET", &socket_path)
        // Two seconds: a ping every half second; a commit waiting a second counts as hung.
        .env("WATCHDOG_USEC", "2000000");
    let mut herzog = tests::Daemon::spawn("herzog", cmd);
    let line = herzog.wait_for("herzog listening", LIMIT);
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .expect("an address")
        .to_string();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within the limit");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The loop runs (and may ping) from just before herzog says it is ready.
    while next() != "READY=1\n" {}
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1\n");
    }

    // Hold the write lock, then ask for something that must be committed.
    let db = rusqlite::Connection::open(state.join("herzog.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let inputs = tests::make_inputs(&tmp.path().join("p"), 2);
    let hz = Command::new(bin("hz"))
        .args(["--herzog", &addr, "--tls"])
        .arg(tests::bundle(tmp.path(), "admin", "admin"))
        .arg("action")
        .arg(&inputs)
        .arg("true")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    herzog.wait_for("a commit hangs", LIMIT);
    // What was sent before the loop saw the hang; after it, nothing until the lock goes.
    socket.set_nonblocking(true).unwrap();
    while socket.recv(&mut buf).is_ok() {}
    std::thread::sleep(Duration::from_millis(1500));
    let during = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(
        during.is_err(),
        "herzog pinged the watchdog while its commit hung: {during:?}"
    );
    socket.set_nonblocking(false).unwrap();

    db.execute_batch("ROLLBACK").unwrap();
    let out = hz.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hz action: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within the limit");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "WATCHDOG=1\n", "the pings did not resume");
    let status = herzog.signal_and_wait(nix::sys::signal::Signal::SIGTERM, LIMIT);
    assert!(status.success(), "herzog did not stop cleanly on SIGTERM: {status}");
}
