//! The engine task: hard results in, grouped notifications out to the outboxes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridprobe_config::notify::{contact_addresses, ChannelKind};
use gridprobe_config::{Config, Downtime};
use gridprobe_probes::outcome::unix_ms;
use gridprobe_probes::{ProbeResult, Status};
use gridprobe_results::{CellKey, ResultStore};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::acks::AckStore;
use super::message::{compose, Notification};
use super::outbox::{ChannelStats, History, Outbox};
use super::state::{Context, Event, Tracker};
use crate::state::ResultObserver;

/// How often groups are flushed and reminders checked.
const TICK: Duration = Duration::from_millis(250);
/// How often stored downtimes are re-read.
const DOWNTIME_REFRESH: Duration = Duration::from_secs(60);
/// How often the engine's memory is saved (and at shutdown), so a restart does not tell a
/// known problem again.
const SAVE_EVERY: Duration = Duration::from_secs(10);

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
    /// The notification directory (`<spool_dir>/notify`).
    pub dir: PathBuf,
    /// Acknowledgements.
    pub acks: Arc<AckStore>,
    /// Sent notifications.
    pub history: Arc<History>,
    /// Per channel: its counters.
    pub channels: Vec<(String, Arc<ChannelStats>)>,
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

/// Starts the engine and one outbox per channel under `root` (`<spool_dir>/notify`). `plan`
/// follows configuration reloads (rules, contacts, downtimes; a new channel needs a restart).
pub fn start(
    plan: watch::Receiver<Arc<Config>>,
    root: &Path,
    instance: String,
    store: Arc<dyn ResultStore>,
) -> Result<Notifier, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let config = plan.borrow().clone();
    let history = Arc::new(History::new(root.join("history.jsonl")));
    let acks = Arc::new(AckStore::new(root));
    let stop = CancellationToken::new();
    let mut outboxes = HashMap::new();
    let mut tasks = Vec::new();
    let mut channels = Vec::new();
    for ch in &config.notify.channels {
        let (outbox, task) = Outbox::start(ch.clone(), root, history.clone(), stop.clone())
            .map_err(|e| format!("notification channel {}: {e}", ch.name))?;
        channels.push((ch.name.clone(), outbox.stats.clone()));
        outboxes.insert(ch.name.clone(), outbox);
        tasks.push(task);
    }
    let view = Arc::new(NotifierView {
        dir: root.to_path_buf(),
        acks: acks.clone(),
        history,
        channels,
        flapping: Mutex::new(Vec::new()),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = Engine {
        plan,
        instance,
        store,
        outboxes,
        tracker: load_tracker(root),
        dirty: false,
        site_status: None,
        last_digest: HashMap::new(),
        groups: HashMap::new(),
        downtimes: Vec::new(),
        view: view.clone(),
    };
    let task = tokio::spawn(async move {
        engine.run(rx).await;
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
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
    outboxes: HashMap<String, Outbox>,
    tracker: Tracker,
    /// Whether the tracker changed since it was saved.
    dirty: bool,
    /// Per rule: the last day (days since the epoch) its digest went out.
    last_digest: HashMap<usize, i64>,
    /// The sites' 24-hour statuses at the last computation.
    site_status: Option<HashMap<String, gridprobe_results::report::SiteStatus>>,
    /// Per (rule, site): the events of the current burst.
    groups: HashMap<(usize, String), Group>,
    downtimes: Vec<Downtime>,
    view: Arc<NotifierView>,
}

fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

fn load_tracker(dir: &Path) -> Tracker {
    let saved = std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Tracker::restore(saved)
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ProbeResult>) {
        let mut tick = tokio::time::interval(TICK);
        let mut refresh = tokio::time::interval(DOWNTIME_REFRESH);
        let mut save = tokio::time::interval(SAVE_EVERY);
        let mut site_check = tokio::time::interval(super::sites::SITE_STATUS_EVERY);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => {
                        self.result(&r);
                        self.dirty = true;
                    }
                    None => break,
                },
                _ = save.tick() => self.save(),
                _ = site_check.tick() => self.site_statuses().await,
                _ = tick.tick() => {
                    self.reminders();
                    self.digests();
                    self.flush(false);
                }
                _ = refresh.tick() => self.refresh_downtimes().await,
            }
        }
        self.flush(true);
        self.dirty = true;
        self.save();
    }

    /// Compares the sites' 24-hour statuses with the last computation (the first one after a
    /// start is the baseline).
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
        if let Some(before) = &self.site_status {
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
            let events = super::sites::changes(before, &current, &rules_for, now);
            self.add(events);
        }
        self.site_status = Some(current);
    }

    fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let path = self.view.dir.join("state.json");
        let tmp = self.view.dir.join("state.json.tmp");
        let written = serde_json::to_vec(&self.tracker.save())
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(error = %e, "notification state not saved"),
        }
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

    fn result(&mut self, r: &ProbeResult) {
        let config = self.config();
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
        let downtimes = self.all_downtimes(&config);
        let now = now_ms();
        let ctx = Ctx {
            downtimes: &downtimes,
            acks: &self.view.acks,
            now_ms: now,
        };
        let events = self.tracker.observe(
            &cell,
            r.outcome.status,
            &r.outcome.summary,
            r.started_at_ms,
            &rules,
            &ctx,
        );
        if !matches!(r.outcome.status, Status::Unknown | Status::Standby) {
            let tracker = &self.tracker;
            let still_broken = |a: &super::acks::Ack| {
                tracker
                    .iter()
                    .any(|(k, t)| k != &cell && a.covers(k) && t.status != Status::Ok)
            };
            self.view
                .acks
                .on_status(&cell, r.outcome.status, now, &still_broken);
        }
        let flapping: Vec<CellKey> = self
            .tracker
            .iter()
            .filter(|(_, t)| t.flapping)
            .map(|(k, _)| k.clone())
            .collect();
        let mut current = self.view.flapping.lock().unwrap_or_else(|p| p.into_inner());
        if *current != flapping {
            // For `gridprobe problems`, which has no other way to know.
            let path = self.view.dir.join("flapping.json");
            let tmp = self.view.dir.join("flapping.json.tmp");
            let written = serde_json::to_vec(&flapping)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(error = %e, "flapping cells not written");
            }
            *current = flapping;
        }
        drop(current);
        self.add(events);
    }

    fn reminders(&mut self) {
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
        self.dirty |= !events.is_empty();
        self.add(events);
    }

    /// Daily digests whose minute of the day was crossed since the last tick (a start after
    /// the minute waits for the next day).
    fn digests(&mut self) {
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
            let Some(outbox) = self.outboxes.get(&channel.name) else {
                tracing::warn!(channel = %channel.name, "channel added by a reload: restart serve to use it");
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
