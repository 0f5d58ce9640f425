//! Trends over a period, from the store's runs of equal results ([`StatusRun`]): the cells
//! that flap most (status changes), the longest CRITICAL and the longest UNKNOWN stretches, and
//! the same per site and per metric. `gridprobe trends`, `/api/v1/trends` and the dashboard's
//! `/trends` all call [`from_store`].
//!
//! A stretch is the time a cell kept one status: from its first result with that status until
//! the next result with another status, or until the last one's freshness window ran out (the
//! cell was then MISSING, which ends the stretch too), clipped to the period.

use std::collections::{BTreeMap, HashMap};

use gridprobe_config::Config;
use gridprobe_probes::Status;
use serde::Serialize;

use crate::availability::Ms;
use crate::report::{merge_gap_ms, Period};
use crate::store::{CellFilter, CellKey, CellRuns, ResultStore, StatusRun, StoreError};

/// The most entries each list holds when no limit is asked for.
pub const DEFAULT_LIMIT: usize = 10;
/// The largest limit accepted.
pub const MAX_LIMIT: usize = 1000;

/// A stretch of one status, inside the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stretch {
    /// Start (ms), at or after the period's start.
    pub start_ms: Ms,
    /// End (ms), at or before the period's end.
    pub end_ms: Ms,
    /// `end_ms - start_ms`.
    pub duration_ms: Ms,
    /// Still in that status at the end of the period.
    pub ongoing: bool,
}

/// One cell's trend figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellTrend {
    /// The cell.
    #[serde(flatten)]
    pub cell: CellKey,
    /// Status changes in the period (a result whose status differs from the one before).
    pub changes: usize,
    /// Its longest CRITICAL stretch.
    pub longest_critical: Option<Stretch>,
    /// Its longest UNKNOWN stretch.
    pub longest_unknown: Option<Stretch>,
}

/// A site's or a metric's figures over its cells.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupTrend {
    /// Site or metric name.
    pub name: String,
    /// Cells with results.
    pub cells: usize,
    /// Status changes over all of them.
    pub changes: usize,
    /// Longest CRITICAL stretch of any of them (ms; 0 when none).
    pub longest_critical_ms: Ms,
    /// Longest UNKNOWN stretch of any of them (ms; 0 when none).
    pub longest_unknown_ms: Ms,
}

/// Trends over a period.
#[derive(Debug, Clone, Serialize)]
pub struct Trends {
    /// The period.
    pub period: Period,
    /// Cells with results in or before the period.
    pub cells: usize,
    /// The most flapping cells, most changes first (only cells that changed).
    pub flapping: Vec<CellTrend>,
    /// The longest CRITICAL stretches, longest first.
    pub longest_critical: Vec<CellTrend>,
    /// The longest UNKNOWN stretches, longest first.
    pub longest_unknown: Vec<CellTrend>,
    /// Per site, most changes first.
    pub by_site: Vec<GroupTrend>,
    /// Per metric, most changes first.
    pub by_metric: Vec<GroupTrend>,
}

/// One cell's figures from its runs (oldest first, led by the last one before the period).
pub fn cell_trend(cell: CellKey, runs: &[StatusRun], freshness: Ms, period: &Period) -> CellTrend {
    let mut changes = 0;
    let mut previous: Option<Status> = None;
    for r in runs {
        if let Some(p) = previous {
            if p != r.status && r.start >= period.start_ms && r.start < period.end_ms {
                changes += 1;
            }
        }
        previous = Some(r.status);
    }
    let mut longest: HashMap<Status, Stretch> = HashMap::new();
    let mut close = |status: Status, start: Ms, end: Ms| {
        let (s, e) = (start.max(period.start_ms), end.min(period.end_ms));
        if e <= s {
            return;
        }
        let stretch = Stretch {
            start_ms: s,
            end_ms: e,
            duration_ms: e - s,
            ongoing: end >= period.end_ms,
        };
        let best = longest.entry(status).or_insert(stretch);
        if stretch.duration_ms > best.duration_ms {
            *best = stretch;
        }
    };
    // The current stretch: status, start, and until when its last result holds.
    let mut current: Option<(Status, Ms, Ms)> = None;
    for r in runs {
        let holds_until = r.last.saturating_add(freshness);
        current = match current {
            Some((status, start, until)) if status == r.status && r.start <= until => {
                Some((status, start, holds_until))
            }
            Some((status, start, until)) => {
                close(status, start, until.min(r.start));
                Some((r.status, r.start, holds_until))
            }
            None => Some((r.status, r.start, holds_until)),
        };
    }
    if let Some((status, start, until)) = current {
        close(status, start, until);
    }
    CellTrend {
        cell,
        changes,
        longest_critical: longest.get(&Status::Critical).copied(),
        longest_unknown: longest.get(&Status::Unknown).copied(),
    }
}

/// Trends of every cell, with the lists cut to `limit` entries.
pub fn compute(
    cells: &[CellRuns],
    freshness: &dyn Fn(&CellKey) -> Ms,
    period: &Period,
    limit: usize,
) -> Trends {
    let all: Vec<CellTrend> = cells
        .iter()
        .filter(|(_, runs)| !runs.is_empty())
        .map(|(key, runs)| cell_trend(key.clone(), runs, freshness(key), period))
        .collect();
    let top = |score: &dyn Fn(&CellTrend) -> Ms| {
        let mut v: Vec<&CellTrend> = all.iter().filter(|c| score(c) > 0).collect();
        // Highest first; ties in cell order, so the answer is stable.
        v.sort_by(|a, b| score(b).cmp(&score(a)).then_with(|| a.cell.cmp(&b.cell)));
        v.into_iter().take(limit).cloned().collect::<Vec<_>>()
    };
    let critical = |c: &CellTrend| c.longest_critical.map_or(0, |s| s.duration_ms);
    let unknown = |c: &CellTrend| c.longest_unknown.map_or(0, |s| s.duration_ms);
    let group = |name: &dyn Fn(&CellKey) -> &str| {
        let mut by: BTreeMap<String, GroupTrend> = BTreeMap::new();
        for c in &all {
            let n = name(&c.cell);
            let g = by.entry(n.to_string()).or_insert_with(|| GroupTrend {
                name: n.to_string(),
                cells: 0,
                changes: 0,
                longest_critical_ms: 0,
                longest_unknown_ms: 0,
            });
            g.cells += 1;
            g.changes += c.changes;
            g.longest_critical_ms = g.longest_critical_ms.max(critical(c));
            g.longest_unknown_ms = g.longest_unknown_ms.max(unknown(c));
        }
        let mut v: Vec<GroupTrend> = by.into_values().collect();
        v.sort_by(|a, b| {
            (b.changes, b.longest_critical_ms)
                .cmp(&(a.changes, a.longest_critical_ms))
                .then_with(|| a.name.cmp(&b.name))
        });
        v.truncate(limit);
        v
    };
    Trends {
        period: period.clone(),
        cells: all.len(),
        flapping: top(&|c: &CellTrend| i64::try_from(c.changes).unwrap_or(i64::MAX)),
        longest_critical: top(&critical),
        longest_unknown: top(&unknown),
        by_site: group(&|k: &CellKey| k.site.as_str()),
        by_metric: group(&|k: &CellKey| k.metric.as_str()),
    }
}

/// Trends from a store: the runs of the period (as the reports read them) and each cell's
/// freshness window from the configuration (a cell no longer configured: the smallest one).
pub async fn from_store(
    store: &dyn ResultStore,
    config: &Config,
    period: &Period,
    filter: &CellFilter,
    limit: usize,
) -> Result<Trends, StoreError> {
    let gap = merge_gap_ms(config);
    let cells = store
        .run_timelines(period.start_ms, period.end_ms, filter, gap)
        .await?;
    let mut windows: HashMap<CellKey, Ms> = HashMap::new();
    for i in config.instances() {
        let (Some(site), Some(probe)) = (config.sites.get(i.site), config.probes.get(i.probe))
        else {
            continue;
        };
        let Some(svc) = site.services.get(i.service) else {
            continue;
        };
        windows.insert(
            CellKey {
                site: site.name.clone(),
                hostname: svc.hostname.clone(),
                flavour: svc.flavour.clone(),
                metric: probe.metric.clone(),
            },
            i64::try_from(i.freshness.as_millis()).unwrap_or(i64::MAX),
        );
    }
    let fallback = if gap > 0 { gap } else { Ms::MAX / 4 };
    let freshness = |k: &CellKey| windows.get(k).copied().unwrap_or(fallback);
    Ok(compute(&cells, &freshness, period, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::runs_of;

    const H: Ms = 3_600_000;

    fn key(site: &str, metric: &str) -> CellKey {
        CellKey {
            site: site.into(),
            hostname: format!("h.{site}"),
            flavour: "CE".into(),
            metric: metric.into(),
        }
    }

    fn period(hours: i64) -> Period {
        Period {
            start_ms: 0,
            end_ms: hours * H,
            label: format!("{hours}h"),
        }
    }

    #[test]
    fn changes_count_status_flips_inside_the_period() {
        use Status::*;
        // Before the period: CRITICAL; then OK, CRITICAL, CRITICAL, OK, WARNING hourly.
        let points = vec![
            (-H, Critical),
            (0, Ok),
            (H, Critical),
            (2 * H, Critical),
            (3 * H, Ok),
            (4 * H, Warning),
        ];
        let t = cell_trend(key("A", "m"), &runs_of(&points, H), 2 * H, &period(6));
        // CRITICAL→OK at 0, OK→CRITICAL, CRITICAL→OK, OK→WARNING.
        assert_eq!(t.changes, 4);
        let c = t.longest_critical.expect("critical");
        // The stretch from before the period is clipped to [0, 0): empty; the longest is 1h–3h.
        assert_eq!((c.start_ms, c.end_ms, c.duration_ms), (H, 3 * H, 2 * H));
        assert!(!c.ongoing);
        assert_eq!(t.longest_unknown, None);
    }

    #[test]
    fn a_stretch_ends_when_the_freshness_runs_out_and_can_be_ongoing() {
        use Status::*;
        // UNKNOWN at 0 and 1h, then nothing until 10h (MISSING between), UNKNOWN to the end.
        let points = vec![
            (0, Unknown),
            (H, Unknown),
            (10 * H, Unknown),
            (11 * H, Unknown),
        ];
        let t = cell_trend(key("A", "m"), &runs_of(&points, H), 2 * H, &period(12));
        assert_eq!(t.changes, 0);
        let u = t.longest_unknown.expect("unknown");
        // 0–3h (1h + the 2h window), then 10h–12h ongoing: the first is longer.
        assert_eq!((u.start_ms, u.end_ms), (0, 3 * H));
        assert!(!u.ongoing);
        let t = cell_trend(key("A", "m"), &runs_of(&points[2..], 0), 2 * H, &period(12));
        let u = t.longest_unknown.expect("unknown");
        assert_eq!((u.start_ms, u.end_ms), (10 * H, 12 * H));
        assert!(u.ongoing);
    }

    #[test]
    fn lists_are_ranked_cut_and_grouped_per_site_and_metric() {
        use Status::*;
        let flappy: Vec<(Ms, Status)> = (0..10)
            .map(|h| (h * H, if h % 2 == 0 { Ok } else { Critical }))
            .collect();
        let steady: Vec<(Ms, Status)> = (0..10).map(|h| (h * H, Critical)).collect();
        let calm: Vec<(Ms, Status)> = (0..10).map(|h| (h * H, Ok)).collect();
        let cells = vec![
            (key("A", "m1"), runs_of(&flappy, 0)),
            (key("B", "m1"), runs_of(&steady, 0)),
            (key("B", "m2"), runs_of(&calm, 0)),
        ];
        let t = compute(&cells, &|_| 2 * H, &period(10), 1);
        assert_eq!(t.cells, 3);
        assert_eq!(t.flapping.len(), 1);
        assert_eq!(t.flapping[0].cell.site, "A");
        assert_eq!(t.flapping[0].changes, 9);
        assert_eq!(t.longest_critical[0].cell.site, "B");
        assert_eq!(
            t.longest_critical[0]
                .longest_critical
                .map(|s| s.duration_ms),
            Some(10 * H)
        );
        assert!(t.longest_unknown.is_empty());
        assert_eq!(t.by_site.len(), 1);
        assert_eq!(t.by_site[0].name, "A");
        let t = compute(&cells, &|_| 2 * H, &period(10), 10);
        let b = t.by_site.iter().find(|g| g.name == "B").expect("B");
        assert_eq!((b.cells, b.changes, b.longest_critical_ms), (2, 0, 10 * H));
        let m1 = t.by_metric.iter().find(|g| g.name == "m1").expect("m1");
        assert_eq!((m1.cells, m1.changes), (2, 9));
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["flapping"][0]["site"], "A");
        assert_eq!(json["flapping"][0]["metric"], "m1");
    }
}
