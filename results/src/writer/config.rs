//! What a writer is told ([`WriterConfig`]) and what it tells: its counters ([`WriterStats`])
//! and the kinds of the store events it records.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Event kind recorded when results had to be dropped.
pub const RESULTS_DROPPED: &str = "results_dropped";
/// Event kind recorded when a spool was full and results had to wait in memory instead.
pub const SPOOL_FULL: &str = "spool_full";

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
