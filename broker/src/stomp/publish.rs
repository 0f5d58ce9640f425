//! Publishing to a STOMP destination: each result a persistent SEND asking for a receipt; a
//! batch counts as delivered only when every receipt is back, so anything unconfirmed stays in
//! the relay's spool and is sent again, in order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use gridprobe_config::publish::{PublishKind, PublishTarget, StompSettings};
use gridprobe_results::{NewResult, Target};
use tokio::sync::Mutex;

use super::link::{connect, Link};
use super::message::send_frame;

/// Publishes to a STOMP broker with receipts.
pub struct StompTarget {
    target: PublishTarget,
    settings: StompSettings,
    instance: String,
    link: Mutex<Option<Link>>,
    /// Receipt ids are unique per process.
    next_receipt: AtomicU64,
}

impl StompTarget {
    /// A publisher for a `stomp` target (connects on first use).
    pub fn new(target: PublishTarget, instance: &str) -> Arc<Self> {
        let settings = match &target.kind {
            PublishKind::Stomp(s) => s.clone(),
            // The caller matched the kind; an empty destination makes every delivery fail
            // loudly rather than panic.
            _ => StompSettings {
                destination: String::new(),
                subscribe: None,
                virtual_host: "/".into(),
                heartbeat: gridprobe_config::publish::stomp::DEFAULT_HEARTBEAT,
                receipt_timeout: gridprobe_config::publish::stomp::DEFAULT_RECEIPT_TIMEOUT,
                max_frame_bytes: gridprobe_config::publish::stomp::DEFAULT_MAX_FRAME_BYTES,
                ca_file: None,
            },
        };
        Arc::new(StompTarget {
            target,
            settings,
            instance: instance.to_string(),
            link: Mutex::new(None),
            next_receipt: AtomicU64::new(1),
        })
    }

    async fn publish(&self, batch: &[NewResult], ids: &[String]) -> Result<(), String> {
        if self.settings.destination.is_empty() {
            return Err("not a STOMP target".into());
        }
        let mut guard = self.link.lock().await;
        if guard.is_none() {
            let link = connect(&self.target, &self.settings).await?;
            tracing::info!(
                target_name = %self.target.name,
                url = %self.target.url,
                server = %link.server,
                heartbeat_send = ?link.heartbeats.send_every,
                heartbeat_expect = ?link.heartbeats.expect_every,
                "connected to the STOMP broker"
            );
            *guard = Some(link);
        }
        let Some(link) = guard.as_mut() else {
            return Err("not connected".into());
        };
        let result = self.send_batch(link, batch, ids).await;
        if result.is_err() {
            // Start afresh next time: receipts still owed on this connection cannot be trusted.
            if let Some(old) = guard.take() {
                drop(old);
            }
        }
        result
    }

    async fn send_batch(
        &self,
        link: &mut Link,
        batch: &[NewResult],
        ids: &[String],
    ) -> Result<(), String> {
        let mut owed = HashSet::with_capacity(batch.len());
        let mut frames = Vec::with_capacity(batch.len());
        for (r, id) in batch.iter().zip(ids) {
            let n = self.next_receipt.fetch_add(1, Ordering::Relaxed);
            let receipt = format!("gp-{n}");
            let destination = crate::route(&self.settings.destination, &self.instance, &r.result);
            frames.push(send_frame(&self.instance, r, id, &destination, &receipt));
            owed.insert(receipt);
        }
        link.send(&frames).await?;
        let timeout = self.settings.receipt_timeout;
        let wait = async {
            while !owed.is_empty() {
                let f = link.next().await?;
                match f.command.as_str() {
                    "RECEIPT" => {
                        if let Some(id) = f.get("receipt-id") {
                            owed.remove(id);
                        }
                    }
                    "ERROR" => {
                        return Err(format!("the broker sent ERROR: {}", link.error_text(&f)))
                    }
                    // Nothing else is expected on a publishing connection.
                    _ => {}
                }
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(timeout, wait).await;
        match outcome {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{} of {} receipts did not arrive within {timeout:?}",
                owed.len(),
                batch.len()
            )),
        }
    }
}

#[async_trait]
impl Target for StompTarget {
    fn name(&self) -> String {
        format!("stomp publisher {}", self.target.name)
    }

    async fn deliver(
        &self,
        batch: &[NewResult],
        ids: &[String],
        _replay: bool,
    ) -> Result<(), String> {
        self.publish(batch, ids).await
    }
}
