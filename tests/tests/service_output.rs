//! A service's files on real daemons: its output, kept under kinski's state directory or
//! appended to a file the services file names, rotated by kinski at `*_maxbytes` keeping
//! `*_backups` old ones (`.1` the newest); and the pid file of each instance kinski keeps in
//! its `pid_dir` while the instance's process runs.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test service_output
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use tests::services::{LIMIT, running, services};
use tests::{Cluster, eventually, write_script};

/// The rotation size the tests give both streams.
const CAP: u64 = 10 * 1024;

/// The files in `dir` whose names start with `name`, with their sizes.
fn files(dir: &Path, name: &str) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            file.starts_with(name)
                .then(|| (file, e.metadata().expect("stat").len()))
        })
        .collect()
}

/// Asserts that `dir` holds exactly `name`, `name.1` and `name.2`, each at most [`CAP`] and
/// the old ones nearly full (cut at a line's end where one fits), and that `.2`, `.1` and the
/// current file hold, in that order, what the program wrote last: `seq 1 40000`'s lines up to
/// its last, then `END`, nothing lost or repeated between them.
fn assert_rotated(dir: &Path, name: &str) {
    let found = files(dir, name);
    let expected: Vec<String> = [name.to_string(), format!("{name}.1"), format!("{name}.2")].into();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        expected,
        "in {}",
        dir.display()
    );
    for (file, size) in &found {
        assert!(*size <= CAP, "{file} holds {size} bytes, more than {CAP}");
        if file != name {
            // Cut at a line's end (a line is at most 6 bytes), or full.
            assert!(*size > CAP - 8, "{file} was rotated at {size} bytes");
        }
    }
    let mut text = String::new();
    for file in [format!("{name}.2"), format!("{name}.1"), name.to_string()] {
        text += &std::fs::read_to_string(dir.join(&file)).expect("read");
    }
    // The oldest file may begin within a line (the one before it was dropped).
    let (_, text) = text.split_once('\n').expect("lines");
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.pop(), Some("END"));
    let numbers: Vec<u32> = lines
        .iter()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("not a line of seq: {l:?}")))
        .collect();
    assert_eq!(numbers.last(), Some(&40000));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the three files do not hold consecutive lines"
    );
}

#[test]
fn kept_and_named_output_rotates_at_its_maxbytes_keeping_its_backups() {
    let cluster = Cluster::start_with_config(
        Some("[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n"),
        &[("euclid", 1)],
    );
    let dir = cluster.dir().display().to_string();
    // About 230 kB on each stream, as fast as it can: some twenty rotations each.
    write_script(
        &cluster.dir().join("chatty.sh"),
        "#!/bin/sh\nseq 1 40000\necho END\nseq 1 40000 >&2\necho END >&2\nexec sleep 1000\n",
    );
    let logs = cluster.dir().join("logs");
    std::fs::create_dir(&logs).expect("mkdir logs");
    services(
        &cluster,
        &format!(
            r#"
[services.chatty]
command = "{dir}/chatty.sh"
startsecs = 0
stdout_maxbytes = "10 KiB"
stdout_backups = 2
stderr = "{dir}/logs/chatty.err"
stderr_maxbytes = {CAP}
stderr_backups = 2
"#
        ),
    );
    cluster.hz_ok(&["reload"]);
    running(&cluster, &["chatty:0"]);
    let kept = cluster.kinski_state("euclid").join("services/chatty");
    let ended = |path: &Path| {
        std::fs::read_to_string(path)
            .is_ok_and(|t| t.ends_with("40000\nEND\n"))
            .then_some(())
    };
    eventually("all of stdout in the kept file", LIMIT, || {
        ended(&kept.join("chatty_0.stdout"))
    });
    eventually("all of stderr in the named file", LIMIT, || {
        ended(&logs.join("chatty.err"))
    });
    assert_rotated(&kept, "chatty_0.stdout");
    assert_rotated(&logs, "chatty.err");
    assert!(
        files(&kept, "chatty_0.stderr").is_empty(),
        "stderr goes to its named file only"
    );
}

#[test]
fn kinski_keeps_a_pid_file_per_instance_in_its_pid_dir_while_it_runs() {
    let run = tempfile::tempdir().expect("tempdir");
    let pid_dir = run.path().join("herzog");
    let cluster = Cluster::start_with_config(
        Some(&format!(
            "[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n[kinski]\npid_dir = \"{}\"\n",
            pid_dir.display()
        )),
        &[("euclid", 1)],
    );
    services(
        &cluster,
        "[services.web]\ncommand = \"sleep 1000\"\nnumprocs = 2\nstartsecs = 0\n",
    );
    cluster.hz_ok(&["reload"]);
    let pid_in = |instance: &str| {
        std::fs::read_to_string(pid_dir.join(format!("{instance}.pid")))
            .ok()
            .and_then(|t| t.strip_suffix('\n')?.parse::<i32>().ok())
    };
    let first = running(&cluster, &["web:0", "web:1"]);
    for (instance, pid) in &first {
        eventually(&format!("{instance}.pid to hold {pid}"), LIMIT, || {
            (pid_in(instance) == Some(*pid)).then_some(())
        });
    }
    assert_eq!(
        files(&pid_dir, "").into_keys().collect::<Vec<_>>(),
        ["web:0.pid", "web:1.pid"],
        "one file per instance, no temporary left"
    );

    // Stopped: its file goes; the other stays.
    cluster.hz_ok(&["stop", "web:1"]);
    eventually("web:1.pid to go", LIMIT, || {
        (!pid_dir.join("web:1.pid").exists()).then_some(())
    });
    assert_eq!(pid_in("web:0"), Some(first["web:0"]));

    // A new process, a new pid in the file.
    cluster.hz_ok(&["restart", "web:0"]);
    let again = eventually("web:0 to run again", LIMIT, || {
        let pid = running(&cluster, &["web:0"])["web:0"];
        (pid != first["web:0"]).then_some(pid)
    });
    eventually("web:0.pid to hold the new pid", LIMIT, || {
        (pid_in("web:0") == Some(again)).then_some(())
    });

    // kinski shut down: its instances stop, and so do their files.
    let stopped = cluster.stop();
    assert!(stopped.iter().all(|(_, s)| s.success()), "{stopped:?}");
    assert!(
        files(&pid_dir, "").is_empty(),
        "{:?} left after kinski stopped",
        files(&pid_dir, "")
    );
}
