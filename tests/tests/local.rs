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
