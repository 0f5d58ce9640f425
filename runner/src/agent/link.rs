//! Connecting to the agents' broker, for the centre and for an agent alike, and the seam between
//! the shared centre/agent logic and the two brokers: [`CentreLink`] and [`AgentLink`], with one
//! implementation per broker (`nats.rs` for NATS JetStream, `amqp.rs` for RabbitMQ); the URL's
//! scheme picks it ([`BrokerKind`]).
//!
//! NATS: user and password from a file or the environment (never from the URL, never logged),
//! TLS when the URL says `tls://` (an extra CA file for a private CA), and a reply prefix of the
//! caller's own so that broker permissions can keep agents out of each other's replies.
//!
//! The first connection is tried at once, so that what retrying cannot fix (a broker
//! certificate that the CA given does not vouch for, a password the broker refuses, a CA file
//! without certificates) is reported precisely, by [`LinkError`]; a broker that is only down
//! is waited for in the background.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::rustls::{CertificateError, Error as TlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

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

/// Why the broker could not be used. Every text names the broker (without password) and
/// says how to fix it; the setting to name (`--ca-file`, `[agents] ca_file`) is the caller's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The settings cannot work: the URL, the CA file.
    #[error("{0}")]
    Settings(String),
    /// The TLS handshake failed: the broker's certificate is not trusted or not for its name.
    #[error("{0}")]
    Certificate(String),
    /// The broker refused the user or password.
    #[error("{0}")]
    Refused(String),
    /// The broker did not answer (down, unreachable, timed out): worth waiting for.
    #[error("{0}")]
    Unreachable(String),
}

impl LinkError {
    /// Whether retrying cannot help until someone changes a certificate, a CA file or a
    /// password.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LinkError::Unreachable(_))
    }
}

impl From<LinkError> for String {
    fn from(e: LinkError) -> String {
        e.to_string()
    }
}

/// Checks that a CA file can be read and holds at least one PEM certificate: the NATS client
/// would otherwise trust nothing at all (a given CA file replaces the system roots) and every
/// handshake would fail with a less telling "unknown issuer".
pub fn check_ca_file(path: &Path, setting: &str) -> Result<(), LinkError> {
    let bytes = std::fs::read(path).map_err(|e| {
        LinkError::Settings(format!(
            "cannot read {setting} {}: {e}; give the PEM file of the CA that issued the broker's certificate",
            path.display()
        ))
    })?;
    let mut found = 0usize;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| {
            LinkError::Settings(format!(
                "{setting} {}: invalid PEM: {e}; give the PEM file of the CA that issued the broker's certificate",
                path.display()
            ))
        })?;
        found = found.saturating_add(1);
    }
    if found == 0 {
        return Err(LinkError::Settings(format!(
            "{setting} {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----); give the PEM file of the CA that issued the broker's certificate",
            path.display()
        )));
    }
    Ok(())
}

/// The client options and the URL to connect to (user removed, since it goes with the
/// password).
fn options(spec: &LinkSpec) -> Result<(async_nats::ConnectOptions, String), LinkError> {
    let mut url = url::Url::parse(&spec.url)
        .map_err(|e| LinkError::Settings(format!("invalid broker URL: {e}")))?;
    if url.password().is_some() {
        return Err(LinkError::Settings(
            "the broker URL holds a password: give it in a file or an environment variable".into(),
        ));
    }
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .name(spec.client_name.clone())
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
            return Err(LinkError::Settings(
                "a password is given but the URL names no user (write USER@ before the host)"
                    .into(),
            ));
        }
        options = options.user_and_password(url.username().to_string(), password.clone());
        let _ = url.set_username("");
    }
    Ok((options, url.to_string()))
}

/// The TLS error somewhere in a connection error's causes, if any. `io::Error` hides the
/// error it wraps from `source()` (it returns the wrapped error's own source), so it is
/// unwrapped with `get_ref()`.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<TlsError>() {
            return Some(t);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<TlsError>() {
                    return Some(t);
                }
                next = inner.source();
                continue;
            }
        }
        next = err.source();
    }
    None
}

/// A failed connection attempt in words, classified. `ca_setting` is how the caller's user
/// gives a CA (`--ca-file`, `[agents] ca_file`).
pub fn describe(e: &async_nats::ConnectError, shown: &str, ca_setting: &str) -> LinkError {
    use async_nats::ConnectErrorKind as K;
    let detail = e.to_string();
    if let Some(tls) = tls_cause(e) {
        let why = match tls {
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                "the broker's certificate is not issued by a CA this side trusts (UnknownIssuer); give the CA that issued it with {ca_setting}"
            ),
            TlsError::InvalidCertificate(CertificateError::BadSignature) => format!(
                "the broker's certificate does not verify against the CA given (BadSignature); give the CA that issued it with {ca_setting}"
            ),
            TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => "the broker's certificate is not valid for the host name in the URL (NotValidForName); connect with a name its certificate holds".to_string(),
            TlsError::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => "the broker's certificate has expired; the broker needs a new one".to_string(),
            TlsError::InvalidCertificate(c) => format!(
                "the broker's certificate is refused ({c:?}); check it and the CA given with {ca_setting}"
            ),
            other => format!("the TLS handshake failed: {other}"),
        };
        return LinkError::Certificate(format!("cannot connect to {shown}: {why}"));
    }
    match e.kind() {
        K::Tls => LinkError::Certificate(format!(
            "cannot connect to {shown}: TLS set-up failed ({detail}); check {ca_setting}"
        )),
        K::AuthorizationViolation | K::Authentication => LinkError::Refused(format!(
            "cannot connect to {shown}: the broker refused the user or its password ({detail}); check the user in the URL and the password given"
        )),
        K::ServerParse => LinkError::Settings(format!("cannot connect to {shown}: {detail}")),
        K::Dns | K::Io | K::TimedOut | K::MaxReconnects => LinkError::Unreachable(format!(
            "cannot connect to {shown}: {detail}; waiting for the broker"
        )),
    }
}

/// One connection attempt, without retrying: the client on success (it then reconnects by
/// itself forever), the reason otherwise.
pub async fn attempt(spec: &LinkSpec, ca_setting: &str) -> Result<async_nats::Client, LinkError> {
    if let Some(ca) = &spec.ca_file {
        check_ca_file(ca, ca_setting)?;
    }
    let (options, url) = options(spec)?;
    let shown = gridprobe_config::model::redact_url(&spec.url);
    options
        .connect(url.as_str())
        .await
        .map_err(|e| describe(&e, &shown, ca_setting))
}

/// Connects. The first attempt is made at once: a permanent failure (see
/// [`LinkError::is_permanent`]) is returned. A broker that does not answer yet is waited for
/// in the background: the client comes up and catches up once it is back (requests fail in
/// the meantime), so an agent or centre started while the broker is down needs no restart.
pub async fn connect(spec: &LinkSpec, ca_setting: &str) -> Result<async_nats::Client, LinkError> {
    match attempt(spec, ca_setting).await {
        Ok(client) => Ok(client),
        Err(e) if e.is_permanent() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "broker not reachable yet; connecting in the background");
            connect_in_background(spec).await
        }
    }
}

/// A client that connects (and reconnects) in the background, whatever the outcome of each
/// attempt; only settings that cannot work at all are returned as errors.
pub async fn connect_in_background(spec: &LinkSpec) -> Result<async_nats::Client, LinkError> {
    let (options, url) = options(spec)?;
    let shown = gridprobe_config::model::redact_url(&spec.url);
    // With retry_on_initial_connect the client is returned before any attempt.
    options
        .retry_on_initial_connect()
        .connect(url.as_str())
        .await
        .map_err(|e| LinkError::Settings(format!("cannot connect to {shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_without_certificates_are_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("missing.pem");
        let e = check_ca_file(&missing, "--ca-file").expect_err("missing");
        assert!(
            e.to_string().starts_with("cannot read --ca-file ") && e.is_permanent(),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = check_ca_file(&empty, "[agents] ca_file").expect_err("empty");
        assert!(
            e.to_string().contains("[agents] ca_file")
                && e.to_string().contains("no PEM certificate"),
            "{e}"
        );
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(check_ca_file(&bad, "--ca-file").is_err());
    }

    #[test]
    fn certificate_errors_are_found_behind_io_errors_and_named() {
        let tls = TlsError::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let e = async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, io);
        let d = describe(&e, "tls://agent@broker:4222", "--ca-file");
        assert!(matches!(d, LinkError::Certificate(_)), "{d:?}");
        let text = d.to_string();
        assert!(
            text.contains("tls://agent@broker:4222")
                && text.contains("UnknownIssuer")
                && text.contains("--ca-file"),
            "{text}"
        );
        let refused =
            async_nats::ConnectError::new(async_nats::ConnectErrorKind::AuthorizationViolation);
        assert!(matches!(
            describe(&refused, "nats://a@b:1", "--ca-file"),
            LinkError::Refused(_)
        ));
        let down = async_nats::ConnectError::with_source(
            async_nats::ConnectErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        let d = describe(&down, "nats://a@b:1", "--ca-file");
        assert!(!d.is_permanent(), "{d:?}");
    }

    #[tokio::test]
    async fn passwords_in_urls_are_refused_before_connecting() {
        let spec = LinkSpec {
            url: "nats://u:pw@127.0.0.1:1".into(),
            password: None,
            ca_file: None,
            client_name: "t".into(),
            inbox_prefix: None,
        };
        let e = attempt(&spec, "--ca-file").await.expect_err("refused");
        assert!(matches!(e, LinkError::Settings(_)), "{e:?}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

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
    /// Why the link is down when retrying cannot fix it (a certificate not trusted, a password
    /// refused), in words that say how to fix it; `None` while connected or when the broker
    /// is only away.
    async fn problem(&self) -> Option<String> {
        None
    }
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
