//! The marker program, which records each execution of an attempt in its own file, and
//! inputs for it.

use super::*;

/// One execution of the marker program, as it recorded itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub project: String,
    pub fragment: String,
    pub attempt: i64,
    /// When it started, in nanoseconds since the epoch (`date +%s%N`).
    pub start_ns: u128,
    /// Its pid (also its process group: kinski starts each attempt in its own group).
    pub pid: i32,
    /// Its parent's pid: the kinski that ran it.
    pub ppid: u32,
}

/// The marker program: records each execution in its own file under `markers/`, prints the
/// input's byte count, then, when `SLEEP` is set (through the project's `--env`), becomes
/// `sleep $SLEEP` (same pid).
pub(crate) const MARKER_SCRIPT: &str = r#"#!/bin/sh
start=$(date +%s%N)
marker="@MARKERS@/$HERZOG_PROJECT.$HERZOG_FRAGMENT.$HERZOG_ATTEMPT"
: > "$marker"
echo "$HERZOG_PROJECT $HERZOG_FRAGMENT $HERZOG_ATTEMPT $start $$ $PPID" >> "$marker"
wc -c < "$1"
if [ -n "$SLEEP" ]; then exec sleep "$SLEEP"; fi
"#;

/// How many executions each fragment of `project` had, by name, from the markers.
pub fn executions(markers: &[Marker], project: &str) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for m in markers.iter().filter(|m| m.project == project) {
        *runs.entry(m.fragment.clone()).or_insert(0) += 1;
    }
    runs
}

/// Makes `dir` with `n` files `f0000`, `f0001`, ...; file `i` holds `i + 2` bytes.
pub fn make_inputs(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("failed to create {}: {e}", dir.display()));
    for i in 0..n {
        let content = format!("{}\n", "x".repeat(i + 1));
        std::fs::write(dir.join(format!("f{i:04}")), content).expect("failed to write an input");
    }
    dir.to_path_buf()
}

/// The size of every file in `dir`, by name.
pub fn sizes(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("failed to list an input");
            let size = entry.metadata().expect("failed to stat an input").len();
            (entry.file_name().to_string_lossy().into_owned(), size)
        })
        .collect()
}

pub(crate) fn read_markers(dir: &Path) -> Vec<Marker> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("failed to list markers").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Created empty, then written with one short write: empty means "being written".
        let Some(line) = text.lines().next() else { continue };
        let words: Vec<&str> = line.split(' ').collect();
        let bad = || format!("marker {} is malformed: {text:?}", path.display());
        assert!(words.len() == 6 && text.lines().count() == 1, "{}", bad());
        out.push(Marker {
            project: words[0].to_string(),
            fragment: words[1].to_string(),
            attempt: words[2].parse().unwrap_or_else(|_| panic!("{}", bad())),
            start_ns: words[3].parse().unwrap_or_else(|_| panic!("{}", bad())),
            pid: words[4].parse().unwrap_or_else(|_| panic!("{}", bad())),
            ppid: words[5].parse().unwrap_or_else(|_| panic!("{}", bad())),
        });
    }
    out
}
