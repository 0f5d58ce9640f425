//! `/sites/{site}`.

use super::*;

/// One instance × probe strip of the last 24 hours.
#[derive(Debug)]
pub(super) struct Strip {
    pub(super) hostname: String,
    pub(super) flavour: String,
    pub(super) short: String,
    pub(super) metric: String,
    pub(super) segments: Vec<Segment>,
}

/// Everything a site page shows.
#[derive(Debug)]
pub(super) struct SitePage {
    pub(super) site: gridprobe_config::Site,
    pub(super) status: StatusView,
    /// (full metric, short name) per column.
    pub(super) columns: Vec<(String, String)>,
    /// (hostname, flavour, production, cells) per instance.
    pub(super) instances: Vec<(String, String, bool, Vec<Option<CellView>>)>,
    pub(super) day_start: i64,
    pub(super) now: i64,
    pub(super) strips: Vec<Strip>,
    pub(super) month_label: String,
    pub(super) month: Option<SiteReport>,
    pub(super) current: Vec<Downtime>,
    pub(super) upcoming: Vec<Downtime>,
    /// Whether `[access]` declares any token, i.e. whether a run can be started at all.
    pub(super) runs_possible: bool,
    /// (full metric, short name) of the probes that apply to the site, for the run form.
    pub(super) probes: Vec<(String, String)>,
}

pub(super) async fn site_page(State(state): State<HttpState>, Path(site): Path<String>) -> Page {
    let started = Instant::now();
    let config = state.shared.plan().config;
    let result = async {
        let Some(si) = config.site_index(&site) else {
            return Err(PageError::NotFound(format!(
                "no site named `{site}` in vo {}{}",
                config.vo,
                hint(&site, config.sites.iter().map(|s| s.name.as_str()))
            )));
        };
        let page = build_site_page(&state, &config, si, now_ms()).await?;
        Ok((page.site.name.clone(), render::site(&page)))
    }
    .await;
    Page::new(&state, started, result)
}

/// Start of the current month (UTC) and its label, e.g. `2026-10`.
pub(super) fn month_start(now: i64) -> Option<(i64, String)> {
    let z = jiff::Timestamp::from_millisecond(now)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC);
    let first = z.date().first_of_month();
    let start = first
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp()
        .as_millisecond();
    Some((start, format!("{:04}-{:02}", first.year(), first.month())))
}

pub(super) async fn build_site_page(
    state: &HttpState,
    vo_config: &Arc<Config>,
    site_index: usize,
    now: i64,
) -> Result<SitePage, PageError> {
    // The VO cut down to this site: matrix, strips and report then cost the site's size, not
    // the VO's (the report otherwise computes every site of a 1,000-site VO).
    let config = &Config {
        vo: vo_config.vo.clone(),
        defaults: vo_config.defaults.clone(),
        sites: vec![vo_config.sites[site_index].clone()],
        probes: vo_config.probes.clone(),
        profiles: vo_config.profiles.clone(),
        downtimes: vo_config.downtimes.clone(),
        ..Config::default()
    };
    let si = 0;
    let site = &config.sites[si];
    let filter = CellFilter {
        vo: Some(config.vo.clone()),
        site: Some(site.name.clone()),
        flavour: None,
    };
    let day_start = now - DAY_MS;
    let (month_start, month_label) = month_start(now).unwrap_or((day_start, "24h".into()));
    let since = month_start.min(day_start);

    let latest = state.store.latest(&filter).await?;
    // One read of the timelines serves both the month's figures and the 24-hour strips.
    let cells = state
        .store
        .timelines(since, now, &CellFilter { vo: None, ..filter })
        .await?;
    let downtimes = downtimes_between(state.store.as_ref(), config, since, now + UPCOMING).await?;
    let statuses = site_statuses(state, vo_config).await;

    let matrix = build_matrix(
        config,
        &latest,
        now,
        &MatrixFilter {
            site: Some(site.name.clone()),
            flavour: None,
        },
    );
    let columns: Vec<(String, String)> = matrix
        .columns
        .iter()
        .map(|c| (c.metric.clone(), c.short.clone()))
        .collect();
    let current: Vec<Downtime> = downtimes
        .iter()
        .filter(|d| d.start_ms <= now && d.end_ms > now && touches(d, site))
        .cloned()
        .collect();
    let mut upcoming: Vec<Downtime> = downtimes
        .iter()
        .filter(|d| d.start_ms > now && touches(d, site))
        .cloned()
        .collect();
    upcoming.sort_by_key(|d| d.start_ms);
    let mut instances = Vec::new();
    if let Some(row) = matrix.sites.first() {
        for inst in &row.instances {
            let dt = outage_of(&current, &site.name, &inst.hostname, &inst.flavour);
            let production = site
                .services
                .iter()
                .find(|s| s.hostname == inst.hostname && s.flavour == inst.flavour)
                .is_none_or(|s| s.production);
            instances.push((
                inst.hostname.clone(),
                inst.flavour.clone(),
                production,
                inst.cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        c.as_ref().map(|c| {
                            let mut view = CellView::of(c, &inst.hostname, dt, 1);
                            if let (Some(notify), Some(col)) =
                                (&state.notify, matrix.columns.get(i))
                            {
                                let key = CellKey {
                                    site: site.name.clone(),
                                    hostname: inst.hostname.clone(),
                                    flavour: inst.flavour.clone(),
                                    metric: col.metric.clone(),
                                };
                                view.mark_notify(notify, &key, now);
                            }
                            view
                        })
                    })
                    .collect(),
            ));
        }
    }

    // Strips: each cell's timeline over the last 24 hours, as the availability computation
    // sees it (freshness, MISSING, outages as DOWNTIME).
    let by_cell: HashMap<&CellKey, &Vec<(i64, Status)>> =
        cells.iter().map(|(k, v)| (k, v)).collect();
    let day = day_start..now;
    let mut strips = Vec::new();
    for inst in config.instances().iter().filter(|i| i.site == si) {
        let svc = &site.services[inst.service];
        let probe = &config.probes[inst.probe];
        let key = CellKey {
            site: site.name.clone(),
            hostname: svc.hostname.clone(),
            flavour: svc.flavour.clone(),
            metric: probe.metric.clone(),
        };
        let spans: Vec<DowntimeSpan> = downtimes
            .iter()
            .filter(|d| d.outage && d.covers(&site.name, &svc.hostname, &svc.flavour))
            .map(|d| DowntimeSpan {
                span: d.start_ms..d.end_ms,
                scheduled: d.scheduled,
            })
            .collect();
        let points = by_cell.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
        let freshness = i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX);
        strips.push(Strip {
            hostname: svc.hostname.clone(),
            flavour: svc.flavour.clone(),
            short: probe.short.clone(),
            metric: probe.metric.clone(),
            segments: metric_timeline(points, freshness, &day, &spans),
        });
    }

    // Month to date: the future part of the month is not "missing".
    let month = if month_start < now {
        let period = Period {
            start_ms: month_start,
            end_ms: now,
            label: month_label.clone(),
        };
        // The applied recomputations count here as in every report.
        let recomputations = state.store.recomputations().await?;
        let runs: Vec<_> = cells
            .iter()
            .map(|(key, points)| (key.clone(), gridprobe_results::runs_of(points, 0)))
            .collect();
        let report = compute_applied(
            config,
            None,
            &period,
            &runs,
            &downtimes,
            DEFAULT_UNKNOWN_THRESHOLD,
            &recomputations,
        )
        .map_err(PageError::Internal)?;
        report.sites.into_iter().find(|s| s.site == site.name)
    } else {
        None
    };
    let probes: Vec<(String, String)> = columns.clone();
    Ok(SitePage {
        site: site.clone(),
        status: StatusView::of(statuses.as_deref(), &site.name),
        columns,
        instances,
        day_start,
        now,
        strips,
        month_label,
        month,
        current,
        upcoming,
        runs_possible: !vo_config.access.tokens.is_empty(),
        probes,
    })
}

/// Whether a downtime concerns a site: declared for it, or for one of its services.
pub(super) fn touches(d: &Downtime, site: &gridprobe_config::Site) -> bool {
    d.site.as_deref() == Some(site.name.as_str())
        || (d.site.is_none()
            && site
                .services
                .iter()
                .any(|s| d.covers(&site.name, &s.hostname, &s.flavour)))
}

/// Class of a strip segment.
pub(super) fn segment_class(s: AStatus) -> &'static str {
    match s {
        AStatus::Ok => "t-ok",
        AStatus::Warning => "t-warn",
        AStatus::Critical => "t-error",
        AStatus::Unknown => "t-unkn",
        AStatus::Missing => "t-missing",
        AStatus::Downtime { .. } => "t-dt",
        AStatus::Excluded => "t-missing",
    }
}
