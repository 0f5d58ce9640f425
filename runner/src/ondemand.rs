//! On-demand runs started through the API: the same limits, recording path and store as
//! scheduled runs, marked on-demand; one run per cell at a time; a per-site hourly rate.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridprobe_probes::{ProbeResult, Trigger};
use gridprobe_results::CellKey;
use serde::Serialize;

use crate::batch::{run_batch_with, select, Event, SelectError, Selection};
use crate::state::cell_key;
use crate::state::ServeState;

/// How long finished runs stay visible at `GET /api/v1/runs/{id}`.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);

/// Progress of one on-demand run.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// Run id.
    pub id: u64,
    /// `running` or `finished`.
    pub state: &'static str,
    /// Who started it (token name).
    pub started_by: String,
    /// What was asked.
    pub site: String,
    /// Host, if one was asked.
    pub service: Option<String>,
    /// Probe, if one was asked.
    pub probe: Option<String>,
    /// Probe instances in the run (parents included).
    pub total: usize,
    /// Instances finished so far.
    pub done: usize,
    /// The hard result of each finished instance.
    pub results: Vec<ProbeResult>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The selection names nothing.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// A cell of the run is already running.
    #[error("a run is already in flight for {} on {} at {}", .0.metric, .0.hostname, .0.site)]
    Busy(CellKey),
    /// Too many runs for the site in the last hour.
    #[error("site {site} already had {limit} on-demand runs in the last hour")]
    RateLimited {
        /// Site.
        site: String,
        /// The configured limit.
        limit: u32,
        /// When the next run will be allowed.
        retry_after: Duration,
    },
}

struct Entry {
    view: RunView,
    finished_at: Option<Instant>,
}

/// The registry of on-demand runs.
#[derive(Default)]
pub struct RunManager {
    next_id: AtomicU64,
    runs: Mutex<HashMap<u64, Entry>>,
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl std::fmt::Debug for RunManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunManager").finish_non_exhaustive()
    }
}

impl RunManager {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(RunManager {
            next_id: AtomicU64::new(1),
            ..Default::default()
        })
    }

    /// A run's progress.
    pub fn get(&self, id: u64) -> Option<RunView> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(&id).map(|e| e.view.clone())
    }

    /// Starts a run; returns its id at once, the run goes on in the background.
    pub fn start(
        self: &Arc<Self>,
        shared: &Arc<ServeState>,
        selection: Selection,
        started_by: &str,
    ) -> Result<u64, StartError> {
        let plan = shared.plan();
        let instances = select(&plan.config, &selection)?;
        let site = selection.site.clone().unwrap_or_default();
        let limit = plan.config.access.runs_per_hour;
        self.check_rate(&site, limit)?;
        let cells: Vec<CellKey> = instances
            .iter()
            .map(|i| cell_key(&plan.config, i))
            .collect();
        shared.try_claim(&cells).map_err(StartError::Busy)?;
        self.note_run(&site);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.insert(RunView {
            id,
            state: "running",
            started_by: started_by.to_string(),
            site,
            service: selection.service.clone(),
            probe: selection.probe.clone(),
            total: instances.len(),
            done: 0,
            results: Vec::new(),
        });
        let manager = self.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let progress = manager.clone();
            let on_event: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(move |e| {
                if let Event::Finished(_, r) = e {
                    progress.update(id, |v| {
                        v.done += 1;
                        v.results.push(*r);
                    });
                }
            });
            let runs = run_batch_with(
                plan.config.clone(),
                plan.probes.clone(),
                instances,
                Trigger::OnDemand,
                shared.limits(),
                shared.interrupt.clone(),
                on_event,
                Some(shared.remote()),
            )
            .await;
            for run in runs {
                shared.record(run.attempts);
            }
            shared.release(&cells);
            manager.update(id, |v| v.state = "finished");
            manager.finish(id);
        });
        Ok(id)
    }

    fn check_rate(&self, site: &str, limit: u32) -> Result<(), StartError> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let q = recent.entry(site.to_string()).or_default();
        let hour = Duration::from_secs(3600);
        while q.front().is_some_and(|t| t.elapsed() > hour) {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            let retry_after = q
                .front()
                .map(|t| hour.saturating_sub(t.elapsed()))
                .unwrap_or(hour);
            return Err(StartError::RateLimited {
                site: site.to_string(),
                limit,
                retry_after,
            });
        }
        Ok(())
    }

    fn note_run(&self, site: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .entry(site.to_string())
            .or_default()
            .push_back(Instant::now());
    }

    fn insert(&self, view: RunView) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Forget runs finished long ago, so the registry stays small over months.
        runs.retain(|_, e| e.finished_at.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
        runs.insert(
            view.id,
            Entry {
                view,
                finished_at: None,
            },
        );
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut RunView)) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = runs.get_mut(&id) {
            f(&mut e.view);
        }
    }

    fn finish(&self, id: u64) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = runs.get_mut(&id) {
            e.finished_at = Some(Instant::now());
        }
    }
}
