//! `/trends?period=&site=`: the most flapping cells, the longest CRITICAL and UNKNOWN
//! stretches, per site and per metric (`results::trends`, as `gridprobe trends` and
//! `/api/v1/trends`).

use gridprobe_results::report::{check_retention, parse_period};
use gridprobe_results::trends::{CellTrend, GroupTrend, Stretch, Trends};
use maud::{html, Markup};

use super::*;

/// Entries per list on the page.
const LIMIT: usize = 15;

fn dur(ms: i64) -> String {
    gridprobe_config::time::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn stretch(s: &Option<Stretch>) -> Markup {
    html! {
        @match s {
            Some(s) => {
                (dur(s.duration_ms))
                span.muted { " from " (utc(s.start_ms)) @if s.ongoing { " (ongoing)" } }
            }
            None => { "–" }
        }
    }
}

fn cells(title: &str, list: &[CellTrend], shorts: &HashMap<String, String>) -> Markup {
    html! {
        h2 { (title) }
        @if list.is_empty() {
            p.muted { "None in this period." }
        } @else {
            div.scroll {
                table.plain.trends {
                    thead { tr { th { "Site" } th { "Service" } th { "Probe" } th.num { "Changes" } th { "Longest CRITICAL" } th { "Longest UNKNOWN" } } }
                    tbody {
                        @for c in list {
                            tr {
                                td { a href={ "/sites/" (enc(&c.cell.site)) } { (c.cell.site) } }
                                td { span.host { (c.cell.hostname) } " " span.muted { (c.cell.flavour) } }
                                td title=(c.cell.metric) { (shorts.get(&c.cell.metric).map(String::as_str).unwrap_or(&c.cell.metric)) }
                                td.num { (c.changes) }
                                td { (stretch(&c.longest_critical)) }
                                td { (stretch(&c.longest_unknown)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn groups(title: &str, what: &str, list: &[GroupTrend], site_links: bool) -> Markup {
    html! {
        h2 { (title) }
        @if list.is_empty() {
            p.muted { "No results in this period." }
        } @else {
            div.scroll {
                table.plain.trends {
                    thead { tr { th { (what) } th.num { "Cells" } th.num { "Changes" } th { "Longest CRITICAL" } th { "Longest UNKNOWN" } } }
                    tbody {
                        @for g in list {
                            tr {
                                td {
                                    @if site_links { a href={ "/sites/" (enc(&g.name)) } { (g.name) } } @else { (g.name) }
                                }
                                td.num { (g.cells) }
                                td.num { (g.changes) }
                                td { (dur(g.longest_critical_ms)) }
                                td { (dur(g.longest_unknown_ms)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn render(
    t: &Trends,
    period: &str,
    site: Option<&str>,
    shorts: &HashMap<String, String>,
) -> Markup {
    html! {
        h1 { "Trends" }
        form.filters method="get" action="/trends" {
            label { "Period" input name="period" value=(period) size="24"; }
            label { "Site" input name="site" value=(site.unwrap_or("")) size="20"; }
            button type="submit" { "Show" }
        }
        p.note {
            (t.cells) " cells with results from " (utc(t.period.start_ms)) " to " (utc(t.period.end_ms))
            ". A change is a recorded result whose status differs from the one before; a stretch lasts until the status changes or the last result's freshness runs out."
        }
        (cells("Most flapping cells", &t.flapping, shorts))
        (cells("Longest CRITICAL", &t.longest_critical, shorts))
        (cells("Longest UNKNOWN", &t.longest_unknown, shorts))
        (groups("Per site", "Site", &t.by_site, true))
        (groups("Per metric", "Metric", &t.by_metric, false))
    }
}

/// `/trends`.
pub(super) async fn trends_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let result = async {
        let params = query_params(query, &["period", "site"])?;
        let now = now_ms();
        let period_text = params.get("period").cloned().unwrap_or_else(|| "7d".into());
        let period = parse_period(&period_text, now).map_err(|e| PageError::bad("period", e))?;
        let retention_ms = i64::try_from(config.server.retention.as_millis()).unwrap_or(i64::MAX);
        check_retention(&period, now, retention_ms).map_err(|e| PageError::bad("period", e))?;
        let site = params.get("site").cloned();
        if let Some(s) = &site {
            if config.site_index(s).is_none() {
                return Err(PageError::bad(
                    "site",
                    format!(
                        "no site named `{s}`{}",
                        hint(s, config.sites.iter().map(|x| x.name.as_str()))
                    ),
                ));
            }
        }
        let filter = CellFilter {
            site: site.clone(),
            ..Default::default()
        };
        let t = gridprobe_results::trends::from_store(
            state.store.as_ref(),
            &config,
            &period,
            &filter,
            LIMIT,
        )
        .await?;
        let shorts: HashMap<String, String> = config
            .probes
            .iter()
            .map(|p| (p.metric.clone(), p.short.clone()))
            .collect();
        Ok((
            "Trends".to_string(),
            render(&t, &period_text, site.as_deref(), &shorts),
        ))
    }
    .await;
    Page::new(&state, started, result)
}
