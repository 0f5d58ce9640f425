//! `[server.self_check]`: the monitoring host's reference names and endpoints, each checked at
//! its position.

use toml::Spanned;

use super::raw::RawSelfCheck;
use super::{FileId, Loader};
use crate::self_check::{split_host_port, SelfCheck};
use crate::time as t;

impl Loader {
    pub(super) fn read_self_check(
        &mut self,
        file: FileId,
        raw: Spanned<RawSelfCheck>,
    ) -> Option<SelfCheck> {
        let span = raw.span();
        let raw = raw.into_inner();
        let interval = self.duration(
            file,
            raw.interval.clone(),
            "self_check.interval",
            t::SELF_CHECK_INTERVAL,
        );
        let timeout = self.duration(
            file,
            raw.timeout.clone(),
            "self_check.timeout",
            t::SELF_CHECK_TIMEOUT,
        );
        let interval = interval.unwrap_or(SelfCheck::DEFAULT_INTERVAL);
        let timeout = timeout.unwrap_or(SelfCheck::DEFAULT_TIMEOUT);
        let mut ok = true;
        if timeout >= interval {
            let at = raw
                .timeout
                .as_ref()
                .or(raw.interval.as_ref())
                .map_or(span.clone(), |v| v.span());
            let d = self.error(
                file,
                at,
                format!(
                    "self_check.timeout ({}) must be shorter than self_check.interval ({})",
                    t::format_duration(timeout),
                    t::format_duration(interval)
                ),
            );
            self.diagnostics.push(d);
            ok = false;
        }
        if raw.resolve.is_empty() && raw.connect.is_empty() {
            let d = self.error(file, span, "[server.self_check] names nothing to check");
            self.diagnostics.push(d.with_help(
                "add resolve = [\"a name your DNS must resolve\"] and/or connect = [\"HOST:PORT\"] of endpoints that are always up",
            ));
            return None;
        }
        for (key, list) in [("resolve", &raw.resolve), ("connect", &raw.connect)] {
            if list.len() > SelfCheck::MAX_REFERENCES {
                let d = self.error(
                    file,
                    list[SelfCheck::MAX_REFERENCES].span(),
                    format!(
                        "self_check.{key} holds more than {} entries",
                        SelfCheck::MAX_REFERENCES
                    ),
                );
                self.diagnostics
                    .push(d.with_help("a few reliable references are enough"));
                ok = false;
            }
        }
        let mut resolve = Vec::new();
        for name in &raw.resolve {
            let n = name.get_ref().trim();
            let valid = !n.is_empty()
                && n.len() <= 253
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if valid {
                resolve.push(n.to_string());
            } else {
                let d = self.error(file, name.span(), format!("`{n}` is not a DNS name"));
                self.diagnostics.push(
                    d.with_help("write a host name such as \"cern.ch\", without port or scheme"),
                );
                ok = false;
            }
        }
        let mut connect = Vec::new();
        for ep in &raw.connect {
            match split_host_port(ep.get_ref()) {
                Ok(hp) => connect.push(hp),
                Err(e) => {
                    let d = self.error(file, ep.span(), format!("self_check.connect: {e}"));
                    self.diagnostics
                        .push(d.with_help("write \"HOST:PORT\", e.g. \"www.cern.ch:443\""));
                    ok = false;
                }
            }
        }
        ok.then_some(SelfCheck {
            interval,
            timeout,
            resolve,
            connect,
        })
    }
}
