//! Stored gauges for `/metrics` on PostgreSQL: users online per service and the webhook
//! backlog. Each query walks an index (`users_online`, `deliveries_pending`), so a scrape stays
//! cheap as tables grow.
//!
//! May depend on: postgres, domain.

use super::statements::Sql;

use super::PgResultExt;
use crate::domain::Result;
use crate::domain::store::MetricsSnapshot;

pub fn snapshot(client: &mut impl Sql) -> Result<MetricsSnapshot> {
    let online_users = client
        .query(
            "SELECT s.sid, (SELECT count(*) FROM users u WHERE u.service_sid = s.sid AND u.is_online) \
             FROM services s ORDER BY s.id",
            &[],
        )
        .db()?
        .iter()
        .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
        .collect::<Result<Vec<(String, i64)>>>()?;
    let pending_deliveries: i64 = client
        .query_one(
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            &[],
        )
        .db()?
        .try_get(0)
        .db()?;
    // Each queue's oldest pending delivery is its head, so the oldest head is the oldest of all.
    let oldest_pending: Option<i64> = client
        .query_one(
            "SELECT min(created_at) FROM deliveries WHERE head AND status = 'pending'",
            &[],
        )
        .db()?
        .try_get(0)
        .db()?;
    Ok(MetricsSnapshot {
        online_users,
        pending_deliveries,
        oldest_pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::events::test_db::fresh_database;

    #[test]
    fn counts_online_users_and_pending_deliveries() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        db.user(&service, "a");
        db.user(&service, "b");
        let mut client = db.client();
        client
            .execute(
                "UPDATE users SET is_online = TRUE WHERE identity = 'a'",
                &[],
            )
            .expect("online");
        let snap = snapshot(&mut *client).expect("snapshot");
        assert_eq!(snap.online_users, vec![(service, 1)]);
        assert_eq!(snap.pending_deliveries, 0);
        assert_eq!(snap.oldest_pending, None);
    }
}
