//! `[[downtime]]` tables: times in UTC, classification and severity, what they cover.

use toml::Spanned;

use super::raw::{RawDowntime, RawTime};
use super::{FileId, Loader};
use crate::diagnostic::Span;

impl Loader {
    pub(super) fn time(&mut self, file: FileId, raw: &Spanned<RawTime>) -> Option<i64> {
        let text = match raw.get_ref() {
            RawTime::Text(t) => t.clone(),
            RawTime::Toml(d) => d.to_string(),
        };
        match crate::time::parse_utc(&text) {
            Ok(ms) => Some(ms),
            Err(e) => {
                let d = self.error(file, raw.span(), e);
                self.diagnostics.push(d.with_help(
                    "write \"2026-10-05 08:00\" (UTC), \"2026-10-05T08:00:00Z\" or an RFC 3339 time with its offset",
                ));
                None
            }
        }
    }

    pub(super) fn read_downtime(&mut self, file: FileId, raw: RawDowntime) {
        let start = self.time(file, &raw.start);
        let end = self.time(file, &raw.end);
        let scheduled = match raw.classification.get_ref().to_ascii_lowercase().as_str() {
            "scheduled" => Some(true),
            "unscheduled" => Some(false),
            other => {
                let d = self.error(
                    file,
                    raw.classification.span(),
                    format!("unknown classification `{other}`"),
                );
                self.diagnostics.push(d.with_help("write classification = \"scheduled\" (declared at least 24 h ahead) or \"unscheduled\""));
                None
            }
        };
        let outage = match raw.severity.get_ref().to_ascii_lowercase().as_str() {
            "outage" => Some(true),
            "warning" => Some(false),
            other => {
                let d = self.error(
                    file,
                    raw.severity.span(),
                    format!("unknown severity `{other}`"),
                );
                self.diagnostics.push(d.with_help(
                    "write severity = \"outage\" (the service is down) or \"warning\" (at risk)",
                ));
                None
            }
        };
        if raw.site.is_none() && raw.service.is_none() {
            let span = raw.start.span();
            let d = self.error(file, span, "a downtime must name a `site` or a `service`");
            self.diagnostics.push(
                d.with_help("add site = \"SITE\" (the whole site) or service = \"HOSTNAME\""),
            );
            return;
        }
        let (Some(start), Some(end), Some(scheduled), Some(outage)) =
            (start, end, scheduled, outage)
        else {
            return;
        };
        if end <= start {
            let d = self.error(file, raw.end.span(), "a downtime must end after it starts");
            self.diagnostics.push(d);
            return;
        }
        let span_of = |s: &Option<Spanned<String>>| {
            s.as_ref().map(|v| Span {
                file,
                range: v.span(),
            })
        };
        self.positions.downtime_refs.push((
            raw.site.as_ref().map(|s| s.get_ref().clone()),
            span_of(&raw.site),
            raw.service.as_ref().map(|s| s.get_ref().clone()),
            span_of(&raw.service),
        ));
        self.config.downtimes.push(crate::model::Downtime {
            id: format!("config:{}:{}", self.config.downtimes.len() + 1, start),
            site: raw.site.map(Spanned::into_inner),
            hostname: raw.service.map(Spanned::into_inner),
            flavour: raw.flavour.map(Spanned::into_inner),
            start_ms: start,
            end_ms: end,
            scheduled,
            outage,
            reason: raw.reason,
            source: "config".into(),
        });
    }
}
