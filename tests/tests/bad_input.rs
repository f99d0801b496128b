//! Bad input through the real hz against a running herzog: each is refused with exit code 2
//! and a message naming the problem, and herzog's stored state does not change.

use common::wire::ProjectProgress;
use std::os::unix::fs::PermissionsExt;
use tests::{Cluster, make_inputs};

/// A cluster (no worker, so nothing moves) holding one project, `orig`, of 3 fragments.
fn cluster_with_one_project() -> (Cluster, Vec<ProjectProgress>) {
    let cluster = Cluster::start(&[]);
    cluster.inputs("orig", 3);
    assert_eq!(cluster.hz_ok(&["action", "orig", "wc -c"]), "orig\n");
    let before: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].name, "orig");
    assert_eq!(before[0].total, 3);
    (cluster, before)
}

/// Runs hz, expects exit 2 with every one of `needles` in its message, then checks that the
/// projects are what they were.
fn refused(cluster: &Cluster, before: &[ProjectProgress], args: &[&str], needles: &[&str]) {
    let err = cluster.hz_fails(args, 2);
    // hz's own messages start "hz: ", clap's usage errors "error: ".
    assert!(
        err.starts_with("hz: ") || err.starts_with("error: "),
        "hz {args:?}: {err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "hz {args:?} should mention {needle:?}: {err}");
    }
    let after: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert_eq!(after, before, "hz {args:?} changed the stored projects");
    let results = cluster.herzog_state().join("results");
    if let Ok(entries) = std::fs::read_dir(&results) {
        for entry in entries {
            let name = entry.unwrap().file_name();
            assert_eq!(name, "orig", "hz {args:?} left a results directory behind");
        }
    }
}

#[test]
fn a_duplicate_name_is_refused_and_the_original_kept() {
    let (cluster, before) = cluster_with_one_project();
    cluster.inputs("other", 2);
    refused(
        &cluster,
        &before,
        &["action", "other", "wc -l", "--name", "orig"],
        &["a project named 'orig' already exists"],
    );
    // Also when the name is derived from the same directory.
    refused(
        &cluster,
        &before,
        &["action", "orig", "wc -l"],
        &["'orig' already exists"],
    );
    let list: Vec<ProjectProgress> = cluster.hz_json(&["list"]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].dir, cluster.dir().join("orig").canonicalize().unwrap());
    assert_eq!(list[0].program, "wc -c");
}

#[test]
fn unknown_projects_and_fragments_are_named() {
    let (cluster, before) = cluster_with_one_project();
    for args in [
        &["progress", "nosuch"][..],
        &["progress", "nosuch", "--watch"],
        &["remove", "nosuch"],
        &["fragments", "nosuch"],
        &["logs", "nosuch", "f0000"],
        &["retry", "nosuch"],
    ] {
        refused(&cluster, &before, args, &["'nosuch'"]);
    }
    refused(&cluster, &before, &["logs", "orig", "f9999"], &["'orig'", "'f9999'"]);
}

#[test]
fn directories_without_inputs_are_refused() {
    let (cluster, before) = cluster_with_one_project();
    std::fs::create_dir(cluster.dir().join("empty")).unwrap();
    refused(
        &cluster,
        &before,
        &["action", "empty", "wc -c"],
        &["empty", "no input files"],
    );
    // Hidden files and subdirectories are not inputs.
    let hidden = cluster.dir().join("hidden");
    make_inputs(&hidden.join("sub"), 2);
    std::fs::write(hidden.join(".dotfile"), "x\n").unwrap();
    refused(
        &cluster,
        &before,
        &["action", "hidden", "wc -c"],
        &["hidden", "no input files"],
    );
    refused(&cluster, &before, &["action", "missing", "wc -c"], &["missing"]);
}

#[test]
fn programs_that_cannot_run_are_refused() {
    let (cluster, before) = cluster_with_one_project();
    cluster.inputs("in", 2);
    refused(
        &cluster,
        &before,
        &["action", "in", "./no-such-program {}"],
        &["no-such-program", "not found"],
    );
    refused(
        &cluster,
        &before,
        &["action", "in", "no-such-program-hz-test"],
        &["no-such-program-hz-test", "not found"],
    );
    let plain = cluster.dir().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(
        &cluster,
        &before,
        &["action", "in", "./plain.sh"],
        &["plain.sh", "not executable"],
    );
    refused(&cluster, &before, &["action", "in", "  "], &["empty"]);
}

#[test]
fn invalid_names_and_values_are_refused() {
    let (cluster, before) = cluster_with_one_project();
    cluster.inputs("in", 2);
    refused(
        &cluster,
        &before,
        &["action", "in", "wc -c", "--name", "a b"],
        &["'a b' is not a valid name"],
    );
    refused(
        &cluster,
        &before,
        &["action", "in", "wc -c", "--name", ".hidden"],
        &["'.hidden' is not a valid name"],
    );
    refused(
        &cluster,
        &before,
        &["action", "in", "wc -c", "--max-attempts", "0"],
        &["--max-attempts"],
    );
    refused(
        &cluster,
        &before,
        &["action", "in", "wc -c", "--env", "NOVALUE"],
        &["NOVALUE"],
    );
}
