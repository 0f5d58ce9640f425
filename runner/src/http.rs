//! The HTTP server of `gridprobe serve`: health and reload here; the JSON API (`api.rs`), the
//! dashboard (`dashboard/`) and `/metrics` (`metrics.rs`) are merged in as routers over the same
//! [`HttpState`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridprobe_config::{Access, Role};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use gridprobe_results::{ResultStore, WriterStats};

use crate::access::{AuthError, Authn};
use crate::api::ApiError;
use crate::state::ServeState;

/// How long `/healthz` waits for the store to say it can be written.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// A reload request: the reply is a one-line summary, or every configuration error.
pub type ReloadTrigger = mpsc::Sender<oneshot::Sender<Result<String, String>>>;

/// What the routes share.
#[derive(Clone)]
pub struct HttpState {
    /// The running service: plan, cell states, limits, recording.
    pub shared: Arc<ServeState>,
    /// The result store, for reads.
    pub store: Arc<dyn ResultStore>,
    /// Asks the service to re-read its configuration.
    pub reload: ReloadTrigger,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// On-demand runs.
    pub runs: Arc<crate::ondemand::RunManager>,
    /// Notifications, acknowledgements and flapping, when channels are configured.
    pub notify: Option<Arc<crate::notify::NotifierView>>,
}

/// The router of the service. Every method of every route passes the read guard; every error
/// it answers is JSON `{error, detail}` (the dashboard's pages excepted, which are HTML).
pub fn router(state: HttpState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(health))
        .route("/-/reload", post(reload))
        .merge(crate::login::routes())
        .merge(crate::api::routes())
        .merge(crate::recompute_api::routes())
        .merge(crate::notify::api::routes())
        .merge(crate::metrics::routes())
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_guard,
        ))
        .with_state(state);
    // Around the whole router (a layer on `routes` would run inside each route, before axum
    // adds the `Allow` header of a 405).
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(json_errors))
}

/// Finds out who made the request (bearer token, login session, client certificate) and
/// hands that to the handlers ([`Authn`]); rejects requests without a valid credential when
/// `[access] read = "token"`: every method (HEAD as GET, POST, OPTIONS, ...) on every route but
/// `/healthz` and the login page, before any handler runs. A browser asking
/// for a page gets the login page (`login.rs`), API clients the JSON 401.
pub async fn read_guard(
    State(state): State<HttpState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open_path = matches!(req.uri().path(), "/healthz" | "/-/login");
    let access = &state.shared.plan().config.access;
    let authn = crate::login::authenticate(access, &state.shared.sessions, &req);
    let who = authn.who.clone();
    req.extensions_mut().insert(authn);
    if access.read_requires_token && !open_path {
        let refused = match who {
            Ok(Some(_)) => None,
            Ok(None) => Some((
                "authentication required",
                "reading needs `Authorization: Bearer <token>` or a client certificate named by [[access.dn]] ([access] read = \"token\")".to_string(),
            )),
            Err(e) => Some(("invalid credentials", e.to_string())),
        };
        if let Some((error, detail)) = refused {
            if crate::login::wants_html(&req) {
                let next = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                let msg = (error == "invalid credentials").then_some(detail.as_str());
                return crate::login::page(StatusCode::UNAUTHORIZED, &next, msg);
            }
            return ApiError::new(StatusCode::UNAUTHORIZED, error, detail).into_response();
        }
    }
    next.run(req).await
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not found",
        &format!(
            "nothing at `{}`: the API is under /api/v1 (described by /api/openapi.json), the dashboard at /",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

/// Turns every error answer that is neither JSON nor an HTML page (axum's and hyper's plain
/// text or empty bodies: 405, 413, a bad query string, a bad body) into `{error, detail}`,
/// keeping its status and headers such as `Allow`.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        format!("method {method} is not allowed here; allowed: {allowed}")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let name = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let mut out = error(status, &name, &detail);
    for (key, value) in &parts.headers {
        if key != header::CONTENT_TYPE && key != header::CONTENT_LENGTH {
            out.headers_mut().insert(key.clone(), value.clone());
        }
    }
    out
}

/// A relay's state from its counters: `backlog` while results wait in its spool (the target
/// failed and has not caught up yet).
fn relay_json(stats: &WriterStats) -> serde_json::Value {
    let spooled = stats.spooled.load(Ordering::Relaxed);
    serde_json::json!({
        "state": if spooled > 0 { "backlog" } else { "ok" },
        "spooled": spooled,
        "spool_bytes": stats.spool_bytes.load(Ordering::Relaxed),
        "pending": stats.pending.load(Ordering::Relaxed),
        "delivered": stats.written.load(Ordering::Relaxed),
        "errors": stats.write_errors.load(Ordering::Relaxed),
        "dropped": stats.dropped.load(Ordering::Relaxed),
    })
}

/// Health with each dependency's state: the store (can it be written now, and its writer's
/// spool) and each broker publisher. 503 when the store cannot be written; `degraded` (200)
/// while a relay has a backlog.
async fn health(State(state): State<HttpState>) -> Response {
    let writable = tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.check_writable())
        .await
        .unwrap_or_else(|_| {
            Err(gridprobe_results::StoreError::Query(format!(
                "no answer within {} s",
                STORE_CHECK_TIMEOUT.as_secs()
            )))
        });
    let mut store = relay_json(&state.shared.writer().stats());
    let mut degraded = store["state"] == "backlog";
    if let Err(e) = &writable {
        store["state"] = "failing".into();
        store["error"] = e.to_string().into();
    }
    store["writable"] = writable.is_ok().into();
    let publishers: Vec<serde_json::Value> = state
        .metrics
        .publishers()
        .iter()
        .map(|(name, stats)| {
            let mut p = relay_json(stats);
            p["name"] = name.clone().into();
            degraded |= p["state"] == "backlog";
            p
        })
        .collect();
    let self_check = self_check_json(&state.shared.self_check);
    degraded |= self_check["state"] == "failing";
    let (code, status) = match (&writable, degraded) {
        (Err(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "failing"),
        (Ok(()), true) => (StatusCode::OK, "degraded"),
        (Ok(()), false) => (StatusCode::OK, "ok"),
    };
    let s = &state.shared.stats;
    let body = Json(serde_json::json!({
        "status": status,
        "store": store,
        "publishers": publishers,
        "version": env!("CARGO_PKG_VERSION"),
        "entries": s.entries.load(Ordering::Relaxed),
        "inflight": s.inflight.load(Ordering::Relaxed),
        "runs_finished": s.runs_finished.load(Ordering::Relaxed),
        "self_check": self_check,
        "schedule": match s.shared_view() {
            None => serde_json::json!({ "mode": "local" }),
            Some(v) => serde_json::json!({
                "mode": "shared",
                "member": v.member,
                "members": v.members,
                "owned": v.owned,
            }),
        },
    }));
    (code, body).into_response()
}

/// The self-check's state for `/healthz` (schema `SelfCheck` in openapi.json).
fn self_check_json(state: &crate::selfcheck::SelfCheckState) -> serde_json::Value {
    use gridprobe_config::time::format_utc_ms as format_utc;
    let snap = state.snapshot();
    if !snap.configured {
        return serde_json::json!({ "state": "off" });
    }
    let mut v = serde_json::json!({
        "state": if snap.failing.is_some() { "failing" } else { "ok" },
        "reclassified": state.reclassified.load(Ordering::Relaxed),
        "checks": snap.checks.iter().map(|c| {
            let mut j = serde_json::json!({ "kind": c.kind, "target": c.target, "ok": c.error.is_none() });
            if let Some(e) = &c.error {
                j["error"] = e.clone().into();
            }
            j
        }).collect::<Vec<_>>(),
    });
    if let Some(r) = snap.failing {
        v["reason"] = r.into();
    }
    if let Some(t) = snap.failing_since_ms {
        v["failing_since"] = format_utc(t).into();
    }
    if let Some(t) = snap.last_check_ms {
        v["last_check"] = format_utc(t).into();
    }
    v
}

/// Whether `[access]` declares tokens, DNs or guarded reads: then reloading needs an operator.
fn access_configured(access: &Access) -> bool {
    access.read_requires_token || !access.tokens.is_empty() || !access.dns.is_empty()
}

/// Who may reload, and from where: with `[access]` configured only an operator token; a
/// browser on another origin never (its `Origin` differs from `Host`); and no body but JSON,
/// so that a cross-site form or a simple `fetch` cannot trigger it.
fn check_reload_request(
    access: &Access,
    who: &Result<Option<crate::access::Identity>, AuthError>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if access_configured(access) {
        match who {
            Ok(Some(who)) if who.role == Role::Operator => {}
            Ok(Some(who)) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not allowed",
                    format!(
                        "`{}` is not an operator; reloading needs role = \"operator\"",
                        who.name
                    ),
                ))
            }
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "authentication required",
                    "reloading needs `Authorization: Bearer <operator token>` or an operator's client certificate",
                ))
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid credentials",
                    e.to_string(),
                ))
            }
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.to_str().ok().and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        });
        let same = matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h));
        if !same {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin request refused",
                "reloading is refused from a page of another origin",
            ));
        }
    }
    let json = headers.get(header::CONTENT_TYPE).map(|v| {
        v.to_str()
            .ok()
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    match json {
        Some(false) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type",
                "send no body, or a JSON body with `Content-Type: application/json`",
            ))
        }
        None if !body.is_empty() => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type",
                "a body needs `Content-Type: application/json`",
            ))
        }
        _ => {}
    }
    if !body.iter().all(u8::is_ascii_whitespace)
        && !serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request body",
            "the body must be empty or a JSON object (it is ignored)",
        ));
    }
    Ok(())
}

async fn reload(
    State(state): State<HttpState>,
    axum::Extension(who): axum::Extension<Authn>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match crate::api::read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let access = state.shared.plan().config.access.clone();
    // A login session is a browser's: reloading takes the token or the certificate itself.
    let who = if who.via_session { Ok(None) } else { who.who };
    if let Err(refused) = check_reload_request(&access, &who, &headers, &body) {
        return refused.into_response();
    }
    let (tx, rx) = oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
            "the service is stopping",
        );
    }
    match rx.await {
        Ok(Ok(summary)) => (
            StatusCode::OK,
            Json(serde_json::json!({ "reloaded": true, "summary": summary })),
        )
            .into_response(),
        // The errors quote the configuration (and may hold what looks like a secret): they
        // go to the service's log, never into the reply.
        Ok(Err(_)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid configuration; the running schedule was kept",
            "the configuration has errors: run `gridprobe check` on it to see them (they are in the service's log too)",
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
            "the service is stopping",
        ),
    }
}

/// A JSON error body `{error, detail}`.
pub fn error(status: StatusCode, error: &str, detail: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error, "detail": detail })),
    )
        .into_response()
}

/// Serves the router within `limits`, over TLS with `tls` (connection cap, header and idle timeouts) until
/// `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: crate::http_conn::Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::http_conn::serve_tls(listener, router, limits, tls, shutdown).await
}
