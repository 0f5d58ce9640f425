//! Values into and out of rows: text as PostgreSQL stores it, the one row reader
//! ([`read_result`], used by every query of results) and the history statement.

use std::borrow::Cow;

use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::connect::{chain, query_err};
use crate::store::{CellKey, HistoryQuery, StoreError, StoredResult, DEFAULT_HISTORY_LIMIT};

/// Columns read into a [`StoredResult`], in the order [`read_result`] expects.
pub(super) const RESULT_COLUMNS: &str =
    "r.id, r.final, r.vo, c.site, c.hostname, c.flavour, c.metric, \
     r.kind, r.started_at_ms, r.duration_ms, r.status, r.summary, r.details, r.perfdata, \
     r.attempt, r.\"trigger\"";

/// Text as PostgreSQL can store it: NUL (which `text` cannot hold) becomes U+FFFD.
pub(super) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(super) fn pg_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|s| pg_text(s).into_owned())
}

/// The cell of a result, as stored (NUL replaced).
pub(super) fn cell_key(r: &ProbeResult) -> CellKey {
    CellKey {
        site: pg_text(&r.site).into_owned(),
        hostname: pg_text(&r.hostname).into_owned(),
        flavour: pg_text(&r.flavour).into_owned(),
        metric: pg_text(&r.metric).into_owned(),
    }
}

/// Reads one row selected with [`RESULT_COLUMNS`]; bad data is an error naming the row, never a
/// panic.
pub(super) fn read_result(row: &Row) -> Result<StoredResult, StoreError> {
    let id: i64 = row.try_get(0).map_err(query_err)?;
    let bad = |what: String| StoreError::Query(format!("result {id}: {what}"));
    let col = |e: tokio_postgres::Error| bad(chain(&e));
    let duration_ms: i64 = row.try_get(9).map_err(col)?;
    let status: &str = row.try_get(10).map_err(col)?;
    let perfdata: &str = row.try_get(13).map_err(col)?;
    let attempt: i32 = row.try_get(14).map_err(col)?;
    let trigger: &str = row.try_get(15).map_err(col)?;
    let status =
        Status::from_name(status).ok_or_else(|| bad(format!("unknown status {status:?}")))?;
    let perfdata: Vec<Perfdatum> =
        serde_json::from_str(perfdata).map_err(|e| bad(format!("invalid perfdata JSON: {e}")))?;
    Ok(StoredResult {
        id,
        is_final: row.try_get(1).map_err(col)?,
        result: ProbeResult {
            vo: row.try_get(2).map_err(col)?,
            site: row.try_get(3).map_err(col)?,
            hostname: row.try_get(4).map_err(col)?,
            flavour: row.try_get(5).map_err(col)?,
            metric: row.try_get(6).map_err(col)?,
            kind: row.try_get(7).map_err(col)?,
            started_at_ms: row.try_get(8).map_err(col)?,
            duration_ms: u64::try_from(duration_ms)
                .map_err(|_| bad(format!("negative duration {duration_ms}")))?,
            outcome: Outcome {
                status,
                summary: row.try_get(11).map_err(col)?,
                details: row.try_get(12).map_err(col)?,
                perfdata,
                connection_fault: None,
                reported: Vec::new(),
                agent_run: None,
            },
            attempt: u32::try_from(attempt)
                .map_err(|_| bad(format!("attempt {attempt} out of range")))?,
            trigger: Trigger::parse(trigger)
                .ok_or_else(|| bad(format!("unknown trigger {trigger:?}")))?,
        },
    })
}

pub(super) fn read_results(rows: &[Row]) -> Result<Vec<StoredResult>, StoreError> {
    rows.iter().map(read_result).collect()
}

/// One parameter of a statement built at run time.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// Builds the history statement with only the conditions that are set, so the planner sees
/// plain predicates it can match to the cell or time index.
pub(super) fn history_sql(q: &HistoryQuery) -> (String, Vec<Param>) {
    let mut sql = format!(
        "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id WHERE true"
    );
    let mut args: Vec<Param> = Vec::new();
    let mut cond = |sql: &mut String, clause: &str, v: Param| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    if let Some(site) = &q.site {
        cond(&mut sql, "c.site =", Box::new(pg_text(site).into_owned()));
    }
    if let Some(host) = &q.hostname {
        cond(
            &mut sql,
            "c.hostname =",
            Box::new(pg_text(host).into_owned()),
        );
    }
    if let Some(metric) = &q.metric {
        cond(
            &mut sql,
            "c.metric =",
            Box::new(pg_text(metric).into_owned()),
        );
    }
    if let Some(since) = q.since_ms {
        cond(&mut sql, "r.started_at_ms >=", Box::new(since));
    }
    if let Some(until) = q.until_ms {
        cond(&mut sql, "r.started_at_ms <", Box::new(until));
    }
    if !q.include_attempts {
        sql.push_str(" AND r.final");
    }
    if q.non_ok_only {
        sql.push_str(" AND r.status <> 'OK'");
    }
    if let Some(status) = q.status {
        cond(&mut sql, "r.status =", Box::new(status.name().to_string()));
    }
    if let Some((t, id)) = q.before {
        args.push(Box::new(t));
        args.push(Box::new(id));
        let (a, b) = (args.len() - 1, args.len());
        // A row comparison: the same order as `ORDER BY started_at_ms DESC, id DESC`, and one
        // range on the (cell_id, started_at_ms, id) index.
        sql.push_str(&format!(" AND (r.started_at_ms, r.id) < (${a}, ${b})"));
    }
    let limit = if q.limit == 0 {
        DEFAULT_HISTORY_LIMIT
    } else {
        q.limit
    };
    args.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY r.started_at_ms DESC, r.id DESC LIMIT ${}",
        args.len()
    ));
    (sql, args)
}

pub(super) fn as_params(args: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}
