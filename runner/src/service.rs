//! What the scheduler, on-demand runs and the HTTP server share inside `gridprobe serve`: the
//! current plan, the cells' latest states, the runs in flight, the concurrency limits, and the
//! one path by which every result is recorded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use gridprobe_probes::ProbeResult;
use gridprobe_results::{CellKey, NewResult, WriterHandle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::schedule::{CellStates, Plan, SchedulerStats};

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
pub struct Shared {
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
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// State for a plan, recording through `writer` and telling `observers`.
    pub fn new(
        plan: Plan,
        writer: WriterHandle,
        observers: Vec<Arc<dyn ResultObserver>>,
    ) -> Arc<Self> {
        let limits = Arc::new(Limits::from_defaults(&plan.config.defaults));
        let (tx, _) = watch::channel(plan);
        Arc::new(Shared {
            plan: tx,
            states: Arc::new(CellStates::default()),
            stats: Arc::new(SchedulerStats::default()),
            inflight: Mutex::new(HashSet::new()),
            limits: RwLock::new(limits),
            writer,
            observers,
            interrupt: CancellationToken::new(),
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

    /// Releases cells claimed with [`Shared::try_claim`].
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
    pub fn record(&self, attempts: Vec<ProbeResult>) -> bool {
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

    /// The writer (for its statistics).
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }
}
