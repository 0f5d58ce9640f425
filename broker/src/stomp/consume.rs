//! `gridprobe consume` from a STOMP destination: SUBSCRIBE with `client-individual`
//! acknowledgements, results written to the store once per message id, and each message
//! ACKed once, only after the store has it (a message not ACKed is redelivered by the broker
//! after a reconnect, and dropped then as a duplicate).

use gridprobe_config::publish::{template_placeholders, PublishTarget, StompSettings};
use gridprobe_results::ResultStore;
use tokio_util::sync::CancellationToken;

use super::frame::Frame;
use super::link::connect;
use crate::consume::{store_batch, BATCH, LINGER};
use crate::ConsumeStats;

/// The destination `gridprobe consume` subscribes to: `subscribe`, or the publishing
/// destination when it is one fixed name.
pub fn subscription(settings: &StompSettings) -> Result<String, String> {
    if let Some(s) = &settings.subscribe {
        return Ok(s.clone());
    }
    match template_placeholders(&settings.destination) {
        Ok(p) if p.is_empty() => Ok(settings.destination.clone()),
        _ => Err(format!(
            "the destination `{}` has placeholders: set `subscribe` to the destination \
             `gridprobe consume` reads (e.g. a queue they all feed)",
            settings.destination
        )),
    }
}

/// Consumes until `shutdown`; `Err` means reconnect.
pub(crate) async fn consume(
    t: &PublishTarget,
    settings: &StompSettings,
    store: &dyn ResultStore,
    stats: &ConsumeStats,
    shutdown: &CancellationToken,
    on_ready: &(dyn Fn(String) + Send + Sync),
) -> Result<(), String> {
    let destination = subscription(settings)?;
    let mut link = connect(t, settings).await?;
    let sub = Frame::new("SUBSCRIBE")
        .header("id", "0")
        .header("destination", destination.as_str())
        .header("ack", "client-individual")
        .header("receipt", "gridprobe-subscribed")
        // How many unacknowledged messages the broker sends ahead (RabbitMQ, ActiveMQ).
        .header("prefetch-count", BATCH.to_string())
        .header("activemq.prefetchSize", BATCH.to_string());
    link.send(&[sub]).await?;
    // Whatever arrives before the receipt (messages already queued) is kept for the first batch.
    let mut early = Vec::new();
    let subscribed = async {
        loop {
            let f = link.next().await?;
            match f.command.as_str() {
                "RECEIPT" if f.get("receipt-id") == Some("gridprobe-subscribed") => return Ok(()),
                "MESSAGE" => early.push(f),
                "ERROR" => {
                    return Err(format!(
                        "the broker refused the subscription to {destination}: {}",
                        link.error_text(&f)
                    ))
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(settings.receipt_timeout, subscribed)
        .await
        .map_err(|_| {
            format!(
                "no receipt for the subscription to {destination} within {:?}",
                settings.receipt_timeout
            )
        })??;
    on_ready(format!(
        "{}: subscribed to {destination} (STOMP 1.2, client-individual acknowledgements) at {} ({})",
        t.name, t.url, link.server
    ));
    let mut pending = early;
    loop {
        if pending.is_empty() {
            let first = tokio::select! {
                f = link.next() => f?,
                _ = shutdown.cancelled() => {
                    link.close().await;
                    return Ok(());
                }
            };
            take(&link, first, &mut pending)?;
        }
        while pending.len() < BATCH {
            match tokio::time::timeout(LINGER, link.next()).await {
                Ok(f) => take(&link, f?, &mut pending)?,
                Err(_) => break,
            }
        }
        if pending.is_empty() {
            continue;
        }
        let batch = std::mem::take(&mut pending);
        let payloads: Vec<&[u8]> = batch.iter().map(|m| m.body.as_slice()).collect();
        store_batch(&payloads, store, stats, shutdown).await?;
        // One ACK per message, each naming the message's own `ack` id (STOMP 1.2).
        let acks: Vec<Frame> = batch
            .iter()
            .filter_map(|m| m.get("ack").or_else(|| m.get("message-id")))
            .map(|id| Frame::new("ACK").header("id", id))
            .collect();
        link.send(&acks).await?;
    }
}

/// Keeps a MESSAGE; an ERROR ends the connection; anything else is ignored.
fn take(link: &super::link::Link, f: Frame, pending: &mut Vec<Frame>) -> Result<(), String> {
    match f.command.as_str() {
        "MESSAGE" => {
            pending.push(f);
            Ok(())
        }
        "ERROR" => Err(format!("the broker sent ERROR: {}", link.error_text(&f))),
        _ => Ok(()),
    }
}
