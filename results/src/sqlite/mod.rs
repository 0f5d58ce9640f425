//! The embedded SQLite result store: one file, WAL mode, schema versioned by `PRAGMA
//! user_version` and upgraded in place.
//!
//! The SQL is kept portable (plain types, `ON CONFLICT ... DO UPDATE`) so the PostgreSQL
//! backend can follow the same schema behind the same trait.

mod days;
mod hours;
mod insert;
mod notify;
mod recompute;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gridprobe_config::Downtime;
use rusqlite::Connection;

use crate::notify::{Ack, SentNotification, StateEntry, StatePut};
use crate::recompute::{Recomputation, RecomputationRequest, Step};
use crate::store::{
    CellFilter, CellRuns, CellTimeline, HistoryQuery, InsertedOnce, LatestChanges, NewResult,
    ResultStore, StoreError, StoreEvent, StoredResult,
};
use insert::{lock, CellCache, Encoded};
use rows::query_err;
pub use schema::SCHEMA_VERSION;

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
        schema::prepare(&mut conn, &location, wal)?;
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

#[async_trait]
impl ResultStore for SqliteStore {
    async fn insert(&self, results: &[NewResult]) -> Result<Vec<i64>, StoreError> {
        insert::insert(&self.conn, &self.cells, results).await
    }

    async fn latest(&self, filter: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
        let filter = filter.clone();
        self.with_conn(move |conn| rows::latest(conn, &filter))
            .await
    }

    async fn latest_changes(&self, mark: i64) -> Result<LatestChanges, StoreError> {
        self.with_conn(move |conn| rows::latest_changes(conn, mark))
            .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError> {
        let query = query.clone();
        self.with_conn(move |conn| rows::history(conn, &query))
            .await
    }

    async fn get(&self, id: i64) -> Result<Option<StoredResult>, StoreError> {
        self.with_conn(move |conn| rows::get(conn, id)).await
    }

    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        insert::delete_before(&self.conn, cutoff_ms).await
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
        self.with_conn(move |conn| insert::insert_once_all(conn, &cells, &message_ids, &batch))
            .await
    }

    async fn record_event(&self, event: &StoreEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.with_conn(move |conn| insert::record_event(conn, &event))
            .await
    }

    async fn timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
    ) -> Result<Vec<CellTimeline>, StoreError> {
        let filter = filter.clone();
        self.with_conn(move |conn| rows::timelines(conn, since_ms, until_ms, &filter))
            .await
    }

    async fn run_timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
        merge_gap_ms: i64,
    ) -> Result<Vec<CellRuns>, StoreError> {
        let filter = filter.clone();
        let now = gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now());
        // Days to build are built one per lock, so the writer (same connection) waits for one
        // day's scan at most, not for a month's.
        let missing = self
            .with_conn(move |conn| days::missing_days(conn, since_ms, until_ms, now))
            .await?;
        for day in missing {
            self.with_conn(move |conn| days::cache_day(conn, day))
                .await?;
        }
        self.with_conn(move |conn| {
            days::run_timelines(conn, since_ms, until_ms, &filter, merge_gap_ms, now)
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
        self.with_conn(move |conn| insert::replace_downtimes(conn, &source, &downtimes))
            .await
    }

    async fn downtimes(&self, since_ms: i64, until_ms: i64) -> Result<Vec<Downtime>, StoreError> {
        self.with_conn(move |conn| rows::downtimes(conn, since_ms, until_ms))
            .await
    }

    async fn add_recomputation(
        &self,
        request: &RecomputationRequest,
        at_ms: i64,
    ) -> Result<Recomputation, StoreError> {
        let request = request.clone();
        self.with_conn(move |conn| recompute::add(conn, &request, at_ms))
            .await
    }

    async fn recomputation_steps(
        &self,
        id: i64,
        steps: &[Step],
    ) -> Result<Result<Recomputation, String>, StoreError> {
        let steps = steps.to_vec();
        self.with_conn(move |conn| recompute::steps(conn, id, &steps))
            .await
    }

    async fn recomputations(&self) -> Result<Vec<Recomputation>, StoreError> {
        self.with_conn(|conn| recompute::all(conn)).await
    }

    async fn add_acks(&self, acks: &[Ack], now_ms: i64) -> Result<usize, StoreError> {
        let acks = acks.to_vec();
        self.with_conn(move |conn| notify::add_acks(conn, &acks, now_ms))
            .await
    }

    async fn acks(&self, now_ms: i64) -> Result<Vec<Ack>, StoreError> {
        self.with_conn(move |conn| notify::acks(conn, now_ms)).await
    }

    async fn remove_acks(&self, ids: &[String]) -> Result<usize, StoreError> {
        let ids = ids.to_vec();
        self.with_conn(move |conn| notify::remove_acks(conn, &ids))
            .await
    }

    async fn record_notifications(&self, sent: &[SentNotification]) -> Result<usize, StoreError> {
        let sent = sent.to_vec();
        self.with_conn(move |conn| notify::record(conn, &sent))
            .await
    }

    async fn notifications(
        &self,
        site: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SentNotification>, StoreError> {
        let site = site.map(str::to_string);
        self.with_conn(move |conn| notify::sent(conn, site.as_deref(), limit))
            .await
    }

    async fn notification_recorded(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.with_conn(move |conn| notify::recorded(conn, &id))
            .await
    }

    async fn notify_state(&self, prefix: &str) -> Result<Vec<StateEntry>, StoreError> {
        let prefix = prefix.to_string();
        self.with_conn(move |conn| notify::state(conn, &prefix))
            .await
    }

    async fn notify_state_of(&self, keys: &[String]) -> Result<Vec<StateEntry>, StoreError> {
        let keys = keys.to_vec();
        self.with_conn(move |conn| notify::state_of(conn, &keys))
            .await
    }

    async fn put_notify_state(&self, puts: &[StatePut]) -> Result<Vec<Option<i64>>, StoreError> {
        let puts = puts.to_vec();
        self.with_conn(move |conn| notify::put_state(conn, &puts))
            .await
    }

    async fn events(&self, since_ms: i64) -> Result<Vec<StoreEvent>, StoreError> {
        self.with_conn(move |conn| rows::events(conn, since_ms))
            .await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            // The write lock, as a batch of results takes it; waiting at most a second for
            // another writer instead of the usual busy timeout.
            conn.busy_timeout(std::time::Duration::from_secs(1))
                .map_err(query_err)?;
            let taken = conn
                .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(|e| StoreError::Query(format!("the store cannot be written: {e}")));
            if taken.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            conn.busy_timeout(schema::BUSY_TIMEOUT).map_err(query_err)?;
            taken
        })
        .await
    }
}

impl SqliteStore {
    /// The schema version of the open file (for diagnostics).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|conn| schema::user_version(conn).map_err(query_err))
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
        self.with_conn(move |conn| rows::results_after(conn, after_id, limit))
            .await
    }

    /// Number of stored results (for diagnostics and tests).
    pub async fn count(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| rows::count(conn)).await
    }
}
