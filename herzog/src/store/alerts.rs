//! The alert outbox: rows written with their event's batch, read back by the sender (at start
//! and each time the loop says there are new ones), marked delivered through the loop.

use super::{Reader, StoreError, sql};
use crate::machine::{Alert, OutboxRow, Recipient};
use common::Millis;
use rusqlite::{Connection, params};

/// An undelivered outbox row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Undelivered {
    pub(crate) id: i64,
    pub(crate) origin: String,
    pub(crate) recipient: Recipient,
    pub(crate) alert: Alert,
}

/// Stores alerts; one already stored for its origin and recipient is kept once.
pub(super) fn insert(c: &Connection, rows: &[OutboxRow]) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare_cached("INSERT OR IGNORE INTO alerts (origin, recipient, kind, at, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sql("store an alert"))?;
    for row in rows {
        let body = serde_json::to_string(&row.alert).map_err(|e| StoreError::Corrupt {
            what: "alert",
            detail: e.to_string(),
        })?;
        stmt.execute(params![
            row.origin,
            row.recipient.stored(),
            row.alert.kind.name(),
            row.alert.at,
            body
        ])
        .map_err(sql("store an alert"))?;
    }
    Ok(())
}

/// How long a delivered alert is kept (for a look at what was sent) before it is pruned.
const KEEP_DELIVERED_MS: Millis = 30 * 24 * 3600 * 1000;

/// Marks rows delivered, and prunes those delivered long ago.
pub(super) fn delivered(c: &Connection, ids: &[i64], at: Millis) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare_cached("UPDATE alerts SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL")
        .map_err(sql("mark an alert delivered"))?;
    for id in ids {
        stmt.execute(params![id, at]).map_err(sql("mark an alert delivered"))?;
    }
    c.prepare_cached("DELETE FROM alerts WHERE delivered_at < ?1")
        .and_then(|mut s| s.execute([at - KEEP_DELIVERED_MS]))
        .map_err(sql("prune delivered alerts"))?;
    Ok(())
}

impl Reader {
    /// The undelivered rows with an id above `after`, oldest first.
    pub(crate) fn undelivered_alerts(&self, after: i64) -> Result<Vec<Undelivered>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT id, origin, recipient, body FROM alerts WHERE delivered_at IS NULL AND id > ?1 ORDER BY id",
            )
            .map_err(sql("read the alert outbox"))?;
        let rows = stmt
            .query_map([after], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(sql("read the alert outbox"))?;
        let mut found = Vec::new();
        for row in rows {
            let (id, origin, recipient, body) = row.map_err(sql("read the alert outbox"))?;
            let alert = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                what: "alert",
                detail: e.to_string(),
            })?;
            found.push(Undelivered {
                id,
                origin,
                recipient: Recipient::parse(&recipient),
                alert,
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{StderrFrom, Write};
    use crate::store::Store;
    use common::alerts::AlertKind;

    fn row(origin: &str, to: &str) -> OutboxRow {
        OutboxRow {
            origin: origin.into(),
            recipient: Recipient::parse(to),
            alert: Alert {
                kind: AlertKind::WorkerLost,
                at: 1,
                cluster: "c".into(),
                project: None,
                fragment: None,
                attempt: None,
                service: None,
                instance: None,
                host: Some("w1".into()),
                exit: None,
                reason: "lost".into(),
                stderr: StderrFrom::NotKept { why: "none".into() },
            },
        }
    }

    #[test]
    fn an_alert_is_kept_once_per_recipient_until_delivered_then_pruned_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let mut store = Store::open(&db).unwrap();
        let rows = vec![
            row("worker_lost:w1:1", "mailto:a@x"),
            row("worker_lost:w1:1", "http://h/"),
        ];
        store.commit(&[Write::Alerts(rows.clone())]).unwrap();
        // The same event again (a resent report): no new row.
        store.commit(&[Write::Alerts(rows)]).unwrap();
        let found = Reader::open(&db).unwrap().undelivered_alerts(0).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].recipient, Recipient::Email("a@x".into()));
        assert_eq!(found[1].alert.host.as_deref(), Some("w1"));
        assert_eq!(
            Reader::open(&db)
                .unwrap()
                .undelivered_alerts(found[0].id)
                .unwrap()
                .len(),
            1
        );
        store
            .commit(&[Write::AlertsDelivered {
                ids: vec![found[0].id],
                at: 10,
            }])
            .unwrap();
        let left = Reader::open(&db).unwrap().undelivered_alerts(0).unwrap();
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), vec![found[1].id]);
        // Long after, the next delivery prunes the old one; ids are not reused.
        store
            .commit(&[Write::AlertsDelivered {
                ids: vec![found[1].id],
                at: 10 + KEEP_DELIVERED_MS + 1,
            }])
            .unwrap();
        store
            .commit(&[Write::Alerts(vec![row("worker_lost:w1:2", "http://h/")])])
            .unwrap();
        let new = Reader::open(&db).unwrap().undelivered_alerts(0).unwrap();
        assert_eq!(new.len(), 1);
        assert!(new[0].id > found[1].id);
    }
}
