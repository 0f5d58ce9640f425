//! The monthly report: a [`Report`] over a period judged against the `[report] targets`, with a
//! per-day figure for every site (the strips), tier and federation summaries (plain and
//! weighted means), the downtimes and recomputations that were applied, and how the figures
//! are defined. The CLI (`gridprobe report --format html|pdf|csv|json`) and the dashboard's
//! `/reports/{period}` render this one structure; nothing here draws.
//!
//! Federations and weights come from the configuration (`federation`, `weight`, the `weights`
//! file) through the [`Report`]; the applied recomputations are read from the store and laid
//! over the timelines of the whole period and of every day alike.

use std::collections::BTreeMap;

use gridprobe_config::report::ReportTargets;
use gridprobe_config::{Config, Downtime};
use serde::Serialize;

use crate::availability::{Figures, Ms};
use crate::recompute::{Recomputation, StepKind};
use crate::report::{compute_applied, merge_gap_ms, Period, Report, ReportError, SiteReport};
use crate::store::{CellFilter, CellRuns, ResultStore};

const DAY_MS: Ms = 86_400_000;
/// A report's strip has at most this many buckets; a longer period gets buckets of several
/// days, so a ten-year range does not draw 3,660 boxes per site.
pub const MAX_BUCKETS: usize = 93;

/// Whether a site met each target (`None`: the figure is n/a, so it cannot be judged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Availability ≥ target.
    pub availability: Option<bool>,
    /// Reliability ≥ target.
    pub reliability: Option<bool>,
    /// Unknown fraction ≤ target.
    pub unknown: bool,
    /// All three met (an n/a figure does not meet its target).
    pub met: bool,
}

impl Verdict {
    /// Judges figures against targets.
    pub fn of(f: &Figures, t: &ReportTargets) -> Self {
        let availability = f.availability.map(|a| a >= t.availability);
        let reliability = f.reliability.map(|r| r >= t.reliability);
        let unknown = f.unknown_fraction <= t.unknown;
        Verdict {
            availability,
            reliability,
            unknown,
            met: availability == Some(true) && reliability == Some(true) && unknown,
        }
    }
}

/// A site's figures over one bucket (a UTC day for a month) of the period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DayFigures {
    /// Bucket start (ms).
    pub start_ms: Ms,
    /// Bucket end (ms, exclusive).
    pub end_ms: Ms,
    /// Availability over the bucket.
    pub availability: Option<f64>,
    /// Reliability over the bucket.
    pub reliability: Option<f64>,
    /// Fraction of the bucket in scheduled downtime.
    pub maintenance: f64,
    /// Fraction of the bucket unknown.
    pub unknown_fraction: f64,
}

/// One site in the monthly report: its [`SiteReport`] (flattened, so the JSON is a superset of
/// the plain report's) with the monthly report's additions.
#[derive(Debug, Clone, Serialize)]
pub struct MonthlySite {
    /// The site's figures over the whole period, with its flavours and instances.
    #[serde(flatten)]
    pub report: SiteReport,
    /// Its federation, when the site's `federation`.
    pub federation: Option<String>,
    /// Its weight in tier and federation means (its `weight`, the `weights` file, else 1).
    pub weight: f64,
    /// Against the targets.
    pub verdict: Verdict,
    /// Per-bucket figures, in time order (the strip).
    pub days: Vec<DayFigures>,
}

/// Means of a group of sites (a tier or a federation). For a tier, `tier`, `sites`,
/// `availability` and `reliability` are those of the plain report's tiers.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    /// `Tier-1`, or the federation's name.
    pub name: String,
    /// The tier, for a tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
    /// Sites in the group.
    pub sites: usize,
    /// Sites meeting all targets.
    pub sites_meeting_targets: usize,
    /// Plain mean availability over the sites that have one.
    pub availability: Option<f64>,
    /// Plain mean reliability over the sites that have one.
    pub reliability: Option<f64>,
    /// Weighted mean availability (weight 0 for sites whose figure is n/a).
    pub availability_weighted: Option<f64>,
    /// Weighted mean reliability (likewise).
    pub reliability_weighted: Option<f64>,
    /// Sum of the weights of the sites with a figure.
    pub weight: f64,
}

/// A downtime that counted in the figures (OUTAGE severity), clipped to the period.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedDowntime {
    /// Site (or `None` for a downtime of a host named without its site).
    pub site: Option<String>,
    /// Host, when only one service.
    pub hostname: Option<String>,
    /// Flavour, when only one flavour of that host.
    pub flavour: Option<String>,
    /// Start, clipped to the period.
    pub start_ms: Ms,
    /// End, clipped to the period.
    pub end_ms: Ms,
    /// Scheduled (counts out of reliability) or not (counts as down).
    pub scheduled: bool,
    /// Why.
    pub reason: String,
    /// `config` or `gocdb`.
    pub source: String,
}

/// A recomputation that was applied to the figures, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedRecomputation {
    /// Its id.
    pub id: i64,
    /// What it covered, start (ms).
    pub start_ms: Ms,
    /// End (ms).
    pub end_ms: Ms,
    /// What it changed, in words (e.g. "excluded metric org.x.ce-job at T2_A").
    pub change: String,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
    /// Who approved.
    pub approved_by: String,
}

impl AppliedRecomputation {
    /// How the report lists a stored recomputation.
    fn of(r: &Recomputation) -> Self {
        let approved_by = r
            .steps
            .iter()
            .rev()
            .find(|s| s.step == StepKind::Approved)
            .map(|s| s.by.clone())
            .unwrap_or_default();
        AppliedRecomputation {
            id: r.id,
            start_ms: r.request.start_ms,
            end_ms: r.request.end_ms,
            change: format!(
                "{} ({})",
                r.request.change.describe(),
                r.request.scope.describe()
            ),
            reason: r.request.reason.clone(),
            requested_by: r.request.requester.clone(),
            approved_by,
        }
    }
}

/// A term and how it is computed.
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    /// The term.
    pub term: &'static str,
    /// Its definition.
    pub text: String,
}

/// The targets as the report states them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TargetsView {
    /// Availability ≥ this.
    pub availability: f64,
    /// Reliability ≥ this.
    pub reliability: f64,
    /// Unknown ≤ this.
    pub unknown: f64,
}

/// The whole monthly report.
#[derive(Debug, Clone, Serialize)]
pub struct MonthlyReport {
    /// VO.
    pub vo: String,
    /// Profile used.
    pub profile: String,
    /// The period.
    pub period: Period,
    /// When the report was made (ms).
    pub generated_ms: Ms,
    /// Figures are n/a above this unknown fraction.
    pub unknown_threshold: f64,
    /// The targets.
    pub targets: TargetsView,
    /// The length of one strip bucket (a day unless the period is long).
    pub bucket_ms: Ms,
    /// Sites, in configuration order.
    pub sites: Vec<MonthlySite>,
    /// Per tier, ascending.
    pub tiers: Vec<GroupSummary>,
    /// Per federation, by name (empty until federations are configured).
    pub federations: Vec<GroupSummary>,
    /// Downtimes that counted, by start.
    pub downtimes: Vec<AppliedDowntime>,
    /// Recomputations applied.
    pub recomputations: Vec<AppliedRecomputation>,
    /// How the figures are defined.
    pub definitions: Vec<Definition>,
}

/// The buckets of a period: UTC days (cut at the period's ends), or several days each when
/// the period has more than [`MAX_BUCKETS`] days.
pub fn buckets(period: &Period) -> Vec<(Ms, Ms)> {
    let size = bucket_size(period);
    let mut out = Vec::new();
    // Boundaries at UTC midnights (multiples of a day since the epoch), so a month's buckets
    // are its days.
    let mut start = period.start_ms;
    while start < period.end_ms && out.len() <= MAX_BUCKETS + 1 {
        let aligned = start.div_euclid(DAY_MS).saturating_mul(DAY_MS);
        let end = aligned.saturating_add(size).min(period.end_ms);
        out.push((start, end));
        start = end;
    }
    out
}

/// The length of a strip bucket: a day, or whole days enough for [`MAX_BUCKETS`] to cover the
/// period.
pub fn bucket_size(period: &Period) -> Ms {
    let len = period.end_ms.saturating_sub(period.start_ms).max(0) as u64;
    let days = len.div_ceil(DAY_MS as u64).max(1);
    let per = i64::try_from(days.div_ceil(MAX_BUCKETS as u64)).unwrap_or(i64::MAX);
    per.max(1).saturating_mul(DAY_MS)
}

/// The runs of each cell that matter for `[start, end)`: the last one starting before it and
/// those starting inside. Exact for [`compute_runs`], whose timelines look no further.
fn slice(cells: &[CellRuns], start: Ms, end: Ms) -> Vec<CellRuns> {
    cells
        .iter()
        .map(|(key, runs)| {
            let from = runs.partition_point(|r| r.start < start).saturating_sub(1);
            let to = runs.partition_point(|r| r.start < end).max(from);
            (key.clone(), runs[from..to].to_vec())
        })
        .collect()
}

/// Builds the monthly report from runs (as [`crate::report::compute_runs`] takes them).
#[allow(clippy::too_many_arguments)]
pub fn build(
    config: &Config,
    profile: Option<&str>,
    period: &Period,
    cells: &[CellRuns],
    stored_downtimes: &[Downtime],
    unknown_threshold: f64,
    recomputations: &[Recomputation],
    now_ms: Ms,
) -> Result<MonthlyReport, String> {
    let report = compute_applied(
        config,
        profile,
        period,
        cells,
        stored_downtimes,
        unknown_threshold,
        recomputations,
    )?;
    let bucket_list = buckets(period);
    let mut daily: Vec<Report> = Vec::with_capacity(bucket_list.len());
    for &(start, end) in &bucket_list {
        let p = Period {
            start_ms: start,
            end_ms: end,
            label: String::new(),
        };
        let sliced = slice(cells, start, end);
        daily.push(compute_applied(
            config,
            profile,
            &p,
            &sliced,
            stored_downtimes,
            unknown_threshold,
            recomputations,
        )?);
    }
    Ok(assemble(
        report,
        &daily,
        &bucket_list,
        config,
        stored_downtimes,
        now_ms,
    ))
}

/// Puts the whole-period report and the per-bucket reports together.
fn assemble(
    report: Report,
    daily: &[Report],
    bucket_list: &[(Ms, Ms)],
    config: &Config,
    stored_downtimes: &[Downtime],
    now_ms: Ms,
) -> MonthlyReport {
    let targets = config.report.targets;
    let mut sites = Vec::with_capacity(report.sites.len());
    for s in report.sites.iter().cloned() {
        let days = daily
            .iter()
            .zip(bucket_list)
            .map(|(d, &(start, end))| {
                let f = d.sites.iter().find(|x| x.site == s.site).map(|x| x.figures);
                DayFigures {
                    start_ms: start,
                    end_ms: end,
                    availability: f.and_then(|f| f.availability),
                    reliability: f.and_then(|f| f.reliability),
                    maintenance: f.map(|f| f.maintenance).unwrap_or(0.0),
                    unknown_fraction: f.map(|f| f.unknown_fraction).unwrap_or(1.0),
                }
            })
            .collect();
        let weight = Some(s.weight)
            .filter(|w| w.is_finite() && *w >= 0.0)
            .unwrap_or(1.0);
        sites.push(MonthlySite {
            federation: s.federation.clone(),
            weight,
            verdict: Verdict::of(&s.figures, &targets),
            days,
            report: s,
        });
    }
    let (tiers, federations) = summaries(&sites);
    let downtimes = applied_downtimes(&report, config, stored_downtimes);
    let recomputations = report
        .recomputations
        .iter()
        .map(AppliedRecomputation::of)
        .collect();
    MonthlyReport {
        vo: report.vo,
        profile: report.profile,
        unknown_threshold: report.unknown_threshold,
        targets: TargetsView {
            availability: targets.availability,
            reliability: targets.reliability,
            unknown: targets.unknown,
        },
        bucket_ms: bucket_size(&report.period),
        period: report.period,
        generated_ms: now_ms,
        sites,
        tiers,
        federations,
        downtimes,
        recomputations,
        definitions: definitions(&targets, report.unknown_threshold),
    }
}

/// The tier and federation summaries of these sites.
fn summaries(sites: &[MonthlySite]) -> (Vec<GroupSummary>, Vec<GroupSummary>) {
    let mut tiers = Vec::new();
    for tier in 0..=3u8 {
        let members: Vec<&MonthlySite> = sites.iter().filter(|s| s.report.tier == tier).collect();
        if !members.is_empty() {
            let mut t = summary(format!("Tier-{tier}"), &members);
            t.tier = Some(tier);
            tiers.push(t);
        }
    }
    let mut by_federation: BTreeMap<&str, Vec<&MonthlySite>> = BTreeMap::new();
    for s in sites {
        if let Some(f) = &s.federation {
            by_federation.entry(f.as_str()).or_default().push(s);
        }
    }
    let federations = by_federation
        .into_iter()
        .map(|(name, members)| summary(name.to_string(), &members))
        .collect();
    (tiers, federations)
}

impl MonthlyReport {
    /// Keeps only one site (`--site`): its row, its downtimes, and summaries over it alone.
    pub fn keep_site(&mut self, site: &str) {
        self.sites.retain(|s| s.report.site == site);
        self.downtimes
            .retain(|d| d.site.as_deref().is_none_or(|s| s == site));
        let (tiers, federations) = summaries(&self.sites);
        self.tiers = tiers;
        self.federations = federations;
    }
}

/// Plain and weighted means of a group of sites (the same means as the report's tiers and
/// federations, `crate::aggregate`), with how many meet the targets.
pub fn summary(name: String, members: &[&MonthlySite]) -> GroupSummary {
    let plain = |f: fn(&Figures) -> Option<f64>| {
        crate::aggregate::plain_mean(
            &members
                .iter()
                .map(|s| f(&s.report.figures))
                .collect::<Vec<_>>(),
        )
    };
    let weighted = |f: fn(&Figures) -> Option<f64>| {
        crate::aggregate::weighted_mean(
            &members
                .iter()
                .map(|s| (f(&s.report.figures), s.weight))
                .collect::<Vec<_>>(),
        )
    };
    GroupSummary {
        name,
        tier: None,
        sites: members.len(),
        sites_meeting_targets: members.iter().filter(|s| s.verdict.met).count(),
        availability: plain(|f| f.availability),
        reliability: plain(|f| f.reliability),
        availability_weighted: weighted(|f| f.availability),
        reliability_weighted: weighted(|f| f.reliability),
        weight: members
            .iter()
            .filter(|s| s.report.figures.availability.is_some())
            .map(|s| s.weight)
            .sum(),
    }
}

/// The outage downtimes (configured and stored) touching a reported site in the period.
fn applied_downtimes(
    report: &Report,
    config: &Config,
    stored: &[Downtime],
) -> Vec<AppliedDowntime> {
    let (start, end) = (report.period.start_ms, report.period.end_ms);
    let mut out: Vec<AppliedDowntime> = stored
        .iter()
        .chain(&config.downtimes)
        .filter(|d| d.outage && d.start_ms < end && d.end_ms > start)
        .filter(|d| {
            report.sites.iter().any(|s| {
                s.flavours.iter().any(|f| {
                    f.instances
                        .iter()
                        .any(|i| d.covers(&s.site, &i.hostname, &f.flavour))
                })
            })
        })
        .map(|d| AppliedDowntime {
            site: d.site.clone().or_else(|| {
                // A downtime of a host: name the site that host belongs to.
                let host = d.hostname.as_deref()?;
                report
                    .sites
                    .iter()
                    .find(|s| {
                        s.flavours
                            .iter()
                            .any(|f| f.instances.iter().any(|i| i.hostname == host))
                    })
                    .map(|s| s.site.clone())
            }),
            hostname: d.hostname.clone(),
            flavour: d.flavour.clone(),
            start_ms: d.start_ms.max(start),
            end_ms: d.end_ms.min(end),
            scheduled: d.scheduled,
            reason: d.reason.clone(),
            source: d.source.clone(),
        })
        .collect();
    out.sort_by(|a, b| (a.start_ms, &a.site).cmp(&(b.start_ms, &b.site)));
    out
}

/// "How the figures are defined", with this report's targets and threshold.
pub fn definitions(t: &ReportTargets, unknown_threshold: f64) -> Vec<Definition> {
    let p = |v: f64| format!("{:.0}%", v * 100.0);
    vec![
        Definition {
            term: "Status timeline",
            text: "Each recorded result holds from its start until the next result of the same \
                   metric, or until its freshness window runs out (then it is MISSING). A \
                   service instance is the AND of the profile's critical metrics (worst wins), \
                   a flavour the OR of its instances (best wins), a site the AND of its \
                   flavours. An OUTAGE downtime makes the covered time DOWNTIME."
                .into(),
        },
        Definition {
            term: "Availability",
            text: "time up (OK or WARNING) / (period - time UNKNOWN or MISSING). Scheduled \
                   downtime counts as not up."
                .into(),
        },
        Definition {
            term: "Reliability",
            text: "time up / (period - time unknown - time in scheduled downtime): planned \
                   maintenance is not held against the site; unscheduled downtime is."
                .into(),
        },
        Definition {
            term: "Unknown",
            text: format!(
                "fraction of the period UNKNOWN or MISSING. Above {} the availability and \
                 reliability are n/a.",
                p(unknown_threshold)
            ),
        },
        Definition {
            term: "Maintenance",
            text: "fraction of the period in scheduled downtime.".into(),
        },
        Definition {
            term: "Targets",
            text: format!(
                "availability >= {}, reliability >= {}, unknown <= {} ([report] targets). A \
                 site meets its targets when all three hold; an n/a figure does not meet its \
                 target.",
                p(t.availability),
                p(t.reliability),
                p(t.unknown)
            ),
        },
        Definition {
            term: "Summaries",
            text: "Tier and federation figures are the plain mean of the sites' figures and \
                   the mean weighted by each site's weight (1 unless configured); sites whose \
                   figure is n/a weigh 0."
                .into(),
        },
    ]
}

/// The monthly report of a period straight from a store: one read of the runs and downtimes,
/// the whole period and each bucket computed from them. A period reaching past `now_ms` ends
/// at `now_ms` (the current month is reported to date: the future is not "unknown").
#[allow(clippy::too_many_arguments)]
pub async fn from_store(
    store: &dyn ResultStore,
    config: &Config,
    profile: Option<&str>,
    period: &Period,
    filter: &CellFilter,
    unknown_threshold: f64,
    now_ms: Ms,
) -> Result<MonthlyReport, ReportError> {
    let period = &to_date(period, now_ms)?;
    let cells = store
        .run_timelines(period.start_ms, period.end_ms, filter, merge_gap_ms(config))
        .await?;
    let downtimes = store.downtimes(period.start_ms, period.end_ms).await?;
    let recomputations = store.recomputations().await?;
    build(
        config,
        profile,
        period,
        &cells,
        &downtimes,
        unknown_threshold,
        &recomputations,
        now_ms,
    )
    .map_err(ReportError::Invalid)
}

/// The period cut at `now_ms`; an error when it starts after it.
pub fn to_date(period: &Period, now_ms: Ms) -> Result<Period, ReportError> {
    if period.start_ms >= now_ms {
        return Err(ReportError::Invalid(format!(
            "period `{}` has not started yet",
            period.label
        )));
    }
    Ok(Period {
        end_ms: period.end_ms.min(now_ms),
        ..period.clone()
    })
}

/// CSV of the report: one row per site with the plain report's columns (`gridprobe report
/// --format csv`: figures as fractions with six decimals, n/a empty, the period in ms), then
/// the verdicts (`yes`/`no`, empty when n/a), the federation and the weight.
pub fn to_csv(r: &MonthlyReport) -> String {
    let mut out = String::from(
        "site,tier,availability,reliability,maintenance,unknown_fraction,period_start,period_end,\
         availability_met,reliability_met,unknown_met,targets_met,federation,weight\n",
    );
    let num = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    };
    for s in &r.sites {
        let f = &s.report.figures;
        let row = [
            csv_field(&s.report.site),
            s.report.tier.to_string(),
            num(f.availability),
            num(f.reliability),
            num(Some(f.maintenance)),
            num(Some(f.unknown_fraction)),
            r.period.start_ms.to_string(),
            r.period.end_ms.to_string(),
            yes(s.verdict.availability).into(),
            yes(s.verdict.reliability).into(),
            yes(Some(s.verdict.unknown)).into(),
            yes(Some(s.verdict.met)).into(),
            csv_field(s.federation.as_deref().unwrap_or("")),
            format!("{}", s.weight),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// One CSV field, quoted when it holds a comma, quote or line break (RFC 4180); a leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so a spreadsheet never runs it as a formula.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CellKey, StatusRun};
    use gridprobe_probes::Status;
    use std::path::Path;

    const H: Ms = 3_600_000;

    const CONFIG: &str = r#"
vo = "v"
[defaults]
interval = "1h"
timeout = "10m"
[report]
targets = { availability = 90, reliability = 95.5, unknown = 5 }
[[site]]
name = "T1_A"
tier = 1
  [[site.service]]
  flavour = "CE"
  hostname = "ce1"
[[site]]
name = "T2_B"
federation = "FED"
weight = 3
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce2"
[[site]]
name = "=T2_C,x"
tier = 2
  [[site.service]]
  flavour = "CE"
  hostname = "ce3"
[[probe]]
metric = "org.v.ce-job"
kind = "tcp"
flavours = ["CE"]
freshness = "2h"
[[downtime]]
service = "ce2"
start = "1970-01-02 00:00"
end = "1970-01-02 12:00"
classification = "scheduled"
reason = "upgrade"
"#;

    fn key(site: &str, host: &str) -> CellKey {
        CellKey {
            site: site.into(),
            hostname: host.into(),
            flavour: "CE".into(),
            metric: "org.v.ce-job".into(),
        }
    }

    /// Hourly results over three days, status chosen per hour.
    fn hourly(f: impl Fn(i64) -> Status) -> Vec<StatusRun> {
        crate::store::runs_of(&(0..72).map(|h| (h * H, f(h))).collect::<Vec<_>>(), 0)
    }

    fn report() -> MonthlyReport {
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        assert!(l.diagnostics.is_empty(), "{}", l.diagnostics);
        let period = Period {
            start_ms: 0,
            end_ms: 72 * H,
            label: "3 days".into(),
        };
        let cells = vec![
            // T1_A: critical all of day 2: 2/3 available.
            (
                key("T1_A", "ce1"),
                hourly(|h| {
                    if (24..48).contains(&h) {
                        Status::Critical
                    } else {
                        Status::Ok
                    }
                }),
            ),
            // T2_B: up, 12 h of scheduled downtime on day 2.
            (key("T2_B", "ce2"), hourly(|_| Status::Ok)),
        ];
        build(&l.config, None, &period, &cells, &[], 0.9, &[], 0).expect("report")
    }

    #[test]
    fn sites_are_judged_against_the_configured_targets_per_day() {
        let r = report();
        assert!((r.targets.reliability - 0.955).abs() < 1e-9);
        let a = &r.sites[0];
        assert!((a.report.figures.availability.unwrap_or(0.0) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.verdict.availability, Some(false));
        assert!(!a.verdict.met);
        assert_eq!(a.days.len(), 3);
        assert_eq!(
            a.days.iter().map(|d| d.availability).collect::<Vec<_>>(),
            vec![Some(1.0), Some(0.0), Some(1.0)]
        );
        let b = &r.sites[1];
        // Reliability leaves the scheduled downtime out; availability counts it as not up.
        assert_eq!(b.report.figures.reliability, Some(1.0));
        assert!((b.report.figures.availability.unwrap_or(0.0) - 60.0 / 72.0).abs() < 1e-9);
        assert!((b.days[1].maintenance - 0.5).abs() < 1e-9);
        assert_eq!(b.verdict.reliability, Some(true));
        assert_eq!(b.verdict.availability, Some(false));
        // No result at all: n/a, not met, unknown target missed.
        let c = &r.sites[2];
        assert_eq!(c.report.figures.availability, None);
        assert_eq!(c.verdict.availability, None);
        assert!(!c.verdict.unknown && !c.verdict.met);
        assert_eq!(r.downtimes.len(), 1);
        assert_eq!(r.downtimes[0].site.as_deref(), Some("T2_B"));
        assert_eq!(r.downtimes[0].reason, "upgrade");
    }

    #[test]
    fn summaries_give_plain_and_weighted_means_with_na_weighing_zero() {
        let r = report();
        let t2 = r.tiers.iter().find(|t| t.name == "Tier-2").expect("tier 2");
        assert_eq!(t2.sites, 2);
        // Only T2_B has a figure: both means are its figure, its weight 3 the group's.
        let b = r.sites[1].report.figures.availability;
        assert_eq!(t2.availability, b);
        assert_eq!(t2.tier, Some(2));
        assert_eq!(t2.availability_weighted, b);
        assert_eq!(t2.weight, 3.0);
        assert_eq!(r.federations.len(), 1);
        assert_eq!(r.federations[0].name, "FED");
        // One site kept: the summaries are over it alone.
        let mut one = r.clone();
        one.keep_site("T2_B");
        assert_eq!(one.sites.len(), 1);
        assert_eq!(one.tiers.len(), 1);
        assert_eq!(one.tiers[0].sites, 1);
        assert_eq!(one.downtimes.len(), 1);
        // Weighted differs from plain when weights differ.
        let mut x = r.sites[0].clone();
        let mut y = r.sites[1].clone();
        x.report.figures.availability = Some(1.0);
        y.report.figures.availability = Some(0.0);
        x.weight = 3.0;
        y.weight = 1.0;
        let s = summary("S".into(), &[&x, &y]);
        assert_eq!(s.availability, Some(0.5));
        assert_eq!(s.availability_weighted, Some(0.75));
    }

    #[test]
    fn csv_has_one_row_per_site_and_neutralises_formulas() {
        let csv = to_csv(&report());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        assert!(lines[0].starts_with(
            "site,tier,availability,reliability,maintenance,unknown_fraction,period_start,"
        ));
        assert_eq!(
            lines[1],
            "T1_A,1,0.666667,0.666667,0.000000,0.000000,0,259200000,no,no,yes,no,,1"
        );
        assert!(lines[2].starts_with("T2_B,2,0.833333,1.000000,"));
        assert!(lines[2].ends_with(",no,yes,yes,no,FED,3"), "{}", lines[2]);
        // `=T2_C,x`: quoted for the comma, `'`-prefixed so it is not a formula.
        assert!(
            lines[3].starts_with("\"'=T2_C,x\",2,,,0.000000,1.000000,"),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn json_carries_targets_days_and_definitions() {
        let v = serde_json::to_value(report()).expect("json");
        assert_eq!(v["targets"]["availability"], 0.9);
        assert_eq!(v["sites"][0]["days"].as_array().map(Vec::len), Some(3));
        // A superset of the plain report's JSON.
        assert_eq!(v["sites"][0]["site"], "T1_A");
        assert!(v["sites"][0]["figures"]["availability"].is_number());
        assert!(v["sites"][0]["flavours"].is_array());
        assert_eq!(v["tiers"][0]["tier"], 1);
        assert_eq!(v["sites"][0]["verdict"]["met"], false);
        assert!(v["definitions"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["term"] == "Reliability")));
        assert_eq!(v["recomputations"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn a_period_ends_now_and_must_have_started() {
        let p = Period {
            start_ms: 0,
            end_ms: 72 * H,
            label: "x".into(),
        };
        assert_eq!(to_date(&p, 30 * H).map(|p| p.end_ms).ok(), Some(30 * H));
        assert_eq!(to_date(&p, 100 * H).map(|p| p.end_ms).ok(), Some(72 * H));
        let err = to_date(&p, 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("has not started yet"), "{err}");
    }

    #[test]
    fn buckets_are_days_or_bounded() {
        let month = crate::report::parse_period("2026-11", 0).expect("month");
        let b = buckets(&month);
        assert_eq!(b.len(), 30);
        assert!(b.iter().all(|(s, e)| e - s == DAY_MS));
        // A period starting mid-day: the first bucket ends at midnight.
        let p = Period {
            start_ms: 12 * H,
            end_ms: 72 * H,
            label: String::new(),
        };
        assert_eq!(buckets(&p)[0], (12 * H, 24 * H));
        let long = crate::report::parse_period("2020-01-01..2029-12-31", 0).expect("long");
        let b = buckets(&long);
        assert!(b.len() <= MAX_BUCKETS + 1, "{}", b.len());
        assert_eq!(b.last().map(|x| x.1), Some(long.end_ms));
    }

    #[test]
    fn per_day_figures_equal_a_report_of_that_day() {
        // Slicing the runs must not change any day's figures.
        let l = gridprobe_config::load_str(Path::new("v.toml"), CONFIG);
        let cells = vec![(
            key("T1_A", "ce1"),
            hourly(|h| match h % 7 {
                0 => Status::Critical,
                3 => Status::Unknown,
                _ => Status::Ok,
            }),
        )];
        let period = Period {
            start_ms: 0,
            end_ms: 72 * H,
            label: String::new(),
        };
        let r = build(&l.config, None, &period, &cells, &[], 0.9, &[], 0).expect("report");
        for d in &r.sites[0].days {
            let p = Period {
                start_ms: d.start_ms,
                end_ms: d.end_ms,
                label: String::new(),
            };
            let whole =
                crate::report::compute_runs(&l.config, None, &p, &cells, &[], 0.9).expect("day");
            assert_eq!(whole.sites[0].figures.availability, d.availability);
            assert_eq!(r.sites[0].report.site, whole.sites[0].site);
            assert_eq!(whole.sites[0].figures.unknown_fraction, d.unknown_fraction);
        }
    }
}
