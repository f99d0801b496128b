//! Mutual TLS and roles over real TCP: a client with no certificate, one from another CA, an
//! expired one and one of the wrong role are each refused with a message that says which, and
//! herzog's record does not change; the right ones work.
//!
//! Tests that need root are `#[ignore]`d with the reason, and fail when asked for without it;
//! CI runs as root and runs them (`cargo test -p tests --test security -- --ignored`).

use common::tls::{Authority, Identity, Role};
use common::transport::{ConnectError, Connector, Hello, dial, registry_client};
use common::wire::{Completion, Exit, ProjectProgress};
use std::path::{Path, PathBuf};
use tests::{Cluster, bundle};

fn write_bundle(dir: &Path, file: &str, pem: String) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, pem).unwrap();
    path
}

fn the_clusters_ca(cluster: &Cluster) -> Authority {
    let pki = cluster.dir().join("pki");
    Authority::load(&pki.join("ca.pem"), &pki.join("ca.key")).unwrap()
}

#[test]
fn hz_with_a_foreign_expired_or_worker_certificate_is_refused_and_nothing_changes() {
    let cluster = Cluster::start(&[]);
    cluster.inputs("kept", 3);
    cluster.hz_ok(&["action", "kept", "true"]);
    cluster.inputs("other", 2);
    let before: Vec<ProjectProgress> = cluster.hz_json(&["list"]);

    let foreign = write_bundle(
        cluster.dir(),
        "foreign.pem",
        Authority::generate(1)
            .unwrap()
            .issue("mallory", Role::Admin, 1)
            .unwrap(),
    );
    let expired = write_bundle(
        cluster.dir(),
        "expired.pem",
        the_clusters_ca(&cluster).issue("old-admin", Role::Admin, -1).unwrap(),
    );
    let worker = bundle(cluster.dir(), "euclid", "worker");
    for (tls, says) in [
        (&foreign, "not from this cluster's CA"),
        (&expired, "expired"),
        (&worker, "admin certificate"),
    ] {
        for args in [
            &["remove", "kept"][..],
            &["action", "other", "true"],
            &["schedule", "kept"],
            &["list"],
        ] {
            let out = cluster.hz_as(tls, args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(5), "{} {args:?}: {err}", tls.display());
            assert!(
                err.contains(says),
                "{} {args:?} should say {says:?}: {err}",
                tls.display()
            );
        }
    }
    let after: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert_eq!(before, after);
    let policy = cluster.hz_ok(&["schedule"]);
    assert!(policy.contains("fair"), "{policy}");
    // herzog's log says why, too.
    let mut cluster = cluster;
    let line = cluster.herzog_wait_for("has expired", std::time::Duration::from_secs(10));
    assert!(line.contains("TLS handshake failed"), "{line}");
    cluster.herzog_wait_for("cannot use hz's service", std::time::Duration::from_secs(10));
}

#[test]
fn a_client_without_a_certificate_is_refused_by_the_handshake() {
    let mut cluster = Cluster::start(&[]);
    let ca = cluster.dir().join("pki/ca.pem");
    // openssl, a real TLS client, trusting our CA but presenting no certificate.
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            cluster.addr(),
            "-servername",
            "herzog",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It verified herzog's certificate against the cluster CA, then was refused for lack of one.
    assert!(text.contains("Verify return code: 0"), "{text}");
    let line = cluster.herzog_wait_for("TLS handshake failed", std::time::Duration::from_secs(10));
    assert!(line.contains("presented no certificate"), "{line}");
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert!(list.is_empty());
}

#[test]
fn workers_are_held_to_their_role_and_their_own_name() {
    let cluster = Cluster::start(&[]);
    let dir = cluster.dir().to_path_buf();
    let addr = cluster.addr().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = Identity::load(&bundle(&dir, "admin", "admin")).unwrap();
        let euclid = Identity::load(&bundle(&dir, "euclid", "worker")).unwrap();
        let admin = Connector::new(&admin).unwrap();
        let euclid = Connector::new(&euclid).unwrap();

        // An admin certificate cannot register or report as a worker.
        for hello in [
            Hello::Registry,
            Hello::Worker {
                name: "euclid".into(),
                incarnation: 0,
            },
        ] {
            match dial(&addr, &hello, &admin).await {
                Err(ConnectError::Refused { reason, .. }) => assert!(reason.contains("worker certificate"), "{reason}"),
                other => panic!("{hello:?} with an admin certificate: {:?}", other.map(|_| ())),
            }
        }
        // euclid cannot serve starts in newton's name...
        match dial(
            &addr,
            &Hello::Worker {
                name: "newton".into(),
                incarnation: 0,
            },
            &euclid,
        )
        .await
        {
            Err(ConnectError::Refused { reason, .. }) => assert!(reason.contains("'euclid'"), "{reason}"),
            other => panic!("impersonation was not refused: {:?}", other.map(|_| ())),
        }
        // ...nor report for newton over its own registry connection.
        let registry = registry_client(&addr, &euclid).await.unwrap();
        let completion = Completion {
            limit: None,
            peak_memory_bytes: None,
            attempt: common::AttemptId(1),
            exit: Exit::Code(0),
            wall_ms: 1,
            cpu_ms: 1,
            peak_rss_kb: 1,
            finished_at: 0,
        };
        let ctx = tarpc::context::current();
        let refused = registry
            .fragment_complete(ctx, "newton".into(), vec![completion])
            .await
            .unwrap();
        match refused {
            Err(common::ApiError::NotYourName { certificate, claimed }) => {
                assert_eq!((certificate.as_str(), claimed.as_str()), ("euclid", "newton"));
            }
            other => panic!("reporting in another worker's name: {other:?}"),
        }
        // A worker certificate gets no user service.
        match common::transport::coordinator_client(&addr, &euclid).await {
            Err(ConnectError::Refused { reason, .. }) => assert!(reason.contains("admin certificate"), "{reason}"),
            other => panic!("a worker reached the user service: {:?}", other.map(|_| ())),
        }
        // The admin does.
        let client = common::transport::coordinator_client(&addr, &admin).await.unwrap();
        assert!(
            client
                .workers(tarpc::context::current())
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
#[ignore = "needs root to switch users: cargo test -p tests --test security -- --ignored"]
fn a_root_kinski_runs_programs_as_the_configured_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root, to run kinski as root and switch users"
    );
    let cluster = Cluster::start(&[]);
    let dir = cluster.dir().to_path_buf();
    // Without a user to run programs as, a root kinski refuses to start.
    let refused = tests::output_within(
        std::process::Command::new(tests::bin("kinski"))
            .args(["--herzog", cluster.addr(), "--name", "root-worker", "--tls"])
            .arg(bundle(&dir, "root-worker", "worker"))
            .arg("--state-dir")
            .arg(dir.join("kinski-refused"))
            .env_remove("HERZOG_CONFIG"),
        std::time::Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("run_as"), "{err}");

    let mut cmd = std::process::Command::new(tests::bin("kinski"));
    cmd.args([
        "--herzog",
        cluster.addr(),
        "--name",
        "nobody-worker",
        "--run-as",
        "nobody",
        "--tls",
    ])
    .arg(bundle(&dir, "nobody-worker", "worker"))
    .arg("--state-dir")
    .arg(dir.join("kinski-nobody"))
    .env_remove("HERZOG_CONFIG")
    .env("NO_COLOR", "1");
    let mut worker = tests::Daemon::spawn("kinski-nobody", cmd);
    worker.wait_for("registered with herzog", std::time::Duration::from_secs(20));

    // The program checks its own identity: uid, gid and groups of nobody, not root's.
    cluster.inputs("who", 2);
    cluster.hz_ok(&["action", "who", "sh -c 'id -u; id -g; id -G' {}"]);
    cluster.hz_ok(&["progress", "who", "--watch"]);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let expected = format!("{}\n{}\n", nobody.uid, nobody.gid);
    for fragment in ["f0000", "f0001"] {
        let out = cluster.hz_ok(&["logs", "who", fragment]);
        assert!(out.starts_with(&expected), "{fragment} ran as: {out:?}");
        assert!(
            !out.lines().nth(2).unwrap_or("").split(' ').any(|g| g == "0"),
            "root's group kept: {out:?}"
        );
    }
    // Its stdout and stderr are its own: `echo msg > /dev/stderr` works, as in a shell.
    cluster.inputs("dev", 1);
    cluster.hz_ok(&[
        "action",
        "dev",
        "sh -c 'set -e; echo to-stderr > /dev/stderr; echo to-stdout > /dev/stdout' {}",
    ]);
    cluster.hz_ok(&["progress", "dev", "--watch"]);
    // Printed only once the write to /dev/stderr worked.
    let logs = cluster.hz_ok(&["logs", "dev", "f0000"]);
    assert!(logs.contains("to-stdout"), "{logs}");
    // A job's stdin pipe and terminal too.
    let out = cluster.hz(&[
        "run",
        "-i",
        "--",
        "sh",
        "-c",
        "cat /dev/stdin > /dev/null && echo read-stdin",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("read-stdin"), "{out:?}");
    let out = cluster.hz(&["run", "-t", "--", "sh", "-c", "echo hi > $(tty) && echo wrote-tty"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote-tty"), "{out:?}");
    drop(worker);
}

/// A completion for an attempt that already ended is kept as the attempt's late result, but
/// only from the worker the attempt ran on: another worker's certificate cannot write it.
#[test]
fn only_the_attempts_own_worker_can_record_its_late_result() {
    let mut cluster = Cluster::start(&[("euclid", 1)]);
    let dir = cluster.dir().to_path_buf();
    let addr = cluster.addr().to_string();
    cluster.inputs("slow", 1);
    cluster.hz_ok(&["action", "slow", "sh -c 'exec sleep 1000' {}"]);
    let attempt: i64 = tests::eventually("the attempt runs", std::time::Duration::from_secs(20), || {
        cluster
            .db()
            .query_row("SELECT id FROM attempts WHERE outcome = 'running'", [], |r| r.get(0))
            .ok()
    });
    // euclid's kinski dies with the program running; removing the project then stops the
    // attempt in the record, so any completion for it is late.
    cluster.kill_kinski("euclid");
    cluster.hz_ok(&["remove", "slow"]);
    let late_exit = || -> Option<String> {
        cluster
            .db()
            .query_row("SELECT late_exit FROM attempts WHERE id = ?1", [attempt], |r| r.get(0))
            .expect("the attempt's row")
    };
    assert_eq!(late_exit(), None);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = |worker: &'static str, code: i32| {
        let identity = Identity::load(&bundle(&dir, worker, "worker")).unwrap();
        let connector = Connector::new(&identity).unwrap();
        runtime.block_on(async {
            let registry = registry_client(&addr, &connector).await.unwrap();
            let completion = Completion {
                limit: None,
                peak_memory_bytes: None,
                attempt: common::AttemptId(attempt),
                exit: Exit::Code(code),
                wall_ms: 1,
                cpu_ms: 1,
                peak_rss_kb: 1,
                finished_at: 0,
            };
            registry
                .fragment_complete(tarpc::context::current(), worker.into(), vec![completion])
                .await
                .unwrap()
        })
    };
    // newton never ran it: its report changes nothing in the record.
    let _ = report("newton", 42);
    assert_eq!(late_exit(), None, "another worker wrote the attempt's late result");
    // euclid did: its late result is kept.
    let accepted = report("euclid", 7);
    assert!(matches!(accepted.as_deref(), Ok([Ok(())])), "{accepted:?}");
    assert_eq!(late_exit().as_deref(), Some(Exit::Code(7).to_string().as_str()));
}

/// File names that are shell code, each trying to create a file next to it (a program runs
/// in its project's directory).
const HOSTILE_NAMES: [&str; 12] = [
    "$(touch pwned-dollar)",
    "`touch pwned-backtick`",
    ";touch pwned-semicolon;",
    "|touch pwned-pipe",
    "&touch pwned-ampersand",
    "a\ntouch pwned-newline\n",
    "'$(touch pwned-quoted)'",
    "\"$(touch pwned-dquoted)\"",
    "x'\"\\$HOME *",
    "-n",
    "{}",
    "plain.tar.gz",
];

#[test]
fn file_names_reach_the_program_as_data_never_as_shell_code() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    let dir = cluster.dir().join("hostile");
    std::fs::create_dir(&dir).unwrap();
    for name in HOSTILE_NAMES {
        std::fs::write(dir.join(name), "x").unwrap();
    }
    // The same file names, quoted the ways a user writes them: in double quotes (the form the
    // issue reproduced), bare among quoted words, mixed with other text, in a command
    // substitution, and without any shell syntax at all (executed directly).
    let base_no_ext = |name: &str| match name.rfind('.') {
        Some(i) if i > 0 => name[..i].to_string(),
        _ => name.to_string(),
    };
    let d = dir.to_str().unwrap().to_string();
    type Expected<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, &str, Expected)> = vec![
        ("dq", r#"printf '[%s]\n' "{}""#, Box::new(|n| format!("[{d}/{n}]\n"))),
        ("bare", r#"printf '[%s]\n' {/}"#, Box::new(|n| format!("[{n}]\n"))),
        (
            "mixed",
            r#"printf '[%s|%s]\n' "in {//}:"{/} x{/.}"y""#,
            Box::new(|n| format!("[in {d}:{n}|x{}y]\n", base_no_ext(n))),
        ),
        (
            "subst",
            r#"printf '[%s]\n' "$(printf '%s.' "{/}")""#,
            Box::new(|n| format!("[{n}.]\n")),
        ),
        ("direct", "/usr/bin/basename -- {}", Box::new(|n| format!("{n}\n"))),
    ];
    for (project, program, _) in &cases {
        let d = dir.to_str().unwrap();
        cluster.hz_ok(&["action", d, program, "--name", project]);
    }
    for (project, _, _) in &cases {
        // Exits 1 when a fragment failed: the outputs below say which and why.
        let _ = cluster.hz(&["progress", project, "--watch"]);
    }
    let pwned: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "file names ran as shell code: {pwned:?}");
    for (project, program, expected) in &cases {
        for name in HOSTILE_NAMES {
            // After `--`: a name like `-n` is not an option of hz.
            let json = cluster.hz_ok(&["logs", "--json", "--", project, name]);
            let logs: common::wire::Logs = serde_json::from_str(&json).unwrap();
            assert_eq!(
                logs.stdout,
                expected(name),
                "{project} ({program}) on the file {name:?}; stderr: {}",
                logs.stderr
            );
        }
    }
}

#[test]
fn a_placeholder_the_shell_cannot_pass_safely_is_refused_with_how_to_write_it() {
    let cluster = Cluster::start(&[]);
    cluster.inputs("in", 2);
    for (program, says) in [
        ("/bin/echo '{}'", "single quotes"),
        ("sh -c 'wc -c {}'", "single quotes"),
        ("sh -c \"wc -c {}\"", "sh -c"),
        ("bash -c 'cat \"{}\"'", "single quotes"),
        ("echo `basename {}`", "$(...)"),
    ] {
        let err = cluster.hz_fails(&["action", "in", program], 2);
        assert!(err.contains(says), "{program}: {err}");
        assert!(err.contains(r#"sh -c '... "$1" ...' sh {}"#), "{program}: {err}");
    }
    // herzog refuses it too, whoever asks (hz checks first, so this goes around hz).
    let admin = Identity::load(&bundle(cluster.dir(), "admin", "admin")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(async {
        let client = common::transport::coordinator_client(cluster.addr(), &Connector::new(&admin).unwrap())
            .await
            .unwrap();
        let project = common::wire::NewProject {
            name: None,
            dir: cluster.dir().join("in"),
            spec: common::wire::RunSpec::new("/bin/echo '{}'"),
            after: Vec::new(),
            max_running: None,
            share: None,
        };
        client.project_add(tarpc::context::current(), project).await.unwrap()
    });
    match refused {
        Err(common::ApiError::InvalidValue { what, reason }) => {
            assert_eq!(what, "program");
            assert!(reason.contains("single quotes"), "{reason}");
        }
        other => panic!("herzog added a program with {{}} in single quotes: {other:?}"),
    }
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert!(list.is_empty(), "a refused program was added: {list:?}");
}

/// A service running as nobody writes its output into a directory nobody owns, and while
/// kinski (root) rotates it, the program swaps the backups, the current file and then the
/// directory itself for links to root's files: kinski writes, renames and chowns only what it
/// opened itself, and a start through such a link, or onto a file that is not the service
/// user's own, fails saying why.
#[test]
#[ignore = "needs root to run a service as nobody: cargo test -p tests --test security -- --ignored"]
fn as_root_a_service_cannot_make_kinski_rotate_its_output_through_a_link() {
    use common::instances::InstanceState;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tests::services::{LIMIT, running, services, status};
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root, to run kinski as root and the service as nobody"
    );
    let cluster = tests::Cluster::start_with_config(
        Some(
            "[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n[kinski]\nservice_users = [\"nobody\"]\n",
        ),
        &[("euclid", 1)],
    );
    let dir = cluster.dir().to_path_buf();
    // nobody reaches its home and the script through the cluster's directory.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "secret\n").unwrap();
    let root_dir = dir.join("root-only");
    std::fs::create_dir(&root_dir).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let home = dir.join("home");
    let logs = home.join("logs");
    for d in [&home, &logs] {
        std::fs::create_dir(d).unwrap();
        nix::unistd::chown(d, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    let (h, v, r) = (home.display(), victim.display(), root_dir.display());
    tests::write_script(
        &dir.join("attack.sh"),
        &format!(
            "#!/bin/sh\nL={h}/logs\nseq 1 3000\n\
             ln -sf {v} $L/out.log.1\nln -sf {v} $L/out.log.2\nrm -f $L/out.log\nln -s {v} $L/out.log\n\
             seq 3001 6000\n\
             mv $L {h}/moved\nln -s {r} $L\n\
             seq 6001 9000\necho END\nexec sleep 1000\n"
        ),
    );
    services(
        &cluster,
        &format!(
            "[services.web]\ncommand = \"{}/attack.sh\"\nuser = \"nobody\"\nstartsecs = 0\nstartretries = 0\n\
             stdout = \"{h}/logs/out.log\"\nstdout_maxbytes = \"4 KiB\"\nstdout_backups = 2\n",
            dir.display()
        ),
    );
    cluster.hz_ok(&["reload"]);
    running(&cluster, &["web:0"]);
    let moved = home.join("moved");
    let untouched = |what: &str| {
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret\n", "{what}");
        let meta = std::fs::metadata(&victim).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644), "{what}");
        assert_eq!(std::fs::read_dir(&root_dir).unwrap().count(), 0, "{what}");
    };
    // Until the last line is where it belongs, or somewhere it must never be.
    tests::eventually("the attack to end", LIMIT, || {
        let ended = std::fs::read_to_string(moved.join("out.log")).is_ok_and(|t| t.ends_with("9000\nEND\n"));
        let harmed = std::fs::read_to_string(&victim).map_or(true, |t| t != "secret\n")
            || std::fs::read_dir(&root_dir).map_or(true, |d| d.count() > 0);
        (ended || harmed).then_some(())
    });
    untouched("after the rotations");
    // kinski kept rotating in the directory it had opened, wherever it was moved.
    for name in ["out.log", "out.log.1", "out.log.2"] {
        let meta = std::fs::symlink_metadata(moved.join(name)).unwrap();
        assert!(meta.is_file() && meta.len() <= 4096, "{name}: {meta:?}");
        assert_eq!(meta.uid(), nobody.uid.as_raw(), "{name} is nobody's");
    }

    // A start through the link now at the directory's name is refused, and says so.
    let fatal = |says: &str| {
        let why = tests::eventually(&format!("web:0 to be FATAL: {says}"), LIMIT, || {
            match &status(&cluster)["web:0"].state {
                InstanceState::Fatal { exit, .. } => Some(exit.to_string()).filter(|why| why.contains(says)),
                _ => None,
            }
        });
        assert!(why.contains(&format!("{h}/logs/out.log")), "{why}");
    };
    cluster.hz_ok(&["restart", "web"]);
    fatal("symbolic link");
    // A file that is not nobody's own (root's, hard-linked there) is refused too.
    std::fs::remove_file(&logs).unwrap();
    std::fs::create_dir(&logs).unwrap();
    nix::unistd::chown(&logs, Some(nobody.uid), Some(nobody.gid)).unwrap();
    std::fs::hard_link(&victim, logs.join("out.log")).unwrap();
    cluster.hz_ok(&["start", "web"]);
    fatal("hard link");
    untouched("after the refused starts");
}
