//! Read-only queries that need the full record (attempt statistics), answered from their own
//! connection so they never wait for the writer.

use super::{StoreError, connect, sql};
use common::instances::ServiceEvent;
use common::wire::{FragmentInfo, Page};
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
    /// Its row id and its index in the project.
    pub(crate) id: i64,
    pub(crate) index: i64,
    pub(crate) name: String,
    pub(crate) attempt: Option<AttemptId>,
    /// Why that attempt's program never ran (it could not be started), when so.
    pub(crate) never_ran: Option<String>,
}

impl Reader {
    /// Its connection, for the readers in the sibling modules.
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

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
        let record = super::history::ProjectRecord {
            id: project,
            dir: Default::default(),
            spec: common::wire::RunSpec::new(""),
        };
        let query = common::history::FragmentQuery {
            offset,
            limit,
            ..Default::default()
        };
        self.fragments_query(&record, &query)
    }

    /// Finds a fragment by file name, or by index when `key` is a number and no file has
    /// that name.
    pub(crate) fn find_fragment(&self, project: ProjectId, key: &str) -> Result<Option<FoundFragment>, StoreError> {
        type Row = (i64, i64, String, Option<i64>);
        let by = |col: &str, value: &dyn rusqlite::ToSql| -> Result<Option<Row>, StoreError> {
            self.conn
                .prepare_cached(&format!(
                    "SELECT id, idx, name, attempt_id FROM fragments WHERE project_id = ?1 AND {col} = ?2"
                ))
                .and_then(|mut s| {
                    s.query_row(params![project.0, value], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
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
        let Some((id, index, name, attempt)) = found else {
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
            id,
            index,
            name,
            attempt: attempt.map(AttemptId),
            never_ran,
        }))
    }
}
