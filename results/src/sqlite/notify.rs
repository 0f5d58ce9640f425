//! The notification engine's tables in SQLite: acknowledgements, the history of sent
//! notifications, and the engine's versioned memory (see `crate::notify`).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::rows::query_err;
use crate::notify::{Ack, SentNotification, StateEntry, StatePut, MAX_NOTIFICATIONS};
use crate::store::StoreError;

/// Migration 8: the three tables.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE notify_acks (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    hostname TEXT,
    metric TEXT,
    comment TEXT NOT NULL,
    author TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    sticky INTEGER NOT NULL,
    status TEXT
) WITHOUT ROWID;
CREATE TABLE notify_sent (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    site TEXT NOT NULL,
    subject TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    cells INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX notify_sent_time ON notify_sent (sent_ms);
CREATE TABLE notify_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
"#;

const ACK_COLUMNS: &str =
    "id, site, hostname, metric, comment, author, created_ms, expires_ms, sticky, status";

fn read_ack(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ack> {
    Ok(Ack {
        id: r.get(0)?,
        site: r.get(1)?,
        hostname: r.get(2)?,
        metric: r.get(3)?,
        comment: r.get(4)?,
        author: r.get(5)?,
        created_ms: r.get(6)?,
        expires_ms: r.get(7)?,
        sticky: r.get(8)?,
        status: r.get(9)?,
    })
}

pub(super) fn add_acks(
    conn: &mut Connection,
    acks: &[Ack],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    tx.execute(
        "DELETE FROM notify_acks WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
        [now_ms],
    )
    .map_err(query_err)?;
    let mut added = 0;
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO notify_acks ({ACK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (id) DO NOTHING"
            ))
            .map_err(query_err)?;
        for a in acks.iter().filter(|a| a.active(now_ms)) {
            added += stmt
                .execute(params![
                    a.id,
                    a.site,
                    a.hostname,
                    a.metric,
                    a.comment,
                    a.author,
                    a.created_ms,
                    a.expires_ms,
                    a.sticky,
                    a.status
                ])
                .map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)?;
    Ok(added)
}

pub(super) fn acks(conn: &Connection, now_ms: i64) -> Result<Vec<Ack>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ACK_COLUMNS} FROM notify_acks \
             WHERE expires_ms IS NULL OR expires_ms > ?1 ORDER BY created_ms, id"
        ))
        .map_err(query_err)?;
    let rows = stmt.query_map([now_ms], read_ack).map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

pub(super) fn remove_acks(conn: &mut Connection, ids: &[String]) -> Result<usize, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut removed = 0;
    for id in ids {
        removed += tx
            .execute("DELETE FROM notify_acks WHERE id = ?1", [id])
            .map_err(query_err)?;
    }
    tx.commit().map_err(query_err)?;
    Ok(removed)
}

pub(super) fn record(
    conn: &mut Connection,
    sent: &[SentNotification],
) -> Result<usize, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut added = 0;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO notify_sent (id, channel, recipient, site, subject, event, status, \
                 cells, created_ms, sent_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .map_err(query_err)?;
        for n in sent {
            let cells = i64::try_from(n.cells).unwrap_or(i64::MAX);
            added += stmt
                .execute(params![
                    n.id,
                    n.channel,
                    n.recipient,
                    n.site,
                    n.subject,
                    n.event,
                    n.status,
                    cells,
                    n.created_ms,
                    n.sent_ms
                ])
                .map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)?;
    Ok(added)
}

pub(super) fn sent(
    conn: &Connection,
    site: Option<&str>,
    limit: usize,
) -> Result<Vec<SentNotification>, StoreError> {
    let limit = i64::try_from(limit.min(MAX_NOTIFICATIONS)).unwrap_or(0);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, channel, recipient, site, subject, event, status, cells, created_ms, \
             sent_ms FROM notify_sent WHERE ?1 IS NULL OR site = ?1 \
             ORDER BY sent_ms DESC, id DESC LIMIT ?2",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map(params![site, limit], |r| {
            Ok(SentNotification {
                id: r.get(0)?,
                channel: r.get(1)?,
                recipient: r.get(2)?,
                site: r.get(3)?,
                subject: r.get(4)?,
                event: r.get(5)?,
                status: r.get(6)?,
                cells: usize::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                created_ms: r.get(8)?,
                sent_ms: r.get(9)?,
            })
        })
        .map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

pub(super) fn recorded(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    conn.query_row("SELECT 1 FROM notify_sent WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
        .map_err(query_err)
}

fn read_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<StateEntry> {
    Ok(StateEntry {
        key: r.get(0)?,
        value: r.get(1)?,
        version: r.get(2)?,
    })
}

pub(super) fn state(conn: &Connection, prefix: &str) -> Result<Vec<StateEntry>, StoreError> {
    // A range on the primary key rather than LIKE, whose wildcards a key may contain.
    let mut stmt = conn
        .prepare_cached(
            "SELECT key, value, version FROM notify_state \
             WHERE key >= ?1 AND substr(key, 1, length(?1)) = ?1 ORDER BY key",
        )
        .map_err(query_err)?;
    let rows = stmt.query_map([prefix], read_entry).map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

pub(super) fn state_of(conn: &Connection, keys: &[String]) -> Result<Vec<StateEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT key, value, version FROM notify_state WHERE key = ?1")
        .map_err(query_err)?;
    let mut out = Vec::new();
    for k in keys {
        if let Some(e) = stmt
            .query_row([k], read_entry)
            .optional()
            .map_err(query_err)?
        {
            out.push(e);
        }
    }
    Ok(out)
}

pub(super) fn put_state(
    conn: &mut Connection,
    puts: &[StatePut],
) -> Result<Vec<Option<i64>>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut out = Vec::with_capacity(puts.len());
    for p in puts {
        let version: Option<i64> = match p.expected {
            None => tx
                .query_row(
                    "INSERT INTO notify_state (key, value, version) VALUES (?1, ?2, 1) \
                     ON CONFLICT (key) DO NOTHING RETURNING version",
                    params![p.key, p.value],
                    |r| r.get(0),
                )
                .optional()
                .map_err(query_err)?,
            Some(v) => tx
                .query_row(
                    "UPDATE notify_state SET value = ?2, version = version + 1 \
                     WHERE key = ?1 AND version = ?3 RETURNING version",
                    params![p.key, p.value, v],
                    |r| r.get(0),
                )
                .optional()
                .map_err(query_err)?,
        };
        out.push(version);
    }
    tx.commit().map_err(query_err)?;
    Ok(out)
}
