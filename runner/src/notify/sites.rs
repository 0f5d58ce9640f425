//! Site status changes (good → degraded → failed and back), for rules with
//! `site_status = true`: the same 24-hour report the dashboard and `/metrics` use, computed
//! every [`SITE_STATUS_EVERY`]; a change between good, degraded and failed is an event of the
//! site (maintenance, inactive and new sites are not judged).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gridprobe_config::Config;
use gridprobe_probes::Status;
use gridprobe_results::availability::DEFAULT_UNKNOWN_THRESHOLD;
use gridprobe_results::report::{compute, default_thresholds, site_status, Period, SiteStatus};
use gridprobe_results::{CellFilter, CellKey, ResultStore};

use super::state::{Event, EventKind};

/// How often site statuses are computed.
pub const SITE_STATUS_EVERY: Duration = Duration::from_secs(300);
const DAY_MS: i64 = 86_400_000;

/// The metric name of a site-level item.
pub const SITE_ITEM: &str = "site status";

/// Each site's 24-hour status now.
pub async fn statuses(
    store: &dyn ResultStore,
    config: &Arc<Config>,
    now: i64,
) -> Result<HashMap<String, SiteStatus>, String> {
    let period = Period {
        start_ms: now.saturating_sub(DAY_MS),
        end_ms: now,
        label: "24h".into(),
    };
    let cells = store
        .timelines(period.start_ms, period.end_ms, &CellFilter::default())
        .await
        .map_err(|e| e.to_string())?;
    let downtimes = store
        .downtimes(period.start_ms, period.end_ms)
        .await
        .map_err(|e| e.to_string())?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let report = compute(
            &config,
            None,
            &period,
            &cells,
            &downtimes,
            DEFAULT_UNKNOWN_THRESHOLD,
        )?;
        Ok(report
            .sites
            .iter()
            .map(|s| (s.site.clone(), site_status(s, default_thresholds(s.tier))))
            .collect())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn judged(s: SiteStatus) -> Option<Status> {
    match s {
        SiteStatus::Good => Some(Status::Ok),
        SiteStatus::Degraded => Some(Status::Warning),
        SiteStatus::Failed => Some(Status::Critical),
        _ => None,
    }
}

/// The events of the changes from `before` to `now`, for the rules (index, wants site status,
/// covers the site) of each site.
pub fn changes(
    before: &HashMap<String, SiteStatus>,
    now: &HashMap<String, SiteStatus>,
    rules_for: &dyn Fn(&str) -> Vec<usize>,
    at_ms: i64,
) -> Vec<Event> {
    let mut out = Vec::new();
    let mut sites: Vec<&String> = now.keys().collect();
    sites.sort();
    for site in sites {
        let (Some(old), Some(new)) = (before.get(site), now.get(site)) else {
            continue;
        };
        let (Some(_), Some(status)) = (judged(*old), judged(*new)) else {
            continue;
        };
        if old == new {
            continue;
        }
        for rule in rules_for(site) {
            out.push(Event {
                rule,
                cell: CellKey {
                    site: site.clone(),
                    hostname: String::new(),
                    flavour: String::new(),
                    metric: SITE_ITEM.into(),
                },
                kind: EventKind::SiteStatus,
                status,
                summary: format!("site status {} → {}", old.name(), new.name()),
                since_ms: at_ms,
                at_ms,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_between_good_degraded_and_failed_are_told() {
        let m = |v: &[(&str, SiteStatus)]| {
            v.iter()
                .map(|(k, s)| (k.to_string(), *s))
                .collect::<HashMap<_, _>>()
        };
        let before = m(&[
            ("A", SiteStatus::Good),
            ("B", SiteStatus::Degraded),
            ("C", SiteStatus::Maintenance),
            ("D", SiteStatus::Good),
        ]);
        let now = m(&[
            ("A", SiteStatus::Degraded),
            ("B", SiteStatus::Degraded),
            ("C", SiteStatus::Failed),
            ("D", SiteStatus::Failed),
            ("E", SiteStatus::Failed),
        ]);
        let ev = changes(&before, &now, &|_| vec![0], 5);
        let got: Vec<_> = ev
            .iter()
            .map(|e| (e.cell.site.as_str(), e.status, e.summary.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A", Status::Warning, "site status good → degraded"),
                ("D", Status::Critical, "site status good → failed"),
            ]
        );
    }
}
