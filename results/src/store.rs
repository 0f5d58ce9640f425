//! The `ResultStore` trait: what the rest of gridprobe may ask of a results database. It holds
//! no SQLite types, so the PostgreSQL backend can implement it too.

use async_trait::async_trait;
use gridprobe_probes::ProbeResult;
use serde::{Deserialize, Serialize};

use crate::notify::{Ack, SentNotification, StateEntry, StatePut};
use crate::recompute::{advance, Recomputation, RecomputationRequest, Step};

/// Identity of one cell of the matrix: a metric on a service instance of a site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellKey {
    /// Site name.
    pub site: String,
    /// Service host name.
    pub hostname: String,
    /// Service flavour.
    pub flavour: String,
    /// Full metric name.
    pub metric: String,
}

impl CellKey {
    /// The cell a result belongs to.
    pub fn of(r: &ProbeResult) -> Self {
        CellKey {
            site: r.site.clone(),
            hostname: r.hostname.clone(),
            flavour: r.flavour.clone(),
            metric: r.metric.clone(),
        }
    }
}

/// A result as stored, with its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    /// Store-assigned id, increasing with insertion.
    pub id: i64,
    /// Whether this attempt is the hard (recorded) state; earlier retry attempts are not.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The result.
    #[serde(flatten)]
    pub result: ProbeResult,
}

/// A result to write, with whether it is the hard state of its run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResult {
    /// The result.
    pub result: ProbeResult,
    /// True for the last attempt of a run (the hard state).
    pub is_final: bool,
}

/// One cell's latest final result as the matrix shows it: no details or perfdata.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestCell {
    /// The cell.
    pub key: CellKey,
    /// VO of the result.
    pub vo: String,
    /// Store id of the result.
    pub id: i64,
    /// When it started (ms since epoch).
    pub started_at_ms: i64,
    /// Its status.
    pub status: gridprobe_probes::Status,
    /// Its summary.
    pub summary: String,
}

/// What [`ResultStore::latest_changes`] answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatestChanges {
    /// Cells whose latest final result changed after the mark asked for (every cell when
    /// `complete`).
    pub cells: Vec<LatestCell>,
    /// Whether `cells` is every cell's latest (replace what was known) rather than changes.
    pub complete: bool,
    /// The mark to ask with next time.
    pub mark: i64,
}

/// Which latest cells to read.
#[derive(Debug, Clone, Default)]
pub struct CellFilter {
    /// Only this VO.
    pub vo: Option<String>,
    /// Only this site.
    pub site: Option<String>,
    /// Only this flavour.
    pub flavour: Option<String>,
}

/// A history query for one cell or a set of cells, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Site (required by the CLI, optional here).
    pub site: Option<String>,
    /// Service host name.
    pub hostname: Option<String>,
    /// Full metric name.
    pub metric: Option<String>,
    /// Results started at or after (ms since epoch).
    pub since_ms: Option<i64>,
    /// Results started before (ms since epoch).
    pub until_ms: Option<i64>,
    /// Include non-final retry attempts.
    pub include_attempts: bool,
    /// Only results that are not OK (for failure reasons).
    pub non_ok_only: bool,
    /// Only results with this status.
    pub status: Option<gridprobe_probes::Status>,
    /// Paging: only results older than this `(started_at_ms, id)` (the last row of the previous
    /// page), in the history's newest-first order.
    pub before: Option<(i64, i64)>,
    /// At most this many; 0 means [`DEFAULT_HISTORY_LIMIT`].
    pub limit: usize,
}

/// History rows returned when a [`HistoryQuery`] sets no limit (every backend).
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// One cell's hard results `(start ms, status)` in time order, for availability.
pub type CellTimeline = (CellKey, Vec<(i64, gridprobe_probes::Status)>);

/// Consecutive final results of one cell with the same status: the first started at `start`,
/// the last at `last`, and no two consecutive ones further apart than the merge gap the runs
/// were asked for. For availability such a run is exactly equivalent to its results whenever
/// the metric's freshness window is at least that gap (each result holds until the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRun {
    /// Start of the run's first result (ms).
    pub start: i64,
    /// Start of the run's last result (ms).
    pub last: i64,
    /// Their status.
    pub status: gridprobe_probes::Status,
}

/// A cell's final results in the compact form of [`StatusRun`]s, in time order.
pub type CellRuns = (CellKey, Vec<StatusRun>);

/// Folds time-ordered `(start, status)` results into runs, starting a new run at a status
/// change or at a gap longer than `merge_gap_ms`.
pub fn runs_of(points: &[(i64, gridprobe_probes::Status)], merge_gap_ms: i64) -> Vec<StatusRun> {
    let mut runs: Vec<StatusRun> = Vec::new();
    for &(t, status) in points {
        match runs.last_mut() {
            Some(r) if r.status == status && t - r.last <= merge_gap_ms => r.last = t,
            _ => runs.push(StatusRun {
                start: t,
                last: t,
                status,
            }),
        }
    }
    runs
}

/// Something a store records about itself (e.g. results dropped while it was unavailable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreEvent {
    /// When (ms since epoch).
    pub at_ms: i64,
    /// Short kind, e.g. `results_dropped`.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open result store {location}: {reason}")]
    Open {
        /// Path or URL.
        location: String,
        /// Why.
        reason: String,
    },
    /// The database file belongs to a newer gridprobe.
    #[error("result store {location} has schema version {found}, newer than this gridprobe supports ({supported}); upgrade gridprobe")]
    TooNew {
        /// Path or URL.
        location: String,
        /// Version in the file.
        found: i64,
        /// Newest version known here.
        supported: i64,
    },
    /// A query failed (locked database, full disk, ...).
    #[error("result store error: {0}")]
    Query(String),
    /// This backend does not implement the operation (yet).
    #[error("this result store does not support {0}")]
    Unsupported(String),
}

/// What [`ResultStore::insert_once`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertedOnce {
    /// Results written.
    pub inserted: usize,
    /// Results skipped because their message id was already stored.
    pub duplicates: usize,
}

/// The results database.
#[async_trait]
pub trait ResultStore: Send + Sync + std::fmt::Debug {
    /// Writes results in one transaction; returns their ids in order.
    async fn insert(&self, results: &[NewResult]) -> Result<Vec<i64>, StoreError>;
    /// The latest hard result of every cell matching the filter.
    async fn latest(&self, filter: &CellFilter) -> Result<Vec<StoredResult>, StoreError>;
    /// The cells whose latest final result changed since `mark` (0: every cell), for keeping a
    /// copy of the latest states (the dashboard's matrix) without reading them all per page.
    /// The default answers every cell (`complete`), which is always exact; a backend that can
    /// tell exactly what changed (SQLite: ids grow in commit order) answers only that.
    async fn latest_changes(&self, mark: i64) -> Result<LatestChanges, StoreError> {
        let _ = mark;
        let cells = self
            .latest(&CellFilter::default())
            .await?
            .into_iter()
            .map(|r| LatestCell {
                key: CellKey::of(&r.result),
                id: r.id,
                started_at_ms: r.result.started_at_ms,
                status: r.result.outcome.status,
                vo: r.result.vo,
                summary: r.result.outcome.summary,
            })
            .collect();
        Ok(LatestChanges {
            cells,
            complete: true,
            mark: 0,
        })
    }
    /// History, newest first.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError>;
    /// One result by id.
    async fn get(&self, id: i64) -> Result<Option<StoredResult>, StoreError>;
    /// Deletes results started before the cutoff (keeping each cell's latest); returns how many.
    async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError>;
    /// Records an event about the store itself.
    async fn record_event(&self, event: &StoreEvent) -> Result<(), StoreError>;
    /// Events since a time, oldest first.
    async fn events(&self, since_ms: i64) -> Result<Vec<StoreEvent>, StoreError>;
    /// Final results `(start, status)` per cell started in `[since, until)`, each cell led by
    /// its last final result before `since`; for availability.
    async fn timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
    ) -> Result<Vec<CellTimeline>, StoreError>;
    /// As [`ResultStore::timelines`], folded into [`StatusRun`]s with gaps of at most
    /// `merge_gap_ms` inside a run (pass the smallest freshness window of the cells asked
    /// for). A month of a large VO is then a few runs per cell instead of thousands of
    /// results; backends may answer it from precomputed days.
    async fn run_timelines(
        &self,
        since_ms: i64,
        until_ms: i64,
        filter: &CellFilter,
        merge_gap_ms: i64,
    ) -> Result<Vec<CellRuns>, StoreError> {
        Ok(self
            .timelines(since_ms, until_ms, filter)
            .await?
            .into_iter()
            .map(|(key, points)| {
                let runs = runs_of(&points, merge_gap_ms);
                (key, runs)
            })
            .collect())
    }
    /// Whether results can be written now, for `/healthz`: takes the write lock or asks the
    /// database, and writes nothing. A backend without such a check answers `Ok`.
    async fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Replaces every downtime of one source (e.g. `gocdb`) at once: all or nothing.
    async fn replace_downtimes(
        &self,
        source: &str,
        downtimes: &[gridprobe_config::Downtime],
    ) -> Result<(), StoreError>;
    /// Stored downtimes overlapping `[since, until)`.
    async fn downtimes(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<gridprobe_config::Downtime>, StoreError>;
    /// Writes results in one transaction, each keyed by its message id
    /// ([`crate::message::message_id`]); a result whose id is already stored (or repeated in
    /// the batch) is skipped, so replaying a spool or a broker redelivery never stores a result
    /// twice. Backends remember ids at least as long as the results themselves (retention).
    ///
    /// The default implementation refuses ([`StoreError::Unsupported`]); the batching writer
    /// then falls back to [`ResultStore::insert`] (at-least-once instead of exactly-once).
    async fn insert_once(
        &self,
        results: &[(String, NewResult)],
    ) -> Result<InsertedOnce, StoreError> {
        let _ = results;
        Err(StoreError::Unsupported(
            "insert_once (deduplication by message id)".into(),
        ))
    }
    /// Stores a recomputation request (checked beforehand with `recompute::validate`) with
    /// its `requested` step by its requester at `at_ms`; returns it with its id.
    async fn add_recomputation(
        &self,
        request: &RecomputationRequest,
        at_ms: i64,
    ) -> Result<Recomputation, StoreError> {
        let _ = (request, at_ms);
        Err(StoreError::Unsupported("recomputations".into()))
    }
    /// Appends steps to a recomputation's history in one transaction, each checked against
    /// the life cycle (`recompute::advance`). `Ok(Err(reason))` when the id is unknown or a
    /// step is not allowed (then nothing is written). Steps are never deleted.
    async fn recomputation_steps(
        &self,
        id: i64,
        steps: &[Step],
    ) -> Result<Result<Recomputation, String>, StoreError> {
        let _ = (id, steps);
        Err(StoreError::Unsupported("recomputations".into()))
    }
    /// Every recomputation with its history, oldest first. A backend without them has none.
    async fn recomputations(&self) -> Result<Vec<Recomputation>, StoreError> {
        Ok(Vec::new())
    }
    /// Stores acknowledgements (an id already stored is kept as it is) and forgets those
    /// expired at `now_ms`; returns how many were new.
    async fn add_acks(&self, acks: &[Ack], now_ms: i64) -> Result<usize, StoreError> {
        let _ = (acks, now_ms);
        Err(StoreError::Unsupported("acknowledgements".into()))
    }
    /// The acknowledgements in force at `now_ms`, oldest first (ties by id).
    async fn acks(&self, now_ms: i64) -> Result<Vec<Ack>, StoreError> {
        let _ = now_ms;
        Err(StoreError::Unsupported("acknowledgements".into()))
    }
    /// Ends acknowledgements by id; returns how many there were.
    async fn remove_acks(&self, ids: &[String]) -> Result<usize, StoreError> {
        let _ = ids;
        Err(StoreError::Unsupported("acknowledgements".into()))
    }
    /// Adds sent notifications to the history, each id once (a repeated one is skipped);
    /// returns how many were new.
    async fn record_notifications(&self, sent: &[SentNotification]) -> Result<usize, StoreError> {
        let _ = sent;
        Err(StoreError::Unsupported("notification history".into()))
    }
    /// The newest `limit` (at most [`crate::notify::MAX_NOTIFICATIONS`]) sent notifications,
    /// optionally of one site, newest first (by `sent_ms`, then id).
    async fn notifications(
        &self,
        site: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SentNotification>, StoreError> {
        let _ = (site, limit);
        Err(StoreError::Unsupported("notification history".into()))
    }
    /// Whether the history holds a notification with this id (then it was sent).
    async fn notification_recorded(&self, id: &str) -> Result<bool, StoreError> {
        let _ = id;
        Err(StoreError::Unsupported("notification history".into()))
    }
    /// The notification engine's entries whose key starts with `prefix`, in key order.
    async fn notify_state(&self, prefix: &str) -> Result<Vec<StateEntry>, StoreError> {
        let _ = prefix;
        Err(StoreError::Unsupported("notification state".into()))
    }
    /// The notification engine's entries of these keys (absent ones are left out).
    async fn notify_state_of(&self, keys: &[String]) -> Result<Vec<StateEntry>, StoreError> {
        let _ = keys;
        Err(StoreError::Unsupported("notification state".into()))
    }
    /// Compare-and-set writes in one transaction: for each put in order, its new version, or
    /// `None` when the entry was not at the expected version (then it is left unchanged).
    async fn put_notify_state(&self, puts: &[StatePut]) -> Result<Vec<Option<i64>>, StoreError> {
        let _ = puts;
        Err(StoreError::Unsupported("notification state".into()))
    }
}

/// Checks steps against a recomputation's history (`recompute::advance`), for the backends:
/// the steps to append, or why not.
pub fn check_steps(id: i64, history: &[Step], steps: &[Step]) -> Result<(), String> {
    let mut state = None;
    for s in history {
        state = Some(advance(state, s.step)?);
    }
    if state.is_none() {
        return Err(format!("no recomputation {id}"));
    }
    for s in steps {
        state = Some(
            advance(state, s.step)
                .map_err(|e| format!("recomputation {id} cannot be {}: {e}", s.step.name()))?,
        );
    }
    Ok(())
}
