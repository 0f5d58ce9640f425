//! The web dashboard (being written).

use axum::Router;

use crate::http::HttpState;

/// The dashboard's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
}
