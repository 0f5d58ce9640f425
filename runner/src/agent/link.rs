//! Connecting to the agents' broker (NATS JetStream), for the centre and for an agent alike:
//! user and password from a file or the environment (never from the URL, never logged), TLS
//! when the URL says `tls://` (an extra CA file for a private CA), and a reply prefix of the
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
