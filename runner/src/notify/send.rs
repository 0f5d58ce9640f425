//! Delivering one notification through its channel: e-mail over SMTP (lettre, rustls), a JSON
//! webhook, or Prometheus Alertmanager's `POST /api/v2/alerts` (reqwest, rustls). An error is
//! a short reason without credentials; the caller retries.

use std::time::Duration;

use gridprobe_config::notify::{render_webhook, Channel, ChannelKind, SmtpTls};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::Notification;

/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves `url_env:` URLs when the channel starts; errors never show the URL.
fn resolve_url(url: &str) -> Result<String, String> {
    match url.strip_prefix("env:") {
        Some(var) => std::env::var(var)
            .map_err(|_| format!("environment variable `{var}` (url_env) is not set")),
        None => Ok(url.to_string()),
    }
}

/// A channel ready to send.
pub struct Sender {
    channel: Channel,
    http: reqwest::Client,
}

impl Sender {
    /// A sender for a channel.
    pub fn new(channel: Channel) -> Result<Sender, String> {
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .user_agent(concat!("gridprobe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Sender { channel, http })
    }

    /// Delivers one notification. `Ok` means the server accepted it.
    pub async fn send(&self, n: &Notification) -> Result<(), String> {
        match &self.channel.kind {
            ChannelKind::Email { .. } => self.email(n).await,
            ChannelKind::Webhook { url, template } => self.webhook(url, template, n).await,
            ChannelKind::Alertmanager { url } => self.alertmanager(url, n).await,
        }
    }

    async fn email(&self, n: &Notification) -> Result<(), String> {
        let ChannelKind::Email {
            host,
            port,
            tls,
            from,
            username,
            password,
        } = &self.channel.kind
        else {
            return Err("not an e-mail channel".into());
        };
        let from: Mailbox = format!("gridprobe <{from}>")
            .parse()
            .map_err(|e| format!("sender address: {e}"))?;
        let to: Mailbox = n
            .recipient
            .parse()
            .map_err(|e| format!("recipient address: {e}"))?;
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(n.subject.clone())
            .message_id(Some(format!("<{}>", n.id)));
        let raw_header = |name: &'static str, value: &str| {
            HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
        };
        builder = builder.raw_header(raw_header("X-Gridprobe-Site", &n.site));
        builder = builder.raw_header(raw_header("X-Gridprobe-Event", &n.event));
        let msg = builder
            .header(ContentType::TEXT_PLAIN)
            .body(n.text.clone())
            .map_err(|e| format!("cannot build the message: {e}"))?;
        let tls_params = || {
            TlsParameters::new(host.clone()).map_err(|e| format!("TLS settings for {host}: {e}"))
        };
        let mut transport = match tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .tls(Tls::Required(tls_params()?)),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .tls(Tls::Wrapper(tls_params()?)),
        }
        .port(*port)
        .timeout(Some(SEND_TIMEOUT));
        if let Some(user) = username {
            let pw = password
                .read()
                .map_err(|e| format!("SMTP password: {e}"))?
                .unwrap_or_default();
            transport = transport.credentials(Credentials::new(user.clone(), pw));
        }
        let transport = transport.build();
        transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP {host}:{port}: {e}"))
    }

    async fn webhook(&self, url: &str, template: &str, n: &Notification) -> Result<(), String> {
        let url = resolve_url(url)?;
        let count = n.items.len().to_string();
        let value = |name: &str| {
            Some(match name {
                "id" => n.id.clone(),
                "vo" => n.vo.clone(),
                "site" => n.site.clone(),
                "subject" => n.subject.clone(),
                "text" => format!("{}\n{}", n.subject, n.text),
                "event" => n.event.clone(),
                "status" => n.status.clone(),
                "count" => count.clone(),
                _ => return None,
            })
        };
        let body = render_webhook(template, &value)?;
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Gridprobe-Notification-Id", &n.id)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("webhook: {}", e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", resp.status()))
        }
    }

    async fn alertmanager(&self, url: &str, n: &Notification) -> Result<(), String> {
        let base = resolve_url(url)?;
        let now = gridprobe_config::time::format_utc_ms(n.created_ms);
        let alerts: Vec<serde_json::Value> = n
            .items
            .iter()
            .map(|i| {
                let site_item = i.event == super::state::EventKind::SiteStatus;
                let alertname = if site_item {
                    "GridprobeSiteStatus"
                } else {
                    "GridprobeServiceProblem"
                };
                let mut a = serde_json::json!({
                    "labels": {
                        "alertname": alertname,
                        "vo": n.vo,
                        "site": n.site,
                        "hostname": i.hostname,
                        "flavour": i.flavour,
                        "metric": i.metric,
                    },
                    // Not a label: a recovery must name the same alert as the problem.
                    "annotations": {
                        "severity": i.status.to_ascii_lowercase(),
                        "summary": i.summary,
                        "gridprobe_id": n.id,
                        "event": i.event.word(),
                    },
                    "startsAt": gridprobe_config::time::format_utc_ms(i.since_ms),
                });
                // A site back to good (OK) resolves its status alert, as a recovery resolves
                // a cell's; degraded and failed keep it firing, with the new severity.
                if i.event == super::state::EventKind::Recovery || (site_item && i.status == "OK") {
                    a["endsAt"] = serde_json::Value::String(now.clone());
                }
                a
            })
            .collect();
        let resp = self
            .http
            .post(format!("{}/api/v2/alerts", base.trim_end_matches('/')))
            .json(&alerts)
            .send()
            .await
            .map_err(|e| format!("alertmanager: {}", e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("alertmanager answered {}", resp.status()))
        }
    }
}
