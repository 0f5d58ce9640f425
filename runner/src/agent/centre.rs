//! `serve`'s side of the site agents: the [`Dispatcher`].
//!
//! A run of an agent-run site is published to the site's work queue (a JetStream work-queue
//! stream, or a RabbitMQ queue; through the broker's [`CentreLink`]) and the calling task
//! waits for its result, exactly as it would wait for a local probe; the result is recorded by
//! the caller through `ServeState::record`, so dependencies, retries, the matrix, reports and
//! notifications see no difference. An agent holds a run at most the site's longest run budget
//! plus `grace` (JetStream AckWait; RabbitMQ requeues it when the agent's connection goes), so
//! a killed agent's run goes to another.
//!
//! Results arrive on one consumer of the results stream or queue. A result is dropped and
//! counted when its subject's (routing key's) site is not the site in the message (an agent publishing for another site:
//! broker permissions let an agent publish on its own site's subject only), when it is not for
//! an agent-run site or cell it claims, or when its run already has a result (duplicates).
//! Results of runs this centre is not waiting for (it restarted) wait a minute for the run to
//! be dispatched again (same slot, same id), and are then recorded on their own.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use gridprobe_config::agents::{AgentSettings, Executor};
use gridprobe_config::time::{format_duration, format_utc};
use gridprobe_config::Config;
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{Outcome, ProbeResult};
use gridprobe_results::{CellKey, ResultMessage};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::link::{self, CentreLink, LinkSpec};
use super::wire::{self, token, Heartbeat, Names, Work};
use crate::execute::CLEANUP_GRACE;
use crate::remote::{AgentCounts, AgentView, RemoteExecutor, RemoteRun};
use crate::state::ServeState;

/// How long results of a run nobody waits for are kept for its dispatch.
const ORPHAN_KEEP: Duration = Duration::from_secs(60);
/// Run ids remembered as done (to recognise duplicates).
const DONE_KEPT: usize = 100_000;
/// Agents remembered at most.
const MAX_AGENTS: usize = 10_000;

/// The dispatcher's counters (`gridprobe_agent_*` in `/metrics`).
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Runs handed to a work queue.
    pub dispatched: AtomicU64,
    /// Runs that came back with a result.
    pub completed: AtomicU64,
    /// Runs recorded UNKNOWN because no agent of the site was alive.
    pub no_agent: AtomicU64,
    /// Runs recorded UNKNOWN because no result came within the run's budget.
    pub timed_out: AtomicU64,
    /// Runs recorded UNKNOWN because the work could not be handed to the broker.
    pub dispatch_failed: AtomicU64,
    /// Results dropped: published on another site's subject than the site they name.
    pub rejected_wrong_site: AtomicU64,
    /// Results dropped: not for an agent-run site, or not the cell of their run.
    pub rejected_unexpected: AtomicU64,
    /// Messages dropped: not a result or heartbeat at all.
    pub rejected_invalid: AtomicU64,
    /// Results dropped because their run already had one.
    pub duplicates: AtomicU64,
    /// Results of runs nobody waited for, recorded on their own.
    pub late_recorded: AtomicU64,
}

struct Pending {
    cell: CellKey,
    attempts: BTreeMap<u32, ProbeResult>,
    tx: Option<oneshot::Sender<Vec<ProbeResult>>>,
}

struct Orphan {
    cell: CellKey,
    attempts: BTreeMap<u32, ProbeResult>,
    complete: bool,
    since: Instant,
}

struct Seen {
    hb: Heartbeat,
    at_ms: i64,
}

/// The centre's dispatcher of agent-run sites' work.
pub struct Dispatcher {
    settings: AgentSettings,
    names: Names,
    /// The broker (NATS JetStream or RabbitMQ).
    link: Arc<dyn CentreLink>,
    started_ms: i64,
    /// The last moment the centre was seen without its broker connection (ms): agents are
    /// judged absent only `no_agent_after` past it, since their heartbeats could not arrive.
    broker_away_ms: std::sync::atomic::AtomicI64,
    pending: Mutex<HashMap<String, Pending>>,
    done: Mutex<(HashSet<String>, VecDeque<String>)>,
    orphans: Mutex<HashMap<String, Orphan>>,
    agents: Mutex<BTreeMap<(String, String), Seen>>,
    /// Each site's AckWait for the configuration (by address) they were computed from.
    ack_waits: Mutex<(usize, HashMap<usize, Duration>)>,
    /// The service, for results recorded on their own.
    shared: Weak<ServeState>,
    /// Counters.
    pub stats: AgentStats,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// The time one run of an instance may take at most: every attempt to its timeout and the
/// runner's cleanup grace, and the retry intervals between them.
pub fn run_budget(inst: &gridprobe_config::ProbeInstance) -> Duration {
    let attempts = inst.retries.saturating_add(1);
    inst.timeout
        .saturating_add(CLEANUP_GRACE)
        .saturating_mul(attempts)
        .saturating_add(inst.retry_interval.saturating_mul(inst.retries))
}

impl Dispatcher {
    /// Connects to the broker of `[agents]` and starts following results and heartbeats; the
    /// dispatcher is installed in `shared` as its remote executor.
    pub async fn start(
        settings: AgentSettings,
        shared: &Arc<ServeState>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Dispatcher>, String> {
        let password = settings.password.read()?;
        let names = Names::new(&settings.prefix);
        let link = link::connect_centre(
            &LinkSpec {
                url: settings.url.clone(),
                password,
                ca_file: settings.ca_file.clone(),
                client_name: "gridprobe serve".into(),
                inbox_prefix: None,
            },
            &names,
        )
        .await?;
        let d = Arc::new(Dispatcher {
            names,
            settings,
            link,
            started_ms: unix_ms(SystemTime::now()),
            broker_away_ms: std::sync::atomic::AtomicI64::new(0),
            pending: Mutex::default(),
            done: Mutex::default(),
            orphans: Mutex::default(),
            agents: Mutex::default(),
            ack_waits: Mutex::default(),
            shared: Arc::downgrade(shared),
            stats: AgentStats::default(),
        });
        d.clone().follow(shutdown);
        shared.set_remote(d.clone());
        Ok(d)
    }

    /// The agents seen since start, by site and name.
    pub fn agents(&self) -> Vec<AgentView> {
        let now = unix_ms(SystemTime::now());
        let limit = self.no_agent_after_ms();
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents
            .values()
            .map(|s| AgentView {
                site: s.hb.site.clone(),
                name: s.hb.name.clone(),
                version: s.hb.version.clone(),
                started: format_utc(s.hb.started_ms),
                last_seen: format_utc(s.at_ms),
                last_seen_age_seconds: now.saturating_sub(s.at_ms) / 1000,
                runs_in_flight: s.hb.inflight,
                runs_done: s.hb.runs_done,
                alive: now.saturating_sub(s.at_ms) <= limit,
            })
            .collect()
    }

    fn no_agent_after_ms(&self) -> i64 {
        i64::try_from(self.settings.no_agent_after.as_millis()).unwrap_or(i64::MAX)
    }

    /// Why a site's runs cannot go to its agents now: none was seen for `no_agent_after`
    /// (after start, the agents get that long to be seen first).
    pub fn no_agent(&self, site: &str, now_ms: i64) -> Option<String> {
        let limit = self.no_agent_after_ms();
        // While the centre's own link to the broker is down no heartbeat can arrive: that is
        // not the agents' absence, and after it they get `no_agent_after` to be seen again.
        self.note_broker_state(now_ms);
        let away = self.broker_away_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(away) <= limit {
            return None;
        }
        let last = {
            let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            agents
                .values()
                .filter(|s| s.hb.site == site)
                .map(|s| s.at_ms)
                .max()
        };
        match last {
            Some(t) if now_ms.saturating_sub(t) <= limit => None,
            Some(t) => Some(format!("no agent of {site} since {}", format_utc(t))),
            None if now_ms.saturating_sub(self.started_ms) <= limit => None,
            None => Some(format!(
                "no agent of {site} since gridprobe started at {}",
                format_utc(self.started_ms)
            )),
        }
    }

    /// Remembers when the broker connection was last seen down.
    fn note_broker_state(&self, now_ms: i64) {
        if !self.link.connected() {
            self.broker_away_ms.fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    /// The AckWait of a site's work: its longest run budget plus `grace`. Computed once per
    /// configuration for every site (a batch of 10,000 runs must not list the instances
    /// 10,000 times).
    fn ack_wait(&self, config: &Config, site: usize) -> Duration {
        // The address tells plans apart; the sizes guard against a new plan at a freed one.
        let key = (std::ptr::from_ref(config) as usize)
            ^ config.sites.len().rotate_left(48)
            ^ config.probes.len().rotate_left(32)
            ^ config.service_count().rotate_left(16);
        let mut cache = self.ack_waits.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != key || cache.1.is_empty() {
            let mut budgets: HashMap<usize, Duration> = HashMap::new();
            for inst in config.instances() {
                let b = budgets.entry(inst.site).or_default();
                *b = (*b).max(run_budget(&inst));
            }
            *cache = (key, budgets);
        }
        cache
            .1
            .get(&site)
            .copied()
            .unwrap_or_default()
            .saturating_add(self.settings.grace)
    }

    /// Hands a run to the site's agents and waits for its result.
    async fn dispatch(&self, run: RemoteRun<'_>) -> Vec<ProbeResult> {
        let started = SystemTime::now();
        let clock = Instant::now();
        let config = run.config;
        let site_name = run.labels.site.clone();
        let unknown = |summary: String, details: String| {
            vec![run.labels.result(
                Outcome::unknown(summary).with_details(details),
                started,
                clock.elapsed(),
                1,
                run.trigger,
            )]
        };
        if let Some(e) = self.link.problem().await {
            self.stats.dispatch_failed.fetch_add(1, Ordering::Relaxed);
            return unknown(
                format!("cannot hand the run to the agents of {site_name}: {e}"),
                "the centre's connection to the agents' broker fails in a way retrying cannot \
                 fix; this is the monitoring's failure, not the site's"
                    .into(),
            );
        }
        let now = unix_ms(started);
        if let Some(reason) = self.no_agent(&site_name, now) {
            self.stats.no_agent.fetch_add(1, Ordering::Relaxed);
            return unknown(
                reason,
                "the run was not handed out: none of the site's agents has sent a heartbeat \
                 within [agents] no_agent_after; this is the monitoring's failure, not the site's"
                    .into(),
            );
        }
        let ack_wait = self.ack_wait(config, run.instance.site);
        let waits = ack_wait
            .saturating_mul(self.settings.max_deliver)
            .saturating_add(Duration::from_secs(10));
        let cell = CellKey {
            site: site_name.clone(),
            hostname: run.labels.hostname.clone(),
            flavour: run.labels.flavour.clone(),
            metric: run.labels.metric.clone(),
        };
        let text = match wire::instance_config(config, run.instance) {
            Ok(t) => t,
            Err(e) => return unknown(format!("cannot describe the run to the agents: {e}"), e),
        };
        let work = Work {
            schema: wire::WORK_SCHEMA.into(),
            run_id: run.run_id.clone(),
            site: site_name.clone(),
            hostname: cell.hostname.clone(),
            flavour: cell.flavour.clone(),
            metric: cell.metric.clone(),
            trigger: run.trigger,
            dispatched_ms: now,
            expires_ms: now.saturating_add(i64::try_from(waits.as_millis()).unwrap_or(i64::MAX)),
            credential: config
                .probes
                .get(run.instance.probe)
                .and_then(|p| p.credential.clone()),
            config: text,
        };
        let rx = match self.register(&run.run_id, cell) {
            Ok(rx) => rx,
            Err(attempts) => return attempts,
        };
        if let Err(e) = self
            .link
            .publish_work(&site_name, &work, ack_wait, self.settings.max_deliver)
            .await
        {
            self.forget(&run.run_id);
            self.stats.dispatch_failed.fetch_add(1, Ordering::Relaxed);
            return unknown(
                format!("cannot hand the run to the agents of {site_name}: {e}"),
                format!(
                    "broker {}: {e}",
                    gridprobe_config::model::redact_url(&self.settings.url)
                ),
            );
        }
        self.stats.dispatched.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + waits;
        let mut rx = rx;
        loop {
            tokio::select! {
                r = &mut rx => {
                    return match r {
                        Ok(attempts) => {
                            self.stats.completed.fetch_add(1, Ordering::Relaxed);
                            attempts
                        }
                        Err(_) => unknown("the run's result was lost in the centre".into(), String::new()),
                    };
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let now = unix_ms(SystemTime::now());
                    if let Some(reason) = self.no_agent(&site_name, now) {
                        self.forget(&run.run_id);
                        self.stats.no_agent.fetch_add(1, Ordering::Relaxed);
                        return unknown(reason, format!(
                            "the run {} was handed to the work queue at {}; no agent of the site has been seen since",
                            run.run_id, format_utc(work.dispatched_ms)
                        ));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        self.forget(&run.run_id);
                        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        return unknown(
                            format!("no result from the agents of {site_name} within {}", format_duration(waits)),
                            format!("the run {} was handed out {} time(s) at most, each for {}", run.run_id, self.settings.max_deliver, format_duration(ack_wait)),
                        );
                    }
                }
                _ = run.interrupt.cancelled() => {
                    self.forget(&run.run_id);
                    return unknown("interrupted by shutdown".into(), format!(
                        "gridprobe shut down while the run {} was with the agents of {site_name}; a result that comes later is recorded after the next start",
                        run.run_id
                    ));
                }
            }
        }
    }

    /// Waits for a run's result; `Err` holds the attempts already here (a result that came
    /// before the dispatch: this centre restarted and the run is a slot handed out before).
    fn register(
        &self,
        run_id: &str,
        cell: CellKey,
    ) -> Result<oneshot::Receiver<Vec<ProbeResult>>, Vec<ProbeResult>> {
        let orphan = self
            .orphans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        let mut attempts = BTreeMap::new();
        if let Some(o) = orphan.filter(|o| o.cell == cell) {
            if o.complete {
                self.mark_done(run_id);
                return Err(o.attempts.into_values().collect());
            }
            attempts = o.attempts;
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                run_id.to_string(),
                Pending {
                    cell,
                    attempts,
                    tx: Some(tx),
                },
            );
        Ok(rx)
    }

    fn forget(&self, run_id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        self.mark_done(run_id);
    }

    fn mark_done(&self, run_id: &str) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.0.insert(run_id.to_string()) {
            done.1.push_back(run_id.to_string());
            while done.1.len() > DONE_KEPT {
                if let Some(old) = done.1.pop_front() {
                    done.0.remove(&old);
                }
            }
        }
    }

    fn is_done(&self, run_id: &str) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(run_id)
    }

    /// Takes one message from the results stream.
    pub fn handle_result(&self, config: &Config, subject: &str, payload: &[u8]) {
        let Ok(m) = ResultMessage::from_json(payload) else {
            self.stats.rejected_invalid.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject, "agent result dropped: not a result message");
            return;
        };
        let subject_site = self.names.site_token_of("results", subject);
        if subject_site != Some(token(&m.site).as_str()) {
            self.stats
                .rejected_wrong_site
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject, site = %m.site, agent = %m.gridprobe_instance, "agent result dropped: published for another site than its own");
            return;
        }
        let agent_site = config
            .sites
            .iter()
            .any(|s| s.name == m.site && s.executor == Executor::Agent);
        let (Some(run_id), true) = (m.agent_run.clone(), agent_site) else {
            self.stats
                .rejected_unexpected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(site = %m.site, agent = %m.gridprobe_instance, "agent result dropped: not a run of an agent-run site");
            return;
        };
        let new = match m.to_new_result() {
            Ok(n) => n,
            Err(e) => {
                self.stats.rejected_invalid.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(site = %m.site, agent = %m.gridprobe_instance, error = %e, "agent result dropped: invalid");
                return;
            }
        };
        let is_final = new.is_final;
        let mut result = new.result;
        result.outcome.agent_run = None;
        let cell = CellKey::of(&result);
        if self.is_done(&run_id) {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::info!(run = %run_id, agent = %m.gridprobe_instance, "agent result dropped: its run has a result already");
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pending.get_mut(&run_id) {
            if p.cell != cell {
                self.stats
                    .rejected_unexpected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(run = %run_id, "agent result dropped: not the cell of its run");
                return;
            }
            p.attempts.insert(result.attempt, result);
            if is_final {
                if let Some(mut p) = pending.remove(&run_id) {
                    drop(pending);
                    self.mark_done(&run_id);
                    let attempts: Vec<ProbeResult> =
                        std::mem::take(&mut p.attempts).into_values().collect();
                    if let Some(tx) = p.tx.take() {
                        let _ = tx.send(attempts);
                    }
                }
            }
            return;
        }
        drop(pending);
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        let o = orphans.entry(run_id).or_insert_with(|| Orphan {
            cell: cell.clone(),
            attempts: BTreeMap::new(),
            complete: false,
            since: Instant::now(),
        });
        if o.cell == cell {
            o.attempts.insert(result.attempt, result);
            o.complete |= is_final;
        }
    }

    /// Records the complete results of runs nobody claimed within [`ORPHAN_KEEP`] (measured
    /// by an agent while this centre was away); forgets incomplete ones.
    fn sweep_orphans(&self) {
        let expired: Vec<(String, Orphan)> = {
            let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<String> = orphans
                .iter()
                .filter(|(_, o)| o.since.elapsed() > ORPHAN_KEEP)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| orphans.remove(&k).map(|o| (k, o)))
                .collect()
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        for (run_id, o) in expired {
            if !o.complete || self.is_done(&run_id) {
                continue;
            }
            self.mark_done(&run_id);
            self.stats.late_recorded.fetch_add(1, Ordering::Relaxed);
            shared.record(o.attempts.into_values().collect());
        }
    }

    /// Follows results and heartbeats through the broker, and sweeps orphans and notes the
    /// broker's state on a clock of their own.
    fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let weak = Arc::downgrade(&self);
        let results: link::Sink = Arc::new(move |subject: &str, payload: &[u8]| {
            let Some(d) = weak.upgrade() else {
                return;
            };
            if let Some(shared) = d.shared.upgrade() {
                let plan = shared.plan();
                d.handle_result(&plan.config, subject, payload);
            }
        });
        let weak = Arc::downgrade(&self);
        let heartbeats: link::Sink = Arc::new(move |subject: &str, payload: &[u8]| {
            if let Some(d) = weak.upgrade() {
                d.handle_heartbeat(subject, payload);
            }
        });
        let link = self.link.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { link.follow_results(results, stop).await });
        let link = self.link.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { link.follow_heartbeats(heartbeats, stop).await });
        let weak = Arc::downgrade(&self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u32;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let Some(d) = weak.upgrade() else {
                    return;
                };
                d.note_broker_state(unix_ms(SystemTime::now()));
                n = n.wrapping_add(1);
                if n.is_multiple_of(5) {
                    d.sweep_orphans();
                }
            }
        });
    }

    /// Takes one heartbeat.
    pub fn handle_heartbeat(&self, subject: &str, payload: &[u8]) {
        let Ok(hb) = Heartbeat::from_json(payload) else {
            self.stats.rejected_invalid.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.names.site_token_of("heartbeat", subject) != Some(token(&hb.site).as_str()) {
            self.stats
                .rejected_wrong_site
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject, site = %hb.site, agent = %hb.name, "heartbeat dropped: sent for another site than its own");
            return;
        }
        let at_ms = unix_ms(SystemTime::now());
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let key = (hb.site.clone(), hb.name.clone());
        if !agents.contains_key(&key) {
            tracing::info!(site = %hb.site, agent = %hb.name, version = %hb.version, "agent seen");
            if agents.len() >= MAX_AGENTS {
                // Names are the agents' to choose: agents gone for a day are forgotten, and
                // past the bound the longest unseen one makes room.
                agents.retain(|_, s| at_ms.saturating_sub(s.at_ms) < 86_400_000);
                if agents.len() >= MAX_AGENTS {
                    if let Some(oldest) = agents
                        .iter()
                        .min_by_key(|(_, s)| s.at_ms)
                        .map(|(k, _)| k.clone())
                    {
                        agents.remove(&oldest);
                    }
                }
            }
        }
        agents.insert(key, Seen { hb, at_ms });
    }
}

impl RemoteExecutor for Dispatcher {
    fn run<'a>(&'a self, run: RemoteRun<'a>) -> futures::future::BoxFuture<'a, Vec<ProbeResult>> {
        Box::pin(self.dispatch(run))
    }

    fn agents(&self) -> Vec<AgentView> {
        Dispatcher::agents(self)
    }

    fn counts(&self) -> AgentCounts {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AgentCounts {
            dispatched: l(&s.dispatched),
            completed: l(&s.completed),
            no_agent: l(&s.no_agent),
            timed_out: l(&s.timed_out),
            dispatch_failed: l(&s.dispatch_failed),
            rejected_wrong_site: l(&s.rejected_wrong_site),
            rejected_unexpected: l(&s.rejected_unexpected),
            rejected_invalid: l(&s.rejected_invalid),
            duplicates: l(&s.duplicates),
            late_recorded: l(&s.late_recorded),
            in_flight: self.pending.lock().unwrap_or_else(|p| p.into_inner()).len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridprobe_probes::Trigger;
    use gridprobe_results::NewResult;

    const CONFIG: &str = r#"
vo = "t"
[agents]
url = "nats://127.0.0.1:1"
[[site]]
name = "S"
tier = 2
executor = "agent"
  [[site.service]]
  flavour = "SRV"
  hostname = "h"
[[site]]
name = "L"
tier = 2
  [[site.service]]
  flavour = "SRV"
  hostname = "l"
[[probe]]
metric = "org.t.tcp"
kind = "tcp"
flavours = ["SRV"]
"#;

    async fn dispatcher() -> (Dispatcher, Config) {
        let loaded = gridprobe_config::load_str(std::path::Path::new("/t.toml"), CONFIG);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let config = loaded.config;
        let settings = config.agents.clone().expect("agents");
        // Never connected (nothing listens there): only the message handling is exercised.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("lazy client");
        let names = Names::new(&settings.prefix);
        let d = Dispatcher {
            link: Arc::new(super::super::nats::NatsCentre::with_client(
                client,
                names.clone(),
                LinkSpec {
                    url: "nats://127.0.0.1:1".into(),
                    password: None,
                    ca_file: None,
                    client_name: "test".into(),
                    inbox_prefix: None,
                },
            )),
            names,
            settings,
            started_ms: 0,
            broker_away_ms: std::sync::atomic::AtomicI64::new(0),
            pending: Mutex::default(),
            done: Mutex::default(),
            orphans: Mutex::default(),
            agents: Mutex::default(),
            ack_waits: Mutex::default(),
            shared: Weak::new(),
            stats: AgentStats::default(),
        };
        (d, config)
    }

    fn message(site: &str, host: &str, attempt: u32, is_final: bool, run: &str) -> Vec<u8> {
        let r = NewResult {
            result: ProbeResult {
                metric: "org.t.tcp".into(),
                kind: "tcp".into(),
                vo: "t".into(),
                site: site.into(),
                hostname: host.into(),
                flavour: "SRV".into(),
                started_at_ms: 1_000 + i64::from(attempt),
                duration_ms: 1,
                outcome: Outcome {
                    agent_run: Some(run.into()),
                    ..Outcome::ok("fine")
                },
                attempt,
                trigger: Trigger::Scheduled,
            },
            is_final,
        };
        ResultMessage::new("agent-1", &r).to_json()
    }

    fn cell(site: &str, host: &str) -> CellKey {
        CellKey {
            site: site.into(),
            hostname: host.into(),
            flavour: "SRV".into(),
            metric: "org.t.tcp".into(),
        }
    }

    #[tokio::test]
    async fn the_final_attempt_completes_a_run_and_later_ones_are_duplicates() {
        let (d, config) = dispatcher().await;
        let mut rx = d.register("s-1", cell("S", "h")).expect("waiting");
        let subject = "gridprobe.results.S";
        d.handle_result(&config, subject, &message("S", "h", 2, true, "s-1"));
        assert_eq!(rx.try_recv().expect("complete").len(), 1);
        // An attempt of the same run arriving after it completed (another delivery) is dropped.
        d.handle_result(&config, subject, &message("S", "h", 1, false, "s-1"));
        assert_eq!(d.stats.duplicates.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn wrong_site_unexpected_and_duplicates_are_dropped_and_counted() {
        let (d, config) = dispatcher().await;
        let mut rx = d.register("s-2", cell("S", "h")).expect("waiting");
        // Published on S's subject, naming L: wrong site.
        d.handle_result(
            &config,
            "gridprobe.results.S",
            &message("L", "l", 1, true, "s-2"),
        );
        assert_eq!(d.stats.rejected_wrong_site.load(Ordering::Relaxed), 1);
        // L does not run on agents.
        d.handle_result(
            &config,
            "gridprobe.results.L",
            &message("L", "l", 1, true, "s-2"),
        );
        assert_eq!(d.stats.rejected_unexpected.load(Ordering::Relaxed), 1);
        // Not JSON.
        d.handle_result(&config, "gridprobe.results.S", b"{");
        assert_eq!(d.stats.rejected_invalid.load(Ordering::Relaxed), 1);
        assert!(rx.try_recv().is_err());
        d.handle_result(
            &config,
            "gridprobe.results.S",
            &message("S", "h", 1, false, "s-2"),
        );
        d.handle_result(
            &config,
            "gridprobe.results.S",
            &message("S", "h", 2, true, "s-2"),
        );
        let attempts = rx.try_recv().expect("complete");
        assert_eq!(
            attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(attempts.iter().all(|a| a.outcome.agent_run.is_none()));
        d.handle_result(
            &config,
            "gridprobe.results.S",
            &message("S", "h", 2, true, "s-2"),
        );
        assert_eq!(d.stats.duplicates.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_result_before_its_dispatch_is_kept_for_it() {
        let (d, config) = dispatcher().await;
        d.handle_result(
            &config,
            "gridprobe.results.S",
            &message("S", "h", 1, true, "s-3"),
        );
        let early = d.register("s-3", cell("S", "h")).expect_err("already here");
        assert_eq!(early.len(), 1);
        d.handle_result(
            &config,
            "gridprobe.results.S",
            &message("S", "h", 1, true, "s-3"),
        );
        assert_eq!(d.stats.duplicates.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn agents_are_not_judged_absent_while_the_broker_link_is_down() {
        let (d, _) = dispatcher().await;
        // Never connected: the broker is away, so no site is "without agents".
        assert_eq!(d.no_agent("S", 10_000_000), None);
        let hb = Heartbeat {
            schema: wire::HEARTBEAT_SCHEMA.into(),
            site: "S".into(),
            name: "a".into(),
            version: "1".into(),
            started_ms: 0,
            sent_ms: 0,
            inflight: 0,
            runs_done: 0,
        };
        d.handle_heartbeat("gridprobe.heartbeat.L", &hb.to_json());
        assert_eq!(d.stats.rejected_wrong_site.load(Ordering::Relaxed), 1);
        assert!(d.agents().is_empty());
        d.handle_heartbeat("gridprobe.heartbeat.S", &hb.to_json());
        assert_eq!(d.agents().len(), 1);
        assert!(d.agents()[0].alive);
    }

    #[test]
    fn run_budgets_cover_every_attempt() {
        let inst = gridprobe_config::ProbeInstance {
            probe: 0,
            site: 0,
            service: 0,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            retries: 2,
            retry_interval: Duration::from_secs(3),
            freshness: Duration::from_secs(60),
        };
        assert_eq!(run_budget(&inst), Duration::from_secs(3 * 15 + 2 * 3));
        let huge = gridprobe_config::ProbeInstance {
            timeout: Duration::MAX,
            retries: u32::MAX,
            ..inst
        };
        assert_eq!(run_budget(&huge), Duration::MAX);
    }
}
