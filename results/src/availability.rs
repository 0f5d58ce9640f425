//! Availability and reliability, the WLCG way, as pure functions over time intervals.
//! `docs/availability.md` states the algorithm with a worked example; the tests below include
//! that example and hand-computed edge cases.
//!
//! 1. A metric's timeline: each result holds from its start until the next result of the same
//!    metric or until its freshness window runs out (then MISSING); MISSING before the first.
//!    STANDBY counts as UNKNOWN. Wherever a downtime of the instance covers the timeline, the
//!    status is DOWNTIME (so a result taken during a downtime counts as DOWNTIME).
//! 2. Instance = AND of its critical metrics (worst wins).
//! 3. Flavour at a site = OR of its instances (best wins).
//! 4. Site = AND of the flavours the profile requires there.
//! 5. Figures over a period from the time spent in each status.

use std::ops::Range;

use gridprobe_probes::Status;

use crate::store::StatusRun;
use serde::Serialize;

/// Milliseconds since the Unix epoch.
pub type Ms = i64;

/// The statuses of the availability computation (ARGO's operations profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AStatus {
    /// Service works.
    Ok,
    /// Works, with a warning: counts as up.
    Warning,
    /// Could not be decided (includes STANDBY).
    Unknown,
    /// No current result.
    Missing,
    /// Does not work.
    Critical,
    /// In a declared downtime.
    Downtime {
        /// Declared at least 24 h ahead (planned maintenance).
        scheduled: bool,
    },
    /// Taken out of the computation by an applied recomputation: neither up nor known, and
    /// skipped by AND and OR (see `crate::recompute`).
    Excluded,
}

impl AStatus {
    /// From a probe status (STANDBY counts as UNKNOWN).
    pub fn from_probe(s: Status) -> Self {
        match s {
            Status::Ok => AStatus::Ok,
            Status::Warning => AStatus::Warning,
            Status::Critical => AStatus::Critical,
            Status::Unknown | Status::Standby => AStatus::Unknown,
        }
    }

    /// Rank for AND (higher is worse): CRITICAL > DOWNTIME > MISSING > UNKNOWN > WARNING > OK.
    fn and_rank(self) -> u8 {
        match self {
            AStatus::Ok => 0,
            AStatus::Warning => 1,
            AStatus::Unknown => 2,
            AStatus::Missing => 3,
            // An unscheduled downtime is worse than a scheduled one when both meet in an AND.
            AStatus::Downtime { scheduled: true } => 4,
            AStatus::Downtime { scheduled: false } => 5,
            AStatus::Critical => 6,
            // Never picked while another member is present (see `combine`).
            AStatus::Excluded => 0,
        }
    }

    /// Rank for OR (higher is better): OK > WARNING > CRITICAL > UNKNOWN > DOWNTIME > MISSING.
    fn or_rank(self) -> u8 {
        match self {
            AStatus::Ok => 6,
            AStatus::Warning => 5,
            AStatus::Critical => 4,
            AStatus::Unknown => 3,
            AStatus::Downtime { scheduled: true } => 2,
            AStatus::Downtime { scheduled: false } => 1,
            AStatus::Missing => 0,
            AStatus::Excluded => 0,
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            AStatus::Ok => "OK",
            AStatus::Warning => "WARNING",
            AStatus::Unknown => "UNKNOWN",
            AStatus::Missing => "MISSING",
            AStatus::Critical => "CRITICAL",
            AStatus::Downtime { .. } => "DOWNTIME",
            AStatus::Excluded => "EXCLUDED",
        }
    }
}

/// A stretch of time with one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Start (inclusive).
    pub start: Ms,
    /// End (exclusive).
    pub end: Ms,
    /// Status over the stretch.
    pub status: AStatus,
}

/// Contiguous segments covering a period, in time order.
pub type Timeline = Vec<Segment>;

/// A downtime as the computation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowntimeSpan {
    /// When.
    pub span: Range<Ms>,
    /// Declared at least 24 h ahead.
    pub scheduled: bool,
}

/// Builds a metric's timeline over `period` from its results `(start, status)` in time order.
/// Include the last result before the period: it may still hold at the period's start.
pub fn metric_timeline(
    results: &[(Ms, Status)],
    freshness: Ms,
    period: &Range<Ms>,
    downtimes: &[DowntimeSpan],
) -> Timeline {
    let runs: Vec<StatusRun> = results
        .iter()
        .map(|&(t, status)| StatusRun {
            start: t,
            last: t,
            status,
        })
        .collect();
    metric_timeline_runs(&runs, freshness, period, downtimes)
}

/// As [`metric_timeline`], from runs of equal results ([`StatusRun`]). Exact when no gap inside
/// a run exceeds `freshness`: the run then holds from its first result until its last result's
/// freshness runs out or the next run starts.
pub fn metric_timeline_runs(
    results: &[StatusRun],
    freshness: Ms,
    period: &Range<Ms>,
    downtimes: &[DowntimeSpan],
) -> Timeline {
    let mut raw: Timeline = Vec::with_capacity(results.len() * 2 + 1);
    let mut cursor = period.start;
    let push = |raw: &mut Timeline, start: Ms, end: Ms, status: AStatus| {
        let (start, end) = (start.max(period.start), end.min(period.end));
        if start < end {
            match raw.last_mut() {
                Some(last) if last.status == status && last.end == start => last.end = end,
                _ => raw.push(Segment { start, end, status }),
            }
        }
    };
    for (i, run) in results.iter().enumerate() {
        let (t, status) = (run.start, run.status);
        let next = results.get(i + 1).map(|n| n.start).unwrap_or(Ms::MAX);
        if next <= period.start || t >= period.end {
            continue;
        }
        if t > cursor {
            push(&mut raw, cursor, t, AStatus::Missing);
        }
        let valid_until = run.last.saturating_add(freshness).min(next);
        push(
            &mut raw,
            t.max(cursor),
            valid_until,
            AStatus::from_probe(status),
        );
        if valid_until < next {
            push(&mut raw, valid_until, next, AStatus::Missing);
        }
        cursor = next.max(cursor);
    }
    if cursor < period.end {
        push(&mut raw, cursor, period.end, AStatus::Missing);
    }
    overlay_downtimes(raw, downtimes, period)
}

/// Replaces the parts of a timeline covered by downtimes with DOWNTIME. Where a scheduled and
/// an unscheduled downtime overlap, the time counts as scheduled: it was announced ahead.
pub fn overlay_downtimes(
    timeline: Timeline,
    downtimes: &[DowntimeSpan],
    period: &Range<Ms>,
) -> Timeline {
    if downtimes.is_empty() {
        return timeline;
    }
    let dt = downtime_timeline(downtimes, period);
    let mut out = Vec::with_capacity(timeline.len() + dt.len() * 2);
    sweep(
        &[timeline, dt],
        period,
        |statuses| match statuses[1] {
            Some(d @ AStatus::Downtime { .. }) => d,
            _ => statuses[0].unwrap_or(AStatus::Missing),
        },
        &mut out,
    );
    out
}

/// Lays status overrides (applied recomputations, see `crate::recompute`) over a timeline:
/// wherever one covers it, the time takes its status. Where overrides overlap, EXCLUDED wins
/// (nothing is then judged), otherwise the first listed.
pub fn overlay_statuses(
    timeline: Timeline,
    overrides: &[(Range<Ms>, AStatus)],
    period: &Range<Ms>,
) -> Timeline {
    if overrides.is_empty() {
        return timeline;
    }
    let mut points: Vec<Ms> = vec![period.start, period.end];
    for (span, _) in overrides {
        points.push(span.start.clamp(period.start, period.end));
        points.push(span.end.clamp(period.start, period.end));
    }
    points.sort_unstable();
    points.dedup();
    // Only the covered stretches: `sweep` sees `None` elsewhere and keeps the timeline.
    let mut over: Timeline = Vec::new();
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let covering: Vec<AStatus> = overrides
            .iter()
            .filter(|(span, _)| span.start <= a && span.end >= b)
            .map(|(_, s)| *s)
            .collect();
        let status = if covering.contains(&AStatus::Excluded) {
            AStatus::Excluded
        } else {
            match covering.first() {
                Some(s) => *s,
                None => continue,
            }
        };
        match over.last_mut() {
            Some(last) if last.status == status && last.end == a => last.end = b,
            _ => over.push(Segment {
                start: a,
                end: b,
                status,
            }),
        }
    }
    let mut out = Vec::with_capacity(timeline.len() + over.len() * 2);
    sweep(
        &[timeline, over],
        period,
        |statuses| statuses[1].or(statuses[0]).unwrap_or(AStatus::Missing),
        &mut out,
    );
    out
}

/// The downtimes as a timeline: DOWNTIME where covered, OK (meaning "no downtime") elsewhere.
fn downtime_timeline(downtimes: &[DowntimeSpan], period: &Range<Ms>) -> Timeline {
    let mut points: Vec<Ms> = vec![period.start, period.end];
    for d in downtimes {
        points.push(d.span.start.clamp(period.start, period.end));
        points.push(d.span.end.clamp(period.start, period.end));
    }
    points.sort_unstable();
    points.dedup();
    let mut out: Timeline = Vec::new();
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let covering: Vec<&DowntimeSpan> = downtimes
            .iter()
            .filter(|d| d.span.start <= a && d.span.end >= b)
            .collect();
        let status = if covering.is_empty() {
            AStatus::Ok
        } else {
            AStatus::Downtime {
                scheduled: covering.iter().any(|d| d.scheduled),
            }
        };
        match out.last_mut() {
            Some(last) if last.status == status => last.end = b,
            _ => out.push(Segment {
                start: a,
                end: b,
                status,
            }),
        }
    }
    out
}

/// Walks several timelines over a period at once, calling `pick` with each one's status for
/// every stretch where none changes, and appends the merged segments to `out`.
fn sweep(
    timelines: &[Timeline],
    period: &Range<Ms>,
    mut pick: impl FnMut(&[Option<AStatus>]) -> AStatus,
    out: &mut Timeline,
) {
    let mut idx = vec![0usize; timelines.len()];
    let mut t = period.start;
    let mut current: Vec<Option<AStatus>> = vec![None; timelines.len()];
    while t < period.end {
        let mut next = period.end;
        for (k, tl) in timelines.iter().enumerate() {
            while idx[k] < tl.len() && tl[idx[k]].end <= t {
                idx[k] += 1;
            }
            current[k] = match tl.get(idx[k]) {
                Some(seg) if seg.start <= t => {
                    next = next.min(seg.end);
                    Some(seg.status)
                }
                Some(seg) => {
                    next = next.min(seg.start);
                    None
                }
                None => None,
            };
        }
        let status = pick(&current);
        match out.last_mut() {
            Some(last) if last.status == status && last.end == t => last.end = next,
            _ => out.push(Segment {
                start: t,
                end: next,
                status,
            }),
        }
        t = next;
    }
}

/// How timelines combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Worst wins (metrics → instance, flavours → site).
    And,
    /// Best wins (instances of a flavour).
    Or,
}

/// Combines timelines over a period. An empty set gives MISSING throughout. EXCLUDED members
/// are skipped (ARGO's recomputations): the result is EXCLUDED only where every member is.
pub fn combine(timelines: &[Timeline], op: Combine, period: &Range<Ms>) -> Timeline {
    let mut out = Vec::new();
    if timelines.is_empty() {
        if period.start < period.end {
            out.push(Segment {
                start: period.start,
                end: period.end,
                status: AStatus::Missing,
            });
        }
        return out;
    }
    sweep(
        timelines,
        period,
        |statuses| {
            let all = statuses.iter().map(|s| s.unwrap_or(AStatus::Missing));
            if all.clone().all(|s| s == AStatus::Excluded) {
                return AStatus::Excluded;
            }
            let present = all.filter(|s| *s != AStatus::Excluded);
            match op {
                Combine::And => present.max_by_key(|s| s.and_rank()),
                Combine::Or => present.max_by_key(|s| s.or_rank()),
            }
            .unwrap_or(AStatus::Missing)
        },
        &mut out,
    );
    out
}

/// The figures of one timeline over its period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Length of the period (ms).
    pub period_ms: Ms,
    /// Time OK or WARNING.
    pub up_ms: Ms,
    /// Period minus time UNKNOWN or MISSING.
    pub known_ms: Ms,
    /// Time in scheduled downtime.
    pub scheduled_downtime_ms: Ms,
    /// Time in unscheduled downtime (counted as down).
    pub unscheduled_downtime_ms: Ms,
    /// UP / KNOWN; `None` ("n/a") when the unknown fraction is above the threshold or KNOWN is 0.
    pub availability: Option<f64>,
    /// UP / (KNOWN − scheduled downtime); `None` likewise, or when that denominator is 0.
    pub reliability: Option<f64>,
    /// Scheduled downtime / period.
    pub maintenance: f64,
    /// (period − excluded − KNOWN) / (period − excluded): the time excluded by recomputations
    /// is neither known nor unknown.
    pub unknown_fraction: f64,
    /// Time excluded by applied recomputations (neither up nor known).
    pub excluded_ms: Ms,
}

impl Figures {
    /// UP / KNOWN whatever the unknown fraction: the availability over the time known only,
    /// shown with its coverage (`known_ms`) where the figure over the whole period is n/a
    /// (a new site). `None` when nothing is known.
    pub fn availability_over_known(&self) -> Option<f64> {
        (self.known_ms > 0).then(|| self.up_ms as f64 / self.known_ms as f64)
    }
}

/// Default unknown-fraction threshold above which figures are "n/a".
pub const DEFAULT_UNKNOWN_THRESHOLD: f64 = 0.9;

/// Computes availability, reliability, maintenance and unknown fraction of a timeline.
pub fn figures(timeline: &[Segment], period: &Range<Ms>, unknown_threshold: f64) -> Figures {
    let period_ms = (period.end - period.start).max(0);
    let (mut up, mut unknown, mut sched, mut unsched, mut excluded) = (0, 0, 0, 0, 0);
    for seg in timeline {
        let len = (seg.end.min(period.end) - seg.start.max(period.start)).max(0);
        match seg.status {
            AStatus::Ok | AStatus::Warning => up += len,
            AStatus::Unknown | AStatus::Missing => unknown += len,
            AStatus::Downtime { scheduled: true } => sched += len,
            AStatus::Downtime { scheduled: false } => unsched += len,
            AStatus::Excluded => excluded += len,
            AStatus::Critical => {}
        }
    }
    let counted = period_ms - excluded;
    let known = counted - unknown;
    let unknown_fraction = if counted > 0 {
        unknown as f64 / counted as f64
    } else if excluded > 0 {
        // Wholly excluded: nothing was unknown, and there is no figure (KNOWN is 0).
        0.0
    } else {
        1.0
    };
    let too_unknown = unknown_fraction > unknown_threshold;
    let ratio = |num: Ms, den: Ms| (!too_unknown && den > 0).then(|| num as f64 / den as f64);
    Figures {
        period_ms,
        up_ms: up,
        known_ms: known,
        scheduled_downtime_ms: sched,
        unscheduled_downtime_ms: unsched,
        availability: ratio(up, known),
        reliability: ratio(up, known - sched),
        maintenance: if period_ms > 0 {
            sched as f64 / period_ms as f64
        } else {
            0.0
        },
        unknown_fraction,
        excluded_ms: excluded,
    }
}

/// The status at one moment of a timeline.
pub fn status_at(timeline: &[Segment], t: Ms) -> Option<AStatus> {
    timeline
        .iter()
        .find(|s| s.start <= t && t < s.end)
        .map(|s| s.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Ms = 3_600_000;
    const DAY: Ms = 24 * H;

    fn day() -> Range<Ms> {
        0..DAY
    }

    fn approx(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// The worked example of docs/availability.md: one day, a site with two CEs and one SE,
    /// hourly tests, freshness 2 h 10 min.
    #[test]
    fn worked_example_from_the_docs() {
        let period = day();
        let fresh = 2 * H + 10 * 60_000;
        let hourly = |f: &dyn Fn(Ms) -> Status| -> Vec<(Ms, Status)> {
            (0..24).map(|h| (h * H, f(h))).collect()
        };
        // ce1: CRITICAL from 06:00 to 12:00, OK otherwise.
        let ce1 = metric_timeline(
            &hourly(&|h| {
                if (6..12).contains(&h) {
                    Status::Critical
                } else {
                    Status::Ok
                }
            }),
            fresh,
            &period,
            &[],
        );
        // ce2: OK, but in a scheduled downtime from 08:00 to 14:00.
        let ce2 = metric_timeline(
            &hourly(&|_| Status::Ok),
            fresh,
            &period,
            &[DowntimeSpan {
                span: 8 * H..14 * H,
                scheduled: true,
            }],
        );
        // se1: OK until its probe stops after the 18:00 result; from 20:10 MISSING.
        let se1 = metric_timeline(
            &(0..=18).map(|h| (h * H, Status::Ok)).collect::<Vec<_>>(),
            fresh,
            &period,
            &[],
        );
        let ce = combine(&[ce1.clone(), ce2.clone()], Combine::Or, &period);
        let site = combine(&[ce.clone(), se1.clone()], Combine::And, &period);
        // CE flavour: ce1 down 06-12, ce2 down (scheduled) 08-14: OR is OK except 08-12 where
        // the best of CRITICAL and DOWNTIME is CRITICAL.
        assert_eq!(status_at(&ce, 7 * H), Some(AStatus::Ok));
        assert_eq!(status_at(&ce, 9 * H), Some(AStatus::Critical));
        assert_eq!(status_at(&ce, 13 * H), Some(AStatus::Ok));
        // Site: AND of CE and SE: CRITICAL 08-12, MISSING 20:10-24:00, OK otherwise.
        let f = figures(&site, &period, DEFAULT_UNKNOWN_THRESHOLD);
        let missing = 24 * H - (20 * H + 10 * 60_000);
        assert_eq!(f.up_ms, 24 * H - 4 * H - missing);
        assert_eq!(f.known_ms, 24 * H - missing);
        // availability = 16h10m / 20h10m
        assert!(
            approx(f.availability, (16.0 * 60.0 + 10.0) / (20.0 * 60.0 + 10.0)),
            "{f:?}"
        );
        assert!(approx(
            f.reliability,
            (16.0 * 60.0 + 10.0) / (20.0 * 60.0 + 10.0)
        ));
        // ce2 alone: 6 h scheduled downtime lowers availability, not reliability.
        let f2 = figures(&ce2, &period, DEFAULT_UNKNOWN_THRESHOLD);
        assert!(approx(f2.availability, 18.0 / 24.0), "{f2:?}");
        assert!(approx(f2.reliability, 1.0));
        assert!((f2.maintenance - 0.25).abs() < 1e-9);
    }

    #[test]
    fn metric_missing_for_half_the_period() {
        // One OK result at 00:00 with a 12 h freshness and nothing after: half OK, half MISSING.
        let tl = metric_timeline(&[(0, Status::Ok)], 12 * H, &day(), &[]);
        assert_eq!(
            tl,
            vec![
                Segment {
                    start: 0,
                    end: 12 * H,
                    status: AStatus::Ok
                },
                Segment {
                    start: 12 * H,
                    end: DAY,
                    status: AStatus::Missing
                },
            ]
        );
        let f = figures(&tl, &day(), 0.9);
        assert!(
            approx(f.availability, 1.0),
            "unknown time is excluded: {f:?}"
        );
        assert!((f.unknown_fraction - 0.5).abs() < 1e-9);
    }

    #[test]
    fn result_before_the_period_holds_into_it() {
        // Last result 30 min before the day, freshness 1 h: OK for the first 30 min.
        let tl = metric_timeline(&[(-30 * 60_000, Status::Ok)], H, &day(), &[]);
        assert_eq!(
            tl[0],
            Segment {
                start: 0,
                end: 30 * 60_000,
                status: AStatus::Ok
            }
        );
        assert_eq!(tl[1].status, AStatus::Missing);
    }

    #[test]
    fn two_instances_flapping_out_of_phase_are_always_up() {
        // ce1 OK on even hours, CRITICAL on odd; ce2 the opposite. OR: always OK.
        let fresh = 2 * H;
        let flap = |even_ok: bool| -> Timeline {
            let r: Vec<(Ms, Status)> = (0..24)
                .map(|h| {
                    (
                        h * H,
                        if (h % 2 == 0) == even_ok {
                            Status::Ok
                        } else {
                            Status::Critical
                        },
                    )
                })
                .collect();
            metric_timeline(&r, fresh, &day(), &[])
        };
        let ce = combine(&[flap(true), flap(false)], Combine::Or, &day());
        assert_eq!(
            ce,
            vec![Segment {
                start: 0,
                end: DAY,
                status: AStatus::Ok
            }]
        );
        // AND of the same two: always CRITICAL.
        let both = combine(&[flap(true), flap(false)], Combine::And, &day());
        assert!(approx(figures(&both, &day(), 0.9).availability, 0.0));
    }

    #[test]
    fn overlapping_downtimes_count_once_and_scheduled_wins() {
        // Scheduled 02-06 and unscheduled 04-10 over a CRITICAL day.
        let tl = metric_timeline(
            &(0..24)
                .map(|h| (h * H, Status::Critical))
                .collect::<Vec<_>>(),
            2 * H,
            &day(),
            &[
                DowntimeSpan {
                    span: 2 * H..6 * H,
                    scheduled: true,
                },
                DowntimeSpan {
                    span: 4 * H..10 * H,
                    scheduled: false,
                },
                DowntimeSpan {
                    span: 3 * H..5 * H,
                    scheduled: true,
                },
            ],
        );
        let f = figures(&tl, &day(), 0.9);
        assert_eq!(f.scheduled_downtime_ms, 4 * H, "02-06");
        assert_eq!(f.unscheduled_downtime_ms, 4 * H, "06-10");
        assert!(approx(f.availability, 0.0));
        // reliability denominator: 24 h − 4 h scheduled; still nothing up.
        assert!(approx(f.reliability, 0.0));
        assert!((f.maintenance - 4.0 / 24.0).abs() < 1e-9);
    }

    #[test]
    fn unscheduled_downtime_is_an_outage_for_both_figures() {
        let ok_all_day: Vec<(Ms, Status)> = (0..24).map(|h| (h * H, Status::Ok)).collect();
        let tl = metric_timeline(
            &ok_all_day,
            2 * H,
            &day(),
            &[DowntimeSpan {
                span: 0..6 * H,
                scheduled: false,
            }],
        );
        let f = figures(&tl, &day(), 0.9);
        assert!(approx(f.availability, 0.75));
        assert!(approx(f.reliability, 0.75));
        assert_eq!(
            status_at(&tl, H),
            Some(AStatus::Downtime { scheduled: false }),
            "shown as DOWNTIME"
        );
    }

    #[test]
    fn period_almost_all_unknown_is_not_a_number() {
        // 2 h OK, 22 h MISSING: unknown fraction 0.9167 > 0.9 → n/a.
        let tl = metric_timeline(&[(0, Status::Ok)], 2 * H, &day(), &[]);
        let f = figures(&tl, &day(), 0.9);
        assert_eq!(f.availability, None);
        assert_eq!(f.reliability, None);
        // With a looser threshold the number is shown.
        assert!(approx(figures(&tl, &day(), 0.95).availability, 1.0));
    }

    #[test]
    fn standby_counts_as_unknown_and_warning_as_up() {
        let r = [
            (0, Status::Warning),
            (6 * H, Status::Standby),
            (12 * H, Status::Ok),
            (18 * H, Status::Critical),
        ];
        let tl = metric_timeline(&r, 6 * H, &day(), &[]);
        let f = figures(&tl, &day(), 0.9);
        // UP = 12 h (WARNING + OK), KNOWN = 18 h.
        assert!(approx(f.availability, 12.0 / 18.0), "{f:?}");
    }

    #[test]
    fn and_and_or_follow_the_argo_truth_tables() {
        let p = 0..10;
        let one = |s: AStatus| {
            vec![Segment {
                start: 0,
                end: 10,
                status: s,
            }]
        };
        let dt = AStatus::Downtime { scheduled: true };
        let and = |a, b| combine(&[one(a), one(b)], Combine::And, &p)[0].status;
        let or = |a, b| combine(&[one(a), one(b)], Combine::Or, &p)[0].status;
        assert_eq!(and(AStatus::Critical, dt), AStatus::Critical);
        assert_eq!(and(dt, AStatus::Missing), dt);
        assert_eq!(and(AStatus::Missing, AStatus::Unknown), AStatus::Missing);
        assert_eq!(and(AStatus::Unknown, AStatus::Warning), AStatus::Unknown);
        assert_eq!(and(AStatus::Warning, AStatus::Ok), AStatus::Warning);
        assert_eq!(or(AStatus::Ok, AStatus::Warning), AStatus::Ok);
        assert_eq!(or(AStatus::Warning, AStatus::Critical), AStatus::Warning);
        assert_eq!(or(AStatus::Critical, AStatus::Unknown), AStatus::Critical);
        assert_eq!(or(AStatus::Unknown, dt), AStatus::Unknown);
        assert_eq!(or(dt, AStatus::Missing), dt);
        assert_eq!(combine(&[], Combine::And, &p)[0].status, AStatus::Missing);
    }

    #[test]
    fn excluded_members_are_skipped_and_excluded_time_is_neither_up_nor_known() {
        let p = 0..10;
        let one = |s: AStatus| {
            vec![Segment {
                start: 0,
                end: 10,
                status: s,
            }]
        };
        let x = AStatus::Excluded;
        for op in [Combine::And, Combine::Or] {
            let c = |a, b| combine(&[one(a), one(b)], op, &p)[0].status;
            assert_eq!(c(x, AStatus::Critical), AStatus::Critical, "{op:?}");
            assert_eq!(c(AStatus::Ok, x), AStatus::Ok, "{op:?}");
            assert_eq!(c(x, x), x, "{op:?}");
        }
        // A CRITICAL day with 06-12 excluded and 12-18 forced OK: up 6 h of 18 known.
        let tl = overlay_statuses(
            one(AStatus::Critical)
                .into_iter()
                .map(|s| Segment { end: 24, ..s })
                .collect(),
            &[(6..12, x), (12..18, AStatus::Ok), (10..14, AStatus::Ok)],
            &(0..24),
        );
        assert_eq!(
            status_at(&tl, 11),
            Some(x),
            "exclusion wins where both cover"
        );
        assert_eq!(status_at(&tl, 13), Some(AStatus::Ok));
        let f = figures(&tl, &(0..24), 0.9);
        assert_eq!((f.up_ms, f.known_ms, f.excluded_ms), (6, 18, 6));
        assert_eq!(f.unknown_fraction, 0.0);
        // Wholly excluded: no figure, nothing unknown.
        let f = figures(&one(x), &p, 0.9);
        assert_eq!((f.availability, f.unknown_fraction), (None, 0.0));
    }

    #[test]
    fn results_out_of_the_period_are_ignored_and_boundaries_are_exact() {
        let r = [
            (-5 * H, Status::Critical),
            (-H, Status::Ok),
            (DAY + H, Status::Critical),
        ];
        let tl = metric_timeline(&r, 3 * H, &day(), &[]);
        assert_eq!(
            tl,
            vec![
                Segment {
                    start: 0,
                    end: 2 * H,
                    status: AStatus::Ok
                },
                Segment {
                    start: 2 * H,
                    end: DAY,
                    status: AStatus::Missing
                },
            ]
        );
    }

    mod properties {
        use super::*;
        use crate::store::runs_of;
        use proptest::prelude::*;

        const STATUSES: [Status; 5] = [
            Status::Ok,
            Status::Warning,
            Status::Critical,
            Status::Unknown,
            Status::Standby,
        ];

        /// Results at increasing times over about 30 days, with random gaps (some longer than
        /// the freshness window, so MISSING appears) and statuses that tend to persist.
        fn results() -> impl Strategy<Value = Vec<(Ms, Status)>> {
            prop::collection::vec((1..(6 * H), 0..STATUSES.len(), any::<bool>()), 0..120).prop_map(
                |steps| {
                    let mut t = -H;
                    let mut status = 0;
                    let mut out = Vec::new();
                    for (gap, s, change) in steps {
                        t += gap;
                        if change {
                            status = s;
                        }
                        out.push((t, STATUSES[status]));
                    }
                    out
                },
            )
        }

        fn downtimes() -> impl Strategy<Value = Vec<DowntimeSpan>> {
            prop::collection::vec((0..(30 * DAY), 1..(3 * DAY), any::<bool>()), 0..4).prop_map(
                |v| {
                    v.into_iter()
                        .map(|(start, len, scheduled)| DowntimeSpan {
                            span: start..start + len,
                            scheduled,
                        })
                        .collect()
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// Availability and reliability are fractions, and reliability (which does not
            /// count scheduled downtime against the site) is never below availability.
            #[test]
            fn figures_are_fractions_and_reliability_is_at_least_availability(
                a in results(), b in results(), dts in downtimes(), fresh in (1..(8 * H)),
            ) {
                let period = 0..30 * DAY;
                let ta = metric_timeline(&a, fresh, &period, &dts);
                let tb = metric_timeline(&b, fresh, &period, &dts);
                for tl in [combine(&[ta.clone(), tb.clone()], Combine::And, &period),
                           combine(&[ta, tb], Combine::Or, &period)] {
                    let f = figures(&tl, &period, 1.0);
                    if let Some(av) = f.availability {
                        prop_assert!((0.0..=1.0).contains(&av), "{f:?}");
                    }
                    if let Some(rel) = f.reliability {
                        prop_assert!((0.0..=1.0).contains(&rel), "{f:?}");
                        prop_assert!(rel + 1e-12 >= f.availability.unwrap_or(0.0), "{f:?}");
                    }
                }
            }

            /// A month's figure equals its days' figures weighted by their known time.
            #[test]
            fn days_weighted_by_known_time_give_the_month(
                a in results(), dts in downtimes(), fresh in (1..(8 * H)),
            ) {
                let month = 0..30 * DAY;
                let whole = figures(&metric_timeline(&a, fresh, &month, &dts), &month, 1.0);
                let (mut up, mut known) = (0, 0);
                for d in 0..30 {
                    let day = d * DAY..(d + 1) * DAY;
                    let f = figures(&metric_timeline(&a, fresh, &day, &dts), &day, 1.0);
                    up += f.up_ms;
                    known += f.known_ms;
                    if let Some(av) = f.availability {
                        prop_assert!((av * f.known_ms as f64 - f.up_ms as f64).abs() < 1e-3);
                    }
                }
                prop_assert_eq!(up, whole.up_ms);
                prop_assert_eq!(known, whole.known_ms);
                if known > 0 {
                    let weighted = up as f64 / known as f64;
                    prop_assert!((weighted - whole.availability.unwrap_or(-1.0)).abs() < 1e-12);
                }
            }

            /// Runs of equal results merged up to the freshness window give the very same
            /// timeline as the results themselves (what makes month reports cheap).
            #[test]
            fn runs_give_the_same_timeline_as_their_results(
                a in results(), dts in downtimes(), fresh in (1..(8 * H)), gap_part in 0..=100i64,
            ) {
                let period = 0..30 * DAY;
                let merge_gap = fresh * gap_part / 100;
                let runs = runs_of(&a, merge_gap);
                prop_assert!(runs.len() <= a.len());
                prop_assert_eq!(
                    metric_timeline_runs(&runs, fresh, &period, &dts),
                    metric_timeline(&a, fresh, &period, &dts)
                );
            }
        }
    }
}
