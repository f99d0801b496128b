//! Setting a cluster up as the README says, through the real binaries: herzog reads its own
//! certificate variable (not hz's `HERZOG_TLS`) and checks everything before it makes anything
//! on disk; kinski names a wrong certificate and a bad address; a program whose interpreter is
//! missing is named as such, and `hz logs` says that it never ran.

use std::path::Path;
use std::process::Output;
use tests::by_path::clean_command;
use tests::{Cluster, Daemon, STARTUP, bin, bundle, output_within, write_script};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs herzog on a free port with its state in `state` and `args`, `env` set; it must refuse.
fn herzog_refuses(state: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = clean_command(&bin("herzog"));
    cmd.args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output_within(&mut cmd, STARTUP);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        !state.exists(),
        "herzog made {} before refusing: {err}",
        state.display()
    );
    err
}

#[test]
fn herzog_does_not_take_hzs_certificate_variable_and_refuses_an_admin_bundle_before_making_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = bundle(tmp.path(), "admin", "admin");
    let state = tmp.path().join("state");
    // The README's `export HERZOG_TLS=.../admin.pem` is for hz: herzog does not read it.
    let err = herzog_refuses(&state, &[], &[("HERZOG_TLS", &admin)]);
    assert!(err.contains("no certificate"), "{err}");
    // Given the admin bundle on purpose, herzog says what it is and which one it needs.
    let err = herzog_refuses(&state, &[], &[("HERZOG_SERVER_TLS", &admin)]);
    assert!(err.contains("is an admin certificate for 'admin'"), "{err}");
    assert!(err.contains("herzog.pem"), "{err}");
    let err = herzog_refuses(&state, &["--tls", admin.to_str().unwrap()], &[]);
    assert!(err.contains("is an admin certificate"), "{err}");
    // A missing bundle is named as the certificate bundle.
    let err = herzog_refuses(&state, &["--tls", "/no/such/herzog.pem"], &[]);
    assert!(err.contains("certificate bundle /no/such/herzog.pem"), "{err}");

    // Its own variable works.
    let mut cmd = clean_command(&bin("herzog"));
    cmd.args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .env("HERZOG_SERVER_TLS", bundle(tmp.path(), "herzog", "coordinator"))
        .env("HERZOG_TLS", &admin);
    let mut herzog = Daemon::spawn("herzog", cmd);
    herzog.wait_for("herzog listening", STARTUP);
}

#[test]
fn kinski_names_a_wrong_certificate_with_its_article_and_refuses_an_address_without_a_port() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = bundle(tmp.path(), "admin", "admin");
    let state = tmp.path().join("state");
    let kinski = |args: &[&str]| {
        let mut cmd = clean_command(&bin("kinski"));
        cmd.arg("--state-dir").arg(&state).args(args);
        output_within(&mut cmd, STARTUP)
    };
    let out = kinski(&["--herzog", "127.0.0.1:1", "--tls", admin.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is an admin certificate for 'admin'"), "{err}");

    let worker = bundle(tmp.path(), "w1", "worker");
    let out = kinski(&["--herzog", "127.0.0.1", "--tls", worker.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no port") && err.contains("127.0.0.1:7373"), "{err}");
    assert!(!state.exists(), "kinski made its state directory before refusing");

    let out = output_within(clean_command(&bin("kinski")).arg("--help"), STARTUP);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("the name in the --tls certificate"), "{help}");
}

#[test]
fn a_missing_interpreter_is_named_and_hz_logs_says_the_fragment_never_ran() {
    let cluster = Cluster::start(&[("euclid", 1)]);
    cluster.inputs("data", 1);
    let script = cluster.dir().join("count.sh");
    write_script(&script, "#!/nonexistent/bin/herzog-sh\nwc -c \"$1\"\n");
    let name = cluster.hz_ok(&["action", "data", script.to_str().unwrap(), "--max-attempts", "1"]);
    assert_eq!(name, "data\n");
    let out = cluster.hz(&["progress", "data", "--watch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let fragments = cluster.hz_ok(&["fragments", "data"]);
    assert!(
        fragments.contains("interpreter /nonexistent/bin/herzog-sh not found"),
        "{fragments}"
    );
    let out = cluster.hz(&["logs", "data", "f0000"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("never ran"), "{err}");
    assert!(
        err.contains("interpreter /nonexistent/bin/herzog-sh not found"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn hz_logs_of_a_fragment_that_has_not_run_says_so() {
    let cluster = Cluster::start(&[]);
    cluster.inputs("data", 1);
    cluster.hz_ok(&["action", "data", "wc -c"]);
    let out = cluster.hz(&["logs", "data", "f0000"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("has not run yet"), "{err}");
}
