//! Reading `[[notify]]` channels and `[[notify_rule]]` rules into [`crate::notify::Notify`],
//! with positioned errors like every other table. Names that need the whole configuration
//! (channels, sites, flavours) are checked in [`check_rule_names`] after every file is read.

use serde::Deserialize;
use toml::Spanned;

use super::{FileId, Loader};
use crate::diagnostic::Diagnostics;
use crate::model::Config;
use crate::notify::{
    check_webhook_template, is_address, Channel, ChannelKind, Level, Rule, RuleSpans, SmtpTls,
    AFTER, AFTER_DURATION, DEFAULT_WEBHOOK_TEMPLATE, GROUP, PORT, RATE_LIMIT, REPEAT,
};
use crate::publish::PasswordSource;

/// One `[[notify]]` table as written; which keys apply depends on `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    name: Spanned<String>,
    kind: Spanned<String>,
    // email
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    // webhook, alertmanager
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    rate_limit: Option<Spanned<i64>>,
}

/// One `[[notify_rule]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    channel: Spanned<String>,
    #[serde(default)]
    sites: Vec<Spanned<String>>,
    #[serde(default)]
    tiers: Vec<Spanned<i64>>,
    #[serde(default)]
    flavours: Vec<Spanned<String>>,
    level: Option<Spanned<String>>,
    #[serde(default)]
    to: Vec<Spanned<String>>,
    contacts: Option<bool>,
    after: Option<Spanned<i64>>,
    after_duration: Option<Spanned<String>>,
    repeat: Option<Spanned<String>>,
    recovery: Option<bool>,
    group: Option<Spanned<String>>,
    site_status: Option<bool>,
    digest: Option<Spanned<String>>,
}

const KINDS: &[&str] = &["email", "webhook", "alertmanager"];

impl Loader {
    /// One `[[notify]]` table.
    pub(super) fn read_channel(&mut self, file: FileId, raw: RawChannel) {
        let kind = raw.kind.get_ref().trim().to_ascii_lowercase();
        if !KINDS.contains(&kind.as_str()) {
            let d = self
                .error(
                    file,
                    raw.kind.span(),
                    format!("unknown notification kind `{}`", raw.kind.get_ref()),
                )
                .with_suggestion(&kind, KINDS.iter().copied());
            let d = if d.help.is_none() {
                d.with_help("write kind = \"email\", \"webhook\" or \"alertmanager\"")
            } else {
                d
            };
            self.diagnostics.push(d);
            return;
        }
        let mut ok = true;
        let name = raw.name.get_ref().trim().to_string();
        self.notify_declared.push(name.clone());
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            let d = self.error(
                file,
                raw.name.span(),
                format!("invalid channel name `{name}`"),
            );
            self.diagnostics.push(d.with_help(
                "use letters, digits, `-`, `_` and `.` (it names the spool directory too)",
            ));
            ok = false;
        } else if self.config.notify.channel(&name).is_some() {
            let d = self.error(
                file,
                raw.name.span(),
                format!("a [[notify]] channel named `{name}` is already defined"),
            );
            self.diagnostics
                .push(d.with_help("give each [[notify]] table its own `name`"));
            ok = false;
        }
        // Keys of the other kinds.
        let email_keys = [
            ("host", raw.host.as_ref().map(Spanned::span)),
            ("port", raw.port.as_ref().map(Spanned::span)),
            ("tls", raw.tls.as_ref().map(Spanned::span)),
            ("from", raw.from.as_ref().map(Spanned::span)),
            ("username", raw.username.as_ref().map(Spanned::span)),
            ("password_env", raw.password_env.as_ref().map(Spanned::span)),
            (
                "password_file",
                raw.password_file.as_ref().map(Spanned::span),
            ),
        ];
        let http_keys = [
            ("url", raw.url.as_ref().map(Spanned::span)),
            ("url_env", raw.url_env.as_ref().map(Spanned::span)),
        ];
        let template_key = [("template", raw.template.as_ref().map(Spanned::span))];
        let foreign: Vec<(&str, std::ops::Range<usize>)> = match kind.as_str() {
            "email" => http_keys.iter().chain(&template_key).cloned().collect(),
            "webhook" => email_keys.to_vec(),
            _ => email_keys.iter().chain(&template_key).cloned().collect(),
        }
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
        for (key, span) in foreign {
            let d = self.error(
                file,
                span,
                format!("`{key}` is not a setting of a kind = \"{kind}\" channel"),
            );
            self.diagnostics.push(d);
            ok = false;
        }
        let rate_limit = self
            .count(file, raw.rate_limit.clone(), "rate_limit", RATE_LIMIT)
            .unwrap_or(60);
        let channel_kind = match kind.as_str() {
            "email" => self.email_channel(file, &raw, &mut ok),
            _ => {
                let url = match (&raw.url, &raw.url_env) {
                    (Some(u), None) => self.notify_url(file, u, &mut ok),
                    (None, Some(e)) => {
                        // Slack/Mattermost webhook URLs are secrets: read from the environment
                        // when the channel starts.
                        let var = e.get_ref().trim();
                        if var.is_empty() {
                            let d = self.error(file, e.span(), "`url_env` must not be empty");
                            self.diagnostics.push(d);
                            ok = false;
                        }
                        format!("env:{var}")
                    }
                    (Some(_), Some(e)) => {
                        let d = self.error(
                            file,
                            e.span(),
                            "give the URL in one of `url` and `url_env`, not both",
                        );
                        self.diagnostics.push(d);
                        ok = false;
                        String::new()
                    }
                    (None, None) => {
                        let d = self.error(
                            file,
                            raw.kind.span(),
                            format!("a kind = \"{kind}\" channel needs `url` (or `url_env`)"),
                        );
                        self.diagnostics.push(d.with_help(if kind == "webhook" {
                            "e.g. url_env = \"MATTERMOST_HOOK\" (incoming-webhook URLs are secrets)"
                        } else {
                            "e.g. url = \"http://alertmanager.example.org:9093\""
                        }));
                        ok = false;
                        String::new()
                    }
                };
                if kind == "webhook" {
                    let template = match &raw.template {
                        Some(t) => {
                            if let Err(e) = check_webhook_template(t.get_ref()) {
                                let d = self.error(file, t.span(), e);
                                self.diagnostics.push(d.with_help(
                                    "placeholders become JSON strings, quotes included: \
                                     template = '{\"text\": {text}}'",
                                ));
                                ok = false;
                            }
                            t.get_ref().clone()
                        }
                        None => DEFAULT_WEBHOOK_TEMPLATE.to_string(),
                    };
                    ChannelKind::Webhook { url, template }
                } else {
                    ChannelKind::Alertmanager { url }
                }
            }
        };
        if ok {
            self.config.notify.channels.push(Channel {
                name,
                kind: channel_kind,
                rate_limit,
            });
        }
    }

    fn notify_url(&mut self, file: FileId, u: &Spanned<String>, ok: &mut bool) -> String {
        let text = u.get_ref().trim();
        let (masked, secrets) = crate::model::url_credentials(text);
        if !secrets.is_empty() {
            let d = self.error(
                file,
                u.span(),
                format!("the URL `{masked}` holds a credential"),
            );
            self.diagnostics.push(
                d.with_help("put the whole URL in an environment variable: url_env = \"NAME\""),
            );
            *ok = false;
            return String::new();
        }
        match url::Url::parse(text) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => text.to_string(),
            _ => {
                let d = self.error(file, u.span(), format!("`{masked}` is not an http(s) URL"));
                self.diagnostics
                    .push(d.with_help("e.g. url = \"https://hooks.example.org/gridprobe\""));
                *ok = false;
                String::new()
            }
        }
    }

    fn email_channel(&mut self, file: FileId, raw: &RawChannel, ok: &mut bool) -> ChannelKind {
        let host = match &raw.host {
            Some(h) if !h.get_ref().trim().is_empty() && !h.get_ref().contains(['/', '@', ' ']) => {
                h.get_ref().trim().to_string()
            }
            Some(h) => {
                let d = self.error(file, h.span(), "`host` must be a host name");
                self.diagnostics
                    .push(d.with_help("e.g. host = \"smtp.example.org\""));
                *ok = false;
                String::new()
            }
            None => {
                let d = self.error(
                    file,
                    raw.kind.span(),
                    "a kind = \"email\" channel needs `host`",
                );
                self.diagnostics
                    .push(d.with_help("the SMTP server, e.g. host = \"smtp.example.org\""));
                *ok = false;
                String::new()
            }
        };
        let tls = match raw
            .tls
            .as_ref()
            .map(|t| t.get_ref().trim().to_ascii_lowercase())
        {
            None => SmtpTls::Starttls,
            Some(t) if t == "starttls" => SmtpTls::Starttls,
            Some(t) if t == "tls" => SmtpTls::Tls,
            Some(t) if t == "none" => SmtpTls::None,
            Some(t) => {
                let span = raw.tls.as_ref().map_or(raw.kind.span(), Spanned::span);
                let d = self
                    .error(file, span, format!("unknown `tls` mode `{t}`"))
                    .with_suggestion(&t, ["starttls", "tls", "none"]);
                self.diagnostics.push(d.with_help(
                    "tls = \"starttls\" (port 587), \"tls\" (port 465) or \"none\" (local relay only)",
                ));
                *ok = false;
                SmtpTls::Starttls
            }
        };
        let default_port = match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        };
        let port = self
            .count(file, raw.port.clone(), "port", PORT)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default_port);
        let from = match &raw.from {
            Some(f) if is_address(f.get_ref().trim()) => f.get_ref().trim().to_string(),
            Some(f) => {
                let d = self.error(
                    file,
                    f.span(),
                    format!("`from` = `{}` is not an e-mail address", f.get_ref()),
                );
                self.diagnostics
                    .push(d.with_help("a plain address, e.g. from = \"gridprobe@example.org\""));
                *ok = false;
                String::new()
            }
            None => {
                let d = self.error(
                    file,
                    raw.kind.span(),
                    "a kind = \"email\" channel needs `from`",
                );
                self.diagnostics
                    .push(d.with_help("the sender, e.g. from = \"gridprobe@example.org\""));
                *ok = false;
                String::new()
            }
        };
        let password = self
            .password_source(file, &raw.password_env, &raw.password_file)
            .unwrap_or_else(|| {
                *ok = false;
                PasswordSource::None
            });
        let username = raw
            .username
            .as_ref()
            .map(|u| u.get_ref().trim().to_string());
        if username.is_none() && password != PasswordSource::None {
            let span = raw
                .password_env
                .as_ref()
                .or(raw.password_file.as_ref())
                .map_or(raw.kind.span(), Spanned::span);
            let d = self.error(file, span, "a password needs a `username`");
            self.diagnostics.push(d);
            *ok = false;
        }
        ChannelKind::Email {
            host,
            port,
            tls,
            from,
            username,
            password,
        }
    }

    /// One `[[notify_rule]]` table.
    pub(super) fn read_rule(&mut self, file: FileId, raw: RawRule) {
        let mut ok = true;
        let mut tiers = Vec::new();
        for t in &raw.tiers {
            match u8::try_from(*t.get_ref()) {
                Ok(n) if n <= 3 => tiers.push(n),
                _ => {
                    let d = self.error(
                        file,
                        t.span(),
                        format!("a tier is 0 to 3, found {}", t.get_ref()),
                    );
                    self.diagnostics.push(d);
                    ok = false;
                }
            }
        }
        let level = match raw
            .level
            .as_ref()
            .map(|l| l.get_ref().trim().to_ascii_uppercase())
        {
            None => Level::Critical,
            Some(l) if l == "CRITICAL" => Level::Critical,
            Some(l) if l == "WARNING" => Level::Warning,
            Some(l) => {
                let span = raw.level.as_ref().map_or(raw.channel.span(), Spanned::span);
                let d = self
                    .error(file, span, format!("unknown `level` `{l}`"))
                    .with_suggestion(&l, ["CRITICAL", "WARNING"]);
                self.diagnostics.push(d.with_help(
                    "level = \"CRITICAL\" (the default) or \"WARNING\" (WARNING and CRITICAL)",
                ));
                ok = false;
                Level::Critical
            }
        };
        let mut to = Vec::new();
        for r in &raw.to {
            let v = r.get_ref().trim();
            if is_address(v) {
                to.push(v.to_string());
            } else {
                let d = self.error(
                    file,
                    r.span(),
                    format!("recipient `{v}` is not an e-mail address"),
                );
                self.diagnostics
                    .push(d.with_help("a plain address, e.g. \"storage-experts@example.org\""));
                ok = false;
            }
        }
        let after = self.count(file, raw.after, "after", AFTER).unwrap_or(1);
        let after_duration =
            self.duration(file, raw.after_duration, "after_duration", AFTER_DURATION);
        let repeat = self.duration(file, raw.repeat, "repeat", REPEAT);
        let group = self
            .duration(file, raw.group, "group", GROUP)
            .unwrap_or(std::time::Duration::from_secs(30));
        let digest_minute = match &raw.digest {
            None => None,
            Some(d) => match crate::notify::parse_time_of_day(d.get_ref()) {
                Some(m) => Some(m),
                None => {
                    let e = self.error(
                        file,
                        d.span(),
                        format!("`digest` = `{}` is not a time of day", d.get_ref()),
                    );
                    self.diagnostics.push(
                        e.with_help("write HH:MM in UTC, 00:00 to 23:59, e.g. digest = \"07:30\""),
                    );
                    None
                }
            },
        };
        let spans = RuleSpans {
            sites: raw
                .sites
                .iter()
                .map(|s| (s.get_ref().trim().to_string(), self.span(file, s.span())))
                .collect(),
            flavours: raw
                .flavours
                .iter()
                .map(|s| (s.get_ref().trim().to_string(), self.span(file, s.span())))
                .collect(),
        };
        let channel_span = self.span(file, raw.channel.span());
        if ok {
            self.config.notify.rules.push(Rule {
                channel: raw.channel.get_ref().trim().to_string(),
                sites: spans.sites.iter().map(|(s, _)| s.clone()).collect(),
                tiers,
                flavours: spans.flavours.iter().map(|(s, _)| s.clone()).collect(),
                level,
                to,
                contacts: raw.contacts.unwrap_or(true),
                after,
                after_duration,
                repeat,
                recovery: raw.recovery.unwrap_or(true),
                group,
                site_status: raw.site_status.unwrap_or(false),
                digest_minute,
                spans,
            });
            self.notify_channel_spans.push(channel_span);
        }
    }
}

/// Rules naming a channel, site or flavour the configuration does not have.
pub(super) fn check_rule_names(
    config: &Config,
    channel_spans: &[crate::Span],
    declared: &[String],
) -> Diagnostics {
    let mut out = Diagnostics::default();
    let sites: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
    let mut flavours: Vec<&str> = config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.flavour.as_str()))
        .chain(
            config
                .probes
                .iter()
                .flat_map(|p| p.flavours.iter().map(String::as_str)),
        )
        .collect();
    flavours.sort_unstable();
    flavours.dedup();
    for (rule, span) in config.notify.rules.iter().zip(channel_spans) {
        // A declared channel with errors of its own has been reported already.
        if !declared.contains(&rule.channel) {
            let d = config
                .sources
                .error(span, format!("unknown channel `{}`", rule.channel))
                .with_suggestion(&rule.channel, declared.iter().map(String::as_str));
            let d = if d.help.is_none() {
                d.with_help(if declared.is_empty() {
                    "define it in a [[notify]] table with this `name`".to_string()
                } else {
                    format!("channels: {}", declared.join(", "))
                })
            } else {
                d
            };
            out.push(d);
        }
        for (site, span) in &rule.spans.sites {
            if !sites.contains(&site.as_str()) {
                let d = config
                    .sources
                    .error(span, format!("unknown site `{site}`"))
                    .with_suggestion(site, sites.iter().copied());
                out.push(d);
            }
        }
        for (flavour, span) in &rule.spans.flavours {
            if !flavours.contains(&flavour.as_str()) {
                let d = config
                    .sources
                    .error(span, format!("unknown flavour `{flavour}`"))
                    .with_suggestion(flavour, flavours.iter().copied());
                let d = if d.help.is_none() {
                    d.with_help(format!("flavours of this VO: {}", flavours.join(", ")))
                } else {
                    d
                };
                out.push(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BASE: &str = r#"
vo = "lhcb"
[[site]]
name = "LCG.CERN.ch"
tier = 0
contact = "grid-admin@cern.example.org"
  [[site.service]]
  flavour = "SRM"
  hostname = "se.cern.example.org"
[[probe]]
metric = "org.lhcb.SRM-put"
kind = "tcp"
flavours = ["SRM"]
params = { port = 8443 }
"#;

    fn load(extra: &str) -> crate::Loaded {
        crate::load_str(Path::new("vo.toml"), &format!("{BASE}{extra}"))
    }

    fn errors(l: &crate::Loaded) -> String {
        l.diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{} {} {:?}",
                    d.position().unwrap_or_default(),
                    d.message,
                    d.help
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn channels_and_rules_are_read() {
        let l = load(
            r#"
[[notify]]
name = "mail"
kind = "email"
host = "smtp.example.org"
from = "gridprobe@example.org"
username = "gp"
password_env = "SMTP_PW"
[[notify]]
name = "chat"
kind = "webhook"
url_env = "HOOK"
[[notify_rule]]
channel = "mail"
sites = ["LCG.CERN.ch"]
flavours = ["SRM"]
to = ["storage@example.org"]
after = 3
repeat = "4h"
group = "10s"
"#,
        );
        assert!(l.diagnostics.is_empty(), "{}", errors(&l));
        let n = &l.config.notify;
        assert_eq!(n.channels.len(), 2);
        assert_eq!(n.channels[0].kind.name(), "email");
        let crate::notify::ChannelKind::Email { port, .. } = n.channels[0].kind else {
            panic!()
        };
        assert_eq!(port, 587);
        let r = &n.rules[0];
        assert_eq!((r.after, r.contacts, r.recovery), (3, true, true));
        assert_eq!(r.repeat, Some(std::time::Duration::from_secs(4 * 3600)));
        assert!(r.covers("LCG.CERN.ch", 0, "SRM"));
        assert!(!r.covers("LCG.CERN.ch", 0, "CE"));
    }

    #[test]
    fn bad_names_templates_and_recipients_are_positioned() {
        let l = load(
            r#"
[[notify]]
name = "chat"
kind = "webhook"
url = "https://hooks.example.org/x"
template = '{"text": "{text}"}'
[[notify]]
name = "pager"
kind = "smoke-signal"
[[notify_rule]]
channel = "mial"
to = ["storage experts"]
[[notify_rule]]
channel = "chat"
sites = ["LCG.CERN.CH"]
flavours = ["SMR"]
repeat = "100ms"
digest = "25:00"
"#,
        );
        let text = errors(&l);
        for want in [
            "vo.toml:20:12 the template does not render to JSON",
            "vo.toml:23:8 unknown notification kind `smoke-signal`",
            "vo.toml:26:7 recipient `storage experts` is not an e-mail address",
            "vo.toml:29:10 unknown site `LCG.CERN.CH` Some(\"did you mean `LCG.CERN.ch`?\")",
            "vo.toml:30:13 unknown flavour `SMR` Some(\"did you mean `SRM`?\")",
            "vo.toml:31:10 `repeat` must be between 1s and 30d",
            "vo.toml:32:10 `digest` = `25:00` is not a time of day",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // A channel with an error of its own is not also "unknown".
        assert!(!text.contains("unknown channel `chat`"), "{text}");
        // The rule with a bad recipient is not kept, so its unknown channel is not reported;
        // an unknown channel on an otherwise good rule is.
        let l = load("[[notify_rule]]\nchannel = \"mial\"\n");
        let text = errors(&l);
        assert!(
            text.contains("vo.toml:16:11 unknown channel `mial`"),
            "{text}"
        );
    }

    #[test]
    fn credentials_in_urls_are_refused_and_never_echoed() {
        let l = load(
            "[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"https://u:S3CRET@am.example.org\"\n",
        );
        let text = errors(&l);
        assert!(text.contains("holds a credential"), "{text}");
        assert!(!text.contains("S3CRET"), "{text}");
    }
}
