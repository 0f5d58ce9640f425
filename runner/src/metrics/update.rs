//! What `/metrics` renders from the serve state: counters mirrored from the scheduler and the
//! writer, credentials, cells and site figures (the latter computed by the refresh task).

use super::*;

impl Metrics {
    /// Copies the scheduler's and the writer's counters.
    pub(super) fn mirror_counters(&self, st: &mut RenderState, shared: &ServeState) {
        let s = &shared.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.entries
            .set(i64::try_from(load(&s.entries)).unwrap_or(i64::MAX));
        self.inflight.set(s.inflight.load(Ordering::Relaxed).max(0));
        // The sources only grow, so adding the difference keeps these true counters.
        let follow = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        follow(&self.runs_started, load(&s.runs_started));
        follow(&self.runs_finished, load(&s.runs_finished));
        follow(&self.reloads, load(&s.reloads));
        follow(
            &self.skipped.with_label_values(&["busy"]),
            load(&s.skipped_busy),
        );
        follow(
            &self.skipped.with_label_values(&["late"]),
            load(&s.skipped_late),
        );
        if let Some(view) = s.shared_view() {
            follow(
                &self.skipped.with_label_values(&["claimed"]),
                load(&s.skipped_claimed),
            );
            follow(
                &self.skipped.with_label_values(&["uncoordinated"]),
                load(&s.skipped_uncoordinated),
            );
            self.schedule_members
                .set(i64::try_from(view.members.len()).unwrap_or(i64::MAX));
            self.schedule_owned
                .set(i64::try_from(view.owned).unwrap_or(i64::MAX));
        }
        let sc = &shared.self_check;
        self.self_check_failing
            .set(i64::from(sc.failing().is_some()));
        let rounds = load(&sc.rounds);
        let failed = load(&sc.failed_rounds);
        follow(
            &self.self_check_rounds.with_label_values(&["ok"]),
            rounds.saturating_sub(failed),
        );
        follow(
            &self.self_check_rounds.with_label_values(&["failing"]),
            failed,
        );
        follow(&self.self_check_reclassified, load(&sc.reclassified));
        let wait_ms = load(&s.queue_wait_ms_total);
        if wait_ms > st.queue_wait_ms {
            self.queue_wait
                .inc_by((wait_ms - st.queue_wait_ms) as f64 / 1000.0);
            st.queue_wait_ms = wait_ms;
        }
        let w = shared.writer().stats();
        follow(&self.written, load(&w.written));
        follow(&self.write_errors, load(&w.write_errors));
        follow(&self.dropped, load(&w.dropped));
        self.pending
            .set(i64::try_from(load(&w.pending)).unwrap_or(i64::MAX));
        self.spooled
            .set(i64::try_from(load(&w.spooled)).unwrap_or(i64::MAX));
        follow(&self.spool_full, load(&w.spool_full));
        follow(&self.spool_damaged, load(&w.corrupt));
        let publishers = self
            .publishers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, p) in &publishers {
            let l = [name.as_str()];
            follow(
                &self.publish_published.with_label_values(&l),
                load(&p.written),
            );
            follow(
                &self.publish_errors.with_label_values(&l),
                load(&p.write_errors),
            );
            follow(
                &self.publish_dropped.with_label_values(&l),
                load(&p.dropped),
            );
            follow(
                &self.publish_spool_full.with_label_values(&l),
                load(&p.spool_full),
            );
            follow(
                &self.publish_spool_damaged.with_label_values(&l),
                load(&p.corrupt),
            );
            follow(
                &self.publish_unroutable.with_label_values(&l),
                load(&p.unroutable),
            );
            self.publish_spooled
                .with_label_values(&l)
                .set(i64::try_from(load(&p.spooled)).unwrap_or(i64::MAX));
        }
    }

    /// Each credential's expiry, validity and failed renewals (gauges of removed ones go).
    pub(super) fn update_credentials(&self, shared: &ServeState) {
        self.credential_expiry.reset();
        self.credential_valid.reset();
        for c in shared.plan().probes.credentials.states() {
            let l = [c.name.as_str()];
            if let Some(ms) = c.valid_until_ms {
                self.credential_expiry
                    .with_label_values(&l)
                    .set(ms as f64 / 1000.0);
            }
            self.credential_valid
                .with_label_values(&l)
                .set(i64::from(c.valid));
            let counter = self.credential_failures.with_label_values(&l);
            counter.inc_by(c.renewal_failures.saturating_sub(counter.get()));
        }
    }

    /// The broker publishers watched, by target name, with their counters (for `/healthz`).
    pub fn publishers(&self) -> Vec<(String, Arc<gridprobe_results::WriterStats>)> {
        self.publishers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Mirrors a broker publisher's counters into the `gridprobe_publish_*` series.
    pub fn watch_publisher(&self, target: &str, stats: Arc<gridprobe_results::WriterStats>) {
        self.publishers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((target.to_string(), stats));
    }

    /// Sets the per-cell gauges of every cell of the current plan that has a result.
    pub(super) fn update_cells(&self, st: &mut RenderState, shared: &ServeState, now_ms: i64) {
        let plan = shared.plan();
        if !st
            .cells_for
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &plan.config))
        {
            // A new plan: forget every cell, so removed ones disappear.
            st.cells = cell_rows(&plan.config);
            st.cells_for = Some(plan.config.clone());
            self.probe_status.reset();
            self.last_run.reset();
            self.stale.reset();
        }
        for row in &st.cells {
            let Some((status, _, started_ms)) = shared.states.get(&row.key) else {
                continue;
            };
            let labels = [
                row.labels[0].as_str(),
                row.labels[1].as_str(),
                row.labels[2].as_str(),
                row.labels[3].as_str(),
                row.labels[4].as_str(),
            ];
            self.probe_status
                .with_label_values(&labels)
                .set(probe_status_value(status));
            self.last_run
                .with_label_values(&labels)
                .set(started_ms as f64 / 1000.0);
            let stale = now_ms.saturating_sub(started_ms) > row.freshness_ms;
            self.stale.with_label_values(&labels).set(i64::from(stale));
        }
    }

    /// Sets the site gauges from the last computed rows, for the sites of the current plan.
    pub(super) fn update_sites(&self, st: &RenderState, config: &Config) {
        self.site_availability.reset();
        self.site_reliability.reset();
        self.site_recomputations.reset();
        self.site_status.reset();
        for (w, window) in WINDOWS.iter().enumerate() {
            let Some(rows) = &st.sites[w] else { continue };
            for row in rows {
                // A site removed by a reload goes at once, before the next refresh.
                let Some(site) = config.sites.iter().find(|s| s.name == row.site) else {
                    continue;
                };
                let tier = site.tier.to_string();
                let labels = [config.vo.as_str(), row.site.as_str(), tier.as_str()];
                let windowed = [labels[0], labels[1], labels[2], window.label];
                if let Some(a) = row.availability {
                    self.site_availability.with_label_values(&windowed).set(a);
                }
                if let Some(r) = row.reliability {
                    self.site_reliability.with_label_values(&windowed).set(r);
                }
                if row.recomputations > 0 {
                    self.site_recomputations
                        .with_label_values(&windowed)
                        .set(i64::try_from(row.recomputations).unwrap_or(i64::MAX));
                }
                if let Some(s) = row.status {
                    self.site_status
                        .with_label_values(&labels)
                        .set(site_status_value(s));
                }
            }
        }
    }

    /// Starts the background task that computes the site figures from the store while
    /// `/metrics` is being scraped (see the module docs). It holds the service only weakly and
    /// ends promptly when `shutdown` fires; await the handle before dropping the service's
    /// last [`ServeState`], so that the writer is not kept open.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shared: &Arc<ServeState>,
        store: Arc<dyn ResultStore>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.refreshing.store(true, Ordering::SeqCst);
        let this = self.clone();
        let plans = shared.subscribe();
        let shared = Arc::downgrade(shared);
        tokio::spawn(async move {
            this.refresh_loop(shared, plans, store, shutdown.clone())
                .await;
            this.refreshing.store(false, Ordering::SeqCst);
        })
    }

    pub(super) async fn refresh_loop(
        &self,
        shared: Weak<ServeState>,
        mut plans: watch::Receiver<crate::state::Plan>,
        store: Arc<dyn ResultStore>,
        shutdown: CancellationToken,
    ) {
        // Per window: when it was last computed and the scrape count then.
        let mut last: [Option<(Instant, u64)>; 2] = [None, None];
        loop {
            let mut plan_changed = false;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.scraped.notified() => {}
                changed = plans.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    plan_changed = true;
                }
                _ = tokio::time::sleep(DAY_REFRESH) => {}
            }
            let scrapes = self.scrapes.load(Ordering::Relaxed);
            if scrapes == 0 {
                // Nobody scrapes: a big VO does not pay for figures no one reads.
                continue;
            }
            for (w, window) in WINDOWS.iter().enumerate() {
                let due = plan_changed
                    || last[w]
                        .is_none_or(|(at, seen)| at.elapsed() >= window.refresh && seen != scrapes);
                if !due {
                    continue;
                }
                let Some(plan) = shared.upgrade().map(|s| s.plan()) else {
                    return;
                };
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = site_rows(&plan.config, store.as_ref(), window) => r,
                };
                last[w] = Some((Instant::now(), scrapes));
                match outcome {
                    Ok((rows, end_ms)) => {
                        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                        st.sites[w] = Some(rows);
                        drop(st);
                        self.site_refresh_time
                            .with_label_values(&[window.label])
                            .set(end_ms as f64 / 1000.0);
                    }
                    Err(e) => {
                        self.site_refresh_errors.inc();
                        tracing::warn!(window = window.label, error = %e,
                            "site metrics not refreshed; keeping the previous figures");
                    }
                }
                if window.gives_status {
                    self.refreshed.send_modify(|n| *n += 1);
                }
            }
        }
    }

    /// Counts a scrape and wakes the refresh task; the first scrape waits (briefly) for the
    /// first site figures.
    pub(super) async fn note_scrape(&self) {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        self.scraped.notify_one();
        if self.refreshing.load(Ordering::SeqCst) {
            let mut rx = self.refreshed.subscribe();
            let _ = tokio::time::timeout(FIRST_SCRAPE_WAIT, rx.wait_for(|n| *n > 0)).await;
        }
    }
}

/// The cells of a configuration with their label values and freshness.
pub(super) fn cell_rows(config: &Config) -> Vec<CellRow> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for inst in config.instances() {
        let (Some(site), Some(probe)) =
            (config.sites.get(inst.site), config.probes.get(inst.probe))
        else {
            continue;
        };
        let Some(svc) = site.services.get(inst.service) else {
            continue;
        };
        let key = CellKey {
            site: site.name.clone(),
            hostname: svc.hostname.clone(),
            flavour: svc.flavour.clone(),
            metric: probe.metric.clone(),
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        out.push(CellRow {
            labels: [
                config.vo.clone(),
                key.site.clone(),
                key.flavour.clone(),
                key.hostname.clone(),
                key.metric.clone(),
            ],
            freshness_ms: i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX),
            key,
        });
    }
    out
}

/// Computes the site rows of one window ending now; returns them with the window's end (ms).
pub(super) async fn site_rows(
    config: &Arc<Config>,
    store: &dyn ResultStore,
    window: &Window,
) -> Result<(Vec<SiteRow>, i64), String> {
    let end_ms = unix_ms(SystemTime::now());
    let length_ms = i64::try_from(window.length.as_millis()).unwrap_or(i64::MAX);
    let period = Period {
        start_ms: end_ms.saturating_sub(length_ms),
        end_ms,
        label: window.label.to_string(),
    };
    let filter = CellFilter {
        vo: Some(config.vo.clone()),
        ..CellFilter::default()
    };
    // Runs of equal results: a month is a few items per cell (same figures as the results).
    let cells = store
        .run_timelines(
            period.start_ms,
            period.end_ms,
            &filter,
            merge_gap_ms(config),
        )
        .await
        .map_err(|e| e.to_string())?;
    let downtimes = store
        .downtimes(period.start_ms, period.end_ms)
        .await
        .map_err(|e| e.to_string())?;
    // The applied recomputations count here as in every report.
    let recomputations = store.recomputations().await.map_err(|e| e.to_string())?;
    let config = config.clone();
    let gives_status = window.gives_status;
    // Thirty days of a large VO is real work: off the async workers.
    let rows = tokio::task::spawn_blocking(move || {
        let report = compute_applied(
            &config,
            None,
            &period,
            &cells,
            &downtimes,
            DEFAULT_UNKNOWN_THRESHOLD,
            &recomputations,
        )?;
        Ok::<_, String>(
            report
                .sites
                .iter()
                .map(|s| SiteRow {
                    site: s.site.clone(),
                    availability: s.figures.availability,
                    reliability: s.figures.reliability,
                    status: gives_status.then(|| site_status(s, default_thresholds(s.tier))),
                    recomputations: s.recomputations.len(),
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|e| format!("site figures task failed: {e}"))??;
    Ok((rows, end_ms))
}
