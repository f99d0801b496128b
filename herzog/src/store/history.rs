//! Reads of the record for attempt histories: a project by name, fragments filtered by one
//! fragment, a worker or a time, each with its attempts (`hz fragments P FRAG`, `hz fragments
//! P --json`, `--worker`, `--since`, `hz local --joblog`). Answered from the database, not
//! the machine: attempts that ended are only there.

use super::read::Reader;
use super::{StoreError, rows, sql};
use common::history::{AttemptInfo, FragmentQuery};
use common::wire::{FragmentInfo, FragmentStateKind, Page, RunSpec};
use common::{AttemptId, Millis, ProjectId};
use rusqlite::{OptionalExtension, params};
use std::path::PathBuf;

/// A live project as the record has it.
#[derive(Clone, Debug)]
pub(crate) struct ProjectRecord {
    pub(crate) id: ProjectId,
    pub(crate) dir: PathBuf,
    pub(crate) spec: RunSpec,
}

impl Reader {
    /// The live project called `name`, if there is one.
    pub(crate) fn project(&self, name: &str) -> Result<Option<ProjectRecord>, StoreError> {
        let row = self
            .conn()
            .prepare_cached("SELECT id, dir, spec FROM projects WHERE name = ?1 AND removed_at IS NULL")
            .and_then(|mut s| {
                s.query_row([name], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })
                .optional()
            })
            .map_err(sql("find a project"))?;
        let Some((id, dir, spec)) = row else {
            return Ok(None);
        };
        let spec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt {
            what: "project's run spec",
            detail: e.to_string(),
        })?;
        Ok(Some(ProjectRecord {
            id: ProjectId(id),
            dir: PathBuf::from(dir),
            spec,
        }))
    }

    /// Whether a project called `name` was ever removed.
    pub(crate) fn was_removed(&self, name: &str) -> Result<bool, StoreError> {
        self.conn()
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM projects WHERE name = ?1 AND removed_at IS NOT NULL)")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)))
            .map_err(sql("look for a removed project"))
    }

    /// Fragments with index >= `query.offset`, at most `query.limit`, that pass the query's
    /// filters, each with its attempts when asked.
    pub(crate) fn fragments_query(
        &self,
        project: &ProjectRecord,
        query: &FragmentQuery,
    ) -> Result<Page<FragmentInfo>, StoreError> {
        let total: i64 = self
            .conn()
            .prepare_cached("SELECT COUNT(*) FROM fragments WHERE project_id = ?1")
            .and_then(|mut s| s.query_row([project.id.0], |r| r.get(0)))
            .map_err(sql("count fragments"))?;
        let only = match &query.fragment {
            None => None,
            Some(key) => match self.find_fragment(project.id, key)? {
                Some(found) => Some(found.index),
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        next: None,
                        total: total as u64,
                    });
                }
            },
        };
        let filtered = query.worker.is_some() || query.since.is_some();
        let mut stmt = self
            .conn()
            .prepare_cached(
                // A dispatched attempt is queued until kinski said its program started.
                "SELECT f.idx, f.name,
                        CASE WHEN f.state = 'running' AND a.ran_at IS NULL THEN 'queued' ELSE f.state END,
                        f.attempts, f.attempt_id, COALESCE(f.worker, a.worker), f.reason,
                        a.exit_kind, a.exit_value, a.exit_detail, a.wall_ms, a.cpu_ms, a.peak_rss_kb, f.id,
                        a.peak_memory_bytes
                 FROM fragments f LEFT JOIN attempts a ON a.id = f.attempt_id
                 WHERE f.project_id = ?1 AND f.idx >= ?2 AND (?4 IS NULL OR f.idx = ?4)
                   AND (?5 = 0 OR EXISTS (SELECT 1 FROM attempts h WHERE h.fragment_id = f.id
                        AND (?6 IS NULL OR h.worker = ?6)
                        AND (?7 IS NULL OR COALESCE(h.ran_at, h.started_at) >= ?7 OR h.ended_at >= ?7 OR h.ended_at IS NULL)))
                 ORDER BY f.idx LIMIT ?3",
            )
            .map_err(sql("list fragments"))?;
        let rows = stmt
            .query_map(
                params![
                    project.id.0,
                    query.offset as i64,
                    i64::from(query.limit),
                    only,
                    filtered,
                    query.worker,
                    query.since,
                ],
                |r| Ok((fragment_info(r)?, r.get::<_, i64>(13)?)),
            )
            .map_err(sql("list fragments"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list fragments"))?;
        let mut items = Vec::with_capacity(rows.len());
        for (mut info, id) in rows {
            if query.attempts {
                info.history = self.attempts(project, id, &info.name, query.worker.as_deref(), query.since)?;
            }
            items.push(info);
        }
        let next = match items.last() {
            Some(last) if only.is_none() && (last.index + 1) < total as u64 && items.len() == query.limit as usize => {
                Some(last.index + 1)
            }
            _ => None,
        };
        Ok(Page {
            items,
            next,
            total: total as u64,
        })
    }

    /// A fragment's attempts, oldest first: those on `worker` and started, ended or still
    /// running at or after `since`, when given.
    pub(crate) fn attempts(
        &self,
        project: &ProjectRecord,
        fragment: i64,
        name: &str,
        worker: Option<&str>,
        since: Option<Millis>,
    ) -> Result<Vec<AttemptInfo>, StoreError> {
        let command = command_line(project, name);
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT id, worker, COALESCE(ran_at, started_at), ended_at, outcome, exit_kind, exit_value, exit_detail,
                        wall_ms, cpu_ms, peak_rss_kb, note, late_exit, peak_memory_bytes, limit_hit
                 FROM attempts WHERE fragment_id = ?1 AND (?2 IS NULL OR worker = ?2)
                   AND (?3 IS NULL OR COALESCE(ran_at, started_at) >= ?3 OR ended_at >= ?3 OR ended_at IS NULL)
                 ORDER BY id",
            )
            .map_err(sql("list attempts"))?;
        stmt.query_map(params![fragment, worker, since], |r| {
            let u = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
            Ok(AttemptInfo {
                attempt: AttemptId(r.get(0)?),
                worker: r.get(1)?,
                started_at: r.get(2)?,
                ended_at: r.get(3)?,
                outcome: r.get(4)?,
                exit: rows::exit_from_columns(r.get(5)?, r.get(6)?, r.get(7)?),
                wall_ms: u(8)?,
                cpu_ms: u(9)?,
                peak_rss_kb: u(10)?,
                peak_memory_bytes: u(13)?,
                limit: r
                    .get::<_, Option<String>>(14)?
                    .and_then(|j| serde_json::from_str(&j).ok()),
                note: r.get(11)?,
                late_exit: r.get(12)?,
                command: command.clone(),
            })
        })
        .map_err(sql("list attempts"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("list attempts"))
    }

    /// The ids of a fragment's attempts, oldest first.
    pub(crate) fn attempt_ids(&self, fragment: i64) -> Result<Vec<AttemptId>, StoreError> {
        self.conn()
            .prepare_cached("SELECT id FROM attempts WHERE fragment_id = ?1 ORDER BY id")
            .and_then(|mut s| {
                s.query_map([fragment], |r| r.get(0).map(AttemptId))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(sql("list a fragment's attempts"))
    }
}

/// A `FragmentInfo` from the columns of the fragment listing (its history left empty).
pub(super) fn fragment_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<FragmentInfo> {
    let state = match r.get::<_, String>(2)?.as_str() {
        "running" => FragmentStateKind::Running,
        "queued" => FragmentStateKind::Queued,
        "succeeded" => FragmentStateKind::Succeeded,
        "failed" => FragmentStateKind::Failed,
        _ => FragmentStateKind::Pending,
    };
    let running = matches!(state, FragmentStateKind::Running | FragmentStateKind::Queued);
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
        peak_memory_bytes: if running { None } else { u(14)? },
        reason: r.get(6)?,
        history: Vec::new(),
    })
}

/// The command line the program ran as for fragment `name` (on the shared filesystem: a
/// staged host ran it on its copy), each word quoted for `sh` where needed. Recomputed from
/// the stored program: the expansion is deterministic.
pub(crate) fn command_line(project: &ProjectRecord, name: &str) -> String {
    common::template::expand(&project.spec.program, &project.dir.join(name))
        .iter()
        .map(|word| common::template::shell_quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}
