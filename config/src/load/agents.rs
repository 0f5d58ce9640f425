//! Reading `[agents]` and `[[site]] executor` (site agents), with positioned errors.

use serde::Deserialize;
use toml::de::DeValue;
use toml::Spanned;

use super::{FileId, Loader};
use crate::agents::{
    AgentSettings, Executor, DEFAULT_GRACE, DEFAULT_MAX_DELIVER, DEFAULT_NO_AGENT_AFTER,
    DEFAULT_PREFIX, MAX_DELIVER,
};
use crate::publish::PasswordSource;
use crate::time as t;

/// `[agents]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    url: Spanned<String>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    no_agent_after: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    max_deliver: Option<Spanned<i64>>,
}

/// Whether `prefix` is one or more NATS subject tokens without wildcards or spaces.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|tok| {
            !tok.is_empty()
                && tok
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

impl Loader {
    /// `[agents]`.
    pub(super) fn read_agents(&mut self, file: FileId, value: Spanned<DeValue<'static>>) {
        self.saw_agents = true;
        let Some(raw) = self.deserialize::<RawAgents>(file, value, "[agents]") else {
            return;
        };
        let has_password = raw.password_env.is_some() || raw.password_file.is_some();
        let url = self.broker_url(file, &raw.url, "agents", has_password);
        let password = self
            .password_source(file, &raw.password_env, &raw.password_file)
            .unwrap_or(PasswordSource::None);
        let prefix = match &raw.prefix {
            Some(p) if !valid_prefix(p.get_ref()) => {
                let d = self.error(
                    file,
                    p.span(),
                    format!(
                        "`prefix` must be NATS subject tokens (letters, digits, `_`, `-`, separated by dots), found `{}`",
                        p.get_ref()
                    ),
                );
                self.diagnostics
                    .push(d.with_help("e.g. prefix = \"gridprobe.lhcb\""));
                DEFAULT_PREFIX.to_string()
            }
            Some(p) => p.get_ref().clone(),
            None => DEFAULT_PREFIX.to_string(),
        };
        let ca_file = raw
            .ca_file
            .map(|c| self.base_dir(file).join(c.get_ref().trim()));
        let no_agent_after = self
            .duration(
                file,
                raw.no_agent_after,
                "no_agent_after",
                t::NO_AGENT_AFTER,
            )
            .unwrap_or(DEFAULT_NO_AGENT_AFTER);
        let grace = self
            .duration(file, raw.grace, "grace", t::AGENT_GRACE)
            .unwrap_or(DEFAULT_GRACE);
        let max_deliver = self
            .count(file, raw.max_deliver, "max_deliver", MAX_DELIVER)
            .unwrap_or(DEFAULT_MAX_DELIVER);
        if let Some(url) = url {
            self.config.agents = Some(AgentSettings {
                url,
                password,
                ca_file,
                prefix,
                no_agent_after,
                grace,
                max_deliver,
            });
        }
    }

    /// A site's `executor`; an unknown word is an error at it ("did you mean").
    pub(super) fn executor(&mut self, file: FileId, raw: Option<Spanned<String>>) -> Executor {
        let Some(raw) = raw else {
            return Executor::Local;
        };
        match Executor::parse(raw.get_ref()) {
            Some(e) => {
                if e == Executor::Agent {
                    let span = self.span(file, raw.span());
                    self.agent_sites.push(span);
                }
                e
            }
            None => {
                let d = self
                    .error(
                        file,
                        raw.span(),
                        format!(
                            "unknown executor `{}`: write \"local\" or \"agent\"",
                            raw.get_ref()
                        ),
                    )
                    .with_suggestion(raw.get_ref(), Executor::NAMES.iter().copied());
                let d = if d.help.is_none() {
                    d.with_help("\"agent\" runs the site's probes on its agents (`gridprobe agent`), through the broker of [agents]")
                } else {
                    d
                };
                self.diagnostics.push(d);
                Executor::Local
            }
        }
    }

    /// An agent-run site needs `[agents]` (the broker its work goes through).
    pub(super) fn check_agent_sites(&mut self) {
        // Agents answer one centre: with a shared schedule a result could reach an instance
        // that is not waiting for it and be recorded twice, so the two are refused together.
        if self.config.server.schedule == crate::model::ScheduleMode::Shared {
            if let Some(span) = self.agent_sites.first() {
                let d = self
                    .config
                    .sources
                    .error(
                        span,
                        "a site run by agents cannot be on a shared schedule ([server] schedule = \"shared\") yet",
                    )
                    .with_help(
                        "run the agent-run sites from one `serve` with schedule = \"local\" (a second configuration), or keep this site local",
                    );
                self.diagnostics.push(d);
            }
        }
        // An `[agents]` table with errors has its own; the sites are not blamed for it.
        if self.saw_agents {
            return;
        }
        for span in std::mem::take(&mut self.agent_sites) {
            let d = self
                .config
                .sources
                .error(
                    &span,
                    "executor = \"agent\" needs an [agents] table naming the broker",
                )
                .with_help(
                    "add [agents] with url = \"nats://USER@broker.example.org:4222\" and password_file (see docs/agents.md), or remove executor",
                );
            self.diagnostics.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const SITE: &str = "vo = \"t\"\n[[site]]\nname = \"S\"\ntier = 2\nexecutor = \"agent\"\n";

    fn errors(text: &str) -> String {
        crate::load_str(Path::new("/tmp/vo.toml"), text)
            .diagnostics
            .to_string()
    }

    #[test]
    fn agent_sites_need_the_agents_table() {
        let e = errors(SITE);
        assert!(e.contains("vo.toml:5:12"), "{e}");
        assert!(e.contains("needs an [agents] table"), "{e}");
        let ok = format!("{SITE}[agents]\nurl = \"nats://127.0.0.1:4222\"\n");
        let loaded = crate::load_str(Path::new("/tmp/vo.toml"), &ok);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        assert_eq!(
            loaded.config.sites[0].executor,
            crate::agents::Executor::Agent
        );
        let a = loaded.config.agents.expect("agents");
        assert_eq!(a.prefix, "gridprobe");
        assert_eq!(a.max_deliver, 3);
    }

    #[test]
    fn rabbitmq_urls_select_the_second_backend() {
        for url in [
            "amqp://centre@127.0.0.1:5672/gridprobe",
            "amqps://centre@mq.example.org/%2f",
        ] {
            let text = format!(
                "{SITE}[agents]\nurl = \"{url}\"\npassword_env = \"GP_PW\"\nca_file = \"ca.pem\"\n"
            );
            let loaded = crate::load_str(Path::new("/tmp/vo.toml"), &text);
            assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
            let a = loaded.config.agents.expect("agents");
            assert_eq!(a.url, url);
            assert_eq!(a.ca_file.as_deref(), Some(Path::new("/tmp/ca.pem")));
        }
        // A user without a password is fine for AMQP (no token form); a password in it is not.
        let ok = format!("{SITE}[agents]\nurl = \"amqp://centre@127.0.0.1/vh\"\n");
        assert!(errors(&ok).is_empty(), "{}", errors(&ok));
        let e = errors(&format!(
            "{SITE}[agents]\nurl = \"amqp://centre:s3cret@127.0.0.1/vh\"\n"
        ));
        assert!(e.contains("vo.toml:7:7"), "{e}");
        assert!(e.contains("holds a password"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn bad_agent_settings_are_positioned() {
        let e = errors(&SITE.replace("\"agent\"", "\"agnet\""));
        assert!(e.contains("vo.toml:5:12"), "{e}");
        assert!(e.contains("unknown executor `agnet`"), "{e}");
        assert!(e.contains("agent"), "{e}");
        let e = errors(&format!(
            "{SITE}[agents]\nurl = \"nats://127.0.0.1:4222\"\nprefix = \"a.*\"\ngrace = \"0s\"\nmax_deliver = 0\nno_agent_after = \"9999d\"\n"
        ));
        for want in [
            "vo.toml:8:10",
            "`prefix` must be NATS subject tokens",
            "vo.toml:9:9",
            "vo.toml:10:15",
            "`max_deliver` must be between 1 and 100",
            "vo.toml:11:18",
        ] {
            assert!(e.contains(want), "missing {want}:\n{e}");
        }
        let e = errors(&format!(
            "{SITE}[agents]\nurl = \"nats://user:s3cret@127.0.0.1:4222\"\n"
        ));
        assert!(e.contains("holds a token"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(!e.contains("needs an [agents] table"), "{e}");
        let e = errors(&format!("{SITE}[agents]\nurl = \"http://x\"\nfoo = 1\n"));
        assert!(e.contains("nats://"), "{e}");
        assert!(e.contains("amqp://"), "{e}");
        assert!(e.contains("foo"), "{e}");
        // The password's source: one of the two keys, never empty (the same rule as
        // `[[publish]]` and `[[notify]]`).
        let agents = format!("{SITE}[agents]\nurl = \"nats://c@127.0.0.1:4222\"\n");
        let e = errors(&format!("{agents}password_env = \" \"\n"));
        assert!(e.contains("vo.toml:8:16: error: must not be empty"), "{e}");
        let e = errors(&format!(
            "{agents}password_env = \"P\"\npassword_file = \"p\"\n"
        ));
        assert!(e.contains("vo.toml:9:17"), "{e}");
        assert!(e.contains("not both"), "{e}");
    }

    /// Agents answer one centre, so a shared schedule with agent-run sites is refused at the
    /// first such site.
    #[test]
    fn agent_sites_are_refused_on_a_shared_schedule() {
        let text = format!(
            "[server]\nstore = \"postgresql://gp@127.0.0.1/gp\"\nschedule = \"shared\"\n{}[agents]\nurl = \"nats://127.0.0.1:4222\"\n",
            SITE.replace("vo = \"t\"\n", "")
        );
        let e = errors(&format!("vo = \"t\"\n{text}"));
        assert!(e.contains("vo.toml:8:12"), "{e}");
        assert!(e.contains("cannot be on a shared schedule"), "{e}");
        let local = errors(&format!("vo = \"t\"\n{}", text.replace("shared", "local")));
        assert!(!local.contains("shared schedule"), "{local}");
    }
}
