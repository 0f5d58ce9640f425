//! The embedded SQLite result store: one file, WAL mode, schema versioned by `PRAGMA
//! user_version` and upgraded in place.
//!
//! The SQL is kept portable (plain types, `ON CONFLICT ... DO UPDATE`) so the PostgreSQL
//! backend can follow the same schema behind the same trait.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use rusqlite::{params, params_from_iter, Connection, Row, TransactionBehavior};

use gridprobe_config::Downtime;

use crate::store::{
    CellFilter, CellKey, HistoryQuery, InsertedOnce, NewResult, ResultStore, StoreError,
    StoreEvent, StoredResult, DEFAULT_HISTORY_LIMIT,
};

/// Schema migrations; entry `i` upgrades a file from version `i` to `i + 1`. Never edit an
/// entry once released: add a new one.
const MIGRATIONS: &[&str] = &[
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
];

/// The schema version this build writes (and the newest it can read).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows deleted per retention transaction, so a big purge never holds the write lock long.
const DELETE_CHUNK: i64 = 10_000;

/// Columns read into a [`StoredResult`], in the order [`read_row`] expects.
const RESULT_COLUMNS: &str = "r.id, r.final, r.vo, r.site, r.hostname, r.flavour, r.metric, \
     r.kind, r.started_at_ms, r.duration_ms, r.status, r.summary, r.details, r.perfdata, \
     r.attempt, r.\"trigger\"";

const INSERT_RESULT: &str = "INSERT INTO results (vo, site, hostname, flavour, metric, kind, \
     started_at_ms, duration_ms, status, summary, details, perfdata, attempt, \"trigger\", final) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

// `>=`: of two results with the same start, the one inserted later wins.
const UPSERT_LATEST: &str = "INSERT INTO latest (site, hostname, flavour, metric, result_id, \
     started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (site, hostname, flavour, metric) DO UPDATE SET \
     result_id = excluded.result_id, started_at_ms = excluded.started_at_ms \
     WHERE excluded.started_at_ms >= latest.started_at_ms";

/// The SQLite-backed [`ResultStore`].
///
/// The connection sits behind a mutex and every operation runs on tokio's blocking pool, so
/// database latency never stalls the async runtime. Several stores (or processes) may open the
/// same file: WAL mode lets readers proceed while one writes.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    location: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the store at `path`, and
    /// upgrades its schema to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let location = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };
        if path.is_dir() {
            return Err(open_err("is a directory, not a database file".into()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                open_err(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        Self::setup(conn, location.clone(), true)
    }

    /// A private in-memory store (for tests and dry runs).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let location = ":memory:".to_string();
        let conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        Self::setup(conn, location, false)
    }

    /// Where the store lives (path, or `:memory:`).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn setup(mut conn: Connection, location: String, wal: bool) -> Result<SqliteStore, StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            location: location.clone(),
            reason: e.to_string(),
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // The first statement that reads the file: "file is not a database" surfaces here.
        let found = user_version(&conn).map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                location,
                found,
                supported: SCHEMA_VERSION,
            });
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
        migrate(&mut conn, &location)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            location,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| StoreError::Query(format!("result store task failed: {e}")))?
    }
}

/// Locks the connection; a panic in another operation leaves SQLite itself consistent (its
/// transaction is rolled back on drop), so a poisoned mutex is simply taken over.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
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

fn query_err(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
}

pub(crate) fn trigger_name(t: Trigger) -> &'static str {
    match t {
        Trigger::Scheduled => "scheduled",
        Trigger::OnDemand => "on_demand",
    }
}

pub(crate) fn parse_trigger(s: &str) -> Option<Trigger> {
    match s {
        "scheduled" => Some(Trigger::Scheduled),
        "on_demand" => Some(Trigger::OnDemand),
        _ => None,
    }
}

pub(crate) fn parse_status(s: &str) -> Option<Status> {
    Status::ALL.into_iter().find(|st| st.name() == s)
}

/// Reads one row selected with [`RESULT_COLUMNS`]; bad data is an error naming the row, never a
/// panic.
fn read_row(row: &Row<'_>) -> Result<StoredResult, StoreError> {
    let id: i64 = row.get(0).map_err(query_err)?;
    let bad = |what: String| StoreError::Query(format!("result {id}: {what}"));
    let col = |e: rusqlite::Error| bad(e.to_string());
    let is_final: i64 = row.get(1).map_err(col)?;
    let duration_ms: i64 = row.get(9).map_err(col)?;
    let status: String = row.get(10).map_err(col)?;
    let perfdata: String = row.get(13).map_err(col)?;
    let attempt: i64 = row.get(14).map_err(col)?;
    let trigger: String = row.get(15).map_err(col)?;
    let status = parse_status(&status).ok_or_else(|| bad(format!("unknown status {status:?}")))?;
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
            },
            attempt: u32::try_from(attempt)
                .map_err(|_| bad(format!("attempt {attempt} out of range")))?,
            trigger: parse_trigger(&trigger)
                .ok_or_else(|| bad(format!("unknown trigger {trigger:?}")))?,
        },
    })
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
        out.push(read_row(row)?);
    }
    Ok(out)
}

/// The cell a result belongs to, as borrowed strings (for sorting and grouping a batch).
fn cell_of(r: &ProbeResult) -> (&str, &str, &str, &str) {
    (&r.site, &r.hostname, &r.flavour, &r.metric)
}

/// Writes a batch in one transaction.
///
/// Rows are inserted grouped by cell (a stable sort, so each cell keeps its input order and
/// its id order): consecutive inserts then land on the same pages of the cell index, which is
/// most of the cost of a large batch, and `latest` is updated once per cell rather than once
/// per row. Ids are returned in input order.
fn insert_all(conn: &mut Connection, results: &[NewResult]) -> Result<Vec<i64>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let all: Vec<&NewResult> = results.iter().collect();
    let ids = insert_rows(&tx, &all)?;
    tx.commit().map_err(query_err)?;
    Ok(ids)
}

/// Writes the results whose message ids are not stored yet, in one transaction; see
/// [`ResultStore::insert_once`].
fn insert_once_all(
    conn: &mut Connection,
    results: &[(String, NewResult)],
) -> Result<InsertedOnce, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut fresh: Vec<(&str, &NewResult)> = Vec::with_capacity(results.len());
    {
        // Claiming the id first also drops a repeat inside the batch itself.
        let mut claim = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO message_ids (message_id, result_id, started_at_ms) \
                 VALUES (?1, 0, ?2)",
            )
            .map_err(query_err)?;
        for (id, r) in results {
            if claim
                .execute(params![id, r.result.started_at_ms])
                .map_err(query_err)?
                == 1
            {
                fresh.push((id.as_str(), r));
            }
        }
    }
    let rows: Vec<&NewResult> = fresh.iter().map(|(_, r)| *r).collect();
    let ids = insert_rows(&tx, &rows)?;
    {
        let mut link = tx
            .prepare_cached("UPDATE message_ids SET result_id = ?2 WHERE message_id = ?1")
            .map_err(query_err)?;
        for ((message_id, _), id) in fresh.iter().zip(&ids) {
            link.execute(params![message_id, id]).map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)?;
    Ok(InsertedOnce {
        inserted: fresh.len(),
        duplicates: results.len() - fresh.len(),
    })
}

/// Inserts rows inside the caller's transaction; ids in input order.
fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    results: &[&NewResult],
) -> Result<Vec<i64>, StoreError> {
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&a, &b| cell_of(&results[a].result).cmp(&cell_of(&results[b].result)));
    let mut ids = vec![0i64; results.len()];
    {
        let mut insert = tx.prepare_cached(INSERT_RESULT).map_err(query_err)?;
        let mut upsert = tx.prepare_cached(UPSERT_LATEST).map_err(query_err)?;
        // The newest final result of the cell being inserted: (index, id).
        let mut best: Option<(usize, i64)> = None;
        let mut write_latest = |best: Option<(usize, i64)>| -> Result<(), StoreError> {
            if let Some((i, id)) = best {
                let r = &results[i].result;
                upsert
                    .execute(params![
                        r.site,
                        r.hostname,
                        r.flavour,
                        r.metric,
                        id,
                        r.started_at_ms
                    ])
                    .map_err(query_err)?;
            }
            Ok(())
        };
        for (pos, &i) in order.iter().enumerate() {
            let new = &results[i];
            let r = &new.result;
            if pos > 0 && cell_of(&results[order[pos - 1]].result) != cell_of(r) {
                write_latest(best.take())?;
            }
            let perfdata = if r.outcome.perfdata.is_empty() {
                "[]".to_string()
            } else {
                serde_json::to_string(&r.outcome.perfdata)
                    .map_err(|e| StoreError::Query(format!("cannot encode perfdata: {e}")))?
            };
            insert
                .execute(params![
                    r.vo,
                    r.site,
                    r.hostname,
                    r.flavour,
                    r.metric,
                    r.kind,
                    r.started_at_ms,
                    i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
                    r.outcome.status.name(),
                    r.outcome.summary,
                    r.outcome.details,
                    perfdata,
                    i64::from(r.attempt),
                    trigger_name(r.trigger),
                    i64::from(new.is_final),
                ])
                .map_err(query_err)?;
            let id = tx.last_insert_rowid();
            ids[i] = id;
            // `>=`: of equal start times the later one wins, as in UPSERT_LATEST.
            if new.is_final
                && best.is_none_or(|(b, _)| r.started_at_ms >= results[b].result.started_at_ms)
            {
                best = Some((i, id));
            }
        }
        write_latest(best)?;
    }
    Ok(ids)
}

/// Builds the history statement with only the conditions that are set, so SQLite can use the
/// cell or time index (a `?n IS NULL OR ...` form would force a full scan).
fn history_sql(q: &HistoryQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut sql = format!("SELECT {RESULT_COLUMNS} FROM results r WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut cond = |sql: &mut String, clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(site) = &q.site {
        cond(&mut sql, "r.site =", Value::Text(site.clone()));
    }
    if let Some(host) = &q.hostname {
        cond(&mut sql, "r.hostname =", Value::Text(host.clone()));
    }
    if let Some(metric) = &q.metric {
        cond(&mut sql, "r.metric =", Value::Text(metric.clone()));
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

#[async_trait]
impl ResultStore for SqliteStore {
    async fn insert(&self, results: &[NewResult]) -> Result<Vec<i64>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        // The blocking pool needs owned data; one clone per batch is cheap next to the writes.
        let results = results.to_vec();
        self.with_conn(move |conn| insert_all(conn, &results)).await
    }

    async fn latest(&self, filter: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
        let filter = filter.clone();
        self.with_conn(move |conn| {
            let sql = format!(
                "SELECT {RESULT_COLUMNS} FROM latest l JOIN results r ON r.id = l.result_id \
                 WHERE (?1 IS NULL OR r.vo = ?1) AND (?2 IS NULL OR l.site = ?2) \
                 AND (?3 IS NULL OR l.flavour = ?3) \
                 ORDER BY l.site, l.hostname, l.flavour, l.metric"
            );
            query_results(conn, &sql, params![filter.vo, filter.site, filter.flavour])
        })
        .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError> {
        let (sql, args) = history_sql(query);
        self.with_conn(move |conn| query_results(conn, &sql, params_from_iter(args)))
            .await
    }

    async fn get(&self, id: i64) -> Result<Option<StoredResult>, StoreError> {
        self.with_conn(move |conn| {
            let sql = format!("SELECT {RESULT_COLUMNS} FROM results r WHERE r.id = ?1");
            Ok(query_results(conn, &sql, [id])?.into_iter().next())
        })
        .await
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut total = 0u64;
            loop {
                // Lock per chunk so other operations of this process interleave with a purge.
                let mut guard = lock(&conn);
                let tx = guard
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(query_err)?;
                let n = tx
                    .prepare_cached(
                        "DELETE FROM results WHERE id IN (SELECT r.id FROM results r \
                         WHERE r.started_at_ms < ?1 AND NOT EXISTS (SELECT 1 FROM latest l \
                         WHERE l.site = r.site AND l.hostname = r.hostname \
                         AND l.flavour = r.flavour AND l.metric = r.metric \
                         AND l.result_id = r.id) LIMIT ?2)",
                    )
                    .and_then(|mut stmt| stmt.execute(params![cutoff_ms, DELETE_CHUNK]))
                    .map_err(query_err)?;
                tx.commit().map_err(query_err)?;
                total += n as u64;
                if (n as i64) < DELETE_CHUNK {
                    // The message ids of deleted results go too (a cell's kept latest keeps
                    // its id, so a late redelivery of it is still recognised).
                    guard
                        .prepare_cached(
                            "DELETE FROM message_ids WHERE started_at_ms < ?1 AND NOT EXISTS \
                             (SELECT 1 FROM results r WHERE r.id = message_ids.result_id)",
                        )
                        .and_then(|mut stmt| stmt.execute(params![cutoff_ms]))
                        .map_err(query_err)?;
                    return Ok(total);
                }
            }
        })
        .await
        .map_err(|e| StoreError::Query(format!("result store task failed: {e}")))?
    }

    async fn insert_once(
        &self,
        results: &[(String, NewResult)],
    ) -> Result<InsertedOnce, StoreError> {
        if results.is_empty() {
            return Ok(InsertedOnce::default());
        }
        let results = results.to_vec();
        self.with_conn(move |conn| insert_once_all(conn, &results))
            .await
    }

    async fn record_event(&self, event: &StoreEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "INSERT INTO store_events (at_ms, kind, message) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut stmt| stmt.execute(params![event.at_ms, event.kind, event.message]))
            .map_err(query_err)?;
            Ok(())
        })
        .await
    }

    async fn timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
    ) -> Result<Vec<crate::store::CellTimeline>, StoreError> {
        let filter = filter.clone();
        self.with_conn(move |conn| Self::timelines_blocking(conn, since_ms, until_ms, &filter))
            .await
    }

    async fn replace_downtimes(
        &self,
        source: &str,
        downtimes: &[Downtime],
    ) -> Result<(), StoreError> {
        let source = source.to_string();
        let downtimes = downtimes.to_vec();
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(query_err)?;
            tx.execute("DELETE FROM downtimes WHERE source = ?1", [&source])
                .map_err(query_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO downtimes (source, id, site, hostname, flavour, start_ms, \
                         end_ms, scheduled, outage, reason) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                         ON CONFLICT (source, id, hostname, flavour) DO UPDATE SET \
                         start_ms = excluded.start_ms, end_ms = excluded.end_ms",
                    )
                    .map_err(query_err)?;
                for d in &downtimes {
                    stmt.execute(params![
                        source,
                        d.id,
                        d.site,
                        d.hostname,
                        d.flavour,
                        d.start_ms,
                        d.end_ms,
                        d.scheduled,
                        d.outage,
                        d.reason
                    ])
                    .map_err(query_err)?;
                }
            }
            tx.commit().map_err(query_err)
        })
        .await
    }

    async fn downtimes(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Downtime>, StoreError> {
        self.with_conn(move |conn| {
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
        })
        .await
    }

    async fn events(&self, since_ms: i64) -> Result<Vec<StoreEvent>, StoreError> {
        self.with_conn(move |conn| {
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
        })
        .await
    }
}

impl SqliteStore {
    /// Final results of every cell started in `[since, until)`, each cell preceded by its last
    /// final result before `since` (it may still hold at the start), grouped by cell and in
    /// time order. Rows are read with borrowed strings and grouped through an interning map,
    /// so a month of results costs one index scan and no per-row allocation of cell names.
    fn timelines_blocking(
        conn: &mut Connection,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
    ) -> Result<Vec<crate::store::CellTimeline>, StoreError> {
        use std::collections::HashMap;
        let mut index: HashMap<CellKey, usize> = HashMap::new();
        let mut out: Vec<crate::store::CellTimeline> = Vec::new();
        let per_site = filter.site.is_some();
        let wanted = |site: &str, flavour: &str| {
            filter.site.as_deref().is_none_or(|s| s == site)
                && filter.flavour.as_deref().is_none_or(|f| f == flavour)
        };
        // Cells known to the store, with their last result before `since`.
        {
            let mut cells = conn
                .prepare_cached(
                    "SELECT site, hostname, flavour, metric FROM latest ORDER BY 1, 2, 3, 4",
                )
                .map_err(query_err)?;
            let keys: Vec<CellKey> = cells
                .query_map([], |r| {
                    Ok(CellKey {
                        site: r.get(0)?,
                        hostname: r.get(1)?,
                        flavour: r.get(2)?,
                        metric: r.get(3)?,
                    })
                })
                .map_err(query_err)?
                .collect::<Result<_, _>>()
                .map_err(query_err)?;
            let mut before = conn
                .prepare_cached(
                    "SELECT started_at_ms, status FROM results \
                     WHERE site = ?1 AND hostname = ?2 AND flavour = ?3 AND metric = ?4 \
                       AND started_at_ms < ?5 AND final = 1 \
                     ORDER BY started_at_ms DESC LIMIT 1",
                )
                .map_err(query_err)?;
            // One site's cells are read through the per-cell index, cell by cell, instead of
            // scanning every site's rows of the period (the site page, the API for one site).
            let mut range = conn
                .prepare_cached(
                    "SELECT started_at_ms, status FROM results \
                     WHERE site = ?1 AND hostname = ?2 AND flavour = ?3 AND metric = ?4 \
                       AND started_at_ms >= ?5 AND started_at_ms < ?6 AND final = 1 \
                     ORDER BY started_at_ms, id",
                )
                .map_err(query_err)?;
            for key in keys {
                if !wanted(&key.site, &key.flavour) {
                    continue;
                }
                let prior: Option<(i64, String)> = before
                    .query_row(
                        params![key.site, key.hostname, key.flavour, key.metric, since_ms],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
                    .map_err(query_err)?;
                let mut points = Vec::new();
                if let Some((t, st)) = prior {
                    if let Some(st) = parse_status(&st) {
                        points.push((t, st));
                    }
                }
                if per_site {
                    let rows = range
                        .query_map(
                            params![
                                key.site,
                                key.hostname,
                                key.flavour,
                                key.metric,
                                since_ms,
                                until_ms
                            ],
                            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                        )
                        .map_err(query_err)?;
                    for row in rows {
                        let (t, st) = row.map_err(query_err)?;
                        if let Some(st) = parse_status(&st) {
                            points.push((t, st));
                        }
                    }
                }
                index.insert(key.clone(), out.len());
                out.push((key, points));
            }
        }
        if per_site {
            return Ok(out);
        }
        let mut stmt = conn
            .prepare_cached(
                "SELECT site, hostname, flavour, metric, started_at_ms, status FROM results \
                 WHERE started_at_ms >= ?1 AND started_at_ms < ?2 AND final = 1 \
                 ORDER BY started_at_ms, id",
            )
            .map_err(query_err)?;
        let mut rows = stmt.query(params![since_ms, until_ms]).map_err(query_err)?;
        let mut probe_key = CellKey {
            site: String::new(),
            hostname: String::new(),
            flavour: String::new(),
            metric: String::new(),
        };
        while let Some(row) = rows.next().map_err(query_err)? {
            let text = |i: usize| -> Result<&str, StoreError> {
                row.get_ref(i)
                    .map_err(query_err)?
                    .as_str()
                    .map_err(|e| StoreError::Query(format!("bad text in results: {e}")))
            };
            let (site, flavour) = (text(0)?, text(2)?);
            if !wanted(site, flavour) {
                continue;
            }
            // Reuse one key's buffers for the lookup; allocate only for a new cell.
            probe_key.site.clear();
            probe_key.site.push_str(site);
            probe_key.hostname.clear();
            probe_key.hostname.push_str(text(1)?);
            probe_key.flavour.clear();
            probe_key.flavour.push_str(flavour);
            probe_key.metric.clear();
            probe_key.metric.push_str(text(3)?);
            let t: i64 = row.get(4).map_err(query_err)?;
            let Some(status) = parse_status(text(5)?) else {
                continue;
            };
            let slot = match index.get(&probe_key) {
                Some(i) => *i,
                None => {
                    index.insert(probe_key.clone(), out.len());
                    out.push((probe_key.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            out[slot].1.push((t, status));
        }
        Ok(out)
    }

    /// The schema version of the open file (for diagnostics).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|conn| user_version(conn).map_err(query_err))
            .await
    }

    /// Results, retry attempts included, with ids above `after_id`, ascending, at most `limit`:
    /// the order they were inserted in, for copying the store elsewhere (`gridprobe
    /// migrate-store` pages through with the last id it got).
    pub async fn results_after(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredResult>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let sql = format!(
                "SELECT {RESULT_COLUMNS} FROM results r WHERE r.id > ?1 ORDER BY r.id LIMIT ?2"
            );
            query_results(conn, &sql, params![after_id, limit])
        })
        .await
    }

    /// Number of stored results (for diagnostics and tests).
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))
                .map_err(query_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! SQLite-only behaviour: files, upgrades of old files, corrupt rows, the connection
    //! mutex. The store contract shared with PostgreSQL is in `store_tests.rs`.

    use gridprobe_probes::Status;

    use super::*;
    use crate::store_tests::{hard, result, times};

    /// Inserts a row with raw SQL (for old-schema and corrupt-data tests).
    fn raw_insert(conn: &Connection, site: &str, metric: &str, t: i64, status: &str, perf: &str) {
        // The same host name as `result` gives, so both land in one cell.
        let host = format!("ce.{}.example.org", site.to_lowercase());
        conn.execute(
            "INSERT INTO results (vo, site, hostname, flavour, metric, kind, started_at_ms, \
             duration_ms, status, summary, details, perfdata, attempt, \"trigger\") \
             VALUES ('ops', ?1, ?6, 'CE', ?2, 'tcp', ?3, 10, ?4, 'summary', '', ?5, 1, \
             'scheduled')",
            params![site, metric, t, status, perf, host],
        )
        .unwrap();
    }

    #[tokio::test]
    async fn version_1_file_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            raw_insert(&conn, "SITE-A", "m1", 100, "OK", "[]");
            raw_insert(&conn, "SITE-A", "m1", 300, "CRITICAL", "[]");
            raw_insert(&conn, "SITE-A", "m1", 200, "WARNING", "[]");
            raw_insert(
                &conn,
                "SITE-B",
                "m2",
                150,
                "UNKNOWN",
                r#"[{"label":"t","value":1.5,"uom":"s"}]"#,
            );
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        let latest = store.latest(&CellFilter::default()).await.unwrap();
        assert_eq!(times(&latest), vec![300, 150]);
        assert_eq!(latest[0].result.outcome.status, Status::Critical);
        assert_eq!(latest[1].result.outcome.perfdata[0].value, 1.5);
        let history = store.history(&HistoryQuery::default()).await.unwrap();
        assert_eq!(times(&history), vec![300, 200, 150, 100]);
        assert!(history.iter().all(|r| r.is_final));

        // The upgraded file takes new results, and opens again without migrating twice.
        store
            .insert(&[hard(result("SITE-A", "CE", "m1", 400))])
            .await
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let latest = store.latest(&CellFilter::default()).await.unwrap();
        assert_eq!(times(&latest), vec![400, 150]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::TooNew {
                found, supported, ..
            }) => {
                assert_eq!(found, 99);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
    }

    #[test]
    fn open_errors_name_the_path_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let not_db = dir.path().join("notes.txt");
        std::fs::write(&not_db, "these are notes, not a database\n".repeat(100)).unwrap();
        let err = SqliteStore::open(&not_db).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{msg}");
        assert!(msg.contains(&not_db.display().to_string()), "{msg}");
        assert!(msg.contains("file is not a database"), "{msg}");

        let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");

        // A parent that is a file cannot be created (this holds for root too).
        let under_file = not_db.join("sub").join("results.db");
        let err = SqliteStore::open(&under_file).unwrap_err().to_string();
        assert!(err.contains("cannot create directory"), "{err}");
        assert!(err.contains(&under_file.display().to_string()), "{err}");
    }

    #[tokio::test]
    async fn open_creates_parent_directories_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("results.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.is_file());
        assert_eq!(store.location(), path.display().to_string());
        let mode: String = lock(&store.conn)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn corrupt_rows_are_errors_not_panics() {
        let store = SqliteStore::open_in_memory().unwrap();
        raw_insert(&lock(&store.conn), "SITE-A", "m1", 1, "BOGUS", "[]");
        let bad_status_id = lock(&store.conn).last_insert_rowid();
        raw_insert(&lock(&store.conn), "SITE-A", "m2", 2, "OK", "{not json");
        let bad_json_id = lock(&store.conn).last_insert_rowid();
        match store.get(bad_status_id).await {
            Err(StoreError::Query(m)) => {
                assert!(m.contains(&format!("result {bad_status_id}")), "{m}");
                assert!(m.contains("BOGUS"), "{m}");
            }
            other => panic!("expected a query error, got {other:?}"),
        }
        match store.get(bad_json_id).await {
            Err(StoreError::Query(m)) => {
                assert!(m.contains(&format!("result {bad_json_id}")), "{m}");
                assert!(m.contains("perfdata"), "{m}");
            }
            other => panic!("expected a query error, got {other:?}"),
        }
        assert!(store.history(&HistoryQuery::default()).await.is_err());
    }

    #[tokio::test]
    async fn poisoned_connection_mutex_is_recovered() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = Arc::clone(&store.conn);
        let _ = std::thread::spawn(move || {
            let _guard = conn.lock();
            panic!("poison the mutex (expected in this test)");
        })
        .join();
        assert!(store.conn.is_poisoned());
        store
            .insert(&[hard(result("SITE-A", "CE", "m1", 1))])
            .await
            .unwrap();
        assert_eq!(store.count().await.unwrap(), 1);
    }
}
