//! `/agents`: the site agents `serve` has seen (site, name, version, last heartbeat, runs in
//! flight) and the sites that run on agents without one alive.

use maud::html;

use super::*;
use crate::remote::AgentView;

/// The page.
pub(super) async fn agents_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let remote = state.shared.remote();
    let result = async {
        query_params(query, &[])?;
        let agents = remote.as_ref().map(|r| r.agents()).unwrap_or_default();
        let sites: Vec<String> = config
            .sites
            .iter()
            .filter(|s| s.executor == gridprobe_config::agents::Executor::Agent)
            .map(|s| s.name.clone())
            .collect();
        Ok((
            "Site agents".to_string(),
            body(remote.is_some(), &sites, &agents),
        ))
    }
    .await;
    Page::new(&state, started, result)
}

fn body(configured: bool, sites: &[String], agents: &[AgentView]) -> maud::Markup {
    let without: Vec<&String> = sites
        .iter()
        .filter(|s| !agents.iter().any(|a| &a.site == *s && a.alive))
        .collect();
    html! {
        h1 { "Site agents" }
        p.note {
            "Sites with executor = \"agent\" have their probes run by agents at the site "
            "(gridprobe agent), which take the site's runs from the broker and send the results "
            "back. A site without a live agent has its cells recorded UNKNOWN."
        }
        @if !configured {
            p { "No [agents] broker is configured: every site runs here." }
        } @else {
            @if !without.is_empty() {
                p.banner role="alert" {
                    "No live agent: "
                    @for (i, s) in without.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href={ "/sites/" (enc(s)) } { (s) }
                    }
                }
            }
            @if agents.is_empty() {
                p { "No agent has been seen since this gridprobe started." }
            } @else {
                div.scroll {
                    table.plain.agents {
                        thead {
                            tr {
                                th { "Site" } th { "Agent" } th { "Version" } th { "Started (UTC)" }
                                th { "Last seen (UTC)" } th.num { "Runs in flight" }
                                th.num { "Runs done" } th { "State" }
                            }
                        }
                        tbody {
                            @for a in agents {
                                tr {
                                    td { a href={ "/sites/" (enc(&a.site)) } { (a.site) } }
                                    td { (a.name) }
                                    td { (a.version) }
                                    td { (a.started) }
                                    td { (a.last_seen) " (" (age(a.last_seen_age_seconds)) " ago)" }
                                    td.num { (a.runs_in_flight) }
                                    td.num { (a.runs_done) }
                                    td { @if a.alive { "alive" } @else { "not seen lately" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(site: &str, name: &str, alive: bool) -> AgentView {
        AgentView {
            site: site.into(),
            name: name.into(),
            version: "0.1.0".into(),
            started: "2026-12-03 18:00:00Z".into(),
            last_seen: "2026-12-03 18:40:00Z".into(),
            last_seen_age_seconds: 3,
            runs_in_flight: 2,
            runs_done: 17,
            alive,
        }
    }

    #[test]
    fn the_page_lists_agents_and_sites_without_one() {
        let sites = vec!["T2_A".to_string(), "T2_<B>".to_string()];
        let html = body(
            true,
            &sites,
            &[agent("T2_A", "wn-01", true), agent("T2_<B>", "old", false)],
        )
        .into_string();
        assert!(html.contains("wn-01") && html.contains(">17<"), "{html}");
        assert!(html.contains("No live agent"), "{html}");
        assert!(html.contains("T2_&lt;B&gt;"), "escaped: {html}");
        assert!(html.contains("not seen lately"), "{html}");
        let none = body(false, &[], &[]).into_string();
        assert!(none.contains("No [agents] broker is configured"), "{none}");
    }
}
