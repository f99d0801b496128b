//! A reused project name must not mix old and new results: `hz remove` says what it leaves on
//! disk, `hz action` with a name whose results folder is still there is refused with the way
//! out, and `hz remove --purge` deletes the folder (through descriptors: a link a program
//! left in `output/` is removed, never followed).

use std::path::Path;
use tests::{Cluster, write_script};

/// Writes one output file per fragment and a line on stdout.
const WRITER: &str = r#"#!/bin/sh
echo "wrote $HERZOG_FRAGMENT"
echo "$HERZOG_ATTEMPT" > "$HERZOG_OUTPUT_DIR/$HERZOG_FRAGMENT.out"
"#;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_reused_name_is_refused_until_the_old_results_are_purged() {
    let cluster = Cluster::start(&[("euclid", 2)]);
    cluster.inputs("p", 3);
    let program = cluster.dir().join("writer.sh");
    write_script(&program, WRITER);
    let program = program.to_str().unwrap();
    let results = cluster.herzog_state().join("results/p");

    cluster.hz_ok(&["action", "p", program]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
    assert_eq!(names(&results.join("output")), ["f0000.out", "f0001.out", "f0002.out"]);
    assert_eq!(names(&results.join("logs")).len(), 3);
    // What a program could leave behind: links to what is not the project's.
    let victim = cluster.dir().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, results.join("output/to-victim")).unwrap();
    std::os::unix::fs::symlink(victim.join("precious"), results.join("output/to-file")).unwrap();

    let removed = cluster.hz(&["remove", "p"]);
    let said = String::from_utf8_lossy(&removed.stderr);
    assert_eq!(removed.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("left in {}", results.display())) && said.contains("hz remove --purge p"),
        "hz remove must say what it leaves and how to delete it: {said}"
    );
    assert!(
        results.join("output/f0000.out").is_file(),
        "a plain remove keeps the results"
    );

    // The same name again: refused, with the folder and both ways out.
    let refused = cluster.hz_fails(&["action", "p", program], 2);
    for needle in [results.to_str().unwrap(), "--name", "hz remove --purge p"] {
        assert!(
            refused.contains(needle),
            "the refusal should name {needle:?}: {refused}"
        );
    }
    // Another name is fine.
    cluster.inputs("q", 1);
    cluster.hz_ok(&["action", "q", program, "--name", "p2"]);

    // --purge of the removed project's leftovers.
    let purged = cluster.hz(&["remove", "--purge", "p"]);
    let said = String::from_utf8_lossy(&purged.stderr);
    assert_eq!(purged.status.code(), Some(0), "{said}");
    assert!(said.contains("deleted its results folder"), "{said}");
    assert!(!results.exists(), "{} is still there", results.display());
    assert_eq!(std::fs::read_to_string(victim.join("precious")).unwrap(), "keep me\n");

    // Now the name runs afresh: only the new project's outputs and logs.
    cluster.hz_ok(&["action", "p", program]);
    cluster.hz_ok(&["progress", "p", "--watch"]);
    assert_eq!(names(&results.join("output")), ["f0000.out", "f0001.out", "f0002.out"]);
    let fragments: Vec<common::wire::FragmentInfo> = cluster.hz_json(&["fragments", "p"]);
    let attempts: Vec<String> = fragments.iter().map(|f| f.attempt.unwrap().to_string()).collect();
    for (f, attempt) in fragments.iter().zip(&attempts) {
        let written = std::fs::read_to_string(results.join(format!("output/{}.out", f.name))).unwrap();
        assert_eq!(written.trim(), attempt, "{} holds another project's output", f.name);
    }
    let logs = names(&results.join("logs"));
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert!(
        logs.iter()
            .all(|l| attempts.iter().any(|a| l.ends_with(&format!(".{a}.stdout")))),
        "{logs:?}"
    );

    // --purge of a live project removes it and its folder.
    cluster.hz_ok(&["remove", "--purge", "p"]);
    assert!(!results.exists());
    cluster.hz_fails(&["progress", "p"], 2);
    // Nothing of that name, live or removed: an unknown project.
    let err = cluster.hz_fails(&["remove", "--purge", "never"], 2);
    assert!(err.contains("no project named 'never'"), "{err}");
}
