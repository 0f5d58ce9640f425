//! NATS JetStream with async-nats: acknowledged publishes, and the consuming side.
//!
//! The stream named in the configuration is created when missing (file storage, the subjects
//! of the target's subject template with each placeholder token as `*`, and `stream_max_age`
//! if set); an existing stream is used as it is. Each message carries `Nats-Msg-Id` = its
//! `message_id`, so JetStream itself drops a republish within its duplicate window.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_trait::async_trait;
use gridprobe_config::publish::{subject_filter, PublishKind, PublishTarget};
use gridprobe_results::{NewResult, ResultMessage, Target};
use tokio::sync::Mutex;

/// How long connecting and setting up the stream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the acknowledgements of one batch may take.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects and makes sure the stream exists.
pub(crate) async fn connect(
    target: &PublishTarget,
) -> Result<
    (
        async_nats::Client,
        jetstream::Context,
        jetstream::stream::Stream,
    ),
    String,
> {
    let PublishKind::Nats {
        subject,
        stream,
        stream_max_age,
        ..
    } = &target.kind
    else {
        return Err("not a NATS target".into());
    };
    let work = async {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .name(format!("gridprobe {}", target.name));
        let mut url = url::Url::parse(&target.url).map_err(|e| format!("invalid URL: {e}"))?;
        if let Some(password) = target.password.read()? {
            options = options.user_and_password(url.username().to_string(), password);
            let _ = url.set_username("");
        }
        let client = options
            .connect(url.as_str())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.url))?;
        let js = jetstream::new(client.clone());
        let config = jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject_filter(subject)],
            storage: jetstream::stream::StorageType::File,
            max_age: stream_max_age.unwrap_or_default(),
            ..Default::default()
        };
        let s = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("cannot find or create stream `{stream}`: {e}"))?;
        Ok((client, js, s))
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

/// Publishes to a JetStream subject, waiting for every acknowledgement.
pub struct NatsTarget {
    target: PublishTarget,
    instance: String,
    link: Mutex<Option<(async_nats::Client, jetstream::Context)>>,
}

impl NatsTarget {
    /// A publisher for a `nats` target (connects on first use).
    pub fn new(target: PublishTarget, instance: &str) -> Arc<Self> {
        Arc::new(NatsTarget {
            target,
            instance: instance.to_string(),
            link: Mutex::new(None),
        })
    }

    async fn publish(&self, batch: &[NewResult], ids: &[String]) -> Result<(), String> {
        let PublishKind::Nats { subject, .. } = &self.target.kind else {
            return Err("not a NATS target".into());
        };
        let mut guard = self.link.lock().await;
        if guard.is_none() {
            let (client, js, _) = connect(&self.target).await?;
            tracing::info!(target_name = %self.target.name, url = %self.target.url, "connected to NATS JetStream");
            *guard = Some((client, js));
        }
        let Some((_, js)) = guard.as_ref() else {
            return Err("not connected".into());
        };
        let outcome = async {
            let mut acks = Vec::with_capacity(batch.len());
            for (r, id) in batch.iter().zip(ids) {
                let mut m = ResultMessage::new(&self.instance, r);
                m.message_id = id.clone();
                let to = crate::route(subject, &self.instance, &r.result);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                headers.insert("Content-Type", "application/json");
                let ack = js
                    .publish_with_headers(to, headers, m.to_json().into())
                    .await
                    .map_err(|e| format!("publish failed: {e}"))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await
                    .map_err(|e| format!("no acknowledgement from JetStream: {e}"))?;
            }
            Ok(())
        };
        let result = match tokio::time::timeout(ACK_TIMEOUT, outcome).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "JetStream acknowledgements did not arrive within {ACK_TIMEOUT:?}"
            )),
        };
        if result.is_err() {
            // Reconnect from scratch next time rather than trust a client mid-reconnect.
            *guard = None;
        }
        result
    }
}

#[async_trait]
impl Target for NatsTarget {
    fn name(&self) -> String {
        format!("nats publisher {}", self.target.name)
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
