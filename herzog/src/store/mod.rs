//! herzog's store: SQLite in WAL mode, migrated at open. One writer connection owned by the
//! event loop commits each batch of writes in one `BEGIN IMMEDIATE` transaction; reader
//! connections answer listings.
//!
//! `synchronous=FULL`: a batch is on disk before anyone is told "ok" or any effect runs, even
//! across a power cut. The cost is one fsync per batch, not per transition, because the loop
//! batches (docs/architecture.md has the numbers).

mod alerts;
mod history;
mod read;
mod report;
mod rows;

pub(crate) use alerts::Undelivered;
pub(crate) use read::Reader;

use crate::machine::{Names, Project, Snapshot, StoredWorker, Write};
use common::wire::Policy;
use include_dir::{Dir, include_dir};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::Migrations;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

static MIGRATIONS_DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../migrations");
static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR).expect("migrations/ is well formed (checked by a test)")
});

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to migrate the database {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("failed to {action}: {source}")]
    Sql {
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database holds a bad {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

fn sql(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { action, source }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let open = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(open)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open)?;
    Ok(conn)
}

/// The writer.
pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub(crate) fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = connect(path)?;
        MIGRATIONS.to_latest(&mut conn).map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads everything the machine needs to restart.
    pub(crate) fn load(&self) -> Result<Snapshot, StoreError> {
        let c = &self.conn;
        let max = |table: &str| -> Result<i64, StoreError> {
            c.query_row(&format!("SELECT COALESCE(MAX(id), 0) FROM {table}"), [], |r| r.get(0))
                .map_err(sql("read the highest id"))
        };
        let mut snap = Snapshot {
            max_project: max("projects")?,
            max_fragment: max("fragments")?,
            max_attempt: max("attempts")?,
            ..Snapshot::default()
        };
        let setting = |key: &str| -> Result<Option<String>, StoreError> {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(sql("read a setting"))
        };
        if let Some(v) = setting("services")? {
            snap.services = serde_json::from_str(&v).map_err(|e| StoreError::Corrupt {
                what: "services file",
                detail: e.to_string(),
            })?;
        }
        snap.max_run = setting("max_run")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        snap.max_event = max("events")?;
        let mut stmt = c
            .prepare("SELECT id, ran_at FROM attempts WHERE outcome = 'running' AND ran_at IS NOT NULL")
            .map_err(sql("read attempts' starts"))?;
        snap.ran = stmt
            .query_map([], |r| Ok((common::AttemptId(r.get(0)?), r.get(1)?)))
            .map_err(sql("read attempts' starts"))?
            .collect::<Result<_, _>>()
            .map_err(sql("read attempts' starts"))?;
        drop(stmt);
        let mut stmt = c
            .prepare("SELECT service, host, idx, wanted, run, worker FROM instances ORDER BY service, host, idx")
            .map_err(sql("read instances"))?;
        snap.instances = stmt
            .query_map([], rows::instance_from_row)
            .map_err(sql("read instances"))?
            .collect::<Result<_, _>>()
            .map_err(sql("read instances"))?;
        drop(stmt);
        snap.policy = c
            .query_row("SELECT value FROM settings WHERE key = 'policy'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(sql("read the policy"))?
            .map(|v| {
                serde_json::from_str::<Policy>(&v).map_err(|e| StoreError::Corrupt {
                    what: "policy",
                    detail: e.to_string(),
                })
            })
            .transpose()?;
        let mut stmt = c
            .prepare("SELECT name, resources, last_seen, drained, stopped FROM workers ORDER BY name")
            .map_err(sql("read workers"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .map_err(sql("read workers"))?;
        for row in rows {
            let (name, resources, last_seen, drained, stopped) = row.map_err(sql("read workers"))?;
            let resources = serde_json::from_str(&resources).map_err(|e| StoreError::Corrupt {
                what: "worker's resources",
                detail: e.to_string(),
            })?;
            snap.workers.push(StoredWorker {
                name,
                resources,
                last_seen,
                drained,
                stopped,
            });
        }
        let mut stmt = c
            .prepare(
                "SELECT id, name, dir, spec, results_dir, created_at, paused, max_running, after, job
                 FROM projects WHERE removed_at IS NULL ORDER BY id",
            )
            .map_err(sql("read projects"))?;
        type ProjectRow = (
            i64,
            String,
            String,
            String,
            String,
            i64,
            bool,
            Option<u32>,
            Option<String>,
            Option<String>,
        );
        let projects: Vec<ProjectRow> = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .map_err(sql("read projects"))?
            .collect::<Result<_, _>>()
            .map_err(sql("read projects"))?;
        let mut frag_stmt = c
            .prepare(
                "SELECT id, name, state, attempts, attempt_id, worker, since, reason, failures
                 FROM fragments WHERE project_id = ?1 ORDER BY idx",
            )
            .map_err(sql("read fragments"))?;
        for (id, name, dir, spec, results_dir, created_at, paused, max_running, after, job) in projects {
            let job: Option<Box<crate::machine::Job>> = job
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    what: "job",
                    detail: e.to_string(),
                })?;
            let after: Vec<String> = match after {
                Some(json) => serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    what: "project's after list",
                    detail: e.to_string(),
                })?,
                None => Vec::new(),
            };
            let spec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt {
                what: "project's run spec",
                detail: e.to_string(),
            })?;
            let mut fragments = Vec::new();
            let mut names = Names::default();
            let mut rows = frag_stmt.query([id]).map_err(sql("read fragments"))?;
            // The name is copied from SQLite's row into the arena: no `String` per fragment.
            while let Some(row) = rows.next().map_err(sql("read fragments"))? {
                fragments.push(rows::fragment_from_row(row).map_err(sql("read fragments"))?);
                names.push(rows::fragment_name(row).map_err(sql("read fragments"))?);
            }
            let names = std::sync::Arc::new(names);
            let mut project = Project::new(
                common::ProjectId(id),
                name,
                PathBuf::from(dir),
                spec,
                PathBuf::from(results_dir),
                created_at,
                names,
                fragments,
            );
            project.paused = paused;
            project.max_running = max_running;
            project.after = after;
            project.job = job;
            snap.projects.push(project);
        }
        // The fair-share weights (migration 07), apart so the query above stays as it was.
        let mut share_stmt = c
            .prepare("SELECT id, share FROM projects WHERE share != 1")
            .map_err(sql("read project shares"))?;
        let shares: std::collections::BTreeMap<i64, u32> = share_stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(sql("read project shares"))?;
        for p in &mut snap.projects {
            if let Some(share) = shares.get(&p.id.0) {
                p.share = (*share).max(1);
            }
        }
        Ok(snap)
    }

    /// Commits a batch of writes in one transaction.
    pub(crate) fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin a transaction"))?;
        for w in writes {
            rows::apply(&tx, w)?;
        }
        tx.commit().map_err(sql("commit a transaction"))
    }

    /// A commit cut off by a crash: the first `made` of `writes` are made in the transaction,
    /// which then ends without its COMMIT, as when the process dies there; SQLite rolls it
    /// back. For the simulator, which then reopens the store.
    pub(crate) fn torn_commit(&mut self, writes: &[Write], made: usize) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin a transaction"))?;
        for w in writes.iter().take(made) {
            rows::apply(&tx, w)?;
        }
        drop(tx);
        Ok(())
    }

    /// Caps the database at its size now, as a full disk would: the next commit that needs a
    /// new page fails with SQLite's own "database or disk is full". For the engine's tests and
    /// the simulator, which must see herzog stop on a commit that fails.
    pub(crate) fn fill_disk(&mut self) -> Result<(), StoreError> {
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(sql("read the page count"))?;
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .map_err(sql("cap the database's size"))
    }

    /// Whether attempt `id` is committed: the simulator asks as each start is released.
    pub(crate) fn holds_attempt(&self, id: common::AttemptId) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM attempts WHERE id = ?1", [id.0], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
            .map_err(sql("read an attempt"))
    }

    /// The schema version, for the migration test.
    #[cfg(test)]
    pub(crate) fn version(&self) -> i64 {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap_or(-1)
    }
}

/// Puts a policy in the settings table (also used by `apply`).
fn put_setting(c: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map(|_| ())
    .map_err(sql("store a setting"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid_and_apply_to_an_empty_file() {
        MIGRATIONS.validate().expect("migrations validate");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.db")).unwrap();
        assert!(store.version() >= 1);
        // Opening again is a no-op, not an error.
        drop(store);
        let again = Store::open(&dir.path().join("h.db")).unwrap();
        assert!(again.load().unwrap().projects.is_empty());
    }

    /// Project `p` with fragments `names`, the first of them with id `first_fragment`.
    fn add_project(first_fragment: i64, names: Vec<String>) -> Write {
        Write::AddProject {
            id: common::ProjectId(1),
            name: "p".into(),
            dir: "/in".into(),
            spec: Box::new(common::wire::RunSpec::new("true")),
            results_dir: "/out".into(),
            created_at: 5,
            first_fragment: common::FragmentId(first_fragment),
            names: std::sync::Arc::new(names.into_iter().collect()),
            after: Vec::new(),
            max_running: None,
        }
    }

    /// The cost of a million-fragment submit's commit; run with
    /// `cargo test --release -p herzog -- --ignored --nocapture commit_a_million`.
    #[test]
    #[ignore]
    fn commit_a_million_fragments() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("h.db")).unwrap();
        let names: Vec<String> = (0..1_000_000).map(|i| format!("frag-{i:07}.fa")).collect();
        let write = add_project(1, names);
        let began = std::time::Instant::now();
        store.commit(&[write]).unwrap();
        eprintln!("commit of 1,000,000 fragment rows: {:?}", began.elapsed());
        let began = std::time::Instant::now();
        let snap = store.load().unwrap();
        eprintln!("load of them: {:?}", began.elapsed());
        assert_eq!(snap.projects[0].fragments.len(), 1_000_000);
    }

    #[test]
    fn a_project_of_several_insert_statements_loads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("h.db")).unwrap();
        // Two full statements and a partial one.
        let names: Vec<String> = (0..2 * rows::ROWS_PER_INSERT + 3).map(|i| format!("f{i:05}")).collect();
        store.commit(&[add_project(11, names.clone())]).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.max_fragment, 11 + names.len() as i64 - 1);
        let fragments = &snap.projects[0].fragments;
        let names_loaded = &snap.projects[0].names;
        let loaded: Vec<(i64, &str)> = fragments
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.0, names_loaded.get(i)))
            .collect();
        let expected: Vec<(i64, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (11 + i as i64, n.as_str()))
            .collect();
        assert_eq!(loaded, expected);
        assert!(
            fragments
                .iter()
                .all(|f| f.state == crate::machine::FragmentState::Pending && f.attempts == 0)
        );
    }
}
