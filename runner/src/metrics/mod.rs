//! Prometheus metrics at `/metrics`, in the text exposition format (`prometheus` crate, without
//! protobuf). `docs/metrics.md` lists every series; the encodings are in each metric's HELP.
//!
//! Three sources, each read where it is cheapest and cannot drift:
//! - **Cells** (`gridprobe_probe_status`, `_last_run_timestamp_seconds`, `_stale`) are rendered at
//!   scrape time from the service's current plan and the cells' latest hard states
//!   ([`crate::state::CellStates`], seeded from the store at start). So a restart does not
//!   empty them, and a cell removed by a reload disappears at the next scrape (the gauges are
//!   reset whenever the plan changes). One series per cell; no timestamps or run ids as labels.
//! - **Runs** (`gridprobe_probe_duration_seconds`, `_runs_total`, `_attempts_total`) are counted
//!   as results are recorded, through [`ResultObserver`], for scheduled and on-demand runs alike.
//! - **Sites** (`gridprobe_site_*`) need the store and the availability algorithm
//!   ([`gridprobe_results::report::compute`]); a background task ([`Metrics::spawn_refresh`])
//!   recomputes them — never a scrape — and only while someone scrapes: the first scrape starts
//!   it, the 24 h window is then refreshed every [`DAY_REFRESH`] and the 30 d window every
//!   [`MONTH_REFRESH`] (a few minutes move a 30-day figure by less than 0.01 %).
//!
//! Scheduler and store figures are mirrored from [`crate::state::SchedulerStats`] and
//! [`gridprobe_results::WriterStats`] at scrape time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gridprobe_config::Config;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{ProbeResult, Status};
use gridprobe_results::availability::DEFAULT_UNKNOWN_THRESHOLD;
use gridprobe_results::report::{
    compute_applied, default_thresholds, merge_gap_ms, site_status, Period, SiteStatus,
};
use gridprobe_results::{CellFilter, CellKey, ResultStore};
use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::http::HttpState;
use crate::state::{ResultObserver, ServeState};

mod families;
#[cfg(test)]
mod tests;
mod update;

/// How often the 24-hour site figures (and the site status) are recomputed while scraped.
pub const DAY_REFRESH: Duration = Duration::from_secs(60);
/// How often the 30-day site figures are recomputed while scraped.
pub const MONTH_REFRESH: Duration = Duration::from_secs(15 * 60);
/// How long the very first scrape waits for the first site figures, so that it already has
/// them; later scrapes never wait.
const FIRST_SCRAPE_WAIT: Duration = Duration::from_secs(3);

/// Labels of every per-cell series, in this order. `probe` is the full metric name
/// (`org.lhcb.CE-lhcb-install`): the cell's identity in the store, the API and `--probe`.
pub const CELL_LABELS: [&str; 5] = ["vo", "site", "flavour", "host", "probe"];
/// Labels of the per-site series (plus `window` on availability and reliability).
const SITE_LABELS: [&str; 3] = ["vo", "site", "tier"];

/// Upper bounds of the probe duration histogram, in seconds: from a TCP connect to a grid job
/// that uses its whole 10-minute timeout.
const DURATION_BUCKETS: [f64; 15] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The value of `gridprobe_probe_status` for a status: the Nagios return code (0 OK,
/// 1 WARNING, 2 CRITICAL, 3 UNKNOWN), and 4 for STANDBY, which has none (not run on purpose).
pub fn probe_status_value(status: Status) -> i64 {
    status.nagios_code().map(i64::from).unwrap_or(4)
}

/// The value of `gridprobe_site_status`: 0 good, 1 degraded, 2 failed, 3 maintenance,
/// 4 inactive, 5 new (first results inside the window, too few for its figures).
pub fn site_status_value(status: SiteStatus) -> i64 {
    match status {
        SiteStatus::Good => 0,
        SiteStatus::Degraded => 1,
        SiteStatus::Failed => 2,
        SiteStatus::Maintenance => 3,
        SiteStatus::Inactive => 4,
        SiteStatus::New => 5,
    }
}

/// A window of the site figures.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// The `window` label.
    label: &'static str,
    /// Its length.
    length: Duration,
    /// How often it is recomputed.
    refresh: Duration,
    /// Whether the site status comes from it (the dashboards' status is a 24-hour one).
    gives_status: bool,
}

const WINDOWS: [Window; 2] = [
    Window {
        label: "24h",
        length: Duration::from_secs(24 * 3600),
        refresh: DAY_REFRESH,
        gives_status: true,
    },
    Window {
        label: "30d",
        length: Duration::from_secs(30 * 24 * 3600),
        refresh: MONTH_REFRESH,
        gives_status: false,
    },
];

/// One site's figures over one window.
#[derive(Debug, Clone)]
struct SiteRow {
    site: String,
    availability: Option<f64>,
    reliability: Option<f64>,
    status: Option<SiteStatus>,
    /// Applied recomputations that changed the site's figures in the window.
    recomputations: usize,
}

/// The per-cell label values of a plan, computed once per plan rather than per scrape.
#[derive(Debug)]
struct CellRow {
    key: CellKey,
    labels: [String; 5],
    freshness_ms: i64,
}

/// What scrapes and the refresh task share; one lock, so that a scrape never sees a vector
/// half reset.
#[derive(Debug, Default)]
struct RenderState {
    /// The configuration `cells` was built from (compared by pointer: a reload installs a new
    /// `Arc` even for an identical file, which only costs one reset).
    cells_for: Option<Arc<Config>>,
    cells: Vec<CellRow>,
    /// Site rows per window (index into [`WINDOWS`]), as last computed.
    sites: [Option<Vec<SiteRow>>; 2],
    /// Queue wait already mirrored into its counter, in ms (the source counts ms).
    queue_wait_ms: u64,
}

/// The service's metrics: a private registry (no global state, so tests can make many).
pub struct Metrics {
    registry: Registry,
    duration: HistogramVec,
    runs: IntCounterVec,
    attempts: IntCounterVec,
    probe_status: IntGaugeVec,
    last_run: GaugeVec,
    stale: IntGaugeVec,
    site_availability: GaugeVec,
    site_reliability: GaugeVec,
    site_recomputations: IntGaugeVec,
    site_status: IntGaugeVec,
    site_refresh_time: GaugeVec,
    site_refresh_errors: IntCounter,
    entries: IntGauge,
    inflight: IntGauge,
    runs_started: IntCounter,
    runs_finished: IntCounter,
    skipped: IntCounterVec,
    schedule_members: IntGauge,
    schedule_owned: IntGauge,
    self_check_failing: IntGauge,
    self_check_rounds: IntCounterVec,
    self_check_reclassified: IntCounter,
    queue_wait: Counter,
    reloads: IntCounter,
    written: IntCounter,
    write_errors: IntCounter,
    dropped: IntCounter,
    pending: IntGauge,
    spooled: IntGauge,
    spool_full: IntCounter,
    spool_damaged: IntCounter,
    publish_published: IntCounterVec,
    publish_errors: IntCounterVec,
    publish_dropped: IntCounterVec,
    publish_spooled: IntGaugeVec,
    publish_spool_full: IntCounterVec,
    publish_spool_damaged: IntCounterVec,
    publish_unroutable: IntCounterVec,
    credential_expiry: GaugeVec,
    credential_valid: IntGaugeVec,
    credential_failures: IntCounterVec,
    /// Broker publishers whose counters are mirrored: target name and counters.
    publishers: Mutex<Vec<(String, Arc<gridprobe_results::WriterStats>)>>,
    /// The notification engine, whose `gridprobe_notify_*` series are appended.
    notify: Mutex<Option<Arc<crate::notify::NotifierView>>>,
    /// Every registered family: name and whether it is a histogram (for [`metric_names`]).
    families: Vec<(String, bool)>,
    state: Mutex<RenderState>,
    /// Scrapes so far; the refresh task works only when this moved.
    scrapes: AtomicU64,
    /// Wakes the refresh task on a scrape.
    scraped: Notify,
    /// Whether a refresh task runs (only then does the first scrape wait for it).
    refreshing: AtomicBool,
    /// Counts finished 24-hour refreshes (successful or not), for the first scrape's wait.
    refreshed: watch::Sender<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("families", &self.families.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// New metrics, with `gridprobe_build_info` set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::build())
    }

    /// The names of the series `/metrics` can expose, as PromQL sees them (a histogram gives
    /// `_bucket`, `_sum` and `_count`), sorted. Tests check the Grafana dashboard and the alert
    /// rules against this list.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (name, histogram) in &self.families {
            if *histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.push(format!("{name}{suffix}"));
                }
            } else {
                out.push(name.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Renders the text exposition of every metric for the service's current state.
    pub fn render(&self, shared: &ServeState) -> Result<String, String> {
        let now_ms = unix_ms(SystemTime::now());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.mirror_counters(&mut st, shared);
        self.update_cells(&mut st, shared, now_ms);
        self.update_sites(&st, &shared.plan().config);
        self.update_credentials(shared);
        let families = self.registry.gather();
        drop(st);
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .map_err(|e| e.to_string())?;
        let mut text = String::from_utf8(buf).map_err(|e| e.to_string())?;
        if let Some(n) = &*self.notify.lock().unwrap_or_else(|p| p.into_inner()) {
            text.push_str(&crate::notify::metrics::render(n));
        }
        if let Some(remote) = shared.remote() {
            text.push_str(&crate::agent::metrics::render(remote.as_ref()));
        }
        Ok(text)
    }

    /// Appends the notification engine's series to every scrape.
    pub fn watch_notify(&self, view: Arc<crate::notify::NotifierView>) {
        *self.notify.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }
}

/// The names of every series `/metrics` can expose (see [`Metrics::names`]).
pub fn metric_names() -> Vec<String> {
    Metrics::build().names()
}

impl ResultObserver for Metrics {
    fn observe(&self, result: &ProbeResult, is_final: bool) {
        let status = result.outcome.status.name();
        let kind = result.kind.as_str();
        self.attempts.with_label_values(&[kind, status]).inc();
        if is_final {
            self.runs.with_label_values(&[kind, status]).inc();
        }
        // A STANDBY result ran nothing: its zero duration would drag the quantiles down.
        if result.outcome.status != Status::Standby {
            self.duration
                .with_label_values(&[kind])
                .observe(result.duration_ms as f64 / 1000.0);
        }
    }
}

/// The `/metrics` route.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<HttpState>) -> Response {
    state.metrics.note_scrape().await;
    let metrics = state.metrics.clone();
    let shared = state.shared.clone();
    // Rendering 10,000 cells is a few milliseconds of CPU: keep it off the async workers that
    // also drive the scheduler.
    match tokio::task::spawn_blocking(move || metrics.render(&shared)).await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Ok(Err(e)) => crate::http::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be rendered",
            &e,
        ),
        Err(e) => crate::http::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be rendered",
            &e.to_string(),
        ),
    }
}
