//! The JSON API under `/api/v1`, documented by `/api/openapi.json`. Every error is
//! `{error, detail}` with the right status; every query parameter is checked by name.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridprobe_config::Config;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::Status;
use gridprobe_results::matrix::{build_matrix, MatrixFilter};
use gridprobe_results::report::{
    self as report, default_thresholds, parse_period, site_status, Period, ReportError,
    PERIOD_FORMS,
};
use gridprobe_results::{CellFilter, HistoryQuery, StoreError};
use serde::Deserialize;

use crate::batch::{SelectError, Selection};
use crate::http::HttpState;
use crate::ondemand::StartError;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest accepted request body.
pub const MAX_BODY: usize = 16 * 1024;

/// Time for a request body to arrive in full once the head is in (a client trickling its body
/// must not hold the connection).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body of at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`]: 413 when
/// larger, 408 when too slow, 400 when its framing is broken (a bad chunk).
pub async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            Err(if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                    format!("request bodies are limited to {MAX_BODY} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid request body",
                    format!("the body could not be read: {e}"),
                )
            })
        }
    }
}

/// An API error: status code, short error, detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    detail: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status.
    pub fn new(status: StatusCode, error: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_param(name: &str, detail: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid parameter `{name}`"),
            detail,
        )
    }

    fn not_found(what: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, what, detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "result store unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Query parameters, checked by name; each at most once.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn new(raw: Vec<(String, String)>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut params = HashMap::new();
        for (key, value) in raw {
            if !allowed.contains(&key.as_str()) {
                let hint = gridprobe_config::did_you_mean(&key, allowed.iter().copied())
                    .map(|b| format!(" (did you mean `{b}`?)"))
                    .unwrap_or_default();
                return Err(ApiError::bad_param(
                    &key,
                    format!(
                        "unknown parameter{hint}; accepted here: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if value.trim().is_empty() {
                return Err(ApiError::bad_param(
                    &key,
                    "empty; give a value, or leave the parameter out",
                ));
            }
            if params.contains_key(&key) {
                return Err(ApiError::bad_param(
                    &key,
                    "given more than once; give each parameter once",
                ));
            }
            params.insert(key, value);
        }
        Ok(Params(params))
    }

    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// A time: a duration back from now (`24h`), an absolute UTC time, or ms since the epoch.
    fn time(&self, name: &str, now: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        if let Ok(ms) = v.parse::<i64>() {
            return Ok(Some(ms));
        }
        if let Ok(d) = gridprobe_config::parse_duration(&v) {
            return Ok(Some(
                i64::try_from(d.as_millis())
                    .ok()
                    .and_then(|ms| now.checked_sub(ms))
                    .unwrap_or(i64::MIN),
            ));
        }
        gridprobe_config::time::parse_utc(&v).map(Some).map_err(|_| {
            ApiError::bad_param(name, format!("`{v}` is not a time: write a duration back from now (24h, 7d), a UTC time (2026-10-05T08:00:00Z) or ms since the epoch"))
        })
    }

    pub(crate) fn number(&self, name: &str, max: usize) -> Result<Option<usize>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad_param(
                    name,
                    format!("`{v}` must be a whole number from 1 to {max}"),
                )),
            },
        }
    }
}

pub(crate) fn check_site(config: &Config, site: &str) -> Result<(), ApiError> {
    if config.site_index(site).is_some() {
        return Ok(());
    }
    let hint = gridprobe_config::did_you_mean(site, config.sites.iter().map(|s| s.name.as_str()))
        .map(|b| format!("; did you mean `{b}`?"))
        .unwrap_or_default();
    Err(ApiError::not_found(
        "unknown site",
        format!("no site named `{site}`{hint}"),
    ))
}

/// The API's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/sites/{site}", get(site))
        .route("/api/v1/matrix", get(matrix))
        .route("/api/v1/results", get(results))
        .route("/api/v1/results/{id}", get(result))
        .route("/api/v1/availability", get(availability))
        .route("/api/v1/reasons", get(reasons))
        .route("/api/v1/trends", get(trends))
        .route("/api/v1/runs", post(start_run))
        .route("/api/v1/runs/{id}", get(run))
        .route("/api/v1/credentials", get(credentials))
        .route("/api/v1/agents", get(agents))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The site agents seen (site, name, version, last seen, runs in flight) and the dispatcher's
/// counters; `configured` is false (and the lists empty) without `[agents]`.
async fn agents(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    Params::new(raw, &[])?;
    let remote = state.shared.remote();
    let plan = state.shared.plan();
    let agent_sites: Vec<&str> = plan
        .config
        .sites
        .iter()
        .filter(|s| s.executor == gridprobe_config::agents::Executor::Agent)
        .map(|s| s.name.as_str())
        .collect();
    let body = serde_json::json!({
        "configured": remote.is_some(),
        "sites": agent_sites,
        "agents": remote.as_ref().map(|r| r.agents()).unwrap_or_default(),
        "counts": remote.as_ref().map(|r| r.counts()).unwrap_or_default(),
    });
    Ok(Json(body).into_response())
}

/// The state of each `[[credential]]` (never the secret).
async fn credentials(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    Params::new(raw, &[])?;
    let time = |t: Option<i64>| t.map(gridprobe_config::time::format_utc_ms);
    let list: Vec<serde_json::Value> = state
        .shared
        .plan()
        .probes
        .credentials
        .states()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "kind": c.kind,
                "valid": c.valid,
                "valid_until": time(c.valid_until_ms),
                "last_renewal": time(c.last_renewal_ms),
                "last_error": c.last_error,
                "renewal_failures": c.renewal_failures,
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Site statuses over the last 24 hours, by site name.
async fn site_statuses(
    state: &HttpState,
    config: &Config,
    site: Option<&str>,
) -> Result<HashMap<String, &'static str>, ApiError> {
    let now = unix_ms(SystemTime::now());
    let period = Period {
        start_ms: now - 86_400_000,
        end_ms: now,
        label: "24h".into(),
    };
    let filter = CellFilter {
        site: site.map(str::to_string),
        ..Default::default()
    };
    let report = report::from_store(state.store.as_ref(), config, None, &period, &filter, 0.9)
        .await
        .map_err(|e| match e {
            ReportError::Store(e) => ApiError::from(e),
            ReportError::Invalid(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "report failed", e)
            }
        })?;
    Ok(report
        .sites
        .iter()
        .map(|s| {
            (
                s.site.clone(),
                site_status(s, default_thresholds(s.tier)).name(),
            )
        })
        .collect())
}

async fn sites(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(raw, &["tier"])?;
    let tier =
        match p.text("tier") {
            None => None,
            Some(t) => Some(t.parse::<u8>().ok().filter(|t| *t <= 3).ok_or_else(|| {
                ApiError::bad_param("tier", format!("`{t}` must be 0, 1, 2 or 3"))
            })?),
        };
    let config = state.shared.plan().config;
    let statuses = site_statuses(&state, &config, None).await?;
    let list: Vec<serde_json::Value> = config
        .sites
        .iter()
        .filter(|s| tier.is_none_or(|t| s.tier == t))
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "tier": s.tier,
                "grid": s.grid,
                "country": s.country,
                "services": s.services.len(),
                "status": statuses.get(&s.name).copied().unwrap_or("inactive"),
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn site(State(state): State<HttpState>, Path(name): Path<String>) -> ApiResult {
    let config = state.shared.plan().config;
    check_site(&config, &name)?;
    let now = unix_ms(SystemTime::now());
    let latest = state
        .store
        .latest(&CellFilter {
            site: Some(name.clone()),
            ..Default::default()
        })
        .await?;
    let matrix = build_matrix(
        &config,
        &latest,
        now,
        &MatrixFilter {
            site: Some(name.clone()),
            flavour: None,
        },
    );
    let statuses = site_statuses(&state, &config, Some(&name)).await?;
    let downtimes: Vec<gridprobe_config::Downtime> = state
        .store
        .downtimes(now, now + 1)
        .await?
        .into_iter()
        .chain(
            config
                .downtimes
                .iter()
                .filter(|d| d.start_ms <= now && now < d.end_ms)
                .cloned(),
        )
        .filter(|d| {
            d.site.as_deref() == Some(name.as_str())
                || d.hostname.as_deref().is_some_and(|h| {
                    config
                        .sites
                        .iter()
                        .any(|s| s.name == name && s.services.iter().any(|v| v.hostname == h))
                })
        })
        .collect();
    let Some(site) = config.sites.iter().find(|s| s.name == name) else {
        return Err(ApiError::not_found("unknown site", name));
    };
    Ok(Json(serde_json::json!({
        "name": site.name,
        "tier": site.tier,
        "grid": site.grid,
        "country": site.country,
        "contact": site.contact,
        "status": statuses.get(&site.name).copied().unwrap_or("inactive"),
        "services": site.services.iter().map(|s| serde_json::json!({
            "hostname": s.hostname,
            "flavour": s.flavour,
            "endpoint": s.endpoint.as_ref().map(|u| u.to_string()),
            "production": s.production,
        })).collect::<Vec<_>>(),
        "matrix": matrix,
        "downtimes": downtimes,
    }))
    .into_response())
}

async fn matrix(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(raw, &["vo", "tier", "flavour", "site"])?;
    let config = state.shared.plan().config;
    if let Some(vo) = p.text("vo") {
        if vo != config.vo {
            return Err(ApiError::not_found(
                "unknown vo",
                format!("this service monitors vo `{}`, not `{vo}`", config.vo),
            ));
        }
    }
    let tier =
        match p.text("tier") {
            None => None,
            Some(t) => Some(t.parse::<u8>().ok().filter(|t| *t <= 3).ok_or_else(|| {
                ApiError::bad_param("tier", format!("`{t}` must be 0, 1, 2 or 3"))
            })?),
        };
    let site = p.text("site");
    if let Some(s) = &site {
        check_site(&config, s)?;
    }
    let flavour = p.text("flavour");
    let latest = state.store.latest(&CellFilter::default()).await?;
    let mut m = build_matrix(
        &config,
        &latest,
        unix_ms(SystemTime::now()),
        &MatrixFilter { site, flavour },
    );
    if let Some(t) = tier {
        m.sites.retain(|s| s.tier == t);
    }
    Ok(Json(m).into_response())
}

async fn results(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(
        raw,
        &[
            "site", "service", "probe", "since", "until", "status", "limit", "cursor", "attempts",
        ],
    )?;
    let config = state.shared.plan().config;
    let now = unix_ms(SystemTime::now());
    if let Some(s) = p.text("site") {
        check_site(&config, &s)?;
    }
    let metric = match p.text("probe") {
        None => None,
        Some(name) => Some(
            config
                .probe_index(&name)
                .map(|i| config.probes[i].metric.clone())
                .ok_or_else(|| {
                    ApiError::not_found("unknown probe", format!("no probe named `{name}`"))
                })?,
        ),
    };
    let status = match p.text("status") {
        None => None,
        Some(s) => Some(Status::parse(&s).ok_or_else(|| {
            ApiError::bad_param(
                "status",
                format!("`{s}` is not a status: OK, WARNING, CRITICAL, UNKNOWN or STANDBY"),
            )
        })?),
    };
    let before = match p.text("cursor") {
        None => None,
        Some(c) => {
            let parsed = c
                .split_once('.')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.parse::<i64>().ok()?)));
            Some(parsed.ok_or_else(|| {
                ApiError::bad_param("cursor", "use the `next_cursor` of the previous page")
            })?)
        }
    };
    let attempts = match p.text("attempts").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::bad_param(
                "attempts",
                format!("`{v}` must be true or false"),
            ))
        }
    };
    let limit = p.number("limit", 1000)?.unwrap_or(100);
    let rows = state
        .store
        .history(&HistoryQuery {
            site: p.text("site"),
            hostname: p.text("service"),
            metric,
            since_ms: p.time("since", now)?,
            until_ms: p.time("until", now)?,
            include_attempts: attempts,
            status,
            before,
            limit,
            ..Default::default()
        })
        .await?;
    let next_cursor = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}.{}", r.result.started_at_ms, r.id))
        })
        .flatten();
    Ok(Json(serde_json::json!({ "results": rows, "next_cursor": next_cursor })).into_response())
}

async fn result(State(state): State<HttpState>, Path(id): Path<String>) -> ApiResult {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_param("id", format!("`{id}` is not a result id")))?;
    match state.store.get(id).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found(
            "unknown result",
            format!("no result with id {id}"),
        )),
    }
}

/// The `period` parameter (or `default`), bounded to ten years and to the retention.
fn period_param(p: &Params, default: &str, now: i64, config: &Config) -> Result<Period, ApiError> {
    let period_text = p.text("period").unwrap_or_else(|| default.into());
    let period = parse_period(&period_text, now).map_err(|e| {
        if e.contains("longer than") {
            ApiError::bad_param("period", e)
        } else {
            ApiError::bad_param("period", format!("`{period_text}`: write {PERIOD_FORMS}"))
        }
    })?;
    let retention_ms = i64::try_from(config.server.retention.as_millis()).unwrap_or(i64::MAX);
    report::check_retention(&period, now, retention_ms)
        .map_err(|e| ApiError::bad_param("period", e))?;
    Ok(period)
}

async fn availability(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(raw, &["period", "level", "profile", "site"])?;
    let config = state.shared.plan().config;
    let now = unix_ms(SystemTime::now());
    let period = period_param(&p, "24h", now, &config)?;
    let level = p.text("level").unwrap_or_else(|| "site".into());
    if !["site", "flavour", "instance"].contains(&level.as_str()) {
        return Err(ApiError::bad_param(
            "level",
            format!("`{level}` must be site, flavour or instance"),
        ));
    }
    let site = p.text("site");
    if let Some(s) = &site {
        check_site(&config, s)?;
    }
    let filter = CellFilter {
        site: site.clone(),
        ..Default::default()
    };
    let mut report = report::from_store(
        state.store.as_ref(),
        &config,
        p.text("profile").as_deref(),
        &period,
        &filter,
        0.9,
    )
    .await
    .map_err(|e| match e {
        ReportError::Store(e) => ApiError::from(e),
        ReportError::Invalid(e) => ApiError::bad_param("profile", e),
    })?;
    if let Some(s) = &site {
        report.sites.retain(|r| &r.site == s);
    }
    for s in &mut report.sites {
        match level.as_str() {
            "site" => s.flavours.clear(),
            "flavour" => s.flavours.iter_mut().for_each(|f| f.instances.clear()),
            _ => {}
        }
    }
    Ok(Json(report).into_response())
}

async fn reasons(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(raw, &["since", "limit"])?;
    let now = unix_ms(SystemTime::now());
    let since = p.time("since", now)?.unwrap_or(now - 86_400_000);
    let limit = p.number("limit", 1000)?.unwrap_or(20);
    let failures = state
        .store
        .history(&HistoryQuery {
            since_ms: Some(since),
            non_ok_only: true,
            limit: 1_000_000,
            ..Default::default()
        })
        .await?;
    let mut list = gridprobe_results::reasons::group(&failures);
    list.truncate(limit);
    Ok(Json(list).into_response())
}

/// `/api/v1/trends`: `results::trends` over a period (default 7d).
async fn trends(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(raw, &["period", "site", "limit"])?;
    let config = state.shared.plan().config;
    let now = unix_ms(SystemTime::now());
    let period = period_param(&p, "7d", now, &config)?;
    let site = p.text("site");
    if let Some(s) = &site {
        check_site(&config, s)?;
    }
    let limit = p
        .number("limit", gridprobe_results::trends::MAX_LIMIT)?
        .unwrap_or(gridprobe_results::trends::DEFAULT_LIMIT);
    let filter = CellFilter {
        site,
        ..Default::default()
    };
    let t = gridprobe_results::trends::from_store(
        state.store.as_ref(),
        &config,
        &period,
        &filter,
        limit,
    )
    .await?;
    Ok(Json(t).into_response())
}

/// Body of `POST /api/v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    site: String,
    service: Option<String>,
    probe: Option<String>,
}

async fn start_run(
    State(state): State<HttpState>,
    axum::Extension(authn): axum::Extension<crate::access::Authn>,
    body: axum::body::Body,
) -> ApiResult {
    let config = state.shared.plan().config;
    let who = match authn.who {
        Ok(Some(who)) => who,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required",
                "starting runs needs `Authorization: Bearer <token>` or a client certificate named by [[access.dn]]",
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid credentials",
                e.to_string(),
            ))
        }
    };
    let body = read_body(body).await?;
    let req: RunRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid request body", format!("{e}; expected {{\"site\": \"...\", \"service\"?: \"host\", \"probe\"?: \"metric\"}}")))?;
    check_site(&config, &req.site)?;
    if !who.role.may_run_at(&req.site) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not allowed",
            format!("`{}` may not start runs at site {}", who.name, req.site),
        ));
    }
    let selection = Selection {
        site: Some(req.site),
        service: req.service,
        probe: req.probe,
    };
    match state.runs.start(&state.shared, selection, &who.name) {
        Ok(id) => {
            let mut resp = (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "id": id, "status_url": format!("/api/v1/runs/{id}") })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/runs/{id}")) {
                resp.headers_mut().insert(axum::http::header::LOCATION, v);
            }
            Ok(resp)
        }
        Err(StartError::Select(e)) => Err(match e {
            SelectError::Empty(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "nothing to run", e.to_string())
            }
            _ => ApiError::not_found("unknown name", e.to_string()),
        }),
        Err(e @ StartError::Busy(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "run in flight",
            e.to_string(),
        )),
        Err(StartError::RateLimited {
            site,
            limit,
            retry_after,
        }) => {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many runs",
                format!("site {site} already had {limit} on-demand runs in the last hour ([access] runs_per_hour)"),
            );
            err.retry_after = Some(retry_after.as_secs().max(1));
            Err(err)
        }
    }
}

async fn run(State(state): State<HttpState>, Path(id): Path<String>) -> ApiResult {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_param("id", format!("`{id}` is not a run id")))?;
    state
        .runs
        .get(id)
        .map(|v| Json(v).into_response())
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown run",
                format!("no run with id {id} (finished runs are kept for an hour)"),
            )
        })
}
