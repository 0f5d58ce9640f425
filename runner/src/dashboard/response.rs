//! Responses and errors: the page wrapper and its headers, static assets, small formatters.

use super::*;

/// No inline script or style anywhere, so a string that slipped past escaping still could not
/// run; the run-now form only talks to this origin.
pub(super) const CSP: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Why a page could not be shown; each becomes an HTML error page with its status code.
#[derive(Debug)]
pub(super) enum PageError {
    /// A query or path parameter is invalid: 400 naming it.
    BadParam {
        /// The parameter.
        param: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// No such site or result: 404.
    NotFound(String),
    /// The store (or a computation over it) failed: 500 with the message.
    Internal(String),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Internal(e.to_string())
    }
}

impl PageError {
    pub(super) fn bad(param: &str, message: impl Into<String>) -> Self {
        PageError::BadParam {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

/// A page's outcome, rendered with the VO name for the header.
///
/// Built only through [`Page::new`], so that no page can forget the banner.
pub(super) struct Page {
    vo: String,
    /// Notices shown above every page (credentials that are not valid).
    banner: Vec<String>,
    started: Instant,
    result: Result<(String, maud::Markup), PageError>,
}

impl Page {
    /// A page of this service: its VO and banner come from the current plan and credentials;
    /// `started` is when the request began (for the render-time log).
    pub(super) fn new(
        state: &crate::http::HttpState,
        started: Instant,
        result: Result<(String, maud::Markup), PageError>,
    ) -> Self {
        Page {
            vo: state.shared.plan().config.vo.clone(),
            banner: credential_banner(state),
            started,
            result,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let (status, title, body) = match self.result {
            Ok((title, body)) => (StatusCode::OK, title, body),
            Err(e) => {
                let (status, heading, message) = match e {
                    PageError::BadParam { param, message } => (
                        StatusCode::BAD_REQUEST,
                        format!("Bad parameter `{param}`"),
                        format!("parameter `{param}`: {message}"),
                    ),
                    PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found".into(), m),
                    PageError::Internal(m) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "Server error".into(), m)
                    }
                };
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::warn!(error = %message, "dashboard page failed");
                }
                (
                    status,
                    heading.clone(),
                    render::error_body(status, &heading, &message),
                )
            }
        };
        let now = now_ms();
        let html = render::layout(&self.vo, &title, now, &self.banner, body);
        let mut response = (status, html).into_response();
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Server-Timing lets a browser's developer tools (and the benchmark) see server time.
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = HeaderValue::from_str(&format!("render;dur={ms:.1}")) {
            h.insert("server-timing", v);
        }
        response
    }
}

pub(super) async fn stylesheet() -> Response {
    static_asset(
        "text/css; charset=utf-8",
        concat!(
            include_str!("style.css"),
            include_str!("../report/report.css")
        ),
    )
}

pub(super) async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", include_str!("run.js"))
}

pub(super) fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Short: assets change only with a new build, and a stale stylesheet is harmless.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Milliseconds since the epoch, now.
pub(super) fn now_ms() -> i64 {
    gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now())
}

/// The query string as a map of known parameters. Unknown or repeated parameters are errors
/// naming them; empty values mean "no filter" (what a form's "all" option sends).
pub(super) fn query_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    known: &[&'static str],
) -> Result<HashMap<&'static str, String>, PageError> {
    let Query(pairs) = query.map_err(|e| PageError::bad("query string", e.body_text()))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        let Some(name) = known.iter().find(|n| **n == k) else {
            return Err(PageError::bad(
                &k,
                format!("unknown parameter (known: {})", known.join(", ")),
            ));
        };
        if out.contains_key(name) {
            return Err(PageError::bad(name, "given more than once"));
        }
        let v = v.trim();
        if !v.is_empty() {
            out.insert(*name, v.to_string());
        }
    }
    Ok(out)
}

/// Percent-encodes a path segment or query value: everything but RFC 3986's unreserved
/// characters, so any site name makes a working link.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `3m`, `2h`, `5d`: an age, briefly (as `gridprobe matrix` writes it).
pub(super) fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{}s", s.max(0)),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `2026-10-05 14:03:07Z`.
pub(super) fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// `14:03` (UTC).
pub(super) fn hhmm(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%H:%M").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// `0.973` → `97.3%`; `None` → `n/a`.
pub(super) fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// `40 min`, `3 h`: how much time a figure rests on (whole hours from one hour on).
pub(super) fn span(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    if minutes < 60 {
        format!("{minutes} min")
    } else {
        format!("{} h", minutes / 60)
    }
}

/// A ratio with the time it rests on: `99.2% over 3 h`; `n/a` when nothing is known.
pub(super) fn pct_over(v: Option<f64>, over_ms: i64) -> String {
    match v {
        Some(v) => format!("{} over {}", pct(Some(v)), span(over_ms)),
        None => "n/a".into(),
    }
}

/// "did you mean" suffix for an unknown name.
pub(super) fn hint<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    gridprobe_config::did_you_mean(got, candidates)
        .map(|b| format!(" (did you mean `{b}`?)"))
        .unwrap_or_default()
}

/// One notice per `[[credential]]` that is not valid: its probes are recorded UNKNOWN, so the
/// matrix greys out; the banner says it is the monitoring's fault, not the sites'.
pub(super) fn credential_banner(state: &crate::http::HttpState) -> Vec<String> {
    state
        .shared
        .plan()
        .probes
        .credentials
        .states()
        .into_iter()
        .filter(|c| !c.valid)
        .map(|c| {
            let why = c.last_error.map(|e| format!(": {e}")).unwrap_or_default();
            format!(
                "Monitoring credential {} is not valid{why}. The probes using it are not run and \
                 are recorded UNKNOWN, which does not count against the sites.",
                c.name
            )
        })
        .collect()
}
