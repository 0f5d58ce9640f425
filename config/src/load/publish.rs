//! Reading `[[publish]]` tables and the spool settings of `[server]` into
//! [`crate::publish::Publishing`], with positioned errors like every other table.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{FileId, Loader};
use crate::publish::{
    parse_size, stomp, template_placeholders, PasswordSource, PublishKind, PublishTarget,
    StompSettings, PLACEHOLDERS,
};

/// One `[[publish]]` table as written; which keys apply depends on `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    name: Option<Spanned<String>>,
    kind: Spanned<String>,
    url: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    exchange: Option<Spanned<String>>,
    exchange_type: Option<Spanned<String>>,
    declare: Option<Spanned<bool>>,
    routing_key: Option<Spanned<String>>,
    queue: Option<Spanned<String>>,
    binding_key: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    stream: Option<Spanned<String>>,
    stream_max_age: Option<Spanned<String>>,
    consumer: Option<Spanned<String>>,
    destination: Option<Spanned<String>>,
    subscribe: Option<Spanned<String>>,
    virtual_host: Option<Spanned<String>>,
    heartbeat: Option<Spanned<String>>,
    receipt_timeout: Option<Spanned<String>>,
    max_frame_size: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

const KINDS: &[&str] = &["amqp", "nats", "stomp"];

impl RawPublish {
    /// The kind-specific keys that are set, each with the kind it belongs to.
    fn kind_keys(&self) -> Vec<(&'static str, &'static str, std::ops::Range<usize>)> {
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
        [
            ("exchange", "amqp", s(&self.exchange)),
            ("exchange_type", "amqp", s(&self.exchange_type)),
            ("declare", "amqp", self.declare.as_ref().map(Spanned::span)),
            ("routing_key", "amqp", s(&self.routing_key)),
            ("queue", "amqp", s(&self.queue)),
            ("binding_key", "amqp", s(&self.binding_key)),
            ("subject", "nats", s(&self.subject)),
            ("stream", "nats", s(&self.stream)),
            ("stream_max_age", "nats", s(&self.stream_max_age)),
            ("consumer", "nats", s(&self.consumer)),
            ("destination", "stomp", s(&self.destination)),
            ("subscribe", "stomp", s(&self.subscribe)),
            ("virtual_host", "stomp", s(&self.virtual_host)),
            ("heartbeat", "stomp", s(&self.heartbeat)),
            ("receipt_timeout", "stomp", s(&self.receipt_timeout)),
            ("max_frame_size", "stomp", s(&self.max_frame_size)),
            ("ca_file", "stomp", s(&self.ca_file)),
        ]
        .into_iter()
        .filter_map(|(k, owner, span)| span.map(|span| (k, owner, span)))
        .collect()
    }
}

/// `[server] spool_max_size`: 64 KiB to 16 TiB.
const SPOOL_MIN_BYTES: u64 = 64 << 10;
const SPOOL_MAX_BYTES: u64 = 16 << 40;

impl Loader {
    /// `[server] instance`, `spool_dir`, `spool_max_size`.
    pub(super) fn apply_spool_settings(
        &mut self,
        file: FileId,
        instance: Option<Spanned<String>>,
        spool_dir: Option<Spanned<String>>,
        spool_max_size: Option<Spanned<String>>,
    ) {
        if let Some(i) = instance {
            let v = i.get_ref().trim();
            if v.is_empty() || v.chars().any(char::is_control) {
                let d = self.error(
                    file,
                    i.span(),
                    "`instance` must be a non-empty name on one line",
                );
                self.diagnostics.push(d.with_help(
                    "e.g. instance = \"gridprobe-cern-1\"; leave it out to use the host name",
                ));
            } else {
                self.config.publish.instance = Some(v.to_string());
            }
        }
        if let Some(dir) = spool_dir {
            let v = dir.get_ref().trim();
            if v.is_empty() {
                let d = self.error(file, dir.span(), "`spool_dir` must not be empty");
                self.diagnostics.push(d.with_help(
                    "name a directory, or leave it out to use <store>.spool/ next to the store",
                ));
            } else {
                let base = self.base_dir(file);
                self.config.publish.spool_dir = Some(base.join(v));
            }
        }
        if let Some(size) = spool_max_size {
            match parse_size(size.get_ref()) {
                Ok(n) if !(SPOOL_MIN_BYTES..=SPOOL_MAX_BYTES).contains(&n) => {
                    let d = self.error(
                        file,
                        size.span(),
                        format!(
                            "`spool_max_size` must be between 64KiB and 16TiB, found `{}`",
                            size.get_ref()
                        ),
                    );
                    self.diagnostics
                        .push(d.with_help("e.g. spool_max_size = \"1GiB\" (the default)"));
                }
                Ok(n) => self.config.publish.spool_max_bytes = n,
                Err(e) => {
                    let d = self.error(file, size.span(), e);
                    self.diagnostics
                        .push(d.with_help("e.g. spool_max_size = \"1GiB\" (the default)"));
                }
            }
        }
    }

    /// Where a broker or server password comes from: `password_env` or `password_file`
    /// (relative to the file it is written in), at most one, neither empty. `None` after a
    /// positioned error.
    pub(super) fn password_source(
        &mut self,
        file: FileId,
        env: &Option<Spanned<String>>,
        path: &Option<Spanned<String>>,
    ) -> Option<PasswordSource> {
        match (env, path) {
            (Some(_), Some(f)) => {
                let d = self.error(
                    file,
                    f.span(),
                    "give the password in one of `password_env` and `password_file`, not both",
                );
                self.diagnostics.push(d);
                None
            }
            (Some(e), None) if !e.get_ref().trim().is_empty() => {
                Some(PasswordSource::Env(e.get_ref().trim().to_string()))
            }
            (None, Some(f)) if !f.get_ref().trim().is_empty() => Some(PasswordSource::File(
                self.base_dir(file).join(f.get_ref().trim()),
            )),
            (Some(s), None) | (None, Some(s)) => {
                let d = self.error(file, s.span(), "must not be empty");
                self.diagnostics.push(d);
                None
            }
            (None, None) => Some(PasswordSource::None),
        }
    }

    pub(super) fn base_dir(&self, file: FileId) -> std::path::PathBuf {
        self.config
            .sources
            .file(file)
            .and_then(|f| f.path.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }

    /// One `[[publish]]` table.
    pub(super) fn read_publish(&mut self, file: FileId, raw: RawPublish) {
        let kind = raw.kind.get_ref().trim().to_ascii_lowercase();
        if !KINDS.contains(&kind.as_str()) {
            let d = self
                .error(
                    file,
                    raw.kind.span(),
                    format!("unknown publish kind `{}`", raw.kind.get_ref()),
                )
                .with_suggestion(&kind, KINDS.iter().copied());
            let d = if d.help.is_none() {
                d.with_help("write kind = \"amqp\" (RabbitMQ, AMQP 0-9-1), kind = \"nats\" (NATS JetStream) or kind = \"stomp\" (STOMP 1.2: ActiveMQ, RabbitMQ's STOMP plugin)")
            } else {
                d
            };
            self.diagnostics.push(d);
            return;
        }
        let mut ok = true;
        // Keys that belong to another kind.
        for (key, owner, span) in raw.kind_keys() {
            if owner != kind {
                let d = self.error(
                    file,
                    span,
                    format!("`{key}` is a setting of kind = \"{owner}\", not \"{kind}\""),
                );
                self.diagnostics.push(d);
                ok = false;
            }
        }

        let name = match &raw.name {
            Some(n) => {
                let v = n.get_ref().trim();
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    || v.starts_with('.')
                {
                    let d = self.error(file, n.span(), format!("invalid publish name `{v}`"));
                    self.diagnostics.push(d.with_help(
                        "use letters, digits, `-`, `_` and `.` (it names the spool directory too)",
                    ));
                    ok = false;
                }
                v.to_string()
            }
            None => kind.clone(),
        };
        if self.config.publish.targets.iter().any(|t| t.name == name) {
            let span = raw.name.as_ref().map_or(raw.kind.span(), Spanned::span);
            let d = self.error(
                file,
                span,
                format!("a [[publish]] target named `{name}` is already defined"),
            );
            self.diagnostics
                .push(d.with_help("give each [[publish]] table its own `name`"));
            ok = false;
        }

        let url = match &raw.url {
            Some(u) => match self.broker_url(
                file,
                u,
                &kind,
                raw.password_env.is_some() || raw.password_file.is_some(),
            ) {
                Some(u) => u,
                None => {
                    ok = false;
                    String::new()
                }
            },
            None => match kind.as_str() {
                "amqp" => "amqp://guest@127.0.0.1:5672/%2f".to_string(),
                "nats" => "nats://127.0.0.1:4222".to_string(),
                _ => "stomp://127.0.0.1:61613".to_string(),
            },
        };

        let password = self
            .password_source(file, &raw.password_env, &raw.password_file)
            .unwrap_or_else(|| {
                ok = false;
                PasswordSource::None
            });

        let text = |v: &Option<Spanned<String>>, default: &str| {
            v.as_ref()
                .map(|s| s.get_ref().trim().to_string())
                .unwrap_or_else(|| default.to_string())
        };
        let publish_kind = if kind == "amqp" {
            if let Some(rk) = &raw.routing_key {
                ok &= self.check_template(file, rk, false);
            }
            let exchange_type = text(&raw.exchange_type, "topic");
            if !["topic", "direct", "fanout", "headers"].contains(&exchange_type.as_str()) {
                let span = raw
                    .exchange_type
                    .as_ref()
                    .map_or(raw.kind.span(), Spanned::span);
                let d = self
                    .error(
                        file,
                        span,
                        format!("unknown exchange type `{exchange_type}`"),
                    )
                    .with_suggestion(&exchange_type, ["topic", "direct", "fanout", "headers"]);
                self.diagnostics.push(d);
                ok = false;
            }
            let exchange = text(&raw.exchange, "gridprobe.results");
            if exchange.is_empty() {
                let span = raw.exchange.as_ref().map_or(raw.kind.span(), Spanned::span);
                let d = self.error(
                    file,
                    span,
                    "`exchange` must not be empty (the default exchange routes by queue name only)",
                );
                self.diagnostics.push(d);
                ok = false;
            }
            PublishKind::Amqp {
                exchange,
                exchange_type,
                declare: raw.declare.as_ref().is_none_or(|d| *d.get_ref()),
                routing_key: text(&raw.routing_key, "{vo}.{site}.{metric}"),
                queue: text(&raw.queue, &format!("gridprobe.consume.{name}")),
                binding_key: text(&raw.binding_key, "#"),
            }
        } else if kind == "stomp" {
            match self.stomp_settings(file, &raw) {
                Some(settings) => PublishKind::Stomp(settings),
                None => {
                    ok = false;
                    PublishKind::Stomp(StompSettings {
                        destination: String::new(),
                        subscribe: None,
                        virtual_host: String::new(),
                        heartbeat: stomp::DEFAULT_HEARTBEAT,
                        receipt_timeout: stomp::DEFAULT_RECEIPT_TIMEOUT,
                        max_frame_bytes: stomp::DEFAULT_MAX_FRAME_BYTES,
                        ca_file: None,
                    })
                }
            }
        } else {
            if let Some(s) = &raw.subject {
                ok &= self.check_template(file, s, true);
            }
            let stream = text(&raw.stream, "GRIDPROBE");
            if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '/', '\\']) {
                let span = raw.stream.as_ref().map_or(raw.kind.span(), Spanned::span);
                let d = self.error(file, span, format!("invalid stream name `{stream}`"));
                self.diagnostics.push(d.with_help("a JetStream stream name has no `.`, `*`, `>`, `/` or spaces, e.g. \"GRIDPROBE\""));
                ok = false;
            }
            let consumer = text(&raw.consumer, "gridprobe-consume");
            if consumer.is_empty() || consumer.contains(['.', '*', '>', ' ', '/', '\\']) {
                let span = raw.consumer.as_ref().map_or(raw.kind.span(), Spanned::span);
                let d = self.error(file, span, format!("invalid consumer name `{consumer}`"));
                self.diagnostics.push(
                    d.with_help("no `.`, `*`, `>`, `/` or spaces, e.g. \"gridprobe-central\""),
                );
                ok = false;
            }
            PublishKind::Nats {
                subject: text(&raw.subject, "gridprobe.results.{vo}.{site}"),
                stream,
                stream_max_age: self.duration(
                    file,
                    raw.stream_max_age.clone(),
                    "stream_max_age",
                    crate::time::STREAM_MAX_AGE,
                ),
                consumer,
            }
        };
        if ok {
            self.config.publish.targets.push(PublishTarget {
                name,
                url,
                password,
                kind: publish_kind,
            });
        }
    }

    /// The settings of a `kind = "stomp"` table; `None` after reporting an error.
    fn stomp_settings(&mut self, file: FileId, raw: &RawPublish) -> Option<StompSettings> {
        let mut ok = true;
        let destination = match &raw.destination {
            Some(d) => {
                ok &= self.check_template(file, d, false);
                ok &= self.check_destination(file, d, "destination");
                d.get_ref().trim().to_string()
            }
            None => stomp::DEFAULT_DESTINATION.to_string(),
        };
        let subscribe = match &raw.subscribe {
            Some(d) => {
                if template_placeholders(d.get_ref()).is_ok_and(|p| !p.is_empty())
                    || d.get_ref().contains(['{', '}'])
                {
                    let e = self.error(
                        file,
                        d.span(),
                        "`subscribe` names one destination: it takes no placeholders",
                    );
                    self.diagnostics.push(e.with_help(
                        "e.g. subscribe = \"/queue/gridprobe.results\" (a queue the destinations feed)",
                    ));
                    ok = false;
                }
                ok &= self.check_destination(file, d, "subscribe");
                Some(d.get_ref().trim().to_string())
            }
            None => None,
        };
        let virtual_host = match &raw.virtual_host {
            Some(v) => {
                let t = v.get_ref().trim();
                if t.is_empty() || t.chars().any(char::is_control) {
                    let e = self.error(
                        file,
                        v.span(),
                        "`virtual_host` must be a non-empty name on one line",
                    );
                    self.diagnostics
                        .push(e.with_help("RabbitMQ's default virtual host is \"/\""));
                    ok = false;
                }
                t.to_string()
            }
            None => "/".to_string(),
        };
        let heartbeat = match &raw.heartbeat {
            Some(_) => {
                let d = self.duration(
                    file,
                    raw.heartbeat.clone(),
                    "heartbeat",
                    crate::time::STOMP_HEARTBEAT,
                );
                ok &= d.is_some();
                d.unwrap_or(stomp::DEFAULT_HEARTBEAT)
            }
            None => stomp::DEFAULT_HEARTBEAT,
        };
        let receipt_timeout = match &raw.receipt_timeout {
            Some(_) => {
                let d = self.duration(
                    file,
                    raw.receipt_timeout.clone(),
                    "receipt_timeout",
                    crate::time::STOMP_RECEIPT_TIMEOUT,
                );
                ok &= d.is_some();
                d.unwrap_or(stomp::DEFAULT_RECEIPT_TIMEOUT)
            }
            None => stomp::DEFAULT_RECEIPT_TIMEOUT,
        };
        let max_frame_bytes = match &raw.max_frame_size {
            Some(size) => match parse_size(size.get_ref()) {
                Ok(n) if (stomp::MIN_FRAME_BYTES..=stomp::MAX_FRAME_BYTES).contains(&n) => n,
                Ok(_) => {
                    let d = self.error(
                        file,
                        size.span(),
                        format!(
                            "`max_frame_size` must be between 64KiB and 256MiB, found `{}`",
                            size.get_ref()
                        ),
                    );
                    self.diagnostics
                        .push(d.with_help("e.g. max_frame_size = \"4MiB\" (the default)"));
                    ok = false;
                    0
                }
                Err(e) => {
                    let d = self.error(file, size.span(), e);
                    self.diagnostics
                        .push(d.with_help("e.g. max_frame_size = \"4MiB\" (the default)"));
                    ok = false;
                    0
                }
            },
            None => stomp::DEFAULT_MAX_FRAME_BYTES,
        };
        let ca_file = match &raw.ca_file {
            Some(f) if f.get_ref().trim().is_empty() => {
                let d = self.error(file, f.span(), "`ca_file` must not be empty");
                self.diagnostics.push(d.with_help(
                    "name a PEM file of CA certificates, or leave it out to trust the system's roots",
                ));
                ok = false;
                None
            }
            Some(f) => Some(self.base_dir(file).join(f.get_ref().trim())),
            None => None,
        };
        ok.then_some(StompSettings {
            destination,
            subscribe,
            virtual_host,
            heartbeat,
            receipt_timeout,
            max_frame_bytes,
            ca_file,
        })
    }

    /// A STOMP destination: starts with `/`, one line, no spaces.
    fn check_destination(&mut self, file: FileId, d: &Spanned<String>, key: &str) -> bool {
        let text = d.get_ref().trim();
        if text.starts_with('/')
            && text.len() > 1
            && !text.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return true;
        }
        let e = self.error(file, d.span(), format!("invalid STOMP {key} `{text}`"));
        self.diagnostics.push(e.with_help(
            "a destination starts with `/` and has no spaces, e.g. \"/queue/gridprobe.results\" or \"/topic/gridprobe.{vo}.{site}\"",
        ));
        false
    }

    /// A broker URL: the right scheme, a host, and no credential in it (no password, no
    /// secret-like query parameter, and for NATS no user name standing alone, which NATS reads
    /// as a token).
    pub(super) fn broker_url(
        &mut self,
        file: FileId,
        u: &Spanned<String>,
        kind: &str,
        has_password_source: bool,
    ) -> Option<String> {
        let text = u.get_ref().trim();
        let (schemes, example): (&[&str], &str) = match kind {
            "amqp" => (
                &["amqp", "amqps"],
                "amqp://gridprobe@mq.example.org:5672/%2f",
            ),
            "nats" => (&["nats", "tls"], "nats://nats.example.org:4222"),
            // The site agents' broker: NATS JetStream or RabbitMQ.
            "agents" => (
                &["nats", "tls", "amqp", "amqps"],
                "nats://centre@nats.example.org:4222 or amqp://centre@mq.example.org:5672/gridprobe",
            ),
            _ => (
                &["stomp", "stomp+ssl", "stomps"],
                "stomp+ssl://gridprobe@mq.example.org:61614",
            ),
        };
        match url::Url::parse(text) {
            Ok(parsed) => {
                if !schemes.contains(&parsed.scheme()) {
                    let d = self.error(
                        file,
                        u.span(),
                        format!(
                            "a {kind} URL starts with {}://, not {}://",
                            schemes.join(":// or "),
                            parsed.scheme()
                        ),
                    );
                    self.diagnostics
                        .push(d.with_help(format!("e.g. url = \"{example}\"")));
                    return None;
                }
                let (_, secrets) = crate::model::url_credentials(text);
                let nats = kind == "nats"
                    || (kind == "agents" && matches!(parsed.scheme(), "nats" | "tls"));
                let token = nats && !parsed.username().is_empty() && !has_password_source;
                if !secrets.is_empty() || parsed.password().is_some() || token {
                    let what = if token {
                        "the NATS URL holds a token (`nats://TOKEN@host`)"
                    } else {
                        "the broker URL holds a password"
                    };
                    let d = self.error(
                        file,
                        u.span(),
                        format!("{what}: put it in `password_env` or `password_file`"),
                    );
                    let d = if token {
                        d.with_help(format!(
                            "keep the URL without it, e.g. url = \"{example}\"; for user and password authentication write url = \"nats://USER@host:4222\" and set password_file = \"/etc/gridprobe/nats-password\" (or password_env)"
                        ))
                    } else {
                        d.with_help(format!(
                            "keep the URL without it, e.g. url = \"{example}\", and set password_env = \"GRIDPROBE_BROKER_PASSWORD\" (or password_file)"
                        ))
                    };
                    self.diagnostics.push(d);
                    return None;
                }
                if parsed.host_str().is_none_or(str::is_empty) {
                    let d = self.error(file, u.span(), format!("the {kind} URL names no host"));
                    self.diagnostics
                        .push(d.with_help(format!("e.g. url = \"{example}\"")));
                    return None;
                }
                Some(text.to_string())
            }
            Err(e) => {
                // The URL is quoted only with its user info and secrets masked.
                let shown = crate::model::redact_url(text);
                let d = self.error(file, u.span(), format!("invalid {kind} URL `{shown}`: {e}"));
                self.diagnostics
                    .push(d.with_help(format!("e.g. url = \"{example}\"")));
                None
            }
        }
    }

    /// Checks the placeholders of a routing key or subject (and, for a subject, its tokens).
    fn check_template(&mut self, file: FileId, t: &Spanned<String>, subject: bool) -> bool {
        let text = t.get_ref();
        match template_placeholders(text) {
            Err(e) => {
                let d = self.error(file, t.span(), format!("invalid template `{text}`: {e}"));
                self.diagnostics.push(d.with_help(format!(
                    "placeholders: {}",
                    PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
                )));
                return false;
            }
            Ok(names) => {
                let mut ok = true;
                for name in names {
                    if !PLACEHOLDERS.contains(&name.as_str()) {
                        let d = self
                            .error(
                                file,
                                t.span(),
                                format!("unknown placeholder `{{{name}}}` in `{text}`"),
                            )
                            .with_suggestion(&name, PLACEHOLDERS.iter().copied());
                        let d = if d.help.is_none() {
                            d.with_help(format!("placeholders: {}", PLACEHOLDERS.join(", ")))
                        } else {
                            d
                        };
                        self.diagnostics.push(d);
                        ok = false;
                    }
                }
                if !ok {
                    return false;
                }
            }
        }
        if subject {
            let bad = text.is_empty()
                || text.split('.').any(|tok| {
                    tok.is_empty()
                        || (!tok.contains('{') && tok.contains(['*', '>']))
                        || tok.chars().any(char::is_whitespace)
                });
            if bad {
                let d = self.error(file, t.span(), format!("invalid NATS subject `{text}`"));
                self.diagnostics.push(d.with_help(
                    "dot-separated tokens, none empty, without spaces or wildcards, e.g. \"gridprobe.results.{vo}.{site}\"",
                ));
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::publish::{PasswordSource, PublishKind};

    const BASE: &str = r#"
vo = "ops"
[[site]]
name = "SITE-A"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce.example.org"
[[probe]]
metric = "org.example.Ping"
kind = "tcp"
flavours = ["CE"]
  [probe.params]
  port = 22
"#;

    fn load(extra: &str) -> crate::Loaded {
        crate::load_str(
            Path::new("/etc/gridprobe/vo.toml"),
            &format!("{BASE}{extra}"),
        )
    }

    fn errors(extra: &str) -> String {
        load(extra).diagnostics.to_string()
    }

    #[test]
    fn publish_targets_and_spool_settings_are_read_with_defaults() {
        let l = load(
            r#"
[server]
instance = "gp-cern-1"
spool_dir = "spool"
spool_max_size = "256MiB"

[[publish]]
kind = "amqp"
url = "amqp://gridprobe@mq.example.org:5672/%2f"
password_file = "secrets/mq"

[[publish]]
name = "central-nats"
kind = "nats"
subject = "gridprobe.{vo}.{site}"
stream_max_age = "7d"
"#,
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let p = &l.config.publish;
        assert_eq!(p.instance.as_deref(), Some("gp-cern-1"));
        assert_eq!(
            p.spool_dir.as_deref(),
            Some(Path::new("/etc/gridprobe/spool"))
        );
        assert_eq!(p.spool_max_bytes, 256 << 20);
        assert_eq!(p.targets.len(), 2);
        let amqp = &p.targets[0];
        assert_eq!(amqp.name, "amqp");
        assert_eq!(
            amqp.password,
            PasswordSource::File("/etc/gridprobe/secrets/mq".into())
        );
        match &amqp.kind {
            PublishKind::Amqp {
                exchange,
                routing_key,
                declare,
                queue,
                ..
            } => {
                assert_eq!(exchange, "gridprobe.results");
                assert_eq!(routing_key, "{vo}.{site}.{metric}");
                assert!(*declare);
                assert_eq!(queue, "gridprobe.consume.amqp");
            }
            other => panic!("{other:?}"),
        }
        match &p.targets[1].kind {
            PublishKind::Nats {
                stream,
                stream_max_age,
                ..
            } => {
                assert_eq!(stream, "GRIDPROBE");
                assert_eq!(stream_max_age.map(|d| d.as_secs()), Some(7 * 86_400));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_errors_are_positioned_with_hints() {
        let e = errors(
            r#"
[[publish]]
kind = "amqpp"

[[publish]]
kind = "amqp"
url = "amqp://gridprobe:s3cret@mq.example.org/%2f"
subject = "x"
routing_key = "{vo}.{sitee}"
exhange = "x"

[[publish]]
kind = "nats"
subject = "a..b"
"#,
        );
        assert!(
            e.contains("vo.toml:17:8: error: unknown publish kind `amqpp`"),
            "{e}"
        );
        assert!(e.contains("did you mean `amqp`"), "{e}");
        assert!(e.contains("holds a password"), "{e}");
        assert!(!e.contains("s3cret"), "the password is never shown:\n{e}");
        assert!(
            e.contains("`subject` is a setting of kind = \"nats\""),
            "{e}"
        );
        assert!(e.contains("unknown placeholder `{sitee}`"), "{e}");
        assert!(e.contains("did you mean `site`"), "{e}");
        assert!(e.contains("unknown key `exhange` in [[publish]]"), "{e}");
        assert!(e.contains("invalid NATS subject `a..b`"), "{e}");
    }

    #[test]
    fn duplicate_names_and_bad_sizes_are_errors() {
        let e = errors(
            r#"
[server]
spool_max_size = "1 parsec"

[[publish]]
kind = "nats"
[[publish]]
kind = "nats"
"#,
        );
        assert!(e.contains("unknown unit `parsec`"), "{e}");
        assert!(
            e.contains("a [[publish]] target named `nats` is already defined"),
            "{e}"
        );
    }

    #[test]
    fn stomp_targets_are_read_with_defaults() {
        let l = load(
            r#"
[[publish]]
kind = "stomp"
url = "stomp+ssl://gridprobe@mq.example.org:61614"
password_env = "GRIDPROBE_STOMP_PASSCODE"
destination = "/topic/gridprobe.{vo}.{site}"
subscribe = "/queue/gridprobe.central"
heartbeat = "20s"
max_frame_size = "1MiB"
ca_file = "ca.pem"

[[publish]]
name = "plain"
kind = "stomp"
"#,
        );
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let t = &l.config.publish.targets;
        assert_eq!(t[0].name, "stomp");
        assert_eq!(
            t[0].password,
            PasswordSource::Env("GRIDPROBE_STOMP_PASSCODE".into())
        );
        match &t[0].kind {
            PublishKind::Stomp(s) => {
                assert_eq!(s.destination, "/topic/gridprobe.{vo}.{site}");
                assert_eq!(s.subscribe.as_deref(), Some("/queue/gridprobe.central"));
                assert_eq!(s.virtual_host, "/");
                assert_eq!(s.heartbeat.as_secs(), 20);
                assert_eq!(s.receipt_timeout.as_secs(), 30);
                assert_eq!(s.max_frame_bytes, 1 << 20);
                assert_eq!(
                    s.ca_file.as_deref(),
                    Some(Path::new("/etc/gridprobe/ca.pem"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t[1].url, "stomp://127.0.0.1:61613");
        match &t[1].kind {
            PublishKind::Stomp(s) => {
                assert_eq!(s.destination, "/queue/gridprobe.results");
                assert_eq!(s.subscribe, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stomp_errors_are_positioned_and_ranges_checked() {
        let e = errors(
            r#"
[[publish]]
kind = "stomp"
url = "stomp://gridprobe:s3cret@mq.example.org:61613"
[[publish]]
name = "b"
kind = "stomp"
url = "amqp://mq.example.org"
destination = "queue/x"
subscribe = "/queue/{site}"
heartbeat = "0s"
receipt_timeout = "11m"
max_frame_size = "1KiB"
exchange = "x"
[[publish]]
name = "c"
kind = "stomp"
heartbeat = "18446744073709551615s"
max_frame_size = "99999999999999999999"
"#,
        );
        assert!(
            e.contains("vo.toml:18:7: error: the broker URL holds a password"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "the passcode is never shown:\n{e}");
        assert!(
            e.contains("vo.toml:22:7: error: a stomp URL starts with stomp://"),
            "{e}"
        );
        assert!(
            e.contains("vo.toml:23:15: error: invalid STOMP destination `queue/x`"),
            "{e}"
        );
        assert!(
            e.contains("vo.toml:24:13: error: `subscribe` names one destination"),
            "{e}"
        );
        assert!(
            e.contains("vo.toml:25:13: error: invalid duration `0s`"),
            "{e}"
        );
        assert!(
            e.contains("vo.toml:26:19: error: `receipt_timeout` must be between 1s and 10m"),
            "{e}"
        );
        assert!(
            e.contains("vo.toml:27:18: error: `max_frame_size` must be between 64KiB and 256MiB"),
            "{e}"
        );
        assert!(
            e.contains(
                "vo.toml:28:12: error: `exchange` is a setting of kind = \"amqp\", not \"stomp\""
            ),
            "{e}"
        );
        assert!(
            e.contains("vo.toml:32:13: error: `heartbeat` must be between 1s and 10m"),
            "{e}"
        );
        assert!(e.contains("vo.toml:33:18: error: invalid size"), "{e}");
        let e = errors("\n[[publish]]\nkind = \"stmop\"\n");
        assert!(e.contains("did you mean `stomp`"), "{e}");
    }
}
