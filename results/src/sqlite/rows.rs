//! Reading: the one row reader ([`read_result`], used by every query of results), the history
//! statement, the per-cell index scans the timelines and the day cache build on, and the
//! read-only queries behind [`crate::ResultStore`].

use std::collections::HashMap;

use gridprobe_config::Downtime;
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::hours::{self, CellSpan, Step};
use crate::store::{
    CellFilter, CellKey, CellTimeline, HistoryQuery, LatestCell, LatestChanges, StoreError,
    StoreEvent, StoredResult, DEFAULT_HISTORY_LIMIT,
};

/// A rusqlite error as the store's query error.
pub(super) fn query_err(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
}

/// Columns read into a [`StoredResult`], in the order [`read_result`] expects; `r` is `results`
/// joined with its cell as `c`.
const RESULT_COLUMNS: &str = "r.id, r.final, r.vo, c.site, c.hostname, c.flavour, c.metric, \
     r.kind, r.started_at_ms, r.duration_ms, r.status, r.summary, r.details, r.perfdata, \
     r.attempt, r.\"trigger\"";

/// Reads one row selected with [`RESULT_COLUMNS`]; bad data is an error naming the row, never a
/// panic.
fn read_result(row: &Row<'_>) -> Result<StoredResult, StoreError> {
    let id: i64 = row.get(0).map_err(query_err)?;
    let bad = |what: String| StoreError::Query(format!("result {id}: {what}"));
    let col = |e: rusqlite::Error| bad(e.to_string());
    let is_final: i64 = row.get(1).map_err(col)?;
    let duration_ms: i64 = row.get(9).map_err(col)?;
    let status: String = row.get(10).map_err(col)?;
    let perfdata: String = row.get(13).map_err(col)?;
    let attempt: i64 = row.get(14).map_err(col)?;
    let trigger: String = row.get(15).map_err(col)?;
    let status =
        Status::from_name(&status).ok_or_else(|| bad(format!("unknown status {status:?}")))?;
    let perfdata: Vec<Perfdatum> =
        serde_json::from_str(&perfdata).map_err(|e| bad(format!("invalid perfdata JSON: {e}")))?;
    Ok(StoredResult {
        id,
        is_final: is_final != 0,
        result: ProbeResult {
            vo: row.get(2).map_err(col)?,
            site: row.get(3).map_err(col)?,
            hostname: row.get(4).map_err(col)?,
            flavour: row.get(5).map_err(col)?,
            metric: row.get(6).map_err(col)?,
            kind: row.get(7).map_err(col)?,
            started_at_ms: row.get(8).map_err(col)?,
            duration_ms: u64::try_from(duration_ms)
                .map_err(|_| bad(format!("negative duration {duration_ms}")))?,
            outcome: Outcome {
                status,
                summary: row.get(11).map_err(col)?,
                details: row.get(12).map_err(col)?,
                perfdata,
                connection_fault: None,
                reported: Vec::new(),
                agent_run: None,
            },
            attempt: u32::try_from(attempt)
                .map_err(|_| bad(format!("attempt {attempt} out of range")))?,
            trigger: Trigger::parse(&trigger)
                .ok_or_else(|| bad(format!("unknown trigger {trigger:?}")))?,
        },
    })
}

/// A status column read in place, without allocating.
pub(super) fn status_text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    row.get_ref(i)
        .map_err(query_err)?
        .as_str()
        .map_err(|e| StoreError::Query(format!("bad text in results: {e}")))
}

/// A cell's last final result started before `before_ms`: the per-cell index, hour by hour
/// backwards from `before_ms` (or the cell's newest final result), within `span` when the
/// caller has it from `latest`.
pub(super) fn prior_final(
    conn: &Connection,
    cell_id: i64,
    span: Option<CellSpan>,
    before_ms: i64,
) -> Result<Option<(i64, Status)>, StoreError> {
    let Some(hi) = before_ms.checked_sub(1) else {
        return Ok(None);
    };
    let (lo, hi) = CellSpan::clip(span, i64::MIN, hi);
    let mut stmt = conn
        .prepare_cached(
            "SELECT started_at_ms, status FROM results \
             WHERE started_at_ms / 3600000 = ?1 AND cell_id = ?2 AND started_at_ms < ?3 \
               AND final = 1 \
             ORDER BY started_at_ms DESC, id DESC LIMIT 1",
        )
        .map_err(query_err)?;
    let mut found: Option<(i64, String)> = None;
    hours::walk(conn, lo, hi, true, |hour| {
        found = stmt
            .query_row(params![hour, cell_id, before_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(query_err)?;
        Ok(if found.is_some() {
            Step::Stop
        } else {
            Step::Empty
        })
    })?;
    Ok(found.and_then(|(t, st)| Status::from_name(&st).map(|st| (t, st))))
}

/// A cell's final results started in `[from, to)`, in time order: the per-cell index, hour by
/// hour, within `span` when the caller has it from `latest`.
pub(super) fn cell_finals(
    conn: &Connection,
    cell_id: i64,
    span: Option<CellSpan>,
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, Status),
) -> Result<(), StoreError> {
    let Some(last) = to.checked_sub(1) else {
        return Ok(());
    };
    let (lo, hi) = CellSpan::clip(span, from, last);
    let mut stmt = conn
        .prepare_cached(
            "SELECT started_at_ms, status FROM results \
             WHERE started_at_ms / 3600000 = ?1 AND cell_id = ?2 \
               AND started_at_ms >= ?3 AND started_at_ms < ?4 AND final = 1 \
             ORDER BY started_at_ms, id",
        )
        .map_err(query_err)?;
    hours::walk(conn, lo, hi, false, |hour| {
        let mut rows = stmt
            .query(params![hour, cell_id, from, to])
            .map_err(query_err)?;
        let mut any = false;
        while let Some(row) = rows.next().map_err(query_err)? {
            any = true;
            let t: i64 = row.get(0).map_err(query_err)?;
            if let Some(st) = Status::from_name(status_text(row, 1)?) {
                each(t, st);
            }
        }
        Ok(if any { Step::Rows } else { Step::Empty })
    })
}

/// Every final result started in `[from, to)`, in time order, through the time index: `each`
/// gets the row's cell id and the row (start at 1, status at 2) and reads what it needs.
pub(super) fn finals_in_range(
    conn: &Connection,
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, &Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT cell_id, started_at_ms, status FROM results \
             WHERE started_at_ms >= ?1 AND started_at_ms < ?2 AND final = 1 \
             ORDER BY started_at_ms, id",
        )
        .map_err(query_err)?;
    let mut rows = stmt.query(params![from, to]).map_err(query_err)?;
    while let Some(row) = rows.next().map_err(query_err)? {
        let cell: i64 = row.get(0).map_err(query_err)?;
        each(cell, row)?;
    }
    Ok(())
}

/// Runs a cached result query and reads every row.
fn query_results(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredResult>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(query_err)?;
    let mut rows = stmt.query(params).map_err(query_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(query_err)? {
        out.push(read_result(row)?);
    }
    Ok(out)
}

/// Whether a history query names cells (site, host or metric): it then walks the per-cell
/// index hour by hour (see [`history`]); otherwise it reads the time index.
fn by_cell(q: &HistoryQuery) -> bool {
    q.site.is_some() || q.hostname.is_some() || q.metric.is_some()
}

/// Builds the history statement with only the conditions that are set, so SQLite can use the
/// cell or time index (a `?n IS NULL OR ...` form would force a full scan). Cell conditions
/// select ids from `cells`; a query that has them reads one hour of the per-cell index per
/// execution: its `?1` is the hour ([`hours::bucket`]), given by [`history`]. The limit is
/// the last parameter.
pub(super) fn history_sql(q: &HistoryQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = format!(
        "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id WHERE 1 = 1"
    );
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |sql: &mut String, clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if by_cell(q) {
        cond(&mut sql, "r.started_at_ms / 3600000 =", Value::Integer(0));
        let mut cells = String::from("SELECT k.id FROM cells k WHERE 1 = 1");
        if let Some(site) = &q.site {
            cond(&mut cells, "k.site =", Value::Text(site.clone()));
        }
        if let Some(host) = &q.hostname {
            cond(&mut cells, "k.hostname =", Value::Text(host.clone()));
        }
        if let Some(metric) = &q.metric {
            cond(&mut cells, "k.metric =", Value::Text(metric.clone()));
        }
        sql.push_str(&format!(" AND r.cell_id IN ({cells})"));
    }
    if let Some(since) = q.since_ms {
        cond(&mut sql, "r.started_at_ms >=", Value::Integer(since));
    }
    if let Some(until) = q.until_ms {
        cond(&mut sql, "r.started_at_ms <", Value::Integer(until));
    }
    if !q.include_attempts {
        sql.push_str(" AND r.final = 1");
    }
    if q.non_ok_only {
        sql.push_str(" AND r.status <> 'OK'");
    }
    if let Some(status) = q.status {
        cond(
            &mut sql,
            "r.status =",
            Value::Text(status.name().to_string()),
        );
    }
    if let Some((t, id)) = q.before {
        args.push(Value::Integer(t));
        args.push(Value::Integer(id));
        let (a, b) = (args.len() - 1, args.len());
        sql.push_str(&format!(
            " AND (r.started_at_ms < ?{a} OR (r.started_at_ms = ?{a} AND r.id < ?{b}))"
        ));
    }
    args.push(Value::Integer(
        i64::try_from(history_limit(q)).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(
        " ORDER BY r.started_at_ms DESC, r.id DESC LIMIT ?{}",
        args.len()
    ));
    (sql, args)
}

fn history_limit(q: &HistoryQuery) -> usize {
    if q.limit == 0 {
        DEFAULT_HISTORY_LIMIT
    } else {
        q.limit
    }
}

/// The newest final result of every cell the filter keeps.
pub(super) fn latest(
    conn: &Connection,
    filter: &CellFilter,
) -> Result<Vec<StoredResult>, StoreError> {
    let sql = format!(
        "SELECT {RESULT_COLUMNS} FROM latest l JOIN cells c ON c.id = l.cell_id \
         JOIN results r ON r.id = l.result_id \
         WHERE (?1 IS NULL OR r.vo = ?1) AND (?2 IS NULL OR c.site = ?2) \
         AND (?3 IS NULL OR c.flavour = ?3) \
         ORDER BY c.site, c.hostname, c.flavour, c.metric"
    );
    query_results(conn, &sql, params![filter.vo, filter.site, filter.flavour])
}

/// The cells whose latest final result has an id above `mark` (every cell for 0), with the
/// largest such id as the next mark. Exact because SQLite has one writer at a time (whatever
/// the process): a result gets its id inside the write transaction that commits it, above
/// every id committed before, and a cell's `latest` only ever moves to a newer result, whose
/// id is then above any mark already handed out. Retention keeps every `latest` row.
pub(super) fn latest_changes(conn: &Connection, mark: i64) -> Result<LatestChanges, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.result_id, r.vo, c.site, c.hostname, c.flavour, c.metric, \
             r.started_at_ms, r.status, r.summary \
             FROM latest l JOIN cells c ON c.id = l.cell_id JOIN results r ON r.id = l.result_id \
             WHERE l.result_id > ?1",
        )
        .map_err(query_err)?;
    let mut rows = stmt.query([mark]).map_err(query_err)?;
    let mut out = LatestChanges {
        cells: Vec::new(),
        complete: mark <= 0,
        mark,
    };
    while let Some(row) = rows.next().map_err(query_err)? {
        let id: i64 = row.get(0).map_err(query_err)?;
        let status = status_text(row, 7)?;
        let status = Status::from_name(status)
            .ok_or_else(|| StoreError::Query(format!("result {id}: unknown status {status:?}")))?;
        out.mark = out.mark.max(id);
        out.cells.push(LatestCell {
            key: CellKey {
                site: row.get(2).map_err(query_err)?,
                hostname: row.get(3).map_err(query_err)?,
                flavour: row.get(4).map_err(query_err)?,
                metric: row.get(5).map_err(query_err)?,
            },
            vo: row.get(1).map_err(query_err)?,
            id,
            started_at_ms: row.get(6).map_err(query_err)?,
            status,
            summary: row.get(8).map_err(query_err)?,
        });
    }
    Ok(out)
}

/// A page of history (see [`history_sql`]). A query naming cells runs once per hour, newest
/// first, until the page is full: within an hour the index finds each cell's rows.
pub(super) fn history(
    conn: &Connection,
    query: &HistoryQuery,
) -> Result<Vec<StoredResult>, StoreError> {
    use rusqlite::types::Value;
    let (sql, mut args) = history_sql(query);
    if !by_cell(query) {
        return query_results(conn, &sql, params_from_iter(args));
    }
    let limit = history_limit(query);
    // The times the conditions allow, inclusive.
    let lo = query.since_ms.unwrap_or(i64::MIN);
    let mut hi = query.until_ms.map_or(i64::MAX, |u| u.saturating_sub(1));
    if let Some((t, _)) = query.before {
        hi = hi.min(t);
    }
    let mut out: Vec<StoredResult> = Vec::new();
    hours::walk(conn, lo, hi, true, |hour| {
        let left = limit.saturating_sub(out.len());
        args[0] = Value::Integer(hour);
        if let Some(last) = args.last_mut() {
            *last = Value::Integer(i64::try_from(left).unwrap_or(i64::MAX));
        }
        let page = query_results(conn, &sql, params_from_iter(args.iter()))?;
        let found = !page.is_empty();
        out.extend(page);
        Ok(if out.len() >= limit {
            Step::Stop
        } else if found {
            Step::Rows
        } else {
            Step::Empty
        })
    })?;
    Ok(out)
}

/// One result by id.
pub(super) fn get(conn: &Connection, id: i64) -> Result<Option<StoredResult>, StoreError> {
    let sql = format!(
        "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id \
         WHERE r.id = ?1"
    );
    Ok(query_results(conn, &sql, [id])?.into_iter().next())
}

/// Results with ids above `after_id`, ascending, at most `limit`.
pub(super) fn results_after(
    conn: &Connection,
    after_id: i64,
    limit: i64,
) -> Result<Vec<StoredResult>, StoreError> {
    let sql = format!(
        "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id \
         WHERE r.id > ?1 ORDER BY r.id LIMIT ?2"
    );
    query_results(conn, &sql, params![after_id, limit])
}

/// Downtimes overlapping `[since_ms, until_ms)`.
pub(super) fn downtimes(
    conn: &Connection,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<Downtime>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT source, id, site, hostname, flavour, start_ms, end_ms, scheduled, \
             outage, reason FROM downtimes WHERE end_ms > ?1 AND start_ms < ?2 \
             ORDER BY start_ms, id",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map(params![since_ms, until_ms], |r| {
            Ok(Downtime {
                source: r.get(0)?,
                id: r.get(1)?,
                site: r.get(2)?,
                hostname: r.get(3)?,
                flavour: r.get(4)?,
                start_ms: r.get(5)?,
                end_ms: r.get(6)?,
                scheduled: r.get(7)?,
                outage: r.get(8)?,
                reason: r.get(9)?,
            })
        })
        .map_err(query_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query_err)
}

/// Store events from `since_ms` on.
pub(super) fn events(conn: &Connection, since_ms: i64) -> Result<Vec<StoreEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at_ms, kind, message FROM store_events WHERE at_ms >= ?1 \
             ORDER BY at_ms, id",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map([since_ms], |r| {
            Ok(StoreEvent {
                at_ms: r.get(0)?,
                kind: r.get(1)?,
                message: r.get(2)?,
            })
        })
        .map_err(query_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query_err)
}

/// Number of stored results.
pub(super) fn count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))
        .map_err(query_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Final results of every cell started in `[since, until)`, each cell preceded by its last
/// final result before `since` (it may still hold at the start), grouped by cell and in
/// time order. The cells' names are read once from `cells`; the period's rows carry only
/// the integer cell id, so a month of results costs one index scan and no per-row string
/// work.
pub(super) fn timelines(
    conn: &Connection,
    since_ms: i64,
    until_ms: i64,
    filter: &CellFilter,
) -> Result<Vec<CellTimeline>, StoreError> {
    let mut out: Vec<CellTimeline> = Vec::new();
    // Cell id → its place in `out`; cells not listed there: their place, or `None` when
    // the filter leaves them out.
    let mut slot_of: HashMap<i64, usize> = HashMap::new();
    let mut others: HashMap<i64, Option<usize>> = HashMap::new();
    let per_site = filter.site.is_some();
    let wanted = |site: &str, flavour: &str| {
        filter.site.as_deref().is_none_or(|s| s == site)
            && filter.flavour.as_deref().is_none_or(|f| f == flavour)
    };
    // Cells known to the store (those with a latest result), with their last result
    // before `since`.
    {
        // One site's cells through the cells' unique index; all of them otherwise.
        let mut cells = conn
            .prepare_cached(if per_site {
                "SELECT c.id, c.site, c.hostname, c.flavour, c.metric, l.first_ms, \
                 l.started_at_ms \
                 FROM latest l JOIN cells c ON c.id = l.cell_id WHERE c.site = ?1 \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric"
            } else {
                "SELECT c.id, c.site, c.hostname, c.flavour, c.metric, l.first_ms, \
                 l.started_at_ms \
                 FROM latest l JOIN cells c ON c.id = l.cell_id \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric"
            })
            .map_err(query_err)?;
        let keys: Vec<(i64, CellKey, CellSpan)> = cells
            .query_map(params_from_iter(filter.site.iter()), |r| {
                Ok((
                    r.get(0)?,
                    CellKey {
                        site: r.get(1)?,
                        hostname: r.get(2)?,
                        flavour: r.get(3)?,
                        metric: r.get(4)?,
                    },
                    CellSpan {
                        first_ms: r.get(5)?,
                        newest_ms: r.get(6)?,
                    },
                ))
            })
            .map_err(query_err)?
            .collect::<Result<_, _>>()
            .map_err(query_err)?;
        // One site's cells are read through the per-cell index, cell by cell, instead of
        // scanning every site's rows of the period (the site page, the API for one site).
        for (id, key, span) in keys {
            if !wanted(&key.site, &key.flavour) {
                others.insert(id, None);
                continue;
            }
            let mut points: Vec<(i64, Status)> = prior_final(conn, id, Some(span), since_ms)?
                .into_iter()
                .collect();
            if per_site {
                cell_finals(conn, id, Some(span), since_ms, until_ms, |t, st| {
                    points.push((t, st))
                })?;
            }
            slot_of.insert(id, out.len());
            out.push((key, points));
        }
    }
    if per_site {
        return Ok(out);
    }
    // Cells without a latest result (none are written so, but a file may hold them) join
    // `out` when a result of theirs turns up, named from `cells`.
    let mut name = conn
        .prepare_cached("SELECT site, hostname, flavour, metric FROM cells WHERE id = ?1")
        .map_err(query_err)?;
    finals_in_range(conn, since_ms, until_ms, |cell, row| {
        let slot = match slot_of.get(&cell) {
            Some(slot) => *slot,
            None => {
                let slot = match others.get(&cell) {
                    Some(slot) => *slot,
                    None => {
                        let key = name
                            .query_row([cell], |r| {
                                Ok(CellKey {
                                    site: r.get(0)?,
                                    hostname: r.get(1)?,
                                    flavour: r.get(2)?,
                                    metric: r.get(3)?,
                                })
                            })
                            .optional()
                            .map_err(query_err)?;
                        let slot = key.filter(|k| wanted(&k.site, &k.flavour)).map(|k| {
                            out.push((k, Vec::new()));
                            out.len() - 1
                        });
                        others.insert(cell, slot);
                        slot
                    }
                };
                match slot {
                    Some(slot) => slot,
                    None => return Ok(()),
                }
            }
        };
        let t: i64 = row.get(1).map_err(query_err)?;
        if let Some(status) = Status::from_name(status_text(row, 2)?) {
            out[slot].1.push((t, status));
        }
        Ok(())
    })?;
    Ok(out)
}
