//! Runs of equal results per cell and closed day, kept in the SQLite store: what makes a month
//! report of a large VO read a few hundred thousand small rows instead of scanning tens of
//! millions of results.
//!
//! A day is *closed* once it ended more than [`SETTLE_MS`] ago. The first report that needs a
//! closed day scans that day's final results once (through the time index), folds each cell's
//! results into runs of one status, and stores them in `cell_day_runs`, marking the day in
//! `report_days`. A run records its largest internal gap, so a request whose merge gap is
//! smaller (a cell whose freshness window is shorter than that gap would go MISSING inside the
//! run) reads that cell's day from the results instead: the answer is always exactly what the
//! results give (`ResultStore::run_timelines`).
//!
//! Invalidation: writing a final result that started in a closed day unmarks the day (cheap:
//! one delete by key per day touched, only for late results such as spool replays or
//! `gridprobe consume`); the next report rebuilds it. Retention drops the days it cut into.

use std::collections::{HashMap, HashSet};

use gridprobe_probes::Status;
use rusqlite::{params, Connection, TransactionBehavior};

use super::hours::CellSpan;
use super::rows::{cell_finals, finals_in_range, prior_final, query_err};
use crate::day_runs::{
    closed_days, day_of, decode, encode, push_point, Assembly, DayRun, DAY_MS, SETTLE_MS,
};
use crate::store::{CellFilter, CellKey, CellRuns, StoreError};

/// The schema of the cache (a migration of `schema.rs`). Keyed by day first: a report reads a
/// range of days for every cell.
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE report_days (
    day_ms INTEGER PRIMARY KEY
);
CREATE TABLE cell_day_runs (
    day_ms INTEGER NOT NULL,
    cell_id INTEGER NOT NULL,
    runs BLOB NOT NULL,
    PRIMARY KEY (day_ms, cell_id)
) WITHOUT ROWID;
"#;

/// The text of a status column without allocating.
fn status_at(row: &rusqlite::Row<'_>, i: usize) -> Result<Option<Status>, StoreError> {
    let text = row
        .get_ref(i)
        .map_err(query_err)?
        .as_str()
        .map_err(|e| StoreError::Query(format!("bad status in results: {e}")))?;
    Ok(Status::from_name(text))
}

/// Every final result started in `[from, to)`, in time order, as (cell id, start, status):
/// one scan through the time index.
fn scan_range(
    conn: &Connection,
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, i64, Status),
) -> Result<(), StoreError> {
    finals_in_range(conn, from, to, |cell, row| {
        let t: i64 = row.get(1).map_err(query_err)?;
        if let Some(status) = status_at(row, 2)? {
            each(cell, t, status);
        }
        Ok(())
    })
}

/// Every cell's runs of one day, from the results.
fn build_day(conn: &Connection, day_ms: i64) -> Result<HashMap<i64, Vec<DayRun>>, StoreError> {
    let mut days: HashMap<i64, Vec<DayRun>> = HashMap::new();
    scan_range(conn, day_ms, day_ms + DAY_MS, |cell, t, status| {
        push_point(days.entry(cell).or_default(), t, status)
    })?;
    Ok(days)
}

/// Stores a built day and marks it cached, in one transaction.
fn store_day(
    conn: &mut Connection,
    day_ms: i64,
    days: &HashMap<i64, Vec<DayRun>>,
) -> rusqlite::Result<()> {
    if days.is_empty() {
        // Nothing to keep: a day without final results is not marked either, so that a read
        // over an empty stretch (a period of a million days) never grows the store.
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM cell_day_runs WHERE day_ms = ?1", [day_ms])?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO cell_day_runs (day_ms, cell_id, runs) VALUES (?1, ?2, ?3)",
        )?;
        for (cell, runs) in days {
            insert.execute(params![day_ms, cell, encode(day_ms, runs)])?;
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO report_days (day_ms) VALUES (?1)",
        [day_ms],
    )?;
    tx.commit()
}

/// Unmarks the closed days that results starting at `starts` fall in (inside the writer's
/// transaction): they are rebuilt by the next report that needs them. This is the one place
/// where the SQLite cache is invalidated (PostgreSQL's twin: `postgres/days.rs`); anything else
/// that changes the results of a closed day (a recomputation, a repair) must call it in its
/// transaction.
pub(crate) fn invalidate(
    tx: &rusqlite::Transaction<'_>,
    starts: impl Iterator<Item = i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let open_from = day_of(now_ms - SETTLE_MS);
    let days: HashSet<i64> = starts.filter(|t| *t < open_from).map(day_of).collect();
    if days.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached("DELETE FROM report_days WHERE day_ms = ?1")
        .map_err(query_err)?;
    for d in days {
        stmt.execute([d]).map_err(query_err)?;
    }
    Ok(())
}

/// Drops cached days that retention cut into (`cutoff_ms` and before).
pub(crate) fn forget_before(conn: &Connection, cutoff_ms: i64) -> Result<(), StoreError> {
    let first_kept = day_of(cutoff_ms) + DAY_MS;
    conn.execute("DELETE FROM report_days WHERE day_ms < ?1", [first_kept])
        .and_then(|_| conn.execute("DELETE FROM cell_day_runs WHERE day_ms < ?1", [first_kept]))
        .map_err(query_err)?;
    Ok(())
}

/// The closed days of `[since, until)` that are not cached yet (those [`run_timelines`] would
/// build).
pub(crate) fn missing_days(
    conn: &Connection,
    since_ms: i64,
    until_ms: i64,
    now_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let (first_day, days_end) = closed_days(since_ms, until_ms, now_ms);
    let cached = cached_days(conn, first_day, days_end)?;
    Ok(data_days(conn, first_day, days_end)?
        .into_iter()
        .filter(|d| !cached.contains(d))
        .collect())
}

/// The days of `[from, to)` (day starts) that hold at least one result, in order: one probe
/// of the time index per such day, so an empty stretch of any length costs one query.
fn data_days(conn: &Connection, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT MIN(started_at_ms) FROM results \
             WHERE started_at_ms >= ?1 AND started_at_ms < ?2",
        )
        .map_err(query_err)?;
    let mut days = Vec::new();
    let mut at = from;
    while at < to {
        let next: Option<i64> = stmt
            .query_row(params![at, to], |r| r.get(0))
            .map_err(query_err)?;
        let Some(t) = next else { break };
        let day = day_of(t);
        days.push(day);
        at = day.saturating_add(DAY_MS);
    }
    Ok(days)
}

/// Builds and caches one day. Failing to store it (another process holds the write lock) is
/// not an error: the day is built again when needed.
pub(crate) fn cache_day(conn: &mut Connection, day_ms: i64) -> Result<(), StoreError> {
    let built = build_day(conn, day_ms)?;
    if let Err(e) = store_day(conn, day_ms, &built) {
        tracing::debug!(error = %e, day_ms, "could not cache a day's runs");
    }
    Ok(())
}

fn cached_days(conn: &Connection, from: i64, to: i64) -> Result<HashSet<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT day_ms FROM report_days WHERE day_ms >= ?1 AND day_ms < ?2")
        .map_err(query_err)?;
    let days = stmt
        .query_map(params![from, to], |r| r.get::<_, i64>(0))
        .map_err(query_err)?
        .collect::<Result<_, _>>()
        .map_err(query_err)?;
    Ok(days)
}

/// `ResultStore::run_timelines` for SQLite: closed days from the cache (built on first use),
/// the rest of the period from the results.
pub(crate) fn run_timelines(
    conn: &mut Connection,
    since_ms: i64,
    until_ms: i64,
    filter: &CellFilter,
    merge_gap_ms: i64,
    now_ms: i64,
) -> Result<Vec<CellRuns>, StoreError> {
    let merge_gap = merge_gap_ms.max(0);
    // The cells with a final result (as `timelines` has them), each with its last final
    // result before the period (it may still hold).
    let mut cells: Vec<(i64, Assembly)> = Vec::new();
    // What `latest` knows of each cell's final results, bounding its walks over the hours.
    let mut spans: HashMap<i64, CellSpan> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.id, c.site, c.hostname, c.flavour, c.metric, l.first_ms, \
                 l.started_at_ms \
                 FROM latest l JOIN cells c ON c.id = l.cell_id \
                 WHERE (?1 IS NULL OR c.site = ?1) AND (?2 IS NULL OR c.flavour = ?2) \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric",
            )
            .map_err(query_err)?;
        let mut rows = stmt
            .query(params![filter.site, filter.flavour])
            .map_err(query_err)?;
        while let Some(row) = rows.next().map_err(query_err)? {
            let id: i64 = row.get(0).map_err(query_err)?;
            spans.insert(
                id,
                CellSpan {
                    first_ms: row.get(5).map_err(query_err)?,
                    newest_ms: row.get(6).map_err(query_err)?,
                },
            );
            cells.push((
                id,
                Assembly {
                    key: CellKey {
                        site: row.get(1).map_err(query_err)?,
                        hostname: row.get(2).map_err(query_err)?,
                        flavour: row.get(3).map_err(query_err)?,
                        metric: row.get(4).map_err(query_err)?,
                    },
                    runs: Vec::new(),
                },
            ));
        }
    }
    {
        for (id, cell) in &mut cells {
            if let Some((t, status)) = prior_final(conn, *id, spans.get(id).copied(), since_ms)? {
                cell.push(t, t, status, merge_gap);
            }
        }
    }
    let slot: HashMap<i64, usize> = cells
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();

    // The period: raw head, cached closed days, raw tail.
    let (first_day, days_end) = closed_days(since_ms, until_ms, now_ms);
    if first_day < days_end {
        read_raw(conn, since_ms, first_day, &slot, &mut cells, merge_gap)?;
        read_days(conn, first_day, days_end, &slot, &mut cells, merge_gap)?;
        read_raw(conn, days_end, until_ms, &slot, &mut cells, merge_gap)?;
    } else {
        read_raw(conn, since_ms, until_ms, &slot, &mut cells, merge_gap)?;
    }
    Ok(cells.into_iter().map(|(_, a)| (a.key, a.runs)).collect())
}

/// The final results of `[from, to)` from the results table, appended to their cells.
fn read_raw(
    conn: &Connection,
    from: i64,
    to: i64,
    slot: &HashMap<i64, usize>,
    cells: &mut [(i64, Assembly)],
    merge_gap: i64,
) -> Result<(), StoreError> {
    if from >= to {
        return Ok(());
    }
    scan_range(conn, from, to, |cell, t, status| {
        if let Some(&i) = slot.get(&cell) {
            cells[i].1.push(t, t, status, merge_gap);
        }
    })
}

/// The closed days `[from, to)`: cached runs, built (and cached) where missing. A run whose
/// internal gap exceeds the merge gap is replaced by that cell's results of the day.
fn read_days(
    conn: &mut Connection,
    from: i64,
    to: i64,
    slot: &HashMap<i64, usize>,
    cells: &mut [(i64, Assembly)],
    merge_gap: i64,
) -> Result<(), StoreError> {
    let cached = cached_days(conn, from, to)?;
    // Only the days with something to read: the cached ones and those holding results.
    let mut days: Vec<i64> = cached.iter().copied().collect();
    days.extend(data_days(conn, from, to)?);
    days.sort_unstable();
    days.dedup();
    for day in days {
        let mut runs_of_day: Vec<(i64, Vec<DayRun>)> = Vec::new();
        if cached.contains(&day) {
            let mut stmt = conn
                .prepare_cached("SELECT cell_id, runs FROM cell_day_runs WHERE day_ms = ?1")
                .map_err(query_err)?;
            let mut rows = stmt.query([day]).map_err(query_err)?;
            while let Some(row) = rows.next().map_err(query_err)? {
                let cell: i64 = row.get(0).map_err(query_err)?;
                if !slot.contains_key(&cell) {
                    continue;
                }
                let bytes =
                    row.get_ref(1).map_err(query_err)?.as_blob().map_err(|e| {
                        StoreError::Query(format!("bad cached runs of day {day}: {e}"))
                    })?;
                let runs = decode(day, bytes).ok_or_else(|| {
                    StoreError::Query(format!(
                        "corrupt cached runs of cell {cell} on day {day}: delete the row from \
                         cell_day_runs and report_days to rebuild it"
                    ))
                })?;
                runs_of_day.push((cell, runs));
            }
        } else {
            let built = build_day(conn, day)?;
            if let Err(e) = store_day(conn, day, &built) {
                // Another process holds the write lock: answer from what was built, cache
                // it another time.
                tracing::debug!(error = %e, day, "could not cache a day's runs");
            }
            runs_of_day.extend(built.into_iter().filter(|(c, _)| slot.contains_key(c)));
        }
        for (cell, runs) in runs_of_day {
            let Some(&i) = slot.get(&cell) else {
                continue;
            };
            if runs.iter().any(|r| r.max_gap > merge_gap) {
                read_cell_day(conn, cell, day, &mut cells[i].1, merge_gap)?;
            } else {
                for r in runs {
                    cells[i].1.push(r.start, r.last, r.status, merge_gap);
                }
            }
        }
    }
    Ok(())
}

/// One cell's final results of one day, through the per-cell index.
fn read_cell_day(
    conn: &Connection,
    cell: i64,
    day: i64,
    into: &mut Assembly,
    merge_gap: i64,
) -> Result<(), StoreError> {
    cell_finals(conn, cell, None, day, day + DAY_MS, |t, status| {
        into.push(t, t, status, merge_gap)
    })
}
