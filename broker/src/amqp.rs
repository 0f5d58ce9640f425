//! AMQP 0-9-1 (RabbitMQ) with lapin: publishing with confirms, and the consuming side.
//!
//! Every message is persistent (delivery mode 2), `application/json`, carries its
//! `message_id` as the AMQP property too, and is published `mandatory`: a message no queue is
//! bound for comes back (basic.return), is counted as unroutable and logged, and is not retried
//! (retrying cannot help until a queue is bound; `gridprobe consume` binds its queue at start).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gridprobe_config::publish::{PublishKind, PublishTarget};
use gridprobe_results::{NewResult, ResultMessage, Target};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

/// How long connecting (TCP, AMQP handshake, declarations) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the confirms of one batch may take before the connection is given up.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// An open connection with a confirm-mode channel.
pub(crate) struct Link {
    pub(crate) conn: Connection,
    pub(crate) channel: Channel,
}

/// The exchange type as lapin names it.
pub(crate) fn exchange_kind(t: &str) -> ExchangeKind {
    match t {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        _ => ExchangeKind::Topic,
    }
}

/// Connects, opens a channel and declares (or checks) the exchange.
pub(crate) async fn connect(target: &PublishTarget, confirms: bool) -> Result<Link, String> {
    let PublishKind::Amqp {
        exchange,
        exchange_type,
        declare,
        ..
    } = &target.kind
    else {
        return Err("not an AMQP target".into());
    };
    let url = crate::url_with_password(target)?;
    let work = async {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("gridprobe {}", target.name).into());
        let conn = Connection::connect(&url, props)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.url))?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        if confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
        }
        let options = ExchangeDeclareOptions {
            durable: true,
            passive: !declare,
            ..Default::default()
        };
        channel
            .exchange_declare(
                exchange.as_str().into(),
                exchange_kind(exchange_type),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                if *declare {
                    format!("cannot declare exchange `{exchange}` ({exchange_type}, durable): {e}")
                } else {
                    format!("exchange `{exchange}` is not usable (declare = false, so it must exist): {e}")
                }
            })?;
        Ok(Link { conn, channel })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| {
            format!(
                "connecting to {} timed out after {CONNECT_TIMEOUT:?}",
                target.url
            )
        })?
}

/// Publishes to an AMQP exchange with publisher confirms.
pub struct AmqpTarget {
    target: PublishTarget,
    instance: String,
    link: Mutex<Option<Link>>,
    /// Messages the broker returned as unroutable (no queue bound for their routing key).
    pub unroutable: AtomicU64,
    /// Returned since the relay last asked ([`Target::take_unroutable`]).
    unroutable_unreported: AtomicU64,
    /// When the unroutable warning was last logged, and the total then.
    unroutable_logged: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// At most one warning about unroutable messages per this period, with the count since.
const UNROUTABLE_LOG_PERIOD: Duration = Duration::from_secs(60);

impl AmqpTarget {
    /// A publisher for an `amqp` target (connects on first use).
    pub fn new(target: PublishTarget, instance: &str) -> Arc<Self> {
        Arc::new(AmqpTarget {
            target,
            instance: instance.to_string(),
            link: Mutex::new(None),
            unroutable: AtomicU64::new(0),
            unroutable_unreported: AtomicU64::new(0),
            unroutable_logged: std::sync::Mutex::new(None),
        })
    }

    async fn publish(&self, batch: &[NewResult], ids: &[String]) -> Result<(), String> {
        let PublishKind::Amqp {
            exchange,
            routing_key,
            ..
        } = &self.target.kind
        else {
            return Err("not an AMQP target".into());
        };
        let mut guard = self.link.lock().await;
        if guard
            .as_ref()
            .is_none_or(|l| !l.channel.status().connected())
        {
            if let Some(old) = guard.take() {
                // The broker closed the channel (e.g. after an error): close the connection too
                // rather than leave it behind.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    old.conn.close(200, "gridprobe reconnecting".into()),
                )
                .await;
            }
            *guard = Some(connect(&self.target, true).await?);
            tracing::info!(target_name = %self.target.name, url = %self.target.url, "connected to the AMQP broker");
        }
        let Some(link) = guard.as_ref() else {
            return Err("not connected".into());
        };
        let outcome = async {
            let mut confirms = Vec::with_capacity(batch.len());
            for (r, id) in batch.iter().zip(ids) {
                let mut m = ResultMessage::new(&self.instance, r);
                m.message_id = id.clone();
                let key = crate::route(routing_key, &self.instance, &r.result);
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(id.as_str().into())
                    .with_app_id("gridprobe".into());
                let confirm = link
                    .channel
                    .basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &m.to_json(),
                        props,
                    )
                    .await
                    .map_err(|e| format!("publish failed: {e}"))?;
                confirms.push(confirm);
            }
            let mut nacked = 0usize;
            for confirm in confirms {
                let c = confirm
                    .await
                    .map_err(|e| format!("no publisher confirm: {e}"))?;
                if c.is_nack() {
                    nacked += 1;
                } else if let Some(returned) = c.take_message() {
                    self.unroutable_unreported.fetch_add(1, Ordering::Relaxed);
                    let total = self.unroutable.fetch_add(1, Ordering::Relaxed) + 1;
                    self.log_unroutable(exchange, returned.delivery.routing_key.as_str(), total);
                }
            }
            if nacked > 0 {
                return Err(format!(
                    "the broker refused (nack) {nacked} of {} messages",
                    batch.len()
                ));
            }
            Ok(())
        };
        let result = match tokio::time::timeout(CONFIRM_TIMEOUT, outcome).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "publisher confirms did not arrive within {CONFIRM_TIMEOUT:?}"
            )),
        };
        if result.is_err() {
            // Start afresh next time: a channel with unconfirmed messages cannot be trusted.
            if let Some(link) = guard.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    link.conn.close(200, "gridprobe reconnecting".into()),
                )
                .await;
            }
        }
        result
    }
}

impl AmqpTarget {
    /// One warning line per [`UNROUTABLE_LOG_PERIOD`] at most, however many messages come back.
    fn log_unroutable(&self, exchange: &str, routing_key: &str, total: u64) {
        let mut last = self
            .unroutable_logged
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let since = match *last {
            Some((at, _)) if at.elapsed() < UNROUTABLE_LOG_PERIOD => return,
            Some((_, then)) => total.saturating_sub(then),
            None => total,
        };
        *last = Some((std::time::Instant::now(), total));
        tracing::warn!(
            target_name = %self.target.name,
            exchange = %exchange,
            routing_key = %routing_key,
            unroutable = since,
            unroutable_total = total,
            "the broker has no queue for these messages: {since} not delivered (bind a queue, \
             e.g. start `gridprobe consume`); counted in gridprobe_publish_unroutable_total, \
             logged at most once a minute"
        );
    }
}

#[async_trait]
impl Target for AmqpTarget {
    fn name(&self) -> String {
        format!("amqp publisher {}", self.target.name)
    }

    async fn deliver(
        &self,
        batch: &[NewResult],
        ids: &[String],
        _replay: bool,
    ) -> Result<(), String> {
        self.publish(batch, ids).await
    }

    fn take_unroutable(&self) -> u64 {
        self.unroutable_unreported.swap(0, Ordering::Relaxed)
    }
}
