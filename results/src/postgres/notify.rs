//! The notification engine's tables in PostgreSQL: acknowledgements, the history of sent
//! notifications, and the engine's versioned memory (see `crate::notify`). Every instance of a
//! shared schedule reads and writes the same rows; a state entry changes only through a
//! compare-and-set on its version, so of two instances deciding at once one wins.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::connect::query_err;
use super::rows::{pg_opt, pg_text};
use crate::notify::{Ack, SentNotification, StateEntry, StatePut, MAX_NOTIFICATIONS};
use crate::store::StoreError;

/// Migration 6: the three tables.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE notify_acks (
    id TEXT COLLATE "C" PRIMARY KEY,
    site TEXT COLLATE "C" NOT NULL,
    hostname TEXT COLLATE "C",
    metric TEXT COLLATE "C",
    comment TEXT NOT NULL,
    author TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    sticky BOOLEAN NOT NULL,
    status TEXT
);
CREATE TABLE notify_sent (
    id TEXT COLLATE "C" PRIMARY KEY,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    site TEXT COLLATE "C" NOT NULL,
    subject TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    cells BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    sent_ms BIGINT NOT NULL
);
CREATE INDEX notify_sent_time ON notify_sent (sent_ms);
CREATE TABLE notify_state (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL,
    version BIGINT NOT NULL
);
"#;

const ACK_COLUMNS: &str =
    "id, site, hostname, metric, comment, author, created_ms, expires_ms, sticky, status";

fn read_ack(r: &Row) -> Result<Ack, StoreError> {
    Ok(Ack {
        id: r.try_get(0).map_err(query_err)?,
        site: r.try_get(1).map_err(query_err)?,
        hostname: r.try_get(2).map_err(query_err)?,
        metric: r.try_get(3).map_err(query_err)?,
        comment: r.try_get(4).map_err(query_err)?,
        author: r.try_get(5).map_err(query_err)?,
        created_ms: r.try_get(6).map_err(query_err)?,
        expires_ms: r.try_get(7).map_err(query_err)?,
        sticky: r.try_get(8).map_err(query_err)?,
        status: r.try_get(9).map_err(query_err)?,
    })
}

pub(super) async fn add_acks(
    client: &mut deadpool_postgres::Object,
    acks: &[Ack],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(query_err)?;
    tx.execute(
        "DELETE FROM notify_acks WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
        &[&now_ms],
    )
    .await
    .map_err(query_err)?;
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO notify_acks ({ACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO NOTHING"
        ))
        .await
        .map_err(query_err)?;
    let mut added = 0u64;
    for a in acks.iter().filter(|a| a.active(now_ms)) {
        added += tx
            .execute(
                &stmt,
                &[
                    &pg_text(&a.id).as_ref(),
                    &pg_text(&a.site).as_ref(),
                    &pg_opt(&a.hostname),
                    &pg_opt(&a.metric),
                    &pg_text(&a.comment).as_ref(),
                    &pg_text(&a.author).as_ref(),
                    &a.created_ms,
                    &a.expires_ms,
                    &a.sticky,
                    &pg_opt(&a.status),
                ],
            )
            .await
            .map_err(query_err)?;
    }
    tx.commit().await.map_err(query_err)?;
    Ok(usize::try_from(added).unwrap_or(usize::MAX))
}

pub(super) async fn acks(c: &impl GenericClient, now_ms: i64) -> Result<Vec<Ack>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {ACK_COLUMNS} FROM notify_acks \
                 WHERE expires_ms IS NULL OR expires_ms > $1 ORDER BY created_ms, id"
            ),
            &[&now_ms],
        )
        .await
        .map_err(query_err)?;
    rows.iter().map(read_ack).collect()
}

pub(super) async fn remove_acks(
    c: &impl GenericClient,
    ids: &[String],
) -> Result<usize, StoreError> {
    let ids: Vec<String> = ids.iter().map(|i| pg_text(i).into_owned()).collect();
    let n = c
        .execute("DELETE FROM notify_acks WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(query_err)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) async fn record(
    client: &mut deadpool_postgres::Object,
    sent: &[SentNotification],
) -> Result<usize, StoreError> {
    let tx = client.transaction().await.map_err(query_err)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notify_sent (id, channel, recipient, site, subject, event, status, \
             cells, created_ms, sent_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(query_err)?;
    let mut added = 0u64;
    for n in sent {
        let cells = i64::try_from(n.cells).unwrap_or(i64::MAX);
        added += tx
            .execute(
                &stmt,
                &[
                    &pg_text(&n.id).as_ref(),
                    &pg_text(&n.channel).as_ref(),
                    &pg_text(&n.recipient).as_ref(),
                    &pg_text(&n.site).as_ref(),
                    &pg_text(&n.subject).as_ref(),
                    &pg_text(&n.event).as_ref(),
                    &pg_text(&n.status).as_ref(),
                    &cells,
                    &n.created_ms,
                    &n.sent_ms,
                ],
            )
            .await
            .map_err(query_err)?;
    }
    tx.commit().await.map_err(query_err)?;
    Ok(usize::try_from(added).unwrap_or(usize::MAX))
}

pub(super) async fn sent(
    c: &impl GenericClient,
    site: Option<&str>,
    limit: usize,
) -> Result<Vec<SentNotification>, StoreError> {
    let limit = i64::try_from(limit.min(MAX_NOTIFICATIONS)).unwrap_or(0);
    let site = site.map(|s| pg_text(s).into_owned());
    let rows = c
        .query(
            "SELECT id, channel, recipient, site, subject, event, status, cells, created_ms, \
             sent_ms FROM notify_sent WHERE $1::text IS NULL OR site = $1 \
             ORDER BY sent_ms DESC, id DESC LIMIT $2",
            &[&site, &limit],
        )
        .await
        .map_err(query_err)?;
    rows.iter()
        .map(|r| {
            let cells: i64 = r.try_get(7).map_err(query_err)?;
            Ok(SentNotification {
                id: r.try_get(0).map_err(query_err)?,
                channel: r.try_get(1).map_err(query_err)?,
                recipient: r.try_get(2).map_err(query_err)?,
                site: r.try_get(3).map_err(query_err)?,
                subject: r.try_get(4).map_err(query_err)?,
                event: r.try_get(5).map_err(query_err)?,
                status: r.try_get(6).map_err(query_err)?,
                cells: usize::try_from(cells).unwrap_or(0),
                created_ms: r.try_get(8).map_err(query_err)?,
                sent_ms: r.try_get(9).map_err(query_err)?,
            })
        })
        .collect()
}

pub(super) async fn recorded(c: &impl GenericClient, id: &str) -> Result<bool, StoreError> {
    let row = c
        .query_opt(
            "SELECT 1 FROM notify_sent WHERE id = $1",
            &[&pg_text(id).as_ref()],
        )
        .await
        .map_err(query_err)?;
    Ok(row.is_some())
}

fn read_entry(r: &Row) -> Result<StateEntry, StoreError> {
    Ok(StateEntry {
        key: r.try_get(0).map_err(query_err)?,
        value: r.try_get(1).map_err(query_err)?,
        version: r.try_get(2).map_err(query_err)?,
    })
}

pub(super) async fn state(
    c: &impl GenericClient,
    prefix: &str,
) -> Result<Vec<StateEntry>, StoreError> {
    // starts_with rather than LIKE, whose wildcards a key may contain.
    let rows = c
        .query(
            "SELECT key, value, version FROM notify_state \
             WHERE starts_with(key, $1) ORDER BY key",
            &[&pg_text(prefix).as_ref()],
        )
        .await
        .map_err(query_err)?;
    rows.iter().map(read_entry).collect()
}

pub(super) async fn state_of(
    c: &impl GenericClient,
    keys: &[String],
) -> Result<Vec<StateEntry>, StoreError> {
    let keys: Vec<String> = keys.iter().map(|k| pg_text(k).into_owned()).collect();
    let rows = c
        .query(
            "SELECT key, value, version FROM notify_state WHERE key = ANY($1) ORDER BY key",
            &[&keys],
        )
        .await
        .map_err(query_err)?;
    rows.iter().map(read_entry).collect()
}

pub(super) async fn put_state(
    client: &mut deadpool_postgres::Object,
    puts: &[StatePut],
) -> Result<Vec<Option<i64>>, StoreError> {
    let tx = client.transaction().await.map_err(query_err)?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO notify_state (key, value, version) VALUES ($1, $2, 1) \
             ON CONFLICT (key) DO NOTHING RETURNING version",
        )
        .await
        .map_err(query_err)?;
    let update = tx
        .prepare_cached(
            "UPDATE notify_state SET value = $2, version = version + 1 \
             WHERE key = $1 AND version = $3 RETURNING version",
        )
        .await
        .map_err(query_err)?;
    let mut out = Vec::with_capacity(puts.len());
    for p in puts {
        let key = pg_text(&p.key);
        let value = pg_text(&p.value);
        let row = match p.expected {
            None => tx
                .query_opt(&insert, &[&key.as_ref(), &value.as_ref()])
                .await
                .map_err(query_err)?,
            Some(v) => tx
                .query_opt(&update, &[&key.as_ref(), &value.as_ref(), &v])
                .await
                .map_err(query_err)?,
        };
        out.push(match row {
            Some(r) => Some(r.try_get(0).map_err(query_err)?),
            None => None,
        });
    }
    tx.commit().await.map_err(query_err)?;
    Ok(out)
}
