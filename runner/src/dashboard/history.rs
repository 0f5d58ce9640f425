//! A cell's long history on its result page: 30- and 90-day strips (the cell's timeline as the
//! availability computation sees it) and plots of the duration and of each perfdata value over
//! the 90 days, downsampled to at most [`PLOT_POINTS`] points per series.

use gridprobe_results::availability::metric_timeline_runs;
use maud::{html, Markup};

use super::*;

/// The longest history shown.
const LONG_DAYS: i64 = 90;
/// Results read at most for the plots (the newest); older ones in the 90 days are left out.
pub(super) const PLOT_RESULTS: usize = 5_000;
/// Points per plotted series at most: each is the mean of the results in its time bucket.
pub(super) const PLOT_POINTS: usize = 240;
/// Perfdata labels plotted at most (in the order the newest result gives them).
const MAX_SERIES: usize = 8;

/// One plotted series: name, unit, points `(time, value)`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    pub(super) name: String,
    pub(super) unit: String,
    pub(super) points: Vec<(i64, f64)>,
}

/// What the result page shows of the cell's long history.
#[derive(Debug, Default)]
pub(super) struct History {
    /// `(days, segments)` for 30 and 90 days.
    pub(super) strips: Vec<(i64, Vec<Segment>)>,
    pub(super) start_ms: i64,
    pub(super) end_ms: i64,
    pub(super) series: Vec<Series>,
    /// Results behind the plots, and whether older ones were left out.
    pub(super) plotted_results: usize,
    pub(super) truncated: bool,
}

/// Means of `(time, value)` points in `buckets` equal time buckets over `[start, end)`, each at
/// its bucket's mean time: a bounded number of points whatever the history holds.
pub(super) fn downsample(
    points: &[(i64, f64)],
    start: i64,
    end: i64,
    buckets: usize,
) -> Vec<(i64, f64)> {
    let span = (end - start).max(1);
    let n = buckets.max(1);
    let mut acc: Vec<(i128, f64, u32)> = vec![(0, 0.0, 0); n];
    for &(t, v) in points {
        if t < start || t >= end || !v.is_finite() {
            continue;
        }
        let i = usize::try_from(i128::from(t - start) * n as i128 / i128::from(span))
            .unwrap_or(0)
            .min(n - 1);
        acc[i].0 += i128::from(t);
        acc[i].1 += v;
        acc[i].2 += 1;
    }
    acc.into_iter()
        .filter(|a| a.2 > 0)
        .map(|(ts, vs, c)| {
            (
                i64::try_from(ts / i128::from(c)).unwrap_or(start),
                vs / f64::from(c),
            )
        })
        .collect()
}

/// Builds the history of the cell of `r` up to `now`.
pub(super) async fn build_history(
    state: &HttpState,
    config: &Config,
    r: &gridprobe_probes::ProbeResult,
    now: i64,
) -> Result<History, PageError> {
    let start = now - LONG_DAYS * DAY_MS;
    let key = CellKey::of(r);
    let freshness = config
        .instances()
        .iter()
        .find(|i| {
            let (site, probe) = (&config.sites[i.site], &config.probes[i.probe]);
            let svc = &site.services[i.service];
            site.name == r.site
                && svc.hostname == r.hostname
                && svc.flavour == r.flavour
                && probe.metric == r.metric
        })
        .map(|i| i64::try_from(i.freshness.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(DAY_MS);
    let filter = CellFilter {
        vo: None,
        site: Some(r.site.clone()),
        flavour: Some(r.flavour.clone()),
    };
    let runs = state
        .store
        .run_timelines(start, now, &filter, freshness)
        .await?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, runs)| runs)
        .unwrap_or_default();
    let downtimes = downtimes_between(state.store.as_ref(), config, start, now).await?;
    let spans: Vec<DowntimeSpan> = downtimes
        .iter()
        .filter(|d| d.outage && d.covers(&r.site, &r.hostname, &r.flavour))
        .map(|d| DowntimeSpan {
            span: d.start_ms..d.end_ms,
            scheduled: d.scheduled,
        })
        .collect();
    let strips = [30, LONG_DAYS]
        .into_iter()
        .map(|days| {
            let range = (now - days * DAY_MS)..now;
            (days, metric_timeline_runs(&runs, freshness, &range, &spans))
        })
        .collect();

    let rows = state
        .store
        .history(&HistoryQuery {
            site: Some(r.site.clone()),
            hostname: Some(r.hostname.clone()),
            metric: Some(r.metric.clone()),
            since_ms: Some(start),
            limit: PLOT_RESULTS,
            ..HistoryQuery::default()
        })
        .await?;
    let rows: Vec<&StoredResult> = rows
        .iter()
        .filter(|x| x.result.flavour == r.flavour)
        .collect();
    let mut series = vec![Series {
        name: "duration".into(),
        unit: "ms".into(),
        points: rows
            .iter()
            .map(|x| (x.result.started_at_ms, x.result.duration_ms as f64))
            .collect(),
    }];
    // Labels in the order the newest result gives them; older labels after.
    for x in &rows {
        for d in &x.result.outcome.perfdata {
            let at = x.result.started_at_ms;
            // Index 0 is the duration; a perfdata label named "duration" gets its own series.
            match series.iter().skip(1).position(|s| s.name == d.label) {
                Some(i) => series[i + 1].points.push((at, d.value)),
                None if series.len() <= MAX_SERIES => series.push(Series {
                    name: d.label.clone(),
                    unit: d.uom.clone(),
                    points: vec![(at, d.value)],
                }),
                None => {}
            }
        }
    }
    for s in &mut series {
        s.points = downsample(&s.points, start, now, PLOT_POINTS);
    }
    series.retain(|s| !s.points.is_empty());
    Ok(History {
        strips,
        start_ms: start,
        end_ms: now,
        series,
        plotted_results: rows.len(),
        truncated: rows.len() >= PLOT_RESULTS,
    })
}

/// A strip over `days` days in a 1000-unit coordinate system.
fn strip(days: i64, segments: &[Segment], start: i64, end: i64) -> Markup {
    let span = (end - start).max(1) as f64;
    html! {
        svg.strip viewBox="0 0 1000 10" preserveAspectRatio="none" role="img"
            aria-label={ "the last " (days) " days" } data-days=(days) {
            @for seg in segments {
                @let x = (seg.start - start) as f64 / span * 1000.0;
                @let w = ((seg.end - seg.start) as f64 / span * 1000.0).max(0.3);
                rect class=(segment_class(seg.status)) x=(format!("{x:.2}")) y="0" width=(format!("{w:.2}")) height="10" {
                    title { (seg.status.name()) " " (utc(seg.start)) " – " (utc(seg.end)) }
                }
            }
        }
    }
}

/// `1234.5` → `1234.5`, `0.000123` → `1.23e-4`: short axis labels.
fn short_number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 0.01 || v.abs() >= 1e7) {
        format!("{v:.2e}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A line plot of one series over `[start, end)`, with its range as labels.
fn plot(s: &Series, start: i64, end: i64) -> Markup {
    const W: f64 = 1000.0;
    const H: f64 = 120.0;
    let (lo, hi) = s
        .points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let span = (end - start).max(1) as f64;
    let points: Vec<String> = s
        .points
        .iter()
        .map(|&(t, v)| {
            let x = (t - start) as f64 / span * W;
            let y = H - (v - lo) / (hi - lo) * (H - 10.0) - 5.0;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    html! {
        figure.plot data-series=(s.name) {
            figcaption {
                (s.name) @if !s.unit.is_empty() { " (" (s.unit) ")" }
                span.muted { " · " (s.points.len()) " points, from " (short_number(lo)) " to " (short_number(hi)) }
            }
            svg.plot viewBox="0 0 1000 120" preserveAspectRatio="none" role="img"
                aria-label={ (s.name) " over the last " (LONG_DAYS) " days" } {
                rect.plot-bg x="0" y="0" width="1000" height="120" {}
                polyline.plot-line points=(points.join(" ")) fill="none" stroke="#0969da" stroke-width="1.5"
                    vector-effect="non-scaling-stroke" {}
                @if s.points.len() == 1 {
                    @let (x, y) = points.first().and_then(|p| p.split_once(',')).unwrap_or(("0", "60"));
                    circle cx=(x) cy=(y) r="3" fill="#0969da" {}
                }
            }
        }
    }
}

/// The history sections of the result page.
pub(super) fn render(h: &History) -> Markup {
    html! {
        h2 { "History of this cell" }
        div.scroll.wide {
            table.plain.strips {
                tbody {
                    @for (days, segments) in &h.strips {
                        tr data-days=(days) {
                            td { "Last " (days) " days" }
                            td.strip { (strip(*days, segments, h.end_ms - days * DAY_MS, h.end_ms)) }
                        }
                    }
                }
            }
        }
        p.note { "As the availability computation sees the cell: each result holds until the next or until its freshness runs out (then MISSING); outages are DOWNTIME." }
        h3 { "Over the last " (LONG_DAYS) " days" }
        @if h.series.is_empty() {
            p.muted { "No results in the last " (LONG_DAYS) " days." }
        } @else {
            p.note {
                (h.plotted_results) " results, each series averaged into at most " (PLOT_POINTS) " points, "
                (utc(h.start_ms)) " to " (utc(h.end_ms)) "."
                @if h.truncated { " Only the newest " (PLOT_RESULTS) " results are plotted." }
            }
            div.plots { @for s in &h.series { (plot(s, h.start_ms, h.end_ms)) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_bounds_the_points_and_keeps_the_means() {
        let points: Vec<(i64, f64)> = (0..10_000).map(|i| (i, (i % 2) as f64)).collect();
        let d = downsample(&points, 0, 10_000, 100);
        assert_eq!(d.len(), 100);
        assert!(d.iter().all(|p| (p.1 - 0.5).abs() < 1e-9), "{d:?}");
        assert_eq!(d[0].0, 49);
        // Points outside the range or not finite are left out; empty buckets give no point.
        let d = downsample(&[(-5, 1.0), (5, f64::NAN), (50, 2.0)], 0, 100, 10);
        assert_eq!(d, vec![(50, 2.0)]);
        assert_eq!(short_number(0.000123), "1.23e-4");
        assert_eq!(short_number(1234.5), "1234.5");
        assert_eq!(short_number(2.0), "2");
    }
}
