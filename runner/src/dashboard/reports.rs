//! `/reports` (the last twelve months, linked) and `/reports/{period}`: the monthly report
//! (`results::monthly`) as a page, or with `?format=pdf|csv|json` as a download, the same
//! bytes `gridprobe report --format ...` writes.

use gridprobe_results::monthly;
use gridprobe_results::report::{check_retention, parse_period, PERIOD_FORMS};

use super::*;
use crate::report as rendering;

/// `/reports`: links to the current and the eleven previous months.
pub(super) async fn reports_index(State(state): State<HttpState>) -> Page {
    let started = Instant::now();
    let now = now_ms();
    let mut months = Vec::new();
    if let Ok(t) = jiff::Timestamp::from_millisecond(now) {
        let mut d = t.to_zoned(jiff::tz::TimeZone::UTC).date().first_of_month();
        for _ in 0..12 {
            months.push(format!("{:04}-{:02}", d.year(), d.month()));
            match d.checked_sub(jiff::Span::new().months(1)) {
                Ok(p) => d = p,
                Err(_) => break,
            }
        }
    }
    let body = maud::html! {
        h1 { "Monthly reports" }
        p.note { "Per site availability, reliability, unknown and maintenance against the targets, a strip per day, tier summaries, the downtimes applied, and how the figures are defined. Each is also a PDF, CSV or JSON file." }
        table.plain {
            thead { tr { th { "Month" } th { "Downloads" } } }
            tbody {
                @for m in &months {
                    tr {
                        td { a href={ "/reports/" (m) } { (m) } @if months.first() == Some(m) { " (to date)" } }
                        td {
                            a href={ "/reports/" (m) "?format=pdf" } { "PDF" } " · "
                            a href={ "/reports/" (m) "?format=csv" } { "CSV" } " · "
                            a href={ "/reports/" (m) "?format=json" } { "JSON" }
                        }
                    }
                }
            }
        }
        p.note { "Any period works in the address: " (PERIOD_FORMS) "." }
    };
    Page::new(&state, started, Ok(("Monthly reports".into(), body)))
}

/// A download with its type and a file name.
fn download(content_type: &'static str, name: String, body: Vec<u8>) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The name is built from the VO and the period label: keep it to safe characters.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `/reports/{period}?format=html|pdf|csv|json&profile=`.
pub(super) async fn report_page(
    State(state): State<HttpState>,
    Path(period_text): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let now = now_ms();
    let result = async {
        let params = query_params(query, &["format", "profile"])?;
        let format = params.get("format").map(String::as_str).unwrap_or("html");
        if !["html", "pdf", "csv", "json"].contains(&format) {
            return Err(PageError::bad(
                "format",
                format!("`{format}`: write html, pdf, csv or json"),
            ));
        }
        let period = parse_period(&period_text, now).map_err(|e| PageError::bad("period", e))?;
        let retention_ms = i64::try_from(config.server.retention.as_millis()).unwrap_or(i64::MAX);
        check_retention(&period, now, retention_ms).map_err(|e| PageError::bad("period", e))?;
        monthly::to_date(&period, now).map_err(|e| PageError::bad("period", e.to_string()))?;
        let report = monthly::from_store(
            state.store.as_ref(),
            &config,
            params.get("profile").map(String::as_str),
            &period,
            &CellFilter::default(),
            DEFAULT_UNKNOWN_THRESHOLD,
            now,
        )
        .await
        .map_err(|e| match e {
            gridprobe_results::report::ReportError::Store(e) => PageError::from(e),
            gridprobe_results::report::ReportError::Invalid(e) => PageError::bad("profile", e),
        })?;
        Ok((format.to_string(), report))
    }
    .await;
    let (format, report) = match result {
        Ok(x) => x,
        Err(e) => return Page::new(&state, started, Err(e)).into_response(),
    };
    let stem = format!("gridprobe-{}-{}", report.vo, report.period.label);
    match format.as_str() {
        "pdf" => download(
            "application/pdf",
            format!("{stem}.pdf"),
            rendering::pdf::render(&report),
        ),
        "csv" => download(
            "text/csv; charset=utf-8",
            format!("{stem}.csv"),
            monthly::to_csv(&report).into_bytes(),
        ),
        "json" => match serde_json::to_vec_pretty(&report) {
            Ok(body) => download("application/json", format!("{stem}.json"), body),
            Err(e) => {
                Page::new(&state, started, Err(PageError::Internal(e.to_string()))).into_response()
            }
        },
        _ => {
            let label = report.period.label.clone();
            let body = maud::html! {
                p.note {
                    "Download: "
                    a href={ "/reports/" (enc(&label)) "?format=pdf" } { "PDF" } " · "
                    a href={ "/reports/" (enc(&label)) "?format=csv" } { "CSV" } " · "
                    a href={ "/reports/" (enc(&label)) "?format=json" } { "JSON" } " · "
                    a href="/reports" { "other months" }
                }
                (rendering::html::body(&report, Some(|s: &str| format!("/sites/{}", enc(s)))))
            };
            Page::new(&state, started, Ok((format!("Report {label}"), body))).into_response()
        }
    }
}
