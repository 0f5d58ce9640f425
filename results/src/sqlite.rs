//! The embedded SQLite result store: one file, WAL mode, schema versioned by `PRAGMA
//! user_version` and upgraded in place.
//!
//! The SQL is kept portable (plain types, `ON CONFLICT ... DO UPDATE`) so the PostgreSQL
//! backend can follow the same schema behind the same trait.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use gridprobe_probes::{Outcome, Perfdatum, ProbeResult, Status, Trigger};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

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
    // `sqlite_days`).
    crate::sqlite_days::MIGRATION,
];

/// The schema version this build writes (and the newest it can read).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows deleted per retention transaction, so a big purge never holds the write lock long.
const DELETE_CHUNK: i64 = 10_000;

/// Columns read into a [`StoredResult`], in the order [`read_row`] expects; `r` is `results`
/// joined with its cell as `c`.
const RESULT_COLUMNS: &str = "r.id, r.final, r.vo, c.site, c.hostname, c.flavour, c.metric, \
     r.kind, r.started_at_ms, r.duration_ms, r.status, r.summary, r.details, r.perfdata, \
     r.attempt, r.\"trigger\"";

const INSERT_RESULT: &str = "INSERT INTO results (cell_id, started_at_ms, duration_ms, \
     attempt, final, vo, kind, status, summary, details, perfdata, \"trigger\") \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

// `>=`: of two results with the same start, the one inserted later wins.
const UPSERT_LATEST: &str = "INSERT INTO latest (cell_id, result_id, started_at_ms) \
     VALUES (?1, ?2, ?3) \
     ON CONFLICT (cell_id) DO UPDATE SET \
     result_id = excluded.result_id, started_at_ms = excluded.started_at_ms \
     WHERE excluded.started_at_ms >= latest.started_at_ms";

/// Cell ids already committed to the store, by cell (the one-string key of
/// [`EncodedRow::cell`]: one heap string to compare per lookup, not four). Cells are never
/// deleted, so an entry stays true; an id is added only once the transaction that created it
/// has committed (a rolled-back insert could hand the same id to another cell later).
type CellCache = HashMap<Box<str>, i64>;

/// Cells a transaction looked up or created (same key), for the [`CellCache`] once it has
/// committed.
type NewCells = HashMap<Box<str>, i64>;

/// The SQLite-backed [`ResultStore`].
///
/// The connection sits behind a mutex and every operation runs on tokio's blocking pool, so
/// database latency never stalls the async runtime. Several stores (or processes) may open the
/// same file: WAL mode lets readers proceed while one writes.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Read while a batch is encoded, extended once it has committed; held briefly, and
    /// never while waiting for `conn`.
    cells: Arc<Mutex<CellCache>>,
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
        migrate(&mut conn, &location)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            cells: Arc::new(Mutex::new(HashMap::new())),
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

/// Locks the connection (or the cell cache); a panic in another operation leaves SQLite itself
/// consistent (its transaction is rolled back on drop), and the cache only ever holds
/// committed cells, so a poisoned mutex is simply taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// A status column read in place, without allocating.
fn status_text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    row.get_ref(i)
        .map_err(query_err)?
        .as_str()
        .map_err(|e| StoreError::Query(format!("bad text in results: {e}")))
}

/// A cell's last final result started before `before_ms` (through the per-cell index).
pub(crate) fn prior_final(
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
    Ok(prior.and_then(|(t, st)| parse_status(&st).map(|st| (t, st))))
}

/// A cell's final results started in `[from, to)`, in time order (through the per-cell index).
pub(crate) fn cell_finals(
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
        if let Some(st) = parse_status(status_text(row, 1)?) {
            each(t, st);
        }
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
        out.push(read_row(row)?);
    }
    Ok(out)
}

/// A range of [`Encoded::text`].
#[derive(Debug, Clone, Copy)]
struct Span(usize, usize);

/// A batch encoded for the blocking pool: the text of every row back to back in one string,
/// the rest in fixed-size rows. Building it replaces a deep copy of the batch (a dozen
/// allocations per result, and as many frees after the write) with one allocation, and
/// encodes the perfdata JSON on the way.
#[derive(Debug, Default)]
struct Encoded {
    text: String,
    rows: Vec<EncodedRow>,
}

#[derive(Debug)]
struct EncodedRow {
    /// The cell as one string, `len:site len:hostname len:flavour len:metric` (lengths in
    /// bytes, so it is unambiguous whatever the names hold): the key of the [`CellCache`].
    cell: Span,
    /// Site, host name, flavour and metric (inside `cell`).
    names: [Span; 4],
    /// The cell's id when the cache knew it at encoding (off the writing thread).
    cell_id: Option<i64>,
    vo: Span,
    kind: Span,
    summary: Span,
    details: Span,
    perfdata: Span,
    started_at_ms: i64,
    duration_ms: i64,
    attempt: i64,
    is_final: bool,
    status: &'static str,
    trigger: &'static str,
}

impl Encoded {
    fn new<'a>(
        results: impl Iterator<Item = &'a NewResult> + Clone,
        cache: &Mutex<CellCache>,
    ) -> Result<Self, StoreError> {
        // One allocation for the text: its size is known but for the perfdata JSON.
        let (mut rows, mut bytes) = (0, 0);
        for new in results.clone() {
            let r = &new.result;
            rows += 1;
            bytes += [
                &r.site,
                &r.hostname,
                &r.flavour,
                &r.metric,
                &r.vo,
                &r.kind,
                &r.outcome.summary,
                &r.outcome.details,
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
                + 24
                + 64 * r.outcome.perfdata.len();
        }
        let mut enc = Encoded {
            text: String::with_capacity(bytes),
            rows: Vec::with_capacity(rows),
        };
        let mut json: Vec<u8> = Vec::with_capacity(256);
        for new in results {
            enc.push(new, &mut json)?;
        }
        // Committed cells' ids, looked up here: the lookups (a cache miss or two each) then
        // overlap with the writing of the previous chunk.
        let cache = lock(cache);
        for row in &mut enc.rows {
            row.cell_id = cache.get(&enc.text[row.cell.0..row.cell.1]).copied();
        }
        Ok(enc)
    }

    fn push(&mut self, new: &NewResult, json: &mut Vec<u8>) -> Result<(), StoreError> {
        let r = &new.result;
        let start = self.text.len();
        let mut names = [Span(0, 0); 4];
        for (name, s) in names
            .iter_mut()
            .zip([&r.site, &r.hostname, &r.flavour, &r.metric])
        {
            let mut digits = [0u8; 20];
            let mut n = s.len();
            let mut i = digits.len();
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for d in &digits[i..] {
                self.text.push(char::from(*d));
            }
            self.text.push(':');
            *name = self.add(s);
        }
        let cell = Span(start, self.text.len());
        json.clear();
        serde_json::to_writer(&mut *json, &r.outcome.perfdata)
            .map_err(|e| StoreError::Query(format!("cannot encode perfdata: {e}")))?;
        let json = std::str::from_utf8(json)
            .map_err(|e| StoreError::Query(format!("cannot encode perfdata: {e}")))?;
        let row = EncodedRow {
            cell,
            names,
            cell_id: None,
            vo: self.add(&r.vo),
            kind: self.add(&r.kind),
            summary: self.add(&r.outcome.summary),
            details: self.add(&r.outcome.details),
            perfdata: self.add(json),
            started_at_ms: r.started_at_ms,
            duration_ms: i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            attempt: i64::from(r.attempt),
            is_final: new.is_final,
            status: r.outcome.status.name(),
            trigger: trigger_name(r.trigger),
        };
        self.rows.push(row);
        Ok(())
    }

    fn add(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span(start, self.text.len())
    }

    fn str(&self, s: Span) -> &str {
        &self.text[s.0..s.1]
    }

    /// The cell's names, ordered as [`CellKey`] orders.
    fn names(&self, row: &EncodedRow) -> (&str, &str, &str, &str) {
        let [a, b, c, d] = row.names;
        (self.str(a), self.str(b), self.str(c), self.str(d))
    }
}

/// Results encoded per hand-over to the blocking pool (see [`ResultStore::insert`]).
const ENCODE_CHUNK: usize = 1000;

/// Writes a batch in one transaction, its chunks as they arrive (`None` ends the batch; a
/// closed channel before it abandons the batch, which is rolled back).
///
/// Each chunk's rows are inserted grouped by cell, in cell id order (a stable sort, so each
/// cell keeps its input order and its id order): consecutive inserts then land on the same
/// pages of the cell index, which is most of the cost of a large batch, and `latest` is
/// updated once per cell and chunk rather than once per row. Ids are returned in input order.
fn insert_chunks(
    conn: &mut Connection,
    cells: &Mutex<CellCache>,
    chunks: &std::sync::mpsc::Receiver<Option<Encoded>>,
) -> Result<Vec<i64>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut created = NewCells::new();
    let mut ids = Vec::new();
    loop {
        match chunks.recv() {
            Ok(Some(chunk)) => {
                let all: Vec<usize> = (0..chunk.rows.len()).collect();
                ids.extend(insert_rows(&tx, &mut created, &chunk, &all)?);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(StoreError::Query(
                    "result batch abandoned before it was complete".into(),
                ))
            }
        }
    }
    tx.commit().map_err(query_err)?;
    lock(cells).extend(created);
    Ok(ids)
}

/// Writes the results whose message ids are not stored yet, in one transaction; see
/// [`ResultStore::insert_once`]. `message_ids` go with `batch`'s rows.
fn insert_once_all(
    conn: &mut Connection,
    cells: &Mutex<CellCache>,
    message_ids: &[String],
    batch: &Encoded,
) -> Result<InsertedOnce, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_err)?;
    let mut fresh: Vec<usize> = Vec::with_capacity(message_ids.len());
    {
        // Claiming the id first also drops a repeat inside the batch itself.
        let mut claim = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO message_ids (message_id, result_id, started_at_ms) \
                 VALUES (?1, 0, ?2)",
            )
            .map_err(query_err)?;
        for (i, (id, row)) in message_ids.iter().zip(&batch.rows).enumerate() {
            if claim
                .execute(params![id, row.started_at_ms])
                .map_err(query_err)?
                == 1
            {
                fresh.push(i);
            }
        }
    }
    let mut created = NewCells::new();
    let ids = insert_rows(&tx, &mut created, batch, &fresh)?;
    {
        let mut link = tx
            .prepare_cached("UPDATE message_ids SET result_id = ?2 WHERE message_id = ?1")
            .map_err(query_err)?;
        for (&i, id) in fresh.iter().zip(&ids) {
            link.execute(params![message_ids[i], id])
                .map_err(query_err)?;
        }
    }
    tx.commit().map_err(query_err)?;
    lock(cells).extend(created);
    Ok(InsertedOnce {
        inserted: fresh.len(),
        duplicates: message_ids.len() - fresh.len(),
    })
}

/// The cell id of each of `rows` (in order). Ids the cache knew at encoding come with the
/// rows; the others are looked up or created here and added to `created` (the transaction's
/// cells, cached once it has committed).
fn resolve_cells(
    tx: &rusqlite::Transaction<'_>,
    created: &mut NewCells,
    batch: &Encoded,
    rows: &[usize],
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut missing: Vec<usize> = Vec::new();
    for (at, &i) in rows.iter().enumerate() {
        let row = &batch.rows[i];
        match row
            .cell_id
            .or_else(|| created.get(batch.str(row.cell)).copied())
        {
            Some(id) => ids.push(id),
            None => {
                ids.push(0);
                missing.push(at);
            }
        }
    }
    if missing.is_empty() {
        return Ok(ids);
    }
    // New cells in key order, so the cells of a site get adjacent ids.
    let mut keys: Vec<&EncodedRow> = missing.iter().map(|&at| &batch.rows[rows[at]]).collect();
    keys.sort_unstable_by(|a, b| batch.names(a).cmp(&batch.names(b)));
    keys.dedup_by(|a, b| batch.names(a) == batch.names(b));
    {
        let mut select = tx
            .prepare_cached(
                "SELECT id FROM cells \
                 WHERE site = ?1 AND hostname = ?2 AND flavour = ?3 AND metric = ?4",
            )
            .map_err(query_err)?;
        // A plain insert: under this transaction's write lock nobody else can create the cell
        // between the SELECT and here, and a conflict would be an error, never a wrong id.
        // (Not `RETURNING id`: SQLite builds and drops a temporary b-tree for every such
        // statement, which measured as 6% of an ingest that creates many cells.)
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO cells (site, hostname, flavour, metric) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(query_err)?;
        for row in keys {
            let (site, hostname, flavour, metric) = batch.names(row);
            let args = params![site, hostname, flavour, metric];
            // Another store on the file (or process) may have created it already.
            let id = match select
                .query_row(args, |r| r.get(0))
                .optional()
                .map_err(query_err)?
            {
                Some(id) => id,
                None => {
                    insert.execute(args).map_err(query_err)?;
                    tx.last_insert_rowid()
                }
            };
            created.insert(batch.str(row.cell).into(), id);
        }
    }
    for at in missing {
        let cell = batch.str(batch.rows[rows[at]].cell);
        ids[at] = *created
            .get(cell)
            .ok_or_else(|| StoreError::Query("cell lookup lost a cell".into()))?;
    }
    Ok(ids)
}

/// Inserts `rows` of the batch inside the caller's transaction; returns their ids (in the
/// order of `rows`). Cells it creates are added to `created`.
fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    created: &mut NewCells,
    batch: &Encoded,
    rows: &[usize],
) -> Result<Vec<i64>, StoreError> {
    let cells = resolve_cells(tx, created, batch, rows)?;
    // Positions in `rows`, in cell id order.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&at| cells[at]);
    let mut ids = vec![0i64; rows.len()];
    {
        let mut insert = tx.prepare_cached(INSERT_RESULT).map_err(query_err)?;
        let mut upsert = tx.prepare_cached(UPSERT_LATEST).map_err(query_err)?;
        // The newest final result of the cell being inserted: (position, id, start).
        let mut best: Option<(usize, i64, i64)> = None;
        let mut write_latest = |best: Option<(usize, i64, i64)>| -> Result<(), StoreError> {
            if let Some((at, id, started_at_ms)) = best {
                upsert
                    .execute(params![cells[at], id, started_at_ms])
                    .map_err(query_err)?;
            }
            Ok(())
        };
        for (pos, &at) in order.iter().enumerate() {
            let r = &batch.rows[rows[at]];
            if pos > 0 && cells[order[pos - 1]] != cells[at] {
                write_latest(best.take())?;
            }
            insert
                .execute(params![
                    cells[at],
                    r.started_at_ms,
                    r.duration_ms,
                    r.attempt,
                    i64::from(r.is_final),
                    batch.str(r.vo),
                    batch.str(r.kind),
                    r.status,
                    batch.str(r.summary),
                    batch.str(r.details),
                    batch.str(r.perfdata),
                    r.trigger,
                ])
                .map_err(query_err)?;
            let id = tx.last_insert_rowid();
            ids[at] = id;
            // `>=`: of equal start times the later one wins, as in UPSERT_LATEST.
            if r.is_final && best.is_none_or(|(_, _, t)| r.started_at_ms >= t) {
                best = Some((at, id, r.started_at_ms));
            }
        }
        write_latest(best)?;
    }
    // Late results of a closed day: the day's cached runs are rebuilt on the next report.
    crate::sqlite_days::invalidate(
        tx,
        rows.iter()
            .map(|&row| &batch.rows[row])
            .filter(|r| r.is_final)
            .map(|r| r.started_at_ms),
        gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now()),
    )?;
    Ok(ids)
}

/// Builds the history statement with only the conditions that are set, so SQLite can use the
/// cell or time index (a `?n IS NULL OR ...` form would force a full scan). Cell conditions
/// apply to `cells`, whose ids then range over the `(cell_id, started_at_ms)` index.
fn history_sql(q: &HistoryQuery) -> (String, Vec<rusqlite::types::Value>) {
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

#[async_trait]
impl ResultStore for SqliteStore {
    async fn insert(&self, results: &[NewResult]) -> Result<Vec<i64>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        // The blocking pool needs owned data: the batch is encoded chunk by chunk, each chunk
        // handed over as soon as it is ready, so that encoding the rest here overlaps with
        // writing the first ones there (one transaction all the same).
        let (chunks, received) = std::sync::mpsc::channel::<Option<Encoded>>();
        let (conn, cells) = (Arc::clone(&self.conn), Arc::clone(&self.cells));
        let writing =
            tokio::task::spawn_blocking(move || insert_chunks(&mut lock(&conn), &cells, &received));
        let mut encoded = Ok(());
        for chunk in results.chunks(ENCODE_CHUNK) {
            match Encoded::new(chunk.iter(), &self.cells) {
                // A closed channel: the writing side failed already, and says why below.
                Ok(chunk) => {
                    if chunks.send(Some(chunk)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    encoded = Err(e);
                    break;
                }
            }
        }
        if encoded.is_ok() {
            let _ = chunks.send(None);
        }
        // Without the `None`, dropping the sender abandons (rolls back) the batch.
        drop(chunks);
        let written = writing
            .await
            .map_err(|e| StoreError::Query(format!("result store task failed: {e}")))?;
        encoded?;
        written
    }

    async fn latest(&self, filter: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
        let filter = filter.clone();
        self.with_conn(move |conn| {
            let sql = format!(
                "SELECT {RESULT_COLUMNS} FROM latest l JOIN cells c ON c.id = l.cell_id \
                 JOIN results r ON r.id = l.result_id \
                 WHERE (?1 IS NULL OR r.vo = ?1) AND (?2 IS NULL OR c.site = ?2) \
                 AND (?3 IS NULL OR c.flavour = ?3) \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric"
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
            let sql = format!(
                "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id \
                 WHERE r.id = ?1"
            );
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
                         WHERE l.cell_id = r.cell_id AND l.result_id = r.id) LIMIT ?2)",
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
                    crate::sqlite_days::forget_before(&guard, cutoff_ms)?;
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
        let message_ids: Vec<String> = results.iter().map(|(id, _)| id.clone()).collect();
        let batch = Encoded::new(results.iter().map(|(_, r)| r), &self.cells)?;
        let cells = Arc::clone(&self.cells);
        self.with_conn(move |conn| insert_once_all(conn, &cells, &message_ids, &batch))
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

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            // The write lock, as a batch of results takes it; waiting at most a second for
            // another writer instead of the usual busy timeout.
            conn.busy_timeout(Duration::from_secs(1))
                .map_err(query_err)?;
            let taken = conn
                .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(|e| StoreError::Query(format!("the store cannot be written: {e}")));
            if taken.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            conn.busy_timeout(BUSY_TIMEOUT).map_err(query_err)?;
            taken
        })
        .await
    }

    async fn run_timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
        merge_gap_ms: i64,
    ) -> Result<Vec<crate::store::CellRuns>, StoreError> {
        let filter = filter.clone();
        let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
        // Days to build are built one per lock, so the writer (same connection) waits for one
        // day's scan at most, not for a month's.
        let missing = self
            .with_conn(move |conn| crate::sqlite_days::missing_days(conn, since_ms, until_ms, now))
            .await?;
        for day in missing {
            self.with_conn(move |conn| crate::sqlite_days::cache_day(conn, day))
                .await?;
        }
        self.with_conn(move |conn| {
            crate::sqlite_days::run_timelines(conn, since_ms, until_ms, &filter, merge_gap_ms, now)
        })
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
    /// time order. The cells' names are read once from `cells`; the period's rows carry only
    /// the integer cell id, so a month of results costs one index scan and no per-row string
    /// work.
    fn timelines_blocking(
        conn: &mut Connection,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
    ) -> Result<Vec<crate::store::CellTimeline>, StoreError> {
        let mut out: Vec<crate::store::CellTimeline> = Vec::new();
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
        let mut stmt = conn
            .prepare_cached(
                "SELECT cell_id, started_at_ms, status FROM results \
                 WHERE started_at_ms >= ?1 AND started_at_ms < ?2 AND final = 1 \
                 ORDER BY started_at_ms, id",
            )
            .map_err(query_err)?;
        let mut rows = stmt.query(params![since_ms, until_ms]).map_err(query_err)?;
        while let Some(row) = rows.next().map_err(query_err)? {
            let cell: i64 = row.get(0).map_err(query_err)?;
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
                        None => continue,
                    }
                }
            };
            let t: i64 = row.get(1).map_err(query_err)?;
            if let Some(status) = parse_status(status_text(row, 2)?) {
                out[slot].1.push((t, status));
            }
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
                "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id \
                 WHERE r.id > ?1 ORDER BY r.id LIMIT ?2"
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

    fn ids_of(rows: &[StoredResult]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    /// Inserts a row with raw SQL into a file of schema version 1 to 4 (before `cells`).
    fn raw_insert_v1(
        conn: &Connection,
        site: &str,
        metric: &str,
        t: i64,
        status: &str,
        perf: &str,
    ) -> i64 {
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
        conn.last_insert_rowid()
    }

    /// Inserts a row with raw SQL into the current schema (for corrupt-data tests).
    fn raw_insert(conn: &Connection, site: &str, metric: &str, t: i64, status: &str, perf: &str) {
        let host = format!("ce.{}.example.org", site.to_lowercase());
        conn.execute(
            "INSERT OR IGNORE INTO cells (site, hostname, flavour, metric) \
             VALUES (?1, ?2, 'CE', ?3)",
            params![site, host, metric],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO results (cell_id, vo, kind, started_at_ms, duration_ms, status, \
             summary, details, perfdata, attempt, \"trigger\", final) \
             SELECT id, 'ops', 'tcp', ?4, 10, ?5, 'summary', '', ?6, 1, 'scheduled', 1 \
             FROM cells WHERE site = ?1 AND hostname = ?2 AND flavour = 'CE' AND metric = ?3",
            params![site, host, metric, t, status, perf],
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
            raw_insert_v1(&conn, "SITE-A", "m1", 100, "OK", "[]");
            raw_insert_v1(&conn, "SITE-A", "m1", 300, "CRITICAL", "[]");
            raw_insert_v1(&conn, "SITE-A", "m1", 200, "WARNING", "[]");
            raw_insert_v1(
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

    #[tokio::test]
    async fn version_4_file_is_upgraded_keeping_ids_latest_and_message_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        let perf = r#"[{"label":"t","value":1.5,"uom":"s"}]"#;
        let (a100, a200, a300, a350, b150);
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..4] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            a100 = raw_insert_v1(&conn, "SITE-A", "m1", 100, "OK", "[]");
            // A gap in the ids (a row deleted), which must survive the rebuild.
            let gone = raw_insert_v1(&conn, "SITE-A", "m1", 120, "OK", "[]");
            b150 = raw_insert_v1(&conn, "SITE-B", "m2", 150, "UNKNOWN", perf);
            conn.execute("DELETE FROM results WHERE id = ?1", [gone])
                .unwrap();
            a300 = raw_insert_v1(&conn, "SITE-A", "m1", 300, "CRITICAL", "[]");
            a200 = raw_insert_v1(&conn, "SITE-A", "m1", 200, "WARNING", "[]");
            // A retry attempt, newer than the cell's latest hard result.
            a350 = raw_insert_v1(&conn, "SITE-A", "m1", 350, "WARNING", "[]");
            conn.execute(
                "UPDATE results SET final = 0, attempt = 2, \"trigger\" = 'on_demand' \
                 WHERE id = ?1",
                [a350],
            )
            .unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO latest (site, hostname, flavour, metric, result_id, started_at_ms) \
                 VALUES ('SITE-A', 'ce.site-a.example.org', 'CE', 'm1', {a300}, 300), \
                        ('SITE-B', 'ce.site-b.example.org', 'CE', 'm2', {b150}, 150); \
                 INSERT INTO message_ids (message_id, result_id, started_at_ms) \
                 VALUES ('msg-a300', {a300}, 300), ('msg-b150', {b150}, 150);"
            ))
            .unwrap();
        }
        assert!(b150 > a100 + 1, "the deleted row leaves a gap");

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        {
            let conn = lock(&store.conn);
            let check: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            let cells: i64 = conn
                .query_row("SELECT COUNT(*) FROM cells", [], |r| r.get(0))
                .unwrap();
            assert_eq!(cells, 2);
        }

        let latest = store.latest(&CellFilter::default()).await.unwrap();
        assert_eq!(ids_of(&latest), vec![a300, b150]);
        assert_eq!(latest[0].result.outcome.status, Status::Critical);
        assert_eq!(latest[1].result.outcome.perfdata[0].value, 1.5);
        assert_eq!(latest[1].result.hostname, "ce.site-b.example.org");

        let history = store.history(&HistoryQuery::default()).await.unwrap();
        assert_eq!(ids_of(&history), vec![a300, a200, b150, a100]);
        let all = store
            .history(&HistoryQuery {
                include_attempts: true,
                ..HistoryQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(ids_of(&all), vec![a350, a300, a200, b150, a100]);
        let retry = &all[0];
        assert!(!retry.is_final);
        assert_eq!(retry.result.attempt, 2);
        assert_eq!(retry.result.trigger, Trigger::OnDemand);
        let one_cell = store
            .history(&HistoryQuery {
                site: Some("SITE-A".into()),
                hostname: Some("ce.site-a.example.org".into()),
                metric: Some("m1".into()),
                before: Some((300, a300)),
                ..HistoryQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(ids_of(&one_cell), vec![a200, a100]);
        let got = store.get(b150).await.unwrap().unwrap();
        assert_eq!(
            (got.result.vo.as_str(), got.result.kind.as_str()),
            ("ops", "tcp")
        );
        assert_eq!(got.result.metric, "m2");

        // The message ids still point at their rows: a redelivery is recognised.
        let mut again = hard(result("SITE-A", "CE", "m1", 300));
        again.result.outcome.status = Status::Critical;
        let outcome = store
            .insert_once(&[
                ("msg-a300".to_string(), again),
                (
                    "msg-new".to_string(),
                    hard(result("SITE-B", "CE", "m2", 400)),
                ),
            ])
            .await
            .unwrap();
        assert_eq!((outcome.inserted, outcome.duplicates), (1, 1));
        // New rows join the old cells, with ids after the old ones.
        let id = store
            .insert(&[hard(result("SITE-A", "CE", "m1", 500))])
            .await
            .unwrap()[0];
        assert!(id > a350);
        let latest = store.latest(&CellFilter::default()).await.unwrap();
        assert_eq!(times(&latest), vec![500, 400]);
        assert_eq!(
            lock(&store.conn)
                .query_row("SELECT COUNT(*) FROM cells", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            2
        );

        // Retention keeps each cell's latest, and the timelines read the cells by id.
        let timelines = store
            .timelines(0, 1_000, &CellFilter::default())
            .await
            .unwrap();
        let names: Vec<&str> = timelines.iter().map(|(k, _)| k.metric.as_str()).collect();
        assert_eq!(names, vec!["m1", "m2"]);
        assert_eq!(timelines[0].1.len(), 4);
        assert_eq!(store.delete_before(450).await.unwrap(), 5);
        let latest = store.latest(&CellFilter::default()).await.unwrap();
        assert_eq!(times(&latest), vec![500, 400]);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_rolled_back_batch_leaves_no_cell_id_behind() {
        let store = SqliteStore::open_in_memory().unwrap();
        lock(&store.conn)
            .execute_batch(
                "CREATE TEMP TRIGGER boom BEFORE INSERT ON results WHEN NEW.summary = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'boom (test)'); END;",
            )
            .unwrap();
        // The cell is created inside the transaction, then the row fails: all rolled back.
        let mut failing = hard(result("SITE-A", "CE", "m1", 1));
        failing.result.outcome.summary = "boom".into();
        let err = store.insert(&[failing]).await.unwrap_err().to_string();
        assert!(err.contains("boom (test)"), "{err}");
        lock(&store.conn)
            .execute_batch("DROP TRIGGER boom")
            .unwrap();
        // Another cell now gets the id the rolled-back one had; the first must not reuse it.
        store
            .insert(&[hard(result("SITE-B", "CE", "m2", 2))])
            .await
            .unwrap();
        store
            .insert(&[hard(result("SITE-A", "CE", "m1", 3))])
            .await
            .unwrap();
        let latest = store.latest(&CellFilter::default()).await.unwrap();
        let cells: Vec<(&str, &str, i64)> = latest
            .iter()
            .map(|r| {
                (
                    r.result.site.as_str(),
                    r.result.metric.as_str(),
                    r.result.started_at_ms,
                )
            })
            .collect();
        assert_eq!(cells, vec![("SITE-A", "m1", 3), ("SITE-B", "m2", 2)]);
    }

    /// One cell's history and timelines read through the `(cell_id, started_at_ms)` index,
    /// retention through the time index.
    #[test]
    fn cell_queries_use_the_cell_index() {
        let store = SqliteStore::open_in_memory().unwrap();
        let conn = lock(&store.conn);
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = stmt.parameter_count();
            let args: Vec<rusqlite::types::Value> =
                (0..n).map(|_| rusqlite::types::Value::Integer(1)).collect();
            let rows: Vec<String> = stmt
                .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.join("; ")
        };
        let (one_cell, _) = history_sql(&HistoryQuery {
            site: Some("S".into()),
            hostname: Some("h".into()),
            metric: Some("m".into()),
            before: Some((1, 1)),
            ..HistoryQuery::default()
        });
        let p = plan(&one_cell);
        assert!(
            p.contains("USING INDEX results_cell_time (cell_id=?"),
            "{p}"
        );
        assert!(!p.contains("SCAN r"), "{p}");
        let (recent, _) = history_sql(&HistoryQuery {
            since_ms: Some(1),
            ..HistoryQuery::default()
        });
        let p = plan(&recent);
        assert!(p.contains("results_started"), "{p}");
        let p = plan(
            "SELECT started_at_ms, status FROM results \
             WHERE cell_id = ?1 AND started_at_ms >= ?2 AND started_at_ms < ?3 AND final = 1 \
             ORDER BY started_at_ms, id",
        );
        assert!(
            p.contains(
                "USING INDEX results_cell_time (cell_id=? AND started_at_ms>? AND started_at_ms<?)"
            ),
            "{p}"
        );
        assert!(!p.contains("TEMP B-TREE"), "{p}");
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
        let page: i64 = lock(&store.conn)
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 16_384, "a new file gets the large pages");
        drop(store);
        // An existing file keeps its page size (changing it would need a VACUUM).
        let old = dir.path().join("old.db");
        rusqlite::Connection::open(&old)
            .and_then(|c| c.execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x);"))
            .unwrap();
        let store = SqliteStore::open(&old).unwrap();
        let page: i64 = lock(&store.conn)
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 4096);
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

    #[tokio::test]
    async fn a_long_period_caches_only_the_days_that_hold_results() {
        use crate::sqlite_days::DAY_MS;
        let store = SqliteStore::open_in_memory().unwrap();
        let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        // Results on three closed days, ten days back.
        for d in [10, 11, 13] {
            store
                .insert(&[hard(result("SITE-A", "CE", "m1", today - d * DAY_MS + 5))])
                .await
                .unwrap();
        }
        // A read over a hundred thousand days (the API refuses such periods; the store must
        // stay small anyway) builds and keeps only those three days.
        let runs = store
            .run_timelines(
                now - 100_000 * DAY_MS,
                now,
                &CellFilter::default(),
                DAY_MS * 2,
            )
            .await
            .unwrap();
        assert_eq!(runs.len(), 1);
        let count = |table: &str| -> i64 {
            lock(&store.conn)
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count("report_days"), 3);
        assert_eq!(count("cell_day_runs"), 3);
        // Read again (now from the cache): the same runs, and nothing new stored.
        let again = store
            .run_timelines(
                now - 100_000 * DAY_MS,
                now,
                &CellFilter::default(),
                DAY_MS * 2,
            )
            .await
            .unwrap();
        assert_eq!(again, runs);
        assert_eq!(count("report_days"), 3);
    }
}
