//! The web dashboard: server-rendered HTML over the same plan and store as the JSON API.
//!
//! - `/` the morning table: sites × probes grouped by tier, each cell the best instance's latest
//!   status (the matrix of `gridprobe matrix`), current outages in blue, the 24-hour site status
//!   beside each site; `?vo=&tier=&flavour=` filters.
//! - `/sites/{site}`: instances × probes now, a 24-hour SVG strip per cell, month-to-date
//!   availability and reliability, current and upcoming downtimes, and a "run now" form that
//!   calls `POST /api/v1/runs`.
//! - `/results/{id}`: one result whole, with the cell's previous results, its 30- and 90-day
//!   strips and plots of its duration and perfdata values (`history.rs`).
//! - `/reasons?since=`: the top failure reasons.
//! - `/reports/{period}`: the monthly report (`?format=pdf|csv|json` to download it).
//! - `/trends?period=&site=`: the most flapping cells, the longest CRITICAL and UNKNOWN.
//!
//! Pages are rendered with `maud`, which escapes every interpolated string, so a probe summary
//! or a site name can never inject markup; the pages carry a Content-Security-Policy without
//! inline scripts or styles as a second line of defence. The site statuses of `/` come from an
//! availability report over all sites, which is too slow to compute on every request of a
//! 1,000-site VO: it is computed in the background, kept for [`STATUS_TTL`] and refreshed while
//! the old value is served; the first page after a start waits for it at most 150 ms.
//! Reading permissions are checked by the server's read guard (`http::read_guard`), not here.

mod agents;
mod cell;
mod history;
mod latest;
mod matrix;
mod problems;
mod reasons;
mod recomputations;
mod render;
mod reports;
mod response;
mod result;
mod site;
mod statuses;
mod trends;

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
    compute_applied, default_thresholds, site_status, Period, SiteReport, SiteStatus,
};
use gridprobe_results::{
    CellFilter, CellKey, HistoryQuery, LatestChanges, ResultStore, StoreError, StoredResult,
};

use crate::http::HttpState;
use crate::state::ServeState;

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
        .route("/", get(problems::matrix_refreshing))
        .route("/problems", get(problems::problems_page))
        .route("/notifications", get(problems::notifications_page))
        .route("/sites/{site}", get(site_page))
        .route("/results/{id}", get(result_page))
        .route("/reasons", get(reasons_page))
        .route("/recomputations", get(recomputations::recomputations_page))
        .route("/reports", get(reports_index))
        .route("/reports/{period}", get(report_page))
        .route("/trends", get(trends_page))
        .route("/agents", get(agents::agents_page))
        .route("/static/gridprobe.css", get(stylesheet))
        .route("/static/gridprobe.js", get(script))
}

/// Starts in the background what the first view of `/` needs, the site statuses and the copy
/// of the cells' latest states, so that they are ready when the first visitor comes rather
/// than started by that visit (`serve` calls it once the plan is loaded).
pub fn prepare(state: &HttpState) {
    let state = state.clone();
    tokio::spawn(async move {
        let config = state.shared.plan().config;
        // Starts the computation and returns within `COLD_WAIT`.
        let _ = site_statuses(&state, &config).await;
        if let Err(e) = with_latest(&state, &config, |_| ()).await {
            tracing::warn!(error = %e, "reading the cells' latest states for the dashboard");
        }
    });
}

/// Forgets the rendered matrix pages, so that the next request of `/` renders: for
/// benchmarks that measure renderings rather than the page cache.
pub fn forget_rendered_pages() {
    MATRIX_PAGES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
}

use cell::*;
use history::*;
use latest::*;
use matrix::*;
use reasons::*;
use reports::*;
use response::*;
use result::*;
use site::*;
use statuses::*;
use trends::*;

#[cfg(test)]
mod tests;
