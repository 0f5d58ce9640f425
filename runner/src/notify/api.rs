//! `/api/v1/notifications` (sent history), `/api/v1/problems` (what is not OK now) and
//! `/api/v1/acks` (list; POST for operators, and site admins for their own sites).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use gridprobe_probes::outcome::unix_ms;
use serde::Deserialize;

use super::acks::Ack;
use super::problems::problems;
use crate::access::identify;
use crate::api::{check_site, read_body, ApiError, ApiResult, Params};
use crate::http::HttpState;

/// Most history records one request returns.
const MAX_LIMIT: usize = 1000;
/// Ack expiry through the API: `N` + `m`/`h`/`d`, N from 1 to 9999 (what the OpenAPI
/// pattern says), so 1m to 9999d.
const EXPIRES: gridprobe_config::DurationRange = gridprobe_config::DurationRange::new(
    std::time::Duration::from_secs(60),
    std::time::Duration::from_secs(9999 * 86_400),
);

fn expires_form(e: &str) -> bool {
    let (num, unit) = e.split_at(e.len().saturating_sub(1));
    matches!(unit, "m" | "h" | "d")
        && (1..=4).contains(&num.len())
        && num.chars().all(|c| c.is_ascii_digit())
        && !num.starts_with('0')
}

/// The comment rule of the OpenAPI pattern: one line (no C0/C1 controls) with something
/// other than white space (U+FEFF counts as white space there).
fn comment_ok(c: &str) -> bool {
    c.chars().count() <= 1000
        && !c.chars().any(char::is_control)
        && c.chars().any(|ch| !ch.is_whitespace() && ch != '\u{feff}')
}

/// The routes.
pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/notifications", get(notifications))
        .route("/api/v1/problems", get(problems_route))
        .route("/api/v1/acks", get(list_acks).post(add_ack))
}

async fn notifications(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let p = Params::new(raw, &["site", "limit"])?;
    let config = state.shared.plan().config;
    let site = p.text("site");
    if let Some(s) = &site {
        check_site(&config, s)?;
    }
    let limit = p.number("limit", MAX_LIMIT)?.unwrap_or(100);
    let list = match &state.notify {
        Some(n) => n.store.notifications(site.as_deref(), limit).await?,
        None => Vec::new(),
    };
    Ok(Json(list).into_response())
}

async fn problems_route(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    Params::new(raw, &[])?;
    Ok(Json(problem_list(&state).await?).into_response())
}

/// The problems view for the API and the dashboard.
pub(crate) async fn problem_list(
    state: &HttpState,
) -> Result<Vec<super::problems::Problem>, ApiError> {
    let config = state.shared.plan().config;
    let now = unix_ms(std::time::SystemTime::now());
    let (acks, flapping) = match &state.notify {
        Some(n) => (
            refreshed(n, now).await,
            n.flapping.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(problems(&config, state.store.as_ref(), &acks, &flapping, now).await?)
}

/// The acks in force, read again from the store (another instance or `gridprobe ack` may
/// have changed them); the engine's copy when the store cannot be read.
async fn refreshed(n: &super::NotifierView, now: i64) -> Vec<Ack> {
    match n.acks.refresh(now).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "acknowledgements not re-read");
            n.acks.all().into_iter().filter(|a| a.active(now)).collect()
        }
    }
}

async fn list_acks(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    Params::new(raw, &[])?;
    let now = unix_ms(std::time::SystemTime::now());
    let list: Vec<Ack> = match &state.notify {
        Some(n) => refreshed(n, now).await,
        None => Vec::new(),
    };
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    site: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    metric: Option<String>,
    comment: String,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    sticky: bool,
}

async fn add_ack(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let config = state.shared.plan().config;
    let who = match identify(&config.access, &headers) {
        Ok(Some(who)) => who,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required",
                "acknowledging needs `Authorization: Bearer <token>`",
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
    let req: AckRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request body",
            format!("{e}; expected {{\"site\": \"...\", \"service\"?: \"host\", \"metric\"?: \"...\", \"comment\": \"...\", \"expires\"?: \"4h\", \"sticky\"?: false}}"),
        )
    })?;
    check_site(&config, &req.site)?;
    if !who.role.may_run_at(&req.site) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not allowed",
            format!(
                "token `{}` may not acknowledge problems at site {}",
                who.name, req.site
            ),
        ));
    }
    let comment = req.comment.trim();
    if !comment_ok(&req.comment) {
        return Err(ApiError::bad_param(
            "comment",
            "say why, on one line of at most 1000 characters",
        ));
    }
    if let Some(h) = &req.service {
        let known = config
            .sites
            .iter()
            .filter(|s| s.name == req.site)
            .any(|s| s.services.iter().any(|v| &v.hostname == h));
        if !known {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown service",
                format!("site {} has no service `{h}`", req.site),
            ));
        }
    }
    let now = unix_ms(std::time::SystemTime::now());
    let expires_ms = match &req.expires {
        Some(e) => {
            let bad = || ApiError::bad_param("expires", "1 to 9999 then m, h or d, e.g. \"4h\"");
            if !expires_form(e) {
                return Err(bad());
            }
            let d = gridprobe_config::parse_duration_in(e, EXPIRES).map_err(|_| bad())?;
            Some(now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        }
        None => None,
    };
    let Some(n) = &state.notify else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "notifications not configured",
            "acknowledgements need at least one [[notify]] channel",
        ));
    };
    // Unique within the process even for two requests in one millisecond.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{now:x}-api{seq}");
    let ack = Ack {
        id: id.clone(),
        site: req.site,
        hostname: req.service,
        metric: req.metric,
        comment: comment.to_string(),
        author: who.name,
        created_ms: now,
        expires_ms,
        sticky: req.sticky,
        status: None,
    };
    n.acks.add(ack, now).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ack not stored",
            e.to_string(),
        )
    })?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checks_match_the_openapi_patterns() {
        for ok in ["1m", "4h", "9999d", "366d"] {
            assert!(expires_form(ok), "{ok}");
            assert!(
                gridprobe_config::parse_duration_in(ok, EXPIRES).is_ok(),
                "{ok}"
            );
        }
        for bad in ["", "0m", "10000d", "1h 30m", "4", "h", "01h", "1s"] {
            assert!(!expires_form(bad), "{bad}");
        }
        assert!(comment_ok("disk replaced tomorrow"));
        for bad in ["", "   ", "\u{feff}", "a\u{85}", "a\nb", &"x".repeat(1001)] {
            assert!(!comment_ok(bad), "{bad:?}");
        }
    }
}
