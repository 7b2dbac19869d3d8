//! Which tables `copy-database` copies, in which order (a table after the tables its rows
//! name), and which one it leaves out on purpose. A SQLite table in neither list stops the
//! copy: a later migration that adds a table must decide here whether it is copied.
//!
//! May depend on: std.

/// The durable tables, parents first (foreign keys are checked as rows arrive).
pub const COPIED: &[&str] = &[
    "account",
    "api_keys",
    "services",
    "users",
    "bindings",
    "credentials",
    "events",
    "webhook_endpoints",
    "deliveries",
    "delivery_attempts",
];

/// Live presence state, not copied: clients reconnect to the new server.
pub const SESSIONS: &str = "sessions";

/// The table whose counter is the event feed's position (ids continue after it).
pub const EVENTS: &str = "events";

/// The tables of `present` that are neither copied nor [`SESSIONS`].
pub fn unknown(present: &[String]) -> Vec<&str> {
    present
        .iter()
        .map(String::as_str)
        .filter(|t| !COPIED.contains(t) && *t != SESSIONS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_sqlite_schema_is_copied_or_left_out_by_name() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("memory database");
        crate::db::open::migrate(&mut conn).expect("schema");
        let tables = super::super::source::tables(&conn).expect("tables");
        assert_eq!(unknown(&tables), Vec::<&str>::new());
        for table in COPIED.iter().chain([&SESSIONS]) {
            assert!(
                tables.iter().any(|t| t == table),
                "{table} is in the schema"
            );
        }
    }
}
