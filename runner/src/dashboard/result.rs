//! `/results/{id}`.

use super::*;

/// Everything a result page shows.
#[derive(Debug)]
pub(super) struct ResultPage {
    pub(super) result: StoredResult,
    /// Short name when the probe is still configured.
    pub(super) short: Option<String>,
    /// Up to [`PREVIOUS_RESULTS`] results of the cell started before this one, newest first.
    pub(super) previous: Vec<StoredResult>,
    /// The cell's newest result when it is not this one.
    pub(super) newest: Option<StoredResult>,
    /// The cell's 30- and 90-day strips and plots.
    pub(super) history: History,
    pub(super) now: i64,
}

pub(super) async fn result_page(State(state): State<HttpState>, Path(id): Path<String>) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let result = async {
        let id: i64 = id.parse().map_err(|_| {
            PageError::bad("id", format!("`{id}` is not a result id (a whole number)"))
        })?;
        let Some(result) = state.store.get(id).await? else {
            return Err(PageError::NotFound(format!(
                "no result with id {id} in the store (it may have been removed by retention)"
            )));
        };
        let r = &result.result;
        let cell = HistoryQuery {
            site: Some(r.site.clone()),
            hostname: Some(r.hostname.clone()),
            metric: Some(r.metric.clone()),
            include_attempts: true,
            ..HistoryQuery::default()
        };
        let same_flavour = |x: &StoredResult| x.result.flavour == r.flavour;
        // History has no flavour filter; a host offering two flavours to one probe is rare,
        // so ask for a few more and drop the other flavour's rows.
        let previous: Vec<StoredResult> = state
            .store
            .history(&HistoryQuery {
                until_ms: Some(r.started_at_ms + 1),
                limit: PREVIOUS_RESULTS * 2 + 1,
                ..cell.clone()
            })
            .await?
            .into_iter()
            .filter(|x| same_flavour(x) && x.id != result.id)
            .take(PREVIOUS_RESULTS)
            .collect();
        let newest = state
            .store
            .history(&HistoryQuery { limit: 4, ..cell })
            .await?
            .into_iter()
            .find(|x| same_flavour(x))
            .filter(|x| x.id != result.id);
        let now = now_ms();
        let history = build_history(&state, &config, &result.result, now).await?;
        let page = ResultPage {
            history,
            short: config
                .probe_index(&r.metric)
                .map(|i| config.probes[i].short.clone()),
            result,
            previous,
            newest,
            now,
        };
        Ok((format!("Result {id}"), render::result(&page)))
    }
    .await;
    Page::new(&state, started, result)
}
