//! Publishing results to message brokers (`[[publish]]`) and the durable spool settings of
//! `[server]` (`instance`, `spool_dir`, `spool_max_size`): the model, and the routing-key /
//! subject templates shared by the publishers and by configuration checks.

use std::path::PathBuf;
use std::time::Duration;

/// Placeholders a routing key or subject may use, each filled from the result.
pub const PLACEHOLDERS: &[&str] = &[
    "vo", "site", "metric", "flavour", "hostname", "status", "kind", "instance",
];

/// Default spool bound per target (store writer, each publisher).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Publishing and spooling settings of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publishing {
    /// `[server] instance`: the name this gridprobe gives itself in messages and message ids;
    /// `None` means the host name.
    pub instance: Option<String>,
    /// `[server] spool_dir`: where the durable spools live; `None` means next to the store
    /// (`<store>.spool/`).
    pub spool_dir: Option<PathBuf>,
    /// `[server] spool_max_size`: most bytes each spool may take.
    pub spool_max_bytes: u64,
    /// The `[[publish]]` targets, in file order.
    pub targets: Vec<PublishTarget>,
}

impl Default for Publishing {
    fn default() -> Self {
        Publishing {
            instance: None,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            targets: Vec::new(),
        }
    }
}

/// Where a broker password comes from; read when connecting, so the configuration never holds
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password (or one the broker does not need).
    None,
    /// An environment variable.
    Env(String),
    /// A file (first line, trimmed); relative paths are resolved against the config file.
    File(PathBuf),
}

impl PasswordSource {
    /// Reads the password now.
    pub fn read(&self) -> Result<Option<String>, String> {
        match self {
            PasswordSource::None => Ok(None),
            PasswordSource::Env(var) => std::env::var(var)
                .map(Some)
                .map_err(|_| format!("environment variable `{var}` (password_env) is not set")),
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.lines().next().unwrap_or("").trim().to_string()))
                .map_err(|e| format!("cannot read password_file {}: {e}", path.display())),
        }
    }
}

/// One `[[publish]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTarget {
    /// Name for logs, metrics and the spool directory (`name`, default the kind).
    pub name: String,
    /// The broker URL, without a password.
    pub url: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// Protocol-specific settings.
    pub kind: PublishKind,
}

/// The protocol of a publish target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishKind {
    /// AMQP 0-9-1 (RabbitMQ): publisher confirms, persistent messages.
    Amqp {
        /// Exchange published to.
        exchange: String,
        /// Its type when gridprobe declares it (`topic`, `direct`, `fanout`, `headers`).
        exchange_type: String,
        /// Declare the exchange (durable) at connect; false: it must exist (passive check).
        declare: bool,
        /// Routing key template.
        routing_key: String,
        /// `gridprobe consume`: the durable queue bound to the exchange.
        queue: String,
        /// `gridprobe consume`: the binding key of that queue.
        binding_key: String,
    },
    /// NATS JetStream: acknowledged publishes.
    Nats {
        /// Subject template.
        subject: String,
        /// The stream holding the subjects; created when missing.
        stream: String,
        /// Age limit of a stream gridprobe creates (`None`: no limit).
        stream_max_age: Option<Duration>,
        /// `gridprobe consume`: the durable consumer's name.
        consumer: String,
    },
    /// STOMP 1.2 (ActiveMQ, RabbitMQ's STOMP plugin, the brokers ETF and ARGO publish to):
    /// persistent messages, each acknowledged by a RECEIPT frame.
    Stomp(StompSettings),
}

/// The settings of a `kind = "stomp"` target. The login is the URL's user name; the passcode
/// comes from the target's [`PasswordSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompSettings {
    /// Destination template (`/queue/...`, `/topic/...`), filled like a routing key.
    pub destination: String,
    /// `gridprobe consume`: the destination subscribed to (default: `destination` when it has
    /// no placeholder).
    pub subscribe: Option<String>,
    /// The CONNECT frame's `host` header (RabbitMQ reads it as the virtual host).
    pub virtual_host: String,
    /// Heart-beat period offered both ways; the broker's answer decides the real ones.
    pub heartbeat: Duration,
    /// How long the receipts of one batch may take before the batch counts as undelivered.
    pub receipt_timeout: Duration,
    /// Largest frame accepted from the broker (`gridprobe consume`), in bytes.
    pub max_frame_bytes: u64,
    /// Extra CA certificates (PEM) trusted for `stomp+ssl://`, besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// STOMP defaults and bounds shared by the loader and the client.
pub mod stomp {
    use std::time::Duration;

    /// Default `destination`.
    pub const DEFAULT_DESTINATION: &str = "/queue/gridprobe.results";
    /// Default `heartbeat`.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
    /// Default `receipt_timeout`.
    pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_frame_size`: 4 MiB (a result message is at most a few hundred KiB).
    pub const DEFAULT_MAX_FRAME_BYTES: u64 = 4 << 20;
    /// Smallest `max_frame_size`: 64 KiB.
    pub const MIN_FRAME_BYTES: u64 = 64 << 10;
    /// Largest `max_frame_size`: 256 MiB.
    pub const MAX_FRAME_BYTES: u64 = 256 << 20;
}

impl PublishKind {
    /// `amqp`, `nats` or `stomp`.
    pub fn name(&self) -> &'static str {
        match self {
            PublishKind::Amqp { .. } => "amqp",
            PublishKind::Nats { .. } => "nats",
            PublishKind::Stomp(_) => "stomp",
        }
    }
}

/// The values a template is filled with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    /// VO.
    pub vo: &'a str,
    /// Site.
    pub site: &'a str,
    /// Full metric name.
    pub metric: &'a str,
    /// Service flavour.
    pub flavour: &'a str,
    /// Service host name.
    pub hostname: &'a str,
    /// Status name (OK, WARNING, ...).
    pub status: &'a str,
    /// Probe kind.
    pub kind: &'a str,
    /// gridprobe instance.
    pub instance: &'a str,
}

impl TemplateValues<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "vo" => self.vo,
            "site" => self.site,
            "metric" => self.metric,
            "flavour" => self.flavour,
            "hostname" => self.hostname,
            "status" => self.status,
            "kind" => self.kind,
            "instance" => self.instance,
            _ => return None,
        })
    }
}

/// The placeholders of a template, in order; `Err` names the first malformed brace.
pub fn template_placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err("`}` without a matching `{`".into());
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("`{` without a matching `}`".into());
        };
        out.push(after[..close].to_string());
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// One word of a routing key or subject made from a value: the separators and wildcards of
/// AMQP topics and NATS subjects (`.`, `*`, `#`, `>`, white space) become `_`, so each
/// placeholder stays exactly one word (`LCG.CERN.ch` → `LCG_CERN_ch`).
pub fn template_word(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '#' | '>') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Fills a (checked) template; an unknown placeholder is left as written.
pub fn render_template(template: &str, values: &TemplateValues<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match values.get(name) {
                    Some(v) => out.push_str(&template_word(v)),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The NATS subject filter matching every subject a template can give: each dot-separated
/// token holding a placeholder becomes `*` (`gridprobe.{vo}.{site}` → `gridprobe.*.*`).
pub fn subject_filter(template: &str) -> String {
    template
        .split('.')
        .map(|token| if token.contains('{') { "*" } else { token })
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses a size: `1073741824`, `512MiB`, `1 GiB`, `100MB`, `64k`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size `{text}`: expected a number and a unit, e.g. \"512MiB\"")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1024 * 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(|| {
        format!("invalid size `{text}`: must be greater than zero and fit in 64 bits")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues<'static> {
        TemplateValues {
            vo: "lhcb",
            site: "LCG.CERN.ch",
            metric: "org.lhcb.CE-lhcb-install",
            flavour: "ARC-CE",
            hostname: "ce01.cern.ch",
            status: "OK",
            kind: "nagios",
            instance: "gp 1",
        }
    }

    #[test]
    fn templates_fill_one_word_per_placeholder() {
        assert_eq!(
            render_template("{vo}.{site}.{metric}", &values()),
            "lhcb.LCG_CERN_ch.org_lhcb_CE-lhcb-install"
        );
        assert_eq!(render_template("fixed.key", &values()), "fixed.key");
        assert_eq!(
            render_template("x.{instance}-{status}", &values()),
            "x.gp_1-OK"
        );
        assert_eq!(subject_filter("gridprobe.{vo}.{site}"), "gridprobe.*.*");
        assert_eq!(subject_filter("gridprobe.results"), "gridprobe.results");
    }

    #[test]
    fn placeholders_are_listed_and_braces_checked() {
        assert_eq!(
            template_placeholders("a.{vo}.{sitee}").expect("ok"),
            vec!["vo".to_string(), "sitee".to_string()]
        );
        assert!(template_placeholders("a.{vo").is_err());
        assert!(template_placeholders("a.vo}").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs")
            .expect_err("unit")
            .contains("unknown unit"));
        assert!(parse_size("lots").is_err());
    }
}
