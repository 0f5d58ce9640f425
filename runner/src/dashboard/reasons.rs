//! `/reasons`.

use super::*;

/// Everything `/reasons` shows.
#[derive(Debug)]
pub(super) struct ReasonsPage {
    pub(super) since: String,
    pub(super) reasons: Vec<Reason>,
    /// Whether the failures read hit [`REASONS_LIMIT`] (older ones were left out).
    pub(super) truncated: bool,
    /// Full metric → short name.
    pub(super) shorts: HashMap<String, String>,
}

pub(super) async fn reasons_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let result = async {
        let params = query_params(query, &["since"])?;
        let since = params.get("since").cloned().unwrap_or_else(|| "24h".into());
        let d = gridprobe_config::parse_duration(&since)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                PageError::bad(
                    "since",
                    format!("`{since}` is not a duration back from now: write e.g. 30m, 24h or 7d"),
                )
            })?;
        let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let failures = state
            .store
            .history(&HistoryQuery {
                since_ms: Some(now_ms().saturating_sub(back)),
                non_ok_only: true,
                limit: REASONS_LIMIT,
                ..HistoryQuery::default()
            })
            .await?;
        let page = ReasonsPage {
            since,
            truncated: failures.len() >= REASONS_LIMIT,
            reasons: group(&failures),
            shorts: config
                .probes
                .iter()
                .map(|p| (p.metric.clone(), p.short.clone()))
                .collect(),
        };
        Ok(("Failure reasons".to_string(), render::reasons(&page)))
    }
    .await;
    Page::new(&state, started, result)
}

/// Figures of a report row, for the site page: availability, reliability, maintenance,
/// unknown.
/// Where a ratio is n/a because most of the period is unknown (a new site), the ratio over the
/// time known is shown with that time instead.
pub(super) fn figure_cells(f: &Figures) -> [String; 4] {
    let known_up = f.known_ms - f.scheduled_downtime_ms;
    let reliability_over_known = (known_up > 0).then(|| f.up_ms as f64 / known_up as f64);
    [
        match f.availability {
            Some(_) => pct(f.availability),
            None => pct_over(f.availability_over_known(), f.known_ms),
        },
        match f.reliability {
            Some(_) => pct(f.reliability),
            None => pct_over(reliability_over_known, known_up),
        },
        pct(Some(f.maintenance)),
        pct(Some(f.unknown_fraction)),
    ]
}
