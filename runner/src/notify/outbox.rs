//! Durable delivery: each channel has an outbox, a [`Spool`] under
//! `<spool_dir>/notify/<channel>/` (the same segment files, CRC-32 records and fsync as the
//! result spools). A notification is appended (fsynced) before anything is sent; one task per
//! channel delivers the outbox from its head, in order, acknowledging a record only once the
//! server accepted it, and retrying with backoff while it is down, also across restarts. A
//! crash between acceptance and acknowledgement sends it again with the same id. Sent
//! notifications are recorded in the store's history before their record is acknowledged, and
//! a record whose id the history already holds is not sent again (a crash after the record,
//! or another instance's outbox).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridprobe_config::notify::Channel;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_results::{ResultStore, Spool, SpoolConfig};
use tokio_util::sync::CancellationToken;

use super::message::Notification;
use super::send::Sender;

/// Retry delays after a failed delivery: from 1 s, doubling, to 1 min.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Counters of one channel (for `/metrics` and `/healthz`).
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Notifications the server accepted.
    pub sent: AtomicU64,
    /// Failed delivery attempts (each retried).
    pub failures: AtomicU64,
    /// Notifications waiting in the outbox.
    pub queued: AtomicU64,
    /// Deliveries held back by the per-recipient rate limit.
    pub rate_limited: AtomicU64,
}

/// One sent notification, as kept in the store's history.
pub use gridprobe_results::notify::SentNotification as SentRecord;

/// Moves an older release's history (`<dir>/history.jsonl` and its rotated `.1`) into the
/// store (ids already there are skipped), then renames each `*.migrated`, so it is read once.
/// Returns how many records were new.
pub async fn migrate_history(store: &dyn ResultStore, dir: &Path) -> Result<usize, String> {
    let mut added = 0;
    for name in ["history.jsonl.1", "history.jsonl"] {
        let path = dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // A torn last line (a crash while appending) is skipped, as the old reader did.
        let records: Vec<SentRecord> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        for chunk in records.chunks(1000) {
            added += store
                .record_notifications(chunk)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        std::fs::rename(&path, dir.join(format!("{name}.migrated")))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(added)
}

/// A channel's outbox: append here, a task delivers.
pub struct Outbox {
    /// The channel's name.
    pub name: String,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<tokio::sync::Notify>,
    /// Its counters.
    pub stats: Arc<ChannelStats>,
}

impl Outbox {
    /// Opens the outbox of a channel under `root` and starts its delivery task, counting in
    /// `stats`, which ends when `stop` is cancelled (what is not delivered stays in the outbox).
    pub fn start(
        channel: Channel,
        root: &Path,
        store: Arc<dyn ResultStore>,
        stats: Arc<ChannelStats>,
        stop: CancellationToken,
    ) -> Result<(Outbox, tokio::task::JoinHandle<()>), String> {
        let dir = root.join(&channel.name);
        let cfg = SpoolConfig {
            max_bytes: 256 << 20,
            ..SpoolConfig::default()
        };
        let (spool, report) = Spool::open(&dir, cfg).map_err(|e| e.to_string())?;
        if report.records > 0 {
            tracing::info!(
                channel = %channel.name,
                queued = report.records,
                "notifications left by an earlier run are delivered first"
            );
        }
        stats.queued.store(spool.len(), Ordering::Relaxed);
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(tokio::sync::Notify::new());
        let sender = Sender::new(channel.clone())?;
        let task = tokio::spawn(deliver_loop(
            channel,
            sender,
            spool.clone(),
            wake.clone(),
            stats.clone(),
            store,
            stop,
        ));
        Ok((
            Outbox {
                name: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                spool,
                wake,
                stats,
            },
            task,
        ))
    }

    /// Queues notifications durably (fsynced before returning). A full or failing outbox is
    /// logged and counted as failures; it never blocks the engine for long.
    pub fn push(&self, batch: &[Notification]) -> Result<(), String> {
        let records: Vec<Vec<u8>> = batch
            .iter()
            .filter_map(|n| serde_json::to_vec(n).ok())
            .collect();
        let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        spool.append(&records).map_err(|e| e.to_string())?;
        self.stats.queued.store(spool.len(), Ordering::Relaxed);
        drop(spool);
        self.wake.notify_one();
        Ok(())
    }
}

/// Per-recipient sending times within the last hour.
#[derive(Default)]
struct RateLimiter {
    sent: HashMap<String, VecDeque<i64>>,
}

impl RateLimiter {
    /// How long to wait before `key` may receive another message (0: now).
    fn wait_ms(&mut self, key: &str, limit: u32, now_ms: i64) -> i64 {
        let q = self.sent.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| *t <= now_ms.saturating_sub(3_600_000))
        {
            q.pop_front();
        }
        if q.len() < limit as usize {
            0
        } else {
            q.front()
                .map_or(0, |t| t.saturating_add(3_600_000).saturating_sub(now_ms))
        }
    }

    fn note(&mut self, key: &str, now_ms: i64) {
        self.sent
            .entry(key.to_string())
            .or_default()
            .push_back(now_ms);
    }
}

fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

async fn deliver_loop(
    channel: Channel,
    sender: Sender,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<tokio::sync::Notify>,
    stats: Arc<ChannelStats>,
    store: Arc<dyn ResultStore>,
    stop: CancellationToken,
) {
    let mut limiter = RateLimiter::default();
    let mut delay = RETRY_MIN;
    loop {
        let head = {
            let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
            s.peek(1, u64::MAX)
        };
        let (records, pos) = match head {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(channel = %channel.name, error = %e, "notification outbox unreadable");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_MAX) => continue,
                }
            }
        };
        let Some(record) = records.first() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => continue,
            }
        };
        let ack = |stats: &ChannelStats| {
            let mut s = spool.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = s.ack(pos, 1) {
                tracing::error!(channel = %channel.name, error = %e, "notification outbox acknowledgement failed");
            }
            stats.queued.store(s.len(), Ordering::Relaxed);
        };
        let n: Notification = match serde_json::from_slice(record) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(channel = %channel.name, error = %e, "undecodable notification skipped");
                ack(&stats);
                continue;
            }
        };
        let key = if n.recipient.is_empty() {
            channel.name.clone()
        } else {
            n.recipient.clone()
        };
        let wait = limiter.wait_ms(&key, channel.rate_limit, now_ms());
        if wait > 0 {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(channel = %channel.name, recipient = %n.recipient, wait_ms = wait, "rate limit reached; notification held back");
            let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        // Recorded as sent (by this outbox before a crash, or by another instance): not again.
        match store.notification_recorded(&n.id).await {
            Ok(true) => {
                tracing::info!(channel = %channel.name, id = %n.id, "notification already sent; not sent again");
                ack(&stats);
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(channel = %channel.name, id = %n.id, error = %e, "notification history not readable; sending anyway");
            }
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = sender.send(&n) => r,
        };
        match outcome {
            Ok(()) => {
                delay = RETRY_MIN;
                let sent = now_ms();
                limiter.note(&key, sent);
                let record = SentRecord {
                    id: n.id.clone(),
                    channel: channel.name.clone(),
                    recipient: n.recipient.clone(),
                    site: n.site.clone(),
                    subject: n.subject.clone(),
                    event: n.event.clone(),
                    status: n.status.clone(),
                    cells: n.items.len(),
                    created_ms: n.created_ms,
                    sent_ms: sent,
                };
                // Before the outbox forgets it: a crash in between finds it recorded.
                if let Err(e) = store.record_notifications(&[record]).await {
                    tracing::warn!(channel = %channel.name, id = %n.id, error = %e, "sent notification not recorded in the history");
                }
                ack(&stats);
                stats.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(channel = %channel.name, id = %n.id, site = %n.site, "notification sent");
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %channel.name, id = %n.id, error = %e, retry_in = ?delay, "notification not delivered; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_holds_back_per_recipient() {
        let mut l = RateLimiter::default();
        for i in 0..3 {
            assert_eq!(l.wait_ms("a", 3, i), 0);
            l.note("a", i);
        }
        assert_eq!(l.wait_ms("a", 3, 10), 3_600_000 - 10);
        assert_eq!(l.wait_ms("b", 3, 10), 0);
        assert_eq!(l.wait_ms("a", 3, 3_600_000), 0);
    }
}
