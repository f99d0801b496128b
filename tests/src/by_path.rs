//! Helpers for daemons this harness does not start itself (the multi-host bed of
//! `tests/testbed/netns.sh`, whose daemons run in network namespaces): the clean environment
//! every harness process gets, and herzog's database read by its path.

use crate::{BTreeMap, Command, DbAttempt, DbFragment, Duration, Path};

/// A command for `program` with the environment the tests rely on (as the harness starts
/// herzog, kinski and hz): no address, config or certificate from the caller's environment,
/// no RUST_LOG, no colours, stdin from /dev/null.
pub fn clean_command(program: &Path) -> Command {
    crate::process::command(program)
}

/// Every fragment of the live project `project` in herzog's database `db`, with its
/// attempts (as [`crate::Cluster::db_fragments`] reads them), ordered by index and id. The
/// connection is read-only: usable while herzog runs (WAL) and after it was killed.
pub fn db_fragments(db: &Path, project: &str) -> Vec<DbFragment> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("failed to open {} read-only: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(10))
        .expect("failed to set a busy timeout");
    let tx = conn
        .unchecked_transaction()
        .expect("failed to begin a read transaction");
    let mut fragments: Vec<DbFragment> = tx
        .prepare(
            "SELECT f.id, f.idx, f.name, f.state, f.attempts, f.attempt_id FROM fragments f
             JOIN projects p ON p.id = f.project_id
             WHERE p.name = ?1 AND p.removed_at IS NULL ORDER BY f.idx",
        )
        .and_then(|mut s| {
            s.query_map([project], |r| {
                Ok(DbFragment {
                    id: r.get(0)?,
                    index: r.get(1)?,
                    name: r.get(2)?,
                    state: r.get(3)?,
                    attempt_count: r.get(4)?,
                    attempt_id: r.get(5)?,
                    attempts: Vec::new(),
                })
            })?
            .collect()
        })
        .expect("failed to read fragments");
    let by_id: BTreeMap<i64, usize> = fragments.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
    let attempts: Vec<(i64, DbAttempt)> = tx
        .prepare(
            "SELECT a.id, a.fragment_id, a.worker, a.started_at, a.outcome, a.ended_at, a.exit_kind,
                    a.exit_value, a.late_exit, a.note, a.wall_ms
             FROM attempts a JOIN fragments f ON f.id = a.fragment_id JOIN projects p ON p.id = f.project_id
             WHERE p.name = ?1 AND p.removed_at IS NULL ORDER BY a.id",
        )
        .and_then(|mut s| {
            s.query_map([project], |r| {
                Ok((
                    r.get(1)?,
                    DbAttempt {
                        id: r.get(0)?,
                        worker: r.get(2)?,
                        started_at: r.get(3)?,
                        outcome: r.get(4)?,
                        ended_at: r.get(5)?,
                        exit_kind: r.get(6)?,
                        exit_value: r.get(7)?,
                        late_exit: r.get(8)?,
                        note: r.get(9)?,
                        wall_ms: r.get(10)?,
                    },
                ))
            })?
            .collect()
        })
        .expect("failed to read attempts");
    for (fragment, attempt) in attempts {
        fragments[by_id[&fragment]].attempts.push(attempt);
    }
    fragments
}

/// Asserts "never lose, never double-count" from herzog's database `db`, as
/// [`crate::Cluster::assert_each_fragment_succeeded_once`] does: `project` has `expected`
/// fragments, each with exactly one attempt whose outcome is `succeeded`, and is itself
/// `succeeded` by that attempt. Returns the fragments.
pub fn assert_each_fragment_succeeded_once(db: &Path, project: &str, expected: usize) -> Vec<DbFragment> {
    let fragments = db_fragments(db, project);
    assert_eq!(fragments.len(), expected, "fragments of {project} in the database");
    let wrong: Vec<String> = fragments
        .iter()
        .filter(|f| {
            let won: Vec<i64> = f
                .attempts
                .iter()
                .filter(|a| a.outcome == "succeeded")
                .map(|a| a.id)
                .collect();
            won.len() != 1 || f.state != "succeeded" || f.attempt_id != Some(won[0])
        })
        .map(|f| format!("{f:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} fragments of {project} do not have exactly one accepted success:\n{}",
        wrong.len(),
        fragments.len(),
        wrong.join("\n")
    );
    fragments
}
