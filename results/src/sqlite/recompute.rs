//! Recomputations in SQLite: the request as JSON, and its steps, one row each, never deleted.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::rows::query_err;
use crate::recompute::{Recomputation, RecomputationRequest, Step, StepKind};
use crate::store::{check_steps, StoreError};

/// Migration 7: the two tables.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE recomputations (
    id INTEGER PRIMARY KEY,
    request TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE recomputation_steps (
    recomputation_id INTEGER NOT NULL REFERENCES recomputations (id),
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    by_name TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (recomputation_id, seq)
);
"#;

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Query(format!("stored recomputation is not valid JSON: {e}"))
}

/// Stores a request and its `requested` step.
pub(super) fn add(
    conn: &mut Connection,
    request: &RecomputationRequest,
    at_ms: i64,
) -> Result<Recomputation, StoreError> {
    let json = serde_json::to_string(request).map_err(json_err)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    tx.execute(
        "INSERT INTO recomputations (request, created_at_ms) VALUES (?1, ?2)",
        params![json, at_ms],
    )
    .map_err(query_err)?;
    let id = tx.last_insert_rowid();
    let step = Step {
        step: StepKind::Requested,
        by: request.requester.clone(),
        at_ms,
        note: String::new(),
    };
    insert_step(&tx, id, 0, &step)?;
    tx.commit().map_err(query_err)?;
    Ok(Recomputation::from_parts(id, request.clone(), vec![step]))
}

fn insert_step(conn: &Connection, id: i64, seq: i64, s: &Step) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO recomputation_steps (recomputation_id, seq, step, by_name, at_ms, note) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, seq, s.step.name(), s.by, s.at_ms, s.note],
    )
    .map_err(query_err)?;
    Ok(())
}

fn read_steps(conn: &Connection, id: i64) -> Result<Vec<Step>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT step, by_name, at_ms, note FROM recomputation_steps \
             WHERE recomputation_id = ?1 ORDER BY seq",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(query_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (step, by, at_ms, note) = row.map_err(query_err)?;
        let step = StepKind::parse(&step)
            .ok_or_else(|| StoreError::Query(format!("unknown recomputation step `{step}`")))?;
        out.push(Step {
            step,
            by,
            at_ms,
            note,
        });
    }
    Ok(out)
}

fn read_one(conn: &Connection, id: i64) -> Result<Option<Recomputation>, StoreError> {
    let json: Option<String> = conn
        .query_row(
            "SELECT request FROM recomputations WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()
        .map_err(query_err)?;
    let Some(json) = json else {
        return Ok(None);
    };
    let request: RecomputationRequest = serde_json::from_str(&json).map_err(json_err)?;
    Ok(Some(Recomputation::from_parts(
        id,
        request,
        read_steps(conn, id)?,
    )))
}

/// Appends steps after checking them against the history, in one transaction.
pub(super) fn steps(
    conn: &mut Connection,
    id: i64,
    steps: &[Step],
) -> Result<Result<Recomputation, String>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let Some(current) = read_one(&tx, id)? else {
        return Ok(Err(format!("no recomputation {id}")));
    };
    if let Err(e) = check_steps(id, &current.steps, steps) {
        return Ok(Err(e));
    }
    let mut seq = i64::try_from(current.steps.len()).unwrap_or(i64::MAX);
    for s in steps {
        insert_step(&tx, id, seq, s)?;
        seq = seq.saturating_add(1);
    }
    let updated = read_one(&tx, id)?;
    tx.commit().map_err(query_err)?;
    Ok(updated.ok_or_else(|| format!("no recomputation {id}")))
}

/// Every recomputation, oldest first.
pub(super) fn all(conn: &Connection) -> Result<Vec<Recomputation>, StoreError> {
    let ids: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached("SELECT id FROM recomputations ORDER BY id")
            .map_err(query_err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(query_err)?;
        rows.collect::<Result<_, _>>().map_err(query_err)?
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = read_one(conn, id)? {
            out.push(r);
        }
    }
    Ok(out)
}
