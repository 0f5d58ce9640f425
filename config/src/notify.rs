//! Notifications: `[[notify]]` channels (e-mail over SMTP, JSON webhooks, Prometheus
//! Alertmanager) and `[[notify_rule]]` rules saying which problems go to which channel and
//! recipients, and when. Read by `load/notify.rs`; the engine lives in the runner.

use std::time::Duration;

use crate::diagnostic::Span;
use crate::publish::PasswordSource;
use crate::time::DurationRange;

/// `after_duration`: 1s to 7 days.
pub const AFTER_DURATION: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(7 * 86_400));
/// `repeat`: 1s to 30 days.
pub const REPEAT: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(30 * 86_400));
/// `group`: 100ms to 1 hour.
pub const GROUP: DurationRange =
    DurationRange::new(Duration::from_millis(100), Duration::from_secs(3600));
/// `after`: consecutive results.
pub const AFTER: std::ops::RangeInclusive<u32> = 1..=1000;
/// `rate_limit`: messages per recipient and hour.
pub const RATE_LIMIT: std::ops::RangeInclusive<u32> = 1..=100_000;
/// `port`.
pub const PORT: std::ops::RangeInclusive<u32> = 1..=65_535;

/// Placeholders a webhook template may use; each is replaced by a JSON string (quotes
/// included), so a template is JSON with placeholders where values go.
pub const WEBHOOK_PLACEHOLDERS: &[&str] = &[
    "id", "vo", "site", "subject", "text", "event", "status", "count",
];

/// The notifications of a VO.
#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// The channels, by name.
    pub channels: Vec<Channel>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

impl Notify {
    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }
}

/// One `[[notify]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Its name (rules and `gridprobe notify test --channel` use it; it names its spool).
    pub name: String,
    /// How it delivers.
    pub kind: ChannelKind,
    /// Most messages per recipient and hour; more are kept for the next hour, never dropped.
    pub rate_limit: u32,
}

/// How a channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// E-mail over SMTP.
    Email {
        /// The SMTP server's host name.
        host: String,
        /// Its port (587 for STARTTLS, 465 for TLS, 25 plain).
        port: u16,
        /// Transport security.
        tls: SmtpTls,
        /// The sender address.
        from: String,
        /// The user for SMTP authentication, if any.
        username: Option<String>,
        /// Where the password comes from (read when sending, never held in the config).
        password: PasswordSource,
    },
    /// A JSON POST.
    Webhook {
        /// Where to POST (no credentials in it).
        url: String,
        /// The body, JSON with placeholders; default `{"text": {text}}` (Mattermost, Slack).
        template: String,
    },
    /// Prometheus Alertmanager's API (`POST <url>/api/v2/alerts`).
    Alertmanager {
        /// Alertmanager's base URL.
        url: String,
    },
}

impl ChannelKind {
    /// `email`, `webhook` or `alertmanager`.
    pub fn name(&self) -> &'static str {
        match self {
            ChannelKind::Email { .. } => "email",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, required (the default).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// None: only for a relay on the same host or a test server.
    None,
}

/// Which hard state notifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// WARNING (and worse).
    Warning,
    /// CRITICAL only.
    Critical,
}

/// One `[[notify_rule]]`: which problems go to which channel and recipients, and when.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The channel's name.
    pub channel: String,
    /// Sites it covers (empty: all).
    pub sites: Vec<String>,
    /// Tiers it covers (empty: all).
    pub tiers: Vec<u8>,
    /// Flavours it covers (empty: all).
    pub flavours: Vec<String>,
    /// The least severe hard state that notifies.
    pub level: Level,
    /// Extra recipients (e-mail addresses), e.g. the VO's storage experts.
    pub to: Vec<String>,
    /// Whether each site's `contact` addresses receive it too.
    pub contacts: bool,
    /// Consecutive results in the state before it is hard.
    pub after: u32,
    /// Or: time in the state before it is hard (whichever comes first).
    pub after_duration: Option<Duration>,
    /// Reminder interval while a problem lasts unacknowledged.
    pub repeat: Option<Duration>,
    /// Whether a recovery notifies.
    pub recovery: bool,
    /// How long to gather a site's changes into one message.
    pub group: Duration,
    /// Whether a change of the site's 24-hour status (good, degraded, failed) notifies.
    pub site_status: bool,
    /// A daily digest per site with problems, at this minute of the day (UTC).
    pub digest_minute: Option<u16>,
    /// Where the names were written, for the checks that need the whole configuration.
    pub spans: RuleSpans,
}

/// Positions of a rule's names (sites, flavours), for errors after all files are read.
#[derive(Debug, Clone, Default)]
pub struct RuleSpans {
    /// Each site name with its span.
    pub sites: Vec<(String, Span)>,
    /// Each flavour with its span.
    pub flavours: Vec<(String, Span)>,
}

impl Rule {
    /// Whether the rule covers a cell of this site, tier and flavour.
    pub fn covers(&self, site: &str, tier: u8, flavour: &str) -> bool {
        (self.sites.is_empty() || self.sites.iter().any(|s| s == site))
            && (self.tiers.is_empty() || self.tiers.contains(&tier))
            && (self.flavours.is_empty() || self.flavours.iter().any(|f| f == flavour))
    }
}

/// Reads a time of day `HH:MM` (UTC) into minutes after midnight.
pub fn parse_time_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Whether `text` is a plain e-mail address `local@domain` (no display name, no spaces).
pub fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// The e-mail addresses in a site's `contact` (separated by commas, semicolons or spaces);
/// words that are not addresses (names, phone numbers) are left out.
pub fn contact_addresses(contact: &str) -> Vec<String> {
    contact
        .split([',', ';', ' ', '\t', '\n'])
        .map(|w| w.trim().trim_start_matches('<').trim_end_matches('>'))
        .map(|w| w.strip_prefix("mailto:").unwrap_or(w))
        .filter(|w| is_address(w))
        .map(str::to_string)
        .collect()
}

/// Renders a webhook template: each `{name}` becomes the JSON string of its value (quotes
/// included); any other brace is JSON's own. Fails on an unknown placeholder.
pub fn render_webhook(
    template: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                let rest = &template[i + 1..];
                let end = rest.find('}').unwrap_or(0);
                let name = &rest[..end];
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
                    match value(name) {
                        Some(v) => {
                            out.push_str(&serde_json::Value::String(v).to_string());
                        }
                        None => {
                            return Err(format!(
                                "unknown placeholder `{{{name}}}` (known: {})",
                                WEBHOOK_PLACEHOLDERS.join(", ")
                            ))
                        }
                    }
                    for _ in 0..=end {
                        chars.next();
                    }
                } else {
                    // JSON's own braces: `{"text": ...}`.
                    out.push('{');
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Checks that a webhook template renders into JSON with sample values.
pub fn check_webhook_template(template: &str) -> Result<(), String> {
    let sample = |name: &str| {
        WEBHOOK_PLACEHOLDERS
            .contains(&name)
            .then(|| format!("sample \"{name}\"\nline"))
    };
    let body = render_webhook(template, &sample)?;
    serde_json::from_str::<serde_json::Value>(&body)
        .map(|_| ())
        .map_err(|e| format!("the template does not render to JSON: {e}"))
}

/// The default webhook body: Mattermost and Slack incoming webhooks read `text`.
pub const DEFAULT_WEBHOOK_TEMPLATE: &str = r#"{"text": {text}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_plain_local_at_domain() {
        assert!(is_address("ops@example.org"));
        assert!(is_address("storage-admins+gp@t1.example.ac.uk"));
        for bad in [
            "ops",
            "ops@",
            "@example.org",
            "ops@localhost",
            "a b@example.org",
            "Ops <ops@example.org>",
            "ops@exa_mple.org",
            "ops@-x.org",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
        assert_eq!(
            contact_addresses("Jane Doe <jane@site.org>, grid-admin@site.org; +41 22 767"),
            vec!["jane@site.org", "grid-admin@site.org"]
        );
    }

    #[test]
    fn webhook_templates_render_json_strings() {
        let v = |n: &str| (n == "text").then(|| "a \"b\"\nc".to_string());
        assert_eq!(
            render_webhook(DEFAULT_WEBHOOK_TEMPLATE, &v).unwrap(),
            r#"{"text": "a \"b\"\nc"}"#
        );
        assert!(render_webhook(r#"{"x": {nope}}"#, &v)
            .unwrap_err()
            .contains("unknown placeholder `{nope}`"));
        assert!(check_webhook_template(DEFAULT_WEBHOOK_TEMPLATE).is_ok());
        assert!(check_webhook_template(r#"{"text": "{text}"}"#)
            .unwrap_err()
            .contains("JSON"));
        assert!(check_webhook_template(r#"{"text": {text}, "n": {}}"#).is_ok());
        assert!(check_webhook_template(r#"{"text": {text}"#).is_err());
        assert!(check_webhook_template(r#"{"a": {site}, "b": {"c": {count}}}"#).is_ok());
    }
}
