//! The scheduler: every probe instance runs on its interval, forever.
//!
//! - Start times are spread over the interval by a stable hash of the entry's identity, aligned
//!   to the Unix epoch, so 10,000 entries do not fire together and a restart keeps the spread.
//! - One run per slot: after a restart an entry whose current slot has run waits for its next
//!   slot; one whose current slot has not run catches up within `startup_spread` (that run is the
//!   slot's run), unless the next slot comes first or close behind.
//! - Missed slots (laptop sleep, VM freeze, clock jump) are skipped, never replayed.
//! - A due entry is handed to its own task, which waits for concurrency slots; the scheduler
//!   loop itself never waits on a probe. An entry still running at its next slot skips it.
//! - On shutdown, probes in flight get a grace period, then are cancelled and recorded UNKNOWN
//!   "interrupted by shutdown"; every result goes to the writer before the scheduler returns.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gridprobe_config::{Config, ProbeInstance};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{Outcome, Status, Trigger};
use gridprobe_results::coordination::stable_hash;
use gridprobe_results::{owner_of, CellKey, ResultStore, ScheduleCoordinator, SlotClaim};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::parent_map;
use crate::execute::{run_with_retries, split_reported, ResultLabels};
use crate::state::{cell_key, CellStates, Plan, ServeState, SharedView};

/// Tunables of the scheduler (from `[server]`).
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Window over which entries without a recent run start.
    pub startup_spread: Duration,
    /// Time probes in flight get to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl SchedulerOptions {
    /// Options from a configuration's `[server]` table.
    pub fn from_config(c: &Config) -> Self {
        SchedulerOptions {
            startup_spread: c.server.startup_spread,
            shutdown_grace: c.server.shutdown_grace,
        }
    }
}

/// One schedule entry.
#[derive(Debug, Clone)]
struct Entry {
    key: CellKey,
    instance: ProbeInstance,
    interval_ms: i64,
    offset_ms: i64,
    parents: Vec<CellKey>,
}

fn entries_of(config: &Config) -> Vec<Entry> {
    let instances = config.instances();
    let parents = parent_map(config, &instances);
    instances
        .iter()
        .enumerate()
        // A bundle's metrics are measured by their job's runs, never scheduled themselves.
        .filter(|(_, inst)| config.probes[inst.probe].reported_by.is_none())
        .map(|(i, inst)| {
            let key = cell_key(config, inst);
            let interval_ms = i64::try_from(inst.interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(1);
            let hash = stable_hash(&[&key.site, &key.hostname, &key.flavour, &key.metric]);
            Entry {
                offset_ms: (hash % interval_ms as u64) as i64,
                interval_ms,
                parents: parents[i]
                    .iter()
                    .map(|p| cell_key(config, &instances[*p]))
                    .collect(),
                key,
                instance: inst.clone(),
            }
        })
        .collect()
}

/// The first slot of an entry at or after `t`: slots are `k × interval + offset` since the epoch.
/// Saturates at the ends of the time line instead of overflowing (`interval` ≥ 1).
fn slot_at_or_after(t: i64, interval: i64, offset: i64) -> i64 {
    let interval = interval.max(1);
    let k = t.saturating_sub(offset).div_euclid(interval);
    let slot = k.saturating_mul(interval).saturating_add(offset);
    if slot >= t {
        slot
    } else {
        slot.saturating_add(interval)
    }
}

/// When an entry first runs (at start-up, or when a reload places it afresh), given its last
/// run (if any). The decision is per slot: the slot `now` falls in is run at most once. If the
/// last run belongs to it (or to a later one), the entry waits for its next slot. Otherwise a
/// catch-up run comes within `startup_spread`, and it is that slot's run (`slot_of` its due
/// time is the current slot, which is what a shared schedule claims); when the next slot comes
/// before the catch-up, or close behind it, the entry just waits for the next slot, so two
/// runs never come a moment apart (also not from two instances starting on either side of a
/// slot boundary).
fn first_due(e: &Entry, now: i64, last_run: Option<i64>, spread_ms: i64) -> i64 {
    let interval = e.interval_ms.max(1);
    let next = slot_at_or_after(now.saturating_add(1), interval, e.offset_ms);
    let current = next.saturating_sub(interval);
    if let Some(last) = last_run {
        if slot_at_or_after(last.saturating_add(1), interval, e.offset_ms) > current {
            // This slot (or a later one, under a clock step back) has run already.
            return slot_at_or_after(last.max(now).saturating_add(1), interval, e.offset_ms);
        }
    }
    let soon = now.saturating_add(e.offset_ms.rem_euclid(spread_ms.max(1)));
    let margin = (interval / 2).min(30_000);
    if soon < next.saturating_sub(margin) {
        soon
    } else {
        next
    }
}

/// How late a slot may fire before it counts as missed.
fn late_tolerance(interval_ms: i64) -> i64 {
    (interval_ms / 2).clamp(1_000, 30_000)
}

/// A finished run, reported back to the scheduler loop.
#[derive(Debug)]
struct Finished {
    key: CellKey,
    started_ms: i64,
    /// The cell reported for the first time, or went from down to up: its dependants that are
    /// waiting or on standby may run now.
    wake_children: bool,
}

/// For each cell, the entries that depend on it.
fn children_of(entries: &[Entry]) -> HashMap<CellKey, Vec<usize>> {
    let mut map: HashMap<CellKey, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        for p in &e.parents {
            map.entry(p.clone()).or_default().push(i);
        }
    }
    map
}

/// A request to replace the schedule; the reply says whether it was applied.
pub type ReloadRequest = (Plan, tokio::sync::oneshot::Sender<usize>);

/// Several `serve` instances on one schedule (`[server] schedule = "shared"`); see
/// [`gridprobe_results::coordination`] for the protocol and ARCHITECTURE.md for the failure
/// semantics.
#[derive(Clone)]
pub struct Coordination {
    /// The shared database.
    pub coordinator: Arc<dyn ScheduleCoordinator>,
    /// This instance's member name, unique among live instances (e.g. `host:pid`).
    pub member: String,
    /// How long a membership lasts without renewal: a crashed instance's entries move to the
    /// others within about this long.
    pub lease: Duration,
    /// The shared store, read for the states of cells other instances run (`depends_on`).
    pub store: Arc<dyn ResultStore>,
}

/// How long claims are kept: they guard slots of the last interval only, and are worth a day
/// to an operator asking which instance ran what.
const CLAIMS_KEPT_MS: i64 = 86_400_000;

/// Runs the schedule until `shutdown` fires, then drains as described in the module docs.
pub async fn run_scheduler(
    shared: Arc<ServeState>,
    last_runs: HashMap<CellKey, i64>,
    reloads: mpsc::Receiver<ReloadRequest>,
    shutdown: CancellationToken,
) {
    run_scheduler_with(shared, last_runs, reloads, None, shutdown).await
}

/// As [`run_scheduler`]; with `coordination`, the schedule is shared with the other live
/// instances: this one runs only the entries it owns, each slot after claiming it.
pub async fn run_scheduler_with(
    shared: Arc<ServeState>,
    last_runs: HashMap<CellKey, i64>,
    mut reloads: mpsc::Receiver<ReloadRequest>,
    coordination: Option<Coordination>,
    shutdown: CancellationToken,
) {
    let stats = shared.stats.clone();
    let states = shared.states.clone();
    let mut plan = shared.plan();
    let mut opts = SchedulerOptions::from_config(&plan.config);
    let mut entries = entries_of(&plan.config);
    let mut last_runs = last_runs;
    let mut queue: BTreeSet<(i64, usize)> = BTreeSet::new();

    // ServeState schedule: the membership task keeps `view` current. The first view is awaited,
    // so that start-up runs go to their owners rather than being skipped by everyone.
    let (view_tx, mut view_rx) = watch::channel::<Arc<Vec<String>>>(Arc::new(Vec::new()));
    let membership = match &coordination {
        Some(c) => {
            let Some(first) = first_view(c, &shutdown).await else {
                return;
            };
            view_tx.send_replace(Arc::new(first));
            Some(tokio::spawn(membership_loop(
                c.clone(),
                shared.clone(),
                view_tx,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let mut view = view_rx.borrow_and_update().clone();
    let member = coordination.as_ref().map(|c| c.member.clone());
    let owns = |view: &[String], key: &CellKey| match &member {
        None => true,
        Some(me) => owner_of(view, key) == Some(me.as_str()),
    };

    let now = unix_ms(SystemTime::now());
    let spread = i64::try_from(opts.startup_spread.as_millis()).unwrap_or(30_000);
    for (i, e) in entries.iter().enumerate() {
        queue.insert((first_due(e, now, last_runs.get(&e.key).copied(), spread), i));
    }
    stats.entries.store(entries.len() as u64, Ordering::Relaxed);
    publish_view(&shared, &member, &view, &entries);
    tracing::info!(
        entries = entries.len(),
        shared = member.is_some(),
        "scheduler started"
    );

    let tracker = TaskTracker::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
    let mut children = children_of(&entries);

    loop {
        let now = unix_ms(SystemTime::now());
        let mut claims: Vec<(Entry, i64)> = Vec::new();
        while let Some(&(due, idx)) = queue.first() {
            if due > now {
                break;
            }
            queue.pop_first();
            let Some(entry) = entries.get(idx) else {
                continue;
            };
            let next = if now.saturating_sub(due) > late_tolerance(entry.interval_ms) {
                // Missed (pause or clock jump): skip to the next slot, do not replay.
                stats.skipped_late.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(cell = ?entry.key, late_ms = now.saturating_sub(due), "missed slot skipped");
                slot_at_or_after(now, entry.interval_ms, entry.offset_ms)
            } else {
                // Another member's entry: its owner runs it (the queue keeps it, so that it
                // runs here from the next slot on if ownership moves).
                if owns(&view, &entry.key) && ready_to_run(entry, &shared) {
                    if coordination.is_some() {
                        claims.push((entry.clone(), slot_of(entry, due)));
                    } else {
                        tracker.spawn(run_entry(
                            entry.clone(),
                            plan.clone(),
                            shared.clone(),
                            done_tx.clone(),
                        ));
                    }
                }
                slot_at_or_after(due.saturating_add(1), entry.interval_ms, entry.offset_ms)
            };
            queue.insert((next, idx));
        }
        if let (Some(c), false) = (&coordination, claims.is_empty()) {
            // Claimed off the loop: the database's latency never delays other entries.
            tracker.spawn(claim_and_run(
                c.clone(),
                claims,
                plan.clone(),
                shared.clone(),
                tracker.clone(),
                done_tx.clone(),
            ));
        }
        // Wake at the next due time, but at least every second so that a wall-clock change is
        // noticed promptly.
        let wait = queue
            .first()
            .map(|(due, _)| due.saturating_sub(now).clamp(0, 1000))
            .unwrap_or(1000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            Some(done) = done_rx.recv() => {
                if done.wake_children {
                    // A parent reported for the first time or is up again: its waiting and
                    // standby dependants run now, not an interval later.
                    let now = unix_ms(SystemTime::now());
                    for &child in children.get(&done.key).map(Vec::as_slice).unwrap_or(&[]) {
                        let waiting = entries
                            .get(child)
                            .map(|e| states.get(&e.key))
                            .is_some_and(|st| st.is_none_or(|(s, _, _)| s == Status::Standby));
                        if waiting {
                            queue.retain(|(_, i)| *i != child);
                            queue.insert((now, child));
                        }
                    }
                }
                last_runs.insert(done.key, done.started_ms);
            }
            Ok(()) = view_rx.changed() => {
                let new_view = view_rx.borrow_and_update().clone();
                // Entries whose owner left (lease expired or shut down) and which are now
                // this instance's: their current slot runs now if nobody claimed it, rather
                // than being lost to the dead owner.
                let now = unix_ms(SystemTime::now());
                let mut takeover = Vec::new();
                for e in &entries {
                    let previous = owner_of(&view, &e.key);
                    let gone = previous.is_some_and(|p| !new_view.iter().any(|m| m == p));
                    if gone && owns(&new_view, &e.key) && ready_to_run(e, &shared) {
                        takeover.push((e.clone(), slot_of(e, now)));
                    }
                }
                view = new_view;
                publish_view(&shared, &member, &view, &entries);
                if let (Some(c), false) = (&coordination, takeover.is_empty()) {
                    tracing::info!(entries = takeover.len(), "taking over the current slots of a departed instance");
                    tracker.spawn(claim_and_run(
                        c.clone(),
                        takeover,
                        plan.clone(),
                        shared.clone(),
                        tracker.clone(),
                        done_tx.clone(),
                    ));
                }
            }
            Some((new_plan, reply)) = reloads.recv() => {
                let now = unix_ms(SystemTime::now());
                let new_entries = entries_of(&new_plan.config);
                let old_due: HashMap<&CellKey, (i64, i64)> = queue
                    .iter()
                    .filter_map(|(due, i)| entries.get(*i).map(|e| (&e.key, (*due, e.interval_ms))))
                    .collect();
                let spread = i64::try_from(new_plan.config.server.startup_spread.as_millis()).unwrap_or(30_000);
                let mut new_queue = BTreeSet::new();
                for (i, e) in new_entries.iter().enumerate() {
                    // An unchanged entry keeps its slot; a new or changed one is placed afresh.
                    let due = match old_due.get(&e.key) {
                        Some((due, interval)) if *interval == e.interval_ms => *due,
                        _ => first_due(e, now, last_runs.get(&e.key).copied(), spread),
                    };
                    new_queue.insert((due, i));
                }
                queue = new_queue;
                entries = new_entries;
                children = children_of(&entries);
                shared.set_plan(new_plan.clone());
                opts = SchedulerOptions::from_config(&new_plan.config);
                plan = new_plan;
                stats.entries.store(entries.len() as u64, Ordering::Relaxed);
                stats.reloads.fetch_add(1, Ordering::Relaxed);
                publish_view(&shared, &member, &view, &entries);
                tracing::info!(entries = entries.len(), "configuration reloaded; schedule replaced");
                let _ = reply.send(entries.len());
            }
            _ = shutdown.cancelled() => break,
        }
    }

    tracker.close();
    let running = stats.inflight.load(Ordering::Relaxed);
    if running > 0 {
        tracing::info!(running, grace = ?opts.shutdown_grace, "shutting down: waiting for probes in flight");
    }
    if tokio::time::timeout(opts.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace over: interrupting probes still running");
        shared.interrupt.cancel();
        tracker.wait().await;
    }
    if let (Some(c), Some(task)) = (&coordination, membership) {
        let _ = task.await;
        // The others take this instance's entries at once instead of after the lease.
        if let Err(e) = c.coordinator.leave(&c.member).await {
            tracing::warn!(error = %e, "could not give up the schedule lease; it expires by itself");
        }
    }
    tracing::info!("scheduler stopped");
}

/// Whether an entry may start a run now; if so its cell is claimed locally (released by
/// [`run_entry`], or by [`claim_and_run`] when another instance wins the slot).
fn ready_to_run(entry: &Entry, shared: &ServeState) -> bool {
    // A child whose parent has not reported yet waits for it: the parent's first result wakes
    // it, so it is judged with the parent's state.
    if entry.parents.iter().any(|p| shared.states.get(p).is_none()) {
        tracing::debug!(cell = ?entry.key, "waiting for a parent's first result");
        return false;
    }
    if shared.try_claim(std::slice::from_ref(&entry.key)).is_err() {
        shared.stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(cell = ?entry.key, "previous run still in flight; slot skipped");
        return false;
    }
    true
}

/// The slot a run at `t` belongs to: the latest slot of the entry at or before `t`. Runs
/// between slots (start-up, wake-ups, take-overs) count for the slot they fall in.
fn slot_of(entry: &Entry, t: i64) -> i64 {
    slot_at_or_after(t.saturating_add(1), entry.interval_ms, entry.offset_ms)
        .saturating_sub(entry.interval_ms)
}

/// Claims the slots and runs the entries whose slot this instance won.
async fn claim_and_run(
    c: Coordination,
    claims: Vec<(Entry, i64)>,
    plan: Plan,
    shared: Arc<ServeState>,
    tracker: TaskTracker,
    done: mpsc::UnboundedSender<Finished>,
) {
    let request: Vec<SlotClaim> = claims
        .iter()
        .map(|(e, slot_ms)| SlotClaim {
            cell: e.key.clone(),
            slot_ms: *slot_ms,
        })
        .collect();
    let won = match c.coordinator.claim(&c.member, &request).await {
        Ok(won) => won,
        Err(e) => {
            // Exactly once is kept over availability: without a claim nobody can tell whether
            // another instance runs the slot, so it is skipped (and counted).
            tracing::error!(error = %e, slots = claims.len(), "cannot claim schedule slots; they are skipped");
            shared
                .stats
                .skipped_uncoordinated
                .fetch_add(claims.len() as u64, Ordering::Relaxed);
            vec![false; 0]
        }
    };
    for (i, (entry, _)) in claims.into_iter().enumerate() {
        if won.get(i).copied().unwrap_or(false) {
            tracker.spawn(run_entry(entry, plan.clone(), shared.clone(), done.clone()));
        } else {
            if !won.is_empty() {
                shared.stats.skipped_claimed.fetch_add(1, Ordering::Relaxed);
            }
            shared.release(std::slice::from_ref(&entry.key));
        }
    }
}

/// The first membership view, retried until it comes or the service stops.
async fn first_view(c: &Coordination, shutdown: &CancellationToken) -> Option<Vec<String>> {
    let lease_ms = i64::try_from(c.lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        match c.coordinator.heartbeat(&c.member, lease_ms).await {
            Ok(view) => {
                tracing::info!(member = %c.member, members = ?view.members, "joined the shared schedule");
                return Some(view.members);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot join the shared schedule; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Renews this instance's lease every third of the lease period and publishes the live
/// members. When renewals fail for longer than the lease, the view empties: the others have
/// taken over, and this instance runs nothing until it is a member again. With dependencies in
/// the plan, it also reads the states of cells other instances run.
async fn membership_loop(
    c: Coordination,
    shared: Arc<ServeState>,
    view: watch::Sender<Arc<Vec<String>>>,
    shutdown: CancellationToken,
) {
    let lease_ms = i64::try_from(c.lease.as_millis()).unwrap_or(i64::MAX);
    let period = (c.lease / 3).max(Duration::from_millis(100));
    let mut last_ok = std::time::Instant::now();
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.cancelled() => return,
        }
        match c.coordinator.heartbeat(&c.member, lease_ms).await {
            Ok(v) => {
                last_ok = std::time::Instant::now();
                if **view.borrow() != v.members {
                    tracing::info!(members = ?v.members, "shared schedule membership changed");
                    view.send_replace(Arc::new(v.members));
                }
                if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                    last_prune = Some(std::time::Instant::now());
                    if let Err(e) = c
                        .coordinator
                        .prune_claims(v.now_ms.saturating_sub(CLAIMS_KEPT_MS))
                        .await
                    {
                        tracing::warn!(error = %e, "cannot prune old schedule claims");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot renew the shared-schedule lease");
                if last_ok.elapsed() > c.lease && !view.borrow().is_empty() {
                    tracing::error!("lease lost: running nothing until the database answers");
                    view.send_replace(Arc::new(Vec::new()));
                }
            }
        }
        let plan = shared.plan();
        if plan.config.probes.iter().any(|p| !p.depends_on.is_empty()) {
            match c
                .store
                .latest(&gridprobe_results::CellFilter::default())
                .await
            {
                Ok(latest) => {
                    for r in latest {
                        let r = r.result;
                        shared.states.set(
                            CellKey::of(&r),
                            r.outcome.status,
                            r.outcome.summary,
                            r.started_at_ms,
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read other instances' cell states"),
            }
        }
    }
}

/// Publishes the shared-schedule view for `/healthz` and metrics.
fn publish_view(shared: &ServeState, member: &Option<String>, view: &[String], entries: &[Entry]) {
    if let Some(me) = member {
        let owned = entries
            .iter()
            .filter(|e| owner_of(view, &e.key) == Some(me.as_str()))
            .count();
        shared.stats.set_shared_view(SharedView {
            member: me.clone(),
            members: view.to_vec(),
            owned,
        });
    }
}

async fn run_entry(
    entry: Entry,
    plan: Plan,
    shared: Arc<ServeState>,
    done: mpsc::UnboundedSender<Finished>,
) {
    let stats = &shared.stats;
    let interrupt = &shared.interrupt;
    let limits = shared.limits();
    stats.inflight.fetch_add(1, Ordering::Relaxed);
    let config = &plan.config;
    let inst = &entry.instance;
    let def = &config.probes[inst.probe];
    let labels = ResultLabels {
        metric: def.metric.clone(),
        kind: def.kind.clone(),
        vo: config.vo.clone(),
        site: entry.key.site.clone(),
        hostname: entry.key.hostname.clone(),
        flavour: entry.key.flavour.clone(),
    };
    let started = SystemTime::now();
    // An agent-run site's run goes to its agents (agent/), without local concurrency slots.
    let route = crate::agent::Route::of(shared.remote(), config, inst);
    let attempts = match standby_reason(&entry, &shared.states) {
        Some(reason) => {
            let outcome = Outcome::standby(format!("not run: dependency {reason}"))
                .with_details(format!("depends_on not satisfied:\n{reason}"));
            vec![labels.result(outcome, started, Duration::ZERO, 1, Trigger::Scheduled)]
        }
        None if !route.is_local() => {
            stats.runs_started.fetch_add(1, Ordering::Relaxed);
            let k = &entry.key;
            let slot = slot_of(&entry, unix_ms(started));
            let run_id =
                crate::agent::wire::slot_run_id(&k.site, &k.hostname, &k.flavour, &k.metric, slot);
            route
                .run(crate::remote::RemoteRun {
                    config,
                    instance: inst,
                    labels: &labels,
                    trigger: Trigger::Scheduled,
                    run_id,
                    interrupt,
                })
                .await
        }
        None => match plan.probes.get(inst.probe).cloned() {
            None => vec![labels.result(
                Outcome::unknown(format!("probe `{}` could not be built", def.metric)),
                started,
                Duration::ZERO,
                1,
                Trigger::Scheduled,
            )],
            Some(probe) => {
                let waiting = std::time::Instant::now();
                let permits = tokio::select! {
                    p = limits.acquire(&entry.key.site, &def.kind) => p,
                    // Shutting down while waiting for a slot: nothing was measured, nothing to record.
                    _ = interrupt.cancelled() => None,
                };
                stats.queue_wait_ms_total.fetch_add(
                    u64::try_from(waiting.elapsed().as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                match permits {
                    None => Vec::new(),
                    Some(_permits) => {
                        stats.runs_started.fetch_add(1, Ordering::Relaxed);
                        let mut results = run_with_retries(
                            probe,
                            || plan.probes.context_for(config, inst, interrupt.clone()),
                            &labels,
                            inst.retries,
                            inst.retry_interval,
                            Trigger::Scheduled,
                            interrupt,
                            |_| {},
                        )
                        .await;
                        if interrupt.is_cancelled() {
                            if let Some(last) = results.last_mut() {
                                let original = std::mem::replace(
                                    &mut last.outcome,
                                    Outcome::unknown("interrupted by shutdown"),
                                );
                                last.outcome = last
                                    .outcome
                                    .clone()
                                    .with_details(format!(
                                        "the probe was stopped when gridprobe shut down; it had reported {}: {}\n{}",
                                        original.status, original.summary, original.details
                                    ))
                                    .with_perfdata(original.perfdata);
                            }
                        }
                        results
                    }
                }
            }
        },
    };
    if let Some(first) = attempts.first() {
        let started_ms = first.started_at_ms;
        // The run's own cell, then the cells of the metrics it reports (a bundle's).
        for (i, cell) in split_reported(config, attempts).into_iter().enumerate() {
            let key = match cell.last() {
                Some(last) if i > 0 => CellKey::of(last),
                _ => entry.key.clone(),
            };
            let wake_children = shared.record(cell);
            let _ = done.send(Finished {
                key,
                started_ms,
                wake_children,
            });
        }
    }
    shared.release(std::slice::from_ref(&entry.key));
    stats.runs_finished.fetch_add(1, Ordering::Relaxed);
    stats.inflight.fetch_sub(1, Ordering::Relaxed);
}

/// Why an entry must not run now: every parent with a known state is down.
fn standby_reason(entry: &Entry, states: &CellStates) -> Option<String> {
    let known: Vec<(String, Status, String)> = entry
        .parents
        .iter()
        .filter_map(|p| {
            states.get(p).map(|(s, summary, _)| {
                (
                    format!("{} on {}", short(&p.metric), p.hostname),
                    s,
                    summary,
                )
            })
        })
        .collect();
    if known.is_empty() || known.iter().any(|(_, s, _)| s.is_up()) {
        return None;
    }
    Some(
        known
            .iter()
            .map(|(n, s, summary)| format!("{n} is {s}: {summary}"))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

fn short(metric: &str) -> &str {
    gridprobe_config::short_metric_name(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(interval_ms: i64, offset_ms: i64) -> Entry {
        Entry {
            key: CellKey {
                site: "S".into(),
                hostname: "h".into(),
                flavour: "CE".into(),
                metric: "m".into(),
            },
            instance: ProbeInstance {
                probe: 0,
                site: 0,
                service: 0,
                interval: Duration::from_millis(interval_ms as u64),
                timeout: Duration::from_secs(1),
                retries: 0,
                retry_interval: Duration::from_secs(1),
                freshness: Duration::from_secs(3),
            },
            interval_ms,
            offset_ms,
            parents: vec![],
        }
    }

    #[test]
    fn slots_are_aligned_to_interval_and_offset() {
        assert_eq!(slot_at_or_after(0, 100, 30), 30);
        assert_eq!(slot_at_or_after(30, 100, 30), 30);
        assert_eq!(slot_at_or_after(31, 100, 30), 130);
        assert_eq!(
            slot_at_or_after(1_000_000_007, 3_600_000, 42),
            1_000_800_042
        );
    }

    #[test]
    fn recent_run_waits_for_next_slot_after_interval() {
        let hour = 3_600_000;
        let e = entry(hour, 1_234);
        // The current slot began at 100 h + 1.234 s; the last run, 2 minutes ago, was its run.
        let now = 100 * hour + 150_000;
        // Ran 2 minutes ago: next run is about an hour after that, not now.
        let due = first_due(&e, now, Some(now - 120_000), 30_000);
        assert!(due >= now - 120_000 + hour * 9 / 10, "due {due} too early");
        assert!(due <= now - 120_000 + hour * 2, "due {due} too late");
        assert_eq!((due - 1_234).rem_euclid(hour), 0, "keeps the spread");
    }

    /// Issue 13: a restart when the last run was 0.9–1.0 × interval ago ran at start-up and
    /// again at the slot less than a second later. Every start-up moment over two intervals,
    /// with the last run at its slot: exactly one run per slot.
    #[test]
    fn a_restart_runs_each_slot_once() {
        let interval = 60_000;
        let offset = 7_123;
        let e = entry(interval, offset);
        let base = 1_000 * interval + offset;
        let mut tried = 0;
        for last in [base, base + 150, base + 20_000] {
            for step in 0..240 {
                let now = last + step * interval / 120;
                let due = first_due(&e, now, Some(last), 30_000);
                tried += 1;
                assert!(due >= now, "due {due} before now {now}");
                let slot = slot_of(&e, due);
                assert_ne!(
                    slot,
                    slot_of(&e, last),
                    "the last run's slot runs again (now = last + {} ms)",
                    now - last
                );
                // The runs after it come at the next slots: never two within a moment.
                let next = slot_at_or_after(due + 1, interval, offset);
                assert_eq!(slot_of(&e, next), slot + interval);
                assert!(next - due >= interval / 2, "runs {} ms apart", next - due);
            }
        }
        assert_eq!(tried, 720);
    }

    /// Two instances of a shared schedule starting a moment apart on either side of a slot
    /// boundary claim the same slot, so only one runs (they claimed two slots 0.1 s apart).
    #[test]
    fn instances_starting_across_a_slot_boundary_claim_the_same_slot() {
        let interval = 6_000;
        for offset in [0, 1, 999, 2_500, 5_999] {
            let e = entry(interval, offset);
            let boundary = 500 * interval + offset;
            for before in [1, 50, 100, 400, 999] {
                for after in [0, 1, 100, 999] {
                    for last in [None, Some(boundary - interval - 3_000)] {
                        let a = first_due(&e, boundary - before, last, 1_000);
                        let b = first_due(&e, boundary + after, last, 1_000);
                        assert_eq!(
                            slot_of(&e, a),
                            slot_of(&e, b),
                            "offset {offset}, -{before}/+{after} ms, last {last:?}: {a} and {b}"
                        );
                    }
                }
            }
        }
    }

    /// A run in an earlier slot does not hold back the current one: an instance taking over
    /// (or restarting) after a late run still runs the next slot (a slot was lost on join).
    #[test]
    fn a_late_run_in_the_previous_slot_does_not_cost_the_next_slot() {
        let interval = 6_000;
        let e = entry(interval, 1_000);
        let slot = 100 * interval + 1_000;
        // The previous slot ran 900 ms late; now is 1 s before the next slot.
        let due = first_due(&e, slot + interval - 1_000, Some(slot + 900), 1_000);
        assert_eq!(due, slot + interval);
    }

    #[test]
    fn extreme_values_never_panic() {
        let mut handled = 0;
        for interval in [1, 2, 999, 86_400_000, i64::MAX / 2, i64::MAX] {
            for offset in [0, interval - 1] {
                let e = entry(interval, offset);
                for now in [i64::MIN, -1, 0, 1, i64::MAX / 2, i64::MAX - 1, i64::MAX] {
                    for last in [None, Some(i64::MIN), Some(0), Some(now), Some(i64::MAX)] {
                        for spread in [0, 1, i64::MAX] {
                            let due = first_due(&e, now, last, spread);
                            let _ = slot_of(&e, due);
                            let _ = late_tolerance(interval);
                            handled += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(handled, 6 * 2 * 7 * 5 * 3);
    }

    #[test]
    fn never_run_or_overdue_starts_within_spread() {
        let e = entry(3_600_000, 1_234_567);
        let now = 1_000_000_000;
        let due = first_due(&e, now, None, 30_000);
        assert!(due >= now && due < now + 30_000);
        let due = first_due(&e, now, Some(now - 7_200_000), 30_000);
        assert!(due >= now && due < now + 30_000);
    }

    #[test]
    fn spread_of_many_entries_is_even() {
        // 10,000 entries with the same interval land in every tenth of it.
        let interval = 600_000i64;
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let h = stable_hash(&["site", &format!("host{i}"), "CE", "org.vo.metric"]);
            let offset = (h % interval as u64) as i64;
            buckets[(offset * 10 / interval) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "uneven spread: {buckets:?}");
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // A fixed value: changing the hash would move every schedule after an upgrade.
        assert_eq!(stable_hash(&["a"]), 0x089b_e207_b544_f1e4);
    }

    #[test]
    fn standby_when_every_known_parent_is_down() {
        let states = CellStates::default();
        let parent = CellKey {
            site: "S".into(),
            hostname: "h".into(),
            flavour: "CE".into(),
            metric: "org.vo.lock".into(),
        };
        let mut e = entry(1000, 0);
        e.parents = vec![parent.clone()];
        assert_eq!(
            standby_reason(&e, &states),
            None,
            "no parent result yet: run"
        );
        states.set(parent.clone(), Status::Critical, "lock held".into(), 10);
        let reason = standby_reason(&e, &states).expect("standby");
        assert!(
            reason.contains("lock on h is CRITICAL: lock held"),
            "{reason}"
        );
        states.set(parent, Status::Warning, "slow".into(), 20);
        assert_eq!(standby_reason(&e, &states), None);
    }
}
