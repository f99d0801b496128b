//! The one place where machine states become rows and rows become states.

use super::{StoreError, put_setting, sql};
use crate::machine::{Fragment, FragmentState, Names, Write};
use crate::services::{Recorded, Wanted};
use common::instances::{InstanceId, RunId};
use common::wire::{Completion, Exit};
use common::{AttemptId, FragmentId};
use rusqlite::{Connection, Row, params};

/// A fragment from a row of `SELECT id, name, state, attempts, attempt_id, worker, since,
/// reason, failures FROM fragments`; its name is [`fragment_name`].
pub(super) fn fragment_from_row(r: &Row<'_>) -> rusqlite::Result<Fragment> {
    let state: String = r.get(2)?;
    let attempt: Option<i64> = r.get(4)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, format!("fragment {what}").into())
    };
    let state = match state.as_str() {
        "pending" => FragmentState::Pending,
        "running" => FragmentState::Running {
            attempt: AttemptId(attempt.ok_or_else(|| bad("running without an attempt"))?),
            worker: r
                .get::<_, Option<String>>(5)?
                .ok_or_else(|| bad("running without a worker"))?,
            since: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
        },
        "succeeded" => FragmentState::Succeeded {
            attempt: AttemptId(attempt.ok_or_else(|| bad("succeeded without an attempt"))?),
        },
        "failed" => FragmentState::Failed {
            attempt: attempt.map(AttemptId),
            reason: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
        },
        other => return Err(bad(&format!("in unknown state {other}"))),
    };
    Ok(Fragment {
        id: FragmentId(r.get(0)?),
        attempts: r.get(3)?,
        failures: r.get(8)?,
        state,
    })
}

/// The name of the fragment in the same row, borrowed from SQLite.
pub(super) fn fragment_name<'r>(r: &'r Row<'_>) -> rusqlite::Result<&'r str> {
    Ok(r.get_ref(1)?.as_str()?)
}

/// `(state, attempt, worker, since, reason)` columns of a fragment state.
fn fragment_columns(s: &FragmentState) -> (&'static str, Option<i64>, Option<&str>, Option<i64>, Option<&str>) {
    match s {
        FragmentState::Pending => ("pending", None, None, None, None),
        FragmentState::Running { attempt, worker, since } => {
            ("running", Some(attempt.0), Some(worker), Some(*since), None)
        }
        FragmentState::Succeeded { attempt } => ("succeeded", Some(attempt.0), None, None, None),
        FragmentState::Failed { attempt, reason } => ("failed", attempt.map(|a| a.0), None, None, Some(reason)),
    }
}

/// `(kind, value, detail)` columns of an exit.
pub(super) fn exit_columns(e: &Exit) -> (&'static str, Option<i64>, Option<&str>) {
    match e {
        Exit::Code(c) => ("code", Some(i64::from(*c)), None),
        Exit::Signal(s) => ("signal", Some(i64::from(*s)), None),
        Exit::StartFailed(why) => ("start_failed", None, Some(why)),
    }
}

pub(super) fn exit_from_columns(kind: Option<String>, value: Option<i64>, detail: Option<String>) -> Option<Exit> {
    match kind.as_deref()? {
        "code" => Some(Exit::Code(value.unwrap_or(-1) as i32)),
        "signal" => Some(Exit::Signal(value.unwrap_or(0) as i32)),
        _ => Some(Exit::StartFailed(detail.unwrap_or_default())),
    }
}

/// Fragment rows per INSERT: one statement per row was most of a million-fragment submit
/// (10 µs a row). 4 parameters a row stays far below SQLite's 32,766.
pub(super) const ROWS_PER_INSERT: usize = 256;

/// Inserts a new project's fragments, `ROWS_PER_INSERT` rows per statement.
fn insert_fragments(c: &Connection, project: i64, first: i64, names: &Names) -> Result<(), StoreError> {
    let statement = |rows: usize| {
        let mut sql = String::from("INSERT INTO fragments (id, project_id, idx, name, state) VALUES ");
        for row in 0..rows {
            if row > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,'pending')");
        }
        sql
    };
    let mut full = c
        .prepare_cached(&statement(ROWS_PER_INSERT))
        .map_err(sql("insert fragments"))?;
    for start in (0..names.len()).step_by(ROWS_PER_INSERT) {
        let rows = ROWS_PER_INSERT.min(names.len() - start);
        let mut partial;
        let stmt = if rows == ROWS_PER_INSERT {
            &mut full
        } else {
            partial = c.prepare(&statement(rows)).map_err(sql("insert fragments"))?;
            &mut partial
        };
        for row in 0..rows {
            let idx = (start + row) as i64;
            let name = names.get(start + row);
            let at = row * 4;
            stmt.raw_bind_parameter(at + 1, first + idx)
                .and_then(|()| stmt.raw_bind_parameter(at + 2, project))
                .and_then(|()| stmt.raw_bind_parameter(at + 3, idx))
                .and_then(|()| stmt.raw_bind_parameter(at + 4, name))
                .map_err(sql("insert fragments"))?;
        }
        stmt.raw_execute().map_err(sql("insert fragments"))?;
    }
    Ok(())
}

pub(super) fn apply(c: &Connection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::AddProject {
            id,
            name,
            dir,
            spec,
            results_dir,
            created_at,
            first_fragment,
            names,
            after,
            max_running,
        } => {
            let spec = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
                what: "run spec",
                detail: e.to_string(),
            })?;
            let after = after_json(after)?;
            c.prepare_cached(
                "INSERT INTO projects (id, name, dir, spec, results_dir, created_at, max_running, after)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.0,
                    name,
                    dir.to_string_lossy(),
                    spec,
                    results_dir.to_string_lossy(),
                    created_at,
                    max_running,
                    after
                ])
            })
            .map_err(sql("insert a project"))?;
            insert_fragments(c, id.0, first_fragment.0, names)?;
        }
        Write::ProjectShare { id, share } => {
            c.prepare_cached("UPDATE projects SET share = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.0, share]))
                .map_err(sql("update project share"))?;
        }
        Write::ProjectControls {
            id,
            paused,
            max_running,
            after,
        } => {
            let after = after_json(after)?;
            c.prepare_cached("UPDATE projects SET paused = ?2, max_running = ?3, after = ?4 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.0, paused, max_running, after]))
                .map_err(sql("update a project's controls"))?;
        }
        Write::Job { id, job } => {
            let job = serde_json::to_string(job).map_err(|e| StoreError::Corrupt {
                what: "job",
                detail: e.to_string(),
            })?;
            c.prepare_cached("UPDATE projects SET job = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.0, job]))
                .map_err(sql("store a job"))?;
        }
        Write::AttemptRan { id, at } => {
            c.prepare_cached("UPDATE attempts SET ran_at = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.0, at]))
                .map_err(sql("record an attempt's start"))?;
        }
        Write::WorkerSeen { name, seen, stopped } => {
            c.prepare_cached("UPDATE workers SET last_seen = ?2, stopped = ?3 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, seen, stopped]))
                .map_err(sql("store a worker's last contact"))?;
        }
        Write::WorkerDrained { name, drained } => {
            c.prepare_cached("UPDATE workers SET drained = ?2 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, drained]))
                .map_err(sql("store a worker's drain"))?;
        }
        Write::ForgetWorker { name } => {
            c.prepare_cached("DELETE FROM workers WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name]))
                .map_err(sql("forget a worker"))?;
        }
        Write::RemoveProject { id, at } => {
            c.prepare_cached("UPDATE projects SET removed_at = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.0, at]))
                .map_err(sql("remove a project"))?;
        }
        Write::Fragment {
            id,
            attempts,
            failures,
            state,
        } => {
            let (st, attempt, worker, since, reason) = fragment_columns(state);
            c.prepare_cached(
                // A pending fragment keeps its last attempt (its logs); a failed one names the
                // attempt that failed it, or none (cancelled before it ran).
                "UPDATE fragments SET state = ?2, attempts = ?3,
                 attempt_id = CASE WHEN ?2 = 'failed' THEN ?4 ELSE COALESCE(?4, attempt_id) END,
                 worker = ?5, since = ?6, reason = ?7, failures = ?8 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id.0, st, attempts, attempt, worker, since, reason, failures]))
            .map_err(sql("update a fragment"))?;
        }
        Write::AttemptStarted {
            id,
            fragment,
            worker,
            at,
        } => {
            c.prepare_cached(
                "INSERT INTO attempts (id, fragment_id, worker, started_at, outcome) VALUES (?1, ?2, ?3, ?4, 'running')",
            )
            .and_then(|mut s| s.execute(params![id.0, fragment.0, worker, at]))
            .map_err(sql("insert an attempt"))?;
        }
        Write::Late { id, worker, completion } => {
            // Keep what the late run did without touching an outcome that was already decided,
            // and only from the worker the attempt ran on: another cannot write its record.
            let changed = c
                .prepare_cached(
                    "UPDATE attempts SET late_exit = COALESCE(late_exit, ?2),
                     wall_ms = COALESCE(wall_ms, ?3), cpu_ms = COALESCE(cpu_ms, ?4), peak_rss_kb = COALESCE(peak_rss_kb, ?5)
                     WHERE id = ?1 AND worker = ?6 AND outcome IN ('lost', 'stopped')",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id.0,
                        completion.exit.to_string(),
                        completion.wall_ms as i64,
                        completion.cpu_ms as i64,
                        measured_kb(completion),
                        worker
                    ])
                })
                .map_err(sql("record a late completion"))?;
            if changed == 0 {
                tracing::debug!(attempt = %id, %worker, "late completion not recorded: the attempt did not run there, or its outcome already stands");
            }
        }
        Write::AttemptEnded {
            id,
            end,
            at,
            completion,
            note,
        } => {
            let exit = completion.as_ref().map(|c| exit_columns(&c.exit));
            let limit_json = completion
                .as_ref()
                .and_then(|c| c.limit.as_ref())
                .and_then(|l| serde_json::to_string(l).ok());
            c.prepare_cached(
                "UPDATE attempts SET outcome = ?2, ended_at = ?3, exit_kind = ?4, exit_value = ?5, exit_detail = ?6,
                 wall_ms = ?7, cpu_ms = ?8, peak_rss_kb = ?9, note = ?10, ran_at = COALESCE(ran_at, ?11),
                 limit_hit = ?12, peak_memory_bytes = ?13
                 WHERE id = ?1 AND outcome = 'running'",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.0,
                    end.as_str(),
                    at,
                    exit.map(|e| e.0),
                    exit.and_then(|e| e.1),
                    exit.and_then(|e| e.2),
                    completion.as_ref().map(|c| c.wall_ms as i64),
                    completion.as_ref().map(|c| c.cpu_ms as i64),
                    completion.as_ref().and_then(measured_kb),
                    note,
                    completion
                        .as_ref()
                        .filter(|c| !matches!(c.exit, Exit::StartFailed(_)))
                        .map(|c| c.finished_at - c.wall_ms as i64),
                    limit_json,
                    completion
                        .as_ref()
                        .and_then(|c| c.peak_memory_bytes)
                        .map(|b| b.min(i64::MAX as u64) as i64),
                ])
            })
            .map_err(sql("end an attempt"))?;
        }
        Write::Worker { name, resources, seen } => {
            let res = serde_json::to_string(resources).map_err(|e| StoreError::Corrupt {
                what: "resources",
                detail: e.to_string(),
            })?;
            c.prepare_cached(
                "INSERT INTO workers (name, resources, last_seen) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET resources = excluded.resources, last_seen = excluded.last_seen,
                 stopped = 0",
            )
            .and_then(|mut s| s.execute(params![name, res, seen]))
            .map_err(sql("store a worker"))?;
        }
        Write::Policy(p) => {
            let v = serde_json::to_string(p).map_err(|e| StoreError::Corrupt {
                what: "policy",
                detail: e.to_string(),
            })?;
            put_setting(c, "policy", &v)?;
        }
        Write::ServicesFile(file) => {
            let v = serde_json::to_string(file).map_err(|e| StoreError::Corrupt {
                what: "services file",
                detail: e.to_string(),
            })?;
            put_setting(c, "services", &v)?;
        }
        Write::MaxRun(max) => put_setting(c, "max_run", &max.to_string())?,
        Write::Alerts(rows) => super::alerts::insert(c, rows)?,
        Write::AlertsDelivered { ids, at } => super::alerts::delivered(c, ids, *at)?,
        Write::ServiceEvents(events) => {
            let mut stmt = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (id, at, service, instance, worker, run, n, kind)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql("store an event"))?;
            for e in events {
                let kind = serde_json::to_string(&e.kind).map_err(|err| StoreError::Corrupt {
                    what: "event",
                    detail: err.to_string(),
                })?;
                stmt.execute(params![
                    e.id,
                    e.at,
                    e.service,
                    e.instance,
                    e.worker,
                    e.origin.map(|(run, _)| run.0),
                    e.origin.map(|(_, n)| n),
                    kind
                ])
                .map_err(sql("store an event"))?;
            }
        }
        Write::Instance { id, recorded: None } => {
            c.prepare_cached("DELETE FROM instances WHERE service = ?1 AND host = ?2 AND idx = ?3")
                .and_then(|mut s| s.execute(params![id.service, id.host.as_deref().unwrap_or(""), id.index]))
                .map_err(sql("forget an instance"))?;
        }
        Write::Instance { id, recorded: Some(r) } => {
            let (run, worker) = r
                .placed
                .clone()
                .map_or((None, None), |(run, worker)| (Some(run.0), Some(worker)));
            let wanted = match r.wanted {
                Wanted::Up => "up",
                Wanted::Down => "down",
            };
            c.prepare_cached(
                "INSERT INTO instances (service, host, idx, wanted, run, worker) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (service, host, idx) DO UPDATE SET wanted = excluded.wanted, run = excluded.run, worker = excluded.worker",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.service,
                    id.host.as_deref().unwrap_or(""),
                    id.index,
                    wanted,
                    run,
                    worker
                ])
            })
            .map_err(sql("store an instance"))?;
        }
    }
    Ok(())
}

/// The instances as recorded, from `SELECT service, host, idx, wanted, run, worker FROM
/// instances`.
pub(super) fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<Recorded> {
    let host: String = r.get(1)?;
    let wanted: String = r.get(3)?;
    let run: Option<i64> = r.get(4)?;
    let worker: Option<String> = r.get(5)?;
    Ok(Recorded {
        id: InstanceId {
            service: r.get(0)?,
            host: (!host.is_empty()).then_some(host),
            index: r.get(2)?,
        },
        wanted: if wanted == "up" { Wanted::Up } else { Wanted::Down },
        placed: run.zip(worker).map(|(run, worker)| (RunId(run), worker)),
    })
}

/// A project's `after` list as stored: JSON, or NULL when empty.
fn after_json(after: &[String]) -> Result<Option<String>, StoreError> {
    if after.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(after).map(Some).map_err(|e| StoreError::Corrupt {
        what: "project's after list",
        detail: e.to_string(),
    })
}

/// A completion's peak RSS for the store: none when kinski could not measure it (0).
fn measured_kb(completion: &Completion) -> Option<i64> {
    (completion.peak_rss_kb > 0).then(|| i64::try_from(completion.peak_rss_kb).unwrap_or(i64::MAX))
}
