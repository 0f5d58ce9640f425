//! The monthly report as HTML: [`body`] for the dashboard (its stylesheet, its layout) and
//! [`standalone`] for `gridprobe report --format html` (one file with its own `<style>`, to
//! attach to a mail). Everything goes through maud's escaping; the strips are inline SVG whose
//! colours are presentation attributes, which the dashboard's Content-Security-Policy allows.

use gridprobe_results::monthly::{GroupSummary, MonthlyReport, MonthlySite};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{day_caption, meeting, pct, target, targets_text, utc_minute, DayClass};

/// The report's own rules, served in the dashboard's stylesheet and embedded in the
/// standalone page.
pub const CSS: &str = include_str!("report.css");

/// A verdict cell's class.
fn tgt(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "tgt tgt-ok",
        Some(false) => "tgt tgt-miss",
        None => "tgt tgt-na",
    }
}

/// One site's strip: a box per bucket, coloured by [`DayClass`], its figures as tooltip.
pub fn strip(site: &MonthlySite, r: &MonthlyReport) -> Markup {
    let n = site.days.len().max(1);
    let width = n * 10;
    html! {
        svg.rstrip viewBox={ "0 0 " (width) " 12" } width=(width.min(400)) height="14"
            preserveAspectRatio="none" role="img"
            aria-label={ (site.report.site) ": one box per day, coloured by availability" } {
            @for (i, d) in site.days.iter().enumerate() {
                @let class = DayClass::of(d, &r.targets);
                rect x=(i * 10) y="0" width="9" height="12" fill=(class.hex())
                    data-day=(super::day(d.start_ms)) {
                    title { (day_caption(d)) }
                }
            }
        }
    }
}

/// The strip legend.
fn legend() -> Markup {
    html! {
        div.rlegend {
            @for c in DayClass::ALL {
                span {
                    svg width="12" height="12" viewBox="0 0 12 12" { rect width="12" height="12" fill=(c.hex()) {} }
                    " " (c.label())
                }
            }
        }
    }
}

fn group_table(groups: &[GroupSummary], what: &str) -> Markup {
    html! {
        table.rtable.groups {
            thead {
                tr {
                    th { (what) } th.num { "Sites" } th.num { "Meeting targets" }
                    th.num { "Availability (mean)" } th.num { "Availability (weighted)" }
                    th.num { "Reliability (mean)" } th.num { "Reliability (weighted)" }
                    th.num { "Weight" }
                }
            }
            tbody {
                @for g in groups {
                    tr {
                        th { (g.name) }
                        td.num { (g.sites) }
                        td.num { (g.sites_meeting_targets) }
                        td.num { (pct(g.availability)) }
                        td.num { (pct(g.availability_weighted)) }
                        td.num { (pct(g.reliability)) }
                        td.num { (pct(g.reliability_weighted)) }
                        td.num { (g.weight) }
                    }
                }
            }
        }
    }
}

/// The report's body. `site_href` makes site names links (the dashboard's site pages).
pub fn body(r: &MonthlyReport, site_href: Option<fn(&str) -> String>) -> Markup {
    html! {
        section.report {
            h1 { "Availability report " (r.period.label) " · " (r.vo) }
            dl.facts {
                dt { "Period" } dd { (utc_minute(r.period.start_ms)) " to " (utc_minute(r.period.end_ms)) }
                dt { "Profile" } dd { (r.profile) }
                dt { "Targets" } dd { (targets_text(&r.targets)) }
                dt { "Generated" } dd { (utc_minute(r.generated_ms)) }
            }
            p.verdict-summary { (meeting(r)) "." }

            h2 { "Sites" }
            @if r.sites.is_empty() {
                p.muted { "No site has a service that counts for availability." }
            } @else {
                (legend())
                div.rscroll {
                    table.rtable.sites {
                        thead {
                            tr {
                                th { "Site" } th.num { "Tier" }
                                th.num { "Availability" } th.num { "Reliability" }
                                th.num { "Unknown" } th.num { "Maintenance" }
                                th { "Targets" }
                                th { "Per day" }
                            }
                        }
                        tbody {
                            @for s in &r.sites {
                                @let f = &s.report.figures;
                                tr class=(if s.verdict.met { "met" } else { "missed" }) data-site=(s.report.site) {
                                    th {
                                        @if let Some(href) = site_href {
                                            a href=(href(&s.report.site)) { (s.report.site) }
                                        } @else { (s.report.site) }
                                        @if let Some(fed) = &s.federation { " " span.muted { (fed) } }
                                    }
                                    td.num { (s.report.tier) }
                                    td class={ "num " (tgt(s.verdict.availability)) } { (pct(f.availability)) }
                                    td class={ "num " (tgt(s.verdict.reliability)) } { (pct(f.reliability)) }
                                    td class={ "num " (tgt(Some(s.verdict.unknown))) } { (pct(Some(f.unknown_fraction))) }
                                    td.num { (pct(Some(f.maintenance))) }
                                    td class=(tgt(Some(s.verdict.met))) { (if s.verdict.met { "met" } else { "missed" }) }
                                    td.strip { (strip(s, r)) }
                                }
                            }
                        }
                    }
                }
            }

            h2 { "Tiers" }
            @if r.tiers.is_empty() { p.muted { "None." } } @else { (group_table(&r.tiers, "Tier")) }

            h2 { "Federations" }
            @if r.federations.is_empty() {
                p.muted { "No federation is configured: no federation summary." }
            } @else { (group_table(&r.federations, "Federation")) }

            h2 { "Downtimes applied" }
            @if r.downtimes.is_empty() {
                p.muted { "No outage downtime touched these sites in the period." }
            } @else {
                table.rtable.downtimes {
                    thead { tr { th { "Site" } th { "Service" } th { "From" } th { "Until" } th { "Kind" } th { "Reason" } th { "Source" } } }
                    tbody {
                        @for d in &r.downtimes {
                            tr {
                                td { (d.site.as_deref().unwrap_or("")) }
                                td {
                                    @match (&d.hostname, &d.flavour) {
                                        (Some(h), Some(f)) => { (h) " " (f) }
                                        (Some(h), None) => { (h) }
                                        _ => { "whole site" }
                                    }
                                }
                                td { (utc_minute(d.start_ms)) }
                                td { (utc_minute(d.end_ms)) }
                                td { (if d.scheduled { "scheduled" } else { "unscheduled" }) }
                                td.wrap { (d.reason) }
                                td { (d.source) }
                            }
                        }
                    }
                }
            }

            h2 { "Recomputations applied" }
            @if r.recomputations.is_empty() {
                p.muted { "None: the figures are as measured." }
            } @else {
                table.rtable.recomputations {
                    thead { tr { th { "Id" } th { "From" } th { "Until" } th { "Change" } th { "Reason" } th { "Requested by" } th { "Approved by" } } }
                    tbody {
                        @for x in &r.recomputations {
                            tr {
                                td { (x.id) }
                                td { (utc_minute(x.start_ms)) }
                                td { (utc_minute(x.end_ms)) }
                                td.wrap { (x.change) }
                                td.wrap { (x.reason) }
                                td { (x.requested_by) }
                                td { (x.approved_by) }
                            }
                        }
                    }
                }
            }

            h2 { "How the figures are defined" }
            dl.definitions {
                @for d in &r.definitions {
                    dt { (d.term) }
                    dd { (d.text) }
                }
            }
            p.note {
                "Availability target " (target(r.targets.availability))
                "; a day's box is blue when at least half of it was scheduled downtime."
            }
        }
    }
}

/// The whole report as one HTML file with its own stylesheet.
pub fn standalone(r: &MonthlyReport) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Availability report " (r.period.label) " · " (r.vo) }
                // A constant of this crate, never user data.
                style { (PreEscaped(CSS)) }
            }
            body.standalone { main { (body(r, None)) } }
        }
    }
    .into_string()
}
