//! Availability reports: the figures of every service instance, flavour and site of a VO over
//! a period, computed with [`crate::availability`], and the dashboard's site status. The CLI,
//! the HTTP API and the Prometheus metrics all call [`compute`]; nothing computes twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::Duration;

use gridprobe_config::{Config, Downtime, GroupOperation, Profile};
use gridprobe_probes::Status;
use serde::Serialize;

use crate::aggregate::{join, plain_mean, version_spans, weighted_mean};
use crate::availability::{
    combine, figures, metric_timeline_runs, overlay_statuses, status_at, AStatus, Combine,
    DowntimeSpan, Figures, Ms, Timeline,
};
use crate::recompute::{applied_in, overlays_for, Recomputation};
use crate::store::{runs_of, CellKey, CellRuns, StatusRun};

/// A reporting period, `[start, end)` in ms since the epoch, with how it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// Start (inclusive).
    pub start_ms: Ms,
    /// End (exclusive).
    pub end_ms: Ms,
    /// As the user wrote it (`2026-10`, `24h`, ...).
    pub label: String,
}

impl Period {
    /// The period as a range.
    pub fn range(&self) -> Range<Ms> {
        self.start_ms..self.end_ms
    }
}

/// The forms `parse_period` accepts, for error messages.
pub const PERIOD_FORMS: &str = "a month (2026-10), a day (2026-10-05), an hour (2026-10-05T14), \
     the last N hours or days (24h, 7d, 30d), or a range (2026-10-01..2026-10-15, times allowed)";

/// The longest period a report covers: ten years. Longer ones (`1000000d`) are refused, so
/// that a typo cannot ask for millions of days.
pub const MAX_PERIOD_DAYS: i64 = 3660;

/// Parses a period; times are UTC. `now_ms` anchors relative forms such as `24h`. A period
/// longer than [`MAX_PERIOD_DAYS`] is an error.
pub fn parse_period(text: &str, now_ms: Ms) -> Result<Period, String> {
    let period = parse_period_unbounded(text, now_ms)?;
    let max_ms = MAX_PERIOD_DAYS * 86_400_000;
    if period
        .end_ms
        .checked_sub(period.start_ms)
        .is_none_or(|len| len > max_ms)
    {
        return Err(format!(
            "invalid period `{}`: longer than {MAX_PERIOD_DAYS} days (ten years)",
            period.label
        ));
    }
    Ok(period)
}

/// Refuses a period that starts before the results kept (`retention` back from `now_ms`,
/// with a day of slack so that `400d` passes a 400-day retention): those results are deleted,
/// so the figures would be wrong, not just empty.
pub fn check_retention(period: &Period, now_ms: Ms, retention_ms: Ms) -> Result<(), String> {
    let oldest = now_ms
        .saturating_sub(retention_ms)
        .saturating_sub(86_400_000);
    if period.start_ms < oldest {
        return Err(format!(
            "period `{}` starts before the oldest results kept ([server] retention = {} days): \
             ask for a later period, or raise the retention",
            period.label,
            retention_ms / 86_400_000
        ));
    }
    Ok(())
}

fn parse_period_unbounded(text: &str, now_ms: Ms) -> Result<Period, String> {
    let t = text.trim();
    let bad = || format!("invalid period `{t}`: write {PERIOD_FORMS}");
    let label = t.to_string();
    if let Some((a, b)) = t.split_once("..") {
        let start = gridprobe_config::time::parse_utc(a).map_err(|_| bad())?;
        let end = gridprobe_config::time::parse_utc(b).map_err(|_| bad())?;
        if end <= start {
            return Err(format!(
                "invalid period `{t}`: the end must be after the start"
            ));
        }
        return Ok(Period {
            start_ms: start,
            end_ms: end,
            label,
        });
    }
    // Unbounded here: a duration past what the clock can hold counts as too long, which
    // `parse_period` then says in words ("longer than 3660 days").
    let any = gridprobe_config::DurationRange::new(Duration::from_nanos(1), Duration::MAX);
    let relative = match gridprobe_config::parse_duration_in(t, any) {
        Ok(d) => Some(d),
        Err(gridprobe_config::DurationError::OutOfRange { too_long: true, .. }) => {
            Some(Duration::MAX)
        }
        Err(_) => None,
    };
    if let Some(d) = relative {
        // Saturating: an absurd length stays absurd, and `parse_period` refuses it by length.
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(Period {
            start_ms: now_ms.saturating_sub(ms),
            end_ms: now_ms,
            label,
        });
    }
    let utc = |dt: jiff::civil::DateTime| {
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|_| bad())
    };
    // Month: YYYY-MM.
    if t.len() == 7 && t.as_bytes().get(4) == Some(&b'-') {
        let date = format!("{t}-01")
            .parse::<jiff::civil::Date>()
            .map_err(|_| bad())?;
        let next = date
            .checked_add(jiff::Span::new().months(1))
            .map_err(|_| bad())?;
        return Ok(Period {
            start_ms: utc(date.to_datetime(jiff::civil::Time::midnight()))?,
            end_ms: utc(next.to_datetime(jiff::civil::Time::midnight()))?,
            label,
        });
    }
    // Hour: YYYY-MM-DDTHH.
    if t.len() == 13 && t.as_bytes().get(10) == Some(&b'T') {
        let dt = format!("{t}:00")
            .parse::<jiff::civil::DateTime>()
            .map_err(|_| bad())?;
        let start = utc(dt)?;
        return Ok(Period {
            start_ms: start,
            end_ms: start + 3_600_000,
            label,
        });
    }
    // Day: YYYY-MM-DD.
    if let Ok(date) = t.parse::<jiff::civil::Date>() {
        let start = utc(date.to_datetime(jiff::civil::Time::midnight()))?;
        return Ok(Period {
            start_ms: start,
            end_ms: start + 86_400_000,
            label,
        });
    }
    Err(bad())
}

/// Figures of one service instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    /// Host name.
    pub hostname: String,
    /// The critical metrics that made up its status.
    pub metrics: Vec<String>,
    /// Its figures.
    pub figures: Figures,
}

/// Figures of one flavour at a site (OR of its instances).
#[derive(Debug, Clone, Serialize)]
pub struct FlavourReport {
    /// Flavour.
    pub flavour: String,
    /// Its figures.
    pub figures: Figures,
    /// Its instances.
    pub instances: Vec<InstanceReport>,
}

/// Figures of one site (AND of its flavours).
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    /// Site name.
    pub site: String,
    /// Tier.
    pub tier: u8,
    /// Its figures.
    pub figures: Figures,
    /// Its flavours.
    pub flavours: Vec<FlavourReport>,
    /// Status at the end of the period (for "maintenance now").
    pub status_at_end: AStatus,
    /// Whether any result of the site fell in the period (or held into it).
    pub has_results: bool,
    /// When the site's first result falls inside the period (none is stored from before it):
    /// that result's start. Its figures then rest on the time since, not on the whole period:
    /// a site added today is *new*, not inactive.
    pub new_since_ms: Option<Ms>,
    /// The profile's aggregation groups at this site (empty without `groups`).
    pub groups: Vec<GroupReport>,
    /// Its federation, if any.
    pub federation: Option<String>,
    /// Its weight in tier and federation means (`Config::site_weight`).
    pub weight: f64,
    /// Ids of the applied recomputations that changed some of its cells in the period.
    pub recomputations: Vec<i64>,
}

/// Figures of one aggregation group at a site (OR or AND of its flavours).
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Group name.
    pub group: String,
    /// `AND` or `OR`.
    pub operation: &'static str,
    /// Its figures.
    pub figures: Figures,
}

/// A federation's figures: weighted means of its sites' (a site whose figure is n/a weighs 0).
#[derive(Debug, Clone, Serialize)]
pub struct FederationReport {
    /// Federation name.
    pub federation: String,
    /// Its sites, in configuration order.
    pub sites: Vec<String>,
    /// Sum of their weights.
    pub weight: f64,
    /// Weighted mean availability.
    pub availability: Option<f64>,
    /// Weighted mean reliability.
    pub reliability: Option<f64>,
    /// Plain mean availability.
    pub plain_availability: Option<f64>,
    /// Plain mean reliability.
    pub plain_reliability: Option<f64>,
}

/// Which version of the profile judged which stretch of the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileVersionSpan {
    /// Start (inclusive, ms).
    pub start_ms: Ms,
    /// End (exclusive, ms).
    pub end_ms: Ms,
    /// The version's `valid_from` (`None`: the undated version).
    pub valid_from_ms: Option<Ms>,
}

/// Per-tier average of the sites' figures (sites with "n/a" figures left out).
#[derive(Debug, Clone, Serialize)]
pub struct TierReport {
    /// Tier.
    pub tier: u8,
    /// Number of sites.
    pub sites: usize,
    /// Mean availability over sites that have one.
    pub availability: Option<f64>,
    /// Mean reliability over sites that have one.
    pub reliability: Option<f64>,
    /// Weighted mean availability (site weights; sites with n/a weigh 0).
    pub weighted_availability: Option<f64>,
    /// Weighted mean reliability.
    pub weighted_reliability: Option<f64>,
    /// Sum of the sites' weights.
    pub weight: f64,
}

/// A whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// VO.
    pub vo: String,
    /// Profile used.
    pub profile: String,
    /// Period.
    pub period: Period,
    /// Unknown-fraction threshold above which figures are n/a.
    pub unknown_threshold: f64,
    /// Sites, in configuration order.
    pub sites: Vec<SiteReport>,
    /// Tiers, ascending.
    pub tiers: Vec<TierReport>,
    /// Federations (sites with a `federation`), by name.
    pub federations: Vec<FederationReport>,
    /// The applied recomputations overlapping the period, oldest first: every figure above
    /// includes them.
    pub recomputations: Vec<Recomputation>,
    /// The profile versions used, one per stretch of the period (one stretch unless a
    /// `valid_from` falls inside it).
    pub profile_versions: Vec<ProfileVersionSpan>,
}

/// Computes the report of a VO over a period from the stored timelines (see
/// `ResultStore::timelines`) and downtimes (config and imported; only OUTAGE severity counts).
/// Without a `[[profile]]`, every probe of a flavour is critical for it.
pub fn compute(
    config: &Config,
    profile_name: Option<&str>,
    period: &Period,
    cells: &[(CellKey, Vec<(Ms, Status)>)],
    downtimes: &[Downtime],
    unknown_threshold: f64,
) -> Result<Report, String> {
    // Only identical neighbours merge (gap 0): exact for any freshness.
    let runs: Vec<CellRuns> = cells
        .iter()
        .map(|(key, points)| (key.clone(), runs_of(points, 0)))
        .collect();
    compute_runs(
        config,
        profile_name,
        period,
        &runs,
        downtimes,
        unknown_threshold,
    )
}

/// Why a report from the store could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The request does not fit the configuration (e.g. an unknown profile).
    #[error("{0}")]
    Invalid(String),
}

/// The report of a period straight from a store: what the CLI, the HTTP API and `/metrics`
/// all call, so the figures are computed one way. Reads each cell as runs of equal results
/// (`ResultStore::run_timelines` with [`merge_gap_ms`]), the stored downtimes and the
/// applied recomputations.
pub async fn from_store(
    store: &dyn crate::store::ResultStore,
    config: &Config,
    profile_name: Option<&str>,
    period: &Period,
    filter: &crate::store::CellFilter,
    unknown_threshold: f64,
) -> Result<Report, ReportError> {
    let cells = store
        .run_timelines(period.start_ms, period.end_ms, filter, merge_gap_ms(config))
        .await?;
    let downtimes = store.downtimes(period.start_ms, period.end_ms).await?;
    let recomputations = store.recomputations().await?;
    compute_applied(
        config,
        profile_name,
        period,
        &cells,
        &downtimes,
        unknown_threshold,
        &recomputations,
    )
    .map_err(ReportError::Invalid)
}

/// The largest merge gap [`compute_runs`] stays exact with for this configuration: the
/// smallest freshness window of its probe instances (a run may not hide a gap that would
/// have made a cell MISSING).
pub fn merge_gap_ms(config: &Config) -> Ms {
    config
        .instances()
        .iter()
        .map(|i| i64::try_from(i.freshness.as_millis()).unwrap_or(i64::MAX))
        .min()
        .unwrap_or(0)
}

/// As [`compute`], from runs of equal results (`ResultStore::run_timelines` with at most
/// [`merge_gap_ms`]): the same figures from far fewer items, which is what makes a month report
/// of a large VO fast.
pub fn compute_runs(
    config: &Config,
    profile_name: Option<&str>,
    period: &Period,
    cells: &[CellRuns],
    downtimes: &[Downtime],
    unknown_threshold: f64,
) -> Result<Report, String> {
    compute_applied(
        config,
        profile_name,
        period,
        cells,
        downtimes,
        unknown_threshold,
        &[],
    )
}

/// One thing's timelines over the stretches of the period where a profile version holds
/// (`None` where that version does not have it), joined at the end.
type Parts = Vec<Option<Timeline>>;

/// As [`compute_runs`], with the applied recomputations among `recomputations` laid over the
/// metric timelines they cover (the report lists them in [`Report::recomputations`]). Each
/// instant is judged by the version of the profile in force then (`valid_from`), sites are
/// the AND of the profile's groups, and tiers and federations get weighted means.
pub fn compute_applied(
    config: &Config,
    profile_name: Option<&str>,
    period: &Period,
    cells: &[CellRuns],
    downtimes: &[Downtime],
    unknown_threshold: f64,
    recomputations: &[Recomputation],
) -> Result<Report, String> {
    let range = period.range();
    let profile =
        match profile_name {
            Some(name) => Some(config.profiles.iter().find(|p| p.name == name).ok_or_else(
                || {
                    let mut known: Vec<&str> =
                        config.profiles.iter().map(|p| p.name.as_str()).collect();
                    known.dedup();
                    format!(
                        "no profile named `{name}` (known: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )
                },
            )?),
            None => config.profiles.first(),
        };
    let versions: Vec<&Profile> = profile
        .map(|p| config.profile_versions(&p.name))
        .unwrap_or_default();
    let spans = version_spans(&versions, &range);
    // Critical metrics per flavour, as full metric names, per version.
    let criticals: Vec<BTreeMap<String, Vec<String>>> = if versions.is_empty() {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &config.probes {
            for f in &p.flavours {
                map.entry(f.clone()).or_default().push(p.metric.clone());
            }
        }
        vec![map]
    } else {
        versions
            .iter()
            .map(|p| {
                p.critical
                    .iter()
                    .map(|(f, ms)| {
                        (
                            f.clone(),
                            ms.iter()
                                .filter_map(|m| {
                                    config
                                        .probe_index(m)
                                        .map(|i| config.probes[i].metric.clone())
                                })
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let applied = applied_in(recomputations, &range);
    let by_cell: HashMap<&CellKey, &Vec<StatusRun>> = cells.iter().map(|(k, v)| (k, v)).collect();
    let instances = config.instances();
    let n = spans.len();
    let joined = |parts: &Parts| {
        let list: Vec<(Range<Ms>, Option<&Timeline>)> = spans
            .iter()
            .zip(parts)
            .map(|((r, _), p)| (r.clone(), p.as_ref()))
            .collect();
        join(&list)
    };

    let mut sites = Vec::new();
    for (si, site) in config.sites.iter().enumerate() {
        // (flavour, hostname, metrics, parts) in service order.
        let mut inst_parts: Vec<(String, String, Vec<String>, Parts)> = Vec::new();
        let mut flavour_parts: BTreeMap<String, Parts> = BTreeMap::new();
        let mut group_parts: Vec<(String, GroupOperation, Parts)> = Vec::new();
        let mut site_parts: Parts = vec![None; n];
        let mut has_results = false;
        let mut first_result: Option<Ms> = None;
        let mut touched: BTreeSet<i64> = BTreeSet::new();
        for (k, (sub, vi)) in spans.iter().enumerate() {
            let critical = criticals.get(*vi).or(criticals.first());
            let groups = versions
                .get(*vi)
                .map(|p| p.groups.as_slice())
                .unwrap_or(&[]);
            let mut flavours: BTreeMap<&str, Vec<Timeline>> = BTreeMap::new();
            for (vi_svc, svc) in site.services.iter().enumerate() {
                if !svc.production {
                    continue;
                }
                let Some(wanted) = critical.and_then(|c| c.get(&svc.flavour)) else {
                    continue;
                };
                let dt_spans: Vec<DowntimeSpan> = downtimes
                    .iter()
                    .chain(&config.downtimes)
                    .filter(|d| d.outage && d.covers(&site.name, &svc.hostname, &svc.flavour))
                    .map(|d| DowntimeSpan {
                        span: d.start_ms..d.end_ms,
                        scheduled: d.scheduled,
                    })
                    .collect();
                let mut timelines = Vec::new();
                let mut metrics = Vec::new();
                for inst in instances
                    .iter()
                    .filter(|i| i.site == si && i.service == vi_svc)
                {
                    let metric = &config.probes[inst.probe].metric;
                    if !wanted.contains(metric) {
                        continue;
                    }
                    let key = CellKey {
                        site: site.name.clone(),
                        hostname: svc.hostname.clone(),
                        flavour: svc.flavour.clone(),
                        metric: metric.clone(),
                    };
                    let results = by_cell.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
                    has_results |= results.iter().any(|r| r.start < range.end);
                    // Runs come oldest first, led by the last one before the period if any.
                    if let Some(first) = results.first() {
                        first_result =
                            Some(first_result.map_or(first.start, |f| f.min(first.start)));
                    }
                    let freshness = i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX);
                    let mut tl = metric_timeline_runs(results, freshness, sub, &dt_spans);
                    let overrides = overlays_for((&key.site, &key.flavour, &key.metric), &applied);
                    if !overrides.is_empty() {
                        touched.extend(
                            applied
                                .iter()
                                .filter(|r| {
                                    r.overlaps(sub)
                                        && r.request.scope.matches(
                                            &key.site,
                                            &key.flavour,
                                            &key.metric,
                                        )
                                })
                                .map(|r| r.id),
                        );
                        tl = overlay_statuses(tl, &overrides, sub);
                    }
                    timelines.push(tl);
                    metrics.push(metric.clone());
                }
                if timelines.is_empty() {
                    continue;
                }
                let instance = combine(&timelines, Combine::And, sub);
                let pos = inst_parts
                    .iter()
                    .position(|(f, h, _, _)| *f == svc.flavour && *h == svc.hostname)
                    .unwrap_or_else(|| {
                        inst_parts.push((
                            svc.flavour.clone(),
                            svc.hostname.clone(),
                            Vec::new(),
                            vec![None; n],
                        ));
                        inst_parts.len() - 1
                    });
                let entry = &mut inst_parts[pos];
                for m in metrics {
                    if !entry.2.contains(&m) {
                        entry.2.push(m);
                    }
                }
                entry.3[k] = Some(instance.clone());
                flavours
                    .entry(svc.flavour.as_str())
                    .or_default()
                    .push(instance);
            }
            if flavours.is_empty() {
                continue;
            }
            let mut flavour_tls: BTreeMap<&str, Timeline> = BTreeMap::new();
            for (flavour, timelines) in flavours {
                let tl = combine(&timelines, Combine::Or, sub);
                flavour_parts
                    .entry(flavour.to_string())
                    .or_insert_with(|| vec![None; n])[k] = Some(tl.clone());
                flavour_tls.insert(flavour, tl);
            }
            // Site = AND of the groups; a flavour in no group is a group of its own.
            let mut members = Vec::new();
            let mut grouped: BTreeSet<&str> = BTreeSet::new();
            for g in groups {
                grouped.extend(g.flavours.iter().map(String::as_str));
                let of_group: Vec<Timeline> = g
                    .flavours
                    .iter()
                    .filter_map(|f| flavour_tls.get(f.as_str()).cloned())
                    .collect();
                if of_group.is_empty() {
                    continue;
                }
                let op = match g.operation {
                    GroupOperation::And => Combine::And,
                    GroupOperation::Or => Combine::Or,
                };
                let tl = combine(&of_group, op, sub);
                let pos = group_parts
                    .iter()
                    .position(|(name, _, _)| *name == g.name)
                    .unwrap_or_else(|| {
                        group_parts.push((g.name.clone(), g.operation, vec![None; n]));
                        group_parts.len() - 1
                    });
                group_parts[pos].2[k] = Some(tl.clone());
                members.push(tl);
            }
            for (f, tl) in flavour_tls {
                if !grouped.contains(f) {
                    members.push(tl);
                }
            }
            site_parts[k] = Some(combine(&members, Combine::And, sub));
        }
        if site_parts.iter().all(Option::is_none) {
            continue;
        }
        let site_tl = joined(&site_parts);
        let flavour_reports = flavour_parts
            .iter()
            .map(|(flavour, parts)| FlavourReport {
                flavour: flavour.clone(),
                figures: figures(&joined(parts), &range, unknown_threshold),
                instances: inst_parts
                    .iter()
                    .filter(|(f, _, _, _)| f == flavour)
                    .map(|(_, host, metrics, parts)| InstanceReport {
                        hostname: host.clone(),
                        metrics: metrics.clone(),
                        figures: figures(&joined(parts), &range, unknown_threshold),
                    })
                    .collect(),
            })
            .collect();
        sites.push(SiteReport {
            site: site.name.clone(),
            tier: site.tier,
            figures: figures(&site_tl, &range, unknown_threshold),
            flavours: flavour_reports,
            status_at_end: status_at(&site_tl, range.end - 1).unwrap_or(AStatus::Missing),
            has_results,
            new_since_ms: first_result.filter(|f| range.contains(f) && *f > range.start),
            groups: group_parts
                .iter()
                .map(|(name, op, parts)| GroupReport {
                    group: name.clone(),
                    operation: match op {
                        GroupOperation::And => "AND",
                        GroupOperation::Or => "OR",
                    },
                    figures: figures(&joined(parts), &range, unknown_threshold),
                })
                .collect(),
            federation: site.federation.clone(),
            weight: config.site_weight(site),
            recomputations: touched.into_iter().collect(),
        });
    }
    let member = |s: &&SiteReport, f: fn(&Figures) -> Option<f64>| (f(&s.figures), s.weight);
    let mut tiers = Vec::new();
    for tier in 0..=3u8 {
        let of_tier: Vec<&SiteReport> = sites.iter().filter(|s| s.tier == tier).collect();
        if of_tier.is_empty() {
            continue;
        }
        let plain = |f: fn(&Figures) -> Option<f64>| {
            plain_mean(&of_tier.iter().map(|s| f(&s.figures)).collect::<Vec<_>>())
        };
        let weighted = |f: fn(&Figures) -> Option<f64>| {
            weighted_mean(&of_tier.iter().map(|s| member(s, f)).collect::<Vec<_>>())
        };
        tiers.push(TierReport {
            tier,
            sites: of_tier.len(),
            availability: plain(|f| f.availability),
            reliability: plain(|f| f.reliability),
            weighted_availability: weighted(|f| f.availability),
            weighted_reliability: weighted(|f| f.reliability),
            weight: of_tier.iter().map(|s| s.weight).sum(),
        });
    }
    let mut federations: BTreeMap<&str, Vec<&SiteReport>> = BTreeMap::new();
    for s in &sites {
        if let Some(f) = &s.federation {
            federations.entry(f.as_str()).or_default().push(s);
        }
    }
    let federations = federations
        .into_iter()
        .map(|(name, members)| {
            let weighted = |f: fn(&Figures) -> Option<f64>| {
                weighted_mean(&members.iter().map(|s| member(s, f)).collect::<Vec<_>>())
            };
            let plain = |f: fn(&Figures) -> Option<f64>| {
                plain_mean(&members.iter().map(|s| f(&s.figures)).collect::<Vec<_>>())
            };
            FederationReport {
                federation: name.to_string(),
                sites: members.iter().map(|s| s.site.clone()).collect(),
                weight: members.iter().map(|s| s.weight).sum(),
                availability: weighted(|f| f.availability),
                reliability: weighted(|f| f.reliability),
                plain_availability: plain(|f| f.availability),
                plain_reliability: plain(|f| f.reliability),
            }
        })
        .collect();
    Ok(Report {
        vo: config.vo.clone(),
        profile: profile
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "(all probes)".into()),
        period: period.clone(),
        unknown_threshold,
        sites,
        tiers,
        federations,
        recomputations: applied.into_iter().cloned().collect(),
        profile_versions: spans
            .iter()
            .map(|(r, vi)| ProfileVersionSpan {
                start_ms: r.start,
                end_ms: r.end,
                valid_from_ms: versions.get(*vi).and_then(|p| p.valid_from_ms),
            })
            .collect(),
    })
}

/// A site's status on the dashboard, from its last-24-hours figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteStatus {
    /// Above the tier's "good" threshold.
    Good,
    /// Between the thresholds.
    Degraded,
    /// Below the "degraded" threshold.
    Failed,
    /// In scheduled downtime now.
    Maintenance,
    /// No results in the window (or too few to judge, from a site that has older results).
    Inactive,
    /// The site's first result is inside the window and too little time is known yet for
    /// figures over the whole window: its figures cover the known time only
    /// ([`SiteReport::new_since_ms`], [`Figures::availability_over_known`]).
    New,
}

impl SiteStatus {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SiteStatus::Good => "good",
            SiteStatus::Degraded => "degraded",
            SiteStatus::Failed => "failed",
            SiteStatus::Maintenance => "maintenance",
            SiteStatus::Inactive => "inactive",
            SiteStatus::New => "new",
        }
    }
}

/// Per-tier thresholds: good when availability > `good`, degraded when ≥ `degraded`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierThresholds {
    /// Strictly above: good.
    pub good: f64,
    /// At or above (and not good): degraded; below: failed.
    pub degraded: f64,
}

/// The experiment dashboards' defaults: Tier-0/1 0.9 / 0.6, Tier-2/3 0.6 / 0.4.
pub fn default_thresholds(tier: u8) -> TierThresholds {
    if tier <= 1 {
        TierThresholds {
            good: 0.9,
            degraded: 0.6,
        }
    } else {
        TierThresholds {
            good: 0.6,
            degraded: 0.4,
        }
    }
}

/// The dashboard status of a site from its report over the last 24 hours.
pub fn site_status(site: &SiteReport, thresholds: TierThresholds) -> SiteStatus {
    if site.status_at_end == (AStatus::Downtime { scheduled: true }) {
        return SiteStatus::Maintenance;
    }
    if !site.has_results {
        return SiteStatus::Inactive;
    }
    match site.figures.availability {
        None if site.new_since_ms.is_some() => SiteStatus::New,
        None => SiteStatus::Inactive,
        Some(a) if a > thresholds.good => SiteStatus::Good,
        Some(a) if a >= thresholds.degraded => SiteStatus::Degraded,
        Some(_) => SiteStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const H: Ms = 3_600_000;

    const CONFIG: &str = r#"
vo = "v"
[defaults]
interval = "1h"
timeout = "10m"
[[site]]
name = "T1_A"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1"
  [[site.service]]
  flavour = "CE"
  hostname = "ce2"
  [[site.service]]
  flavour = "SE"
  hostname = "se1"
[[site]]
name = "T2_B"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce3"
[[probe]]
metric = "org.v.ce-job"
kind = "tcp"
flavours = ["CE"]
[[probe]]
metric = "org.v.ce-info"
kind = "tcp"
flavours = ["CE"]
[[probe]]
metric = "org.v.se-put"
kind = "tcp"
flavours = ["SE"]
[[profile]]
name = "critical"
critical = { CE = ["ce-job"], SE = ["se-put"] }

[[downtime]]
service = "se1"
start = "1970-01-01 12:00"
end = "1970-01-01 18:00"
classification = "scheduled"
reason = "disk replacement"
"#;

    fn hourly(
        host: &str,
        flavour: &str,
        metric: &str,
        f: impl Fn(i64) -> Status,
        site: &str,
    ) -> (CellKey, Vec<(Ms, Status)>) {
        (
            CellKey {
                site: site.into(),
                hostname: host.into(),
                flavour: flavour.into(),
                metric: metric.into(),
            },
            (0..24).map(|h| (h * H, f(h))).collect(),
        )
    }

    #[test]
    fn site_flavour_and_instance_figures_follow_the_profile_and_downtimes() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let period = Period {
            start_ms: 0,
            end_ms: 24 * H,
            label: "day".into(),
        };
        let cells = vec![
            // ce1 down 00-06, ce2 down 03-09: the CE flavour is down 03-06 only.
            hourly(
                "ce1",
                "CE",
                "org.v.ce-job",
                |h| if h < 6 { Status::Critical } else { Status::Ok },
                "T1_A",
            ),
            hourly(
                "ce2",
                "CE",
                "org.v.ce-job",
                |h| {
                    if (3..9).contains(&h) {
                        Status::Critical
                    } else {
                        Status::Ok
                    }
                },
                "T1_A",
            ),
            // Not critical in the profile: ignored even though it is always CRITICAL.
            hourly("ce1", "CE", "org.v.ce-info", |_| Status::Critical, "T1_A"),
            hourly("se1", "SE", "org.v.se-put", |_| Status::Ok, "T1_A"),
            hourly(
                "ce3",
                "CE",
                "org.v.ce-job",
                |h| if h < 12 { Status::Ok } else { Status::Warning },
                "T2_B",
            ),
        ];
        let r = compute(&l.config, None, &period, &cells, &[], 0.9).expect("report");
        assert_eq!(r.profile, "critical");
        let a = &r.sites[0];
        let ce = a.flavours.iter().find(|f| f.flavour == "CE").expect("CE");
        assert!((ce.figures.availability.unwrap_or(0.0) - 21.0 / 24.0).abs() < 1e-9);
        assert!((ce.instances[0].figures.availability.unwrap_or(0.0) - 18.0 / 24.0).abs() < 1e-9);
        // Site: CE down 03-06 (3 h) AND SE in scheduled downtime 12-18 (6 h).
        let f = a.figures;
        assert!(
            (f.availability.unwrap_or(0.0) - 15.0 / 24.0).abs() < 1e-9,
            "{f:?}"
        );
        assert!(
            (f.reliability.unwrap_or(0.0) - 15.0 / 18.0).abs() < 1e-9,
            "{f:?}"
        );
        assert!((f.maintenance - 0.25).abs() < 1e-9);
        // Tier-2 site with WARNING half the day: fully available.
        assert_eq!(r.sites[1].figures.availability, Some(1.0));
        assert_eq!(
            site_status(&r.sites[1], default_thresholds(2)),
            SiteStatus::Good
        );
        // 15/24 = 0.625: degraded for a Tier-1 (≥ 0.6, not > 0.9).
        assert_eq!(site_status(a, default_thresholds(1)), SiteStatus::Degraded);
        assert_eq!(r.tiers.len(), 2);
    }

    #[test]
    fn site_without_results_is_inactive_and_unknown_profile_is_an_error() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        let period = Period {
            start_ms: 0,
            end_ms: 24 * H,
            label: "day".into(),
        };
        let r = compute(&l.config, None, &period, &[], &[], 0.9).expect("report");
        assert!(r
            .sites
            .iter()
            .all(|s| site_status(s, default_thresholds(s.tier)) == SiteStatus::Inactive));
        let err = compute(&l.config, Some("nope"), &period, &[], &[], 0.9).unwrap_err();
        assert!(
            err.contains("no profile named `nope` (known: critical)"),
            "{err}"
        );
    }

    #[test]
    fn a_site_whose_first_results_are_recent_is_new_not_inactive() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        let period = Period {
            start_ms: 0,
            end_ms: 24 * H,
            label: "24h".into(),
        };
        let key = |host: &str, site: &str| CellKey {
            site: site.into(),
            hostname: host.into(),
            flavour: "CE".into(),
            metric: "org.v.ce-job".into(),
        };
        // T2_B's first result ever came 90 minutes before the end of the window: 94 % of the
        // window is unknown, so the 24 h figure is n/a, yet the site is new, not inactive.
        let first = 22 * H + H / 2;
        let ce3 = (
            key("ce3", "T2_B"),
            vec![(first, Status::Ok), (23 * H, Status::Ok)],
        );
        let r = compute(&l.config, None, &period, &[ce3], &[], 0.9).expect("report");
        let b = r.sites.iter().find(|s| s.site == "T2_B").expect("T2_B");
        assert_eq!(b.new_since_ms, Some(first));
        assert_eq!(b.figures.availability, None);
        assert_eq!(site_status(b, default_thresholds(2)), SiteStatus::New);
        assert_eq!(SiteStatus::New.name(), "new");
        // Over the 90 minutes known it was up all along.
        assert_eq!(b.figures.availability_over_known(), Some(1.0));
        assert_eq!(b.figures.known_ms, 24 * H - first);

        // With a result from two days before and nothing since: inactive, not new.
        let old = (key("ce3", "T2_B"), vec![(-48 * H, Status::Ok)]);
        let r = compute(&l.config, None, &period, &[old], &[], 0.9).expect("report");
        let b = r.sites.iter().find(|s| s.site == "T2_B").expect("T2_B");
        assert_eq!(b.new_since_ms, None);
        assert_eq!(b.figures.availability, None);
        assert_eq!(site_status(b, default_thresholds(2)), SiteStatus::Inactive);

        // Twelve hours in, the figure is known: judged as usual, and still marked new.
        let half = (
            key("ce3", "T2_B"),
            (12..24).map(|h| (h * H, Status::Ok)).collect::<Vec<_>>(),
        );
        let r = compute(&l.config, None, &period, &[half], &[], 0.9).expect("report");
        let b = r.sites.iter().find(|s| s.site == "T2_B").expect("T2_B");
        assert_eq!(b.new_since_ms, Some(12 * H));
        assert_eq!(b.figures.availability, Some(1.0));
        assert_eq!(site_status(b, default_thresholds(2)), SiteStatus::Good);
    }

    #[test]
    fn thresholds_at_the_boundary_are_degraded() {
        let t = default_thresholds(1);
        let site = |a: f64| SiteReport {
            site: "S".into(),
            tier: 1,
            figures: Figures {
                period_ms: 1,
                up_ms: 0,
                known_ms: 1,
                scheduled_downtime_ms: 0,
                unscheduled_downtime_ms: 0,
                availability: Some(a),
                reliability: Some(a),
                maintenance: 0.0,
                unknown_fraction: 0.0,
                excluded_ms: 0,
            },
            flavours: vec![],
            status_at_end: AStatus::Ok,
            has_results: true,
            new_since_ms: None,
            groups: vec![],
            federation: None,
            weight: 1.0,
            recomputations: vec![],
        };
        assert_eq!(site_status(&site(0.9), t), SiteStatus::Degraded);
        assert_eq!(site_status(&site(0.9001), t), SiteStatus::Good);
        assert_eq!(site_status(&site(0.6), t), SiteStatus::Degraded);
        assert_eq!(site_status(&site(0.5999), t), SiteStatus::Failed);
        let mut m = site(1.0);
        m.status_at_end = AStatus::Downtime { scheduled: true };
        assert_eq!(site_status(&m, t), SiteStatus::Maintenance);
    }

    #[test]
    fn periods_parse_in_every_documented_form() {
        let oct = parse_period("2026-10", 0).expect("month");
        assert_eq!(oct.end_ms - oct.start_ms, 31 * 24 * H);
        let feb = parse_period("2028-02", 0).expect("leap month");
        assert_eq!(feb.end_ms - feb.start_ms, 29 * 24 * H);
        let day = parse_period("2026-10-05", 0).expect("day");
        assert_eq!(day.end_ms - day.start_ms, 24 * H);
        let hour = parse_period("2026-10-05T14", 0).expect("hour");
        assert_eq!(hour.start_ms, day.start_ms + 14 * H);
        let last = parse_period("24h", 100 * H).expect("relative");
        assert_eq!((last.start_ms, last.end_ms), (76 * H, 100 * H));
        let range = parse_period("2026-10-01..2026-10-15", 0).expect("range");
        assert_eq!(range.end_ms - range.start_ms, 14 * 24 * H);
        let err = parse_period("october", 0).unwrap_err();
        assert!(err.contains("a month (2026-10)"), "{err}");
        assert!(parse_period("2026-10-15..2026-10-01", 0).is_err());
    }

    #[test]
    fn absurd_periods_are_refused_and_retention_bounds_the_start() {
        let now = 20_000 * 24 * H;
        for absurd in ["1000000d", "9999999999h", "1900-01-01..2026-01-01", "3661d"] {
            let err = parse_period(absurd, now).unwrap_err();
            assert!(err.contains("longer than 3660 days"), "{absurd}: {err}");
        }
        assert!(parse_period("18446744073709551615s", now).is_err());
        assert!(parse_period("3660d", now).is_ok());
        let retention = 400 * 24 * H;
        let p = parse_period("400d", now).expect("400d");
        assert_eq!(check_retention(&p, now, retention), Ok(()));
        let p = parse_period("402d", now).expect("402d");
        let err = check_retention(&p, now, retention).unwrap_err();
        assert!(err.contains("retention = 400 days"), "{err}");
    }

    fn cell(
        site: &str,
        host: &str,
        flavour: &str,
        metric: &str,
        points: Vec<(Ms, Status)>,
    ) -> (CellKey, Vec<(Ms, Status)>) {
        (
            CellKey {
                site: site.into(),
                hostname: host.into(),
                flavour: flavour.into(),
                metric: metric.into(),
            },
            points,
        )
    }

    /// Hourly results over `hours`, CRITICAL where `down` says so.
    fn hourly_over(hours: i64, down: impl Fn(i64) -> bool) -> Vec<(Ms, Status)> {
        (0..hours)
            .map(|h| {
                (
                    h * H,
                    if down(h) {
                        Status::Critical
                    } else {
                        Status::Ok
                    },
                )
            })
            .collect()
    }

    const VERSIONED: &str = r#"
vo = "v"
[defaults]
interval = "1h"
timeout = "10m"
[[site]]
name = "T1_A"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1"
  [[site.service]]
  flavour = "SE"
  hostname = "se1"
[[probe]]
metric = "org.v.ce-job"
kind = "tcp"
flavours = ["CE"]
[[probe]]
metric = "org.v.se-put"
kind = "tcp"
flavours = ["SE"]
[[profile]]
name = "p"
critical = { CE = ["ce-job"] }
[[profile]]
name = "p"
valid_from = 1970-01-16
critical = { CE = ["ce-job"], SE = ["se-put"] }
"#;

    /// A 30-day month whose profile gains the SE on day 16: the CE is always OK, the SE always
    /// CRITICAL. Days 1-15 judge the CE only (up), days 16-30 CE AND SE (down): 15/30.
    #[test]
    fn a_profile_change_mid_month_splits_the_period() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), VERSIONED);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let month = Period {
            start_ms: 0,
            end_ms: 30 * 24 * H,
            label: "30 days".into(),
        };
        let cells = vec![
            cell(
                "T1_A",
                "ce1",
                "CE",
                "org.v.ce-job",
                hourly_over(30 * 24, |_| false),
            ),
            cell(
                "T1_A",
                "se1",
                "SE",
                "org.v.se-put",
                hourly_over(30 * 24, |_| true),
            ),
        ];
        let r = compute(&l.config, None, &month, &cells, &[], 0.9).expect("report");
        let a = &r.sites[0];
        assert_eq!(a.figures.up_ms, 15 * 24 * H);
        assert_eq!(a.figures.known_ms, 30 * 24 * H);
        assert_eq!(a.figures.availability, Some(0.5));
        // The SE was not judged before day 16: excluded then, CRITICAL since.
        let se = a.flavours.iter().find(|f| f.flavour == "SE").expect("SE");
        assert_eq!(se.figures.excluded_ms, 15 * 24 * H);
        assert_eq!(se.figures.availability, Some(0.0));
        assert_eq!(
            r.profile_versions,
            vec![
                ProfileVersionSpan {
                    start_ms: 0,
                    end_ms: 15 * 24 * H,
                    valid_from_ms: None
                },
                ProfileVersionSpan {
                    start_ms: 15 * 24 * H,
                    end_ms: 30 * 24 * H,
                    valid_from_ms: Some(15 * 24 * H)
                },
            ]
        );
        // A month wholly after the change uses the new version only: always down.
        let later = Period {
            start_ms: 15 * 24 * H,
            end_ms: 30 * 24 * H,
            label: "later".into(),
        };
        let r = compute(&l.config, None, &later, &cells, &[], 0.9).expect("report");
        assert_eq!(r.sites[0].figures.availability, Some(0.0));
        assert_eq!(r.profile_versions.len(), 1);
    }

    const GROUPED: &str = r#"
vo = "v"
[defaults]
interval = "1h"
timeout = "10m"
[[site]]
name = "T2_A"
tier = 2
federation = "FED"
weight = 3
  [[site.service]]
  flavour = "ARC-CE"
  hostname = "ce1"
  [[site.service]]
  flavour = "HTCONDOR-CE"
  hostname = "ce2"
  [[site.service]]
  flavour = "WEBDAV"
  hostname = "se1"
[[site]]
name = "T2_B"
tier = 2
federation = "FED"
  [[site.service]]
  flavour = "WEBDAV"
  hostname = "se2"
[[site]]
name = "T2_C"
tier = 2
federation = "FED"
weight = 100
  [[site.service]]
  flavour = "WEBDAV"
  hostname = "se3"
[[probe]]
metric = "org.v.ce"
kind = "tcp"
flavours = ["ARC-CE", "HTCONDOR-CE"]
[[probe]]
metric = "org.v.se"
kind = "tcp"
flavours = ["WEBDAV"]
[[profile]]
name = "p"
critical = { ARC-CE = ["ce"], HTCONDOR-CE = ["ce"], WEBDAV = ["se"] }
groups = [{ name = "compute", operation = "OR", flavours = ["ARC-CE", "HTCONDOR-CE"] },
          { name = "storage", operation = "OR", flavours = ["WEBDAV"] }]
"#;

    /// compute = OR of the two CEs (ARC down 00-12, HTCondor down 06-18: compute down 06-12),
    /// storage = WEBDAV (up): the site is up 18 of 24 h, where the AND of every flavour would
    /// give 6 of 24. Federation FED: T2_A 0.75 (weight 3), T2_B 0.5 (weight 1), T2_C n/a
    /// (weight 100, counts 0): weighted (3·0.75 + 0.5) / 4 = 0.6875, plain 0.625.
    #[test]
    fn groups_combine_flavours_and_federations_are_weighted() {
        let l = gridprobe_config::load_str(Path::new("v.toml"), GROUPED);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let day = Period {
            start_ms: 0,
            end_ms: 24 * H,
            label: "day".into(),
        };
        let cells = vec![
            cell(
                "T2_A",
                "ce1",
                "ARC-CE",
                "org.v.ce",
                hourly_over(24, |h| h < 12),
            ),
            cell(
                "T2_A",
                "ce2",
                "HTCONDOR-CE",
                "org.v.ce",
                hourly_over(24, |h| (6..18).contains(&h)),
            ),
            cell(
                "T2_A",
                "se1",
                "WEBDAV",
                "org.v.se",
                hourly_over(24, |_| false),
            ),
            cell(
                "T2_B",
                "se2",
                "WEBDAV",
                "org.v.se",
                hourly_over(24, |h| h < 12),
            ),
        ];
        let r = compute(&l.config, None, &day, &cells, &[], 0.9).expect("report");
        let a = &r.sites[0];
        assert_eq!(a.figures.availability, Some(0.75));
        let groups: Vec<(&str, &str, Option<f64>)> = a
            .groups
            .iter()
            .map(|g| (g.group.as_str(), g.operation, g.figures.availability))
            .collect();
        assert_eq!(
            groups,
            [("compute", "OR", Some(0.75)), ("storage", "OR", Some(1.0))]
        );
        assert_eq!(r.sites[1].figures.availability, Some(0.5));
        assert_eq!(r.sites[2].figures.availability, None);
        let fed = &r.federations[0];
        assert_eq!(fed.federation, "FED");
        assert_eq!(fed.weight, 104.0);
        assert_eq!(fed.availability, Some(0.6875));
        assert_eq!(fed.plain_availability, Some(0.625));
        let tier = &r.tiers[0];
        assert_eq!(tier.availability, Some(0.625), "the plain mean stays");
        assert_eq!(tier.weighted_availability, Some(0.6875));
    }
}
