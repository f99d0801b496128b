//! Every attempt is kept and shown: `hz fragments P FRAG` lists a fragment's attempts, `hz
//! logs P FRAG --attempt ID` shows any of them, `hz fragments P --json` carries each
//! fragment's attempts (start, end, host, command), and `--worker` / `--since` filter them.

use common::history::AttemptInfo;
use common::wire::{Exit, FragmentInfo};
use tests::{Cluster, write_script};

/// Fails a fragment's first run (exit 3) and succeeds its next, printing its attempt id.
const SECOND_TIME_LUCKY: &str = r#"#!/bin/sh
echo "attempt $HERZOG_ATTEMPT of $HERZOG_FRAGMENT"
if [ -e "$MARKS/$HERZOG_FRAGMENT.tried" ]; then exit 0; fi
: > "$MARKS/$HERZOG_FRAGMENT.tried"
exit 3
"#;

#[test]
fn every_attempt_is_kept_shown_and_filtered() {
    let cluster = Cluster::start(&[("euclid", 1), ("newton", 1)]);
    let input = cluster.inputs("in", 4);
    let program = cluster.dir().join("lucky.sh");
    write_script(&program, SECOND_TIME_LUCKY);
    let marks = format!("MARKS={}", cluster.dir().join("markers").display());
    cluster.hz_ok(&["action", "in", program.to_str().unwrap(), "--env", &marks]);
    assert_eq!(cluster.hz(&["progress", "in", "--watch"]).status.code(), Some(1));
    cluster.hz_ok(&["retry", "in"]);
    cluster.hz_ok(&["progress", "in", "--watch"]);

    // One fragment: both attempts, oldest first.
    let one: FragmentInfo = cluster.hz_json(&["fragments", "in", "f0001"]);
    assert_eq!(one.name, "f0001");
    let [first, second] = one.history.as_slice() else {
        panic!("f0001 should have two attempts: {one:?}")
    };
    assert_eq!(
        (first.exit.clone(), first.outcome.as_str()),
        (Some(Exit::Code(3)), "failed")
    );
    assert_eq!(
        (second.exit.clone(), second.outcome.as_str()),
        (Some(Exit::Code(0)), "succeeded")
    );
    assert!(first.attempt < second.attempt);
    for a in [first, second] {
        assert!(["euclid", "newton"].contains(&a.worker.as_str()), "{a:?}");
        let ended = a.ended_at.expect("ended");
        assert!(a.started_at <= ended, "{a:?}");
        let path = input.canonicalize().unwrap().join("f0001");
        assert_eq!(a.command, format!("{} {}", program.display(), path.display()));
    }
    let table = cluster.hz_ok(&["fragments", "in", "f0001"]);
    for needle in [
        first.attempt.to_string(),
        second.attempt.to_string(),
        "failed".into(),
        "succeeded".into(),
        "command: ".into(),
    ] {
        assert!(table.contains(&needle), "{needle:?} missing from:\n{table}");
    }

    // Each attempt's logs.
    for a in [first, second] {
        let id = a.attempt.to_string();
        let out = cluster.hz_ok(&["logs", "in", "f0001", "--attempt", &id, "--stdout"]);
        assert_eq!(out, format!("attempt {id} of f0001\n"));
    }
    let err = cluster.hz_fails(&["logs", "in", "f0001", "--attempt", "999999"], 2);
    assert!(
        err.contains("has no attempt 999999") && err.contains(&format!("{} and {}", first.attempt, second.attempt)),
        "{err}"
    );
    cluster.hz_fails(&["fragments", "in", "nope"], 2);

    // Every fragment's attempts in the JSON listing.
    let all: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "in"]);
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|f| f.history.len() == 2), "{all:?}");
    let attempts: Vec<&AttemptInfo> = all.iter().flat_map(|f| &f.history).collect();

    // On one worker: exactly that worker's attempts.
    for worker in ["euclid", "newton"] {
        let mine: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "in", "--worker", worker]);
        let mut shown: Vec<i64> = mine.iter().flat_map(|f| &f.history).map(|a| a.attempt.0).collect();
        let mut expected: Vec<i64> = attempts
            .iter()
            .filter(|a| a.worker == worker)
            .map(|a| a.attempt.0)
            .collect();
        shown.sort();
        expected.sort();
        assert_eq!(shown, expected, "{worker}");
        let table = cluster.hz_ok(&["fragments", "in", "--worker", worker]);
        assert_eq!(
            table.lines().count(),
            1 + expected.len(),
            "a header and one line per attempt:\n{table}"
        );
    }
    // Within a time: all of them within the last hour, none within the last millisecond
    // (every attempt had ended before this call).
    let recent: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "in", "--since", "1h"]);
    assert_eq!(recent.iter().map(|f| f.history.len()).sum::<usize>(), 8);
    let none: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "in", "--since", "1ms"]);
    assert!(none.is_empty(), "{none:?}");
    let none: Vec<FragmentInfo> = cluster.hz_json(&["fragments", "in", "--worker", "nobody"]);
    assert!(none.is_empty(), "{none:?}");
    let err = cluster.hz_fails(&["fragments", "in", "--since", "soon"], 2);
    assert!(err.contains("soon"), "{err}");
}
