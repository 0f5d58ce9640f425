//! The problems view for shifters: only what is not OK now, with since when, whether it is
//! acknowledged, in a downtime or flapping, sorted by tier then age (oldest first). Shared by
//! `gridprobe problems`, `/api/v1/problems` and the dashboard's problems page.

use gridprobe_config::Config;
use gridprobe_probes::Status;
use gridprobe_results::{CellFilter, CellKey, HistoryQuery, ResultStore, StoreError};
use serde::{Deserialize, Serialize};

use super::acks::Ack;

/// One cell that is not OK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Site.
    pub site: String,
    /// Its tier.
    pub tier: u8,
    /// Service host name.
    pub hostname: String,
    /// Service flavour.
    pub flavour: String,
    /// Metric.
    pub metric: String,
    /// `WARNING`, `CRITICAL` or `UNKNOWN`.
    pub status: String,
    /// The latest summary.
    pub summary: String,
    /// Since when the cell has had this status (ms; as far as the history looked back).
    pub since_ms: i64,
    /// The acknowledgement's comment and author, if acknowledged.
    pub ack: Option<String>,
    /// Whether a downtime covers it now.
    pub downtime: bool,
    /// Whether it flaps.
    pub flapping: bool,
}

/// How far back "since" is looked for.
const SINCE_LOOKBACK: usize = 500;

/// Builds the problems view from the store's latest results.
pub async fn problems(
    config: &Config,
    store: &dyn ResultStore,
    acks: &[Ack],
    flapping: &[CellKey],
    now_ms: i64,
) -> Result<Vec<Problem>, StoreError> {
    let latest = store.latest(&CellFilter::default()).await?;
    let stored_downtimes = store
        .downtimes(now_ms.saturating_sub(1), now_ms.saturating_add(1))
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in latest {
        let res = &r.result;
        let status = res.outcome.status;
        if matches!(status, Status::Ok | Status::Standby) {
            continue;
        }
        let Some(site) = config.sites.iter().find(|s| s.name == res.site) else {
            continue;
        };
        // Since: back through the cell's history to the first result of this status.
        let history = store
            .history(&HistoryQuery {
                site: Some(res.site.clone()),
                hostname: Some(res.hostname.clone()),
                metric: Some(res.metric.clone()),
                limit: SINCE_LOOKBACK,
                ..HistoryQuery::default()
            })
            .await?;
        let since_ms = history
            .iter()
            .take_while(|h| h.result.outcome.status == status)
            .last()
            .map_or(res.started_at_ms, |h| h.result.started_at_ms);
        let cell = CellKey::of(res);
        let ack = acks
            .iter()
            .find(|a| a.active(now_ms) && a.covers(&cell))
            .map(|a| format!("{} ({})", a.comment, a.author));
        let downtime = config
            .downtimes
            .iter()
            .chain(stored_downtimes.iter())
            .any(|d| {
                d.start_ms <= now_ms
                    && now_ms < d.end_ms
                    && d.covers(&res.site, &res.hostname, &res.flavour)
            });
        out.push(Problem {
            site: res.site.clone(),
            tier: site.tier,
            hostname: res.hostname.clone(),
            flavour: res.flavour.clone(),
            metric: res.metric.clone(),
            status: status.name().to_string(),
            summary: res.outcome.summary.clone(),
            since_ms,
            ack,
            downtime,
            flapping: flapping.contains(&cell),
        });
    }
    out.sort_by(|a, b| {
        (a.tier, a.since_ms, &a.site, &a.hostname, &a.metric).cmp(&(
            b.tier,
            b.since_ms,
            &b.site,
            &b.hostname,
            &b.metric,
        ))
    });
    Ok(out)
}
