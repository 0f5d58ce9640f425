//! The agents' broker over RabbitMQ (AMQP 0-9-1, lapin with rustls), the second backend behind
//! [`CentreLink`] / [`AgentLink`].
//!
//! - Work: one durable queue per site, `<prefix>.work.<SITE>`, declared by the centre and
//!   published to through the default exchange (persistent, publisher confirms, expiring when
//!   the centre stops waiting). The site's agents only consume from it, each worker on a channel
//!   of its own with prefetch 1 and manual acknowledgement: a run waits in the queue, not in a
//!   busy agent. RabbitMQ hands an unacknowledged run to another consumer when its agent's
//!   connection goes (killed, or silent past the AMQP heartbeat timeout); an agent that cannot
//!   publish a run's result in time gives the run back (nack, requeue).
//! - Results and heartbeats: one durable topic exchange, `<prefix>.agents`, with routing keys
//!   `<prefix>.results.<SITE>` and `<prefix>.heartbeat.<SITE>` (the NATS subjects, so the centre
//!   checks them the same way). Results go to the centre's durable queue `<prefix>.results`
//!   (persistent, mandatory, confirmed); heartbeats to a queue of the centre's own connection.
//!   RabbitMQ's topic permissions keep an agent user to its own site's routing keys.
//!
//! There is no message-id deduplication in RabbitMQ: a slot handed out twice (a centre restarted
//! mid-slot) may run twice, and the centre keeps one result per run id.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connect, Connection, ConnectionProperties, ExchangeKind};
use tokio_util::sync::CancellationToken;

use super::link::{AgentLink, CentreLink, LinkSpec, Sink, WorkMessage, WorkStream};
use super::wire::{Names, Work};

/// How long connecting (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the broker's confirms of one publication may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP heartbeat asked for when the URL names none: RabbitMQ closes a connection silent for
/// about twice this, and requeues the runs its consumers held (a frozen agent's).
const HEARTBEAT_SECS: u16 = 10;
/// Unacknowledged results the centre takes at once.
const RESULTS_PREFETCH: u16 = 256;

/// The topic exchange of results and heartbeats.
pub fn exchange(names: &Names) -> String {
    format!("{}.agents", names.prefix())
}

/// The centre's durable queue of every site's results.
pub fn results_queue(names: &Names) -> String {
    format!("{}.results", names.prefix())
}

/// A site's work queue.
pub fn work_queue(names: &Names, site: &str) -> String {
    names.work_subject(site)
}

/// One connection to RabbitMQ, made again when it is lost; channels are opened on it.
struct Conn {
    /// The URL with the password (never logged) and a heartbeat.
    url: String,
    /// The URL for messages (no password).
    shown: String,
    /// PEM of the extra CA (`ca_file`), if any.
    ca_pem: Option<String>,
    name: String,
    conn: tokio::sync::Mutex<Option<Connection>>,
    /// Whether the current connection is up (for `connected`, without the lock).
    status: std::sync::Mutex<Option<lapin::ConnectionStatus>>,
}

impl Conn {
    fn new(spec: &LinkSpec) -> Result<Conn, String> {
        let url = connect_url(&spec.url, spec.password.as_deref())?;
        let ca_pem = match &spec.ca_file {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        Ok(Conn {
            url,
            shown: gridprobe_config::model::redact_url(&spec.url),
            ca_pem,
            name: spec.client_name.clone(),
            conn: tokio::sync::Mutex::new(None),
            status: std::sync::Mutex::new(None),
        })
    }

    fn connected(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(lapin::ConnectionStatus::connected)
    }

    /// A new channel, on the current connection or a new one.
    async fn channel(&self) -> Result<Channel, String> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| !c.status().connected()) {
            if let Some(old) = guard.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    old.close(200, "gridprobe reconnecting".into()),
                )
                .await;
            }
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: self.ca_pem.clone(),
            };
            let props =
                ConnectionProperties::default().with_connection_name(self.name.clone().into());
            let runtime = lapin::runtime::default_runtime()
                .map_err(|e| format!("no runtime for the AMQP client: {e}"))?;
            let connecting = self.url.as_str().connect_with_config(props, tls, runtime);
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| {
                    format!(
                        "connecting to {} timed out after {}s",
                        self.shown,
                        CONNECT_TIMEOUT.as_secs()
                    )
                })?
                .map_err(|e| format!("cannot connect to {}: {e}", self.shown))?;
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.status().clone());
            tracing::info!(broker = %self.shown, "connected to the agents' RabbitMQ broker");
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_ref() else {
            return Err("not connected".into());
        };
        conn.create_channel()
            .await
            .map_err(|e| format!("cannot open a channel on {}: {e}", self.shown))
    }
}

/// The URL to connect with: the password put in (percent-encoded), and an AMQP heartbeat of
/// [`HEARTBEAT_SECS`] unless the URL asks for another.
pub fn connect_url(url: &str, password: Option<&str>) -> Result<String, String> {
    let shown = gridprobe_config::model::redact_url(url);
    let mut u = url::Url::parse(url).map_err(|e| format!("invalid broker URL {shown}: {e}"))?;
    if u.password().is_some() {
        return Err(
            "the broker URL holds a password: give it in a file or an environment variable".into(),
        );
    }
    if let Some(password) = password {
        if u.username().is_empty() {
            return Err(
                "a password is given but the URL names no user (write USER@ before the host)"
                    .into(),
            );
        }
        u.set_password(Some(password))
            .map_err(|()| format!("cannot put the password into the URL {shown}"))?;
    }
    if !u.query_pairs().any(|(k, _)| k == "heartbeat") {
        u.query_pairs_mut()
            .append_pair("heartbeat", &HEARTBEAT_SECS.to_string());
    }
    Ok(u.to_string())
}

fn read_ca(path: &Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "ca_file {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// Waits for a confirm, counting a nack or a returned (unroutable) message as a failure.
async fn confirmed(confirm: lapin::PublisherConfirm, what: &str) -> Result<(), String> {
    let c = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| {
            format!(
                "no confirm from the broker for {what} within {}s",
                CONFIRM_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("no confirm from the broker for {what}: {e}"))?;
    if c.is_nack() {
        return Err(format!("the broker refused (nack) {what}"));
    }
    if c.take_message().is_some() {
        return Err(format!("the broker has no queue for {what} (unroutable)"));
    }
    Ok(())
}

/// The centre on RabbitMQ.
pub struct AmqpCentre {
    names: Names,
    conn: Conn,
    /// The confirm-mode channel work is published on, with the sites whose queues were
    /// declared on it.
    publisher: tokio::sync::Mutex<Option<(Channel, HashSet<String>)>>,
}

impl AmqpCentre {
    /// Prepares the connection (made on first use, and again after a loss).
    pub fn connect(spec: &LinkSpec, names: Names) -> Result<AmqpCentre, String> {
        Ok(AmqpCentre {
            conn: Conn::new(spec)?,
            names,
            publisher: tokio::sync::Mutex::new(None),
        })
    }

    /// The exchange, the results queue and its binding.
    async fn declare_common(&self, channel: &Channel) -> Result<(), String> {
        let exchange = exchange(&self.names);
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot declare the exchange `{exchange}`: {e}"))?;
        let queue = results_queue(&self.names);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot declare the results queue `{queue}`: {e}"))?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                self.names.results_filter().as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot bind the results queue `{queue}`: {e}"))?;
        Ok(())
    }

    async fn consume(
        &self,
        sink: &Sink,
        shutdown: &CancellationToken,
        heartbeats: bool,
    ) -> Result<(), String> {
        let channel = self.conn.channel().await?;
        self.declare_common(&channel).await?;
        let queue = if heartbeats {
            // A queue of this connection only: gone with it, nothing piles up while the centre
            // is away.
            let q = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot declare the heartbeat queue: {e}"))?;
            let name = q.name().to_string();
            channel
                .queue_bind(
                    name.as_str().into(),
                    exchange(&self.names).as_str().into(),
                    self.names.heartbeat_filter().as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot bind the heartbeat queue: {e}"))?;
            name
        } else {
            channel
                .basic_qos(RESULTS_PREFETCH, BasicQosOptions::default())
                .await
                .map_err(|e| format!("cannot set the prefetch: {e}"))?;
            results_queue(&self.names)
        };
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: heartbeats,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot consume from `{queue}`: {e}"))?;
        if !heartbeats {
            tracing::info!(queue = %queue, "reading agents' results");
        }
        loop {
            tokio::select! {
                d = consumer.next() => match d {
                    Some(Ok(d)) => {
                        sink(d.routing_key.as_str(), &d.data);
                        if !heartbeats {
                            // Handed over (or dropped for good): the broker may forget it.
                            if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                                tracing::debug!(error = %e, "cannot acknowledge an agent result");
                            }
                        }
                    }
                    Some(Err(e)) => return Err(format!("consumer of `{queue}` ended: {e}")),
                    None => return Err(format!("consumer of `{queue}` ended")),
                },
                _ = shutdown.cancelled() => {
                    let _ = channel.close(200, "gridprobe stopping".into()).await;
                    return Ok(());
                }
            }
        }
    }

    async fn follow(&self, sink: Sink, shutdown: CancellationToken, heartbeats: bool) {
        let what = if heartbeats { "heartbeats" } else { "results" };
        let mut last_error = String::new();
        while !shutdown.is_cancelled() {
            let r = tokio::select! {
                r = self.consume(&sink, &shutdown, heartbeats) => r,
                _ = shutdown.cancelled() => return,
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    if e != last_error {
                        tracing::warn!(error = %e, "cannot read agents' {what}; retrying");
                        last_error = e;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn publish_once(&self, site: &str, work: &Work, expires: Duration) -> Result<(), String> {
        let mut guard = self.publisher.lock().await;
        if guard.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
            let channel = self.conn.channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
            *guard = Some((channel, HashSet::new()));
        }
        let Some((channel, declared)) = guard.as_mut() else {
            return Err("not connected".into());
        };
        let queue = work_queue(&self.names, site);
        if !declared.contains(site) {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot declare the work queue `{queue}`: {e}"))?;
            declared.insert(site.to_string());
        }
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(work.run_id.as_str().into())
            .with_app_id("gridprobe".into())
            // Gone from the queue once the centre no longer waits for it.
            .with_expiration(expires.as_millis().max(1).to_string().into());
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &work.to_json(),
                props,
            )
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        confirmed(confirm, &format!("the run {}", work.run_id)).await
    }
}

#[async_trait::async_trait]
impl CentreLink for AmqpCentre {
    fn connected(&self) -> bool {
        self.conn.connected()
    }

    async fn publish_work(
        &self,
        site: &str,
        work: &Work,
        _ack_wait: Duration,
        _max_deliver: u32,
    ) -> Result<(), String> {
        let expires = Duration::from_millis(
            u64::try_from(work.expires_ms.saturating_sub(work.dispatched_ms)).unwrap_or(0),
        );
        let r = self.publish_once(site, work, expires).await;
        if r.is_err() {
            // A channel with an error is closed by the broker: start afresh next time.
            if let Some((c, _)) = self.publisher.lock().await.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.close(200, "gridprobe reopening".into()),
                )
                .await;
            }
        }
        r
    }

    async fn follow_results(&self, sink: Sink, shutdown: CancellationToken) {
        self.follow(sink, shutdown, false).await;
    }

    async fn follow_heartbeats(&self, sink: Sink, shutdown: CancellationToken) {
        self.follow(sink, shutdown, true).await;
    }
}

/// An agent on RabbitMQ.
pub struct AmqpAgent {
    conn: std::sync::Arc<Conn>,
    exchange: String,
    queue: String,
    results_key: String,
    heartbeat_key: String,
    /// The confirm-mode channel results go on.
    publisher: tokio::sync::Mutex<Option<Channel>>,
    /// The channel heartbeats go on (no confirms).
    heartbeats: tokio::sync::Mutex<Option<Channel>>,
}

impl AmqpAgent {
    /// Prepares the connection (made on first use, and again after a loss).
    pub fn connect(spec: &LinkSpec, names: Names, site: &str) -> Result<AmqpAgent, String> {
        Ok(AmqpAgent {
            conn: std::sync::Arc::new(Conn::new(spec)?),
            exchange: exchange(&names),
            queue: work_queue(&names, site),
            results_key: names.results_subject(site),
            heartbeat_key: names.heartbeat_subject(site),
            publisher: tokio::sync::Mutex::new(None),
            heartbeats: tokio::sync::Mutex::new(None),
        })
    }

    async fn publish_all(
        &self,
        guard: &mut Option<Channel>,
        messages: &[(String, Vec<u8>)],
    ) -> Result<(), String> {
        if guard.as_ref().is_none_or(|c| !c.status().connected()) {
            let channel = self.conn.channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
            *guard = Some(channel);
        }
        let Some(channel) = guard.as_ref() else {
            return Err("not connected".into());
        };
        let mut confirms = Vec::with_capacity(messages.len());
        for (id, body) in messages {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into())
                .with_app_id("gridprobe".into());
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    self.results_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    props,
                )
                .await
                .map_err(|e| format!("publish failed: {e}"))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirmed(confirm, "a result").await.map_err(|e| {
                if e.contains("unroutable") {
                    format!(
                        "{e}: the centre has not declared `{}` bound to `{}` yet",
                        self.results_key, self.exchange
                    )
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AgentLink for AmqpAgent {
    fn work(&self) -> Box<dyn WorkStream> {
        Box::new(AmqpWork {
            conn: self.conn.clone(),
            queue: self.queue.clone(),
            consumer: None,
            last_error: String::new(),
        })
    }

    async fn publish_results(&self, messages: &[(String, Vec<u8>)]) -> Result<(), String> {
        let mut guard = self.publisher.lock().await;
        let r = self.publish_all(&mut guard, messages).await;
        if r.is_err() {
            // A channel with unconfirmed messages cannot be trusted: a new one next time.
            if let Some(c) = guard.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.close(200, "gridprobe reopening".into()),
                )
                .await;
            }
        }
        r
    }

    async fn heartbeat(&self, payload: Vec<u8>) -> Result<(), String> {
        let mut guard = self.heartbeats.lock().await;
        if guard.as_ref().is_none_or(|c| !c.status().connected()) {
            *guard = Some(self.conn.channel().await?);
        }
        let Some(channel) = guard.as_ref() else {
            return Err("not connected".into());
        };
        let sent = channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.heartbeat_key.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await;
        if let Err(e) = sent {
            guard.take();
            return Err(format!("heartbeat not sent: {e}"));
        }
        Ok(())
    }
}

/// A worker's consumer of the site's queue: its own channel, prefetch 1, manual acks.
struct AmqpWork {
    conn: std::sync::Arc<Conn>,
    queue: String,
    consumer: Option<lapin::Consumer>,
    last_error: String,
}

impl AmqpWork {
    async fn subscribe(&self) -> Result<lapin::Consumer, String> {
        let channel = self.conn.channel().await?;
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .map_err(|e| format!("cannot set the prefetch: {e}"))?;
        // No declaration: the centre makes the queue, and an agent user may only read it.
        channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot consume from `{}`: {e}", self.queue))
    }
}

#[async_trait::async_trait]
impl WorkStream for AmqpWork {
    async fn next(&mut self, shutdown: &CancellationToken) -> Option<Box<dyn WorkMessage>> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let Some(consumer) = self.consumer.as_mut() else {
                let subscribed = tokio::select! {
                    s = self.subscribe() => s,
                    _ = shutdown.cancelled() => return None,
                };
                match subscribed {
                    Ok(c) => {
                        if !self.last_error.is_empty() {
                            tracing::info!(queue = %self.queue, "taking the site's work");
                        }
                        self.last_error.clear();
                        self.consumer = Some(c);
                    }
                    Err(e) => {
                        // The centre makes the queue with the site's first run.
                        if e != self.last_error {
                            tracing::info!(error = %e, queue = %self.queue, "waiting for the site's work queue");
                            self.last_error = e;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = shutdown.cancelled() => return None,
                        }
                    }
                }
                continue;
            };
            let next = tokio::select! {
                d = consumer.next() => d,
                _ = shutdown.cancelled() => return None,
            };
            match next {
                Some(Ok(d)) => return Some(Box::new(AmqpMessage(d))),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot take work; reconnecting");
                    self.consumer = None;
                }
                None => {
                    self.consumer = None;
                }
            }
        }
    }
}

struct AmqpMessage(lapin::message::Delivery);

#[async_trait::async_trait]
impl WorkMessage for AmqpMessage {
    fn payload(&self) -> &[u8] {
        &self.0.data
    }

    async fn ack(&self) -> Result<(), String> {
        self.0
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn term(&self) {
        let _ = self
            .0
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await;
    }

    async fn release(&self) {
        let _ = self
            .0
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_the_site_token() {
        let n = Names::new("gridprobe");
        assert_eq!(exchange(&n), "gridprobe.agents");
        assert_eq!(results_queue(&n), "gridprobe.results");
        assert_eq!(work_queue(&n, "T2_AGENT"), "gridprobe.work.T2_5FAGENT");
        assert_eq!(
            n.results_subject("T2_AGENT"),
            "gridprobe.results.T2_5FAGENT"
        );
    }

    #[test]
    fn the_password_goes_into_the_url_and_a_heartbeat_is_asked_for() {
        let u = connect_url("amqp://agent@127.0.0.1:5672/gp", Some("p@ss/w:rd")).expect("url");
        assert!(
            u.starts_with("amqp://agent:p%40ss%2Fw%3Ard@127.0.0.1:5672/gp"),
            "{u}"
        );
        assert!(u.ends_with("?heartbeat=10"), "{u}");
        let u = connect_url("amqps://h/vh?heartbeat=30", None).expect("url");
        assert_eq!(u, "amqps://h/vh?heartbeat=30");
        let e = connect_url("amqp://u:secret@h/", None).expect_err("password in URL");
        assert!(!e.contains("secret"), "{e}");
        assert!(connect_url("amqp://h/", Some("x")).is_err());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "nothing").expect("write");
        assert!(read_ca(&p)
            .expect_err("no PEM")
            .contains("no PEM certificate"));
        assert!(read_ca(&dir.path().join("missing")).is_err());
    }
}
