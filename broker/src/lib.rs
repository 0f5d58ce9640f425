//! gridprobe broker: publishing every result to message brokers, and `gridprobe consume`, which
//! reads them back into a result store so that a central instance can show the matrix of probes
//! run elsewhere.
//!
//! Publishing rides on the results crate's relay ([`gridprobe_results::spawn_relay`]): each
//! `[[publish]]` target gets its own relay with its own durable spool, fed from the one
//! recording path of `gridprobe serve` like the store writer, so a broker outage never blocks a
//! probe and never loses a result (at-least-once; consumers drop duplicates by `message_id`).
//!
//! - AMQP 0-9-1 ([`amqp`]): persistent messages, publisher confirms, mandatory routing.
//! - NATS JetStream ([`nats`]): acknowledged publishes with `Nats-Msg-Id` (JetStream's own
//!   duplicate window), the stream created when missing.
//! - STOMP 1.2 ([`stomp`]): persistent SENDs, each acknowledged by a RECEIPT; heart-beats;
//!   TLS.

pub mod amqp;
pub mod consume;
pub mod nats;
pub mod publish;
pub mod stomp;

pub use consume::{consume, ConsumeStats};
pub use publish::{spawn_publishers, Publisher, Publishers};

/// Broker failures.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Could not connect, authenticate or set up the broker side.
    #[error("{target}: {reason}")]
    Connect {
        /// The `[[publish]]` target's name.
        target: String,
        /// Why.
        reason: String,
    },
    /// The spool of a target could not be opened.
    #[error("{target}: {source}")]
    Spool {
        /// The `[[publish]]` target's name.
        target: String,
        /// The spool error.
        source: gridprobe_results::SpoolError,
    },
}

/// The URL with its password filled in (from `password_env` / `password_file`), for
/// connecting; never logged.
pub(crate) fn url_with_password(
    target: &gridprobe_config::publish::PublishTarget,
) -> Result<String, String> {
    let Some(password) = target.password.read()? else {
        return Ok(target.url.clone());
    };
    let mut url = url::Url::parse(&target.url).map_err(|e| format!("invalid URL: {e}"))?;
    if url.username().is_empty() {
        return Err(
            "a password is configured but the URL names no user (write USER@ before the host)"
                .into(),
        );
    }
    url.set_password(Some(&password))
        .map_err(|()| "cannot put the password into the URL".to_string())?;
    Ok(url.to_string())
}

/// The routing key or subject of a result.
pub(crate) fn route(template: &str, instance: &str, r: &gridprobe_probes::ProbeResult) -> String {
    gridprobe_config::publish::render_template(
        template,
        &gridprobe_config::publish::TemplateValues {
            vo: &r.vo,
            site: &r.site,
            metric: &r.metric,
            flavour: &r.flavour,
            hostname: &r.hostname,
            status: r.outcome.status.name(),
            kind: &r.kind,
            instance,
        },
    )
}
