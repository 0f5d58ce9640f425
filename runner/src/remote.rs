//! Running an instance somewhere else than in this process: the interface between the
//! runner (scheduler, on-demand batches) and the site agents' dispatcher (`agent/`), so that
//! neither imports the other's internals.

use gridprobe_config::{Config, ProbeInstance};
use gridprobe_probes::{ProbeResult, Trigger};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::execute::ResultLabels;

/// One run handed to a [`RemoteExecutor`].
pub struct RemoteRun<'a> {
    /// The configuration the instance belongs to.
    pub config: &'a Config,
    /// The instance.
    pub instance: &'a ProbeInstance,
    /// Its result labels (for results the executor makes up itself, e.g. UNKNOWN).
    pub labels: &'a ResultLabels,
    /// Scheduled or on demand.
    pub trigger: Trigger,
    /// The run's id: one result is kept per id.
    pub run_id: String,
    /// Fired after the shutdown grace.
    pub interrupt: &'a CancellationToken,
}

/// Runs the instances of agent-run sites (`[[site]] executor = "agent"`) somewhere else:
/// `serve` installs the site agents' dispatcher with `ServeState::set_remote`.
pub trait RemoteExecutor: Send + Sync {
    /// Runs one instance and returns its attempts (the last is the hard state), which the
    /// caller records like a local run's.
    fn run<'a>(&'a self, run: RemoteRun<'a>) -> futures::future::BoxFuture<'a, Vec<ProbeResult>>;

    /// The agents known, by site and name.
    fn agents(&self) -> Vec<AgentView>;

    /// The counters.
    fn counts(&self) -> AgentCounts;
}

/// One agent as the centre knows it (`/api/v1/agents`, the dashboard, `/metrics`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentView {
    /// Its site.
    pub site: String,
    /// Its name.
    pub name: String,
    /// Its gridprobe version.
    pub version: String,
    /// When it started (UTC).
    pub started: String,
    /// When its last heartbeat arrived (UTC, the centre's clock).
    pub last_seen: String,
    /// Seconds since then.
    pub last_seen_age_seconds: i64,
    /// Runs it was running at its last heartbeat.
    pub runs_in_flight: u32,
    /// Runs it finished since it started.
    pub runs_done: u64,
    /// Whether it was seen within `[agents] no_agent_after`.
    pub alive: bool,
}

/// The site agents' dispatcher's counters (`gridprobe_agent_*` in `/metrics`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AgentCounts {
    /// Runs handed to a work queue.
    pub dispatched: u64,
    /// Runs that came back with a result.
    pub completed: u64,
    /// Runs recorded UNKNOWN because no agent of the site was alive.
    pub no_agent: u64,
    /// Runs recorded UNKNOWN because no result came within the run's budget.
    pub timed_out: u64,
    /// Runs recorded UNKNOWN because the work could not be handed to the broker.
    pub dispatch_failed: u64,
    /// Results and heartbeats dropped: sent on another site's subject than the site they name.
    pub rejected_wrong_site: u64,
    /// Results dropped: not for an agent-run site, or not the cell of their run.
    pub rejected_unexpected: u64,
    /// Messages dropped: not a result or heartbeat at all.
    pub rejected_invalid: u64,
    /// Results dropped because their run already had one.
    pub duplicates: u64,
    /// Results of runs nobody waited for (the centre restarted), recorded on their own.
    pub late_recorded: u64,
    /// Runs handed out and waited for now.
    pub in_flight: u64,
}
