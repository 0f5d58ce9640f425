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

/// Registers a collector and remembers its family names.
struct Builder {
    registry: Registry,
    families: Vec<(String, bool)>,
}

impl Builder {
    fn add<C: Collector + Clone + 'static>(&mut self, c: C, histogram: bool) -> C {
        for d in c.desc() {
            self.families.push((d.fq_name.clone(), histogram));
        }
        // Names and labels are constants of this file: a failure is a bug caught by the tests.
        if let Err(e) = self.registry.register(Box::new(c.clone())) {
            tracing::error!(error = %e, "metric registration failed");
        }
        c
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// New metrics, with `gridprobe_build_info` set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::build())
    }

    fn build() -> Self {
        let mut b = Builder {
            registry: Registry::new(),
            families: Vec::new(),
        };
        // The constructors fail only on invalid names or label sets, which are literals here;
        // `expect` states that invariant (the unit tests build every metric).
        let duration = b.add(
            HistogramVec::new(
                HistogramOpts::new(
                    "gridprobe_probe_duration_seconds",
                    "Run time of every probe attempt (retries included; STANDBY results, which \
                     run nothing, excluded), by probe kind.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["kind"],
            )
            .expect("valid histogram"),
            true,
        );
        let runs = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_probe_runs_total",
                    "Runs finished, scheduled or on demand, by probe kind and hard status (the \
                     last attempt's: OK, WARNING, CRITICAL, UNKNOWN, STANDBY). One per run; \
                     retried attempts are in gridprobe_probe_attempts_total.",
                ),
                &["kind", "status"],
            )
            .expect("valid counter"),
            false,
        );
        let attempts = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_probe_attempts_total",
                    "Probe attempts, retries included, by probe kind and status; minus \
                     gridprobe_probe_runs_total it gives the retries.",
                ),
                &["kind", "status"],
            )
            .expect("valid counter"),
            false,
        );
        let probe_status = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_probe_status",
                    "Latest hard status of a cell (probe on a service instance): the Nagios code \
                     0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, and 4 STANDBY (not run on purpose: \
                     a dependency is down). probe is the full metric name. Check \
                     gridprobe_probe_stale: a stale status is not current.",
                ),
                &CELL_LABELS,
            )
            .expect("valid gauge"),
            false,
        );
        let last_run = b.add(
            GaugeVec::new(
                opts(
                    "gridprobe_probe_last_run_timestamp_seconds",
                    "Start of the cell's latest hard result, in seconds since the Unix epoch.",
                ),
                &CELL_LABELS,
            )
            .expect("valid gauge"),
            false,
        );
        let stale = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_probe_stale",
                    "1 when the cell's latest result is older than its freshness window (2 x \
                     interval + timeout unless configured): the matrix shows it MISSING. 0 \
                     otherwise.",
                ),
                &CELL_LABELS,
            )
            .expect("valid gauge"),
            false,
        );
        let site_availability = b.add(
            GaugeVec::new(
                opts(
                    "gridprobe_site_availability",
                    "Site availability (UP / KNOWN time, 0 to 1) over the window ending now \
                     (24h or 30d), computed as `gridprobe report` does with the first profile. \
                     Absent when n/a (too much unknown time).",
                ),
                &["vo", "site", "tier", "window"],
            )
            .expect("valid gauge"),
            false,
        );
        let site_reliability = b.add(
            GaugeVec::new(
                opts(
                    "gridprobe_site_reliability",
                    "Site reliability (UP / (KNOWN - scheduled downtime), 0 to 1) over the window \
                     ending now (24h or 30d). Absent when n/a.",
                ),
                &["vo", "site", "tier", "window"],
            )
            .expect("valid gauge"),
            false,
        );
        let site_recomputations = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_site_recomputations_applied",
                    "How many applied recomputations changed the site's figures over the \
                     window (24h or 30d): the availability and reliability above include them. \
                     Absent when none did.",
                ),
                &["vo", "site", "tier", "window"],
            )
            .expect("valid gauge"),
            false,
        );
        let site_status = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_site_status",
                    "Site status from its last-24-hours availability and the tier thresholds \
                     (Tier-0/1: good above 0.9, degraded from 0.6; Tier-2/3: 0.6 and 0.4): \
                     0 good, 1 degraded, 2 failed, 3 maintenance (in scheduled downtime now), \
                     4 inactive (no results), 5 new (first results less than the window \
                     ago: too few for figures yet).",
                ),
                &SITE_LABELS,
            )
            .expect("valid gauge"),
            false,
        );
        let site_refresh_time = b.add(
            GaugeVec::new(
                opts(
                    "gridprobe_site_refresh_timestamp_seconds",
                    "When the site figures of a window were last computed (end of the window), \
                     in seconds since the Unix epoch.",
                ),
                &["window"],
            )
            .expect("valid gauge"),
            false,
        );
        let site_refresh_errors = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_site_refresh_errors_total",
                "Failed recomputations of the site figures (store read errors); the previous \
                 figures are kept.",
            ))
            .expect("valid counter"),
            false,
        );
        let entries = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_scheduler_entries",
                "Probe instances in the schedule.",
            ))
            .expect("valid gauge"),
            false,
        );
        let self_check_failing = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_self_check_failing",
                "1 while the monitoring host's self-check fails (connection failures are then \
                 recorded UNKNOWN), else 0 (also without [server.self_check]).",
            ))
            .expect("valid gauge"),
            false,
        );
        let self_check_rounds = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_self_check_rounds_total",
                    "Rounds of the monitoring host's self-check, by result (ok, failing).",
                ),
                &["result"],
            )
            .expect("valid counter"),
            false,
        );
        let self_check_reclassified = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_self_check_reclassified_total",
                "Results (attempts) recorded UNKNOWN \"monitoring host problem\" instead of \
                 CRITICAL while the self-check failed.",
            ))
            .expect("valid counter"),
            false,
        );
        let schedule_members = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_schedule_members",
                "ServeState schedule: live instances sharing it, this one included (0 when the \
                 schedule is not shared, or this instance lost its lease).",
            ))
            .expect("valid gauge"),
            false,
        );
        let schedule_owned = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_schedule_owned_entries",
                "ServeState schedule: schedule entries this instance runs.",
            ))
            .expect("valid gauge"),
            false,
        );
        let inflight = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_scheduler_inflight",
                "Scheduled runs in flight: waiting for a concurrency slot or running.",
            ))
            .expect("valid gauge"),
            false,
        );
        let runs_started = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_scheduler_runs_started_total",
                "Scheduled runs that got their concurrency slots and started.",
            ))
            .expect("valid counter"),
            false,
        );
        let runs_finished = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_scheduler_runs_finished_total",
                "Scheduled runs finished (STANDBY ones included); flat while entries > 0 means \
                 the scheduler is stalled.",
            ))
            .expect("valid counter"),
            false,
        );
        let skipped = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_scheduler_skipped_total",
                    "Slots skipped: reason=busy (the previous run of the entry was still in \
                     flight), reason=late (missed by a pause or clock jump, never replayed); with a shared \
                     schedule also reason=claimed (another instance ran the slot) and \
                     reason=uncoordinated (the slot could not be claimed: database down).",
                ),
                &["reason"],
            )
            .expect("valid counter"),
            false,
        );
        let queue_wait = b.add(
            Counter::with_opts(opts(
                "gridprobe_scheduler_queue_wait_seconds_total",
                "Total time scheduled runs waited for concurrency slots (kind, site, global). \
                 Divided by the rate of gridprobe_scheduler_runs_started_total it gives the \
                 mean wait per run.",
            ))
            .expect("valid counter"),
            false,
        );
        let reloads = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_scheduler_reloads_total",
                "Configuration reloads applied.",
            ))
            .expect("valid counter"),
            false,
        );
        let written = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_store_written_total",
                "Results (attempts) written to the result store.",
            ))
            .expect("valid counter"),
            false,
        );
        let write_errors = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_store_write_errors_total",
                "Failed writes to the result store (each is retried with backoff).",
            ))
            .expect("valid counter"),
            false,
        );
        let dropped = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_store_dropped_total",
                "Results lost: beyond the writer's memory bound while the store failed, or \
                 unwritten at shutdown.",
            ))
            .expect("valid counter"),
            false,
        );
        let pending = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_store_pending",
                "Results handed to the writer and not yet written or dropped.",
            ))
            .expect("valid gauge"),
            false,
        );
        let spooled = b.add(
            IntGauge::with_opts(opts(
                "gridprobe_store_spooled",
                "Results waiting in the durable spool for the result store (kept across restarts).",
            ))
            .expect("valid gauge"),
            false,
        );
        let spool_full = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_store_spool_full_total",
                "Results the store's spool refused because it was full ([server] spool_max_size); \
                 they waited in memory, beyond its bound they count as dropped.",
            ))
            .expect("valid counter"),
            false,
        );
        let spool_damaged = b.add(
            IntCounter::with_opts(opts(
                "gridprobe_store_spool_damaged_total",
                "Spooled results for the store found damaged on disk (checksum) at start and \
                 skipped; a copy of each damaged segment is kept in the spool directory.",
            ))
            .expect("valid counter"),
            false,
        );
        let target = &["target"];
        let publish_published = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_publish_published_total",
                    "Results a broker confirmed ([[publish]] target), replays included.",
                ),
                target,
            )
            .expect("valid counter"),
            false,
        );
        let publish_errors = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_publish_errors_total",
                    "Failed publishes (connect, confirm, timeout); each is retried from the spool.",
                ),
                target,
            )
            .expect("valid counter"),
            false,
        );
        let publish_dropped = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_publish_dropped_total",
                    "Results lost for a broker: spool full and memory bound exceeded.",
                ),
                target,
            )
            .expect("valid counter"),
            false,
        );
        let publish_spooled = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_publish_spooled",
                    "Results waiting in a publisher's durable spool.",
                ),
                target,
            )
            .expect("valid gauge"),
            false,
        );
        let publish_spool_full = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_publish_spool_full_total",
                    "Results a publisher's spool refused because it was full.",
                ),
                target,
            )
            .expect("valid counter"),
            false,
        );
        let publish_spool_damaged = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_publish_spool_damaged_total",
                    "Spooled results for a publisher found damaged on disk at start and skipped.",
                ),
                target,
            )
            .expect("valid counter"),
            false,
        );
        let publish_unroutable = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_publish_unroutable_total",
                    "Results the broker returned because no queue is bound for their routing key \
                     (AMQP mandatory publish): not delivered, not retried.",
                ),
                target,
            )
            .expect("valid counter"),
            false,
        );
        let credential_expiry = b.add(
            GaugeVec::new(
                opts(
                    "gridprobe_credential_expiry_timestamp_seconds",
                    "When each [[credential]] expires (Unix seconds); absent until obtained.",
                ),
                &["credential"],
            )
            .expect("valid gauge"),
            false,
        );
        let credential_valid = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_credential_valid",
                    "1 while a [[credential]] may be used; 0 while its probes are recorded UNKNOWN.",
                ),
                &["credential"],
            )
            .expect("valid gauge"),
            false,
        );
        let credential_failures = b.add(
            IntCounterVec::new(
                opts(
                    "gridprobe_credential_renewal_failures_total",
                    "Failed attempts to obtain, renew or read a [[credential]].",
                ),
                &["credential"],
            )
            .expect("valid counter"),
            false,
        );
        let build_info = b.add(
            IntGaugeVec::new(
                opts(
                    "gridprobe_build_info",
                    "Always 1; the version label is the gridprobe version.",
                ),
                &["version"],
            )
            .expect("valid gauge"),
            false,
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let (refreshed, _) = watch::channel(0);
        Metrics {
            registry: b.registry,
            duration,
            runs,
            attempts,
            probe_status,
            last_run,
            stale,
            site_availability,
            site_reliability,
            site_recomputations,
            site_status,
            site_refresh_time,
            site_refresh_errors,
            entries,
            inflight,
            runs_started,
            runs_finished,
            skipped,
            schedule_members,
            schedule_owned,
            self_check_failing,
            self_check_rounds,
            self_check_reclassified,
            queue_wait,
            reloads,
            written,
            write_errors,
            dropped,
            pending,
            spooled,
            spool_full,
            spool_damaged,
            publish_published,
            publish_errors,
            publish_dropped,
            publish_spooled,
            publish_spool_full,
            publish_spool_damaged,
            publish_unroutable,
            credential_expiry,
            credential_valid,
            credential_failures,
            publishers: Mutex::new(Vec::new()),
            notify: Mutex::new(None),
            families: b.families,
            state: Mutex::new(RenderState::default()),
            scrapes: AtomicU64::new(0),
            scraped: Notify::new(),
            refreshing: AtomicBool::new(false),
            refreshed,
        }
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
