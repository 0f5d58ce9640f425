//! `/`: the matrix.

use super::*;

/// Filters of `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct MatrixFilters {
    pub(super) vo: Option<String>,
    pub(super) tier: Option<u8>,
    pub(super) flavour: Option<String>,
}

pub(super) fn matrix_filters(
    config: &Config,
    params: &HashMap<&'static str, String>,
) -> Result<MatrixFilters, PageError> {
    let mut f = MatrixFilters::default();
    if let Some(vo) = params.get("vo") {
        if vo != &config.vo {
            return Err(PageError::bad(
                "vo",
                format!("unknown VO `{vo}`: this service monitors `{}`", config.vo),
            ));
        }
        f.vo = Some(vo.clone());
    }
    if let Some(t) = params.get("tier") {
        match t.parse::<u8>() {
            Ok(n) if n <= 3 => f.tier = Some(n),
            _ => {
                return Err(PageError::bad(
                    "tier",
                    format!("`{t}` is not a tier: write 0, 1, 2 or 3"),
                ))
            }
        }
    }
    if let Some(fl) = params.get("flavour") {
        let known = flavours(config);
        if !known.contains(fl.as_str()) {
            return Err(PageError::bad(
                "flavour",
                format!(
                    "no service has flavour `{fl}`{} (known: {})",
                    hint(fl, known.iter().copied()),
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        f.flavour = Some(fl.clone());
    }
    Ok(f)
}

/// Flavours of the configuration's services, sorted.
pub(super) fn flavours(config: &Config) -> BTreeSet<&str> {
    config
        .sites
        .iter()
        .flat_map(|s| s.services.iter().map(|v| v.flavour.as_str()))
        .collect()
}

/// One site line of the matrix.
#[derive(Debug)]
pub(super) struct SiteLine {
    pub(super) name: String,
    pub(super) status: StatusView,
    pub(super) instances: usize,
    /// One per shown column; `None` where no probe of the column applies.
    pub(super) cells: Vec<Option<CellView>>,
}

/// The sites of one tier.
#[derive(Debug)]
pub(super) struct TierGroup {
    pub(super) tier: u8,
    pub(super) sites: Vec<SiteLine>,
}

/// Everything `/` shows.
#[derive(Debug)]
pub(super) struct MatrixPage {
    pub(super) vo: String,
    pub(super) filters: MatrixFilters,
    pub(super) tiers_known: BTreeSet<u8>,
    pub(super) flavours_known: Vec<String>,
    /// (full metric, short name) per shown column.
    pub(super) columns: Vec<(String, String)>,
    pub(super) groups: Vec<TierGroup>,
    /// Cells per shown state name, for the summary line.
    pub(super) counts: Vec<(Shown, usize)>,
    /// Whether the site statuses are still being computed.
    pub(super) statuses_pending: bool,
}

/// A rendered matrix page is reused while nothing new was written, and at most this long
/// (ages and MISSING cells move with the clock).
pub(super) const PAGE_MAX_AGE: Duration = Duration::from_secs(5);
/// After a write, a page is still reused this long, so a steady stream of results costs at
/// most one rendering per second.
pub(super) const PAGE_MIN_AGE: Duration = Duration::from_secs(1);
/// While one request renders, others get the previous rendering if it is no older than this.
pub(super) const PAGE_STALE_OK: Duration = Duration::from_secs(30);
/// Distinct filter combinations kept.
pub(super) const PAGE_SLOTS: usize = 32;
/// Bytes of rendered pages kept at most: a 1,000-site page is about 2 MB, so 32 of them held
/// 64 MB for pages that are seconds old and rarely asked for again.
pub(super) const PAGE_BYTES: usize = 12 << 20;

/// One rendered matrix page: for which service, plan and query, as of which write.
pub(super) struct RenderedPage {
    pub(super) key: (usize, usize, String),
    /// Held so that the addresses in `key` cannot be reused by a later service or plan.
    pub(super) _owners: (Weak<ServeState>, Weak<Config>),
    pub(super) written: u64,
    pub(super) at: Instant,
    pub(super) body: maud::Markup,
}

pub(super) static MATRIX_PAGES: Mutex<Vec<RenderedPage>> = Mutex::new(Vec::new());
/// One rendering at a time: concurrent requests share it instead of each paying ~100 ms.
pub(super) static MATRIX_RENDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cached rendering for `key` that `usable` accepts.
pub(super) fn cached_page(
    key: &(usize, usize, String),
    usable: impl Fn(&RenderedPage) -> bool,
) -> Option<maud::Markup> {
    let pages = MATRIX_PAGES.lock().unwrap_or_else(|p| p.into_inner());
    pages
        .iter()
        .find(|p| &p.key == key && usable(p))
        .map(|p| p.body.clone())
}

pub(super) fn keep_page(page: RenderedPage) {
    let mut pages = MATRIX_PAGES.lock().unwrap_or_else(|p| p.into_inner());
    pages.retain(|p| p.key != page.key);
    let size = |p: &RenderedPage| p.body.0.len();
    let mut held: usize = pages.iter().map(size).sum::<usize>() + size(&page);
    while !pages.is_empty() && held > PAGE_BYTES {
        if let Some(oldest) = pages
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| p.at)
            .map(|(i, _)| i)
        {
            held = held.saturating_sub(size(&pages.swap_remove(oldest)));
        }
    }
    if pages.len() >= PAGE_SLOTS {
        // The oldest goes (also those of a replaced plan, which are never asked for again).
        if let Some(oldest) = pages
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| p.at)
            .map(|(i, _)| i)
        {
            pages.swap_remove(oldest);
        }
    }
    pages.push(page);
}

pub(super) async fn matrix_page(
    State(state): State<HttpState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let started = Instant::now();
    let plan = state.shared.plan();
    let config = plan.config;
    let page = |result| Page::new(&state, started, result);
    let title = || "Availability matrix".to_string();
    let key = query.as_ref().ok().map(|q| {
        (
            Arc::as_ptr(&state.shared) as usize,
            Arc::as_ptr(&config) as usize,
            format!("{:?}", q.0),
        )
    });
    let written = || {
        state
            .shared
            .writer()
            .stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let fresh = |p: &RenderedPage| {
        let age = p.at.elapsed();
        age < PAGE_MAX_AGE && (p.written == written() || age < PAGE_MIN_AGE)
    };
    if let Some(key) = &key {
        if let Some(body) = cached_page(key, fresh) {
            return page(Ok((title(), body)));
        }
    }
    // One renders; the others take the previous rendering meanwhile, or wait for this one.
    let _rendering = match MATRIX_RENDER.try_lock() {
        Ok(guard) => guard,
        Err(_) => {
            if let Some(key) = &key {
                if let Some(body) = cached_page(key, |p| p.at.elapsed() < PAGE_STALE_OK) {
                    return page(Ok((title(), body)));
                }
            }
            let guard = MATRIX_RENDER.lock().await;
            if let Some(key) = &key {
                if let Some(body) = cached_page(key, fresh) {
                    return page(Ok((title(), body)));
                }
            }
            guard
        }
    };
    let as_of = written();
    let result = async {
        let params = query_params(query, &["vo", "tier", "flavour"])?;
        let filters = matrix_filters(&config, &params)?;
        let built = build_matrix_page(&state, &config, filters, now_ms()).await?;
        Ok((title(), render::matrix(&built)))
    }
    .await;
    if let (Some(key), Ok((_, body))) = (key, &result) {
        keep_page(RenderedPage {
            key,
            _owners: (Arc::downgrade(&state.shared), Arc::downgrade(&config)),
            written: as_of,
            at: Instant::now(),
            body: body.clone(),
        });
    }
    page(result)
}

/// One site's best cell of a column while the page is built: what it shows, the instance and
/// its outage, and how many instances the column has at the site.
type Best<'a> = (Shown, usize, Option<&'a Downtime>, usize);

pub(super) async fn build_matrix_page(
    state: &HttpState,
    config: &Arc<Config>,
    filters: MatrixFilters,
    now: i64,
) -> Result<MatrixPage, PageError> {
    let downtimes: Vec<Downtime> = downtimes_between(state.store.as_ref(), config, now, now + 1)
        .await?
        .into_iter()
        .filter(|d| d.outage)
        .collect();
    let statuses = site_statuses(state, config).await;
    // Only what the page shows is built: per shown site and column the best instance, and a
    // tooltip for that one (the whole matrix of a 100,000-entry VO is ten times larger).
    let built = with_latest(state, config, |m| {
        let site_shown = |si: usize| filters.tier.is_none_or(|t| config.sites[si].tier == t);
        let svc_shown = |si: usize, vi: u32| {
            filters.flavour.as_deref().is_none_or(|f| {
                config.sites[si]
                    .services
                    .get(vi as usize)
                    .is_some_and(|s| s.flavour == f)
            })
        };
        // Columns: probes with an instance on a shown service of a shown site, in plan order.
        let mut used = vec![false; config.probes.len()];
        for si in (0..config.sites.len()).filter(|&si| site_shown(si)) {
            for inst in &m.insts[m.site_start[si]..m.site_start[si + 1]] {
                if svc_shown(si, inst.service) {
                    if let Some(u) = used.get_mut(inst.probe as usize) {
                        *u = true;
                    }
                }
            }
        }
        let shown: Vec<usize> = (0..used.len()).filter(|&p| used[p]).collect();
        let mut column_of = vec![usize::MAX; used.len()];
        for (c, &p) in shown.iter().enumerate() {
            column_of[p] = c;
        }
        let mut counts: HashMap<&'static str, (Shown, usize)> = HashMap::new();
        let mut groups: Vec<TierGroup> = Vec::new();
        let mut best: Vec<Option<Best<'_>>> = Vec::with_capacity(shown.len());
        for tier in 0..=3u8 {
            let mut sites = Vec::new();
            for (si, site) in config.sites.iter().enumerate() {
                if site.tier != tier || !site_shown(si) {
                    continue;
                }
                let services = (0..site.services.len())
                    .filter(|&vi| svc_shown(si, u32::try_from(vi).unwrap_or(u32::MAX)))
                    .count();
                if services == 0 {
                    continue;
                }
                best.clear();
                best.resize(shown.len(), None);
                for i in m.site_start[si]..m.site_start[si + 1] {
                    let inst = m.insts[i];
                    let c = column_of
                        .get(inst.probe as usize)
                        .copied()
                        .unwrap_or(usize::MAX);
                    if c == usize::MAX || !svc_shown(si, inst.service) {
                        continue;
                    }
                    let svc = &site.services[inst.service as usize];
                    let dt = outage_of(&downtimes, &site.name, &svc.hostname, &svc.flavour);
                    let s = match (dt, &m.slots[i]) {
                        (Some(_), _) => Shown::Downtime,
                        (None, None) => Shown::State(CellState::NoResult),
                        (None, Some(slot)) => Shown::State(state_of(slot, inst.freshness_ms, now)),
                    };
                    let n = best[c].map_or(0, |b| b.3) + 1;
                    match &mut best[c] {
                        Some(b) if s.rank() <= b.0.rank() => b.3 = n,
                        b => *b = Some((s, i, dt, n)),
                    }
                }
                let cells = best
                    .iter()
                    .enumerate()
                    .map(|(c, b)| {
                        b.map(|(s, i, dt, n)| {
                            counts.entry(s.name()).or_insert((s, 0)).1 += 1;
                            let inst = m.insts[i];
                            let svc = &site.services[inst.service as usize];
                            let metric = &config.probes[shown[c]].metric;
                            let cell = cell_of(metric, m.slots[i].as_ref(), inst.freshness_ms, now);
                            let mut view = CellView::of(&cell, &svc.hostname, dt, n);
                            if let Some(notify) = &state.notify {
                                let key = CellKey {
                                    site: site.name.clone(),
                                    hostname: svc.hostname.clone(),
                                    flavour: svc.flavour.clone(),
                                    metric: metric.clone(),
                                };
                                view.mark_notify(notify, &key, now);
                            }
                            view
                        })
                    })
                    .collect();
                sites.push(SiteLine {
                    name: site.name.clone(),
                    status: StatusView::of(statuses.as_deref(), &site.name),
                    instances: services,
                    cells,
                });
            }
            if !sites.is_empty() {
                groups.push(TierGroup { tier, sites });
            }
        }
        (shown, counts, groups)
    })
    .await?;
    let (shown, counts, groups) = built;
    let mut counts: Vec<(Shown, usize)> = counts.into_values().collect();
    counts.sort_by_key(|(s, _)| std::cmp::Reverse(s.rank()));
    Ok(MatrixPage {
        vo: config.vo.clone(),
        filters,
        tiers_known: config.sites.iter().map(|s| s.tier).collect(),
        flavours_known: flavours(config).into_iter().map(str::to_string).collect(),
        columns: shown
            .iter()
            .map(|&p| {
                (
                    config.probes[p].metric.clone(),
                    config.probes[p].short.clone(),
                )
            })
            .collect(),
        groups,
        counts,
        statuses_pending: statuses.is_none(),
    })
}

/// A cell's state as `build_matrix` computes it: MISSING once older than its freshness window.
fn state_of(slot: &Slot, freshness_ms: i64, now: i64) -> CellState {
    if now.saturating_sub(slot.started_ms).max(0) > freshness_ms {
        CellState::Missing
    } else {
        CellState::Current(slot.status)
    }
}

/// The matrix cell of an instance, as `build_matrix` makes it.
fn cell_of(metric: &str, slot: Option<&Slot>, freshness_ms: i64, now: i64) -> Cell {
    match slot {
        None => Cell {
            metric: metric.to_string(),
            state: CellState::NoResult,
            last_status: None,
            age_seconds: None,
            summary: None,
            result_id: None,
        },
        Some(slot) => Cell {
            metric: metric.to_string(),
            state: state_of(slot, freshness_ms, now),
            last_status: Some(slot.status),
            age_seconds: Some(now.saturating_sub(slot.started_ms).max(0) / 1000),
            summary: Some(slot.summary.to_string()),
            result_id: Some(slot.id),
        },
    }
}
