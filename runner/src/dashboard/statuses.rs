//! Site statuses (last 24 h), computed in the background and cached.

use super::*;

/// A site's 24-hour status and figures; sites absent from the map have no service that counts
/// for availability.
pub(super) type SiteStatuses = HashMap<String, SiteSummary>;

/// What the dashboard shows of a site's last 24 hours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SiteSummary {
    pub(super) status: SiteStatus,
    /// Availability over the 24 hours; n/a while most of them are unknown.
    pub(super) availability: Option<f64>,
    /// For a site whose first result is inside the 24 hours: how long ago that was.
    pub(super) data_ms: Option<i64>,
    /// Availability over the time known, and that time (what a new site is judged on).
    pub(super) over_known: Option<f64>,
    pub(super) known_ms: i64,
}

impl SiteSummary {
    pub(super) fn of(s: &SiteReport, end_ms: i64) -> Self {
        SiteSummary {
            status: site_status(s, default_thresholds(s.tier)),
            availability: s.figures.availability,
            data_ms: s.new_since_ms.map(|since| end_ms.saturating_sub(since)),
            over_known: s.figures.availability_over_known(),
            known_ms: s.figures.known_ms,
        }
    }

    /// `good`, or `new, 3 h of data`.
    pub(super) fn label(&self) -> String {
        match self.data_ms {
            Some(data) if self.status == SiteStatus::New => format!("new, {} of data", span(data)),
            _ => self.status.name().to_string(),
        }
    }

    /// The availability as shown: the 24-hour figure, or for a new site the figure over the
    /// time known with that coverage (`99.2% over 3 h`) rather than `n/a`.
    pub(super) fn figure(&self) -> String {
        if self.data_ms.is_some() || self.availability.is_none() {
            pct_over(self.over_known, self.known_ms)
        } else {
            pct(self.availability)
        }
    }
}

/// How long a page waits for site statuses not computed yet (the first view after a start or
/// a reload) before it renders without them; a small VO's are ready well within it.
pub(super) const COLD_WAIT: Duration = Duration::from_millis(150);

/// What a page shows beside a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum StatusView {
    /// The site's 24-hour status and figures.
    Known(SiteSummary),
    /// No service of the site counts for availability.
    NotCounted,
    /// Still being computed (first view after a start or reload).
    Pending,
}

impl StatusView {
    pub(super) fn of(statuses: Option<&SiteStatuses>, site: &str) -> Self {
        match statuses {
            None => StatusView::Pending,
            Some(m) => m
                .get(site)
                .map_or(StatusView::NotCounted, |s| StatusView::Known(*s)),
        }
    }
}

pub(super) struct StatusEntry {
    /// Which service and plan the value belongs to. Holding `Weak`s keeps the allocations, so
    /// a new service (tests, benchmarks) can never reuse an address and get a stale answer.
    pub(super) shared: Weak<ServeState>,
    pub(super) config: Weak<Config>,
    /// The statuses and when they were computed; `None` until the first computation ends.
    pub(super) value: Option<(Instant, Arc<SiteStatuses>)>,
    /// A computation is running (one at a time, whatever the number of requests).
    pub(super) refreshing: bool,
}

impl StatusEntry {
    pub(super) fn belongs_to(&self, shared: &Arc<ServeState>, config: &Arc<Config>) -> bool {
        Weak::as_ptr(&self.shared) == Arc::as_ptr(shared)
            && Weak::as_ptr(&self.config) == Arc::as_ptr(config)
    }
}

pub(super) static STATUS_CACHE: Mutex<Option<StatusEntry>> = Mutex::new(None);
/// Woken when a computation ends, for the requests waiting on a cold cache.
pub(super) static STATUS_READY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The 24-hour status of every site, computed in the background: reused for [`STATUS_TTL`],
/// then refreshed while the old value is still served; a reload (new plan) starts afresh.
/// `None` while the first computation is still running after [`COLD_WAIT`], so that no
/// request waits seconds for it on a large VO.
pub(super) async fn site_statuses(
    state: &HttpState,
    config: &Arc<Config>,
) -> Option<Arc<SiteStatuses>> {
    let notified = STATUS_READY.notified();
    tokio::pin!(notified);
    // Registered before looking, so a computation ending in between still wakes us.
    notified.as_mut().enable();
    let (value, start) = {
        let mut guard = STATUS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if !guard
            .as_ref()
            .is_some_and(|e| e.belongs_to(&state.shared, config))
        {
            *guard = None;
        }
        let e = guard.get_or_insert_with(|| StatusEntry {
            shared: Arc::downgrade(&state.shared),
            config: Arc::downgrade(config),
            value: None,
            refreshing: false,
        });
        let fresh = e
            .value
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < STATUS_TTL);
        let start = !fresh && !e.refreshing;
        e.refreshing |= start;
        (e.value.as_ref().map(|(_, v)| v.clone()), start)
    };
    if start {
        let (state, config) = (state.clone(), config.clone());
        tokio::spawn(async move {
            let outcome = compute_statuses(state.store.as_ref(), &config, now_ms()).await;
            {
                let mut guard = STATUS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = guard
                    .as_mut()
                    .filter(|e| e.belongs_to(&state.shared, &config))
                {
                    e.refreshing = false;
                    match outcome {
                        Ok(v) => e.value = Some((Instant::now(), Arc::new(v))),
                        // The page says the statuses are missing; the next request retries.
                        Err(err) => tracing::warn!(error = ?err, "computing the site statuses"),
                    }
                }
            }
            STATUS_READY.notify_waiters();
        });
    }
    if value.is_some() {
        return value;
    }
    let _ = tokio::time::timeout(COLD_WAIT, notified).await;
    let guard = STATUS_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .as_ref()
        .filter(|e| e.belongs_to(&state.shared, config))
        .and_then(|e| e.value.as_ref().map(|(_, v)| v.clone()))
}

/// Site statuses from one availability report over the last 24 hours (the dashboards'
/// thresholds per tier).
pub(super) async fn compute_statuses(
    store: &dyn ResultStore,
    config: &Arc<Config>,
    now: i64,
) -> Result<SiteStatuses, PageError> {
    let period = Period {
        start_ms: now - DAY_MS,
        end_ms: now,
        label: "24h".into(),
    };
    // Runs of equal results rather than every result: one read (SQLite: one scan of the time
    // index) folded as it goes, with the report's merge gap, which keeps the figures exact.
    let cells = store
        .run_timelines(
            period.start_ms,
            period.end_ms,
            &CellFilter::default(),
            gridprobe_results::report::merge_gap_ms(config),
        )
        .await?;
    let downtimes = store.downtimes(period.start_ms, period.end_ms).await?;
    let recomputations = store.recomputations().await?;
    let config = config.clone();
    // Pure computation over every site: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        let report = compute_applied(
            &config,
            None,
            &period,
            &cells,
            &downtimes,
            DEFAULT_UNKNOWN_THRESHOLD,
            &recomputations,
        )
        .map_err(PageError::Internal)?;
        Ok(report
            .sites
            .iter()
            .map(|s| (s.site.clone(), SiteSummary::of(s, period.end_ms)))
            .collect())
    })
    .await
    .map_err(|e| PageError::Internal(format!("site status computation failed: {e}")))?
}
