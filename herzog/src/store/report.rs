//! `hz report P`: a project's usage read from the record on a reader connection (never the
//! machine's memory, never the writer): its counted attempts, failures by reason and attempts
//! per host. The arithmetic is common::report's.

use super::read::Reader;
use super::{StoreError, sql};
use common::report::{FailureCount, FragmentCounts, FragmentUsage, HostAttempts, Report, Usage, count_failures};
use common::wire::RunSpec;
use rusqlite::{OptionalExtension, params};

impl Reader {
    /// The usage report of the live project called `name`, else of the latest removed one of
    /// that name; `None` when there never was one.
    pub(crate) fn report(&self, name: &str) -> Result<Option<Report>, StoreError> {
        let found = self
            .conn()
            .prepare_cached(
                "SELECT id, spec, removed_at, job IS NOT NULL FROM projects WHERE name = ?1
                 ORDER BY removed_at IS NOT NULL, id DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(sql("find a project to report"))?;
        let Some((id, spec, removed_at, job)) = found else {
            return Ok(None);
        };
        let spec: RunSpec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt {
            what: "project's run spec",
            detail: e.to_string(),
        })?;
        let mut report = Report::new(name.to_string(), job, removed_at, spec.requests);
        report.fragments = self.fragment_counts(id)?;
        let mut usage = Usage::new(spec.requests);
        self.counted_attempts(id, |f| usage.add(f))?;
        usage.finish(&mut report);
        report.failures = self.failures(id)?;
        report.hosts = self.hosts(id)?;
        Ok(Some(report))
    }

    fn fragment_counts(&self, project: i64) -> Result<FragmentCounts, StoreError> {
        let mut counts = FragmentCounts::default();
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT state, COUNT(*) FROM fragments WHERE project_id = ?1 GROUP BY state")
            .map_err(sql("count fragments by state"))?;
        let rows = stmt
            .query_map([project], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(sql("count fragments by state"))?;
        for row in rows {
            let (state, n) = row.map_err(sql("count fragments by state"))?;
            counts.total += n;
            match state.as_str() {
                "running" => counts.running += n,
                "succeeded" => counts.succeeded += n,
                "failed" => counts.failed += n,
                _ => counts.pending += n,
            }
        }
        Ok(counts)
    }

    /// Calls `each` with the last attempt of every finished fragment whose program ran and
    /// reported its exit, in project order (see common::report::Report for why these).
    fn counted_attempts(&self, project: i64, mut each: impl FnMut(FragmentUsage)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT f.name, a.worker, a.wall_ms, COALESCE(a.cpu_ms, 0),
                        COALESCE(a.peak_memory_bytes, a.peak_rss_kb * 1024)
                 FROM fragments f JOIN attempts a ON a.id = f.attempt_id
                 WHERE f.project_id = ?1 AND f.state IN ('succeeded', 'failed')
                   AND a.outcome IN ('succeeded', 'failed') AND a.wall_ms IS NOT NULL
                   AND a.exit_kind IS NOT 'start_failed'
                 ORDER BY f.idx",
            )
            .map_err(sql("read the counted attempts"))?;
        let mut rows = stmt.query([project]).map_err(sql("read the counted attempts"))?;
        while let Some(r) = rows.next().map_err(sql("read the counted attempts"))? {
            let read = || -> rusqlite::Result<FragmentUsage> {
                Ok(FragmentUsage {
                    fragment: r.get(0)?,
                    worker: r.get(1)?,
                    wall_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    cpu_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    // The cgroup's peak where there was one (the whole tree), else wait4's.
                    peak_memory_bytes: r.get::<_, Option<i64>>(4)?.map(|b| b.max(0) as u64),
                })
            };
            each(read().map_err(sql("read the counted attempts"))?);
        }
        Ok(())
    }

    /// Failed fragments by reason (an out-of-memory end by its limit), most frequent first,
    /// each with its first fragment.
    fn failures(&self, project: i64) -> Result<Vec<FailureCount>, StoreError> {
        // SQLite takes a bare column (name) from the row that gave MIN(idx).
        let groups = self
            .conn()
            .prepare_cached(
                "SELECT COALESCE(reason, 'failed'), COUNT(*), MIN(idx), name FROM fragments
                 WHERE project_id = ?1 AND state = 'failed' GROUP BY COALESCE(reason, 'failed')",
            )
            .and_then(|mut s| {
                s.query_map([project], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect()
            })
            .map_err(sql("count failures by reason"))?;
        Ok(count_failures(groups))
    }

    /// Every attempt of the project, counted by worker and outcome.
    fn hosts(&self, project: i64) -> Result<Vec<HostAttempts>, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT a.worker, COUNT(*), SUM(a.outcome = 'succeeded'), SUM(a.outcome = 'failed'),
                        SUM(a.outcome IN ('lost', 'late')), SUM(a.outcome = 'stopped'),
                        SUM(a.outcome = 'running'), COALESCE(SUM(a.wall_ms), 0), COALESCE(SUM(a.cpu_ms), 0)
                 FROM fragments f JOIN attempts a ON a.fragment_id = f.id
                 WHERE f.project_id = ?1 GROUP BY a.worker ORDER BY a.worker",
            )
            .and_then(|mut s| {
                s.query_map(params![project], |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(HostAttempts {
                        worker: r.get(0)?,
                        attempts: n(1)?,
                        succeeded: n(2)?,
                        failed: n(3)?,
                        lost: n(4)?,
                        stopped: n(5)?,
                        running: n(6)?,
                        wall_ms: n(7)?,
                        cpu_ms: n(8)?,
                    })
                })?
                .collect()
            })
            .map_err(sql("count attempts per host"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A store with project `p` (fragments a..e) and attempts written as the loop would.
    fn store_with_attempts() -> (tempfile::TempDir, Reader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        drop(Store::open(&path).unwrap());
        let c = rusqlite::Connection::open(&path).unwrap();
        let mut spec = RunSpec::new("true");
        spec.requests.cpus = Some(2);
        spec.requests.memory_bytes = Some(8 << 20);
        c.execute(
            "INSERT INTO projects (id, name, dir, spec, results_dir, created_at) VALUES (1, 'p', '/in', ?1, '/out', 0)",
            [serde_json::to_string(&spec).unwrap()],
        )
        .unwrap();
        // a: failed on w1, then succeeded on w2 (the second counts). b: succeeded. c: failed
        // (exit 3). d: could not start. e: lost, then running.
        c.execute_batch(
            "INSERT INTO fragments (id, project_id, idx, name, state, attempts, attempt_id, reason) VALUES
               (1, 1, 0, 'a', 'succeeded', 2, 2, NULL),
               (2, 1, 1, 'b', 'succeeded', 1, 3, NULL),
               (3, 1, 2, 'c', 'failed', 1, 4, 'exited with 3'),
               (4, 1, 3, 'd', 'failed', 1, 5, 'could not start: no such file'),
               (5, 1, 4, 'e', 'running', 2, 7, NULL);
             INSERT INTO attempts (id, fragment_id, worker, started_at, outcome, exit_kind, exit_value, exit_detail,
                                   wall_ms, cpu_ms, peak_rss_kb) VALUES
               (1, 1, 'w1', 0, 'failed', 'code', 1, NULL, 9000, 9000, 9000),
               (2, 1, 'w2', 0, 'succeeded', 'code', 0, NULL, 4000, 2000, 4096),
               (3, 2, 'w1', 0, 'succeeded', 'code', 0, NULL, 2000, 4000, 2048),
               (4, 3, 'w2', 0, 'failed', 'code', 3, NULL, 1000, 500, 1024),
               (5, 4, 'w1', 0, 'failed', 'start_failed', NULL, 'no such file', 0, 0, 0),
               (6, 5, 'w2', 0, 'lost', NULL, NULL, NULL, NULL, NULL, NULL),
               (7, 5, 'w1', 0, 'running', NULL, NULL, NULL, NULL, NULL, NULL);",
        )
        .unwrap();
        let reader = Reader::open(&path).unwrap();
        (dir, reader)
    }

    #[test]
    fn a_report_counts_the_last_attempt_of_each_finished_fragment() {
        let (_dir, reader) = store_with_attempts();
        let r = reader.report("p").unwrap().expect("p exists");
        assert_eq!(
            r.fragments,
            FragmentCounts {
                total: 5,
                pending: 0,
                running: 1,
                succeeded: 2,
                failed: 2
            }
        );
        // a's second attempt, b and c: not a's first (retried), d (never ran) or e (running).
        assert_eq!(r.counted, 3);
        let wall = r.wall_ms.unwrap();
        assert_eq!((wall.min, wall.median, wall.max), (1000, 2000, 4000));
        let slow: Vec<(&str, &str)> = r
            .slowest
            .iter()
            .map(|f| (f.fragment.as_str(), f.worker.as_str()))
            .collect();
        assert_eq!(slow, [("a", "w2"), ("b", "w1"), ("c", "w2")]);
        assert_eq!(r.largest[0].peak_memory_bytes, Some(4 << 20));
        // 2 CPUs requested: b used 4 s of CPU in 2 s of wall, all of both.
        let eff = r.cpu_efficiency.unwrap();
        assert_eq!((eff.min, eff.max), (0.25, 1.0));
        assert_eq!(r.total.cpu_efficiency, Some(6500.0 / 14000.0));
        assert_eq!(r.memory_efficiency.unwrap().max, 0.5);
        let reasons: Vec<(&str, u64, &str)> = r
            .failures
            .iter()
            .map(|f| (f.reason.as_str(), f.fragments, f.example.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [("could not start: no such file", 1, "d"), ("exited with 3", 1, "c")]
        );
        let hosts: Vec<(&str, u64, u64, u64, u64, u64)> = r
            .hosts
            .iter()
            .map(|h| (h.worker.as_str(), h.attempts, h.succeeded, h.failed, h.lost, h.running))
            .collect();
        assert_eq!(hosts, [("w1", 4, 1, 2, 0, 1), ("w2", 3, 1, 1, 1, 0)]);
        assert_eq!(r.hosts[0].wall_ms, 11_000);
        assert!(reader.report("nope").unwrap().is_none());
    }
}
