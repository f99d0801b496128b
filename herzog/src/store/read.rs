//! Read-only queries that need the full record (attempt statistics), answered from their own
//! connection so they never wait for the writer.

use super::{StoreError, connect, rows, sql};
use common::instances::ServiceEvent;
use common::wire::{FragmentInfo, FragmentStateKind, Page};
use common::{AttemptId, ProjectId};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// A reader connection.
pub(crate) struct Reader {
    conn: Connection,
}

/// A fragment found by name or index, with the attempt whose output `hz logs` shows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FoundFragment {
    pub(crate) name: String,
    pub(crate) attempt: Option<AttemptId>,
    /// Why that attempt's program never ran (it could not be started), when so.
    pub(crate) never_ran: Option<String>,
}

impl Reader {
    pub(crate) fn open(path: &Path) -> Result<Reader, StoreError> {
        let conn = connect(path)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(sql("open a reader"))?;
        Ok(Reader { conn })
    }

    /// The services' event log (of `service` when given): the last `limit` entries when
    /// `after` is `None`, else the first `limit` after that id; oldest first.
    pub(crate) fn events(
        &self,
        service: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ServiceEvent>, StoreError> {
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let query = format!(
            "SELECT id, at, service, instance, worker, kind FROM events
             WHERE (?1 IS NULL OR service = ?1) AND id > ?2 ORDER BY id {order} LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&query).map_err(sql("read events"))?;
        let rows = stmt
            .query_map(params![service, after.unwrap_or(0), i64::from(limit)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(sql("read events"))?;
        let mut events = Vec::new();
        for row in rows {
            let (id, at, service, instance, worker, kind) = row.map_err(sql("read events"))?;
            let kind = serde_json::from_str(&kind).map_err(|e| StoreError::Corrupt {
                what: "event",
                detail: e.to_string(),
            })?;
            events.push(ServiceEvent {
                id,
                at,
                service,
                instance,
                worker,
                kind,
            });
        }
        if after.is_none() {
            events.reverse();
        }
        Ok(events)
    }

    /// Fragments with index >= `offset`, at most `limit` of them.
    pub(crate) fn fragments(
        &self,
        project: ProjectId,
        offset: u64,
        limit: u32,
    ) -> Result<Page<FragmentInfo>, StoreError> {
        let total: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM fragments WHERE project_id = ?1")
            .and_then(|mut s| s.query_row([project.0], |r| r.get(0)))
            .map_err(sql("count fragments"))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT f.idx, f.name, f.state, f.attempts, f.attempt_id, COALESCE(f.worker, a.worker), f.reason,
                        a.exit_kind, a.exit_value, a.exit_detail, a.wall_ms, a.cpu_ms, a.peak_rss_kb
                 FROM fragments f LEFT JOIN attempts a ON a.id = f.attempt_id
                 WHERE f.project_id = ?1 AND f.idx >= ?2 ORDER BY f.idx LIMIT ?3",
            )
            .map_err(sql("list fragments"))?;
        let items = stmt
            .query_map(params![project.0, offset as i64, i64::from(limit)], |r| {
                let state = match r.get::<_, String>(2)?.as_str() {
                    "running" => FragmentStateKind::Running,
                    "succeeded" => FragmentStateKind::Succeeded,
                    "failed" => FragmentStateKind::Failed,
                    _ => FragmentStateKind::Pending,
                };
                let running = state == FragmentStateKind::Running;
                let u = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
                Ok(FragmentInfo {
                    index: r.get::<_, i64>(0)? as u64,
                    name: r.get(1)?,
                    state,
                    attempts: r.get(3)?,
                    attempt: r.get::<_, Option<i64>>(4)?.map(AttemptId),
                    worker: r.get(5)?,
                    exit: if running {
                        None
                    } else {
                        rows::exit_from_columns(r.get(7)?, r.get(8)?, r.get(9)?)
                    },
                    wall_ms: if running { None } else { u(10)? },
                    cpu_ms: if running { None } else { u(11)? },
                    peak_rss_kb: if running { None } else { u(12)? },
                    reason: r.get(6)?,
                })
            })
            .map_err(sql("list fragments"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list fragments"))?;
        let next = match items.last() {
            Some(last) if (last.index + 1) < total as u64 && items.len() == limit as usize => Some(last.index + 1),
            _ => None,
        };
        Ok(Page {
            items,
            next,
            total: total as u64,
        })
    }

    /// Finds a fragment by file name, or by index when `key` is a number and no file has
    /// that name.
    pub(crate) fn find_fragment(&self, project: ProjectId, key: &str) -> Result<Option<FoundFragment>, StoreError> {
        let by = |col: &str, value: &dyn rusqlite::ToSql| -> Result<Option<(i64, String, Option<i64>)>, StoreError> {
            self.conn
                .prepare_cached(&format!(
                    "SELECT id, name, attempt_id FROM fragments WHERE project_id = ?1 AND {col} = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row(params![project.0, value], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(sql("find a fragment"))
        };
        let mut found = by("name", &key)?;
        if found.is_none()
            && let Ok(i) = key.parse::<i64>()
        {
            found = by("idx", &i)?;
        }
        let Some((id, name, attempt)) = found else {
            return Ok(None);
        };
        let attempt = match attempt {
            Some(a) => Some(a),
            None => self
                .conn
                .prepare_cached("SELECT MAX(id) FROM attempts WHERE fragment_id = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get::<_, Option<i64>>(0)))
                .map_err(sql("find a fragment's attempt"))?,
        };
        let never_ran = match attempt {
            None => None,
            Some(a) => self
                .conn
                .prepare_cached("SELECT exit_detail FROM attempts WHERE id = ?1 AND exit_kind = 'start_failed'")
                .and_then(|mut s| s.query_row([a], |r| r.get::<_, Option<String>>(0)).optional())
                .map_err(sql("read an attempt's exit"))?
                .map(Option::unwrap_or_default),
        };
        Ok(Some(FoundFragment {
            name,
            attempt: attempt.map(AttemptId),
            never_ran,
        }))
    }
}
