//! Connecting to the agents' broker, for the centre and for an agent alike, and the seam between
//! the shared centre/agent logic and the two brokers: [`CentreLink`] and [`AgentLink`], with one
//! implementation per broker (`nats.rs` for NATS JetStream, `amqp.rs` for RabbitMQ); the URL's
//! scheme picks it ([`BrokerKind`]).
//!
//! NATS: user and password from a file or the environment (never from the URL, never logged),
//! TLS when the URL says `tls://` (an extra CA file for a private CA), and a reply prefix of the
//! caller's own so that broker permissions can keep agents out of each other's replies.

use std::path::PathBuf;
use std::time::Duration;

/// How long connecting (and each JetStream request) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection needs.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    /// `nats://[USER@]host:port` or `tls://[USER@]host:port`, without a password.
    pub url: String,
    /// The user's password, read from a file or the environment by the caller.
    pub password: Option<String>,
    /// Extra CA certificate (PEM) for a `tls://` broker.
    pub ca_file: Option<PathBuf>,
    /// The client's name on the broker (`gridprobe agent SITE/NAME`).
    pub client_name: String,
    /// Reply-subject prefix, when not the default `_INBOX`.
    pub inbox_prefix: Option<String>,
}

/// Connects. The client reconnects by itself forever; the first connection is also retried in
/// the background, so an agent or centre started while the broker is down comes up and
/// catches up once it is back (requests fail in the meantime).
pub async fn connect(spec: &LinkSpec) -> Result<async_nats::Client, String> {
    let mut url = url::Url::parse(&spec.url).map_err(|e| format!("invalid broker URL: {e}"))?;
    if url.password().is_some() {
        return Err(
            "the broker URL holds a password: give it in a file or an environment variable".into(),
        );
    }
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .name(spec.client_name.clone())
        .retry_on_initial_connect()
        .max_reconnects(None::<usize>);
    if let Some(prefix) = &spec.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = &spec.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if url.scheme() == "tls" {
        options = options.require_tls(true);
    }
    if let Some(password) = &spec.password {
        if url.username().is_empty() {
            return Err(
                "a password is given but the URL names no user (write USER@ before the host)"
                    .into(),
            );
        }
        options = options.user_and_password(url.username().to_string(), password.clone());
        let _ = url.set_username("");
    }
    let shown = gridprobe_config::model::redact_url(&spec.url);
    options
        .connect(url.as_str())
        .await
        .map_err(|e| format!("cannot connect to {shown}: {e}"))
}

/// Which broker the agents' URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `nats://`, `tls://`: NATS JetStream.
    Nats,
    /// `amqp://`, `amqps://`: RabbitMQ (AMQP 0-9-1).
    Amqp,
}

impl BrokerKind {
    /// The broker of a URL, by its scheme.
    pub fn of_url(url: &str) -> Option<BrokerKind> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "nats" | "tls" => Some(BrokerKind::Nats),
            "amqp" | "amqps" => Some(BrokerKind::Amqp),
            _ => None,
        }
    }
}

/// One run taken from a site's work queue, to be acknowledged once its result is published.
#[async_trait::async_trait]
pub trait WorkMessage: Send + Sync {
    /// The work message's bytes.
    fn payload(&self) -> &[u8];
    /// Done: the broker forgets the run.
    async fn ack(&self) -> Result<(), String>;
    /// Refused for good (unreadable, another site's): never handed out again.
    async fn term(&self);
    /// Not done here (its result could not be published in time): handed to an agent again.
    async fn release(&self);
}

/// One worker's place at its site's work queue: one run at a time.
#[async_trait::async_trait]
pub trait WorkStream: Send {
    /// The next run; `None` once `shutdown` fires. Waits for the queue and reconnects by
    /// itself.
    async fn next(
        &mut self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Box<dyn WorkMessage>>;
}

/// An agent's side of the broker.
#[async_trait::async_trait]
pub trait AgentLink: Send + Sync {
    /// A worker's own subscription to the site's work.
    fn work(&self) -> Box<dyn WorkStream>;
    /// Publishes results (message id, JSON) for the agent's site and waits until the broker
    /// has them.
    async fn publish_results(&self, messages: &[(String, Vec<u8>)]) -> Result<(), String>;
    /// Sends one heartbeat (best effort).
    async fn heartbeat(&self, payload: Vec<u8>) -> Result<(), String>;
}

/// Receives one message: its subject (NATS) or routing key (AMQP), which names the site it
/// was published for, and its bytes.
pub type Sink = std::sync::Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// The centre's side of the broker.
#[async_trait::async_trait]
pub trait CentreLink: Send + Sync {
    /// Whether the centre is connected to the broker now.
    fn connected(&self) -> bool;
    /// Hands one run to the site's work queue (made first if needed); `ack_wait` is how long an
    /// agent may hold it, `max_deliver` how many agents may try it.
    async fn publish_work(
        &self,
        site: &str,
        work: &super::wire::Work,
        ack_wait: Duration,
        max_deliver: u32,
    ) -> Result<(), String>;
    /// Follows every site's results until `shutdown`; each goes to `sink`, then is
    /// acknowledged.
    async fn follow_results(&self, sink: Sink, shutdown: tokio_util::sync::CancellationToken);
    /// Follows every site's heartbeats until `shutdown`.
    async fn follow_heartbeats(&self, sink: Sink, shutdown: tokio_util::sync::CancellationToken);
}

/// Connects the centre to the broker of `spec.url`.
pub async fn connect_centre(
    spec: &LinkSpec,
    names: &super::wire::Names,
) -> Result<std::sync::Arc<dyn CentreLink>, String> {
    match BrokerKind::of_url(&spec.url) {
        Some(BrokerKind::Nats) => Ok(std::sync::Arc::new(
            super::nats::NatsCentre::connect(spec, names.clone()).await?,
        )),
        Some(BrokerKind::Amqp) => Ok(std::sync::Arc::new(super::amqp::AmqpCentre::connect(
            spec,
            names.clone(),
        )?)),
        None => Err(unsupported(&spec.url)),
    }
}

/// Connects an agent of `site` to the broker of `spec.url`.
pub async fn connect_agent(
    spec: &LinkSpec,
    names: &super::wire::Names,
    site: &str,
) -> Result<std::sync::Arc<dyn AgentLink>, String> {
    match BrokerKind::of_url(&spec.url) {
        Some(BrokerKind::Nats) => Ok(std::sync::Arc::new(
            super::nats::NatsAgent::connect(spec, names.clone(), site).await?,
        )),
        Some(BrokerKind::Amqp) => Ok(std::sync::Arc::new(super::amqp::AmqpAgent::connect(
            spec,
            names.clone(),
            site,
        )?)),
        None => Err(unsupported(&spec.url)),
    }
}

fn unsupported(url: &str) -> String {
    format!(
        "the agents' broker URL {} is neither nats:// / tls:// (NATS JetStream) nor amqp:// / amqps:// (RabbitMQ)",
        gridprobe_config::model::redact_url(url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_broker() {
        assert_eq!(
            BrokerKind::of_url("nats://a@h:4222"),
            Some(BrokerKind::Nats)
        );
        assert_eq!(BrokerKind::of_url("tls://h:4222"), Some(BrokerKind::Nats));
        assert_eq!(
            BrokerKind::of_url("amqp://u@h:5672/vh"),
            Some(BrokerKind::Amqp)
        );
        assert_eq!(BrokerKind::of_url("AMQPS://h"), Some(BrokerKind::Amqp));
        assert_eq!(BrokerKind::of_url("http://h"), None);
        assert_eq!(BrokerKind::of_url("h:4222"), None);
    }
}
