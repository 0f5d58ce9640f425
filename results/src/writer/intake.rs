//! The receiving side of a relay: the channel from the handles, the bounded in-memory buffer,
//! and the windows of dropped results reported as store events.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gridprobe_config::time::format_utc_ms;
use gridprobe_probes::outcome::unix_ms;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use super::config::{WriterStats, RESULTS_DROPPED, SPOOL_FULL};
use crate::store::{NewResult, StoreEvent};

/// Something that happened repeatedly since the events store last accepted a write: results
/// dropped, or refused by a full spool.
#[derive(Debug)]
pub(super) struct EventWindow {
    pub(super) kind: &'static str,
    pub(super) count: u64,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
    pub(super) reason: String,
}

impl EventWindow {
    pub(super) fn new(kind: &'static str, count: u64, reason: String) -> Self {
        let now = unix_ms(SystemTime::now());
        EventWindow {
            kind,
            count,
            first_ms: now,
            last_ms: now,
            reason,
        }
    }

    pub(super) fn add(&mut self, count: u64, reason: String) {
        self.count += count;
        self.last_ms = unix_ms(SystemTime::now());
        self.reason = reason;
    }

    /// Folds what happened after `self` into it.
    pub(super) fn merge(mut self, later: Option<EventWindow>) -> EventWindow {
        if let Some(later) = later {
            self.count += later.count;
            self.last_ms = later.last_ms;
            self.reason = later.reason;
        }
        self
    }

    pub(super) fn event(&self, target: &str) -> StoreEvent {
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
pub(super) struct Intake {
    pub(super) rx: mpsc::UnboundedReceiver<NewResult>,
    /// False once every handle is dropped and the channel is empty.
    pub(super) open: bool,
    /// When the channel closed (the flush deadline counts from here).
    pub(super) closed_at: Option<Instant>,
    pub(super) pending: VecDeque<NewResult>,
    /// Results taken out of `pending` for the delivery in progress.
    pub(super) in_flight: usize,
    pub(super) max_pending: usize,
    pub(super) stats: Arc<WriterStats>,
    pub(super) drops: Option<EventWindow>,
    pub(super) last_error: Option<String>,
    /// The spool refused the last append as full: what arrives now waits in memory, and is
    /// counted in `spool_full`.
    pub(super) spool_refusing: bool,
    pub(super) target_name: String,
}

impl Intake {
    pub(super) fn accept(&mut self, r: NewResult) {
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

    pub(super) fn on_message(&mut self, msg: Option<NewResult>) {
        match msg {
            Some(r) => self.accept(r),
            None => {
                self.open = false;
                self.closed_at = Some(Instant::now());
            }
        }
    }

    /// Moves already queued results into the buffer until it holds `n`.
    pub(super) fn fill(&mut self, n: usize) {
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
    pub(super) async fn while_receiving<F: Future>(&mut self, fut: F) -> F::Output {
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
    pub(super) async fn idle_until(
        &mut self,
        wake: Instant,
        flush_timeout: Duration,
        return_on_result: bool,
    ) {
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

    pub(super) fn past_flush_deadline(&self, flush_timeout: Duration) -> bool {
        self.closed_at
            .is_some_and(|closed| Instant::now() >= closed + flush_timeout)
    }
}
