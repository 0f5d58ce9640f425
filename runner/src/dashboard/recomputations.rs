//! `/recomputations`: every recomputation with its state and whole history (who, when), the
//! pending ones first. Requests and decisions go through the API or `gridprobe recompute`.

use maud::html;

use super::*;
use gridprobe_results::recompute::{Recomputation, State as RState};

/// The page.
pub(super) async fn recomputations_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let result = async {
        query_params(query, &[])?;
        let mut all = state.store.recomputations().await?;
        // Pending first (they wait for an operator), then newest first.
        all.sort_by_key(|r| (r.state != RState::Pending, std::cmp::Reverse(r.id)));
        Ok(("Recomputations".to_string(), body(&all)))
    }
    .await;
    Page::new(&state, started, result)
}

fn body(all: &[Recomputation]) -> maud::Markup {
    html! {
        h1 { "Recomputations" }
        p.note {
            "Corrections of past periods (ARGO's model): an applied recomputation excludes the "
            "time it covers (neither up nor known) or forces a status on it, in every report, "
            "API answer, /metrics figure and page. Request with POST /api/v1/recomputations or "
            code { "gridprobe recompute request" } "; operators approve, reject or revoke."
        }
        @if all.is_empty() {
            p { "No recomputation has been requested." }
        } @else {
            div.scroll {
                table.plain.recomputations {
                    thead {
                        tr {
                            th.num { "#" } th { "State" } th { "Period (UTC)" } th { "Scope" }
                            th { "Change" } th { "Reason" } th { "History" }
                        }
                    }
                    tbody {
                        @for r in all {
                            tr class={ "state-" (r.state.name()) } {
                                td.num { (r.id) }
                                td { span class={ "badge rc-" (r.state.name()) } { (r.state.name()) } }
                                td { (utc(r.request.start_ms)) " – " (utc(r.request.end_ms)) }
                                td.wrap { (r.request.scope.describe()) }
                                td { (r.request.change.describe()) }
                                td.wrap { (r.request.reason) }
                                td.wrap {
                                    @for s in &r.steps {
                                        div {
                                            (s.step.name()) " by " (s.by) " at " (utc(s.at_ms))
                                            @if !s.note.is_empty() { " — " (s.note) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
