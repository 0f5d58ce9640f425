//! Semantic checks over a parsed configuration: names, references, cycles and schedules.
//! Every problem points at the value's own position; all of them are reported in one pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The positions of things that validation may need to point at, beside the model.
#[derive(Debug, Default, Clone)]
pub(crate) struct Positions {
    /// Per probe: each flavour with its span.
    pub probe_flavours: Vec<Vec<(String, Span)>>,
    /// Per probe: each dependency with its span.
    pub probe_depends: Vec<Vec<(String, Span)>>,
    /// Per probe: span of `interval` and `timeout` when written on the probe.
    pub probe_timeout: Vec<Option<Span>>,
    /// Per site: per service, span of its flavour.
    pub service_flavour: Vec<Vec<Span>>,
    /// Override keys (metric names) with their spans, for existence checks.
    pub override_keys: Vec<(String, Span)>,
    /// Per site: span of `tier`.
    pub site_tier: Vec<Span>,
    /// Per profile: metrics with their spans; flavours with spans.
    pub profile_metrics: Vec<Vec<(String, Span)>>,
    /// Per profile: flavours with spans.
    pub profile_flavours: Vec<Vec<(String, Span)>>,
    /// Per profile: the span of its `name`.
    pub profile_name: Vec<Span>,
    /// Per profile: its groups' flavours `(group, flavour, span)`.
    pub profile_groups: Vec<Vec<(String, String, Span)>>,
    /// Site weights from the `weights` file with their positions there.
    pub weight_refs: Vec<(String, Span)>,
    /// Per probe: the span of `name` or `metric` (what its short name comes from).
    pub probe_short: Vec<Span>,
    /// Sites named by site-admin tokens, with their spans.
    pub access_sites: Vec<(String, Span)>,
    /// Per downtime: site and service names with their spans.
    #[allow(clippy::type_complexity)]
    pub downtime_refs: Vec<(Option<String>, Option<Span>, Option<String>, Option<Span>)>,
}

use crate::diagnostic::{Diagnostics, Span};
use crate::model::Config;

pub(crate) fn validate(config: &Config, pos: &Positions) -> Diagnostics {
    let mut out = Diagnostics::default();
    // Name lookups through maps, so thousands of probes and references stay linear (the full
    // metric wins over a short name, as in `Config::probe_index`).
    let mut probe_by_name: HashMap<&str, usize> = HashMap::new();
    for (i, p) in config.probes.iter().enumerate() {
        probe_by_name.entry(p.metric.as_str()).or_insert(i);
    }
    for (i, p) in config.probes.iter().enumerate() {
        probe_by_name.entry(p.short.as_str()).or_insert(i);
    }
    let probe_index = |name: &str| probe_by_name.get(name).copied();
    let site_names: BTreeSet<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
    let err = |span: &Span, msg: String| config.sources.error(span, msg);
    let where_is = |span: &Span| {
        config
            .sources
            .error(span, "")
            .position()
            .unwrap_or_else(|| "an earlier table".into())
    };

    // Unique site names.
    let mut seen_sites: HashMap<&str, &Span> = HashMap::new();
    for site in &config.sites {
        if let Some(first) = seen_sites.insert(&site.name, &site.span) {
            out.push(
                err(&site.span, format!("duplicate site name `{}`", site.name))
                    .with_help(format!("first defined at {}", where_is(first))),
            );
        }
    }

    // Unique service instances (hostname + flavour) across the VO.
    let mut seen_services: HashMap<(&str, &str), &Span> = HashMap::new();
    for site in &config.sites {
        for svc in &site.services {
            if let Some(first) = seen_services.insert((&svc.hostname, &svc.flavour), &svc.span) {
                out.push(
                    err(
                        &svc.span,
                        format!(
                            "duplicate service `{}` of flavour {}",
                            svc.hostname, svc.flavour
                        ),
                    )
                    .with_help(format!("first defined at {}", where_is(first))),
                );
            }
        }
    }

    // Unique metrics and short names.
    let mut seen_metrics: HashMap<&str, &Span> = HashMap::new();
    let mut seen_short: HashMap<&str, &Span> = HashMap::new();
    for (i, probe) in config.probes.iter().enumerate() {
        if let Some(first) = seen_metrics.insert(&probe.metric, &probe.span) {
            out.push(
                err(
                    &probe.span,
                    format!("duplicate probe metric `{}`", probe.metric),
                )
                .with_help(format!("first defined at {}", where_is(first))),
            );
        } else if let Some(short_span) = pos.probe_short.get(i) {
            if let Some(first) = seen_short.insert(&probe.short, short_span) {
                out.push(
                    err(
                        short_span,
                        format!("two probes share the display name `{}`", probe.short),
                    )
                    .with_help(format!(
                        "the other is at {}; give one of them `name = \"...\"`",
                        where_is(first)
                    )),
                );
            }
        }
    }

    let flavours_offered: BTreeSet<&str> = config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.flavour.as_str()))
        .collect();
    let all_names: Vec<&str> = config
        .probes
        .iter()
        .flat_map(|p| [p.metric.as_str(), p.short.as_str()])
        .collect();

    for (i, probe) in config.probes.iter().enumerate() {
        // Flavours.
        let flavours = pos.probe_flavours.get(i).map(Vec::as_slice).unwrap_or(&[]);
        // A bundle's metric has its reporting probe's flavours, checked there.
        if flavours.is_empty() && probe.reported_by.is_none() {
            out.push(
                err(
                    &probe.span,
                    format!("probe `{}` applies to no flavour", probe.metric),
                )
                .with_help("set flavours = [\"CE\"] (or the flavours it tests)"),
            );
        }
        for (flavour, span) in flavours {
            if !flavours_offered.contains(flavour.as_str()) {
                out.push(
                    err(
                        span,
                        format!(
                            "no service has flavour `{flavour}`, so probe `{}` would never run",
                            probe.short
                        ),
                    )
                    .with_suggestion(flavour, flavours_offered.iter().copied()),
                );
            }
        }
        // Dependencies.
        for (dep, span) in pos.probe_depends.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            match probe_index(dep) {
                None => out.push(
                    err(
                        span,
                        format!("`depends_on` names `{dep}`, which is not a probe"),
                    )
                    .with_suggestion(dep, all_names.iter().copied()),
                ),
                Some(j) if j == i => out.push(err(
                    span,
                    format!("probe `{}` depends on itself", probe.short),
                )),
                Some(_) => {}
            }
        }
        // Timeout against interval, on the probe itself.
        if let (Some(t), Some(span)) = (
            probe.timeout,
            pos.probe_timeout.get(i).and_then(Option::as_ref),
        ) {
            let interval = probe.interval.unwrap_or(config.defaults.interval);
            if t >= interval {
                out.push(
                    err(
                        span,
                        format!(
                            "timeout ({}) must be shorter than the interval ({})",
                            humantime::format_duration(t),
                            humantime::format_duration(interval)
                        ),
                    )
                    .with_help(
                        "a probe that may run longer than its interval would overlap itself",
                    ),
                );
            }
        }
    }

    // Cycles in depends_on: report each cycle once, at the edge that closes it.
    for (from, to, span) in find_cycles(config, pos, &probe_index) {
        out.push(
            err(
                &span,
                format!(
                    "dependency cycle: `{}` depends on `{}`, which depends back on it",
                    config.probes[from].short, config.probes[to].short
                ),
            )
            .with_help("remove one of the depends_on entries"),
        );
    }

    // Overrides must name probes.
    for (key, span) in &pos.override_keys {
        if probe_index(key).is_none() {
            out.push(
                err(span, format!("override for `{key}`, which is not a probe"))
                    .with_suggestion(key, all_names.iter().copied()),
            );
        }
    }

    // Effective schedules: an override may make timeout >= interval.
    for inst in config.instances() {
        if inst.timeout >= inst.interval {
            let probe = &config.probes[inst.probe];
            let site = &config.sites[inst.site];
            let svc = &site.services[inst.service];
            let probe_has_own = probe.timeout.is_some() && probe.interval.is_some();
            if !probe_has_own {
                out.push(
                    err(
                        &svc.span,
                        format!(
                            "probe `{}` on {} would have timeout {} ≥ interval {}",
                            probe.short,
                            svc.hostname,
                            humantime::format_duration(inst.timeout),
                            humantime::format_duration(inst.interval)
                        ),
                    )
                    .with_help("check the overrides and defaults that apply here"),
                );
            }
        }
    }

    // Profiles name real metrics and offered flavours.
    for (pi, metrics) in pos.profile_metrics.iter().enumerate() {
        for (m, span) in metrics {
            if probe_index(m).is_none() {
                out.push(
                    err(
                        span,
                        format!(
                            "profile `{}` names metric `{m}`, which no probe produces",
                            config
                                .profiles
                                .get(pi)
                                .map(|p| p.name.as_str())
                                .unwrap_or("?")
                        ),
                    )
                    .with_suggestion(m, all_names.iter().copied()),
                );
            }
        }
    }
    for flavours in &pos.profile_flavours {
        for (f, span) in flavours {
            if !flavours_offered.contains(f.as_str()) {
                out.push(
                    err(
                        span,
                        format!("profile flavour `{f}` is offered by no service"),
                    )
                    .with_suggestion(f, flavours_offered.iter().copied()),
                );
            }
        }
    }
    // Site-admin tokens name real sites.
    for (site, span) in &pos.access_sites {
        if !site_names.contains(site.as_str()) {
            out.push(
                err(
                    span,
                    format!("token names site `{site}`, which is not configured"),
                )
                .with_suggestion(site, config.sites.iter().map(|s| s.name.as_str())),
            );
        }
    }

    // Downtimes name real sites and services.
    let hosts: BTreeSet<&str> = config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.hostname.as_str()))
        .collect();
    for (site, site_span, host, host_span) in &pos.downtime_refs {
        if let (Some(site), Some(span)) = (site, site_span) {
            if !site_names.contains(site.as_str()) {
                out.push(
                    err(
                        span,
                        format!("downtime names site `{site}`, which is not configured"),
                    )
                    .with_suggestion(site, config.sites.iter().map(|s| s.name.as_str())),
                );
            }
        }
        if let (Some(host), Some(span)) = (host, host_span) {
            if !hosts.contains(host.as_str()) {
                out.push(
                    err(
                        span,
                        format!("downtime names service `{host}`, which no site has"),
                    )
                    .with_suggestion(host, hosts.iter().copied()),
                );
            }
        }
    }

    // Each profile name once per `valid_from` (versions of one profile differ by their date);
    // every later definition is an error at its own `name`.
    let mut profile_count: BTreeMap<(&str, Option<i64>), usize> = BTreeMap::new();
    for p in &config.profiles {
        *profile_count
            .entry((p.name.as_str(), p.valid_from_ms))
            .or_insert(0) += 1;
    }
    let mut first_profile: HashMap<(&str, Option<i64>), &Span> = HashMap::new();
    for (p, span) in config.profiles.iter().zip(&pos.profile_name) {
        let key = (p.name.as_str(), p.valid_from_ms);
        if let Some(first) = first_profile.get(&key) {
            let n = profile_count.get(&key).copied().unwrap_or(2);
            out.push(
                err(span, format!("profile `{}` is defined {n} times", p.name)).with_help(format!(
                    "first defined at {}; give each [[profile]] its own name, or a version of \
                     it its own `valid_from`",
                    where_is(first)
                )),
            );
        } else {
            first_profile.insert(key, span);
        }
    }

    // Groups name offered flavours, each flavour in one group of a profile.
    for (pi, refs) in pos.profile_groups.iter().enumerate() {
        let mut seen: HashMap<&str, (&str, &Span)> = HashMap::new();
        for (group, flavour, span) in refs {
            if !flavours_offered.contains(flavour.as_str()) {
                out.push(
                    err(
                        span,
                        format!(
                            "group `{group}` names flavour `{flavour}`, which no service offers"
                        ),
                    )
                    .with_suggestion(flavour, flavours_offered.iter().copied()),
                );
            }
            match seen.get(flavour.as_str()) {
                Some((other, first)) => out.push(
                    err(
                        span,
                        format!(
                            "flavour `{flavour}` is in two groups of profile `{}`: `{other}` and `{group}`",
                            config.profiles.get(pi).map(|p| p.name.as_str()).unwrap_or("?")
                        ),
                    )
                    .with_help(format!(
                        "first listed at {}; a flavour belongs to one group",
                        where_is(first)
                    )),
                ),
                None => {
                    seen.insert(flavour.as_str(), (group.as_str(), span));
                }
            }
        }
    }
    // Weights name configured sites.
    for (site, span) in &pos.weight_refs {
        if !site_names.contains(site.as_str()) {
            out.push(
                err(
                    span,
                    format!("weight given for site `{site}`, which is not configured"),
                )
                .with_suggestion(site, config.sites.iter().map(|s| s.name.as_str())),
            );
        }
    }
    out
}

/// Edges (from, to, span of the entry) that close a cycle in the dependency graph.
fn find_cycles(
    config: &Config,
    pos: &Positions,
    probe_index: &dyn Fn(&str) -> Option<usize>,
) -> Vec<(usize, usize, Span)> {
    let n = config.probes.len();
    let edges: Vec<Vec<(usize, Span)>> = (0..n)
        .map(|i| {
            pos.probe_depends
                .get(i)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter_map(|(d, s)| probe_index(d).filter(|j| *j != i).map(|j| (j, s.clone())))
                .collect()
        })
        .collect();
    // Iterative DFS with colours: 0 unvisited, 1 on stack, 2 done.
    let mut colour = vec![0u8; n];
    let mut found = Vec::new();
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = 1;
        while let Some((node, next)) = stack.last().cloned() {
            if let Some((to, span)) = edges[node].get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match colour[*to] {
                    0 => {
                        colour[*to] = 1;
                        stack.push((*to, 0));
                    }
                    1 => found.push((node, *to, span.clone())),
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    found
}
