//! Where a relay delivers: the [`Target`] trait, and the result store as one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::store::{NewResult, ResultStore, StoreError};

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
    /// backlog is better delivered in batches of up to [`super::WriterConfig::backlog_batch_size`]
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
pub(super) struct StoreTarget {
    pub(super) store: Arc<dyn ResultStore>,
    pub(super) dedupe: AtomicBool,
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
