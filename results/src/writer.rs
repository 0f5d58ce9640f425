//! The batching writer: probes hand results to a [`WriterHandle`] that never blocks, and one
//! task writes them to the [`ResultStore`] in batches. While the store is unavailable the
//! results wait in memory (up to [`WriterConfig::max_pending`]) and the writes are retried with
//! backoff; whatever has to be dropped is counted, logged and recorded as a store event once the
//! store is back, so nothing is lost silently.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gridprobe_probes::outcome::unix_ms;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use crate::store::{NewResult, ResultStore, StoreEvent};

/// Event kind recorded when results had to be dropped.
pub const RESULTS_DROPPED: &str = "results_dropped";

/// Tuning of the batching writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most results written in one `insert` call.
    pub batch_size: usize,
    /// Most results held in memory while the store is unavailable; newer ones are dropped.
    pub max_pending: usize,
    /// First retry delay after a failed write.
    pub retry_min: Duration,
    /// Longest retry delay (the delay doubles up to this).
    pub retry_max: Duration,
    /// How long to keep retrying pending results once every handle is dropped.
    pub flush_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_size: 1000,
            max_pending: 100_000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of the writer, shared with every handle.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Results written to the store.
    pub written: AtomicU64,
    /// Failed `insert` calls (each retried).
    pub write_errors: AtomicU64,
    /// Results dropped: beyond `max_pending`, unwritten at shutdown, or sent after the writer
    /// ended.
    pub dropped: AtomicU64,
    /// Results sent but neither written nor dropped yet.
    pub pending: AtomicU64,
}

/// The sending side of the writer; cheap to clone. The writer flushes and ends once every
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<NewResult>,
    stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Queues a result for writing. Never blocks; if the writer task is gone the result is
    /// counted as dropped and logged.
    pub fn send(&self, r: NewResult) {
        // Counted before sending so the writer's decrement can never run first.
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(lost)) = self.tx.send(r) {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Every result would repeat the same line: log the 1st, 2nd, 4th, 8th, ...
            if total.is_power_of_two() {
                tracing::error!(
                    site = %lost.result.site,
                    hostname = %lost.result.hostname,
                    metric = %lost.result.metric,
                    dropped_total = total,
                    "result writer is not running; result dropped"
                );
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }
}

/// Starts the writer task on the current tokio runtime.
pub fn spawn_writer(
    store: Arc<dyn ResultStore>,
    cfg: WriterConfig,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(WriterStats::default());
    let intake = Intake {
        rx,
        open: true,
        closed_at: None,
        pending: VecDeque::new(),
        in_flight: 0,
        max_pending: cfg.max_pending.max(1),
        stats: Arc::clone(&stats),
        drops: None,
        last_error: None,
    };
    let task = tokio::spawn(run(store, cfg, intake));
    (WriterHandle { tx, stats }, task)
}

/// Results dropped since the store last accepted a write.
#[derive(Debug)]
struct DropWindow {
    count: u64,
    first_ms: i64,
    last_ms: i64,
    reason: String,
}

impl DropWindow {
    /// Folds drops that happened after `self` into it.
    fn merge(mut self, later: Option<DropWindow>) -> DropWindow {
        if let Some(later) = later {
            self.count += later.count;
            self.last_ms = later.last_ms;
            self.reason = later.reason;
        }
        self
    }

    fn event(&self) -> StoreEvent {
        StoreEvent {
            at_ms: unix_ms(SystemTime::now()),
            kind: RESULTS_DROPPED.to_string(),
            message: format!(
                "{} results dropped between {} and {}: result store unavailable ({})",
                self.count,
                format_utc_ms(self.first_ms),
                format_utc_ms(self.last_ms),
                self.reason
            ),
        }
    }
}

/// The receiving side and the in-memory buffer; kept apart from the store so a write can be in
/// progress while new results are accepted.
struct Intake {
    rx: mpsc::UnboundedReceiver<NewResult>,
    /// False once every handle is dropped and the channel is empty.
    open: bool,
    /// When the channel closed (the flush deadline counts from here).
    closed_at: Option<Instant>,
    pending: VecDeque<NewResult>,
    /// Results taken out of `pending` for the write in progress.
    in_flight: usize,
    max_pending: usize,
    stats: Arc<WriterStats>,
    drops: Option<DropWindow>,
    last_error: Option<String>,
}

impl Intake {
    fn accept(&mut self, r: NewResult) {
        if self.pending.len() + self.in_flight < self.max_pending {
            self.pending.push_back(r);
            return;
        }
        // Full: the newest result is the one dropped, so the buffer keeps the oldest history.
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let now = unix_ms(SystemTime::now());
        let reason = self
            .last_error
            .clone()
            .unwrap_or_else(|| "writes not keeping up".to_string());
        match &mut self.drops {
            Some(w) => {
                w.count += 1;
                w.last_ms = now;
                w.reason = reason;
            }
            None => {
                tracing::error!(
                    max_pending = self.max_pending,
                    error = %reason,
                    "result store unavailable and the pending buffer is full: dropping new \
                     results until it accepts writes again"
                );
                self.drops = Some(DropWindow {
                    count: 1,
                    first_ms: now,
                    last_ms: now,
                    reason,
                });
            }
        }
    }

    fn on_message(&mut self, msg: Option<NewResult>) {
        match msg {
            Some(r) => self.accept(r),
            None => {
                self.open = false;
                self.closed_at = Some(Instant::now());
            }
        }
    }

    /// Moves already queued results into the buffer until it holds `n`.
    fn fill(&mut self, n: usize) {
        while self.open && self.pending.len() < n {
            match self.rx.try_recv() {
                Ok(r) => self.accept(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.on_message(None),
            }
        }
    }

    /// Drives `fut` to completion while still accepting results, so the channel never backs up
    /// behind a slow write or a retry delay (and `max_pending` is enforced meanwhile).
    async fn while_receiving<F: Future>(&mut self, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                msg = self.rx.recv(), if self.open => self.on_message(msg),
            }
        }
    }

    /// Waits until `wake` while accepting results; if the channel closes meanwhile, the wait
    /// ends no later than the flush deadline instead.
    async fn idle_until(&mut self, wake: Instant, flush_timeout: Duration) {
        loop {
            let until = match self.closed_at {
                Some(closed) => wake.min(closed + flush_timeout),
                None => wake,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                msg = self.rx.recv(), if self.open => self.on_message(msg),
            }
        }
    }
}

async fn run(store: Arc<dyn ResultStore>, cfg: WriterConfig, mut intake: Intake) {
    let batch_size = cfg.batch_size.max(1);
    let stats = Arc::clone(&intake.stats);
    let mut delay = cfg.retry_min;
    loop {
        if intake.pending.is_empty() {
            if !intake.open {
                break;
            }
            let msg = intake.rx.recv().await;
            intake.on_message(msg);
            continue;
        }
        intake.fill(batch_size);
        let n = batch_size.min(intake.pending.len());
        let batch: Vec<NewResult> = intake.pending.drain(..n).collect();
        intake.in_flight = n;
        let result = intake.while_receiving(store.insert(&batch)).await;
        intake.in_flight = 0;
        match result {
            Ok(_) => {
                stats.written.fetch_add(n as u64, Ordering::Relaxed);
                stats.pending.fetch_sub(n as u64, Ordering::Relaxed);
                delay = cfg.retry_min;
                intake.last_error = None;
                if let Some(window) = intake.drops.take() {
                    report_drops(&*store, &mut intake, window).await;
                }
            }
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    error = %e,
                    batch = n,
                    pending = intake.pending.len() + n,
                    retry_in = ?delay,
                    "cannot write results; keeping them in memory and retrying"
                );
                intake.last_error = Some(e.to_string());
                // Back at the front, in their order, so results are written oldest first.
                for r in batch.into_iter().rev() {
                    intake.pending.push_front(r);
                }
                if intake
                    .closed_at
                    .is_some_and(|closed| Instant::now() >= closed + cfg.flush_timeout)
                {
                    break;
                }
                intake
                    .idle_until(Instant::now() + delay, cfg.flush_timeout)
                    .await;
                delay = (delay * 2).min(cfg.retry_max).max(cfg.retry_min);
            }
        }
    }

    let lost = intake.pending.len() as u64;
    if lost > 0 {
        stats.pending.fetch_sub(lost, Ordering::Relaxed);
        stats.dropped.fetch_add(lost, Ordering::Relaxed);
        tracing::error!(
            lost,
            flush_timeout = ?cfg.flush_timeout,
            error = intake.last_error.as_deref().unwrap_or(""),
            "result writer stopping: {lost} results could not be written and are lost"
        );
    }
    if let Some(window) = intake.drops.take() {
        // A last chance to leave a trace in the store itself.
        report_drops(&*store, &mut intake, window).await;
        if let Some(w) = &intake.drops {
            tracing::error!(
                dropped = w.count,
                "result writer stopping: the drop of {} results could not be recorded in the \
                 result store",
                w.count
            );
        }
    }
}

/// Records a `results_dropped` event; on failure the window is kept for the next success.
async fn report_drops(store: &dyn ResultStore, intake: &mut Intake, window: DropWindow) {
    let event = window.event();
    match intake.while_receiving(store.record_event(&event)).await {
        Ok(()) => tracing::warn!(dropped = window.count, "{}", event.message),
        Err(e) => {
            tracing::error!(error = %e, "cannot record dropped results; will retry");
            let later = intake.drops.take();
            intake.drops = Some(window.merge(later));
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch (UTC).
fn format_utc_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32};

    use async_trait::async_trait;
    use gridprobe_probes::{Outcome, ProbeResult, Trigger};

    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::store::{CellFilter, HistoryQuery, StoreError, StoredResult};

    /// An in-memory store that fails on demand and counts insert calls.
    #[derive(Debug)]
    struct FlakyStore {
        inner: SqliteStore,
        fail_next: AtomicU32,
        down: AtomicBool,
        inserts: AtomicU32,
    }

    impl FlakyStore {
        fn new() -> Arc<FlakyStore> {
            Arc::new(FlakyStore {
                inner: SqliteStore::open_in_memory().expect("in-memory store"),
                fail_next: AtomicU32::new(0),
                down: AtomicBool::new(false),
                inserts: AtomicU32::new(0),
            })
        }

        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Query("database is locked (test)".into()));
            }
            let failed = self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failed {
                return Err(StoreError::Query("disk I/O error (test)".into()));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ResultStore for FlakyStore {
        async fn insert(&self, results: &[NewResult]) -> Result<Vec<i64>, StoreError> {
            self.inserts.fetch_add(1, Ordering::SeqCst);
            self.check()?;
            self.inner.insert(results).await
        }
        async fn latest(&self, filter: &CellFilter) -> Result<Vec<StoredResult>, StoreError> {
            self.inner.latest(filter).await
        }
        async fn history(&self, query: &HistoryQuery) -> Result<Vec<StoredResult>, StoreError> {
            self.inner.history(query).await
        }
        async fn get(&self, id: i64) -> Result<Option<StoredResult>, StoreError> {
            self.inner.get(id).await
        }
        async fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
            self.inner.delete_before(cutoff_ms).await
        }
        async fn record_event(&self, event: &StoreEvent) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Query("database is locked (test)".into()));
            }
            self.inner.record_event(event).await
        }
        async fn events(&self, since_ms: i64) -> Result<Vec<StoreEvent>, StoreError> {
            self.inner.events(since_ms).await
        }
        async fn timelines(
            &self,
            since_ms: i64,
            until_ms: i64,
            filter: &CellFilter,
        ) -> Result<Vec<crate::store::CellTimeline>, StoreError> {
            self.inner.timelines(since_ms, until_ms, filter).await
        }
        async fn replace_downtimes(
            &self,
            source: &str,
            downtimes: &[gridprobe_config::Downtime],
        ) -> Result<(), StoreError> {
            self.inner.replace_downtimes(source, downtimes).await
        }
        async fn downtimes(
            &self,
            since_ms: i64,
            until_ms: i64,
        ) -> Result<Vec<gridprobe_config::Downtime>, StoreError> {
            self.inner.downtimes(since_ms, until_ms).await
        }
    }

    fn result(i: usize) -> NewResult {
        NewResult {
            result: ProbeResult {
                metric: format!("org.example.M{i}"),
                kind: "tcp".into(),
                vo: "ops".into(),
                site: "SITE-A".into(),
                hostname: "ce.example.org".into(),
                flavour: "CE".into(),
                started_at_ms: 1_700_000_000_000 + i as i64,
                duration_ms: 5,
                outcome: Outcome::ok("fine"),
                attempt: 1,
                trigger: Trigger::Scheduled,
            },
            is_final: true,
        }
    }

    fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }

    /// Polls `cond` until it holds; fails after `limit` of (tokio) time.
    async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stored_metrics(store: &FlakyStore) -> Vec<String> {
        let mut metrics: Vec<String> = store
            .history(&HistoryQuery {
                include_attempts: true,
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .expect("history")
            .into_iter()
            .map(|r| r.result.metric)
            .collect();
        metrics.sort();
        metrics
    }

    #[tokio::test]
    async fn burst_is_absorbed_without_blocking_and_batched() {
        let store = FlakyStore::new();
        let (handle, task) = spawn_writer(store.clone(), WriterConfig::default());
        let stats = handle.stats();
        for i in 0..10_000 {
            handle.send(result(i));
        }
        wait_for("10,000 rows", Duration::from_secs(60), || {
            load(&stats.written) == 10_000
        })
        .await;
        assert_eq!(store.inner.count().await.expect("count"), 10_000);
        assert_eq!(load(&stats.pending), 0);
        assert_eq!(load(&stats.dropped), 0);
        // Written in batches of up to 1000, not row by row.
        assert!(store.inserts.load(Ordering::SeqCst) <= 20);
        drop(handle);
        task.await.expect("writer task");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_are_retried_until_the_store_recovers() {
        let store = FlakyStore::new();
        store.fail_next.store(3, Ordering::SeqCst);
        let (handle, task) = spawn_writer(store.clone(), WriterConfig::default());
        let stats = handle.stats();
        for i in 0..50 {
            handle.send(result(i));
        }
        wait_for("recovery", Duration::from_secs(60), || {
            load(&stats.written) == 50
        })
        .await;
        assert_eq!(load(&stats.write_errors), 3);
        assert_eq!(load(&stats.dropped), 0);
        assert_eq!(load(&stats.pending), 0);
        let expected: Vec<String> = {
            let mut v: Vec<String> = (0..50).map(|i| result(i).result.metric).collect();
            v.sort();
            v
        };
        assert_eq!(stored_metrics(&store).await, expected);
        drop(handle);
        task.await.expect("writer task");
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_drops_newest_and_records_an_event() {
        let store = FlakyStore::new();
        store.down.store(true, Ordering::SeqCst);
        let cfg = WriterConfig {
            batch_size: 10,
            max_pending: 100,
            ..Default::default()
        };
        let (handle, task) = spawn_writer(store.clone(), cfg);
        let stats = handle.stats();
        for i in 0..250 {
            handle.send(result(i));
        }
        wait_for("drops", Duration::from_secs(60), || {
            load(&stats.dropped) == 150
        })
        .await;
        assert_eq!(load(&stats.pending), 100);
        assert!(load(&stats.write_errors) >= 1);
        assert_eq!(store.inner.count().await.expect("count"), 0);

        store.down.store(false, Ordering::SeqCst);
        wait_for("the pending results", Duration::from_secs(60), || {
            load(&stats.written) == 100
        })
        .await;
        // The oldest 100 were kept.
        let mut expected: Vec<String> = (0..100).map(|i| result(i).result.metric).collect();
        expected.sort();
        assert_eq!(stored_metrics(&store).await, expected);

        let mut events = Vec::new();
        for _ in 0..1000 {
            events = store.events(0).await.expect("events");
            if !events.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, RESULTS_DROPPED);
        assert!(
            events[0]
                .message
                .starts_with("150 results dropped between "),
            "{}",
            events[0].message
        );
        assert!(
            events[0].message.ends_with(
                ": result store unavailable (result store error: database is locked (test))"
            ),
            "{}",
            events[0].message
        );
        assert_eq!(load(&stats.dropped), 150);
        drop(handle);
        task.await.expect("writer task");
    }

    #[tokio::test]
    async fn closing_the_handle_flushes_pending_results() {
        let store = FlakyStore::new();
        let (handle, task) = spawn_writer(store.clone(), WriterConfig::default());
        let stats = handle.stats();
        let second = handle.clone();
        for i in 0..5 {
            handle.send(result(i));
        }
        second.send(result(5));
        drop(handle);
        drop(second);
        task.await.expect("writer task");
        assert_eq!(store.inner.count().await.expect("count"), 6);
        assert_eq!(load(&stats.written), 6);
        assert_eq!(load(&stats.pending), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_gives_up_after_the_timeout_and_counts_the_loss() {
        let store = FlakyStore::new();
        store.down.store(true, Ordering::SeqCst);
        let cfg = WriterConfig {
            flush_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        let (handle, task) = spawn_writer(store.clone(), cfg);
        let stats = handle.stats();
        for i in 0..7 {
            handle.send(result(i));
        }
        let closed = Instant::now();
        drop(handle);
        task.await.expect("writer task");
        let waited = closed.elapsed();
        assert!(waited >= Duration::from_secs(3), "{waited:?}");
        assert!(waited < Duration::from_secs(4), "{waited:?}");
        assert_eq!(load(&stats.dropped), 7);
        assert_eq!(load(&stats.pending), 0);
        assert!(load(&stats.write_errors) >= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_during_a_long_backoff_still_ends_at_the_flush_deadline() {
        let store = FlakyStore::new();
        store.down.store(true, Ordering::SeqCst);
        let cfg = WriterConfig {
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let (handle, task) = spawn_writer(store.clone(), cfg);
        let stats = handle.stats();
        handle.send(result(0));
        wait_for("the first failure", Duration::from_secs(10), || {
            load(&stats.write_errors) == 1
        })
        .await;
        let closed = Instant::now();
        drop(handle);
        task.await.expect("writer task");
        let waited = closed.elapsed();
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert_eq!(load(&stats.dropped), 1);
    }

    #[tokio::test]
    async fn sending_after_the_writer_ended_counts_a_drop() {
        let store = FlakyStore::new();
        let (handle, task) = spawn_writer(store, WriterConfig::default());
        task.abort();
        let _ = task.await;
        handle.send(result(0));
        let stats = handle.stats();
        assert_eq!(load(&stats.dropped), 1);
        assert_eq!(load(&stats.pending), 0);
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
