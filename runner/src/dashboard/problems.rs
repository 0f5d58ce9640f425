//! `/problems` (what is not OK now, for shifters, refreshing itself), `/notifications` (what
//! was sent, with a form to acknowledge a problem through `POST /api/v1/acks`), and the
//! matrix's `?refresh=SECONDS` for wall screens. Refreshing uses the `Refresh` header: the
//! pages carry no inline script.

use maud::html;

use super::*;

/// `?refresh=` bounds, seconds.
const REFRESH: std::ops::RangeInclusive<u32> = 10..=3600;
/// The problems page refreshes itself this often unless told otherwise.
const PROBLEMS_REFRESH: u32 = 60;

fn refresh_param(params: &mut Vec<(String, String)>) -> Result<Option<u32>, PageError> {
    let Some(i) = params.iter().position(|(k, _)| k == "refresh") else {
        return Ok(None);
    };
    let (_, v) = params.remove(i);
    if params.iter().any(|(k, _)| k == "refresh") {
        return Err(PageError::bad("refresh", "given more than once"));
    }
    match v.trim().parse::<u32>() {
        Ok(n) if REFRESH.contains(&n) => Ok(Some(n)),
        _ => Err(PageError::bad(
            "refresh",
            format!("`{v}` must be seconds from 10 to 3600"),
        )),
    }
}

fn with_refresh(mut resp: Response, secs: Option<u32>) -> Response {
    if let Some(s) = secs {
        if resp.status() == StatusCode::OK {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::REFRESH, v);
            }
        }
    }
    resp
}

/// `/` with an optional `?refresh=SECONDS`.
pub(super) async fn matrix_refreshing(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(mut params)) = query else {
        return matrix_page(State(state), query).await.into_response();
    };
    match refresh_param(&mut params) {
        Ok(secs) => with_refresh(
            matrix_page(State(state), Ok(Query(params)))
                .await
                .into_response(),
            secs,
        ),
        Err(e) => Page::new(&state, Instant::now(), Err(e)).into_response(),
    }
}

pub(super) async fn problems_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let mut secs = Some(PROBLEMS_REFRESH);
    let result = async {
        let mut params = match query {
            Ok(Query(p)) => p,
            Err(e) => return Err(PageError::bad("query", e.body_text())),
        };
        if let Some(s) = refresh_param(&mut params)? {
            secs = Some(s);
        }
        if let Some((k, _)) = params.first() {
            return Err(PageError::bad(k, "unknown parameter; accepted here: refresh"));
        }
        let list = crate::notify::api::problem_list(&state)
            .await
            .map_err(|e| PageError::Internal(format!("{e:?}")))?;
        let now = now_ms();
        let body = html! {
            h1 { "Problems" }
            p.note { "What is not OK now, by tier and age (oldest first); refreshed every " (secs.unwrap_or(PROBLEMS_REFRESH)) " s. Acknowledge from "
                a href="/notifications" { "Notifications" } " or with gridprobe ack." }
            @if list.is_empty() {
                p { "No problems: every cell is OK (or STANDBY)." }
            } @else {
                div.scroll { table.plain.problems {
                    thead { tr { th { "Tier" } th { "Site" } th { "Service" } th { "Probe" } th { "Status" } th { "Since" } th { "Ack" } th { "Downtime" } th { "Flapping" } th { "Summary" } } }
                    tbody { @for p in &list {
                        @let class = match p.status.as_str() { "CRITICAL" => "st-crit", "WARNING" => "st-warn", _ => "st-unk" };
                        tr {
                            td.num { (p.tier) }
                            td { a href={ "/sites/" (enc(&p.site)) } { (p.site) } }
                            td { (p.flavour) " " (p.hostname) }
                            td { (p.metric) }
                            td { span class={ "badge " (class) } { (p.status) } }
                            td title=(utc(p.since_ms)) { (age((now - p.since_ms) / 1000)) }
                            td.wrap { @if let Some(a) = &p.ack { "✓ " (a) } }
                            td { @if p.downtime { "yes" } }
                            td { @if p.flapping { "flapping" } }
                            td.wrap { (p.summary) }
                        }
                    } }
                } }
            }
        };
        Ok(("Problems".to_string(), body))
    }
    .await;
    with_refresh(Page::new(&state, started, result).into_response(), secs)
}

pub(super) async fn notifications_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let result = async {
        let params = query_params(query, &[])?;
        drop(params);
        let (sent, acks) = match &state.notify {
            Some(n) => {
                let sent = n.store.notifications(None, 200).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "notification history not read");
                    Vec::new()
                });
                let now = now_ms();
                let acks = match n.acks.refresh(now).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "acknowledgements not re-read");
                        n.acks.all().into_iter().filter(|a| a.active(now)).collect()
                    }
                };
                (sent, acks)
            }
            None => (Vec::new(), Vec::new()),
        };
        let body = html! {
            h1 { "Notifications" }
            @if state.notify.is_none() {
                p.note { "No [[notify]] channel is configured." }
            }
            h2 { "Acknowledge a problem" }
            form.ack #ack-form data-api="/api/v1/acks" {
                label { "Site " select name="site" { @for s in &config.sites { option value=(s.name) { (s.name) } } } }
                label { "Service (host) " input name="service" size="24"; }
                label { "Metric " input name="metric" size="24"; }
                label { "Comment " input name="comment" size="40" required; }
                label { "Expires " input name="expires" size="6" placeholder="4h"; }
                label { "Sticky " input type="checkbox" name="sticky" value="true"; }
                label { "Token " input type="password" name="token" autocomplete="off"; }
                button type="submit" { "Acknowledge" }
                output #ack-result {}
            }
            h2 { "Acknowledgements in force" }
            @if acks.is_empty() { p { "None." } } @else {
                table.plain { thead { tr { th { "What" } th { "Comment" } th { "By" } th { "Until" } } }
                    tbody { @for a in &acks { tr {
                        td { (a.scope()) } td.wrap { (a.comment) } td { (a.author) }
                        td { @match a.expires_ms { Some(e) => (utc(e)), None => "recovery" } @if a.sticky { " (sticky)" } }
                    } } } }
            }
            h2 { "Sent (newest first)" }
            @if sent.is_empty() { p { "Nothing sent yet." } } @else {
                div.scroll { table.plain {
                    thead { tr { th { "Sent" } th { "Channel" } th { "To" } th { "Site" } th { "Event" } th { "Subject" } th { "Id" } } }
                    tbody { @for r in &sent { tr {
                        td { (utc(r.sent_ms)) } td { (r.channel) } td { (r.recipient) }
                        td { a href={ "/sites/" (enc(&r.site)) } { (r.site) } }
                        td { (r.event) } td.wrap { (r.subject) } td { code { (r.id) } }
                    } } }
                } }
            }
            script src="/static/gridprobe.js" {}
        };
        Ok(("Notifications".to_string(), body))
    }
    .await;
    Page::new(&state, started, result)
}
