//! The batching writer: probes hand results to a [`WriterHandle`] that never blocks, and one
//! task delivers them to a [`Target`] in batches: the [`ResultStore`] ([`spawn_writer`]), or a
//! message broker (the `gridprobe-broker` crate builds its publishers on [`spawn_relay`]).
//!
//! While the target is unavailable the results go to a durable [`Spool`] when there is one (and
//! wait in memory, up to [`WriterConfig::max_pending`], when there is none or it is full); the
//! delivery is retried with backoff, and the spool is replayed first and in order once the
//! target is back, also after a restart or a kill -9. Whatever has to be dropped is counted,
//! logged and recorded as a store event, so nothing is lost silently.
//!
//! Order: the results waiting form one queue, the spooled ones (oldest) then the ones in memory.
//! While the spool holds anything, new results are appended behind it, never delivered around
//! it.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use gridprobe_probes::outcome::unix_ms;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use crate::message::ResultMessage;
use crate::spool::{Spool, SpoolError};
use crate::store::{NewResult, ResultStore, StoreError, StoreEvent};

/// Event kind recorded when results had to be dropped.
pub const RESULTS_DROPPED: &str = "results_dropped";
/// Event kind recorded when a spool was full and results had to wait in memory instead.
pub const SPOOL_FULL: &str = "spool_full";

/// Where a relay delivers results.
#[async_trait]
pub trait Target: Send + Sync {
    /// What it is, for logs and events (e.g. `result store`, `amqp publisher central`).
    fn name(&self) -> String;
    /// Delivers a batch, in order; `ids` are the results' message ids, `replay` says the
    /// batch comes from the spool (and may have been delivered before a crash). `Ok` means
    /// every result is safely with the target (written, or confirmed by the broker).
    async fn deliver(
        &self,
        batch: &[NewResult],
        ids: &[String],
        replay: bool,
    ) -> Result<(), String>;

    /// Whether a fresh delivery (`replay == false`) reads `ids`. One that does not is handed
    /// an empty slice, and the relay saves hashing every result.
    fn fresh_ids(&self) -> bool {
        true
    }

    /// Whether one large delivery costs less per result than several small ones, so that a
    /// backlog is better delivered in batches of up to [`WriterConfig::backlog_batch_size`]
    /// (the result store: one transaction per delivery). Brokers keep `batch_size`: a failed
    /// delivery is resent whole.
    fn grows_batches(&self) -> bool {
        false
    }

    /// How many results of the deliveries since the last call the target accepted but could
    /// not pass on (an AMQP broker returning a message no queue is bound for), and resets it.
    /// The relay counts them as `unroutable`, not as `written`.
    fn take_unroutable(&self) -> u64 {
        0
    }
}

/// The result store as a [`Target`]. Fresh results take the fast `insert`; a spool replay
/// takes `insert_once` (a crash between the store's commit and the spool's acknowledgement
/// replays a batch, which must not be stored twice), or `insert` for a backend without it.
struct StoreTarget {
    store: Arc<dyn ResultStore>,
    dedupe: AtomicBool,
}

#[async_trait]
impl Target for StoreTarget {
    fn name(&self) -> String {
        "result store".into()
    }

    async fn deliver(
        &self,
        batch: &[NewResult],
        ids: &[String],
        replay: bool,
    ) -> Result<(), String> {
        if replay && self.dedupe.load(Ordering::Relaxed) {
            let keyed: Vec<(String, NewResult)> =
                ids.iter().cloned().zip(batch.iter().cloned()).collect();
            match self.store.insert_once(&keyed).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Unsupported(what)) => {
                    tracing::warn!(
                        "the result store does not support {what}: results are written with \
                         plain inserts, so a crash during a spool replay may store one twice"
                    );
                    self.dedupe.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        self.store
            .insert(batch)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A fresh batch takes the plain `insert`, which has no use for message ids.
    fn fresh_ids(&self) -> bool {
        false
    }

    fn grows_batches(&self) -> bool {
        true
    }
}

/// Tuning of the batching writer (and of every relay).
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most results delivered in one call while the target keeps up.
    pub batch_size: usize,
    /// Most results delivered in one call once more than `batch_size` wait, to a target that
    /// delivers a batch more cheaply per result the larger it is (the result store, which
    /// commits a batch as one transaction: each page the transaction touches is written once
    /// for more results). Below `batch_size` it counts as `batch_size`. Without a backlog the
    /// batches stay small, so results are stored as soon as they arrive.
    pub backlog_batch_size: usize,
    /// Most results held in memory while the target is unavailable and cannot be spooled;
    /// newer ones are dropped.
    pub max_pending: usize,
    /// First retry delay after a failed delivery.
    pub retry_min: Duration,
    /// Longest retry delay (the delay doubles up to this).
    pub retry_max: Duration,
    /// How long to keep retrying once every handle is dropped; then what is left stays in the
    /// spool for the next start (or, without a spool, is counted as dropped).
    pub flush_timeout: Duration,
    /// The gridprobe instance name, part of every message id.
    pub instance: String,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_size: 1000,
            backlog_batch_size: 10_000,
            max_pending: 100_000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
            instance: String::new(),
        }
    }
}

/// Counters of a writer, shared with every handle.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Results delivered to the target (written to the store, confirmed by the broker and
    /// routed to a queue).
    pub written: AtomicU64,
    /// Results the target accepted but could not pass on (an AMQP broker with no queue bound
    /// for their routing key): not retried, lost for that target.
    pub unroutable: AtomicU64,
    /// Failed deliveries (each retried).
    pub write_errors: AtomicU64,
    /// Results dropped: beyond `max_pending` (no room in the spool either), unwritten at
    /// shutdown without a spool, or sent after the writer ended.
    pub dropped: AtomicU64,
    /// Results sent and held in memory: neither delivered, spooled nor dropped yet.
    pub pending: AtomicU64,
    /// Results in the spool now, waiting for replay (survive a restart).
    pub spooled: AtomicU64,
    /// Bytes the spool takes on disk.
    pub spool_bytes: AtomicU64,
    /// Results the spool refused because it was full (each counted once; they waited in
    /// memory instead, or were dropped past `max_pending`).
    pub spool_full: AtomicU64,
    /// Spool reads or writes that failed for another reason (I/O errors).
    pub spool_errors: AtomicU64,
    /// Results delivered from the spool (a subset of `written`).
    pub replayed: AtomicU64,
    /// Spooled records that could not be decoded, or were found damaged on disk (checksum),
    /// and were skipped (lost before this run delivered them; not in `dropped`).
    pub corrupt: AtomicU64,
}

/// The sending side of a writer; cheap to clone. The writer flushes and ends once every
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<NewResult>,
    stats: Arc<WriterStats>,
    spool_dir: Option<PathBuf>,
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

    /// The spool directory, when the writer has one.
    pub fn spool_dir(&self) -> Option<&std::path::Path> {
        self.spool_dir.as_deref()
    }
}

/// Starts the store writer on the current tokio runtime, without a spool (results wait in
/// memory while the store is down).
pub fn spawn_writer(
    store: Arc<dyn ResultStore>,
    cfg: WriterConfig,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    spawn_store_writer(store, cfg, None)
}

/// Starts the store writer with an optional durable spool: while the store is down results go
/// to the spool, which is replayed first (also what an earlier run left in it).
pub fn spawn_store_writer(
    store: Arc<dyn ResultStore>,
    cfg: WriterConfig,
    spool: Option<Spool>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let target = Arc::new(StoreTarget {
        store: store.clone(),
        dedupe: AtomicBool::new(true),
    });
    spawn_relay(target, Some(store), false, cfg, spool)
}

/// Starts a relay to any [`Target`]. `events` is where drops and a full spool are recorded;
/// `events_independent` says it stays up when the target is down (e.g. the result store for a
/// broker publisher), so events are recorded without waiting for the target to recover.
pub fn spawn_relay(
    target: Arc<dyn Target>,
    events: Option<Arc<dyn ResultStore>>,
    events_independent: bool,
    cfg: WriterConfig,
    mut spool: Option<Spool>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(WriterStats::default());
    let spool_dir = spool.as_ref().map(|s| s.dir().to_path_buf());
    let mut damage = None;
    if let Some(s) = &mut spool {
        stats.spooled.store(s.len(), Ordering::Relaxed);
        stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
        if let Some(d) = s.take_damage() {
            // Lost for good: counted, logged, and recorded as a store event.
            stats.corrupt.fetch_add(d.records, Ordering::Relaxed);
            let copies = d
                .copies
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "{} spooled results for the {} dropped: damaged records ({} bytes) in the spool \
                 {}; the segments as found are kept as {copies}",
                d.records,
                target.name(),
                d.bytes,
                s.dir().display()
            );
            tracing::warn!(
                target_name = %target.name(),
                dropped = d.records,
                bytes = d.bytes,
                copies = %copies,
                "{message}"
            );
            damage = Some(StoreEvent {
                at_ms: unix_ms(SystemTime::now()),
                kind: RESULTS_DROPPED.to_string(),
                message,
            });
        }
    }
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
        spool_refusing: false,
        target_name: target.name(),
    };
    let relay = Relay {
        target,
        events,
        events_independent,
        cfg,
        intake,
        spool: spool.map(|s| Arc::new(Mutex::new(s))),
        full: None,
        full_reported: 0,
        damage,
    };
    let task = tokio::spawn(relay.run());
    (
        WriterHandle {
            tx,
            stats,
            spool_dir,
        },
        task,
    )
}

/// Something that happened repeatedly since the events store last accepted a write: results
/// dropped, or refused by a full spool.
#[derive(Debug)]
struct EventWindow {
    kind: &'static str,
    count: u64,
    first_ms: i64,
    last_ms: i64,
    reason: String,
}

impl EventWindow {
    fn new(kind: &'static str, count: u64, reason: String) -> Self {
        let now = unix_ms(SystemTime::now());
        EventWindow {
            kind,
            count,
            first_ms: now,
            last_ms: now,
            reason,
        }
    }

    fn add(&mut self, count: u64, reason: String) {
        self.count += count;
        self.last_ms = unix_ms(SystemTime::now());
        self.reason = reason;
    }

    /// Folds what happened after `self` into it.
    fn merge(mut self, later: Option<EventWindow>) -> EventWindow {
        if let Some(later) = later {
            self.count += later.count;
            self.last_ms = later.last_ms;
            self.reason = later.reason;
        }
        self
    }

    fn event(&self, target: &str) -> StoreEvent {
        let message = match self.kind {
            SPOOL_FULL => format!(
                "{} results could not be spooled between {} and {}: {}; they waited in memory \
                 (those beyond the memory bound are counted as dropped)",
                self.count,
                format_utc_ms(self.first_ms),
                format_utc_ms(self.last_ms),
                self.reason
            ),
            _ => format!(
                "{} results dropped between {} and {}: {target} unavailable ({})",
                self.count,
                format_utc_ms(self.first_ms),
                format_utc_ms(self.last_ms),
                self.reason
            ),
        };
        StoreEvent {
            at_ms: unix_ms(SystemTime::now()),
            kind: self.kind.to_string(),
            message,
        }
    }
}

/// The receiving side and the in-memory buffer; kept apart from the target so a delivery can
/// be in progress while new results are accepted.
struct Intake {
    rx: mpsc::UnboundedReceiver<NewResult>,
    /// False once every handle is dropped and the channel is empty.
    open: bool,
    /// When the channel closed (the flush deadline counts from here).
    closed_at: Option<Instant>,
    pending: VecDeque<NewResult>,
    /// Results taken out of `pending` for the delivery in progress.
    in_flight: usize,
    max_pending: usize,
    stats: Arc<WriterStats>,
    drops: Option<EventWindow>,
    last_error: Option<String>,
    /// The spool refused the last append as full: what arrives now waits in memory, and is
    /// counted in `spool_full`.
    spool_refusing: bool,
    target_name: String,
}

impl Intake {
    fn accept(&mut self, r: NewResult) {
        if self.pending.len() + self.in_flight < self.max_pending {
            if self.spool_refusing {
                self.stats.spool_full.fetch_add(1, Ordering::Relaxed);
            }
            self.pending.push_back(r);
            return;
        }
        // Full: the newest result is the one dropped, so the buffer keeps the oldest history.
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let reason = self
            .last_error
            .clone()
            .unwrap_or_else(|| "writes not keeping up".to_string());
        match &mut self.drops {
            Some(w) => w.add(1, reason),
            None => {
                tracing::error!(
                    target_name = %self.target_name,
                    max_pending = self.max_pending,
                    error = %reason,
                    "{} unavailable and the pending buffer is full: dropping new results until \
                     it accepts them again",
                    self.target_name
                );
                self.drops = Some(EventWindow::new(RESULTS_DROPPED, 1, reason));
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
    /// behind a slow delivery or a retry delay (and `max_pending` is enforced meanwhile).
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

    /// Waits until `wake` (or the flush deadline once the channel is closed) while accepting
    /// results; returns early, with results in the buffer, when `return_on_result` is set.
    async fn idle_until(&mut self, wake: Instant, flush_timeout: Duration, return_on_result: bool) {
        loop {
            let until = match self.closed_at {
                Some(closed) => wake.min(closed + flush_timeout),
                None => wake,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                msg = self.rx.recv(), if self.open => {
                    self.on_message(msg);
                    if return_on_result && !self.pending.is_empty() {
                        return;
                    }
                }
            }
        }
    }

    fn past_flush_deadline(&self, flush_timeout: Duration) -> bool {
        self.closed_at
            .is_some_and(|closed| Instant::now() >= closed + flush_timeout)
    }
}

/// One relay task: the target, the spool, the intake.
struct Relay {
    target: Arc<dyn Target>,
    events: Option<Arc<dyn ResultStore>>,
    events_independent: bool,
    cfg: WriterConfig,
    intake: Intake,
    spool: Option<Arc<Mutex<Spool>>>,
    /// The spool was full since the last recorded event.
    full: Option<EventWindow>,
    /// Damaged spool records skipped at open, not yet recorded in the events store.
    damage: Option<StoreEvent>,
    /// `spool_full` as of the last recorded event.
    full_reported: u64,
}

/// A spool operation that failed: whether because the spool is full, and the message.
type SpoolFailure = (bool, String);

/// Runs a spool operation on the blocking pool (it reads, writes and fsyncs files); returns its
/// output with the spool's records and bytes afterwards.
async fn on_spool<T: Send + 'static>(
    spool: &Arc<Mutex<Spool>>,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<(T, u64, u64), SpoolFailure> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || {
        let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut s).map_err(|e| (matches!(e, SpoolError::Full { .. }), e.to_string()))?;
        Ok((out, s.len(), s.bytes()))
    })
    .await
    .map_err(|e| (false, format!("spool task failed: {e}")))?
}

impl Relay {
    fn spooled(&self) -> u64 {
        self.intake.stats.spooled.load(Ordering::Relaxed)
    }

    fn set_spool_gauges(&self, len: u64, bytes: u64) {
        self.intake.stats.spooled.store(len, Ordering::Relaxed);
        self.intake
            .stats
            .spool_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// Moves every result held in memory to the end of the spool (one fsynced append). On
    /// failure they stay in memory, in order.
    async fn pending_to_spool(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        if self.intake.pending.is_empty() {
            return;
        }
        let records: Vec<Vec<u8>> = self
            .intake
            .pending
            .iter()
            .map(|r| ResultMessage::new(&self.cfg.instance, r).to_json())
            .collect();
        let n = records.len() as u64;
        let outcome = self
            .intake
            .while_receiving(on_spool(&spool, move |s| s.append(&records)))
            .await;
        match outcome {
            Ok(((), len, bytes)) => {
                self.intake.pending.drain(..n as usize);
                self.intake.stats.pending.fetch_sub(n, Ordering::Relaxed);
                self.set_spool_gauges(len, bytes);
                if self.intake.spool_refusing {
                    self.intake.spool_refusing = false;
                    tracing::warn!(target_name = %self.intake.target_name, "the spool accepts results again");
                }
            }
            Err((full, e)) => {
                if full {
                    if !self.intake.spool_refusing {
                        // Counted once per result: these now, later arrivals in `accept`.
                        self.intake.stats.spool_full.fetch_add(n, Ordering::Relaxed);
                        self.intake.spool_refusing = true;
                        tracing::error!(
                            target_name = %self.intake.target_name,
                            error = %e,
                            max_pending = self.intake.max_pending,
                            "spool full: results wait in memory until it drains; beyond the memory \
                             bound they are dropped"
                        );
                    }
                    match &mut self.full {
                        Some(w) => w.add(0, e),
                        None => self.full = Some(EventWindow::new(SPOOL_FULL, 0, e)),
                    }
                } else {
                    self.intake
                        .stats
                        .spool_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        target_name = %self.intake.target_name,
                        error = %e,
                        "cannot write to the spool; results wait in memory"
                    );
                }
            }
        }
    }

    /// Records the pending event windows (drops, full spool) in the events store.
    async fn report_events(&mut self) {
        let Some(store) = self.events.clone() else {
            return;
        };
        // Results refused by the spool are counted once, in `spool_full`; the window only
        // gathers them when it is reported.
        let full_total = self.intake.stats.spool_full.load(Ordering::Relaxed);
        if let Some(w) = &mut self.full {
            w.count = full_total.saturating_sub(self.full_reported);
        }
        let target = self.intake.target_name.clone();
        if let Some(event) = self.damage.take() {
            if let Err(e) = self
                .intake
                .while_receiving(store.record_event(&event))
                .await
            {
                tracing::error!(error = %e, "cannot record the damaged spool records; will retry");
                self.damage = Some(event);
            }
        }
        if let Some(window) = self.intake.drops.take() {
            let event = window.event(&target);
            match self
                .intake
                .while_receiving(store.record_event(&event))
                .await
            {
                Ok(()) => tracing::warn!(dropped = window.count, "{}", event.message),
                Err(e) => {
                    tracing::error!(error = %e, "cannot record dropped results; will retry");
                    let later = self.intake.drops.take();
                    self.intake.drops = Some(window.merge(later));
                }
            }
        }
        if !self.intake.spool_refusing {
            if let Some(window) = self.full.take() {
                let event = window.event(&target);
                match self
                    .intake
                    .while_receiving(store.record_event(&event))
                    .await
                {
                    Ok(()) => {
                        self.full_reported = full_total;
                        tracing::warn!("{}", event.message);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record the full spool; will retry");
                        self.full = Some(window);
                    }
                }
            }
        }
    }

    /// After a failed delivery: count it, log it, wait with backoff. Returns false when the
    /// flush deadline has passed (time to stop).
    async fn after_failure(&mut self, error: String, batch: usize, delay: &mut Duration) -> bool {
        let stats = Arc::clone(&self.intake.stats);
        stats.write_errors.fetch_add(1, Ordering::Relaxed);
        let spooled = self.spooled();
        tracing::error!(
            target_name = %self.intake.target_name,
            error = %error,
            batch,
            pending = self.intake.pending.len(),
            spooled,
            retry_in = ?delay,
            "cannot deliver results to the {}; {} and retrying",
            self.intake.target_name,
            if self.spool.is_some() { "spooling them" } else { "keeping them in memory" }
        );
        self.intake.last_error = Some(error);
        if self.events_independent {
            self.report_events().await;
        }
        if self.intake.past_flush_deadline(self.cfg.flush_timeout) {
            return false;
        }
        let wake = Instant::now() + *delay;
        // With a spool, results arriving during the wait are appended to it at once, so a kill
        // meanwhile loses nothing.
        loop {
            let spooling = self.spool.is_some() && !self.intake.spool_refusing;
            self.intake
                .idle_until(wake, self.cfg.flush_timeout, spooling)
                .await;
            if spooling && !self.intake.pending.is_empty() {
                self.intake.fill(self.cfg.batch_size);
                self.pending_to_spool().await;
            }
            let deadline = self.intake.closed_at.map(|c| c + self.cfg.flush_timeout);
            if Instant::now() >= wake || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        *delay = (*delay * 2).min(self.cfg.retry_max).max(self.cfg.retry_min);
        true
    }

    async fn after_success(&mut self, n: u64, from_spool: bool, delay: &mut Duration) {
        let stats = &self.intake.stats;
        let unroutable = self.target.take_unroutable().min(n);
        stats.written.fetch_add(n - unroutable, Ordering::Relaxed);
        stats.unroutable.fetch_add(unroutable, Ordering::Relaxed);
        if from_spool {
            stats.replayed.fetch_add(n, Ordering::Relaxed);
        } else {
            stats.pending.fetch_sub(n, Ordering::Relaxed);
        }
        *delay = self.cfg.retry_min;
        if self.intake.last_error.take().is_some() {
            tracing::info!(target_name = %self.intake.target_name, "{} accepts results again", self.intake.target_name);
        }
        if self.intake.drops.is_some()
            || self.damage.is_some()
            || (self.full.is_some() && !self.intake.spool_refusing)
        {
            self.report_events().await;
        }
    }

    /// Delivers one batch from the head of the spool. Returns false when it is time to stop.
    async fn replay_batch(&mut self, spool: Arc<Mutex<Spool>>, delay: &mut Duration) -> bool {
        let batch_size = self.cfg.batch_size.max(1);
        let peeked = self
            .intake
            .while_receiving(on_spool(&spool, move |s| s.peek(batch_size, 8 << 20)))
            .await;
        let ((records, upto), len, bytes) = match peeked {
            Ok(x) => x,
            Err((_, e)) => {
                self.intake
                    .stats
                    .spool_errors
                    .fetch_add(1, Ordering::Relaxed);
                return self.after_failure(e, 0, delay).await;
            }
        };
        if records.is_empty() {
            // Nothing readable although records were counted (damaged on disk since open).
            self.set_spool_gauges(0, bytes);
            let _ = on_spool(&spool, move |s| s.ack(upto, len)).await;
            return true;
        }
        let count = records.len() as u64;
        let mut batch = Vec::with_capacity(records.len());
        let mut ids = Vec::with_capacity(records.len());
        for rec in &records {
            match ResultMessage::from_json(rec).and_then(|m| Ok((m.to_new_result()?, m))) {
                Ok((r, m)) => {
                    batch.push(r);
                    ids.push(m.message_id);
                }
                Err(e) => {
                    self.intake.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target_name = %self.intake.target_name, error = %e, "unreadable spool record skipped");
                }
            }
        }
        let delivered = if batch.is_empty() {
            Ok(())
        } else {
            let target = Arc::clone(&self.target);
            self.intake
                .while_receiving(target.deliver(&batch, &ids, true))
                .await
        };
        match delivered {
            Ok(()) => {
                match self
                    .intake
                    .while_receiving(on_spool(&spool, move |s| s.ack(upto, count)))
                    .await
                {
                    Ok(((), len, bytes)) => self.set_spool_gauges(len, bytes),
                    Err((_, e)) => {
                        // Delivered but not marked: they would be replayed (and deduplicated).
                        self.intake
                            .stats
                            .spool_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "cannot acknowledge spool records");
                    }
                }
                self.after_success(batch.len() as u64, true, delay).await;
                true
            }
            Err(e) => self.after_failure(e, batch.len(), delay).await,
        }
    }

    async fn run(mut self) {
        let batch_size = self.cfg.batch_size.max(1);
        // What waits beyond `batch_size` joins the batch, up to this, when it is cheaper so;
        // never more than memory may hold (filling a batch must not drop anything).
        let max_batch = if self.target.grows_batches() {
            self.cfg
                .backlog_batch_size
                .min(self.intake.max_pending)
                .max(batch_size)
        } else {
            batch_size
        };
        let fresh_ids = self.target.fresh_ids();
        let mut delay = self.cfg.retry_min;
        if self.damage.is_some() {
            self.report_events().await;
        }
        let replay_at_start = self.spooled();
        if replay_at_start > 0 {
            tracing::info!(
                target_name = %self.intake.target_name,
                records = replay_at_start,
                "replaying the spool before new results"
            );
        }
        loop {
            if self.intake.spool_refusing && self.spooled() == 0 {
                // Drained: the spool has room again.
                self.intake.spool_refusing = false;
            }
            let spool = self.spool.clone().filter(|_| self.spooled() > 0);
            if spool.is_none() && self.intake.pending.is_empty() {
                if !self.intake.open {
                    break;
                }
                let msg = self.intake.rx.recv().await;
                self.intake.on_message(msg);
                continue;
            }
            if let Some(spool) = spool {
                // Behind the spool: what is in memory joins it first, keeping the order.
                if !self.intake.pending.is_empty() && !self.intake.spool_refusing {
                    self.intake.fill(batch_size);
                    self.pending_to_spool().await;
                }
                if !self.replay_batch(spool, &mut delay).await {
                    break;
                }
                continue;
            }
            // Without a backlog this takes what has arrived (often one result) at once.
            self.intake.fill(max_batch);
            let n = max_batch.min(self.intake.pending.len());
            let batch: Vec<NewResult> = self.intake.pending.drain(..n).collect();
            let ids: Vec<String> = if fresh_ids {
                batch
                    .iter()
                    .map(|r| crate::message::message_id(&self.cfg.instance, &r.result))
                    .collect()
            } else {
                Vec::new()
            };
            self.intake.in_flight = n;
            let target = Arc::clone(&self.target);
            let result = self
                .intake
                .while_receiving(target.deliver(&batch, &ids, false))
                .await;
            self.intake.in_flight = 0;
            match result {
                Ok(()) => self.after_success(n as u64, false, &mut delay).await,
                Err(e) => {
                    // Back at the front, in their order, so results are delivered oldest first.
                    for r in batch.into_iter().rev() {
                        self.intake.pending.push_front(r);
                    }
                    self.pending_to_spool().await;
                    if !self.after_failure(e, n, &mut delay).await {
                        break;
                    }
                }
            }
        }
        self.finish().await;
    }

    /// Stopping: what is still in memory goes to the spool if it can; the rest is counted lost.
    async fn finish(mut self) {
        let stats = Arc::clone(&self.intake.stats);
        self.pending_to_spool().await;
        let lost = self.intake.pending.len() as u64;
        if lost > 0 {
            stats.pending.fetch_sub(lost, Ordering::Relaxed);
            stats.dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::error!(
                lost,
                flush_timeout = ?self.cfg.flush_timeout,
                error = self.intake.last_error.as_deref().unwrap_or(""),
                "{} relay stopping: {lost} results could not be delivered and are lost",
                self.intake.target_name
            );
            let reason = self
                .intake
                .last_error
                .clone()
                .unwrap_or_else(|| "stopping".into());
            match &mut self.intake.drops {
                Some(w) => w.add(0, reason),
                None => {
                    // Counted above already; the window only carries it to the events store.
                    self.intake.drops = Some(EventWindow::new(RESULTS_DROPPED, 0, reason));
                }
            }
            if let Some(w) = &mut self.intake.drops {
                w.count += lost;
            }
        }
        let spooled = self.spooled();
        if spooled > 0 {
            tracing::warn!(
                spooled,
                target_name = %self.intake.target_name,
                "{spooled} results stay in the spool; they are delivered after the next start"
            );
        }
        if self.intake.drops.is_some() || self.full.is_some() || self.damage.is_some() {
            // A last chance to leave a trace in the store itself.
            self.intake.spool_refusing = false;
            self.report_events().await;
            if let Some(w) = &self.intake.drops {
                tracing::error!(
                    dropped = w.count,
                    "{} relay stopping: the drop of {} results could not be recorded in the \
                     result store",
                    self.intake.target_name,
                    w.count
                );
            }
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
    use crate::message::ResultMessage;
    use crate::sqlite::SqliteStore;
    use crate::store::{CellFilter, HistoryQuery, StoreError, StoredResult};

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
        let (handle, task) =
            spawn_relay(target.clone(), None, false, WriterConfig::default(), None);
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
        let (handle, task) =
            spawn_store_writer(store.clone(), cfg, Some(open_spool(&dir, 1 << 20)));
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
}
