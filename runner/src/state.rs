//! The serve state: what the scheduler, on-demand runs and the HTTP server share inside
//! `gridprobe serve` ([`ServeState`]): the current [`Plan`], the cells' latest states
//! ([`CellStates`], keyed by [`cell_key`]), the scheduler's counters ([`SchedulerStats`]), the
//! runs in flight, the concurrency limits, and the one path by which every result is recorded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use gridprobe_config::{Config, ProbeInstance};
use gridprobe_probes::registry::BuiltProbes;
use gridprobe_probes::{ProbeResult, Status};
use gridprobe_results::{CellKey, NewResult, WriterHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::remote::RemoteExecutor;

/// Something told about every result as it is recorded (e.g. Prometheus metrics).
pub trait ResultObserver: Send + Sync {
    /// Called once per attempt; `is_final` marks the hard state of a run.
    fn observe(&self, result: &ProbeResult, is_final: bool);
}

/// A relay other than the store writer (a broker publisher) is fed from the same recording
/// path: every attempt is queued to it, which never blocks (it spools or counts what it cannot
/// deliver).
impl ResultObserver for WriterHandle {
    fn observe(&self, result: &ProbeResult, is_final: bool) {
        self.send(NewResult {
            result: result.clone(),
            is_final,
        });
    }
}

/// The state of a running service.
pub struct ServeState {
    plan: watch::Sender<Plan>,
    /// Latest hard status of every cell (for `depends_on` and the API).
    pub states: Arc<CellStates>,
    /// Scheduler counters.
    pub stats: Arc<SchedulerStats>,
    /// Cells with a run in flight (scheduled or on demand): one run per cell at a time.
    inflight: Mutex<HashSet<CellKey>>,
    limits: RwLock<Arc<Limits>>,
    writer: WriterHandle,
    observers: Vec<Arc<dyn ResultObserver>>,
    /// Fired after the shutdown grace: probes still running stop and are recorded interrupted.
    pub interrupt: CancellationToken,
    /// The monitoring host's self-check (`[server.self_check]`), consulted when recording.
    pub self_check: Arc<crate::selfcheck::SelfCheckState>,
    /// Login sessions of the dashboard (`login.rs`).
    pub sessions: Arc<crate::login::Sessions>,
    /// Where agent-run sites' runs go (set once by `serve` when `[agents]` is configured).
    remote: std::sync::OnceLock<Arc<dyn RemoteExecutor>>,
}

impl std::fmt::Debug for ServeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeState").finish_non_exhaustive()
    }
}

impl ServeState {
    /// State for a plan, recording through `writer` and telling `observers`.
    pub fn new(
        plan: Plan,
        writer: WriterHandle,
        observers: Vec<Arc<dyn ResultObserver>>,
    ) -> Arc<Self> {
        let limits = Arc::new(Limits::from_defaults(&plan.config.defaults));
        let (tx, _) = watch::channel(plan);
        Arc::new(ServeState {
            plan: tx,
            states: Arc::new(CellStates::default()),
            stats: Arc::new(SchedulerStats::default()),
            inflight: Mutex::new(HashSet::new()),
            limits: RwLock::new(limits),
            writer,
            observers,
            interrupt: CancellationToken::new(),
            self_check: Arc::default(),
            sessions: Arc::default(),
            remote: std::sync::OnceLock::new(),
        })
    }

    /// The current plan.
    pub fn plan(&self) -> Plan {
        self.plan.borrow().clone()
    }

    /// Follows plan changes (reloads).
    pub fn subscribe(&self) -> watch::Receiver<Plan> {
        self.plan.subscribe()
    }

    /// Installs a new plan (after a reload) with its limits.
    pub fn set_plan(&self, plan: Plan) {
        let limits = Arc::new(Limits::from_defaults(&plan.config.defaults));
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
        self.plan.send_replace(plan);
    }

    /// The current concurrency limits (shared by scheduled and on-demand runs).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks cells as running; fails (changing nothing) if any of them already is.
    pub fn try_claim(&self, cells: &[CellKey]) -> Result<(), CellKey> {
        let mut set = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = cells.iter().find(|c| set.contains(*c)) {
            return Err(busy.clone());
        }
        set.extend(cells.iter().cloned());
        Ok(())
    }

    /// Releases cells claimed with [`ServeState::try_claim`].
    pub fn release(&self, cells: &[CellKey]) {
        let mut set = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for c in cells {
            set.remove(c);
        }
    }

    /// Whether a cell has a run in flight.
    pub fn is_running(&self, cell: &CellKey) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(cell)
    }

    /// Records the attempts of one run: the last is the hard state. Updates the cell's state,
    /// tells the observers and hands everything to the writer. Returns whether the cell's
    /// dependants should be woken (first result, or back up after being down).
    pub fn record(&self, mut attempts: Vec<ProbeResult>) -> bool {
        // The monitoring host's own failure is never the site's (selfcheck.rs).
        self.self_check.reclassify(&mut attempts);
        let n = attempts.len();
        let mut wake = false;
        if let Some(last) = attempts.last() {
            let key = CellKey::of(last);
            let was_up = self.states.get(&key).map(|(s, _, _)| s.is_up());
            wake = was_up.is_none() || (last.outcome.status.is_up() && was_up == Some(false));
            self.states.set(
                key,
                last.outcome.status,
                last.outcome.summary.clone(),
                last.started_at_ms,
            );
        }
        for (i, result) in attempts.into_iter().enumerate() {
            let is_final = i + 1 == n;
            for o in &self.observers {
                o.observe(&result, is_final);
            }
            self.writer.send(NewResult { result, is_final });
        }
        wake
    }

    /// Installs the executor of agent-run sites (once; later calls change nothing).
    pub fn set_remote(&self, remote: Arc<dyn RemoteExecutor>) {
        let _ = self.remote.set(remote);
    }

    /// The executor of agent-run sites, when `serve` has one.
    pub fn remote(&self) -> Option<Arc<dyn RemoteExecutor>> {
        self.remote.get().cloned()
    }

    /// The writer (for its statistics).
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }
}

/// A configuration ready to schedule: validated, with its probes built.
#[derive(Clone)]
pub struct Plan {
    /// The configuration.
    pub config: Arc<Config>,
    /// Its probes.
    pub probes: Arc<BuiltProbes>,
}

/// Counters the scheduler keeps, for logs and metrics.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Runs started (first attempts).
    pub runs_started: AtomicU64,
    /// Runs finished.
    pub runs_finished: AtomicU64,
    /// Runs in flight (waiting for a slot or running).
    pub inflight: AtomicI64,
    /// Slots skipped because the previous run of the entry was still in flight.
    pub skipped_busy: AtomicU64,
    /// Slots skipped because they were missed (pause, clock change).
    pub skipped_late: AtomicU64,
    /// Total time runs waited for a concurrency slot, in milliseconds.
    pub queue_wait_ms_total: AtomicU64,
    /// Number of schedule entries.
    pub entries: AtomicU64,
    /// Configuration reloads applied.
    pub reloads: AtomicU64,
    /// ServeState schedule: slots another instance claimed first.
    pub skipped_claimed: AtomicU64,
    /// ServeState schedule: slots not run because the claim could not be made (database down).
    pub skipped_uncoordinated: AtomicU64,
    /// ServeState schedule: this instance's view of it, `None` when the schedule is not shared.
    pub shared_view: Mutex<Option<SharedView>>,
}

/// What one instance of a shared schedule knows of it (for `/healthz` and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedView {
    /// This instance's member name.
    pub member: String,
    /// Live members, this one included; empty while this instance's own lease is not
    /// confirmed (then it runs nothing).
    pub members: Vec<String>,
    /// Schedule entries this instance owns.
    pub owned: usize,
}

impl SchedulerStats {
    /// The shared-schedule view, if the schedule is shared.
    pub fn shared_view(&self) -> Option<SharedView> {
        self.shared_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_shared_view(&self, view: SharedView) {
        *self.shared_view.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }
}

/// The last hard result of each cell, as the scheduler knows it (for `depends_on`).
#[derive(Debug, Default)]
pub struct CellStates {
    inner: Mutex<HashMap<CellKey, (Status, String, i64)>>,
}

impl CellStates {
    /// Records a cell's latest hard status, summary and start time (ms), keeping the newest.
    pub fn set(&self, key: CellKey, status: Status, summary: String, started_ms: i64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let newer = map.get(&key).is_none_or(|(_, _, t)| *t <= started_ms);
        if newer {
            map.insert(key, (status, summary, started_ms));
        }
    }

    /// A cell's latest status and summary.
    pub fn get(&self, key: &CellKey) -> Option<(Status, String, i64)> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }
}

/// The cell of an instance.
pub fn cell_key(config: &Config, inst: &ProbeInstance) -> CellKey {
    let site = &config.sites[inst.site];
    let svc = &site.services[inst.service];
    CellKey {
        site: site.name.clone(),
        hostname: svc.hostname.clone(),
        flavour: svc.flavour.clone(),
        metric: config.probes[inst.probe].metric.clone(),
    }
}
