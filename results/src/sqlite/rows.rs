//! Reading: the one row reader ([`read_result`], used by every query of results), the history
//! statement, the per-cell index scans the timelines and the day cache build on, and the
//! read-only queries behind [`crate::ResultStore`].

use std::collections::HashMap;

use gridprobe_config::Downtime;
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::store::{
    CellFilter, CellKey, CellTimeline, HistoryQuery, StoreError, StoreEvent, StoredResult,
    DEFAULT_HISTORY_LIMIT,
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

/// A cell's last final result started before `before_ms` (through the per-cell index).
pub(super) fn prior_final(
    conn: &Connection,
    cell_id: i64,
    before_ms: i64,
) -> Result<Option<(i64, Status)>, StoreError> {
    let prior: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT started_at_ms, status FROM results \
             WHERE cell_id = ?1 AND started_at_ms < ?2 AND final = 1 \
             ORDER BY started_at_ms DESC, id DESC LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![cell_id, before_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(query_err)?;
    Ok(prior.and_then(|(t, st)| Status::from_name(&st).map(|st| (t, st))))
}

/// A cell's final results started in `[from, to)`, in time order (through the per-cell index).
pub(super) fn cell_finals(
    conn: &Connection,
    cell_id: i64,
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, Status),
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT started_at_ms, status FROM results \
             WHERE cell_id = ?1 AND started_at_ms >= ?2 AND started_at_ms < ?3 \
               AND final = 1 \
             ORDER BY started_at_ms, id",
        )
        .map_err(query_err)?;
    let mut rows = stmt.query(params![cell_id, from, to]).map_err(query_err)?;
    while let Some(row) = rows.next().map_err(query_err)? {
        let t: i64 = row.get(0).map_err(query_err)?;
        if let Some(st) = Status::from_name(status_text(row, 1)?) {
            each(t, st);
        }
    }
    Ok(())
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

/// Builds the history statement with only the conditions that are set, so SQLite can use the
/// cell or time index (a `?n IS NULL OR ...` form would force a full scan). Cell conditions
/// apply to `cells`, whose ids then range over the `(cell_id, started_at_ms)` index.
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
    if let Some(site) = &q.site {
        cond(&mut sql, "c.site =", Value::Text(site.clone()));
    }
    if let Some(host) = &q.hostname {
        cond(&mut sql, "c.hostname =", Value::Text(host.clone()));
    }
    if let Some(metric) = &q.metric {
        cond(&mut sql, "c.metric =", Value::Text(metric.clone()));
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
    let limit = if q.limit == 0 {
        DEFAULT_HISTORY_LIMIT
    } else {
        q.limit
    };
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY r.started_at_ms DESC, r.id DESC LIMIT ?{}",
        args.len()
    ));
    (sql, args)
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

/// A page of history (see [`history_sql`]).
pub(super) fn history(
    conn: &Connection,
    query: &HistoryQuery,
) -> Result<Vec<StoredResult>, StoreError> {
    let (sql, args) = history_sql(query);
    query_results(conn, &sql, params_from_iter(args))
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
                "SELECT c.id, c.site, c.hostname, c.flavour, c.metric \
                 FROM latest l JOIN cells c ON c.id = l.cell_id WHERE c.site = ?1 \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric"
            } else {
                "SELECT c.id, c.site, c.hostname, c.flavour, c.metric \
                 FROM latest l JOIN cells c ON c.id = l.cell_id \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric"
            })
            .map_err(query_err)?;
        let keys: Vec<(i64, CellKey)> = cells
            .query_map(params_from_iter(filter.site.iter()), |r| {
                Ok((
                    r.get(0)?,
                    CellKey {
                        site: r.get(1)?,
                        hostname: r.get(2)?,
                        flavour: r.get(3)?,
                        metric: r.get(4)?,
                    },
                ))
            })
            .map_err(query_err)?
            .collect::<Result<_, _>>()
            .map_err(query_err)?;
        // One site's cells are read through the per-cell index, cell by cell, instead of
        // scanning every site's rows of the period (the site page, the API for one site).
        for (id, key) in keys {
            if !wanted(&key.site, &key.flavour) {
                others.insert(id, None);
                continue;
            }
            let mut points: Vec<(i64, Status)> =
                prior_final(conn, id, since_ms)?.into_iter().collect();
            if per_site {
                cell_finals(conn, id, since_ms, until_ms, |t, st| points.push((t, st)))?;
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
