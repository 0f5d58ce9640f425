//! The dashboard's HTML. Every `(expr)` below goes through maud's escaping; nothing here
//! writes `PreEscaped`, so no probe output, summary or configured name can become markup.

use axum::http::StatusCode;
use gridprobe_probes::Trigger;
use gridprobe_results::availability::AStatus;
use gridprobe_results::matrix::CellState;
use maud::{html, Markup, DOCTYPE};

use super::{
    age, enc, figure_cells, hhmm, segment_class, utc, CellView, MatrixPage, ReasonsPage,
    ResultPage, Shown, SitePage, StatusView, Strip,
};

/// The page around a body: header with navigation, stylesheet, viewport for narrow windows.
pub(super) fn layout(vo: &str, title: &str, now: i64, banner: &[String], body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gridprobe " (vo) }
                link rel="stylesheet" href="/static/gridprobe.css";
            }
            body {
                header.top {
                    a.brand href="/" { "gridprobe · " (vo) }
                    nav {
                        a href="/" { "Matrix" }
                        a href="/reasons" { "Failure reasons" }
                        a href="/recomputations" { "Recomputations" }
                        a href="/reports" { "Reports" }
                        a href="/trends" { "Trends" }
                        a href="/problems" { "Problems" }
                        a href="/notifications" { "Notifications" }
                        a href="/agents" { "Agents" }
                    }
                    span.when { "generated " (utc(now)) }
                }
                @for notice in banner {
                    p.banner role="alert" { (notice) }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The body of an error page.
pub(super) fn error_body(status: StatusCode, heading: &str, message: &str) -> Markup {
    html! {
        h1 { (heading) }
        p.error data-status=(status.as_u16()) { (message) }
        p { a href="/" { "Back to the matrix" } }
    }
}

/// `1 site`, `3 sites`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Colour legend of the cells.
fn legend() -> Markup {
    const ENTRIES: [(&str, &str); 8] = [
        ("st-ok", "OK"),
        ("st-warn", "WARNING"),
        ("st-error", "CRITICAL"),
        ("st-unkn", "UNKNOWN"),
        ("st-missing", "MISSING (stale)"),
        ("st-dt", "DOWNTIME"),
        ("st-stb", "STANDBY (skipped)"),
        ("st-na", "no result yet"),
    ];
    html! {
        div.legend aria-label="legend" {
            @for (class, label) in ENTRIES {
                span { i class=(class) {} (label) }
            }
        }
    }
}

/// The coloured dot of a site's 24-hour status.
fn status_dot(status: StatusView) -> Markup {
    match status {
        StatusView::Known(s) => html! {
            span class={ "ss ss-" (s.status.name()) } role="img"
                aria-label={ "site status " (s.label()) }
                title={ "site status over the last 24 h: " (s.label()) " (availability " (s.figure()) ")" } {}
        },
        StatusView::NotCounted => html! {
            span.ss.ss-none role="img" aria-label="no site status"
                title="no service of this site counts for availability" {}
        },
        StatusView::Pending => html! {
            span.ss.ss-pending role="img" aria-label="site status pending"
                title="site status being computed; reload in a few seconds" {}
        },
    }
}

/// The site status as a labelled badge.
fn status_badge(status: StatusView) -> Markup {
    match status {
        StatusView::Known(s) => html! {
            span class={ "badge sb-" (s.status.name()) }
                title={ "last 24 h, availability " (s.figure()) } { (s.label()) }
        },
        StatusView::NotCounted => html! {
            span.badge.sb-none title="no service of this site counts for availability" { "no status" }
        },
        StatusView::Pending => html! {
            span.badge.sb-none title="being computed; reload in a few seconds" { "status pending" }
        },
    }
}

/// One matrix cell: coloured, its token, a link to the latest result, the details as tooltip.
fn cell(c: Option<&CellView>) -> Markup {
    html! {
        @match c {
            None => { td.none {} }
            Some(c) => {
                td class=(c.shown.class()) {
                    @if let Some(id) = c.result_id {
                        a href={ "/results/" (id) } title=(c.title) { (c.shown.token()) }
                    } @else {
                        span title=(c.title) { (c.shown.token()) }
                    }
                    @if let Some(m) = c.mark { sup.mark { (m) } }
                }
            }
        }
    }
}

/// `/`.
pub(super) fn matrix(p: &MatrixPage) -> Markup {
    let sites: usize = p.groups.iter().map(|g| g.sites.len()).sum();
    let filtered = p.filters != Default::default();
    html! {
        h1 { "Availability matrix" }
        form.filters method="get" action="/" {
            label { "VO"
                select name="vo" {
                    option value="" { "all" }
                    option value=(p.vo) selected[p.filters.vo.is_some()] { (p.vo) }
                }
            }
            label { "Tier"
                select name="tier" {
                    option value="" { "all" }
                    @for t in &p.tiers_known {
                        option value=(t) selected[p.filters.tier == Some(*t)] { "Tier " (t) }
                    }
                }
            }
            label { "Flavour"
                select name="flavour" {
                    option value="" { "all" }
                    @for f in &p.flavours_known {
                        option value=(f) selected[p.filters.flavour.as_deref() == Some(f.as_str())] { (f) }
                    }
                }
            }
            button type="submit" { "Show" }
            @if filtered { a href="/" { "clear filters" } }
        }
        p.note {
            (plural(sites, "site")) " × " (plural(p.columns.len(), "probe"))
            @for (s, n) in &p.counts { " · " (n) " " (s.name().to_lowercase()) }
            ". Each cell is the best instance of the site; the dot is the site status over the last 24 h."
        }
        (legend())
        @if p.statuses_pending {
            p.note { "Site statuses are being computed (first view after a start or reload); reload in a few seconds." }
        }
        @if p.groups.is_empty() {
            p { "The filters select no service instance." }
        } @else {
            div.scroll {
                table.matrix {
                    thead {
                        tr {
                            th.site.corner scope="col" { "Site" }
                            @for (metric, short) in &p.columns {
                                th.probe scope="col" data-metric=(metric) title=(metric) { span { (short) } }
                            }
                        }
                    }
                    @for g in &p.groups {
                        tbody {
                            tr.tier {
                                // The label sits in the sticky first column so it stays in view
                                // when the matrix scrolls sideways.
                                th.site scope="rowgroup" {
                                    "Tier " (g.tier) " · " (plural(g.sites.len(), "site"))
                                }
                                td colspan=(p.columns.len()) {}
                            }
                            @for s in &g.sites {
                                tr data-site=(s.name) {
                                    th.site scope="row" title={ (s.name) " · " (s.instances) " service instances" } {
                                        (status_dot(s.status))
                                        a href={ "/sites/" (enc(&s.name)) } { (s.name) }
                                    }
                                    @for c in &s.cells { (cell(c.as_ref())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A 24-hour strip: one rectangle per stretch of constant status, in a 1440-unit (one per
/// minute) coordinate system stretched to the column width.
fn strip(s: &Strip, start: i64, end: i64) -> Markup {
    let span = (end - start).max(1) as f64;
    // A result of the last minute would be a fraction of a pixel wide: measured stretches get
    // at least 1.5 units (about a pixel) so a fresh result shows; MISSING stays true to scale.
    let geometry = |seg: &gridprobe_results::availability::Segment| {
        let x = (seg.start - start) as f64 / span * 1440.0;
        let mut w = (seg.end - seg.start) as f64 / span * 1440.0;
        if seg.status != AStatus::Missing {
            w = w.max(1.5);
        }
        (
            format!("{:.2}", x.min(1440.0 - w).max(0.0)),
            format!("{w:.2}"),
        )
    };
    html! {
        svg.strip viewBox="0 0 1440 10" preserveAspectRatio="none" role="img"
            aria-label={ (s.short) " on " (s.hostname) ", last 24 hours" } {
            @for seg in &s.segments {
                @let (x, w) = geometry(seg);
                rect class=(segment_class(seg.status)) x=(x) y="0" width=(w) height="10" {
                    title { (seg.status.name()) " " (hhmm(seg.start)) "–" (hhmm(seg.end)) " UTC" }
                }
            }
        }
    }
}

/// `/sites/{site}`.
pub(super) fn site(p: &SitePage) -> Markup {
    let s = &p.site;
    let mut hosts: Vec<&str> = p.instances.iter().map(|i| i.0.as_str()).collect();
    hosts.dedup();
    html! {
        h1 { (s.name) " " (status_badge(p.status)) }
        dl.facts {
            dt { "Tier" } dd { (s.tier) }
            @if let Some(g) = &s.grid { dt { "Grid" } dd { (g) } }
            @if let Some(c) = &s.country { dt { "Country" } dd { (c) } }
            @if let Some(c) = &s.contact { dt { "Contact" } dd { a href={ "mailto:" (c) } { (c) } } }
            dt { "Services" } dd { (s.services.len()) }
        }

        h2 { "Now" }
        @if p.instances.is_empty() {
            p.muted { "No probe applies to this site's services." }
        } @else {
            div.scroll {
                table.matrix.site-matrix {
                    thead {
                        tr {
                            th.site.corner scope="col" { "Service" }
                            @for (metric, short) in &p.columns {
                                th.probe scope="col" data-metric=(metric) title=(metric) { span { (short) } }
                            }
                        }
                    }
                    tbody {
                        @for (host, flavour, production, cells) in &p.instances {
                            tr data-host=(host) data-flavour=(flavour) {
                                th.site scope="row" {
                                    span.host { (host) } " " span.muted { (flavour) }
                                    @if !production { " " span.muted title="not counted in availability" { "(not in production)" } }
                                }
                                @for c in cells { (cell(c.as_ref())) }
                            }
                        }
                    }
                }
            }
            (legend())
        }

        h2 { "Last 24 hours" }
        @if p.strips.is_empty() {
            p.muted { "No probe applies to this site's services." }
        } @else {
            div.scroll.wide {
                table.plain.strips {
                    thead {
                        tr {
                            th { "Service" }
                            th { "Probe" }
                            th.strip {
                                div.axis {
                                    span { "−24h" }
                                    span { "−18h" } span { "−12h" } span { "−6h" }
                                    span { "now " (hhmm(p.now)) " UTC" }
                                }
                            }
                        }
                    }
                    tbody {
                        @for st in &p.strips {
                            tr data-host=(st.hostname) data-metric=(st.metric) {
                                td { span.host { (st.hostname) } " " span.muted { (st.flavour) } }
                                td title=(st.metric) { (st.short) }
                                td.strip { (strip(st, p.day_start, p.now)) }
                            }
                        }
                    }
                }
            }
        }

        h2 { "This month (" (p.month_label) ", to date)" }
        @if let Some(m) = p.month.as_ref().filter(|m| !m.recomputations.is_empty()) {
            p.note.recomputed {
                "These figures include the applied recomputations "
                @for (k, id) in m.recomputations.iter().enumerate() {
                    @if k > 0 { ", " }
                    a href="/recomputations" { "#" (id) }
                }
                "."
            }
        }
        @if let Some(m) = &p.month {
            div.scroll {
                table.plain.figures {
                    thead {
                        tr {
                            th { "" } th.num { "Availability" } th.num { "Reliability" }
                            th.num { "Maintenance" } th.num { "Unknown" }
                        }
                    }
                    tbody {
                        tr.site-figures {
                            th { "Site" }
                            @for v in figure_cells(&m.figures) { td.num { (v) } }
                        }
                        @for f in &m.flavours {
                            tr {
                                td { (f.flavour) }
                                @for v in figure_cells(&f.figures) { td.num { (v) } }
                            }
                            @for i in &f.instances {
                                tr {
                                    td { "\u{a0}\u{a0}" span.host { (i.hostname) } }
                                    @for v in figure_cells(&i.figures) { td.num { (v) } }
                                }
                            }
                        }
                    }
                }
            }
            p.note { "Availability = up / known time; reliability leaves scheduled downtime out. Figures are n/a when most of the time is unknown; a new site's are then given over the time known (\"99.2% over 3 h\")." }
        } @else {
            p.muted { "No service of this site counts for availability (none in production, or no critical probe applies)." }
        }

        h2 { "Downtimes" }
        @if p.current.is_empty() && p.upcoming.is_empty() {
            p.muted { "None now, none in the next 7 days." }
        } @else {
            div.scroll {
                table.plain.downtimes {
                    thead {
                        tr { th { "" } th { "From" } th { "Until" } th { "What" } th { "Kind" } th { "Reason" } th { "Source" } }
                    }
                    tbody {
                        @for (when, d) in p.current.iter().map(|d| ("now", d)).chain(p.upcoming.iter().map(|d| ("upcoming", d))) {
                            tr {
                                td { (when) }
                                td { (utc(d.start_ms)) }
                                td { (utc(d.end_ms)) }
                                td {
                                    @match (&d.hostname, &d.flavour) {
                                        (Some(h), Some(f)) => { span.host { (h) } " " (f) }
                                        (Some(h), None) => { span.host { (h) } }
                                        _ => { "whole site" }
                                    }
                                }
                                td {
                                    (if d.scheduled { "scheduled" } else { "unscheduled" })
                                    (if d.outage { ", outage" } else { ", at risk" })
                                }
                                td.wrap { (d.reason) }
                                td { (d.source) }
                            }
                        }
                    }
                }
            }
        }

        h2 { "Run now" }
        @if p.runs_possible {
            form #run-now .run method="post" action="/api/v1/runs" data-site=(s.name) {
                label { "Service"
                    select name="service" {
                        option value="" { "all services" }
                        @for h in &hosts { option value=(h) { (h) } }
                    }
                }
                label { "Probe"
                    select name="probe" {
                        option value="" { "all probes" }
                        @for (metric, short) in &p.probes { option value=(metric) { (short) } }
                    }
                }
                label { "Token"
                    input type="password" name="token" autocomplete="off" required placeholder="bearer token";
                }
                button type="submit" { "Run now" }
            }
            p.note { "Needs a token with the operator role, or a site-admin token for this site. The answer of the API appears below; results reach the table above when the run has finished." }
            pre #run-answer .answer .output aria-live="polite" {}
            script src="/static/gridprobe.js" defer {}
        } @else {
            p.muted { "On-demand runs are off: [access] declares no token." }
        }
    }
}

/// The trigger for people: its name with a space ("on demand").
fn trigger_name(t: Trigger) -> String {
    t.name().replace('_', " ")
}

/// Optional perfdata number.
fn num(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `/results/{id}`.
pub(super) fn result(p: &ResultPage) -> Markup {
    let r = &p.result.result;
    let o = &r.outcome;
    let shown = Shown::State(CellState::Current(o.status));
    let name = p.short.as_deref().unwrap_or(&r.metric);
    html! {
        h1 {
            span class={ "badge " (shown.class()) } { (o.status.name()) } " "
            (name) " on " span.host { (r.hostname) }
        }
        p.summary { (o.summary) }
        dl.facts {
            dt { "Metric" } dd { (r.metric) " (" (r.kind) ")" }
            dt { "Site" } dd { a href={ "/sites/" (enc(&r.site)) } { (r.site) } }
            dt { "Service" } dd { span.host { (r.hostname) } " " (r.flavour) }
            dt { "Started" } dd { (utc(r.started_at_ms)) " (" (age((p.now - r.started_at_ms) / 1000)) " ago)" }
            dt { "Duration" } dd { (r.duration_ms) " ms" }
            dt { "Attempt" } dd {
                (r.attempt)
                (if p.result.is_final { " (the recorded state)" } else { " (a retry attempt, not the recorded state)" })
            }
            dt { "Trigger" } dd { (trigger_name(r.trigger)) }
            dt { "VO" } dd { (r.vo) }
            dt { "Result id" } dd { (p.result.id) }
        }
        @if let Some(n) = &p.newest {
            p.note {
                "This cell has a newer result: "
                a href={ "/results/" (n.id) } { (n.result.outcome.status.name()) " at " (utc(n.result.started_at_ms)) }
            }
        }

        h2 { "Output" }
        @if o.details.is_empty() {
            p.muted { "The probe wrote nothing beyond its summary." }
        } @else {
            pre.output { (o.details) }
        }

        h2 { "Performance data" }
        @if o.perfdata.is_empty() {
            p.muted { "None." }
        } @else {
            div.scroll {
                table.plain.perfdata {
                    thead {
                        tr { th { "Label" } th.num { "Value" } th { "Unit" } th { "Warn" } th { "Crit" } th.num { "Min" } th.num { "Max" } }
                    }
                    tbody {
                        @for d in &o.perfdata {
                            tr {
                                td { (d.label) } td.num { (d.value) } td { (d.uom) }
                                td { (d.warn.as_deref().unwrap_or("")) } td { (d.crit.as_deref().unwrap_or("")) }
                                td.num { (num(d.min)) } td.num { (num(d.max)) }
                            }
                        }
                    }
                }
            }
        }

        (super::history::render(&p.history))

        h2 { "Previous results of this cell" }
        @if p.previous.is_empty() {
            p.muted { "None before this one." }
        } @else {
            div.scroll {
                table.plain.previous {
                    thead { tr { th { "Started" } th { "Status" } th.num { "Attempt" } th { "Summary" } } }
                    tbody {
                        @for x in &p.previous {
                            @let st = Shown::State(CellState::Current(x.result.outcome.status));
                            tr {
                                td { a href={ "/results/" (x.id) } { (utc(x.result.started_at_ms)) } }
                                td { span class={ "badge " (st.class()) } { (x.result.outcome.status.name()) } }
                                td.num { (x.result.attempt) @if !x.is_final { " (retry)" } }
                                td.wrap { (x.result.outcome.summary) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// At most this many sites are listed per reason; the rest are counted.
const SITES_LISTED: usize = 8;

/// `/reasons`.
pub(super) fn reasons(p: &ReasonsPage) -> Markup {
    html! {
        h1 { "Failure reasons" }
        form.filters method="get" action="/reasons" {
            label { "Since" input name="since" value=(p.since) size="6"; }
            button type="submit" { "Show" }
        }
        p.note {
            "Non-OK recorded results of the last " (p.since) ", grouped by summary with host names, numbers, ids, paths and times replaced; the most widespread first."
        }
        @if p.truncated {
            p.note { "Only the newest " (super::REASONS_LIMIT) " failures were read; older ones are left out." }
        }
        @if p.reasons.is_empty() {
            p { "No failures in the last " (p.since) "." }
        } @else {
            div.scroll {
                table.plain.reasons {
                    thead {
                        tr { th.num { "#" } th { "Reason" } th { "Worst" } th.num { "Results" } th { "Sites" } th { "Probes" } th { "Latest example" } }
                    }
                    tbody {
                        @for (i, r) in p.reasons.iter().enumerate() {
                            @let st = Shown::State(CellState::Current(r.status));
                            tr {
                                td.num { (i + 1) }
                                td.wrap { (r.reason) }
                                td { span class={ "badge " (st.class()) } { (r.status.name()) } }
                                td.num { (r.count) }
                                td {
                                    @for (k, s) in r.sites.iter().take(SITES_LISTED).enumerate() {
                                        @if k > 0 { ", " }
                                        a href={ "/sites/" (enc(s)) } { (s) }
                                    }
                                    @if r.sites.len() > SITES_LISTED { " and " (r.sites.len() - SITES_LISTED) " more" }
                                }
                                td {
                                    @for (k, m) in r.metrics.iter().enumerate() {
                                        @if k > 0 { ", " }
                                        span title=(m) { (p.shorts.get(m).map(String::as_str).unwrap_or(m)) }
                                    }
                                }
                                td.wrap { a href={ "/results/" (r.example_id) } { (r.example) } }
                            }
                        }
                    }
                }
            }
        }
    }
}
