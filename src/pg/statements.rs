//! The four calls every SQL module of the adapter makes (`execute`, `query`, `query_one`,
//! `query_opt` with a SQL string), as the [`Sql`] trait, and the cache of prepared statements
//! that lets the writer and the reader threads make them in one round trip instead of two
//! ([`CachedClient`]: a reader's connection with its cache).
//!
//! Sending a SQL string makes the `postgres` client prepare an unnamed statement first
//! (Parse/Describe, wait, then Bind/Execute, wait): two round trips per statement. The writer
//! runs its statements one after another on one connection, so on a burst it waits on the
//! network far longer than PostgreSQL works. [`StatementCache`] prepares each distinct SQL
//! string once per connection and reuses the named statement afterwards.
//!
//! Invariants:
//! - A cache belongs to one connection: prepared statements exist only in the session that
//!   prepared them. Whoever drops or replaces the connection drops its cache with it.
//! - Prepared statements are not transactional: one prepared inside a savepoint or
//!   transaction that rolls back stays valid (tested below).
//! - A statement whose execution fails is forgotten, so a statement that went stale (say,
//!   a plan invalidated by a schema change made by a newer node) is prepared afresh on its
//!   next use instead of failing forever.
//! - The cache is bounded ([`MAX_STATEMENTS`]); the adapter's SQL is a fixed set of strings
//!   well below it, so the bound only guards against SQL built from input.
//!
//! May depend on: postgres.

use std::collections::HashMap;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Error, GenericClient, Row, Statement};

/// Statements kept per connection before the cache starts over.
pub const MAX_STATEMENTS: usize = 1_024;

/// The parameters of one call.
pub type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// The calls the SQL modules make, on a client, a transaction, or the writer's cached view.
pub trait Sql {
    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, Error>;
    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error>;
    fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, Error>;
    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error>;
}

/// Any `postgres` client or transaction: statements prepared anew each time (readers and
/// one-off commands, whose connections come and go from the pool).
impl<C: GenericClient> Sql for C {
    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        GenericClient::execute(self, sql, params)
    }
    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        GenericClient::query(self, sql, params)
    }
    fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        GenericClient::query_one(self, sql, params)
    }
    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        GenericClient::query_opt(self, sql, params)
    }
}

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub struct StatementCache {
    prepared: HashMap<String, Statement>,
}

impl StatementCache {
    /// The statement for `sql`, prepared on `client` the first time.
    pub fn prepare(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        if self.prepared.len() >= MAX_STATEMENTS {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Runs `call` with `sql`'s statement; a failure forgets the statement.
    pub fn with<C: GenericClient, T>(
        &mut self,
        client: &mut C,
        sql: &str,
        call: impl FnOnce(&mut C, &Statement) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let statement = self.prepare(client, sql)?;
        let result = call(client, &statement);
        if result.is_err() {
            self.prepared.remove(sql);
        }
        result
    }

    pub fn len(&self) -> usize {
        self.prepared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }
}

/// A connection of its own and the statements prepared on it: a reader thread's. Its [`Sql`]
/// calls prepare each distinct SQL string once and reuse it; anything else (a transaction, a
/// simple query) goes to the plain client behind `Deref`, unprepared.
///
/// A read runs outside any transaction, so a statement that fails because its plan went stale
/// (PostgreSQL's "cached plan must not change result type", when a newer node's migration
/// changed a table's shape) has had no effect: it is prepared afresh and run once more at
/// once, and the read answers as an unprepared one would have.
pub struct CachedClient<C> {
    client: C,
    statements: StatementCache,
}

impl<C> CachedClient<C>
where
    C: std::ops::DerefMut<Target = postgres::Client>,
{
    pub fn new(client: C) -> Self {
        CachedClient {
            client,
            statements: StatementCache::default(),
        }
    }

    /// Statements prepared on this connection.
    pub fn prepared(&self) -> usize {
        self.statements.len()
    }

    fn call<T>(
        &mut self,
        sql: &str,
        call: impl Fn(&mut postgres::Client, &Statement) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let client = &mut *self.client;
        match self.statements.with(client, sql, &call) {
            Err(e) if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) => {
                self.statements.with(client, sql, &call)
            }
            result => result,
        }
    }
}

impl<C> std::ops::Deref for CachedClient<C>
where
    C: std::ops::Deref<Target = postgres::Client>,
{
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl<C> std::ops::DerefMut for CachedClient<C>
where
    C: std::ops::DerefMut<Target = postgres::Client>,
{
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

impl<C> Sql for CachedClient<C>
where
    C: std::ops::DerefMut<Target = postgres::Client>,
{
    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.call(sql, |c, s| c.execute(s, params))
    }
    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.call(sql, |c, s| c.query(s, params))
    }
    fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        self.call(sql, |c, s| c.query_one(s, params))
    }
    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        self.call(sql, |c, s| c.query_opt(s, params))
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::test_db::fresh_database;
    use super::*;

    #[test]
    fn a_statement_prepared_in_a_rolled_back_savepoint_stays_usable() {
        let Some(db) = fresh_database() else { return };
        let mut client = db.client();
        let mut cache = StatementCache::default();
        let sql = "SELECT $1::BIGINT + 1";
        {
            let mut tx = client.transaction().expect("begin");
            {
                let mut savepoint = tx.transaction().expect("savepoint");
                let row = cache
                    .with(&mut savepoint, sql, |c, s| c.query_one(s, &[&41_i64]))
                    .expect("first use");
                assert_eq!(row.get::<_, i64>(0), 42);
                // Dropped: rolled back to the savepoint.
            }
            let row = cache
                .with(&mut tx, sql, |c, s| c.query_one(s, &[&1_i64]))
                .expect("after the savepoint's rollback");
            assert_eq!(row.get::<_, i64>(0), 2);
            // Dropped: the transaction rolls back too.
        }
        let row = cache
            .with(&mut *client, sql, |c, s| c.query_one(s, &[&9_i64]))
            .expect("after the transaction's rollback");
        assert_eq!(row.get::<_, i64>(0), 10);
        assert_eq!(cache.len(), 1, "prepared once, reused twice");
    }

    #[test]
    fn a_failed_statement_is_forgotten_and_prepared_again() {
        let Some(db) = fresh_database() else { return };
        let mut client = db.client();
        let mut cache = StatementCache::default();
        let sql = "SELECT 1 / $1::INTEGER";
        let failed = cache.with(&mut *client, sql, |c, s| c.query_one(s, &[&0_i32]));
        assert!(failed.is_err(), "division by zero");
        assert!(cache.is_empty(), "the failed statement is forgotten");
        let row = cache
            .with(&mut *client, sql, |c, s| c.query_one(s, &[&1_i32]))
            .expect("prepared again");
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(cache.len(), 1);
    }

    /// Creates `table` with one column and one row.
    fn one_column_table(client: &mut postgres::Client, table: &str) {
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (a INTEGER); INSERT INTO {table} VALUES (1)"
            ))
            .expect("table");
    }

    /// Adds a second column to `table`: what a newer node's migration could do under a
    /// running one.
    fn widen(client: &mut postgres::Client, table: &str) {
        client
            .batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN b INTEGER DEFAULT 2"
            ))
            .expect("alter");
    }

    #[test]
    fn a_statement_whose_table_changed_shape_is_prepared_afresh() {
        let Some(db) = fresh_database() else { return };
        let mut client = db.client();
        one_column_table(&mut client, "shapes");
        let mut cache = StatementCache::default();
        let sql = "SELECT * FROM shapes";
        let rows = cache
            .with(&mut *client, sql, |c, s| c.query(s, &[]))
            .expect("first");
        assert_eq!(rows[0].len(), 1);
        widen(&mut client, "shapes");
        let stale = cache.with(&mut *client, sql, |c, s| c.query(s, &[]));
        assert!(stale.is_err(), "the cached plan no longer matches");
        let rows = cache
            .with(&mut *client, sql, |c, s| c.query(s, &[]))
            .expect("prepared afresh");
        assert_eq!(rows[0].len(), 2);
    }

    #[test]
    fn a_read_whose_plan_went_stale_is_prepared_afresh_and_answers_at_once() {
        let Some(db) = fresh_database() else { return };
        let mut admin = db.client();
        one_column_table(&mut admin, "reshaped");
        let mut reader = CachedClient::new(db.client());
        let sql = "SELECT * FROM reshaped";
        assert_eq!(
            Sql::query(&mut reader, sql, &[]).expect("first")[0].len(),
            1
        );
        widen(&mut admin, "reshaped");
        let rows = Sql::query(&mut reader, sql, &[]).expect("no error for the caller");
        assert_eq!(rows[0].len(), 2);
        assert_eq!(reader.prepared(), 1);
    }

    #[test]
    fn the_cache_starts_over_past_its_bound() {
        let Some(db) = fresh_database() else { return };
        let mut client = db.client();
        let mut cache = StatementCache::default();
        for i in 0..=MAX_STATEMENTS {
            cache
                .prepare(&mut *client, &format!("SELECT {i}"))
                .expect("prepare");
        }
        assert_eq!(cache.len(), 1);
    }
}
