//! The HTTP server of `gridprobe serve`: health and reload here; the JSON API (`api.rs`), the
//! dashboard (`dashboard.rs`) and `/metrics` (`metrics.rs`) are merged in as routers over the same
//! [`HttpState`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use gridprobe_results::ResultStore;

use crate::service::Shared;

/// A reload request: the reply is a one-line summary, or every configuration error.
pub type ReloadTrigger = mpsc::Sender<oneshot::Sender<Result<String, String>>>;

/// What the routes share.
#[derive(Clone)]
pub struct HttpState {
    /// The running service: plan, cell states, limits, recording.
    pub shared: Arc<Shared>,
    /// The result store, for reads.
    pub store: Arc<dyn ResultStore>,
    /// Asks the service to re-read its configuration.
    pub reload: ReloadTrigger,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// On-demand runs.
    pub runs: Arc<crate::ondemand::RunManager>,
}

/// The router of the service.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/-/reload", post(reload))
        .merge(crate::api::routes())
        .merge(crate::metrics::routes())
        .merge(crate::dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::api::read_guard,
        ))
        .with_state(state)
}

async fn health(State(state): State<HttpState>) -> Json<serde_json::Value> {
    let s = &state.shared.stats;
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "entries": s.entries.load(Ordering::Relaxed),
        "inflight": s.inflight.load(Ordering::Relaxed),
        "runs_finished": s.runs_finished.load(Ordering::Relaxed),
        "schedule": match s.shared_view() {
            None => serde_json::json!({ "mode": "local" }),
            Some(v) => serde_json::json!({
                "mode": "shared",
                "member": v.member,
                "members": v.members,
                "owned": v.owned,
            }),
        },
    }))
}

async fn reload(State(state): State<HttpState>) -> Response {
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
        Ok(Err(errors)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid configuration; the running schedule was kept",
            &errors,
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

/// Serves the router until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
