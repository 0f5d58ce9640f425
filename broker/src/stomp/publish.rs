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
        if guard.as_mut().is_some_and(Link::is_broken) {
            *guard = None;
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use gridprobe_config::publish::PasswordSource;
    use gridprobe_probes::{Outcome, ProbeResult, Trigger};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::stomp::frame::{Decoder, Frame, Item, Limits};

    fn result(i: i64) -> NewResult {
        NewResult {
            result: ProbeResult {
                metric: "org.example.Ping".into(),
                kind: "tcp".into(),
                vo: "ops".into(),
                site: "SITE-A".into(),
                hostname: "ce.example.org".into(),
                flavour: "CE".into(),
                started_at_ms: 1_700_000_000_000 + i,
                duration_ms: 1,
                outcome: Outcome::ok("fine"),
                attempt: 1,
                trigger: Trigger::Scheduled,
            },
            is_final: true,
        }
    }

    /// How the in-test broker answers the SENDs of one connection.
    #[derive(Clone, Copy)]
    enum Answer {
        /// A RECEIPT for every SEND.
        All,
        /// A RECEIPT for every SEND but the third.
        AllButThird,
        /// An ERROR frame after the first SEND.
        Error,
    }

    /// A broker on 127.0.0.1 speaking just enough STOMP: one connection per answer, in order.
    /// Returns its port.
    async fn broker(answers: Vec<Answer>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut d = Decoder::new(Limits::default());
                    let mut buf = BytesMut::new();
                    let mut sends = 0usize;
                    loop {
                        while let Ok(Some(item)) = d.decode(&mut buf) {
                            let Item::Frame(f) = item else { continue };
                            let reply = match (f.command.as_str(), answer) {
                                ("CONNECT", _) => Frame::new("CONNECTED").header("version", "1.2"),
                                ("SEND", Answer::Error) => {
                                    Frame::new("ERROR").header("message", "queue full")
                                }
                                ("SEND", _) => {
                                    sends += 1;
                                    if sends == 3 && matches!(answer, Answer::AllButThird) {
                                        continue;
                                    }
                                    Frame::new("RECEIPT")
                                        .header("receipt-id", f.get("receipt").unwrap_or(""))
                                }
                                _ => continue,
                            };
                            let _ = s.write_all(&reply.encode()).await;
                        }
                        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn target(port: u16) -> Arc<StompTarget> {
        StompTarget::new(
            PublishTarget {
                name: "t".into(),
                url: format!("stomp://127.0.0.1:{port}"),
                password: PasswordSource::None,
                kind: PublishKind::Stomp(StompSettings {
                    destination: "/queue/{site}".into(),
                    subscribe: None,
                    virtual_host: "/".into(),
                    heartbeat: Duration::from_secs(10),
                    receipt_timeout: Duration::from_secs(1),
                    max_frame_bytes: 1 << 20,
                    ca_file: None,
                }),
            },
            "gp-test",
        )
    }

    #[tokio::test]
    async fn a_batch_is_delivered_only_when_every_receipt_is_back() {
        let port = broker(vec![Answer::AllButThird, Answer::Error, Answer::All]).await;
        let t = target(port);
        let batch: Vec<NewResult> = (0..3).map(result).collect();
        let ids: Vec<String> = (0..3).map(|i| format!("id-{i}")).collect();
        let e = t
            .deliver(&batch, &ids, false)
            .await
            .expect_err("a receipt is missing");
        assert!(e.contains("1 of 3 receipts did not arrive"), "{e}");
        // A new connection after a failure; an ERROR frame fails the batch too.
        let e = t
            .deliver(&batch, &ids, true)
            .await
            .expect_err("ERROR frame");
        assert!(e.contains("the broker sent ERROR: queue full"), "{e}");
        t.deliver(&batch, &ids, true)
            .await
            .expect("every receipt back");
    }
}
