//! The run settings `hz action` exposes, through the real path (hz, herzog, kinski):
//! `--success-codes`, `--umask`, `--cwd`, `--stdout discard`, `--stop-signal`, shown in
//! `hz list --json`, and refused with a clear error when they cannot be applied.

use common::run_settings::Sink;
use common::wire::{FragmentInfo, FragmentStateKind, ProjectProgress};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tests::{Cluster, eventually, write_script};

/// Exits 1 after printing on both streams, making a file in the output folder and noting
/// where it ran.
const EXITS_ONE: &str = r#"#!/bin/sh
echo "out $HERZOG_FRAGMENT"
echo "err $HERZOG_FRAGMENT" >&2
: > "$HERZOG_OUTPUT_DIR/made.$HERZOG_FRAGMENT"
pwd > "$HERZOG_OUTPUT_DIR/cwd.$HERZOG_FRAGMENT"
exit 1
"#;

#[test]
fn success_codes_umask_cwd_and_discarded_stdout_apply_to_every_attempt() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    cluster.inputs("in", 2);
    let program = cluster.dir().join("exits-one.sh");
    write_script(&program, EXITS_ONE);
    let program = program.to_str().unwrap();
    let work = cluster.dir().join("work");
    std::fs::create_dir(&work).unwrap();

    // Without --success-codes, exit 1 fails: the control.
    cluster.hz_ok(&["action", "in", program, "--name", "plain"]);
    let out = cluster.hz(&["progress", "plain", "--watch"]);
    assert_eq!(out.status.code(), Some(1), "exit 1 fails by default");

    cluster.hz_ok(&[
        "action",
        "in",
        program,
        "--name",
        "set",
        "--success-codes",
        "0,1",
        "--umask",
        "077",
        "--cwd",
        "work",
        "--stdout",
        "discard",
    ]);
    cluster.hz_ok(&["progress", "set", "--watch"]);
    let fragments: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "set"]);
    assert!(
        fragments.iter().all(|f| f.state == FragmentStateKind::Succeeded),
        "exit 1 counts as success: {fragments:?}"
    );
    let results = cluster.herzog_state().join("results/set");
    for f in &fragments {
        let made = results.join(format!("output/made.{}", f.name));
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} was made under umask 077", made.display());
        let cwd = std::fs::read_to_string(results.join(format!("output/cwd.{}", f.name))).unwrap();
        assert_eq!(cwd.trim(), work.canonicalize().unwrap().to_str().unwrap());
        let attempt = f.attempt.unwrap();
        let log = |stream: &str| results.join(format!("logs/{}.{attempt}.{stream}", f.name));
        assert!(!log("stdout").exists(), "a discarded stdout leaves no log");
        assert_eq!(
            std::fs::read_to_string(log("stderr")).unwrap(),
            format!("err {}\n", f.name)
        );
    }
    // The spec is shown as given.
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    let spec = list
        .iter()
        .find(|p| p.name == "set")
        .and_then(|p| p.spec.clone())
        .unwrap();
    assert_eq!(spec.success_codes, [0, 1]);
    assert_eq!(spec.settings.umask, Some(0o77));
    assert_eq!(
        (spec.settings.stdout, spec.settings.stderr),
        (Sink::Discard, Sink::Keep)
    );
    assert_eq!(spec.cwd.as_deref(), Some(work.canonicalize().unwrap().as_path()));
    let json = cluster.hz_ok(&["list", "--json"]);
    assert!(
        json.contains(r#""umask": "077""#) && json.contains(r#""stdout": "discard""#),
        "{json}"
    );

    // What cannot be applied is refused before anything is added.
    for (flags, says) in [
        (&["--stop-signal", "TERMINATE"][..], "is not a signal"),
        (&["--stop-signal", "99"], "is not a signal"),
        (&["--umask", "9"], "octal mask"),
        (&["--success-codes", "0,x"], "is not an exit code"),
        (&["--success-codes", "300"], "is not an exit code"),
        (&["--stdout", "file"], "expected keep or discard"),
        (&["--cwd", "no-such-dir"], "no such directory"),
    ] {
        let mut args = vec!["action", "in", program, "--name", "bad"];
        args.extend(flags);
        let err = cluster.hz_fails(&args, 2);
        assert!(err.contains(says), "{flags:?} should say {says:?}: {err}");
    }
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert!(list.iter().all(|p| p.name != "bad"), "{list:?}");
}

/// Traps USR1 (and only USR1): records that it got it, then exits.
const TRAPS_USR1: &str = r#"#!/bin/sh
trap 'echo USR1 > "$MARKS/$HERZOG_FRAGMENT.got"; exit 0' USR1
echo ready > "$MARKS/$HERZOG_FRAGMENT.ready"
while :; do sleep 0.1; done
"#;

#[test]
fn the_stop_signal_reaches_a_trapped_program_when_its_project_is_removed() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    cluster.inputs("in", 2);
    let program = cluster.dir().join("traps.sh");
    write_script(&program, TRAPS_USR1);
    let marks = cluster.dir().join("markers");
    let marks_env = format!("MARKS={}", marks.display());
    // A grace far beyond the wait below: only the stop signal itself can end them in time.
    cluster.hz_ok(&[
        "action",
        "in",
        program.to_str().unwrap(),
        "--stop-signal",
        "usr1",
        "--grace",
        "120s",
        "--env",
        &marks_env,
    ]);
    eventually("both programs to be ready", Duration::from_secs(20), || {
        (marks.join("f0000.ready").exists() && marks.join("f0001.ready").exists()).then_some(())
    });
    cluster.hz_ok(&["remove", "in"]);
    for f in ["f0000", "f0001"] {
        let got = eventually(&format!("{f} to get USR1"), Duration::from_secs(20), || {
            std::fs::read_to_string(marks.join(format!("{f}.got"))).ok()
        });
        assert_eq!(got, "USR1\n");
    }
}
