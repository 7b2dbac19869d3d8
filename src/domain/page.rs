//! Keyset paging shared by every list: a request names a cursor (after or before a row key, or
//! an offset) and a size; the store returns one page plus whether more rows lie beyond it.
//!
//! May depend on: nothing outside std.

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// From the first row, skipping `offset` rows.
    Offset(u64),
    /// Rows with a key greater than this one.
    After(i64),
    /// Rows with a key less than this one (a "previous page" link).
    Before(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Cursor,
    pub size: u32,
}

/// One page of rows, each with its ordering key, oldest first.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<(i64, T)>,
    /// More rows exist after the last item.
    pub has_more_after: bool,
    /// More rows exist before the first item.
    pub has_more_before: bool,
}

impl<T> Page<T> {
    pub fn first_key(&self) -> Option<i64> {
        self.items.first().map(|(k, _)| *k)
    }
    pub fn last_key(&self) -> Option<i64> {
        self.items.last().map(|(k, _)| *k)
    }
}
