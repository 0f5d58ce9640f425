//! The per-cell index is led by the hour: `results_hour_cell` on
//! `(started_at_ms / 3600000, cell_id, started_at_ms)`.
//!
//! Why: keyed by `(cell_id, started_at_ms)`, every result of a batch lands at the end of its
//! own cell's stretch of the index, so a batch of a thousand results dirtied a thousand pages
//! scattered over an index that outgrows the page cache with the store: ingest fell from
//! 182 k results/s into an empty store to 45 k/s at 10.9 M results and 19 k/s at 30.6 M. Led
//! by the hour, a batch writes into the current hour's small stretch only (one hour of 50,000
//! cells is a few hundred pages), whatever the store's size.
//!
//! The price: one cell's rows are no longer one stretch of the index but one per hour, so a
//! per-cell read walks the hours ([`walk`]): one index search per hour that holds results,
//! and a jump over hours that hold none (through the time index). `latest` bounds the walk of
//! a cell's final results: none starts before `first_ms` or after `started_at_ms`.
//!
//! Every query through the index must spell its first column exactly as the index does,
//! `started_at_ms / 3600000` (SQLite matches index expressions by their text); the unit tests
//! check the query plans.

use rusqlite::{params, Connection};

use super::rows::query_err;
use crate::store::StoreError;

/// The schema change (a migration of `schema.rs`): `latest.first_ms` filled from the old
/// `(cell_id, started_at_ms)` index (one search per cell), which is then replaced. The
/// results of every cell count, not only final ones: a lower bound is all a walk needs.
pub(super) const MIGRATION: &str = r#"
ALTER TABLE latest ADD COLUMN first_ms INTEGER;
UPDATE latest SET first_ms =
    (SELECT MIN(r.started_at_ms) FROM results r WHERE r.cell_id = latest.cell_id);
DROP INDEX results_cell_time;
CREATE INDEX results_hour_cell ON results (started_at_ms / 3600000, cell_id, started_at_ms);
"#;

/// The width of a bucket of the index, in ms (the literal `3600000` of its SQL).
pub(super) const BUCKET_MS: i64 = 3_600_000;

/// The bucket of a start time, as SQLite computes `started_at_ms / 3600000` (integer division
/// truncating toward zero, as Rust's; monotone, so later times never fall in earlier buckets).
pub(super) fn bucket(t: i64) -> i64 {
    t / BUCKET_MS
}

/// The first and last times of `bucket` (bucket 0 spans both signs).
fn bucket_span(b: i64) -> (i64, i64) {
    let base = b.saturating_mul(BUCKET_MS);
    let first = if b > 0 {
        base
    } else {
        base.saturating_sub(BUCKET_MS - 1)
    };
    let last = if b < 0 {
        base
    } else {
        base.saturating_add(BUCKET_MS - 1)
    };
    (first, last)
}

/// What `latest` knows of a cell's final results: none started before `first_ms` (when
/// known; a file upgraded from an older version knows it for every cell) or after
/// `newest_ms`.
#[derive(Debug, Clone, Copy)]
pub(super) struct CellSpan {
    pub(super) first_ms: Option<i64>,
    pub(super) newest_ms: i64,
}

impl CellSpan {
    /// Narrows `[lo, hi]` (inclusive times) to the span.
    pub(super) fn clip(span: Option<CellSpan>, lo: i64, hi: i64) -> (i64, i64) {
        match span {
            Some(s) => (lo.max(s.first_ms.unwrap_or(lo)), hi.min(s.newest_ms)),
            None => (lo, hi),
        }
    }
}

/// Whether a walk goes on after a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The bucket held rows of interest: go on with the next bucket.
    Rows,
    /// It held none: jump to the next bucket holding any result at all.
    Empty,
    /// Done.
    Stop,
}

/// Calls `visit` with the buckets of `[lo, hi]` (inclusive times), newest first when
/// `descending`: the bucket at the start, then each next one while `visit` finds rows. After
/// a bucket without rows of interest the walk jumps to the next bucket holding any result
/// (one search of the time index), so an empty stretch of any length costs one query.
pub(super) fn walk(
    conn: &Connection,
    lo: i64,
    hi: i64,
    descending: bool,
    mut visit: impl FnMut(i64) -> Result<Step, StoreError>,
) -> Result<(), StoreError> {
    if lo > hi {
        return Ok(());
    }
    // The nearest result time inside [a, b], from the given end.
    let nearest = |a: i64, b: i64| -> Result<Option<i64>, StoreError> {
        let sql = if descending {
            "SELECT MAX(started_at_ms) FROM results \
             WHERE started_at_ms >= ?1 AND started_at_ms <= ?2"
        } else {
            "SELECT MIN(started_at_ms) FROM results \
             WHERE started_at_ms >= ?1 AND started_at_ms <= ?2"
        };
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row(params![a, b], |r| r.get(0)))
            .map_err(query_err)
    };
    let (first, last) = (bucket(lo), bucket(hi));
    // The first bucket is visited without looking first: usually it holds rows.
    let mut b = if descending { last } else { first };
    loop {
        let step = visit(b)?;
        let next = match step {
            Step::Stop => return Ok(()),
            Step::Rows if descending => b.checked_sub(1).filter(|n| *n >= first),
            Step::Rows => b.checked_add(1).filter(|n| *n <= last),
            Step::Empty => {
                let (b_first, b_last) = bucket_span(b);
                let found = if descending {
                    match b_first.checked_sub(1) {
                        Some(below) if below >= lo => nearest(lo, below)?,
                        _ => None,
                    }
                } else {
                    match b_last.checked_add(1) {
                        Some(above) if above <= hi => nearest(above, hi)?,
                        _ => None,
                    }
                };
                found.map(bucket)
            }
        };
        match next {
            Some(n) => b = n,
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_sqlite_and_their_spans() {
        let conn = Connection::open_in_memory().unwrap();
        for t in [
            i64::MIN,
            -7_200_001,
            -3_600_000,
            -3_599_999,
            -1,
            0,
            1,
            3_599_999,
            3_600_000,
            1_767_225_600_123,
            i64::MAX,
        ] {
            let sqlite: i64 = conn
                .query_row("SELECT ?1 / 3600000", [t], |r| r.get(0))
                .unwrap();
            assert_eq!(bucket(t), sqlite, "{t}");
            let (first, last) = bucket_span(bucket(t));
            assert!(first <= t && t <= last, "{t}: {first}..={last}");
            assert_eq!(bucket(first), bucket(t));
            assert_eq!(bucket(last), bucket(t));
            if first > i64::MIN {
                assert_ne!(bucket(first - 1), bucket(t));
            }
            if last < i64::MAX {
                assert_ne!(bucket(last + 1), bucket(t));
            }
        }
    }

    #[test]
    fn a_walk_visits_the_buckets_with_results_and_jumps_over_the_others() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE results (id INTEGER PRIMARY KEY, started_at_ms INTEGER NOT NULL);
             CREATE INDEX results_started ON results (started_at_ms);",
        )
        .unwrap();
        // Hours 0, 1, 5 and 1,000,000, and one negative time.
        for t in [10i64, 3_600_010, 18_000_000, 3_600_000_000_000, -3_600_001] {
            conn.execute("INSERT INTO results (started_at_ms) VALUES (?1)", [t])
                .unwrap();
        }
        let visits = |lo, hi, desc, empty: bool| {
            let mut seen = Vec::new();
            walk(&conn, lo, hi, desc, |b| {
                seen.push(b);
                Ok(if empty { Step::Empty } else { Step::Rows })
            })
            .unwrap();
            seen
        };
        // Finding nothing, only the first bucket and those that hold results are visited.
        assert_eq!(
            visits(i64::MIN, i64::MAX, true, true),
            vec![bucket(i64::MAX), 1_000_000, 5, 1, 0, -1]
        );
        assert_eq!(
            visits(i64::MIN, i64::MAX, false, true),
            vec![bucket(i64::MIN), -1, 0, 1, 5, 1_000_000]
        );
        assert_eq!(
            visits(0, 3_600_000_000_000, true, true),
            vec![1_000_000, 5, 1, 0]
        );
        // Finding rows, the walk goes bucket by bucket within the range.
        assert_eq!(visits(0, 18_000_000, false, false), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            visits(3_600_000, 18_000_000, true, false),
            vec![5, 4, 3, 2, 1]
        );
        // An empty range, and a range without results (its first bucket only).
        assert!(visits(5, 4, true, true).is_empty());
        assert_eq!(visits(20_000_000, 30_000_000, true, true), vec![8]);
        assert_eq!(visits(20_000_000, 30_000_000, false, true), vec![5]);
        // Stop ends it.
        let mut seen = Vec::new();
        walk(&conn, i64::MIN, i64::MAX, true, |b| {
            seen.push(b);
            Ok(Step::Stop)
        })
        .unwrap();
        assert_eq!(seen, vec![bucket(i64::MAX)]);
    }
}
