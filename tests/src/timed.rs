//! A program that records its own start and end, so tests measure what really ran (shares,
//! packing) rather than what herzog says: each execution writes `<project> <start ns> <end ns>`
//! to a file of its own under `<cluster dir>/times/`.

use crate::{Cluster, write_script};
use std::path::Path;

/// One execution: (project, start ns, end ns).
pub type Run = (String, u128, u128);

const TIMED_SCRIPT: &str = r#"#!/bin/sh
start=$(date +%s%N)
sleep @SLEEP@
end=$(date +%s%N)
echo "$HERZOG_PROJECT $start $end" > "@TIMES@/$HERZOG_PROJECT.$HERZOG_FRAGMENT.$HERZOG_ATTEMPT"
"#;

/// Writes the program (unless it is there already, as the same text) and returns its path;
/// it sleeps `sleep` (shell text: `0.2`, `"$1"`) between its two readings.
pub fn timed_program(cluster: &Cluster, sleep: &str) -> String {
    let times = cluster.dir().join("times");
    std::fs::create_dir_all(&times).expect("failed to create times/");
    let path = cluster.dir().join("timed.sh");
    let text = TIMED_SCRIPT
        .replace("@TIMES@", times.to_str().expect("UTF-8"))
        .replace("@SLEEP@", sleep);
    // Written once: rewriting a script some attempt is executing fails with "Text file busy".
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        write_script(&path, &text);
    }
    path.to_str().expect("UTF-8").to_string()
}

/// Every execution recorded under `<dir>/times/`.
pub fn runs(dir: &Path) -> Vec<Run> {
    std::fs::read_dir(dir.join("times"))
        .expect("failed to list times/")
        .map(|e| {
            let text = std::fs::read_to_string(e.expect("an entry").path()).expect("a record");
            let mut f = text.split_whitespace();
            let project = f.next().expect("a project").to_string();
            let start = f.next().expect("a start").parse().expect("a number");
            let end = f.next().expect("an end").parse().expect("a number");
            (project, start, end)
        })
        .collect()
}
