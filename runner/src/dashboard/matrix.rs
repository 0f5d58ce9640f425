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

pub(super) async fn build_matrix_page(
    state: &HttpState,
    config: &Arc<Config>,
    filters: MatrixFilters,
    now: i64,
) -> Result<MatrixPage, PageError> {
    let latest = state
        .store
        .latest(&CellFilter {
            vo: Some(config.vo.clone()),
            site: None,
            flavour: filters.flavour.clone(),
        })
        .await?;
    let downtimes: Vec<Downtime> = downtimes_between(state.store.as_ref(), config, now, now + 1)
        .await?
        .into_iter()
        .filter(|d| d.outage)
        .collect();
    let statuses = site_statuses(state, config).await;
    let mut matrix = build_matrix(
        config,
        &latest,
        now,
        &MatrixFilter {
            site: None,
            flavour: filters.flavour.clone(),
        },
    );
    if let Some(t) = filters.tier {
        matrix.sites.retain(|s| s.tier == t);
    }
    // Columns that still have a cell once the tier filter dropped sites.
    let shown: Vec<usize> = (0..matrix.columns.len())
        .filter(|&c| {
            matrix
                .sites
                .iter()
                .any(|s| s.instances.iter().any(|i| i.cells[c].is_some()))
        })
        .collect();
    let mut counts: HashMap<&'static str, (Shown, usize)> = HashMap::new();
    let mut groups: Vec<TierGroup> = Vec::new();
    for tier in 0..=3u8 {
        let mut sites = Vec::new();
        for row in matrix.sites.iter().filter(|s| s.tier == tier) {
            let mut cells = Vec::with_capacity(shown.len());
            for &c in &shown {
                // The best instance of the column, with a downtime overriding its result.
                let mut best: Option<(
                    Shown,
                    &Cell,
                    &gridprobe_results::matrix::InstanceRow,
                    Option<&Downtime>,
                )> = None;
                let mut n = 0;
                for inst in &row.instances {
                    let Some(cell) = &inst.cells[c] else { continue };
                    n += 1;
                    let dt = outage_of(&downtimes, &row.site, &inst.hostname, &inst.flavour);
                    let s = if dt.is_some() {
                        Shown::Downtime
                    } else {
                        Shown::State(cell.state)
                    };
                    if best.is_none_or(|(b, ..)| s.rank() > b.rank()) {
                        best = Some((s, cell, inst, dt));
                    }
                }
                cells.push(best.map(|(s, cell, inst, dt)| {
                    counts.entry(s.name()).or_insert((s, 0)).1 += 1;
                    let mut view = CellView::of(cell, &inst.hostname, dt, n);
                    if let Some(notify) = &state.notify {
                        let key = CellKey {
                            site: row.site.clone(),
                            hostname: inst.hostname.clone(),
                            flavour: inst.flavour.clone(),
                            metric: matrix.columns[c].metric.clone(),
                        };
                        view.mark_notify(notify, &key, now);
                    }
                    view
                }));
            }
            sites.push(SiteLine {
                name: row.site.clone(),
                status: StatusView::of(statuses.as_deref(), &row.site),
                instances: row.instances.len(),
                cells,
            });
        }
        if !sites.is_empty() {
            groups.push(TierGroup { tier, sites });
        }
    }
    let mut counts: Vec<(Shown, usize)> = counts.into_values().collect();
    counts.sort_by_key(|(s, _)| std::cmp::Reverse(s.rank()));
    Ok(MatrixPage {
        vo: config.vo.clone(),
        filters,
        tiers_known: config.sites.iter().map(|s| s.tier).collect(),
        flavours_known: flavours(config).into_iter().map(str::to_string).collect(),
        columns: shown
            .iter()
            .map(|&c| {
                (
                    matrix.columns[c].metric.clone(),
                    matrix.columns[c].short.clone(),
                )
            })
            .collect(),
        groups,
        counts,
        statuses_pending: statuses.is_none(),
    })
}
