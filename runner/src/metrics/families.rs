//! Every series `/metrics` exposes, registered once: names, help texts, labels and buckets.

use super::*;

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
    /// The metrics with every family registered and `gridprobe_build_info` set.
    pub(super) fn build() -> Self {
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
}
