//! Stored gauges for `/metrics`: users online per service and the webhook backlog. Each query
//! walks an index (`users_online`, `deliveries_due`), so a scrape stays cheap as tables grow.
//!
//! May depend on: rusqlite, domain.

use rusqlite::Connection;

use super::SqlResultExt;
use crate::domain::Result;
use crate::domain::store::MetricsSnapshot;

pub fn snapshot(conn: &Connection) -> Result<MetricsSnapshot> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.sid, (SELECT count(*) FROM users u WHERE u.service_sid = s.sid AND u.is_online = 1) \
             FROM services s ORDER BY s.id",
        )
        .db()?;
    let online_users = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .db()?
        .collect::<rusqlite::Result<Vec<(String, i64)>>>()
        .db()?;
    let pending_deliveries = conn
        .prepare_cached(
            "SELECT count(*) FROM deliveries WHERE head IN (0, 1) AND status = 'pending'",
        )
        .db()?
        .query_row([], |r| r.get(0))
        .db()?;
    // Each queue's oldest pending delivery is its head, so the oldest head is the oldest of all.
    let oldest_pending = conn
        .prepare_cached(
            "SELECT min(created_at) FROM deliveries WHERE head = 1 AND status = 'pending'",
        )
        .db()?
        .query_row([], |r| r.get(0))
        .db()?;
    Ok(MetricsSnapshot {
        online_users,
        pending_deliveries,
        oldest_pending,
    })
}
