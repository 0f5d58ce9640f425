//! The latest state of every cell of the plan, kept in memory for `/` so that a rendering does
//! not read (and parse) every cell's latest result from the store: 100,000 of them cost about
//! as much as the whole page's budget.
//!
//! The copy follows the store, not the recording path, because results also arrive from other
//! processes (`gridprobe consume`, the other instances of a shared schedule, spool replays):
//! each rendering first asks the store what changed since the last one
//! (`ResultStore::latest_changes`), which SQLite answers exactly from the ids of `latest`, and
//! a backend that cannot answers every cell (read whole, as before). So the page always shows
//! what the store holds, late results included (a late result never replaces a newer one in
//! `latest`, so it changes nothing here either); retention keeps each cell's latest, and
//! recomputations change reports, not results. A reload (new plan) starts a new copy.
//!
//! Memory: one slot per probe instance (id, start, status, summary), about 100 bytes with the
//! summary, so 10 MB at 100,000 entries; the plan's own strings are not copied.

use gridprobe_config::ProbeInstance;

use super::*;

/// A cell's latest final result as `/` shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Slot {
    pub(super) id: i64,
    pub(super) started_ms: i64,
    pub(super) status: Status,
    pub(super) summary: Box<str>,
}

/// A probe instance of the plan, compact.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inst {
    pub(super) service: u32,
    pub(super) probe: u32,
    pub(super) freshness_ms: i64,
}

/// The copy for one service and plan.
pub(super) struct Mirror {
    shared: Weak<ServeState>,
    config: Weak<Config>,
    /// What the store gave with the last changes.
    mark: i64,
    /// Every probe instance, in the plan's order (by site, service, probe).
    pub(super) insts: Vec<Inst>,
    /// Site `s`'s instances are `insts[site_start[s]..site_start[s + 1]]`.
    pub(super) site_start: Vec<usize>,
    /// One per instance.
    pub(super) slots: Vec<Option<Slot>>,
    sites: HashMap<String, u32>,
    probes: HashMap<String, u32>,
}

impl Mirror {
    fn new(shared: &Arc<ServeState>, config: &Arc<Config>) -> Self {
        let instances: Vec<ProbeInstance> = config.instances();
        let mut site_start = Vec::with_capacity(config.sites.len() + 1);
        let mut insts = Vec::with_capacity(instances.len());
        let mut next = 0;
        for (i, inst) in instances.iter().enumerate() {
            // `instances()` is ordered by site: sites without instance get an empty range.
            while next <= inst.site {
                site_start.push(i);
                next += 1;
            }
            insts.push(Inst {
                service: u32::try_from(inst.service).unwrap_or(u32::MAX),
                probe: u32::try_from(inst.probe).unwrap_or(u32::MAX),
                freshness_ms: i64::try_from(inst.freshness.as_millis()).unwrap_or(i64::MAX),
            });
        }
        while next <= config.sites.len() {
            site_start.push(insts.len());
            next += 1;
        }
        let index = |names: &mut dyn Iterator<Item = &String>| {
            names
                .enumerate()
                .map(|(i, n)| (n.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
                .collect::<HashMap<_, _>>()
        };
        Mirror {
            shared: Arc::downgrade(shared),
            config: Arc::downgrade(config),
            mark: 0,
            slots: vec![None; insts.len()],
            insts,
            site_start,
            sites: index(&mut config.sites.iter().map(|s| &s.name)),
            probes: index(&mut config.probes.iter().map(|p| &p.metric)),
        }
    }

    fn belongs_to(&self, shared: &Arc<ServeState>, config: &Arc<Config>) -> bool {
        Weak::as_ptr(&self.shared) == Arc::as_ptr(shared)
            && Weak::as_ptr(&self.config) == Arc::as_ptr(config)
    }

    /// The instance of a cell in the plan, if it has one.
    fn instance_of(&self, config: &Config, key: &CellKey) -> Option<usize> {
        let si = *self.sites.get(&key.site)? as usize;
        let pi = *self.probes.get(&key.metric)?;
        let site = config.sites.get(si)?;
        let vi = site
            .services
            .iter()
            .position(|s| s.hostname == key.hostname && s.flavour == key.flavour)?;
        let vi = u32::try_from(vi).ok()?;
        let (lo, hi) = (self.site_start[si], self.site_start[si + 1]);
        let range = &self.insts[lo..hi];
        range
            .binary_search_by_key(&(vi, pi), |i| (i.service, i.probe))
            .ok()
            .map(|i| lo + i)
    }

    /// Applies what the store says changed.
    fn apply(&mut self, config: &Config, changes: LatestChanges) {
        if changes.complete {
            self.slots.iter_mut().for_each(|s| *s = None);
        }
        for cell in changes.cells {
            let Some(i) = self.instance_of(config, &cell.key) else {
                continue;
            };
            // As the store's `latest` filtered by VO: a cell whose latest result is another
            // VO's shows no result.
            self.slots[i] = (cell.vo == config.vo).then(|| Slot {
                id: cell.id,
                started_ms: cell.started_at_ms,
                status: cell.status,
                summary: cell.summary.into_boxed_str(),
            });
        }
        self.mark = changes.mark;
    }
}

/// The copy of the current service and plan (one at a time: a reload replaces it).
static MIRROR: tokio::sync::Mutex<Option<Mirror>> = tokio::sync::Mutex::const_new(None);

/// Runs `f` over the latest states of `config`'s cells, brought up to date with the store
/// first. Concurrent callers take turns (the matrix renders one at a time anyway).
pub(super) async fn with_latest<T>(
    state: &HttpState,
    config: &Arc<Config>,
    f: impl FnOnce(&Mirror) -> T,
) -> Result<T, StoreError> {
    let mut guard = MIRROR.lock().await;
    if !guard
        .as_ref()
        .is_some_and(|m| m.belongs_to(&state.shared, config))
    {
        *guard = None;
        *guard = Some(Mirror::new(&state.shared, config));
    }
    let Some(mirror) = guard.as_mut() else {
        return Err(StoreError::Query("latest states not initialised".into()));
    };
    let changes = state.store.latest_changes(mirror.mark).await?;
    mirror.apply(config, changes);
    Ok(f(mirror))
}
