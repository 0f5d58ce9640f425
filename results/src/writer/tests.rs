use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::Duration;

use async_trait::async_trait;
use gridprobe_config::time::format_utc_ms;
use gridprobe_probes::{Outcome, ProbeResult, Trigger};
use tokio::time::Instant;

use super::*;
use crate::message::ResultMessage;
use crate::sqlite::SqliteStore;
use crate::store::{CellFilter, HistoryQuery, StoreError, StoreEvent, StoredResult};

/// An in-memory store that fails on demand and counts insert calls.
#[derive(Debug)]
struct FlakyStore {
    inner: SqliteStore,
    fail_next: AtomicU32,
    down: AtomicBool,
    inserts: AtomicU32,
    /// Metrics of the results written, in the order the writer delivered them.
    seen: std::sync::Mutex<Vec<String>>,
}

impl FlakyStore {
    fn new() -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner: SqliteStore::open_in_memory().expect("in-memory store"),
            fail_next: AtomicU32::new(0),
            down: AtomicBool::new(false),
            inserts: AtomicU32::new(0),
            seen: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn note<'a>(&self, results: impl Iterator<Item = &'a NewResult>) {
        self.seen
            .lock()
            .expect("seen")
            .extend(results.map(|r| r.result.metric.clone()));
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
        let ids = self.inner.insert(results).await?;
        self.note(results.iter());
        Ok(ids)
    }
    async fn insert_once(
        &self,
        results: &[(String, NewResult)],
    ) -> Result<crate::store::InsertedOnce, StoreError> {
        self.inserts.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let done = self.inner.insert_once(results).await?;
        self.note(results.iter().map(|(_, r)| r));
        Ok(done)
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
    // Written in batches (of up to 10,000 under such a backlog), not row by row.
    assert!(store.inserts.load(Ordering::SeqCst) <= 20);
    drop(handle);
    task.await.expect("writer task");
}

/// Records the size of each delivery and how many ids came with it.
struct Recorder {
    grows: bool,
    fresh_ids: bool,
    deliveries: Mutex<Vec<(usize, usize)>>,
}

#[async_trait]
impl Target for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    async fn deliver(
        &self,
        batch: &[NewResult],
        ids: &[String],
        _replay: bool,
    ) -> Result<(), String> {
        self.deliveries
            .lock()
            .expect("deliveries")
            .push((batch.len(), ids.len()));
        Ok(())
    }
    fn fresh_ids(&self) -> bool {
        self.fresh_ids
    }
    fn grows_batches(&self) -> bool {
        self.grows
    }
}

#[tokio::test]
async fn a_backlog_grows_batches_only_for_targets_that_gain_from_it() {
    for (grows, fresh_ids) in [(true, false), (false, true)] {
        let target = Arc::new(Recorder {
            grows,
            fresh_ids,
            deliveries: Mutex::new(Vec::new()),
        });
        let cfg = WriterConfig {
            batch_size: 100,
            backlog_batch_size: 1000,
            ..WriterConfig::default()
        };
        let (handle, task) = spawn_relay(target.clone(), None, false, cfg, None);
        // Queued before the relay first runs: a backlog of 2,500.
        for i in 0..2_500 {
            handle.send(result(i));
        }
        drop(handle);
        task.await.expect("relay task");
        let deliveries = target.deliveries.lock().expect("deliveries").clone();
        let sizes: Vec<usize> = deliveries.iter().map(|(n, _)| *n).collect();
        if grows {
            assert_eq!(sizes, vec![1000, 1000, 500]);
        } else {
            assert_eq!(sizes, vec![100; 25]);
        }
        let ids: Vec<usize> = deliveries.iter().map(|(_, n)| *n).collect();
        let expected: Vec<usize> = if fresh_ids {
            sizes
        } else {
            vec![0; sizes.len()]
        };
        assert_eq!(ids, expected);
    }
    // Without a backlog a result is delivered as soon as it arrives, alone.
    let target = Arc::new(Recorder {
        grows: true,
        fresh_ids: false,
        deliveries: Mutex::new(Vec::new()),
    });
    let (handle, task) = spawn_relay(target.clone(), None, false, WriterConfig::default(), None);
    for i in 0..3 {
        handle.send(result(i));
        wait_for("the delivery", Duration::from_secs(10), || {
            target.deliveries.lock().expect("deliveries").len() == i + 1
        })
        .await;
    }
    drop(handle);
    task.await.expect("relay task");
    assert_eq!(
        *target.deliveries.lock().expect("deliveries"),
        vec![(1, 0), (1, 0), (1, 0)]
    );
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

// ---- with a spool (real time: spool operations run on the blocking pool) ----

fn quick() -> WriterConfig {
    WriterConfig {
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        flush_timeout: Duration::from_secs(2),
        instance: "test-instance".into(),
        ..Default::default()
    }
}

fn open_spool(dir: &std::path::Path, max_bytes: u64) -> Spool {
    Spool::open(
        dir,
        crate::spool::SpoolConfig {
            max_bytes,
            segment_bytes: 4096,
        },
    )
    .expect("spool")
    .0
}

/// Metrics in the order the writer delivered them; duplicates (dropped by `insert_once`)
/// are removed, keeping the first.
async fn metrics_in_id_order(store: &FlakyStore) -> Vec<String> {
    let seen = store.seen.lock().expect("seen").clone();
    let mut out: Vec<String> = Vec::new();
    for m in seen {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    // And the store holds exactly these, once each.
    let mut stored = stored_metrics(store).await;
    let mut expected = out.clone();
    expected.sort();
    stored.sort();
    assert_eq!(stored, expected);
    out
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| result(i).result.metric).collect()
}

#[tokio::test]
async fn store_down_results_go_to_the_spool_and_are_replayed_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = FlakyStore::new();
    store.down.store(true, Ordering::SeqCst);
    let spool = open_spool(&tmp.path().join("spool"), 1 << 20);
    let (handle, task) = spawn_store_writer(store.clone(), quick(), Some(spool));
    let stats = handle.stats();
    for i in 0..40 {
        handle.send(result(i));
    }
    wait_for("40 spooled", Duration::from_secs(20), || {
        load(&stats.spooled) == 40 && load(&stats.pending) == 0
    })
    .await;
    // More arrive while down: appended behind, in order.
    for i in 40..60 {
        handle.send(result(i));
    }
    wait_for("60 spooled", Duration::from_secs(20), || {
        load(&stats.spooled) == 60
    })
    .await;
    assert_eq!(store.inner.count().await.expect("count"), 0);
    store.down.store(false, Ordering::SeqCst);
    wait_for("replay", Duration::from_secs(20), || {
        load(&stats.written) == 60
    })
    .await;
    assert_eq!(load(&stats.replayed), 60);
    assert_eq!(load(&stats.spooled), 0);
    assert_eq!(load(&stats.dropped), 0);
    assert_eq!(metrics_in_id_order(&store).await, names(0..60));
    // Back to the memory path once drained.
    handle.send(result(60));
    wait_for("one more", Duration::from_secs(20), || {
        load(&stats.written) == 61
    })
    .await;
    assert_eq!(load(&stats.replayed), 60);
    drop(handle);
    task.await.expect("writer task");
    let segments = std::fs::read_dir(tmp.path().join("spool"))
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
        })
        .count();
    assert_eq!(segments, 0, "acknowledged segments are deleted");
}

#[tokio::test]
async fn what_a_previous_run_spooled_is_replayed_first_and_never_stored_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("spool");
    let store = FlakyStore::new();
    // A previous run wrote 0..5 to the store and crashed before acknowledging them in the
    // spool, which also holds 5..10.
    let keyed: Vec<(String, NewResult)> = (0..5)
        .map(|i| {
            let r = result(i);
            (crate::message::message_id("test-instance", &r.result), r)
        })
        .collect();
    store.inner.insert_once(&keyed).await.expect("seed");
    {
        let mut spool = open_spool(&dir, 1 << 20);
        let records: Vec<Vec<u8>> = (0..10)
            .map(|i| ResultMessage::new("test-instance", &result(i)).to_json())
            .collect();
        spool.append(&records).expect("append");
    }
    let (handle, task) =
        spawn_store_writer(store.clone(), quick(), Some(open_spool(&dir, 1 << 20)));
    let stats = handle.stats();
    assert_eq!(load(&stats.spooled), 10);
    for i in 10..15 {
        handle.send(result(i));
    }
    wait_for("all", Duration::from_secs(20), || {
        load(&stats.written) == 15
    })
    .await;
    assert_eq!(metrics_in_id_order(&store).await, names(0..15));
    drop(handle);
    task.await.expect("writer task");
}

#[tokio::test]
async fn closing_while_the_store_is_down_leaves_results_in_the_spool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("spool");
    let store = FlakyStore::new();
    store.down.store(true, Ordering::SeqCst);
    let cfg = WriterConfig {
        flush_timeout: Duration::from_millis(300),
        ..quick()
    };
    let (handle, task) = spawn_store_writer(store.clone(), cfg, Some(open_spool(&dir, 1 << 20)));
    let stats = handle.stats();
    for i in 0..7 {
        handle.send(result(i));
    }
    drop(handle);
    task.await.expect("writer task");
    assert_eq!(load(&stats.dropped), 0, "nothing lost");
    assert_eq!(load(&stats.spooled), 7);
    // The next start replays them.
    store.down.store(false, Ordering::SeqCst);
    let (handle, task) =
        spawn_store_writer(store.clone(), quick(), Some(open_spool(&dir, 1 << 20)));
    let stats = handle.stats();
    wait_for("replay", Duration::from_secs(20), || {
        load(&stats.written) == 7
    })
    .await;
    assert_eq!(metrics_in_id_order(&store).await, names(0..7));
    drop(handle);
    task.await.expect("writer task");
}

#[tokio::test]
async fn a_full_spool_is_counted_and_recorded_and_results_wait_in_memory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = FlakyStore::new();
    store.down.store(true, Ordering::SeqCst);
    // Room for a few results only.
    let one = ResultMessage::new("test-instance", &result(0))
        .to_json()
        .len() as u64
        + 8;
    let spool = open_spool(&tmp.path().join("spool"), 8 + 5 * one + one / 2);
    let (handle, task) = spawn_store_writer(store.clone(), quick(), Some(spool));
    let stats = handle.stats();
    for i in 0..5 {
        handle.send(result(i));
    }
    wait_for("5 spooled", Duration::from_secs(20), || {
        load(&stats.spooled) == 5
    })
    .await;
    for i in 5..30 {
        handle.send(result(i));
    }
    wait_for("refusals counted", Duration::from_secs(20), || {
        load(&stats.spool_full) == 25 && load(&stats.pending) == 25
    })
    .await;
    assert_eq!(load(&stats.spooled), 5);
    store.down.store(false, Ordering::SeqCst);
    wait_for("everything", Duration::from_secs(20), || {
        load(&stats.written) == 30
    })
    .await;
    assert_eq!(load(&stats.dropped), 0);
    assert_eq!(metrics_in_id_order(&store).await, names(0..30));
    let mut events = Vec::new();
    for _ in 0..400 {
        events = store.events(0).await.expect("events");
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, SPOOL_FULL);
    assert!(
        events[0]
            .message
            .starts_with("25 results could not be spooled between "),
        "{}",
        events[0].message
    );
    assert!(
        events[0].message.contains("is full"),
        "{}",
        events[0].message
    );
    drop(handle);
    task.await.expect("writer task");
}

#[test]
fn utc_formatting() {
    assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_utc_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(format_utc_ms(-1), "1969-12-31T23:59:59.999Z");
}
