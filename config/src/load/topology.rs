//! Sites, services, probes and profiles: the topology of a VO, each table read on its own.

use std::collections::BTreeMap;

use toml::de::DeValue;
use toml::Spanned;

use super::raw::{RawOverride, RawProbe, RawProfile, RawService, RawSite};
use super::{take_key, FileId, Loader, RETRIES};
use crate::model::{
    short_metric_name, FlavourGroup, GroupOperation, KindParams, Overrides, ProbeDef, Profile,
    Service, Site,
};
use crate::time as t;

impl Loader {
    pub(super) fn overrides(
        &mut self,
        file: FileId,
        raw: BTreeMap<Spanned<String>, RawOverride>,
    ) -> BTreeMap<String, Overrides> {
        let mut out = BTreeMap::new();
        for (key, o) in raw {
            self.positions
                .override_keys
                .push((key.get_ref().clone(), self.span(file, key.span())));
            let value = Overrides {
                interval: self.duration(file, o.interval, "interval", t::INTERVAL),
                timeout: self.duration(file, o.timeout, "timeout", t::TIMEOUT),
                retries: self.count(file, o.retries, "retries", RETRIES),
                retry_interval: self.duration(
                    file,
                    o.retry_interval,
                    "retry_interval",
                    t::RETRY_INTERVAL,
                ),
                disabled: o.disabled,
            };
            out.insert(key.into_inner(), value);
        }
        out
    }

    pub(super) fn read_site(&mut self, file: FileId, item: Spanned<DeValue<'static>>) {
        // Services are read one by one so that each bad service is reported on its own.
        let (item, services) = take_key(item, "service");
        let Some(raw) = self.deserialize::<RawSite>(file, item, "[[site]]") else {
            return;
        };
        let tier_span = self.span(file, raw.tier.span());
        let tier = *raw.tier.get_ref();
        if !(0..=3).contains(&tier) {
            let d = self.error(
                file,
                raw.tier.span(),
                format!("tier must be 0, 1, 2 or 3, found {tier}"),
            );
            self.diagnostics.push(d);
        }
        let overrides = self.overrides(file, raw.overrides);
        let weight = raw
            .weight
            .and_then(|w| self.weight(file, w.span(), w.get_ref().value()));
        let federation = raw.federation.and_then(|f| {
            if f.get_ref().trim().is_empty() {
                let d = self.error(file, f.span(), "`federation` must not be empty");
                self.diagnostics
                    .push(d.with_help("name the federation, e.g. \"DE-DESY-T2\""));
                None
            } else {
                Some(f.into_inner())
            }
        });
        let executor = self.executor(file, raw.executor);
        let mut site = Site {
            name: raw.name.get_ref().clone(),
            tier: tier.clamp(0, 3) as u8,
            grid: raw.grid,
            country: raw.country,
            contact: raw.contact,
            federation,
            weight,
            services: Vec::new(),
            executor,
            overrides,
            span: self.span(file, raw.name.span()),
        };
        let mut flavour_spans = Vec::new();
        if let Some(services) = services {
            for item in self.array_of_tables(file, services, "site.service") {
                let Some(raw) = self.deserialize::<RawService>(file, item, "[[site.service]]")
                else {
                    continue;
                };
                let endpoint = raw
                    .endpoint
                    .and_then(|e| match url::Url::parse(e.get_ref()) {
                        Ok(u) if u.password().is_some()
                            || !crate::model::url_credentials(e.get_ref()).1.is_empty() =>
                        {
                            let d = self.error(
                                file,
                                e.span(),
                                format!(
                                    "the endpoint URL `{}` holds a password or token",
                                    crate::model::redact_url(e.get_ref())
                                ),
                            );
                            self.diagnostics.push(d.with_help(
                                "configuration files are read by many: keep credentials out of URLs and give them to the probe through its own parameters (a file or an environment variable)",
                            ));
                            None
                        }
                        Ok(u) => Some(u),
                        Err(err) => {
                            let d = self.error(
                                file,
                                e.span(),
                                format!(
                                    "invalid endpoint URL `{}`: {err}",
                                    crate::model::redact_url(e.get_ref())
                                ),
                            );
                            self.diagnostics.push(d.with_help(
                                "write a full URL such as \"https://host.example.org:8443/path\"",
                            ));
                            None
                        }
                    });
                if raw.hostname.get_ref().trim().is_empty() {
                    let d = self.error(file, raw.hostname.span(), "`hostname` must not be empty");
                    self.diagnostics.push(d);
                }
                let overrides = self.overrides(file, raw.overrides);
                flavour_spans.push(self.span(file, raw.flavour.span()));
                site.services.push(Service {
                    flavour: raw.flavour.into_inner(),
                    hostname: raw.hostname.get_ref().clone(),
                    endpoint,
                    tags: raw.tags,
                    params: raw.params,
                    production: raw.production,
                    overrides,
                    span: self.span(file, raw.hostname.span()),
                });
            }
        }
        self.positions.service_flavour.push(flavour_spans);
        self.positions.site_tier.push(tier_span);
        self.config.sites.push(site);
    }

    pub(super) fn read_probe(&mut self, file: FileId, item: Spanned<DeValue<'static>>) {
        let table_span = self.span(file, item.span());
        let (item, params) = take_key(item, "params");
        let (item, bundle) = take_key(item, "bundle");
        let Some(raw) = self.deserialize::<RawProbe>(file, item, "[[probe]]") else {
            return;
        };
        let bundle = bundle
            .map(|b| self.array_of_tables(file, b, "bundle"))
            .unwrap_or_default();
        if let Some(p) = &params {
            if !p.get_ref().is_table() {
                let d = self.error(
                    file,
                    p.span(),
                    format!("`params` must be a table, found {}", p.get_ref().type_str()),
                );
                self.diagnostics
                    .push(d.with_help("write [probe.params] or params = { key = \"value\" }"));
            }
        }
        let metric = raw.metric.get_ref().trim().to_string();
        if metric.is_empty() || metric.contains(char::is_whitespace) {
            let d = self.error(
                file,
                raw.metric.span(),
                format!(
                    "invalid metric name `{}`: it must be non-empty and contain no spaces",
                    raw.metric.get_ref()
                ),
            );
            self.diagnostics.push(
                d.with_help("use a reverse-DNS style name such as \"org.lhcb.CE-lhcb-install\""),
            );
        }
        let (short, short_span) = match &raw.name {
            Some(n) => (n.get_ref().clone(), self.span(file, n.span())),
            None => (
                short_metric_name(&metric).to_string(),
                self.span(file, raw.metric.span()),
            ),
        };
        let interval = self.duration(file, raw.interval.clone(), "interval", t::INTERVAL);
        let timeout = self.duration(file, raw.timeout.clone(), "timeout", t::TIMEOUT);
        let retry_interval = self.duration(
            file,
            raw.retry_interval,
            "retry_interval",
            t::RETRY_INTERVAL,
        );
        let freshness = self.duration(file, raw.freshness, "freshness", t::FRESHNESS);
        let retries = self.count(file, raw.retries, "retries", RETRIES);
        self.positions.probe_flavours.push(
            raw.flavours
                .iter()
                .map(|f| (f.get_ref().clone(), self.span(file, f.span())))
                .collect(),
        );
        self.positions.probe_depends.push(
            raw.depends_on
                .iter()
                .map(|f| (f.get_ref().clone(), self.span(file, f.span())))
                .collect(),
        );
        self.positions
            .probe_timeout
            .push(raw.timeout.as_ref().map(|t| self.span(file, t.span())));
        self.positions.probe_short.push(short_span);
        self.config.probes.push(ProbeDef {
            metric,
            short,
            kind: raw.kind.get_ref().clone(),
            flavours: raw.flavours.into_iter().map(Spanned::into_inner).collect(),
            interval,
            timeout,
            retries,
            retry_interval,
            freshness,
            depends_on: raw
                .depends_on
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            description: raw.description,
            credential_span: raw.credential.as_ref().map(|c| self.span(file, c.span())),
            credential: raw.credential.map(|c| c.into_inner().trim().to_string()),
            params: KindParams {
                value: params.filter(|p| p.get_ref().is_table()),
                file,
                table_span: table_span.clone(),
            },
            span: self.span(file, raw.metric.span()),
            kind_span: self.span(file, raw.kind.span()),
            reported_by: None,
        });
        let owner = self.config.probes.len().saturating_sub(1);
        for entry in bundle {
            self.read_bundle_metric(file, entry, owner);
        }
    }

    /// One `[[probe.bundle]]` table: a metric the probe just read reports from its runs (a
    /// worker-node test). It becomes a probe of its own for the matrix, reports and
    /// freshness, marked `reported_by`; the keys besides `metric` and `description` are for
    /// the reporting probe's kind to read.
    fn read_bundle_metric(&mut self, file: FileId, entry: Spanned<DeValue<'static>>, owner: usize) {
        let Some(owner) = self.config.probes.get(owner).cloned() else {
            return;
        };
        let entry_span = entry.span();
        let field = |key: &str| match entry.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(_, v)| v.clone()),
            _ => None,
        };
        let text = |v: &Spanned<DeValue<'static>>| match v.get_ref() {
            DeValue::String(s) => Some(s.trim().to_string()),
            _ => None,
        };
        let Some(metric_value) = field("metric") else {
            let d = self.error(
                file,
                entry_span,
                "a `[[probe.bundle]]` entry needs a `metric`",
            );
            self.diagnostics.push(
                d.with_help("name the metric it reports, e.g. metric = \"org.lhcb.WN-cvmfs\""),
            );
            return;
        };
        let metric = match text(&metric_value) {
            Some(m) if !m.is_empty() && !m.contains(char::is_whitespace) => m,
            _ => {
                let d = self.error(
                    file,
                    metric_value.span(),
                    "a bundle `metric` must be a non-empty string without spaces",
                );
                self.diagnostics.push(
                    d.with_help("use a reverse-DNS style name such as \"org.lhcb.WN-cvmfs\""),
                );
                return;
            }
        };
        let description = field("description").as_ref().and_then(text);
        let span = self.span(file, metric_value.span());
        self.positions.probe_flavours.push(Vec::new());
        self.positions.probe_depends.push(Vec::new());
        self.positions.probe_timeout.push(None);
        self.positions.probe_short.push(span.clone());
        self.config.probes.push(ProbeDef {
            short: short_metric_name(&metric).to_string(),
            metric,
            kind: owner.kind.clone(),
            flavours: owner.flavours.clone(),
            interval: owner.interval,
            timeout: owner.timeout,
            retries: owner.retries,
            retry_interval: owner.retry_interval,
            freshness: owner.freshness,
            depends_on: Vec::new(),
            description,
            credential: None,
            credential_span: None,
            params: KindParams {
                table_span: self.span(file, entry_span),
                value: Some(entry),
                file,
            },
            span,
            kind_span: owner.kind_span.clone(),
            reported_by: Some(owner.metric.clone()),
        });
    }

    pub(super) fn read_profile(&mut self, file: FileId, raw: RawProfile) {
        let mut critical = BTreeMap::new();
        let mut metrics = Vec::new();
        let mut flavours = Vec::new();
        for (flavour, list) in raw.critical {
            flavours.push((flavour.get_ref().clone(), self.span(file, flavour.span())));
            let names: Vec<String> = list
                .iter()
                .map(|m| {
                    metrics.push((m.get_ref().clone(), self.span(file, m.span())));
                    m.get_ref().clone()
                })
                .collect();
            critical.insert(flavour.into_inner(), names);
        }
        self.positions.profile_metrics.push(metrics);
        self.positions.profile_flavours.push(flavours);
        self.positions
            .profile_name
            .push(self.span(file, raw.name.span()));
        let valid_from_ms = raw.valid_from.as_ref().and_then(|v| self.date(file, v));
        let mut groups = Vec::new();
        let mut group_refs = Vec::new();
        for g in raw.groups {
            let operation = match g.operation.get_ref().to_ascii_uppercase().as_str() {
                "AND" => GroupOperation::And,
                "OR" => GroupOperation::Or,
                other => {
                    let d = self.error(
                        file,
                        g.operation.span(),
                        format!("unknown group operation `{other}`"),
                    );
                    self.diagnostics.push(d.with_help(
                        "write operation = \"OR\" (one flavour is enough) or \"AND\" (all are needed)",
                    ));
                    GroupOperation::And
                }
            };
            if g.flavours.is_empty() {
                let d = self.error(
                    file,
                    g.name.span(),
                    format!("group `{}` names no flavour", g.name.get_ref()),
                );
                self.diagnostics.push(
                    d.with_help("list its flavours, e.g. flavours = [\"ARC-CE\", \"HTCONDOR-CE\"]"),
                );
            }
            for f in &g.flavours {
                group_refs.push((
                    g.name.get_ref().clone(),
                    f.get_ref().clone(),
                    self.span(file, f.span()),
                ));
            }
            groups.push(FlavourGroup {
                name: g.name.into_inner(),
                operation,
                flavours: g.flavours.into_iter().map(Spanned::into_inner).collect(),
            });
        }
        self.positions.profile_groups.push(group_refs);
        self.config.profiles.push(Profile {
            name: raw.name.into_inner(),
            critical,
            valid_from_ms,
            groups,
        });
    }
}
