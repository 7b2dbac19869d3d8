//! The process's open-file limit. Every HTTP connection and WebSocket holds a descriptor, and
//! processes usually start with a soft limit (often 1,024) far below what a presence server
//! holds; the hard limit is what the operator granted. At start the soft limit is raised to
//! the hard one, as servers commonly do, and a limit that cannot hold `http.max_connections`
//! is reported.
//!
//! May depend on: rlimit, tracing.

/// Descriptors kept for everything but client connections: storage, logs, the listener,
/// outgoing webhook connections.
const RESERVED: u64 = 1_024;

/// Raises the soft open-file limit to the hard limit and returns the limit in force (`None`
/// when it could not be read). Warns when it leaves fewer than `max_connections` descriptors
/// for connections: connections past that are refused by the kernel, not queued.
pub fn raise_open_file_limit(max_connections: usize) -> Option<u64> {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            return None;
        }
    };
    let wanted = max_connections as u64 + RESERVED;
    if limit < wanted {
        tracing::warn!(
            open_file_limit = limit,
            http_max_connections = max_connections,
            "the open-file limit ({limit}) is below http.max_connections + {RESERVED}: raise \
             the hard limit (LimitNOFILE= in a systemd unit, `ulimit -Hn` in a shell) to at \
             least {wanted}, or lower http.max_connections"
        );
    }
    Some(limit)
}
