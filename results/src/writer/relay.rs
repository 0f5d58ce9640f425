//! One relay task: delivers batches to its [`Target`], spools what cannot be delivered and
//! replays it first and in order, retries with backoff, reports drops and a full spool as store
//! events, and flushes on shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{WriterConfig, RESULTS_DROPPED, SPOOL_FULL};
use super::intake::{EventWindow, Intake};
use super::target::Target;
use crate::message::ResultMessage;
use crate::spool::{Spool, SpoolError};
use crate::store::{NewResult, ResultStore, StoreEvent};

/// One relay task: the target, the spool, the intake.
pub(super) struct Relay {
    pub(super) target: Arc<dyn Target>,
    pub(super) events: Option<Arc<dyn ResultStore>>,
    pub(super) events_independent: bool,
    pub(super) cfg: WriterConfig,
    pub(super) intake: Intake,
    pub(super) spool: Option<Arc<Mutex<Spool>>>,
    /// The spool was full since the last recorded event.
    pub(super) full: Option<EventWindow>,
    /// Damaged spool records skipped at open, not yet recorded in the events store.
    pub(super) damage: Option<StoreEvent>,
    /// `spool_full` as of the last recorded event.
    pub(super) full_reported: u64,
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

    pub(super) async fn run(mut self) {
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
