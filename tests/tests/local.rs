//! `hz local`: the real binary runs herzog and one worker in-process and waits for the project.

use std::path::Path;
use std::process::{Command, Output};
use tests::{HZ_LIMIT, bin, make_inputs, output_within, sizes};

/// Runs `hz local ARGS...` in `cwd`.
fn hz_local(cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("hz"));
    cmd.arg("local")
        .args(args)
        .current_dir(cwd)
        .env_remove("HERZOG_ADDR")
        .env_remove("HERZOG_CONFIG")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    output_within(&mut cmd, HZ_LIMIT)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_local_run_succeeds_and_keeps_each_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_inputs(&tmp.path().join("ten"), 10);
    let expected = sizes(&input);
    let out = hz_local(tmp.path(), &["ten", "wc -c", "--state-dir", "T"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("project ten: 10 fragments, 10 succeeded, 0 failed"),
        "{stdout}"
    );

    // Each fragment's stdout is what `wc -c` printed for it.
    let results = tmp.path().join("T").canonicalize().unwrap().join("herzog/results/ten");
    assert!(stdout.contains(results.to_str().unwrap()), "{stdout}");
    for (name, size) in &expected {
        let stdouts = attempt_stdouts(&results, name);
        assert_eq!(stdouts.len(), 1, "{name} ran more than once: {stdouts:?}");
        let printed = std::fs::read_to_string(&stdouts[0]).unwrap();
        let path = input.canonicalize().unwrap().join(name);
        assert_eq!(printed, format!("{size} {}\n", path.display()), "{name}");
    }
}

#[test]
fn a_failing_program_exits_1_and_names_the_failed_fragments() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_inputs(&tmp.path().join("ten"), 10);
    // Quotes make it a shell program: /bin/sh -c "sh -c '...' <path>". It prints a line so
    // that each attempt leaves a stdout file (an empty stream leaves none), counted below.
    let out = hz_local(tmp.path(), &["ten", "sh -c 'echo ran; exit 3'", "--state-dir", "T2"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("10 fragments, 0 succeeded, 10 failed"), "{stdout}");
    assert!(stdout.contains("failed fragments"), "{stdout}");
    let listed: Vec<&str> = stdout
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('f') && line.split_whitespace().nth(1) == Some("3"))
        .collect();
    assert!(!listed.is_empty(), "no failed fragment listed with exit 3: {stdout}");
    for line in &listed {
        let name = line.split_whitespace().next().unwrap();
        assert!(input.join(name).is_file(), "{name} is not an input: {stdout}");
    }
    // A non-zero exit fails the fragment at once (--max-attempts counts lost attempts only):
    // every fragment ran exactly once.
    let results = tmp.path().join("T2/herzog/results/ten");
    for name in sizes(&input).keys() {
        assert_eq!(attempt_stdouts(&results, name).len(), 1, "{name}");
    }
}

/// The stdout files of a fragment's attempts: `<results>/logs/<fragment>.<attempt>.stdout`.
fn attempt_stdouts(results: &std::path::Path, fragment: &str) -> Vec<std::path::PathBuf> {
    let logs = results.join("logs");
    std::fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.strip_prefix(fragment)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.strip_suffix(".stdout"))
                .is_some_and(|attempt| attempt.parse::<u64>().is_ok())
        })
        .collect()
}

#[test]
fn a_rerun_with_retry_failed_runs_the_failed_fragments_again_and_retries_retry_failures() {
    let tmp = tempfile::tempdir().unwrap();
    make_inputs(&tmp.path().join("in"), 4);
    // Fails on f0001 while the flag file is missing.
    let flag = tmp.path().join("fixed");
    let program = format!(
        "sh -c 'case \"$0\" in *f0001) test -e {} || exit 4;; esac' {{}}",
        flag.display()
    );
    let out = hz_local(tmp.path(), &["in", &program, "--state-dir", "S"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 succeeded, 1 failed"), "{stdout}");
    // Fixed: a plain rerun re-reports the finished project; --retry-failed runs f0001 again.
    std::fs::write(&flag, "").unwrap();
    let out = hz_local(tmp.path(), &["in", &program, "--state-dir", "S"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let out = hz_local(tmp.path(), &["in", &program, "--state-dir", "S", "--retry-failed"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("4 succeeded, 0 failed"), "{stdout}");
    assert!(stderr.contains("retrying 1 failed fragment"), "{stderr}");

    // --retries: a program failing twice and then succeeding succeeds, its attempts kept.
    let count = tmp.path().join("count");
    std::fs::create_dir(&count).unwrap();
    let flaky = format!(
        "sh -c 'n=$(ls {c} | grep -c \"^$(basename \"$0\")\\.\"); touch {c}/$(basename \"$0\").$n; test $n -ge 2' {{}}",
        c = count.display()
    );
    let out = hz_local(
        tmp.path(),
        &["in", &flaky, "--state-dir", "R", "--name", "flaky", "--retries", "2"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("4 succeeded, 0 failed"), "{stdout}");
    assert_eq!(std::fs::read_dir(&count).unwrap().count(), 12, "three attempts each");
}

#[test]
fn the_joblog_is_gnu_parallels() {
    let tmp = tempfile::tempdir().unwrap();
    let input = make_inputs(&tmp.path().join("six"), 6);
    let began = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // An input of an odd size exits 3: f0001, f0003 and f0005 (3, 5 and 7 bytes).
    let script = tmp.path().join("odd.sh");
    tests::write_script(
        &script,
        "#!/bin/sh\nsize=$(wc -c < \"$1\")\n[ $((size % 2)) -eq 0 ] || exit 3\n",
    );
    let out = hz_local(
        tmp.path(),
        &["six", "./odd.sh", "--state-dir", "J", "--joblog", "jobs.tsv"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let log = std::fs::read_to_string(tmp.path().join("jobs.tsv")).unwrap();
    let mut lines = log.lines();
    assert_eq!(
        lines.next(),
        Some("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 6, "one line per attempt:\n{log}");
    let mut seqs: Vec<u64> = Vec::new();
    for row in &rows {
        assert_eq!(row.len(), 9, "{row:?}");
        let seq: u64 = row[0].parse().unwrap();
        seqs.push(seq);
        assert_eq!(row[1], ":", "this machine, as parallel writes it");
        let (secs, millis) = row[2].split_once('.').unwrap();
        assert_eq!(millis.len(), 3, "{row:?}");
        let start: f64 = row[2].parse().unwrap();
        assert!(start >= began.floor() && start < began + 60.0, "{row:?}");
        assert!(secs.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(row[3].len(), 10, "JobRuntime is %10.3f: {row:?}");
        let runtime: f64 = row[3].trim().parse().unwrap();
        assert!((0.0..30.0).contains(&runtime), "{row:?}");
        assert_eq!(row[3].trim().split_once('.').unwrap().1.len(), 3);
        assert_eq!((row[4], row[5], row[7]), ("0", "0", "0"), "{row:?}");
        // f{seq-1} holds seq + 1 bytes: an even size exits 0, an odd one 3.
        let expected = if seq % 2 == 1 { "0" } else { "3" };
        assert_eq!(row[6], expected, "{row:?}");
        let path = input.canonicalize().unwrap().join(format!("f{:04}", seq - 1));
        let script = script.canonicalize().unwrap();
        assert_eq!(row[8], format!("{} {}", script.display(), path.display()), "{row:?}");
    }
    seqs.sort();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    let bad = hz_local(
        tmp.path(),
        &["six", "true", "--state-dir", "J2", "--joblog", "no/such/dir/j.tsv"],
    );
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("job log") && stderr.contains("no/such/dir/j.tsv"),
        "{stderr}"
    );
}
