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

/// Marks rows delivered.
pub(super) fn delivered(c: &Connection, ids: &[i64], at: Millis) -> Result<(), StoreError> {
    let mut stmt = c
        .prepare_cached("UPDATE alerts SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL")
        .map_err(sql("mark an alert delivered"))?;
    for id in ids {
        stmt.execute(params![id, at]).map_err(sql("mark an alert delivered"))?;
    }
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
