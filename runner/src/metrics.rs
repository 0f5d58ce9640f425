//! Prometheus metrics at `/metrics` (being written).

use std::sync::Arc;

use axum::Router;
use gridprobe_probes::ProbeResult;

use crate::http::HttpState;
use crate::service::ResultObserver;

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// New metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics {})
    }
}

impl ResultObserver for Metrics {
    fn observe(&self, _result: &ProbeResult, _is_final: bool) {}
}

/// The `/metrics` route.
pub fn routes() -> Router<HttpState> {
    Router::new()
}
