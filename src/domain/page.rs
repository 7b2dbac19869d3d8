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
    /// The page a keyset query answered: `rows` are up to `size + 1` rows fetched in the
    /// cursor's direction (ascending, or descending for [`Cursor::Before`]); the extra row
    /// only says that more exist.
    pub fn from_window(mut rows: Vec<(i64, T)>, request: &PageRequest) -> Page<T> {
        let size = request.size.max(1) as usize;
        let overflow = rows.len() > size;
        rows.truncate(size);
        match request.cursor {
            Cursor::Before(_) => {
                rows.reverse();
                Page {
                    items: rows,
                    has_more_after: true,
                    has_more_before: overflow,
                }
            }
            Cursor::After(_) => Page {
                items: rows,
                has_more_after: overflow,
                has_more_before: true,
            },
            Cursor::Offset(o) => Page {
                items: rows,
                has_more_after: overflow,
                has_more_before: o > 0,
            },
        }
    }

    pub fn first_key(&self) -> Option<i64> {
        self.items.first().map(|(k, _)| *k)
    }
    pub fn last_key(&self) -> Option<i64> {
        self.items.last().map(|(k, _)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[i64]) -> Vec<(i64, ())> {
        keys.iter().map(|k| (*k, ())).collect()
    }

    #[test]
    fn a_window_with_an_extra_row_says_more_exist_in_its_direction() {
        let forward = PageRequest {
            cursor: Cursor::After(1),
            size: 2,
        };
        let page = Page::from_window(rows(&[2, 3, 4]), &forward);
        assert_eq!(page.items.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3]);
        assert!(page.has_more_after && page.has_more_before);

        let backward = PageRequest {
            cursor: Cursor::Before(9),
            size: 2,
        };
        let page = Page::from_window(rows(&[8, 7]), &backward);
        assert_eq!(page.items.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 8]);
        assert!(page.has_more_after && !page.has_more_before);

        let first = PageRequest {
            cursor: Cursor::Offset(0),
            size: 5,
        };
        let page = Page::from_window(rows(&[1, 2]), &first);
        assert!(!page.has_more_after && !page.has_more_before);
    }
}
