//! The file's schema and connection settings: migrations (`PRAGMA user_version`), applied in
//! place when a file is opened, and the pragmas every connection runs with.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::days;
use crate::store::StoreError;

/// Schema migrations; entry `i` upgrades a file from version `i` to `i + 1`. Never edit an
/// entry once released: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the results table and the per-cell history index.
    r#"
CREATE TABLE results (
    id INTEGER PRIMARY KEY,
    vo TEXT NOT NULL,
    site TEXT NOT NULL,
    hostname TEXT NOT NULL,
    flavour TEXT NOT NULL,
    metric TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    perfdata TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    "trigger" TEXT NOT NULL
);
CREATE INDEX results_cell_time ON results (site, hostname, flavour, metric, started_at_ms);
"#,
    // 2: retry attempts (`final`), the per-cell `latest` pointer, retention index, events.
    // Version 1 stored only hard results, so its rows are final and seed `latest`.
    r#"
ALTER TABLE results ADD COLUMN final INTEGER NOT NULL DEFAULT 1;
CREATE TABLE latest (
    site TEXT NOT NULL,
    hostname TEXT NOT NULL,
    flavour TEXT NOT NULL,
    metric TEXT NOT NULL,
    result_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    PRIMARY KEY (site, hostname, flavour, metric)
) WITHOUT ROWID;
INSERT INTO latest (site, hostname, flavour, metric, result_id, started_at_ms)
SELECT r.site, r.hostname, r.flavour, r.metric, r.id, r.started_at_ms
FROM results r
WHERE NOT EXISTS (
    SELECT 1 FROM results n
    WHERE n.site = r.site AND n.hostname = r.hostname AND n.flavour = r.flavour
      AND n.metric = r.metric
      AND (n.started_at_ms > r.started_at_ms
           OR (n.started_at_ms = r.started_at_ms AND n.id > r.id))
);
CREATE INDEX results_started ON results (started_at_ms);
CREATE TABLE store_events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX store_events_at ON store_events (at_ms);
"#,
    // 3: downtimes imported from GOCDB (config downtimes live in the config); one row per
    // affected service, replaced as a whole per source so an import never half-applies.
    r#"
CREATE TABLE downtimes (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    site TEXT,
    hostname TEXT,
    flavour TEXT,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    scheduled INTEGER NOT NULL,
    outage INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (source, id, hostname, flavour)
);
CREATE INDEX downtimes_time ON downtimes (end_ms, start_ms);
"#,
    // 4: message ids of results written with `insert_once` (spool replays, `gridprobe
    // consume`), so a result delivered twice is stored once.
    r#"
CREATE TABLE message_ids (
    message_id TEXT PRIMARY KEY,
    result_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX message_ids_started ON message_ids (started_at_ms);
"#,
    // 5: cells get small integer ids. `results` and `latest` refer to a cell by `cell_id`
    // instead of repeating its four strings, so the per-cell index holds two integers per row
    // and a batch dirties few, adjacent pages of it (keyed by the strings, each commit of
    // 1,000 results rewrote pages all over the index and `latest`: 3.2 KB written per
    // result). Rows keep their ids, so `latest` and `message_ids` stay valid. `vo` and `kind`
    // stay per result: a row must read back exactly as it was written. Cells are never
    // deleted (the store caches their ids).
    r#"
CREATE TABLE cells (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    hostname TEXT NOT NULL,
    flavour TEXT NOT NULL,
    metric TEXT NOT NULL,
    UNIQUE (site, hostname, flavour, metric)
);
INSERT INTO cells (site, hostname, flavour, metric)
SELECT DISTINCT site, hostname, flavour, metric FROM results
ORDER BY site, hostname, flavour, metric;
CREATE TABLE results_v5 (
    id INTEGER PRIMARY KEY,
    cell_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    final INTEGER NOT NULL,
    vo TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    perfdata TEXT NOT NULL,
    "trigger" TEXT NOT NULL
);
INSERT INTO results_v5 (id, cell_id, started_at_ms, duration_ms, attempt, final, vo, kind,
    status, summary, details, perfdata, "trigger")
SELECT r.id, c.id, r.started_at_ms, r.duration_ms, r.attempt, r.final, r.vo, r.kind,
    r.status, r.summary, r.details, r.perfdata, r."trigger"
FROM results r JOIN cells c ON c.site = r.site AND c.hostname = r.hostname
    AND c.flavour = r.flavour AND c.metric = r.metric
ORDER BY r.id;
DROP TABLE results;
ALTER TABLE results_v5 RENAME TO results;
-- One cell's history by time (the rowid, i.e. the id, is the index's last column).
CREATE INDEX results_cell_time ON results (cell_id, started_at_ms);
-- Retention, availability timelines and history across cells.
CREATE INDEX results_started ON results (started_at_ms);
CREATE TABLE latest_v5 (
    cell_id INTEGER PRIMARY KEY,
    result_id INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO latest_v5 (cell_id, result_id, started_at_ms)
SELECT c.id, l.result_id, l.started_at_ms
FROM latest l JOIN cells c ON c.site = l.site AND c.hostname = l.hostname
    AND c.flavour = l.flavour AND c.metric = l.metric;
DROP TABLE latest;
ALTER TABLE latest_v5 RENAME TO latest;
"#,
    // 6: each cell's runs of equal results per closed day, for month reports (see
    // `days`).
    days::MIGRATION,
    // 7: recomputations and the steps of their life cycle (never deleted).
    super::recompute::MIGRATION,
    // 8: the notification engine's acknowledgements, history and memory (see `notify`).
    super::notify::MIGRATION,
    // 9: the per-cell index led by the hour (see `hours`); `latest.first_ms` bounds a cell's
    // walk over the hours from below (filled here through the old index, before it goes).
    super::hours::MIGRATION,
];

/// The schema version this build writes (and the newest it can read).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another connection's lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the connection's pragmas (busy timeout, page size of a new file, WAL, synchronous,
/// caches) and upgrades its schema to [`SCHEMA_VERSION`].
pub(super) fn prepare(conn: &mut Connection, location: &str, wal: bool) -> Result<(), StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        location: location.to_string(),
        reason: e.to_string(),
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // The first statement that reads the file: "file is not a database" surfaces here.
    let found = user_version(conn).map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            location: location.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    // A new file gets 16 KiB pages: a batch of results dirties fewer, fuller pages of the
    // per-cell index than with 4 KiB ones (ingest measured 183k → 237k results/s, see
    // BENCHMARKS.md). SQLite ignores this for a file that already has tables.
    if found == 0 {
        conn.pragma_update(None, "page_size", 16_384)
            .map_err(open_err)?;
    }
    if wal {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (e.g. network mounts) refuse WAL; the store still works.
            tracing::warn!(%location, %mode, "result store could not enable WAL mode");
        }
    }
    // NORMAL is durable across application crashes in WAL mode, and much faster than FULL.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_err)?;
    // Bulk inserts scatter over the per-cell index: a bigger page cache and fewer, larger
    // checkpoints (each one fsyncs) measured ~1.5x faster than SQLite's defaults (2 MiB
    // cache, checkpoint every 1000 pages). The WAL is truncated back after checkpoints.
    conn.pragma_update(None, "cache_size", -65_536) // KiB, i.e. 64 MiB
        .map_err(open_err)?;
    if wal {
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)
            .map_err(open_err)?;
        let _: i64 = conn
            .query_row("PRAGMA journal_size_limit = 67108864", [], |r| r.get(0))
            .map_err(open_err)?;
    }
    // Room for every history query shape (see `history`) plus the fixed statements.
    conn.set_prepared_statement_cache_capacity(128);
    migrate(conn, location)
}

pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies the missing migrations, each in its own transaction together with its version bump.
fn migrate(conn: &mut Connection, location: &str) -> Result<(), StoreError> {
    let fail = |version: usize, e: rusqlite::Error| StoreError::Open {
        location: location.to_string(),
        reason: format!("schema upgrade to version {version} failed: {e}"),
    };
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i + 1;
        // IMMEDIATE takes the write lock first, so two processes opening an old file at once
        // do not both migrate it: the second re-reads the version below and skips.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail(version, e))?;
        let current = user_version(&tx).map_err(|e| fail(version, e))?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                location: location.to_string(),
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current >= version as i64 {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| fail(version, e))?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(|e| fail(version, e))?;
        tx.commit().map_err(|e| fail(version, e))?;
        if current > 0 {
            tracing::info!(%location, from = current, to = version, "upgraded result store schema");
        }
    }
    Ok(())
}
