//! The engine task: hard results in, grouped notifications out to the outboxes. Its memory,
//! the acknowledgements and the history live in the result store (see `shared`), so several
//! `serve` on one shared schedule take each decision once and see the same acks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridprobe_config::notify::{contact_addresses, Channel, ChannelKind};
use gridprobe_config::{Config, Downtime};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{ProbeResult, Status};
use gridprobe_results::notify::StatePut;
use gridprobe_results::{CellFilter, CellKey, ResultStore, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::acks::{ending, Ack, AckStore};
use super::message::{compose, Notification};
use super::outbox::{ChannelStats, Outbox};
use super::shared::{self, cell_key, decode, encode, DIGEST, SITE};
use super::state::{Context, Event, Tracker};
use crate::state::ResultObserver;

/// How often groups are flushed and reminders checked.
const TICK: Duration = Duration::from_millis(250);
/// How often stored downtimes, and every cell's state (other instances change it too), are
/// re-read.
const REFRESH: Duration = Duration::from_secs(60);
/// Most results decided in one store round trip.
const MAX_BATCH: usize = 256;
/// Compare-and-set rounds for a batch before its cells are left to the other instance.
const CAS_ROUNDS: usize = 4;

/// Feeds the engine from the recording path; never blocks.
pub struct NotifyObserver {
    tx: mpsc::UnboundedSender<ProbeResult>,
}

impl ResultObserver for NotifyObserver {
    fn observe(&self, result: &ProbeResult, is_final: bool) {
        if is_final {
            // The engine ends only after every handle is gone; a send error means shutdown.
            let _ = self.tx.send(result.clone());
        }
    }
}

/// What the API, the dashboard and `/metrics` read of the engine.
#[derive(Debug)]
pub struct NotifierView {
    /// The notification directory (`<spool_dir>/notify`: the outboxes).
    pub dir: PathBuf,
    /// Acknowledgements.
    pub acks: Arc<AckStore>,
    /// The store, which keeps the history of sent notifications.
    pub store: Arc<dyn ResultStore>,
    /// Per channel: its counters (channels added by a reload included).
    pub channels: Mutex<Vec<(String, Arc<ChannelStats>)>>,
    /// Flapping cells now.
    pub flapping: Mutex<Vec<CellKey>>,
}

impl NotifierView {
    /// Whether a cell flaps now.
    pub fn is_flapping(&self, cell: &CellKey) -> bool {
        self.flapping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(cell)
    }

    /// Every channel's counters.
    pub fn channels(&self) -> Vec<(String, Arc<ChannelStats>)> {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running engine.
pub struct Notifier {
    /// Give this to [`crate::state::ServeState::new`] as an observer.
    pub observer: Arc<NotifyObserver>,
    /// Shared with the HTTP server.
    pub view: Arc<NotifierView>,
    /// Ends after the last observer handle is dropped: pending groups are queued, the
    /// outboxes stop (what is undelivered stays for the next start).
    pub task: tokio::task::JoinHandle<()>,
}

struct Ctx<'a> {
    downtimes: &'a [Downtime],
    acks: &'a AckStore,
    now_ms: i64,
}

impl Context for Ctx<'_> {
    fn in_downtime(&self, cell: &CellKey, at_ms: i64) -> bool {
        self.downtimes.iter().any(|d| {
            d.start_ms <= at_ms
                && at_ms < d.end_ms
                && d.covers(&cell.site, &cell.hostname, &cell.flavour)
        })
    }

    fn acknowledged(&self, cell: &CellKey) -> bool {
        !self.acks.covering(cell, self.now_ms).is_empty()
    }
}

/// A channel's outbox with its delivery task.
struct Running {
    channel: Channel,
    outbox: Outbox,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

fn open_outbox(
    ch: &Channel,
    root: &Path,
    store: &Arc<dyn ResultStore>,
    stats: Arc<ChannelStats>,
) -> Result<Running, String> {
    let stop = CancellationToken::new();
    let (outbox, task) = Outbox::start(ch.clone(), root, store.clone(), stats, stop.clone())
        .map_err(|e| format!("notification channel {}: {e}", ch.name))?;
    Ok(Running {
        channel: ch.clone(),
        outbox,
        task,
        stop,
    })
}

/// Starts the engine and one outbox per channel under `root` (`<spool_dir>/notify`). `plan`
/// follows configuration reloads: rules, contacts, downtimes, and channels (a new one gets
/// its outbox, a changed one is restarted with its new settings). Files an older release kept
/// there (acks, history, memory) are moved into the store first.
pub async fn start(
    plan: watch::Receiver<Arc<Config>>,
    root: &Path,
    instance: String,
    store: Arc<dyn ResultStore>,
) -> Result<Notifier, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let now = now_ms();
    let moved = super::acks::migrate_file(store.as_ref(), root, now)
        .await
        .map_err(|e| e.to_string())?;
    let history = super::outbox::migrate_history(store.as_ref(), root).await?;
    let cells = shared::migrate_state(store.as_ref(), root).await?;
    if moved + history + cells > 0 {
        tracing::info!(
            acks = moved,
            history,
            cells,
            "notification files of an older release moved into the result store"
        );
    }
    let config = plan.borrow().clone();
    let acks = Arc::new(AckStore::new(store.clone()));
    if let Err(e) = acks.refresh(now).await {
        tracing::warn!(error = %e, "acknowledgements not read");
    }
    let mut outboxes = HashMap::new();
    let mut channels = Vec::new();
    for ch in &config.notify.channels {
        let stats = Arc::new(ChannelStats::default());
        outboxes.insert(
            ch.name.clone(),
            open_outbox(ch, root, &store, stats.clone())?,
        );
        channels.push((ch.name.clone(), stats));
    }
    let view = Arc::new(NotifierView {
        dir: root.to_path_buf(),
        acks,
        store: store.clone(),
        channels: Mutex::new(channels),
        flapping: Mutex::new(Vec::new()),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let mut engine = Engine {
        plan,
        instance,
        store,
        outboxes,
        tracker: Tracker::default(),
        versions: HashMap::new(),
        last_digest: HashMap::new(),
        groups: HashMap::new(),
        downtimes: Vec::new(),
        view: view.clone(),
    };
    engine.refresh_cells().await;
    let task = tokio::spawn(async move {
        engine.run(rx).await;
    });
    Ok(Notifier {
        observer: Arc::new(NotifyObserver { tx }),
        view,
        task,
    })
}

struct Group {
    opened: tokio::time::Instant,
    events: Vec<Event>,
}

struct Engine {
    plan: watch::Receiver<Arc<Config>>,
    instance: String,
    store: Arc<dyn ResultStore>,
    outboxes: HashMap<String, Running>,
    /// The cells' tracks as last read or written.
    tracker: Tracker,
    /// The store's version of each track in `tracker` (absent: not in the store yet).
    versions: HashMap<CellKey, i64>,
    /// Per rule: the last day (days since the epoch) its digest went out.
    last_digest: HashMap<usize, i64>,
    /// Per (rule, site): the events of the current burst.
    groups: HashMap<(usize, String), Group>,
    downtimes: Vec<Downtime>,
    view: Arc<NotifierView>,
}

fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

fn parse_site_status(name: &str) -> Option<gridprobe_results::report::SiteStatus> {
    use gridprobe_results::report::SiteStatus as S;
    [
        S::Good,
        S::Degraded,
        S::Failed,
        S::Maintenance,
        S::Inactive,
        S::New,
    ]
    .into_iter()
    .find(|s| s.name() == name)
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ProbeResult>) {
        let mut tick = tokio::time::interval(TICK);
        let mut refresh = tokio::time::interval(REFRESH);
        let mut ack_refresh = tokio::time::interval(super::acks::REFRESH);
        let mut site_check = tokio::time::interval(super::sites::SITE_STATUS_EVERY);
        let mut plans = self.plan.clone();
        let mut reloads = true;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                        self.results(batch).await;
                    }
                    None => break,
                },
                changed = plans.changed(), if reloads => match changed {
                    Ok(()) => self.sync_channels().await,
                    Err(_) => reloads = false,
                },
                _ = site_check.tick() => self.site_statuses().await,
                _ = tick.tick() => {
                    self.reminders().await;
                    self.digests().await;
                    self.flush(false);
                }
                _ = ack_refresh.tick() => {
                    if let Err(e) = self.view.acks.refresh(now_ms()).await {
                        tracing::warn!(error = %e, "acknowledgements not re-read");
                    }
                }
                _ = refresh.tick() => {
                    self.refresh_downtimes().await;
                    self.refresh_cells().await;
                }
            }
        }
        self.flush(true);
        for (_, r) in self.outboxes.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    /// Follows a reload's channels: a new one gets its outbox, a changed one is stopped and
    /// started again with its new settings (on the same outbox, so nothing queued is lost),
    /// a removed one stops (what it holds waits for its return).
    async fn sync_channels(&mut self) {
        let config = self.config();
        let stale: Vec<String> = self
            .outboxes
            .iter()
            .filter(|(name, r)| config.notify.channel(name) != Some(&r.channel))
            .map(|(name, _)| name.clone())
            .collect();
        let mut kept_stats = HashMap::new();
        for name in stale {
            if let Some(r) = self.outboxes.remove(&name) {
                r.stop.cancel();
                // The outbox's lock is released when its task and handle are gone.
                let _ = r.task.await;
                kept_stats.insert(name.clone(), r.outbox.stats.clone());
                drop(r.outbox);
                tracing::info!(channel = %name, "notification channel stopped by a reload");
            }
        }
        for ch in &config.notify.channels {
            if self.outboxes.contains_key(&ch.name) {
                continue;
            }
            let stats = kept_stats.remove(&ch.name).unwrap_or_default();
            match open_outbox(ch, &self.view.dir, &self.store, stats) {
                Ok(r) => {
                    tracing::info!(channel = %ch.name, "notification channel started by a reload");
                    self.outboxes.insert(ch.name.clone(), r);
                }
                Err(e) => tracing::error!(error = %e, "notification channel not started"),
            }
        }
        let mut channels: Vec<(String, Arc<ChannelStats>)> = self
            .outboxes
            .iter()
            .map(|(n, r)| (n.clone(), r.outbox.stats.clone()))
            .collect();
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        *self.view.channels.lock().unwrap_or_else(|p| p.into_inner()) = channels;
    }

    /// Re-reads every cell's track (other instances change them too) and the flapping cells.
    async fn refresh_cells(&mut self) {
        match self.store.notify_state(shared::CELL).await {
            Ok(entries) => {
                for e in &entries {
                    if let Some((cell, track)) = decode(e) {
                        if self.versions.get(&cell) != Some(&e.version) {
                            self.tracker.set(&cell, Some(track));
                            self.versions.insert(cell, e.version);
                        }
                    }
                }
            }
            Err(StoreError::Unsupported(_)) => {}
            Err(e) => tracing::warn!(error = %e, "notification state not re-read"),
        }
        self.publish_flapping();
    }

    /// Reads the tracks of cells from the store (a cell it does not hold is forgotten here).
    async fn load(&mut self, cells: &[CellKey]) {
        if cells.is_empty() {
            return;
        }
        let keys: Vec<String> = cells.iter().map(cell_key).collect();
        match self.store.notify_state_of(&keys).await {
            Ok(entries) => {
                let mut found: HashMap<CellKey, (crate::notify::state::CellTrack, i64)> =
                    HashMap::new();
                for e in &entries {
                    if let Some((c, t)) = decode(e) {
                        found.insert(c, (t, e.version));
                    }
                }
                for c in cells {
                    match found.remove(c) {
                        Some((t, v)) => {
                            self.tracker.set(c, Some(t));
                            self.versions.insert(c.clone(), v);
                        }
                        None => {
                            self.tracker.set(c, None);
                            self.versions.remove(c);
                        }
                    }
                }
            }
            Err(StoreError::Unsupported(_)) => {}
            Err(e) => tracing::warn!(error = %e, "notification state not read"),
        }
    }

    /// Writes the tracks of `cells` by compare-and-set; returns the cells written. A cell
    /// another instance changed meanwhile is re-read and left out: its decisions are taken
    /// again from what the store holds. When the store cannot be written every cell counts as
    /// written: a notification told twice is better than one never told.
    async fn commit(&mut self, cells: &[CellKey]) -> HashSet<CellKey> {
        let puts: Vec<StatePut> = cells
            .iter()
            .filter_map(|c| {
                Some(StatePut {
                    key: cell_key(c),
                    value: encode(self.tracker.get(c)?),
                    expected: self.versions.get(c).copied(),
                })
            })
            .collect();
        let written = match self.store.put_notify_state(&puts).await {
            Ok(v) => v,
            Err(StoreError::Unsupported(_)) => return cells.iter().cloned().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "notification state not written; deciding alone");
                return cells.iter().cloned().collect();
            }
        };
        let mut won = HashSet::new();
        let mut lost = Vec::new();
        for (c, v) in cells.iter().zip(written) {
            match v {
                Some(v) => {
                    self.versions.insert(c.clone(), v);
                    won.insert(c.clone());
                }
                None => lost.push(c.clone()),
            }
        }
        if !lost.is_empty() {
            tracing::debug!(
                cells = lost.len(),
                "cells changed by another instance; deciding again"
            );
            self.load(&lost).await;
        }
        won
    }

    /// Compares the sites' 24-hour statuses with the ones last told (kept in the store, so
    /// one instance tells a change, and a restart does not lose the baseline; a site seen for
    /// the first time is the baseline).
    async fn site_statuses(&mut self) {
        let config = self.config();
        if !config.notify.rules.iter().any(|r| r.site_status) {
            return;
        }
        let now = now_ms();
        let current = match super::sites::statuses(self.store.as_ref(), &config, now).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "site statuses not computed for notifications");
                return;
            }
        };
        let stored: HashMap<String, (String, i64)> = match self.store.notify_state(SITE).await {
            Ok(v) => v
                .into_iter()
                .filter_map(|e| {
                    let site = e.key.strip_prefix(SITE)?.to_string();
                    Some((site, (e.value, e.version)))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "told site statuses not read");
                return;
            }
        };
        let mut sites: Vec<_> = current.iter().collect();
        sites.sort_by(|a, b| a.0.cmp(b.0));
        let mut puts = Vec::new();
        let mut olds = Vec::new();
        for (site, status) in sites {
            let old = stored.get(site);
            if old.is_some_and(|(v, _)| v == status.name()) {
                continue;
            }
            puts.push(StatePut {
                key: format!("{SITE}{site}"),
                value: status.name().to_string(),
                expected: old.map(|(_, v)| *v),
            });
            olds.push((
                site.clone(),
                old.and_then(|(v, _)| parse_site_status(v)),
                *status,
            ));
        }
        if puts.is_empty() {
            return;
        }
        let won = match self.store.put_notify_state(&puts).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "site statuses not written; not told");
                return;
            }
        };
        let mut before = HashMap::new();
        let mut after = HashMap::new();
        for ((site, old, new), w) in olds.into_iter().zip(won) {
            if let (Some(old), Some(_)) = (old, w) {
                before.insert(site.clone(), old);
                after.insert(site, new);
            }
        }
        let rules_for = |site: &str| {
            let Some(s) = config.sites.iter().find(|s| s.name == site) else {
                return Vec::new();
            };
            config
                .notify
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    // The site's services: any flavour the rule names (all when none).
                    r.site_status
                        && s.services
                            .iter()
                            .any(|v| r.covers(site, s.tier, &v.flavour))
                })
                .map(|(i, _)| i)
                .collect()
        };
        let events = super::sites::changes(&before, &after, &rules_for, now);
        self.add(events);
    }

    async fn refresh_downtimes(&mut self) {
        let now = now_ms();
        match self
            .store
            .downtimes(
                now.saturating_sub(86_400_000),
                now.saturating_add(86_400_000),
            )
            .await
        {
            Ok(d) => self.downtimes = d,
            Err(e) => tracing::warn!(error = %e, "downtimes not re-read for notifications"),
        }
    }

    fn config(&self) -> Arc<Config> {
        self.plan.borrow().clone()
    }

    fn all_downtimes(&self, config: &Config) -> Vec<Downtime> {
        config
            .downtimes
            .iter()
            .chain(self.downtimes.iter())
            .cloned()
            .collect()
    }

    /// Decides on a batch of hard results: each cell's track is changed from the version in
    /// the store; cells another instance changed meanwhile are decided again.
    async fn results(&mut self, batch: Vec<ProbeResult>) {
        // UNKNOWN (the monitoring's own failure) and STANDBY change nothing.
        let mut pending: Vec<ProbeResult> = batch
            .into_iter()
            .filter(|r| !matches!(r.outcome.status, Status::Unknown | Status::Standby))
            .collect();
        let mut unseen: Vec<CellKey> = Vec::new();
        for r in &pending {
            let c = CellKey::of(r);
            if !self.versions.contains_key(&c) && !unseen.contains(&c) {
                unseen.push(c);
            }
        }
        self.load(&unseen).await;
        let config = self.config();
        let downtimes = self.all_downtimes(&config);
        for round in 0..CAS_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let now = now_ms();
            let ctx = Ctx {
                downtimes: &downtimes,
                acks: &self.view.acks,
                now_ms: now,
            };
            let mut events = Vec::new();
            let mut cells: Vec<CellKey> = Vec::new();
            let mut last: HashMap<CellKey, Status> = HashMap::new();
            for r in &pending {
                let cell = CellKey::of(r);
                let tier = config
                    .sites
                    .iter()
                    .find(|s| s.name == r.site)
                    .map_or(u8::MAX, |s| s.tier);
                let rules: Vec<_> = config
                    .notify
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| rule.covers(&r.site, tier, &r.flavour))
                    .collect();
                events.extend(self.tracker.observe(
                    &cell,
                    r.outcome.status,
                    &r.outcome.summary,
                    r.started_at_ms,
                    &rules,
                    &ctx,
                ));
                if !last.contains_key(&cell) {
                    cells.push(cell.clone());
                }
                last.insert(cell, r.outcome.status);
            }
            let won = self.commit(&cells).await;
            self.add(
                events
                    .into_iter()
                    .filter(|e| won.contains(&e.cell))
                    .collect(),
            );
            let changed: Vec<(CellKey, Status)> =
                last.into_iter().filter(|(c, _)| won.contains(c)).collect();
            self.end_acks(&changed).await;
            pending.retain(|r| !won.contains(&CellKey::of(r)));
            if round + 1 == CAS_ROUNDS && !pending.is_empty() {
                tracing::warn!(
                    results = pending.len(),
                    "cells changed by another instance on every try; that instance tells them"
                );
            }
        }
        self.publish_flapping();
    }

    /// Ends the acks that cells' new statuses end (a site or service ack once nothing else
    /// in its scope is broken, by the store's latest results, which every instance shares).
    async fn end_acks(&self, changed: &[(CellKey, Status)]) {
        let now = now_ms();
        let mut ends = Vec::new();
        let mut latest: HashMap<String, Vec<(CellKey, Status)>> = HashMap::new();
        for (cell, status) in changed {
            let covering = self.view.acks.covering(cell, now);
            if covering.is_empty() {
                continue;
            }
            let wide = covering
                .iter()
                .any(|a| a.hostname.is_none() || a.metric.is_none());
            if *status == Status::Ok && wide && !latest.contains_key(&cell.site) {
                let filter = CellFilter {
                    site: Some(cell.site.clone()),
                    ..CellFilter::default()
                };
                match self.store.latest(&filter).await {
                    Ok(rows) => {
                        let cells = rows
                            .iter()
                            .map(|r| (CellKey::of(&r.result), r.result.outcome.status))
                            .collect();
                        latest.insert(cell.site.clone(), cells);
                    }
                    Err(e) => {
                        // Not knowing what else is broken, the wider acks stay.
                        tracing::warn!(error = %e, "latest results not read; site and service acks kept");
                        continue;
                    }
                }
            }
            let others = latest.get(&cell.site);
            let still_broken = |a: &Ack| {
                others.is_none_or(|o| {
                    o.iter().any(|(k, s)| {
                        k != cell && a.covers(k) && matches!(s, Status::Warning | Status::Critical)
                    })
                })
            };
            ends.extend(ending(&covering, *status, &still_broken));
        }
        if ends.is_empty() {
            return;
        }
        ends.sort();
        ends.dedup();
        match self.view.acks.remove(&ends, now).await {
            Ok(n) => tracing::info!(ended = n, "acknowledgements ended"),
            Err(e) => tracing::warn!(error = %e, "ended acknowledgements not removed"),
        }
    }

    fn publish_flapping(&self) {
        let mut flapping: Vec<CellKey> = self
            .tracker
            .iter()
            .filter(|(_, t)| t.flapping)
            .map(|(k, _)| k.clone())
            .collect();
        flapping.sort();
        *self.view.flapping.lock().unwrap_or_else(|p| p.into_inner()) = flapping;
    }

    /// Reminders due now; each one is taken by the instance whose write of the cell wins.
    async fn reminders(&mut self) {
        let config = self.config();
        if config.notify.rules.iter().all(|r| r.repeat.is_none()) {
            return;
        }
        let downtimes = self.all_downtimes(&config);
        let ctx = Ctx {
            downtimes: &downtimes,
            acks: &self.view.acks,
            now_ms: now_ms(),
        };
        let events = self
            .tracker
            .reminders(ctx.now_ms, &config.notify.rules, &ctx);
        if events.is_empty() {
            return;
        }
        let mut cells: Vec<CellKey> = events.iter().map(|e| e.cell.clone()).collect();
        cells.sort();
        cells.dedup();
        let won = self.commit(&cells).await;
        self.add(
            events
                .into_iter()
                .filter(|e| won.contains(&e.cell))
                .collect(),
        );
    }

    /// Daily digests whose minute of the day was crossed since the last tick (a start after
    /// the minute waits for the next day). One instance sends each: the one whose write of
    /// the rule's day wins.
    async fn digests(&mut self) {
        let config = self.config();
        let now = now_ms();
        let minute_of_day = |ms: i64| ms.rem_euclid(86_400_000) / 60_000;
        let day = |ms: i64| ms.div_euclid(86_400_000);
        let mut events = Vec::new();
        for (idx, rule) in config.notify.rules.iter().enumerate() {
            let Some(at) = rule.digest_minute else {
                continue;
            };
            let due_day = if minute_of_day(now) >= i64::from(at) {
                day(now)
            } else {
                day(now) - 1
            };
            let last = self.last_digest.entry(idx).or_insert(due_day);
            if *last >= due_day {
                continue;
            }
            *last = due_day;
            if !self.claim_digest(idx, due_day).await {
                continue;
            }
            // Every cell, also those another instance runs.
            self.refresh_cells().await;
            let covers = |k: &CellKey| {
                config
                    .sites
                    .iter()
                    .find(|s| s.name == k.site)
                    .is_some_and(|s| rule.covers(&k.site, s.tier, &k.flavour))
            };
            events.extend(self.tracker.digest(idx, &covers, now));
        }
        self.add(events);
    }

    /// Whether this instance sends rule `idx`'s digest of `day` (no other did).
    async fn claim_digest(&self, idx: usize, day: i64) -> bool {
        let key = format!("{DIGEST}{idx}");
        let current = match self.store.notify_state_of(std::slice::from_ref(&key)).await {
            Ok(v) => v.into_iter().next(),
            Err(e) => {
                tracing::warn!(error = %e, "digest state not read; sending it");
                return true;
            }
        };
        if current
            .as_ref()
            .and_then(|e| e.value.parse::<i64>().ok())
            .is_some_and(|d| d >= day)
        {
            return false;
        }
        let put = StatePut {
            key,
            value: day.to_string(),
            expected: current.map(|e| e.version),
        };
        match self.store.put_notify_state(&[put]).await {
            Ok(v) => v.first().is_some_and(Option::is_some),
            Err(e) => {
                tracing::warn!(error = %e, "digest state not written; sending it");
                true
            }
        }
    }

    fn add(&mut self, events: Vec<Event>) {
        for e in events {
            let key = (e.rule, e.cell.site.clone());
            self.groups
                .entry(key)
                .or_insert_with(|| Group {
                    opened: tokio::time::Instant::now(),
                    events: Vec::new(),
                })
                .events
                .push(e);
        }
    }

    /// Queues the groups whose window has passed (all of them when `all`).
    fn flush(&mut self, all: bool) {
        if self.groups.is_empty() {
            return;
        }
        let config = self.config();
        let due: Vec<(usize, String)> = self
            .groups
            .iter()
            .filter(|((rule, _), g)| {
                all || config
                    .notify
                    .rules
                    .get(*rule)
                    .is_none_or(|r| g.opened.elapsed() >= r.group)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(group) = self.groups.remove(&key) else {
                continue;
            };
            let (rule_idx, site) = key;
            let Some(rule) = config.notify.rules.get(rule_idx) else {
                continue;
            };
            let Some(channel) = config.notify.channel(&rule.channel) else {
                continue;
            };
            let Some(outbox) = self.outboxes.get(&channel.name).map(|r| &r.outbox) else {
                tracing::warn!(channel = %channel.name, "channel not running; see the log of the last reload");
                continue;
            };
            let created = now_ms();
            let mut batch: Vec<Notification> = Vec::new();
            if let ChannelKind::Email { .. } = channel.kind {
                let mut to = rule.to.clone();
                if rule.contacts {
                    if let Some(contact) = config
                        .sites
                        .iter()
                        .find(|s| s.name == site)
                        .and_then(|s| s.contact.as_deref())
                    {
                        to.extend(contact_addresses(contact));
                    }
                }
                to.sort();
                to.dedup();
                if to.is_empty() {
                    tracing::warn!(site = %site, channel = %channel.name, "no recipient: the site has no contact address and the rule no `to`");
                }
                for r in to {
                    batch.push(compose(
                        &config.vo,
                        &self.instance,
                        &channel.name,
                        &r,
                        &site,
                        &group.events,
                        created,
                    ));
                }
            } else {
                batch.push(compose(
                    &config.vo,
                    &self.instance,
                    &channel.name,
                    "",
                    &site,
                    &group.events,
                    created,
                ));
            }
            if let Err(e) = outbox.push(&batch) {
                outbox
                    .stats
                    .failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(channel = %channel.name, site = %site, error = %e, "notifications could not be queued");
            }
        }
    }
}
