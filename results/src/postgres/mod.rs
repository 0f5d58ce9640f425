//! The PostgreSQL result store, for shared deployments: several gridprobe processes and hundreds
//! of sites on one database. It implements [`ResultStore`] with exactly the semantics of
//! [`crate::SqliteStore`] (the reference), so either backend can sit behind the service, the
//! CLI and the reports, and the same test suite runs against both (`store_tests.rs`).
//!
//! Differences of layout, not of behaviour:
//! * a `cells` table gives every (site, host, flavour, metric) a small id; `results` refers to
//!   it, so a row carries one integer instead of four strings and the per-cell index stays
//!   small. `latest` (the newest hard result per cell, as in SQLite) is a narrow table of
//!   ids, so the one row update per cell and batch stays cheap (it measured as half the cost
//!   of a batch when the pointer sat in the wide `cells` row).
//! * batches go in with `COPY ... (FORMAT binary)` inside one transaction, ids taken from the
//!   sequence up front so they are known without `RETURNING` and increase in input order.
//! * the schema version lives in the one-row table `gridprobe_schema` (SQLite's
//!   `user_version`); upgrades run under an advisory lock so that several instances starting
//!   at once migrate once.
//!
//! Timestamps are `BIGINT` milliseconds, as in SQLite, so both backends compare and order
//! identically. Text is ordered with `COLLATE "C"` (byte order, SQLite's default) for the same
//! reason. PostgreSQL text cannot hold NUL characters: they are stored as U+FFFD.

mod connect;
mod days;
mod notify;
mod recompute;
mod rows;
mod schedule;
mod schema;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Pool, PoolError, Runtime};
use futures::{pin_mut, TryStreamExt};
use gridprobe_config::Downtime;
use gridprobe_probes::{ProbeResult, Status};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::notify::{Ack, SentNotification, StateEntry, StatePut};
use crate::recompute::{Recomputation, RecomputationRequest, Step};
use crate::store::{
    CellFilter, CellKey, CellRuns, CellTimeline, HistoryQuery, NewResult, ResultStore, StoreError,
    StoreEvent, StoredResult,
};
use connect::{chain, connect_reason, query_err, redact, Target, Tls};
use rows::{as_params, cell_key, history_sql, pg_opt, pg_text, read_results, RESULT_COLUMNS};
pub use schema::SCHEMA_VERSION;
use schema::{migrate, read_version};

/// Connections kept by a store (the service's writer, readers of the API, retention).
pub const DEFAULT_POOL_SIZE: usize = 8;
/// How long opening a connection may take unless the connection string says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Tries of a batch that deadlocks with another writer before the error is returned.
const WRITE_ATTEMPTS: u32 = 3;
/// Rows deleted per retention statement, so a big purge never holds locks long.
const DELETE_CHUNK: i64 = 10_000;

/// The COPY of a batch; its columns match [`COPY_TYPES`].
const COPY_RESULTS: &str = "COPY results (id, cell_id, started_at_ms, duration_ms, attempt, \
     final, vo, kind, status, summary, details, perfdata, \"trigger\") FROM STDIN (FORMAT binary)";
const COPY_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT4,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

// `>=`: of two results with the same start, the one inserted later wins (as in SQLite).
// The common case, cells that already have a latest result: a plain UPDATE (measured ~1.5x
// faster than the upsert below). It returns the cells it moved; the others are either newer
// already or have no row yet, which UPSERT_LATEST settles.
const UPDATE_LATEST: &str = "UPDATE latest l SET result_id = u.result_id, \
     started_at_ms = u.started_at_ms \
     FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u (cell_id, result_id, started_at_ms) \
     WHERE l.cell_id = u.cell_id AND u.started_at_ms >= l.started_at_ms \
     RETURNING l.cell_id";
const UPSERT_LATEST: &str = "INSERT INTO latest (cell_id, result_id, started_at_ms) \
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[]) \
     ON CONFLICT (cell_id) DO UPDATE SET result_id = excluded.result_id, \
     started_at_ms = excluded.started_at_ms \
     WHERE excluded.started_at_ms >= latest.started_at_ms";

/// The PostgreSQL-backed [`ResultStore`].
///
/// A small pool of connections serves the operations; connections are made on demand in the
/// runtime that uses the store (opening checks the server and the schema on a connection of
/// its own), so a store opened in one runtime may be used from another. Cell ids are cached
/// once committed: a steady stream of results costs no cell lookups.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    location: String,
    target: Arc<Target>,
    cells: Arc<Mutex<HashMap<CellKey, i64>>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Locks the cell cache; it only ever holds committed ids, so a poisoned lock is taken over.
fn lock(cells: &Mutex<HashMap<CellKey, i64>>) -> MutexGuard<'_, HashMap<CellKey, i64>> {
    cells
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PgStore {
    /// Connects to the database named by `conninfo` (a `postgresql://` URL or `key=value`
    /// pairs, as libpq takes them), with `password` if given, and upgrades its schema to
    /// [`SCHEMA_VERSION`]. Fails with a message naming host, port and database when the
    /// server cannot be reached, refuses the credentials, or has no such database.
    pub async fn open(conninfo: &str, password: Option<String>) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config =
            conninfo
                .parse()
                .map_err(|e: tokio_postgres::Error| StoreError::Open {
                    location: redact(conninfo),
                    reason: format!("invalid connection string: {}", chain(&e)),
                })?;
        if let Some(p) = password {
            config.password(p);
        }
        Self::open_config(config, DEFAULT_POOL_SIZE).await
    }

    /// As [`PgStore::open`], from a parsed configuration and with a pool of `pool_size`
    /// connections (tests use this to put each store in a schema of its own via `options`).
    pub async fn open_config(
        mut config: tokio_postgres::Config,
        pool_size: usize,
    ) -> Result<PgStore, StoreError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("gridprobe");
        }
        let target = Target::of(&config);
        let location = target.to_string();
        let open_err = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
        };
        let tls = Tls::for_mode(config.get_ssl_mode()).map_err(open_err)?;
        let mut client = tls
            .connect(&config)
            .await
            .map_err(|e| open_err(connect_reason(&e, &target)))?;
        migrate(&mut client, &location).await?;
        drop(client);
        let pool = Pool::builder(tls.manager(config))
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| open_err(format!("cannot build the connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            location,
            target: Arc::new(target),
            cells: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Where the store lives: `postgresql://user@host:port/db` (never a password).
    pub fn location(&self) -> &str {
        &self.location
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Query(match e {
                PoolError::Backend(e) => connect_reason(&e, &self.target),
                PoolError::Timeout(_) => format!(
                    "no free connection to {} within {} s",
                    self.location,
                    POOL_WAIT.as_secs()
                ),
                other => format!("cannot get a connection to {}: {other}", self.location),
            })
        })
    }

    /// The schema version of the database (for diagnostics).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        read_version(&client).await.map_err(query_err)
    }

    /// Number of stored results (for diagnostics and tests).
    pub async fn count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM results", &[])
            .await
            .map_err(query_err)?;
        let n: i64 = row.try_get(0).map_err(query_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The highest result id stored, if any (`gridprobe migrate-store` resumes after it).
    pub async fn last_result_id(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT max(id) FROM results", &[])
            .await
            .map_err(query_err)?;
        row.try_get(0).map_err(query_err)
    }

    /// Writes results that already have ids (copied from another store), in one transaction,
    /// keeping those ids so that links to results stay valid; `latest` follows as for
    /// [`ResultStore::insert`], and the id sequence is moved past them. Rows must come in the
    /// order they were first inserted (ascending ids) for `latest` to come out the same.
    pub async fn import_results(&self, rows: &[StoredResult]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let input: Vec<(bool, &ProbeResult)> =
            rows.iter().map(|r| (r.is_final, &r.result)).collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        self.write(&input, Some(&ids)).await.map(|_| ())
    }

    /// Writes a batch; on failure the cell cache is dropped, since an id in it may be the
    /// reason (cells deleted behind our back) and it costs one query to rebuild.
    async fn write(
        &self,
        input: &[(bool, &ProbeResult)],
        given_ids: Option<&[i64]>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut client = self.client().await?;
        let mut attempt = 1;
        loop {
            let outcome = self.write_on(&mut client, input, given_ids).await;
            let Err(e) = &outcome else {
                return outcome;
            };
            lock(&self.cells).clear();
            // PostgreSQL aborted the batch to break a deadlock with another writer (they
            // update the same cells' `latest`): the batch is intact, so try again at once.
            let deadlock = matches!(e, StoreError::Query(m) if m.contains("(SQLSTATE 40P01)"));
            if !deadlock || attempt == WRITE_ATTEMPTS {
                return outcome;
            }
            tracing::debug!(
                attempt,
                "result batch deadlocked with another writer; retrying"
            );
            attempt += 1;
        }
    }

    async fn write_on(
        &self,
        client: &mut deadpool_postgres::Object,
        input: &[(bool, &ProbeResult)],
        given_ids: Option<&[i64]>,
    ) -> Result<Vec<i64>, StoreError> {
        let tx = client.transaction().await.map_err(query_err)?;
        let (ids, new_cells) = self.write_in(&tx, input, given_ids).await?;
        tx.commit().await.map_err(query_err)?;
        if !new_cells.is_empty() {
            lock(&self.cells).extend(new_cells);
        }
        Ok(ids)
    }

    /// Writes a batch inside the caller's transaction; returns the ids and the cells to cache
    /// once the transaction has committed.
    async fn write_in(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        input: &[(bool, &ProbeResult)],
        given_ids: Option<&[i64]>,
    ) -> Result<(Vec<i64>, Vec<(CellKey, i64)>), StoreError> {
        let keys: Vec<CellKey> = input.iter().map(|(_, r)| cell_key(r)).collect();
        let (cell_ids, new_cells) = self.resolve_cells(tx, &keys).await?;

        let ids: Vec<i64> = match given_ids {
            Some(ids) => ids.to_vec(),
            None => {
                // Ids up front, in one round trip: then COPY needs no RETURNING, and ids grow
                // in input order (nextval hands them out ascending; sorted to be certain).
                let n = i32::try_from(input.len())
                    .map_err(|_| StoreError::Query("batch too large".into()))?;
                let stmt = tx
                    .prepare_cached("SELECT nextval('results_id_seq') FROM generate_series(1, $1)")
                    .await
                    .map_err(query_err)?;
                let mut ids = Vec::with_capacity(input.len());
                for row in tx.query(&stmt, &[&n]).await.map_err(query_err)? {
                    ids.push(row.try_get::<_, i64>(0).map_err(query_err)?);
                }
                ids.sort_unstable();
                if ids.len() != input.len() {
                    return Err(StoreError::Query(format!(
                        "asked the id sequence for {} ids, got {}",
                        input.len(),
                        ids.len()
                    )));
                }
                ids
            }
        };

        let sink = tx.copy_in(COPY_RESULTS).await.map_err(query_err)?;
        let writer = BinaryCopyInWriter::new(sink, COPY_TYPES);
        pin_mut!(writer);
        for (i, (is_final, r)) in input.iter().enumerate() {
            let perfdata = if r.outcome.perfdata.is_empty() {
                "[]".to_string()
            } else {
                serde_json::to_string(&r.outcome.perfdata)
                    .map_err(|e| StoreError::Query(format!("cannot encode perfdata: {e}")))?
            };
            let duration = i64::try_from(r.duration_ms).unwrap_or(i64::MAX);
            let attempt = i32::try_from(r.attempt).unwrap_or(i32::MAX);
            let (vo, kind) = (pg_text(&r.vo), pg_text(&r.kind));
            let (summary, details) = (pg_text(&r.outcome.summary), pg_text(&r.outcome.details));
            let status = r.outcome.status.name();
            let trigger = r.trigger.name();
            writer
                .as_mut()
                .write(&[
                    &ids[i],
                    &cell_ids[i],
                    &r.started_at_ms,
                    &duration,
                    &attempt,
                    is_final,
                    &vo.as_ref(),
                    &kind.as_ref(),
                    &status,
                    &summary.as_ref(),
                    &details.as_ref(),
                    &perfdata,
                    &trigger,
                ])
                .await
                .map_err(query_err)?;
        }
        writer.finish().await.map_err(query_err)?;

        // The newest final result per cell of this batch; `>=` so a later row of equal start
        // wins, as in UPDATE_LATEST.
        let mut best: HashMap<i64, usize> = HashMap::new();
        for (i, (is_final, r)) in input.iter().enumerate() {
            if !is_final {
                continue;
            }
            let slot = best.entry(cell_ids[i]).or_insert(i);
            if r.started_at_ms >= input[*slot].1.started_at_ms {
                *slot = i;
            }
        }
        if !best.is_empty() {
            let mut latest: Vec<(i64, usize)> = best.into_iter().collect();
            latest.sort_unstable();
            let cells: Vec<i64> = latest.iter().map(|(c, _)| *c).collect();
            let result_ids: Vec<i64> = latest.iter().map(|(_, i)| ids[*i]).collect();
            let starts: Vec<i64> = latest
                .iter()
                .map(|(_, i)| input[*i].1.started_at_ms)
                .collect();
            // Arrays in cell id order, so two writers updating overlapping cells mostly lock
            // them in the same order; a deadlock that still happens is retried by `write`.
            let update = tx.prepare_cached(UPDATE_LATEST).await.map_err(query_err)?;
            let moved: std::collections::HashSet<i64> = tx
                .query(&update, &[&cells, &result_ids, &starts])
                .await
                .map_err(query_err)?
                .iter()
                .map(|row| row.try_get::<_, i64>(0))
                .collect::<Result<_, _>>()
                .map_err(query_err)?;
            if moved.len() < cells.len() {
                let rest: Vec<usize> = (0..cells.len())
                    .filter(|i| !moved.contains(&cells[*i]))
                    .collect();
                let pick = |v: &[i64]| -> Vec<i64> { rest.iter().map(|i| v[*i]).collect() };
                let upsert = tx.prepare_cached(UPSERT_LATEST).await.map_err(query_err)?;
                tx.execute(
                    &upsert,
                    &[&pick(&cells), &pick(&result_ids), &pick(&starts)],
                )
                .await
                .map_err(query_err)?;
            }
        }
        // Late results of a closed day: the day's cached runs are rebuilt on the next report.
        days::invalidate(
            tx,
            input
                .iter()
                .filter(|(is_final, _)| *is_final)
                .map(|(_, r)| r.started_at_ms),
            gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now()),
        )
        .await?;
        if given_ids.is_some() {
            if let Some(max) = ids.iter().max() {
                // Copied ids must never be handed out again: move the sequence past them
                // (never back, in case it is already further).
                tx.execute(
                    "SELECT setval('results_id_seq', GREATEST($1, \
                     (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM results_id_seq)))",
                    &[max],
                )
                .await
                .map_err(query_err)?;
            }
        }
        Ok((ids, new_cells))
    }

    /// The cell id of every key (in order), and the cells that were not cached yet (to cache
    /// once the transaction has committed: an id from a rolled-back insert must not stay).
    async fn resolve_cells(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: &[CellKey],
    ) -> Result<(Vec<i64>, Vec<(CellKey, i64)>), StoreError> {
        let mut missing: Vec<&CellKey> = {
            let cache = lock(&self.cells);
            keys.iter().filter(|k| !cache.contains_key(*k)).collect()
        };
        let mut found: HashMap<&CellKey, i64> = HashMap::new();
        if !missing.is_empty() {
            // Sorted, so concurrent writers creating the same cells take their locks in the
            // same order and cannot deadlock.
            missing.sort_unstable();
            missing.dedup();
            let column =
                |f: fn(&CellKey) -> &str| -> Vec<&str> { missing.iter().map(|k| f(k)).collect() };
            let (sites, hosts) = (column(|k| &k.site), column(|k| &k.hostname));
            let (flavours, metrics) = (column(|k| &k.flavour), column(|k| &k.metric));
            let insert = tx
                .prepare_cached(
                    "INSERT INTO cells (site, hostname, flavour, metric) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(query_err)?;
            tx.execute(&insert, &[&sites, &hosts, &flavours, &metrics])
                .await
                .map_err(query_err)?;
            // A separate statement: its snapshot also sees cells another writer committed
            // while this insert waited on them (ON CONFLICT DO NOTHING skipped those).
            let select = tx
                .prepare_cached(
                    "SELECT c.id, k.i FROM unnest($1::text[], $2::text[], $3::text[], \
                     $4::text[]) WITH ORDINALITY AS k (site, hostname, flavour, metric, i) \
                     JOIN cells c ON c.site = k.site AND c.hostname = k.hostname \
                     AND c.flavour = k.flavour AND c.metric = k.metric",
                )
                .await
                .map_err(query_err)?;
            for row in tx
                .query(&select, &[&sites, &hosts, &flavours, &metrics])
                .await
                .map_err(query_err)?
            {
                let id: i64 = row.try_get(0).map_err(query_err)?;
                let ordinal: i64 = row.try_get(1).map_err(query_err)?;
                let key = usize::try_from(ordinal - 1)
                    .ok()
                    .and_then(|i| missing.get(i))
                    .ok_or_else(|| {
                        StoreError::Query(format!("cell lookup: bad ordinal {ordinal}"))
                    })?;
                found.insert(key, id);
            }
        }
        let mut ids = Vec::with_capacity(keys.len());
        let mut cached: Vec<i64> = Vec::new();
        {
            let cache = lock(&self.cells);
            for k in keys {
                let id = match (cache.get(k), found.get(k)) {
                    (_, Some(id)) => *id,
                    (Some(id), None) => {
                        cached.push(*id);
                        *id
                    }
                    (None, None) => {
                        return Err(StoreError::Query(format!(
                            "cell {}/{}/{}/{} has no id after insertion",
                            k.site, k.hostname, k.flavour, k.metric
                        )))
                    }
                };
                ids.push(id);
            }
        }
        if !cached.is_empty() {
            // What the foreign key would check, once per batch instead of once per row: every
            // cached cell still exists (the tables may have been emptied or recreated behind
            // this process). Fails the batch, whose retry resolves the cells afresh.
            cached.sort_unstable();
            cached.dedup();
            let stmt = tx
                .prepare_cached("SELECT count(*) FROM cells WHERE id = ANY($1)")
                .await
                .map_err(query_err)?;
            let n: i64 = tx
                .query_one(&stmt, &[&cached])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(query_err)?;
            if usize::try_from(n).ok() != Some(cached.len()) {
                return Err(StoreError::Query(format!(
                    "{} of {} cells known to this process are gone from {} (tables emptied or \
                     recreated?); they are looked up again on the next write",
                    cached.len().saturating_sub(usize::try_from(n).unwrap_or(0)),
                    cached.len(),
                    self.location
                )));
            }
        }
        let new_cells = found.into_iter().map(|(k, id)| (k.clone(), id)).collect();
        Ok((ids, new_cells))
    }
}

#[async_trait]
impl ResultStore for PgStore {
    async fn insert(&self, results: &[NewResult]) -> Result<Vec<i64>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let input: Vec<(bool, &ProbeResult)> =
            results.iter().map(|n| (n.is_final, &n.result)).collect();
        self.write(&input, None).await
    }

    async fn insert_once(
        &self,
        results: &[(String, NewResult)],
    ) -> Result<crate::store::InsertedOnce, StoreError> {
        if results.is_empty() {
            return Ok(crate::store::InsertedOnce {
                inserted: 0,
                duplicates: 0,
            });
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query_err)?;
        // Claiming the ids first, in the same transaction as the rows, also drops a repeat
        // inside the batch itself; a rollback releases the claims with the rows.
        let message_ids: Vec<&str> = results.iter().map(|(m, _)| m.as_str()).collect();
        let starts: Vec<i64> = results
            .iter()
            .map(|(_, r)| r.result.started_at_ms)
            .collect();
        let claimed: std::collections::HashSet<String> = tx
            .query(
                "INSERT INTO message_ids (message_id, result_id, started_at_ms) \
                 SELECT m, 0, t FROM unnest($1::text[], $2::bigint[]) AS u(m, t) \
                 ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                &[&message_ids, &starts],
            )
            .await
            .map_err(query_err)?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(query_err)?;
        let mut taken = std::collections::HashSet::new();
        let fresh: Vec<(&str, &NewResult)> = results
            .iter()
            .filter(|(m, _)| claimed.contains(m) && taken.insert(m.as_str()))
            .map(|(m, r)| (m.as_str(), r))
            .collect();
        let input: Vec<(bool, &ProbeResult)> =
            fresh.iter().map(|(_, n)| (n.is_final, &n.result)).collect();
        let (ids, new_cells) = if input.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            self.write_in(&tx, &input, None).await?
        };
        let linked: Vec<&str> = fresh.iter().map(|(m, _)| *m).collect();
        tx.execute(
            "UPDATE message_ids m SET result_id = u.id \
             FROM unnest($1::text[], $2::bigint[]) AS u(mid, id) WHERE m.message_id = u.mid",
            &[&linked, &ids],
        )
        .await
        .map_err(query_err)?;
        tx.commit().await.map_err(query_err)?;
        if !new_cells.is_empty() {
            lock(&self.cells).extend(new_cells);
        }
        Ok(crate::store::InsertedOnce {
            inserted: fresh.len(),
            duplicates: results.len() - fresh.len(),
        })
    }

    async fn latest(&self, filter: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {RESULT_COLUMNS} FROM latest l JOIN cells c ON c.id = l.cell_id \
                 JOIN results r ON r.id = l.result_id \
                 WHERE ($1::text IS NULL OR r.vo = $1) AND ($2::text IS NULL OR c.site = $2) \
                 AND ($3::text IS NULL OR c.flavour = $3) \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric"
            ))
            .await
            .map_err(query_err)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &pg_opt(&filter.vo),
                    &pg_opt(&filter.site),
                    &pg_opt(&filter.flavour),
                ],
            )
            .await
            .map_err(query_err)?;
        read_results(&rows)
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError> {
        let (sql, args) = history_sql(query);
        let client = self.client().await?;
        let stmt = client.prepare_cached(&sql).await.map_err(query_err)?;
        let rows = client
            .query(&stmt, &as_params(&args))
            .await
            .map_err(query_err)?;
        read_results(&rows)
    }

    async fn get(&self, id: i64) -> Result<Option<StoredResult>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {RESULT_COLUMNS} FROM results r JOIN cells c ON c.id = r.cell_id \
                 WHERE r.id = $1"
            ))
            .await
            .map_err(query_err)?;
        let rows = client.query(&stmt, &[&id]).await.map_err(query_err)?;
        Ok(read_results(&rows)?.into_iter().next())
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            // A connection per chunk, each chunk its own transaction: other work interleaves
            // with a long purge and no lock is held for long.
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "DELETE FROM results WHERE id IN (SELECT r.id FROM results r \
                     WHERE r.started_at_ms < $1 AND r.id NOT IN \
                     (SELECT result_id FROM latest) LIMIT $2)",
                )
                .await
                .map_err(query_err)?;
            let n = client
                .execute(&stmt, &[&cutoff_ms, &DELETE_CHUNK])
                .await
                .map_err(query_err)?;
            total += n;
            if n < DELETE_CHUNK as u64 {
                // The message ids of deleted results go too; those of kept rows stay.
                client
                    .execute(
                        "DELETE FROM message_ids WHERE started_at_ms < $1 \
                         AND result_id NOT IN (SELECT result_id FROM latest)",
                        &[&cutoff_ms],
                    )
                    .await
                    .map_err(query_err)?;
                let mut client = client;
                days::forget_before(&mut client, cutoff_ms).await?;
                return Ok(total);
            }
        }
    }

    async fn record_event(&self, event: &StoreEvent) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("INSERT INTO store_events (at_ms, kind, message) VALUES ($1, $2, $3)")
            .await
            .map_err(query_err)?;
        client
            .execute(
                &stmt,
                &[
                    &event.at_ms,
                    &pg_text(&event.kind).as_ref(),
                    &pg_text(&event.message).as_ref(),
                ],
            )
            .await
            .map_err(query_err)?;
        Ok(())
    }

    async fn events(&self, since_ms: i64) -> Result<Vec<StoreEvent>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT at_ms, kind, message FROM store_events WHERE at_ms >= $1 \
                 ORDER BY at_ms, id",
            )
            .await
            .map_err(query_err)?;
        let rows = client.query(&stmt, &[&since_ms]).await.map_err(query_err)?;
        rows.iter()
            .map(|r| {
                Ok(StoreEvent {
                    at_ms: r.try_get(0).map_err(query_err)?,
                    kind: r.try_get(1).map_err(query_err)?,
                    message: r.try_get(2).map_err(query_err)?,
                })
            })
            .collect()
    }

    async fn timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
    ) -> Result<Vec<CellTimeline>, StoreError> {
        let client = self.client().await?;
        let (site, flavour) = (pg_opt(&filter.site), pg_opt(&filter.flavour));
        // Cells wanted (the VO filter does not apply, as in SQLite), each with its last final
        // result before `since`, which may still hold at the start.
        let cells_stmt = client
            .prepare_cached(
                "SELECT c.id, c.site, c.hostname, c.flavour, c.metric, \
                        EXISTS (SELECT 1 FROM latest l WHERE l.cell_id = c.id), \
                        p.started_at_ms, p.status \
                 FROM cells c LEFT JOIN LATERAL ( \
                     SELECT r.started_at_ms, r.status FROM results r \
                     WHERE r.cell_id = c.id AND r.started_at_ms < $1 AND r.final \
                     ORDER BY r.started_at_ms DESC, r.id DESC LIMIT 1) p ON true \
                 WHERE ($2::text IS NULL OR c.site = $2) AND ($3::text IS NULL OR c.flavour = $3) \
                 ORDER BY c.site, c.hostname, c.flavour, c.metric",
            )
            .await
            .map_err(query_err)?;
        let mut out: Vec<CellTimeline> = Vec::new();
        // Cell id → its place in `out`; cells without a latest result join `out` only when a
        // result of theirs turns up in the period (as SQLite lists them).
        let mut slot_of: HashMap<i64, usize> = HashMap::new();
        let mut unlisted: HashMap<i64, CellKey> = HashMap::new();
        for row in client
            .query(&cells_stmt, &[&since_ms, &site, &flavour])
            .await
            .map_err(query_err)?
        {
            let id: i64 = row.try_get(0).map_err(query_err)?;
            let key = CellKey {
                site: row.try_get(1).map_err(query_err)?,
                hostname: row.try_get(2).map_err(query_err)?,
                flavour: row.try_get(3).map_err(query_err)?,
                metric: row.try_get(4).map_err(query_err)?,
            };
            let listed: bool = row.try_get(5).map_err(query_err)?;
            if !listed {
                unlisted.insert(id, key);
                continue;
            }
            let prior_t: Option<i64> = row.try_get(6).map_err(query_err)?;
            let prior_status: Option<&str> = row.try_get(7).map_err(query_err)?;
            let mut points = Vec::new();
            if let (Some(t), Some(st)) = (prior_t, prior_status.and_then(Status::from_name)) {
                points.push((t, st));
            }
            slot_of.insert(id, out.len());
            out.push((key, points));
        }
        if out.is_empty() && unlisted.is_empty() {
            return Ok(out);
        }
        // The period's final results, streamed (a month of a big VO is millions of rows):
        // three narrow columns, no cell strings.
        let stmt = client
            .prepare_cached(
                "SELECT cell_id, started_at_ms, status FROM results \
                 WHERE started_at_ms >= $1 AND started_at_ms < $2 AND final \
                 ORDER BY started_at_ms, id",
            )
            .await
            .map_err(query_err)?;
        let rows = client
            .query_raw(&stmt, [since_ms, until_ms])
            .await
            .map_err(query_err)?;
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await.map_err(query_err)? {
            let cell: i64 = row.try_get(0).map_err(query_err)?;
            let slot = match slot_of.get(&cell) {
                Some(slot) => *slot,
                None => match unlisted.remove(&cell) {
                    Some(key) => {
                        slot_of.insert(cell, out.len());
                        out.push((key, Vec::new()));
                        out.len() - 1
                    }
                    // Filtered out.
                    None => continue,
                },
            };
            let t: i64 = row.try_get(1).map_err(query_err)?;
            let status: &str = row.try_get(2).map_err(query_err)?;
            if let Some(status) = Status::from_name(status) {
                out[slot].1.push((t, status));
            }
        }
        Ok(out)
    }

    async fn add_recomputation(
        &self,
        request: &RecomputationRequest,
        at_ms: i64,
    ) -> Result<Recomputation, StoreError> {
        let mut client = self.client().await?;
        recompute::add(&mut client, request, at_ms).await
    }

    async fn recomputation_steps(
        &self,
        id: i64,
        steps: &[Step],
    ) -> Result<Result<Recomputation, String>, StoreError> {
        let mut client = self.client().await?;
        recompute::steps(&mut client, id, steps).await
    }

    async fn recomputations(&self) -> Result<Vec<Recomputation>, StoreError> {
        let client = self.client().await?;
        recompute::all(&client).await
    }

    async fn add_acks(&self, acks: &[Ack], now_ms: i64) -> Result<usize, StoreError> {
        notify::add_acks(&mut self.client().await?, acks, now_ms).await
    }

    async fn acks(&self, now_ms: i64) -> Result<Vec<Ack>, StoreError> {
        notify::acks(&self.client().await?, now_ms).await
    }

    async fn remove_acks(&self, ids: &[String]) -> Result<usize, StoreError> {
        notify::remove_acks(&self.client().await?, ids).await
    }

    async fn record_notifications(&self, sent: &[SentNotification]) -> Result<usize, StoreError> {
        notify::record(&mut self.client().await?, sent).await
    }

    async fn notifications(
        &self,
        site: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SentNotification>, StoreError> {
        notify::sent(&self.client().await?, site, limit).await
    }

    async fn notification_recorded(&self, id: &str) -> Result<bool, StoreError> {
        notify::recorded(&self.client().await?, id).await
    }

    async fn notify_state(&self, prefix: &str) -> Result<Vec<StateEntry>, StoreError> {
        notify::state(&self.client().await?, prefix).await
    }

    async fn notify_state_of(&self, keys: &[String]) -> Result<Vec<StateEntry>, StoreError> {
        notify::state_of(&self.client().await?, keys).await
    }

    async fn put_notify_state(&self, puts: &[StatePut]) -> Result<Vec<Option<i64>>, StoreError> {
        notify::put_state(&mut self.client().await?, puts).await
    }

    async fn run_timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
        merge_gap_ms: i64,
    ) -> Result<Vec<CellRuns>, StoreError> {
        let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
        let mut client = self.client().await?;
        // Each missing day in a transaction of its own, built once however many instances
        // ask (`days::cache_day`).
        for day in days::missing_days(&client, since_ms, until_ms, now).await? {
            days::cache_day(&mut client, day).await?;
        }
        days::run_timelines(&mut client, since_ms, until_ms, filter, merge_gap_ms, now).await
    }

    async fn replace_downtimes(
        &self,
        source: &str,
        downtimes: &[Downtime],
    ) -> Result<(), StoreError> {
        // SQLite inserts row by row with ON CONFLICT DO UPDATE of start and end: of duplicate
        // (id, host, flavour) rows the first one's other fields stay and the last one's times
        // win. Merged here so one multi-row INSERT does the same (NULL host or flavour never
        // conflicts, as NULLs are distinct).
        let source = pg_text(source).into_owned();
        let mut merged: Vec<Downtime> = Vec::with_capacity(downtimes.len());
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        for d in downtimes {
            if let (Some(h), Some(f)) = (&d.hostname, &d.flavour) {
                let key = (d.id.clone(), h.clone(), f.clone());
                if let Some(&i) = seen.get(&key) {
                    merged[i].start_ms = d.start_ms;
                    merged[i].end_ms = d.end_ms;
                    continue;
                }
                seen.insert(key, merged.len());
            }
            merged.push(d.clone());
        }
        let ids: Vec<String> = merged.iter().map(|d| pg_text(&d.id).into_owned()).collect();
        let sites: Vec<Option<String>> = merged.iter().map(|d| pg_opt(&d.site)).collect();
        let hosts: Vec<Option<String>> = merged.iter().map(|d| pg_opt(&d.hostname)).collect();
        let flavours: Vec<Option<String>> = merged.iter().map(|d| pg_opt(&d.flavour)).collect();
        let starts: Vec<i64> = merged.iter().map(|d| d.start_ms).collect();
        let ends: Vec<i64> = merged.iter().map(|d| d.end_ms).collect();
        let scheduled: Vec<bool> = merged.iter().map(|d| d.scheduled).collect();
        let outage: Vec<bool> = merged.iter().map(|d| d.outage).collect();
        let reasons: Vec<String> = merged
            .iter()
            .map(|d| pg_text(&d.reason).into_owned())
            .collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(query_err)?;
        tx.execute("DELETE FROM downtimes WHERE source = $1", &[&source])
            .await
            .map_err(query_err)?;
        if !merged.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO downtimes (source, id, site, hostname, flavour, start_ms, \
                     end_ms, scheduled, outage, reason) \
                     SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::int8[], $7::int8[], $8::bool[], $9::bool[], $10::text[])",
                )
                .await
                .map_err(query_err)?;
            tx.execute(
                &stmt,
                &[
                    &source, &ids, &sites, &hosts, &flavours, &starts, &ends, &scheduled, &outage,
                    &reasons,
                ],
            )
            .await
            .map_err(query_err)?;
        }
        tx.commit().await.map_err(query_err)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        // A standby, or a database set read-only, answers reads but refuses every write.
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                &[],
            )
            .await
            .map_err(query_err)?;
        let recovery: bool = row.try_get(0).map_err(query_err)?;
        let read_only: String = row.try_get(1).map_err(query_err)?;
        if recovery || read_only == "on" {
            return Err(StoreError::Query(format!(
                "{} is read-only (a standby, or default_transaction_read_only)",
                self.location
            )));
        }
        Ok(())
    }

    async fn downtimes(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Downtime>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT source, id, site, hostname, flavour, start_ms, end_ms, scheduled, \
                 outage, reason FROM downtimes WHERE end_ms > $1 AND start_ms < $2 \
                 ORDER BY start_ms, id",
            )
            .await
            .map_err(query_err)?;
        let rows = client
            .query(&stmt, &[&since_ms, &until_ms])
            .await
            .map_err(query_err)?;
        rows.iter()
            .map(|r| {
                Ok(Downtime {
                    source: r.try_get(0).map_err(query_err)?,
                    id: r.try_get(1).map_err(query_err)?,
                    site: r.try_get(2).map_err(query_err)?,
                    hostname: r.try_get(3).map_err(query_err)?,
                    flavour: r.try_get(4).map_err(query_err)?,
                    start_ms: r.try_get(5).map_err(query_err)?,
                    end_ms: r.try_get(6).map_err(query_err)?,
                    scheduled: r.try_get(7).map_err(query_err)?,
                    outage: r.try_get(8).map_err(query_err)?,
                    reason: r.try_get(9).map_err(query_err)?,
                })
            })
            .collect()
    }
}
