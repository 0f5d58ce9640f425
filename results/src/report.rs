//! Availability reports: the figures of every service instance, flavour and site of a VO over
//! a period, computed with [`crate::availability`], and the dashboard's site status. The CLI,
//! the HTTP API and the Prometheus metrics all call [`compute`]; nothing computes twice.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use gridprobe_config::{Config, Downtime};
use gridprobe_probes::Status;
use serde::Serialize;

use crate::availability::{
    combine, figures, metric_timeline_runs, status_at, AStatus, Combine, DowntimeSpan, Figures, Ms,
    Timeline,
};
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
/// (`ResultStore::run_timelines` with [`merge_gap_ms`]) and the stored downtimes.
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
    compute_runs(
        config,
        profile_name,
        period,
        &cells,
        &downtimes,
        unknown_threshold,
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
    let range = period.range();
    let profile =
        match profile_name {
            Some(name) => Some(config.profiles.iter().find(|p| p.name == name).ok_or_else(
                || {
                    let known: Vec<&str> =
                        config.profiles.iter().map(|p| p.name.as_str()).collect();
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
    // Critical metrics per flavour, as full metric names.
    let critical: BTreeMap<String, Vec<String>> = match profile {
        Some(p) => p
            .critical
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
            .collect(),
        None => {
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &config.probes {
                for f in &p.flavours {
                    map.entry(f.clone()).or_default().push(p.metric.clone());
                }
            }
            map
        }
    };
    let by_cell: HashMap<&CellKey, &Vec<StatusRun>> = cells.iter().map(|(k, v)| (k, v)).collect();
    let instances = config.instances();

    let mut sites = Vec::new();
    for (si, site) in config.sites.iter().enumerate() {
        let mut flavours: BTreeMap<&str, (Vec<Timeline>, Vec<InstanceReport>)> = BTreeMap::new();
        let mut has_results = false;
        let mut first_result: Option<Ms> = None;
        for (vi, svc) in site.services.iter().enumerate() {
            if !svc.production {
                continue;
            }
            let Some(wanted) = critical.get(&svc.flavour) else {
                continue;
            };
            let spans: Vec<DowntimeSpan> = downtimes
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
            for inst in instances.iter().filter(|i| i.site == si && i.service == vi) {
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
                    first_result = Some(first_result.map_or(first.start, |f| f.min(first.start)));
                }
                let freshness = i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX);
                timelines.push(metric_timeline_runs(results, freshness, &range, &spans));
                metrics.push(metric.clone());
            }
            if timelines.is_empty() {
                continue;
            }
            let instance = combine(&timelines, Combine::And, &range);
            let entry = flavours.entry(svc.flavour.as_str()).or_default();
            entry.1.push(InstanceReport {
                hostname: svc.hostname.clone(),
                metrics,
                figures: figures(&instance, &range, unknown_threshold),
            });
            entry.0.push(instance);
        }
        if flavours.is_empty() {
            continue;
        }
        let mut flavour_timelines = Vec::new();
        let mut flavour_reports = Vec::new();
        for (flavour, (timelines, instances)) in flavours {
            let tl = combine(&timelines, Combine::Or, &range);
            flavour_reports.push(FlavourReport {
                flavour: flavour.to_string(),
                figures: figures(&tl, &range, unknown_threshold),
                instances,
            });
            flavour_timelines.push(tl);
        }
        let site_tl = combine(&flavour_timelines, Combine::And, &range);
        sites.push(SiteReport {
            site: site.name.clone(),
            tier: site.tier,
            figures: figures(&site_tl, &range, unknown_threshold),
            flavours: flavour_reports,
            status_at_end: status_at(&site_tl, range.end - 1).unwrap_or(AStatus::Missing),
            has_results,
            new_since_ms: first_result.filter(|f| range.contains(f) && *f > range.start),
        });
    }
    let mut tiers = Vec::new();
    for tier in 0..=3u8 {
        let of_tier: Vec<&SiteReport> = sites.iter().filter(|s| s.tier == tier).collect();
        if of_tier.is_empty() {
            continue;
        }
        let mean = |f: fn(&Figures) -> Option<f64>| {
            let v: Vec<f64> = of_tier.iter().filter_map(|s| f(&s.figures)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        tiers.push(TierReport {
            tier,
            sites: of_tier.len(),
            availability: mean(|f| f.availability),
            reliability: mean(|f| f.reliability),
        });
    }
    Ok(Report {
        vo: config.vo.clone(),
        profile: profile
            .map(|p| p.name.clone())
            .unwrap_or_else(|| "(all probes)".into()),
        period: period.clone(),
        unknown_threshold,
        sites,
        tiers,
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
}
