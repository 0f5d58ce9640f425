//! `/api/v1/recomputations`: list (GET), request (POST), and an operator's decisions
//! (`POST /api/v1/recomputations/{id}/approve|reject|revoke`). Writing needs a bearer token:
//! site admins may request for their own sites, operators for anything and decide.

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use gridprobe_config::Role;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::Status;
use gridprobe_results::recompute::{
    may_request, Change, RecomputationRequest, Scope, State as RState, StepKind,
};
use gridprobe_results::recompute_flow;
use gridprobe_results::report::{parse_period, PERIOD_FORMS};
use serde::Deserialize;

use crate::access::{identify, Identity};
use crate::api::{read_body, ApiError, ApiResult, Params};
use crate::http::HttpState;

/// The routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/recomputations", get(list).post(request))
        .route("/api/v1/recomputations/{id}/approve", post(approve))
        .route("/api/v1/recomputations/{id}/reject", post(reject))
        .route("/api/v1/recomputations/{id}/revoke", post(revoke))
        .layer(axum::extract::DefaultBodyLimit::max(crate::api::MAX_BODY))
}

async fn list(
    State(state): State<HttpState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(raw, &["state"])?;
    let wanted = match params.text("state") {
        None => None,
        Some(s) => Some(
            [
                RState::Pending,
                RState::Approved,
                RState::Rejected,
                RState::Applied,
                RState::Revoked,
            ]
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid parameter `state`",
                    "write pending, approved, rejected, applied or revoked",
                )
            })?,
        ),
    };
    let all: Vec<_> = state
        .store
        .recomputations()
        .await?
        .into_iter()
        .filter(|r| wanted.is_none_or(|w| r.state == w))
        .collect();
    Ok(Json(serde_json::json!({ "recomputations": all })).into_response())
}

fn who(state: &HttpState, headers: &HeaderMap, what: &str) -> Result<Identity, ApiError> {
    let config = state.shared.plan().config;
    match identify(&config.access, headers) {
        Ok(Some(who)) => Ok(who),
        Ok(None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication required",
            format!("{what} needs `Authorization: Bearer <token>`"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid credentials",
            e.to_string(),
        )),
    }
}

/// A request as the API takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    period: String,
    reason: String,
    #[serde(default)]
    sites: Vec<String>,
    #[serde(default)]
    flavours: Vec<String>,
    #[serde(default)]
    metrics: Vec<String>,
    action: String,
    status: Option<String>,
}

const REQUEST_FORM: &str = "expected {\"period\": \"2026-11-03\", \"reason\": \"...\", \
     \"sites\"?: [...], \"flavours\"?: [...], \"metrics\"?: [...], \"action\": \"exclude\" | \
     \"force\", \"status\"?: \"OK\"}";

async fn request(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let who = who(&state, &headers, "requesting a recomputation")?;
    let body = read_body(body).await?;
    let req: RequestBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request body",
            format!("{e}; {REQUEST_FORM}"),
        )
    })?;
    let refused =
        |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "recomputation refused", detail);
    let now = unix_ms(SystemTime::now());
    let period = parse_period(&req.period, now)
        .map_err(|e| refused(format!("{e} (periods: {PERIOD_FORMS})")))?;
    let change = match (req.action.as_str(), req.status.as_deref()) {
        ("exclude", None) => Change::Exclude,
        ("force", Some(s)) => Change::Force {
            status: Status::parse(s).ok_or_else(|| {
                refused(format!(
                    "unknown status `{s}`: write OK, WARNING, CRITICAL or UNKNOWN"
                ))
            })?,
        },
        ("force", None) => return Err(refused("`force` needs a `status`".into())),
        ("exclude", Some(_)) => return Err(refused("`exclude` takes no `status`".into())),
        (other, _) => {
            return Err(refused(format!(
                "unknown action `{other}`: write \"exclude\" or \"force\""
            )))
        }
    };
    let scope = Scope {
        sites: req.sites,
        flavours: req.flavours,
        metrics: req.metrics,
    };
    may_request(&who.role, &scope).map_err(|e| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "not allowed",
            format!("token `{}`: {e}", who.name),
        )
    })?;
    let request = RecomputationRequest {
        start_ms: period.start_ms,
        end_ms: period.end_ms,
        reason: req.reason,
        requester: who.name,
        scope,
        change,
    };
    let config = state.shared.plan().config;
    match recompute_flow::request(state.store.as_ref(), &config, request, now).await? {
        Ok(r) => Ok((StatusCode::CREATED, Json(r)).into_response()),
        Err(e) => Err(refused(e)),
    }
}

/// The body of a decision: an optional note (required to reject or revoke).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    note: String,
}

async fn decide(
    state: HttpState,
    headers: HeaderMap,
    id: String,
    body: axum::body::Body,
    decision: StepKind,
) -> ApiResult {
    let who = who(&state, &headers, "deciding on a recomputation")?;
    if who.role != Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not allowed",
            format!(
                "token `{}` is a site admin's: only operators decide on recomputations",
                who.name
            ),
        ));
    }
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid parameter `id`",
            format!("`{id}` is not a recomputation id"),
        )
    })?;
    let body = read_body(body).await?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid request body",
                format!("{e}; expected {{\"note\"?: \"...\"}} or no body"),
            )
        })?
    };
    let now = unix_ms(SystemTime::now());
    match recompute_flow::decide(
        state.store.as_ref(),
        id,
        decision,
        &who.name,
        &body.note,
        now,
    )
    .await?
    {
        Ok(r) => Ok(Json(r).into_response()),
        Err(e) if e.starts_with("no recomputation") => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown recomputation",
            e,
        )),
        Err(e) if e.contains("a note is required") => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "note required", e))
        }
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, "not allowed now", e)),
    }
}

async fn approve(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult {
    decide(state, headers, id, body, StepKind::Approved).await
}

async fn reject(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult {
    decide(state, headers, id, body, StepKind::Rejected).await
}

async fn revoke(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult {
    decide(state, headers, id, body, StepKind::Revoked).await
}
