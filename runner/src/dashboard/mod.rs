//! The web dashboard: server-rendered HTML over the same plan and store as the JSON API.
//!
//! - `/` the morning table: sites × probes grouped by tier, each cell the best instance's latest
//!   status (the matrix of `gridprobe matrix`), current outages in blue, the 24-hour site status
//!   beside each site; `?vo=&tier=&flavour=` filters.
//! - `/sites/{site}`: instances × probes now, a 24-hour SVG strip per cell, month-to-date
//!   availability and reliability, current and upcoming downtimes, and a "run now" form that
//!   calls `POST /api/v1/runs`.
//! - `/results/{id}`: one result whole, with the cell's previous results.
//! - `/reasons?since=`: the top failure reasons.
//!
//! Pages are rendered with `maud`, which escapes every interpolated string, so a probe summary
//! or a site name can never inject markup; the pages carry a Content-Security-Policy without
//! inline scripts or styles as a second line of defence. The site statuses of `/` come from an
//! availability report over all sites, which is too slow to compute on every request of a
//! 1,000-site VO: it is computed in the background, kept for [`STATUS_TTL`] and refreshed while
//! the old value is served; the first page after a start waits for it at most 150 ms.
//! Reading permissions are checked by the server's read guard (`http::read_guard`), not here.

mod render;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use gridprobe_config::{Config, Downtime};
use gridprobe_probes::Status;
use gridprobe_results::availability::{
    metric_timeline, AStatus, DowntimeSpan, Figures, Segment, DEFAULT_UNKNOWN_THRESHOLD,
};
use gridprobe_results::matrix::{build_matrix, Cell, CellState, MatrixFilter};
use gridprobe_results::reasons::{group, Reason};
use gridprobe_results::report::{
    compute, default_thresholds, site_status, Period, SiteReport, SiteStatus,
};
use gridprobe_results::{CellFilter, CellKey, HistoryQuery, ResultStore, StoreError, StoredResult};

use crate::http::HttpState;
use crate::state::Shared;

/// How long the site statuses of `/` are reused before a background refresh.
pub const STATUS_TTL: Duration = Duration::from_secs(60);
/// Failures read at most for `/reasons` (the newest ones), so a bad day cannot exhaust memory.
const REASONS_LIMIT: usize = 50_000;
/// Previous results shown on a result page.
const PREVIOUS_RESULTS: usize = 20;
/// Upcoming downtimes shown on a site page start within this window.
const UPCOMING: i64 = 7 * 86_400_000;
const DAY_MS: i64 = 86_400_000;

/// The dashboard's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(matrix_page))
        .route("/sites/{site}", get(site_page))
        .route("/results/{id}", get(result_page))
        .route("/reasons", get(reasons_page))
        .route("/static/gridprobe.css", get(stylesheet))
        .route("/static/gridprobe.js", get(script))
}

// ---------------------------------------------------------------------------------------------
// Responses and errors

/// No inline script or style anywhere, so a string that slipped past escaping still could not
/// run; the run-now form only talks to this origin.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Why a page could not be shown; each becomes an HTML error page with its status code.
#[derive(Debug)]
enum PageError {
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
    fn bad(param: &str, message: impl Into<String>) -> Self {
        PageError::BadParam {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

/// A page's outcome, rendered with the VO name for the header.
struct Page {
    vo: String,
    started: Instant,
    result: Result<(String, maud::Markup), PageError>,
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
        let html = render::layout(&self.vo, &title, now, body);
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

async fn stylesheet() -> Response {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("style.css"),
    )
}

async fn script() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("run.js"),
    )
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
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
fn now_ms() -> i64 {
    gridprobe_probes::outcome::unix_ms(std::time::SystemTime::now())
}

/// The query string as a map of known parameters. Unknown or repeated parameters are errors
/// naming them; empty values mean "no filter" (what a form's "all" option sends).
fn query_params(
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
fn enc(s: &str) -> String {
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
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{}s", s.max(0)),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `2026-10-05 14:03:07Z`.
fn utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// `14:03` (UTC).
fn hhmm(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%H:%M").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// `0.973` → `97.3%`; `None` → `n/a`.
fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

/// `40 min`, `3 h`: how much time a figure rests on (whole hours from one hour on).
fn span(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    if minutes < 60 {
        format!("{minutes} min")
    } else {
        format!("{} h", minutes / 60)
    }
}

/// A ratio with the time it rests on: `99.2% over 3 h`; `n/a` when nothing is known.
fn pct_over(v: Option<f64>, over_ms: i64) -> String {
    match v {
        Some(v) => format!("{} over {}", pct(Some(v)), span(over_ms)),
        None => "n/a".into(),
    }
}

/// "did you mean" suffix for an unknown name.
fn hint<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    gridprobe_config::did_you_mean(got, candidates)
        .map(|b| format!(" (did you mean `{b}`?)"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What a cell shows

/// A cell as the dashboard colours it: the matrix state, or DOWNTIME when a current outage
/// covers the instance (whatever the last result said, as the SAM tables show it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    State(CellState),
    Downtime,
}

impl Shown {
    /// CSS class (colour).
    fn class(self) -> &'static str {
        match self {
            Shown::Downtime => "st-dt",
            Shown::State(CellState::Current(s)) => match s {
                Status::Ok => "st-ok",
                Status::Warning => "st-warn",
                Status::Critical => "st-error",
                Status::Unknown => "st-unkn",
                Status::Standby => "st-stb",
            },
            Shown::State(CellState::Missing) => "st-missing",
            Shown::State(CellState::NoResult) => "st-na",
        }
    }

    /// The text in the cell: the SAM token, `dt` for a downtime.
    fn token(self) -> &'static str {
        match self {
            Shown::Downtime => "dt",
            Shown::State(s) => s.token(),
        }
    }

    /// Upper-case name for tooltips.
    fn name(self) -> &'static str {
        match self {
            Shown::Downtime => "DOWNTIME",
            Shown::State(CellState::Current(s)) => s.name(),
            Shown::State(CellState::Missing) => "MISSING",
            Shown::State(CellState::NoResult) => "NO RESULT",
        }
    }

    /// Best of a site's instances (redundancy: one good CE is enough), as the matrix ranks
    /// them, with a downtime below every measurement but above stale or absent results.
    fn rank(self) -> u8 {
        match self {
            Shown::State(CellState::Current(Status::Ok)) => 8,
            Shown::State(CellState::Current(Status::Warning)) => 7,
            Shown::State(CellState::Current(Status::Critical)) => 6,
            Shown::State(CellState::Current(Status::Unknown)) => 5,
            Shown::State(CellState::Current(Status::Standby)) => 4,
            Shown::Downtime => 3,
            Shown::State(CellState::Missing) => 2,
            Shown::State(CellState::NoResult) => 1,
        }
    }
}

/// One rendered cell.
#[derive(Debug, Clone)]
struct CellView {
    shown: Shown,
    /// Latest result to link to.
    result_id: Option<i64>,
    /// Tooltip: status, host, age, summary.
    title: String,
}

impl CellView {
    fn of(cell: &Cell, hostname: &str, downtime: Option<&Downtime>, instances: usize) -> Self {
        let shown = if downtime.is_some() {
            Shown::Downtime
        } else {
            Shown::State(cell.state)
        };
        let mut title = format!("{} · {hostname}", shown.name());
        if let Some(a) = cell.age_seconds {
            let _ = write!(title, " · {} ago", age(a));
        }
        if let Some(d) = downtime {
            let _ = write!(title, "\ndowntime until {}: {}", utc(d.end_ms), d.reason);
        }
        if cell.state == CellState::Missing {
            if let Some(s) = cell.last_status {
                let _ = write!(title, "\nlast result {s}, older than its freshness window");
            }
        }
        if let Some(s) = &cell.summary {
            let _ = write!(title, "\n{s}");
        }
        if instances > 1 {
            let _ = write!(title, "\n(best of {instances} instances)");
        }
        CellView {
            shown,
            result_id: cell.result_id,
            title,
        }
    }
}

/// The current outage covering an instance, if any.
fn outage_of<'a>(
    downtimes: &'a [Downtime],
    site: &str,
    hostname: &str,
    flavour: &str,
) -> Option<&'a Downtime> {
    downtimes
        .iter()
        .find(|d| d.outage && d.covers(site, hostname, flavour))
}

/// Downtimes overlapping `[since, until)`: the configuration's and the store's (imported).
async fn downtimes_between(
    store: &dyn ResultStore,
    config: &Config,
    since: i64,
    until: i64,
) -> Result<Vec<Downtime>, StoreError> {
    let mut all = store.downtimes(since, until).await?;
    all.extend(
        config
            .downtimes
            .iter()
            .filter(|d| d.start_ms < until && d.end_ms > since)
            .cloned(),
    );
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// Site statuses (last 24 h), cached

/// A site's 24-hour status and figures; sites absent from the map have no service that counts
/// for availability.
type SiteStatuses = HashMap<String, SiteSummary>;

/// What the dashboard shows of a site's last 24 hours.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SiteSummary {
    status: SiteStatus,
    /// Availability over the 24 hours; n/a while most of them are unknown.
    availability: Option<f64>,
    /// For a site whose first result is inside the 24 hours: how long ago that was.
    data_ms: Option<i64>,
    /// Availability over the time known, and that time (what a new site is judged on).
    over_known: Option<f64>,
    known_ms: i64,
}

impl SiteSummary {
    fn of(s: &SiteReport, end_ms: i64) -> Self {
        SiteSummary {
            status: site_status(s, default_thresholds(s.tier)),
            availability: s.figures.availability,
            data_ms: s.new_since_ms.map(|since| end_ms.saturating_sub(since)),
            over_known: s.figures.availability_over_known(),
            known_ms: s.figures.known_ms,
        }
    }

    /// `good`, or `new, 3 h of data`.
    fn label(&self) -> String {
        match self.data_ms {
            Some(data) if self.status == SiteStatus::New => format!("new, {} of data", span(data)),
            _ => self.status.name().to_string(),
        }
    }

    /// The availability as shown: the 24-hour figure, or for a new site the figure over the
    /// time known with that coverage (`99.2% over 3 h`) rather than `n/a`.
    fn figure(&self) -> String {
        if self.data_ms.is_some() || self.availability.is_none() {
            pct_over(self.over_known, self.known_ms)
        } else {
            pct(self.availability)
        }
    }
}

/// How long a page waits for site statuses not computed yet (the first view after a start or
/// a reload) before it renders without them; a small VO's are ready well within it.
const COLD_WAIT: Duration = Duration::from_millis(150);

/// What a page shows beside a site.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StatusView {
    /// The site's 24-hour status and figures.
    Known(SiteSummary),
    /// No service of the site counts for availability.
    NotCounted,
    /// Still being computed (first view after a start or reload).
    Pending,
}

impl StatusView {
    fn of(statuses: Option<&SiteStatuses>, site: &str) -> Self {
        match statuses {
            None => StatusView::Pending,
            Some(m) => m
                .get(site)
                .map_or(StatusView::NotCounted, |s| StatusView::Known(*s)),
        }
    }
}

struct StatusEntry {
    /// Which service and plan the value belongs to. Holding `Weak`s keeps the allocations, so
    /// a new service (tests, benchmarks) can never reuse an address and get a stale answer.
    shared: Weak<Shared>,
    config: Weak<Config>,
    /// The statuses and when they were computed; `None` until the first computation ends.
    value: Option<(Instant, Arc<SiteStatuses>)>,
    /// A computation is running (one at a time, whatever the number of requests).
    refreshing: bool,
}

impl StatusEntry {
    fn belongs_to(&self, shared: &Arc<Shared>, config: &Arc<Config>) -> bool {
        Weak::as_ptr(&self.shared) == Arc::as_ptr(shared)
            && Weak::as_ptr(&self.config) == Arc::as_ptr(config)
    }
}

static STATUS_CACHE: Mutex<Option<StatusEntry>> = Mutex::new(None);
/// Woken when a computation ends, for the requests waiting on a cold cache.
static STATUS_READY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The 24-hour status of every site, computed in the background: reused for [`STATUS_TTL`],
/// then refreshed while the old value is still served; a reload (new plan) starts afresh.
/// `None` while the first computation is still running after [`COLD_WAIT`], so that no
/// request waits seconds for it on a large VO.
async fn site_statuses(state: &HttpState, config: &Arc<Config>) -> Option<Arc<SiteStatuses>> {
    let notified = STATUS_READY.notified();
    tokio::pin!(notified);
    // Registered before looking, so a computation ending in between still wakes us.
    notified.as_mut().enable();
    let (value, start) = {
        let mut guard = STATUS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if !guard
            .as_ref()
            .is_some_and(|e| e.belongs_to(&state.shared, config))
        {
            *guard = None;
        }
        let e = guard.get_or_insert_with(|| StatusEntry {
            shared: Arc::downgrade(&state.shared),
            config: Arc::downgrade(config),
            value: None,
            refreshing: false,
        });
        let fresh = e
            .value
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < STATUS_TTL);
        let start = !fresh && !e.refreshing;
        e.refreshing |= start;
        (e.value.as_ref().map(|(_, v)| v.clone()), start)
    };
    if start {
        let (state, config) = (state.clone(), config.clone());
        tokio::spawn(async move {
            let outcome = compute_statuses(state.store.as_ref(), &config, now_ms()).await;
            {
                let mut guard = STATUS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = guard
                    .as_mut()
                    .filter(|e| e.belongs_to(&state.shared, &config))
                {
                    e.refreshing = false;
                    match outcome {
                        Ok(v) => e.value = Some((Instant::now(), Arc::new(v))),
                        // The page says the statuses are missing; the next request retries.
                        Err(err) => tracing::warn!(error = ?err, "computing the site statuses"),
                    }
                }
            }
            STATUS_READY.notify_waiters();
        });
    }
    if value.is_some() {
        return value;
    }
    let _ = tokio::time::timeout(COLD_WAIT, notified).await;
    let guard = STATUS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .as_ref()
        .filter(|e| e.belongs_to(&state.shared, config))
        .and_then(|e| e.value.as_ref().map(|(_, v)| v.clone()))
}

/// Site statuses from one availability report over the last 24 hours (the dashboards'
/// thresholds per tier).
async fn compute_statuses(
    store: &dyn ResultStore,
    config: &Arc<Config>,
    now: i64,
) -> Result<SiteStatuses, PageError> {
    let period = Period {
        start_ms: now - DAY_MS,
        end_ms: now,
        label: "24h".into(),
    };
    let cells = store
        .timelines(period.start_ms, period.end_ms, &CellFilter::default())
        .await?;
    let downtimes = store.downtimes(period.start_ms, period.end_ms).await?;
    let config = config.clone();
    // Pure computation over every site: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let report = compute(
            &config,
            None,
            &period,
            &cells,
            &downtimes,
            DEFAULT_UNKNOWN_THRESHOLD,
        )
        .map_err(PageError::Internal)?;
        Ok(report
            .sites
            .iter()
            .map(|s| (s.site.clone(), SiteSummary::of(s, period.end_ms)))
            .collect())
    })
    .await
    .map_err(|e| PageError::Internal(format!("site status computation failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// `/`: the matrix

/// Filters of `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MatrixFilters {
    vo: Option<String>,
    tier: Option<u8>,
    flavour: Option<String>,
}

fn matrix_filters(
    config: &Config,
    params: &HashMap<&'static str, String>,
) -> Result<MatrixFilters, PageError> {
    let mut f = MatrixFilters::default();
    if let Some(vo) = params.get("vo") {
        if vo != &config.vo {
            return Err(PageError::bad(
                "vo",
                format!("unknown VO `{vo}`: this service monitors `{}`", config.vo),
            ));
        }
        f.vo = Some(vo.clone());
    }
    if let Some(t) = params.get("tier") {
        match t.parse::<u8>() {
            Ok(n) if n <= 3 => f.tier = Some(n),
            _ => {
                return Err(PageError::bad(
                    "tier",
                    format!("`{t}` is not a tier: write 0, 1, 2 or 3"),
                ))
            }
        }
    }
    if let Some(fl) = params.get("flavour") {
        let known = flavours(config);
        if !known.contains(fl.as_str()) {
            return Err(PageError::bad(
                "flavour",
                format!(
                    "no service has flavour `{fl}`{} (known: {})",
                    hint(fl, known.iter().copied()),
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        f.flavour = Some(fl.clone());
    }
    Ok(f)
}

/// Flavours of the configuration's services, sorted.
fn flavours(config: &Config) -> BTreeSet<&str> {
    config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.flavour.as_str()))
        .collect()
}

/// One site line of the matrix.
#[derive(Debug)]
struct SiteLine {
    name: String,
    status: StatusView,
    instances: usize,
    /// One per shown column; `None` where no probe of the column applies.
    cells: Vec<Option<CellView>>,
}

/// The sites of one tier.
#[derive(Debug)]
struct TierGroup {
    tier: u8,
    sites: Vec<SiteLine>,
}

/// Everything `/` shows.
#[derive(Debug)]
struct MatrixPage {
    vo: String,
    filters: MatrixFilters,
    tiers_known: BTreeSet<u8>,
    flavours_known: Vec<String>,
    /// (full metric, short name) per shown column.
    columns: Vec<(String, String)>,
    groups: Vec<TierGroup>,
    /// Cells per shown state name, for the summary line.
    counts: Vec<(Shown, usize)>,
    /// Whether the site statuses are still being computed.
    statuses_pending: bool,
}

/// A rendered matrix page is reused while nothing new was written, and at most this long
/// (ages and MISSING cells move with the clock).
const PAGE_MAX_AGE: Duration = Duration::from_secs(5);
/// After a write, a page is still reused this long, so a steady stream of results costs at
/// most one rendering per second.
const PAGE_MIN_AGE: Duration = Duration::from_secs(1);
/// While one request renders, others get the previous rendering if it is no older than this.
const PAGE_STALE_OK: Duration = Duration::from_secs(30);
/// Distinct filter combinations kept.
const PAGE_SLOTS: usize = 32;

/// One rendered matrix page: for which service, plan and query, as of which write.
struct RenderedPage {
    key: (usize, usize, String),
    /// Held so that the addresses in `key` cannot be reused by a later service or plan.
    _owners: (Weak<Shared>, Weak<Config>),
    written: u64,
    at: Instant,
    body: maud::Markup,
}

static MATRIX_PAGES: Mutex<Vec<RenderedPage>> = Mutex::new(Vec::new());
/// One rendering at a time: concurrent requests share it instead of each paying ~100 ms.
static MATRIX_RENDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cached rendering for `key` that `usable` accepts.
fn cached_page(
    key: &(usize, usize, String),
    usable: impl Fn(&RenderedPage) -> bool,
) -> Option<maud::Markup> {
    let pages = MATRIX_PAGES.lock().unwrap_or_else(|p| p.into_inner());
    pages
        .iter()
        .find(|p| &p.key == key && usable(p))
        .map(|p| p.body.clone())
}

fn keep_page(page: RenderedPage) {
    let mut pages = MATRIX_PAGES.lock().unwrap_or_else(|p| p.into_inner());
    pages.retain(|p| p.key != page.key);
    if pages.len() >= PAGE_SLOTS {
        // The oldest goes (also those of a replaced plan, which are never asked for again).
        if let Some(oldest) = pages
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| p.at)
            .map(|(i, _)| i)
        {
            pages.swap_remove(oldest);
        }
    }
    pages.push(page);
}

async fn matrix_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let plan = state.shared.plan();
    let config = plan.config;
    let page = |result| Page {
        vo: config.vo.clone(),
        started,
        result,
    };
    let title = || "Availability matrix".to_string();
    let key = query.as_ref().ok().map(|q| {
        (
            Arc::as_ptr(&state.shared) as usize,
            Arc::as_ptr(&config) as usize,
            format!("{:?}", q.0),
        )
    });
    let written = || {
        state
            .shared
            .writer()
            .stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let fresh = |p: &RenderedPage| {
        let age = p.at.elapsed();
        age < PAGE_MAX_AGE && (p.written == written() || age < PAGE_MIN_AGE)
    };
    if let Some(key) = &key {
        if let Some(body) = cached_page(key, fresh) {
            return page(Ok((title(), body)));
        }
    }
    // One renders; the others take the previous rendering meanwhile, or wait for this one.
    let _rendering = match MATRIX_RENDER.try_lock() {
        Ok(guard) => guard,
        Err(_) => {
            if let Some(key) = &key {
                if let Some(body) = cached_page(key, |p| p.at.elapsed() < PAGE_STALE_OK) {
                    return page(Ok((title(), body)));
                }
            }
            let guard = MATRIX_RENDER.lock().await;
            if let Some(key) = &key {
                if let Some(body) = cached_page(key, fresh) {
                    return page(Ok((title(), body)));
                }
            }
            guard
        }
    };
    let as_of = written();
    let result = async {
        let params = query_params(query, &["vo", "tier", "flavour"])?;
        let filters = matrix_filters(&config, &params)?;
        let built = build_matrix_page(&state, &config, filters, now_ms()).await?;
        Ok((title(), render::matrix(&built)))
    }
    .await;
    if let (Some(key), Ok((_, body))) = (key, &result) {
        keep_page(RenderedPage {
            key,
            _owners: (Arc::downgrade(&state.shared), Arc::downgrade(&config)),
            written: as_of,
            at: Instant::now(),
            body: body.clone(),
        });
    }
    page(result)
}

async fn build_matrix_page(
    state: &HttpState,
    config: &Arc<Config>,
    filters: MatrixFilters,
    now: i64,
) -> Result<MatrixPage, PageError> {
    let latest = state
        .store
        .latest(&CellFilter {
            vo: Some(config.vo.clone()),
            site: None,
            flavour: filters.flavour.clone(),
        })
        .await?;
    let downtimes: Vec<Downtime> = downtimes_between(state.store.as_ref(), config, now, now + 1)
        .await?
        .into_iter()
        .filter(|d| d.outage)
        .collect();
    let statuses = site_statuses(state, config).await;
    let mut matrix = build_matrix(
        config,
        &latest,
        now,
        &MatrixFilter {
            site: None,
            flavour: filters.flavour.clone(),
        },
    );
    if let Some(t) = filters.tier {
        matrix.sites.retain(|s| s.tier == t);
    }
    // Columns that still have a cell once the tier filter dropped sites.
    let shown: Vec<usize> = (0..matrix.columns.len())
        .filter(|&c| {
            matrix
                .sites
                .iter()
                .any(|s| s.instances.iter().any(|i| i.cells[c].is_some()))
        })
        .collect();
    let mut counts: HashMap<&'static str, (Shown, usize)> = HashMap::new();
    let mut groups: Vec<TierGroup> = Vec::new();
    for tier in 0..=3u8 {
        let mut sites = Vec::new();
        for row in matrix.sites.iter().filter(|s| s.tier == tier) {
            let mut cells = Vec::with_capacity(shown.len());
            for &c in &shown {
                // The best instance of the column, with a downtime overriding its result.
                let mut best: Option<(Shown, &Cell, &str, Option<&Downtime>)> = None;
                let mut n = 0;
                for inst in &row.instances {
                    let Some(cell) = &inst.cells[c] else { continue };
                    n += 1;
                    let dt = outage_of(&downtimes, &row.site, &inst.hostname, &inst.flavour);
                    let s = if dt.is_some() {
                        Shown::Downtime
                    } else {
                        Shown::State(cell.state)
                    };
                    if best.is_none_or(|(b, ..)| s.rank() > b.rank()) {
                        best = Some((s, cell, &inst.hostname, dt));
                    }
                }
                cells.push(best.map(|(s, cell, host, dt)| {
                    counts.entry(s.name()).or_insert((s, 0)).1 += 1;
                    CellView::of(cell, host, dt, n)
                }));
            }
            sites.push(SiteLine {
                name: row.site.clone(),
                status: StatusView::of(statuses.as_deref(), &row.site),
                instances: row.instances.len(),
                cells,
            });
        }
        if !sites.is_empty() {
            groups.push(TierGroup { tier, sites });
        }
    }
    let mut counts: Vec<(Shown, usize)> = counts.into_values().collect();
    counts.sort_by_key(|(s, _)| std::cmp::Reverse(s.rank()));
    Ok(MatrixPage {
        vo: config.vo.clone(),
        filters,
        tiers_known: config.sites.iter().map(|s| s.tier).collect(),
        flavours_known: flavours(config).into_iter().map(str::to_string).collect(),
        columns: shown
            .iter()
            .map(|&c| {
                (
                    matrix.columns[c].metric.clone(),
                    matrix.columns[c].short.clone(),
                )
            })
            .collect(),
        groups,
        counts,
        statuses_pending: statuses.is_none(),
    })
}

// ---------------------------------------------------------------------------------------------
// `/sites/{site}`

/// One instance × probe strip of the last 24 hours.
#[derive(Debug)]
struct Strip {
    hostname: String,
    flavour: String,
    short: String,
    metric: String,
    segments: Vec<Segment>,
}

/// Everything a site page shows.
#[derive(Debug)]
struct SitePage {
    site: gridprobe_config::Site,
    status: StatusView,
    /// (full metric, short name) per column.
    columns: Vec<(String, String)>,
    /// (hostname, flavour, production, cells) per instance.
    instances: Vec<(String, String, bool, Vec<Option<CellView>>)>,
    day_start: i64,
    now: i64,
    strips: Vec<Strip>,
    month_label: String,
    month: Option<SiteReport>,
    current: Vec<Downtime>,
    upcoming: Vec<Downtime>,
    /// Whether `[access]` declares any token, i.e. whether a run can be started at all.
    runs_possible: bool,
    /// (full metric, short name) of the probes that apply to the site, for the run form.
    probes: Vec<(String, String)>,
}

async fn site_page(State(state): State<HttpState>, Path(site): Path<String>) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let result = async {
        let Some(si) = config.site_index(&site) else {
            return Err(PageError::NotFound(format!(
                "no site named `{site}` in vo {}{}",
                config.vo,
                hint(&site, config.sites.iter().map(|s| s.name.as_str()))
            )));
        };
        let page = build_site_page(&state, &config, si, now_ms()).await?;
        Ok((page.site.name.clone(), render::site(&page)))
    }
    .await;
    Page {
        vo: config.vo.clone(),
        started,
        result,
    }
}

/// Start of the current month (UTC) and its label, e.g. `2026-10`.
fn month_start(now: i64) -> Option<(i64, String)> {
    let z = jiff::Timestamp::from_millisecond(now)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC);
    let first = z.date().first_of_month();
    let start = first
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp()
        .as_millisecond();
    Some((start, format!("{:04}-{:02}", first.year(), first.month())))
}

async fn build_site_page(
    state: &HttpState,
    vo_config: &Arc<Config>,
    site_index: usize,
    now: i64,
) -> Result<SitePage, PageError> {
    // The VO cut down to this site: matrix, strips and report then cost the site's size, not
    // the VO's (the report otherwise computes every site of a 1,000-site VO).
    let config = &Config {
        vo: vo_config.vo.clone(),
        defaults: vo_config.defaults.clone(),
        sites: vec![vo_config.sites[site_index].clone()],
        probes: vo_config.probes.clone(),
        profiles: vo_config.profiles.clone(),
        downtimes: vo_config.downtimes.clone(),
        ..Config::default()
    };
    let si = 0;
    let site = &config.sites[si];
    let filter = CellFilter {
        vo: Some(config.vo.clone()),
        site: Some(site.name.clone()),
        flavour: None,
    };
    let day_start = now - DAY_MS;
    let (month_start, month_label) = month_start(now).unwrap_or((day_start, "24h".into()));
    let since = month_start.min(day_start);

    let latest = state.store.latest(&filter).await?;
    // One read of the timelines serves both the month's figures and the 24-hour strips.
    let cells = state
        .store
        .timelines(since, now, &CellFilter { vo: None, ..filter })
        .await?;
    let downtimes = downtimes_between(state.store.as_ref(), config, since, now + UPCOMING).await?;
    let statuses = site_statuses(state, vo_config).await;

    let matrix = build_matrix(
        config,
        &latest,
        now,
        &MatrixFilter {
            site: Some(site.name.clone()),
            flavour: None,
        },
    );
    let columns: Vec<(String, String)> = matrix
        .columns
        .iter()
        .map(|c| (c.metric.clone(), c.short.clone()))
        .collect();
    let current: Vec<Downtime> = downtimes
        .iter()
        .filter(|d| d.start_ms <= now && d.end_ms > now && touches(d, site))
        .cloned()
        .collect();
    let mut upcoming: Vec<Downtime> = downtimes
        .iter()
        .filter(|d| d.start_ms > now && touches(d, site))
        .cloned()
        .collect();
    upcoming.sort_by_key(|d| d.start_ms);
    let mut instances = Vec::new();
    if let Some(row) = matrix.sites.first() {
        for inst in &row.instances {
            let dt = outage_of(&current, &site.name, &inst.hostname, &inst.flavour);
            let production = site
                .services
                .iter()
                .find(|s| s.hostname == inst.hostname && s.flavour == inst.flavour)
                .is_none_or(|s| s.production);
            instances.push((
                inst.hostname.clone(),
                inst.flavour.clone(),
                production,
                inst.cells
                    .iter()
                    .map(|c| c.as_ref().map(|c| CellView::of(c, &inst.hostname, dt, 1)))
                    .collect(),
            ));
        }
    }

    // Strips: each cell's timeline over the last 24 hours, as the availability computation
    // sees it (freshness, MISSING, outages as DOWNTIME).
    let by_cell: HashMap<&CellKey, &Vec<(i64, Status)>> =
        cells.iter().map(|(k, v)| (k, v)).collect();
    let day = day_start..now;
    let mut strips = Vec::new();
    for inst in config.instances().iter().filter(|i| i.site == si) {
        let svc = &site.services[inst.service];
        let probe = &config.probes[inst.probe];
        let key = CellKey {
            site: site.name.clone(),
            hostname: svc.hostname.clone(),
            flavour: svc.flavour.clone(),
            metric: probe.metric.clone(),
        };
        let spans: Vec<DowntimeSpan> = downtimes
            .iter()
            .filter(|d| d.outage && d.covers(&site.name, &svc.hostname, &svc.flavour))
            .map(|d| DowntimeSpan {
                span: d.start_ms..d.end_ms,
                scheduled: d.scheduled,
            })
            .collect();
        let points = by_cell.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
        let freshness = i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX);
        strips.push(Strip {
            hostname: svc.hostname.clone(),
            flavour: svc.flavour.clone(),
            short: probe.short.clone(),
            metric: probe.metric.clone(),
            segments: metric_timeline(points, freshness, &day, &spans),
        });
    }

    // Month to date: the future part of the month is not "missing".
    let month = if month_start < now {
        let period = Period {
            start_ms: month_start,
            end_ms: now,
            label: month_label.clone(),
        };
        let report = compute(
            config,
            None,
            &period,
            &cells,
            &downtimes,
            DEFAULT_UNKNOWN_THRESHOLD,
        )
        .map_err(PageError::Internal)?;
        report.sites.into_iter().find(|s| s.site == site.name)
    } else {
        None
    };
    let probes: Vec<(String, String)> = columns.clone();
    Ok(SitePage {
        site: site.clone(),
        status: StatusView::of(statuses.as_deref(), &site.name),
        columns,
        instances,
        day_start,
        now,
        strips,
        month_label,
        month,
        current,
        upcoming,
        runs_possible: !vo_config.access.tokens.is_empty(),
        probes,
    })
}

/// Whether a downtime concerns a site: declared for it, or for one of its services.
fn touches(d: &Downtime, site: &gridprobe_config::Site) -> bool {
    d.site.as_deref() == Some(site.name.as_str())
        || (d.site.is_none()
            && site
                .services
                .iter()
                .any(|s| d.covers(&site.name, &s.hostname, &s.flavour)))
}

/// Class of a strip segment.
fn segment_class(s: AStatus) -> &'static str {
    match s {
        AStatus::Ok => "t-ok",
        AStatus::Warning => "t-warn",
        AStatus::Critical => "t-error",
        AStatus::Unknown => "t-unkn",
        AStatus::Missing => "t-missing",
        AStatus::Downtime { .. } => "t-dt",
    }
}

// ---------------------------------------------------------------------------------------------
// `/results/{id}`

/// Everything a result page shows.
#[derive(Debug)]
struct ResultPage {
    result: StoredResult,
    /// Short name when the probe is still configured.
    short: Option<String>,
    /// Up to [`PREVIOUS_RESULTS`] results of the cell started before this one, newest first.
    previous: Vec<StoredResult>,
    /// The cell's newest result when it is not this one.
    newest: Option<StoredResult>,
    now: i64,
}

async fn result_page(State(state): State<HttpState>, Path(id): Path<String>) -> Page {
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
        let page = ResultPage {
            short: config
                .probe_index(&r.metric)
                .map(|i| config.probes[i].short.clone()),
            result,
            previous,
            newest,
            now: now_ms(),
        };
        Ok((format!("Result {id}"), render::result(&page)))
    }
    .await;
    Page {
        vo: config.vo.clone(),
        started,
        result,
    }
}

// ---------------------------------------------------------------------------------------------
// `/reasons`

/// Everything `/reasons` shows.
#[derive(Debug)]
struct ReasonsPage {
    since: String,
    reasons: Vec<Reason>,
    /// Whether the failures read hit [`REASONS_LIMIT`] (older ones were left out).
    truncated: bool,
    /// Full metric → short name.
    shorts: HashMap<String, String>,
}

async fn reasons_page(
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
    Page {
        vo: config.vo.clone(),
        started,
        result,
    }
}

/// Figures of a report row, for the site page: availability, reliability, maintenance,
/// unknown.
/// Where a ratio is n/a because most of the period is unknown (a new site), the ratio over the
/// time known is shown with that time instead.
fn figure_cells(f: &Figures) -> [String; 4] {
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

#[cfg(test)]
mod tests;
