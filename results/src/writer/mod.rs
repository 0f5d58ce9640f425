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

mod config;
mod intake;
mod relay;
mod target;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use gridprobe_probes::outcome::unix_ms;

use tokio::sync::mpsc;

use crate::spool::Spool;
use crate::store::{NewResult, ResultStore, StoreEvent};
pub use config::{WriterConfig, WriterStats, RESULTS_DROPPED, SPOOL_FULL};
use intake::Intake;
use relay::Relay;
use target::StoreTarget;
pub use target::Target;

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
