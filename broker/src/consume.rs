//! `gridprobe consume`: reads result messages from the configured brokers and writes them into
//! a result store, acknowledging only after the store has them. Duplicates (a republish after a
//! spool replay, a redelivery after a crash) are dropped by `message_id`
//! ([`gridprobe_results::ResultStore::insert_once`]). A message that is not a valid result is
//! logged, counted and acknowledged, so it never blocks the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use gridprobe_config::publish::{subject_filter, PublishKind, PublishTarget};
use gridprobe_results::{NewResult, ResultMessage, ResultStore};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

/// Most messages written to the store in one transaction.
pub const BATCH: usize = 500;
/// How long to wait for more messages before writing a partial batch.
pub(crate) const LINGER: Duration = Duration::from_millis(100);

/// Counters of a consumer.
#[derive(Debug, Default)]
pub struct ConsumeStats {
    /// Messages received.
    pub received: AtomicU64,
    /// Results written to the store.
    pub stored: AtomicU64,
    /// Messages whose `message_id` was already stored.
    pub duplicates: AtomicU64,
    /// Messages that were not valid result messages (acknowledged and dropped).
    pub malformed: AtomicU64,
    /// Failed store writes (each retried before acknowledging).
    pub store_errors: AtomicU64,
}

/// Consumes from every target until `shutdown`; each target reconnects on its own after
/// failures. `on_ready` is told once per (re)connection, with a line for the operator.
pub async fn consume(
    targets: &[PublishTarget],
    store: Arc<dyn ResultStore>,
    stats: Arc<ConsumeStats>,
    shutdown: CancellationToken,
    on_ready: Arc<dyn Fn(String) + Send + Sync>,
) {
    let mut tasks = Vec::new();
    for t in targets {
        let t = t.clone();
        let store = store.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        let on_ready = on_ready.clone();
        if let PublishKind::Stomp(settings) = &t.kind {
            // A configuration gap, not an outage: say so once rather than retry forever.
            if let Err(e) = crate::stomp::subscription(settings) {
                tracing::error!(target_name = %t.name, error = %e, "cannot consume from this target");
                eprintln!("gridprobe consume: {}: {e}", t.name);
                continue;
            }
        }
        tasks.push(tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            while !shutdown.is_cancelled() {
                let outcome = match &t.kind {
                    PublishKind::Amqp { .. } => {
                        consume_amqp(&t, &*store, &stats, &shutdown, &*on_ready).await
                    }
                    PublishKind::Nats { .. } => {
                        consume_nats(&t, &*store, &stats, &shutdown, &*on_ready).await
                    }
                    PublishKind::Stomp(settings) => {
                        crate::stomp::consume(&t, settings, &*store, &stats, &shutdown, &*on_ready)
                            .await
                    }
                };
                match outcome {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(target_name = %t.name, error = %e, retry_in = ?delay, "consumer failed; reconnecting");
                        eprintln!("gridprobe consume: {}: {e} (retrying in {delay:?})", t.name);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Decodes a batch and writes it once per message id, retrying the store until it accepts or
/// `shutdown` (then `Err`: nothing is acknowledged and the broker redelivers later).
pub(crate) async fn store_batch(
    payloads: &[&[u8]],
    store: &dyn ResultStore,
    stats: &ConsumeStats,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    stats
        .received
        .fetch_add(payloads.len() as u64, Ordering::Relaxed);
    let mut keyed: Vec<(String, NewResult)> = Vec::with_capacity(payloads.len());
    for p in payloads {
        match ResultMessage::from_json(p).and_then(|m| Ok((m.to_new_result()?, m))) {
            Ok((r, m)) => keyed.push((m.message_id, r)),
            Err(e) => {
                let n = stats.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(error = %e, malformed_total = n, "message dropped: not a gridprobe result");
                }
            }
        }
    }
    if keyed.is_empty() {
        return Ok(());
    }
    let mut delay = Duration::from_millis(100);
    loop {
        match store.insert_once(&keyed).await {
            Ok(done) => {
                stats
                    .stored
                    .fetch_add(done.inserted as u64, Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add(done.duplicates as u64, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, batch = keyed.len(), retry_in = ?delay, "cannot write consumed results; not acknowledging, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err("stopping with a batch unwritten (it will be redelivered)".into()),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn consume_amqp(
    t: &PublishTarget,
    store: &dyn ResultStore,
    stats: &ConsumeStats,
    shutdown: &CancellationToken,
    on_ready: &(dyn Fn(String) + Send + Sync),
) -> Result<(), String> {
    let PublishKind::Amqp {
        exchange,
        queue,
        binding_key,
        ..
    } = &t.kind
    else {
        return Err("not an AMQP target".into());
    };
    let link = crate::amqp::connect(t, false).await?;
    let ch = &link.channel;
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("cannot declare queue `{queue}`: {e}"))?;
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        binding_key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| {
        format!("cannot bind queue `{queue}` to `{exchange}` with `{binding_key}`: {e}")
    })?;
    ch.basic_qos(BATCH as u16, BasicQosOptions::default())
        .await
        .map_err(|e| format!("cannot set the prefetch: {e}"))?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "gridprobe-consume".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume from `{queue}`: {e}"))?;
    on_ready(format!(
        "{}: consuming queue {queue} (bound to exchange {exchange} with {binding_key}) at {}",
        t.name, t.url
    ));
    loop {
        let first = tokio::select! {
            d = consumer.next() => d,
            _ = shutdown.cancelled() => {
                let _ = link.conn.close(200, "gridprobe consume stopping".into()).await;
                return Ok(());
            }
        };
        let mut batch = match first {
            Some(Ok(d)) => vec![d],
            Some(Err(e)) => return Err(format!("delivery failed: {e}")),
            None => return Err("the broker cancelled the consumer".into()),
        };
        while batch.len() < BATCH {
            match tokio::time::timeout(LINGER, consumer.next()).await {
                Ok(Some(Ok(d))) => batch.push(d),
                Ok(Some(Err(e))) => return Err(format!("delivery failed: {e}")),
                Ok(None) | Err(_) => break,
            }
        }
        let payloads: Vec<&[u8]> = batch.iter().map(|d| d.data.as_slice()).collect();
        store_batch(&payloads, store, stats, shutdown).await?;
        if let Some(last) = batch.last() {
            last.ack(BasicAckOptions { multiple: true })
                .await
                .map_err(|e| format!("cannot acknowledge: {e}"))?;
        }
    }
}

async fn consume_nats(
    t: &PublishTarget,
    store: &dyn ResultStore,
    stats: &ConsumeStats,
    shutdown: &CancellationToken,
    on_ready: &(dyn Fn(String) + Send + Sync),
) -> Result<(), String> {
    let PublishKind::Nats {
        subject,
        stream: stream_name,
        consumer: name,
        ..
    } = &t.kind
    else {
        return Err("not a NATS target".into());
    };
    let (_client, _js, stream) = crate::nats::connect(t).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            name,
            jetstream::consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subject_filter(subject),
                // Acknowledging the last message of a batch acknowledges the batch.
                ack_policy: jetstream::consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            format!("cannot find or create consumer `{name}` on stream `{stream_name}`: {e}")
        })?;
    on_ready(format!(
        "{}: consuming stream {stream_name} (durable consumer {name}, subjects {}) at {}",
        t.name,
        subject_filter(subject),
        t.url
    ));
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let fetched = tokio::select! {
            f = consumer.fetch().max_messages(BATCH).expires(Duration::from_secs(1)).messages() => f,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let mut messages = fetched.map_err(|e| format!("fetch failed: {e}"))?;
        let mut batch = Vec::new();
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => return Ok(()),
            };
            match next {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => return Err(format!("fetch failed: {e}")),
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let payloads: Vec<&[u8]> = batch.iter().map(|m| m.payload.as_ref()).collect();
        store_batch(&payloads, store, stats, shutdown).await?;
        if let Some(last) = batch.last() {
            last.ack()
                .await
                .map_err(|e| format!("cannot acknowledge: {e}"))?;
        }
    }
}
